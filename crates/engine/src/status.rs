//! The status model: what a piece's scans mean to a person tracking it, from the code tables.

use imbtrack_feed::time::format_utc;
use imbtrack_feed::{CodeInfo, CodeTables, MailClass};
use imbtrack_store::StoredScan;
use serde::Serialize;

/// Status shown for a piece or scan whose code no table lists.
pub const UNKNOWN: &str = "UNKNOWN";
/// Mail status of a stop-the-clock scan.
const DELIVERED_ESTIMATED: &str = "DELIVERED_ESTIMATED";

/// Mail statuses in the order a piece moves through them; the furthest reached is the piece's
/// status (scan-feeds.md §2.1: `max(phase rank)`, stop-the-clock terminal).
const MAIL_ORDER: [&str; 6] = [
    "ACCEPTED",
    "ORIGIN_PROCESSED",
    "IN_TRANSIT",
    "DESTINATION_PROCESSED",
    "SORTED_FOR_DELIVERY",
    DELIVERED_ESTIMATED,
];

/// One scan as a tracking frontend shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventView {
    /// Scan instant, RFC 3339 UTC.
    pub time: String,
    /// Event code as sent.
    pub code: String,
    /// What the code means, or empty when unknown.
    pub description: String,
    /// Normalised status of this scan (`UNKNOWN` for an unlisted code).
    pub status: String,
    /// Mail phase (mail only, when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Whether the scan stops the service clock (mail only, when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_the_clock: Option<bool>,
    /// Facility ZIP.
    pub facility_zip: String,
    /// Facility name.
    pub facility_name: String,
    /// Facility city.
    pub facility_city: String,
    /// Facility state.
    pub facility_state: String,
    /// `physical`, `assumed`, `logical` or `unknown`.
    pub handling_event_type: String,
    /// Machine name.
    pub machine: String,
}

/// A piece's current status and history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PieceStatus {
    /// The barcode, canonical digits (IMb `TRACKING-ROUTING`, IMpb tracking number).
    pub barcode: String,
    /// `mail` or `package`.
    pub class: String,
    /// Routing ZIP.
    pub routing_zip: String,
    /// Current status.
    pub status: String,
    /// When the current status was reached, RFC 3339 UTC.
    pub status_time: String,
    /// Every scan, newest first.
    pub events: Vec<EventView>,
}

fn view(scan: &StoredScan, codes: &CodeTables) -> EventView {
    let facility = scan.facility();
    let (description, status, phase, stop_the_clock) = match codes.lookup(scan.class, scan.code) {
        CodeInfo::Mail(entry) => {
            let status = if entry.stop_the_clock {
                DELIVERED_ESTIMATED.to_string()
            } else {
                entry.status.clone()
            };
            (
                entry.description.clone(),
                status,
                Some(entry.phase.clone()),
                Some(entry.stop_the_clock),
            )
        }
        CodeInfo::Package(entry) => (entry.description.clone(), entry.status.clone(), None, None),
        CodeInfo::Unknown => (String::new(), UNKNOWN.to_string(), None, None),
    };
    EventView {
        time: format_utc(scan.time_ms),
        code: scan.code.to_string(),
        description,
        status,
        phase,
        stop_the_clock,
        facility_zip: scan.facility_zip.to_string(),
        facility_name: facility.name.to_string(),
        facility_city: facility.city.to_string(),
        facility_state: facility.state.to_string(),
        handling_event_type: scan.handling.as_str().to_string(),
        machine: scan.machine.to_string(),
    }
}

/// The status of a piece from its scans (oldest first, as the store returns them); `None`
/// without scans. Mail: the furthest status reached (a stop-the-clock scan ends it); packages:
/// the newest scan with a known code, since a package's status can go back (an attempt after
/// out-for-delivery). A piece whose codes are all unknown is `UNKNOWN` as of its newest scan.
pub fn piece_status(scans: &[StoredScan], codes: &CodeTables) -> Option<PieceStatus> {
    let first = scans.first()?;
    let newest = scans.last()?;
    let views: Vec<EventView> = scans.iter().map(|s| view(s, codes)).collect();
    let known = |v: &&EventView| v.status != UNKNOWN;
    let rank = |v: &EventView| MAIL_ORDER.iter().position(|s| *s == v.status).unwrap_or(0);
    let current = match first.class {
        // The first scan (oldest) at the furthest status: when that status was reached.
        MailClass::Mail => views
            .iter()
            .filter(known)
            .map(rank)
            .max()
            .and_then(|top| views.iter().filter(known).find(|v| rank(v) == top)),
        MailClass::Package => views.iter().rev().find(known),
    };
    let (status, status_time) = match current {
        Some(v) => (v.status.clone(), v.time.clone()),
        None => (UNKNOWN.to_string(), format_utc(newest.time_ms)),
    };
    Some(PieceStatus {
        barcode: first.barcode.to_barcode().to_string(),
        class: first.class.as_str().to_string(),
        routing_zip: newest.routing.to_string(),
        status,
        status_time,
        events: views.into_iter().rev().collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use imbtrack_barcode::{Barcode, Imb, Impb};
    use imbtrack_feed::{EventCode, HandlingEventType, Zip};

    use super::*;

    fn scan(barcode: &Barcode, time_ms: i64, code: &str) -> StoredScan {
        StoredScan {
            barcode: barcode.key(),
            class: if matches!(barcode, Barcode::Impb(_)) {
                MailClass::Package
            } else {
                MailClass::Mail
            },
            time_ms,
            routing: Zip::NONE,
            facility_zip: Zip::parse(b"94110").unwrap(),
            code: EventCode::parse(code.as_bytes()).unwrap(),
            handling: HandlingEventType::Physical,
            facility_text: Arc::from("SF P&DC\u{1f}SAN FRANCISCO\u{1f}CA"),
            machine: Arc::from("DBCS"),
        }
    }

    #[test]
    fn mail_status_is_the_furthest_reached_and_when() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        // 873 accepted, 918 sorted, 919 sorted again, then an unknown code: still sorted, since 918.
        let scans = [
            scan(&imb, 1_000, "873"),
            scan(&imb, 2_000, "918"),
            scan(&imb, 3_000, "919"),
            scan(&imb, 4_000, "999"),
        ];
        let status = piece_status(&scans, &codes).unwrap();
        assert_eq!(status.status, "SORTED_FOR_DELIVERY");
        assert_eq!(status.status_time, format_utc(2_000));
        assert_eq!(status.events.len(), 4);
        assert_eq!(status.events[0].code, "999");
        assert_eq!(status.events[0].status, UNKNOWN);
        assert_eq!(status.events[0].description, "");
        assert_eq!(
            status.events[3].phase.as_deref(),
            Some("Phase 0 - Acceptance")
        );
        assert_eq!(status.events[3].facility_city, "SAN FRANCISCO");
        assert_eq!(status.class, "mail");
    }

    #[test]
    fn package_status_is_the_newest_known_event() {
        let codes = CodeTables::builtin();
        let impb = Barcode::Impb(Impb::parse("9405803699300124287899").unwrap());
        let scans = [
            scan(&impb, 1_000, "OF"),
            scan(&impb, 2_000, "02"),
            scan(&impb, 3_000, "ZZ"),
        ];
        let status = piece_status(&scans, &codes).unwrap();
        assert_eq!(
            (status.status.as_str(), status.status_time.as_str()),
            ("ATTEMPTED", format_utc(2_000).as_str())
        );
        assert_eq!(status.events[1].description, "Attempted / Notice Left");
    }

    #[test]
    fn unknown_codes_only_and_no_scans() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        let status = piece_status(&[scan(&imb, 5_000, "123")], &codes).unwrap();
        assert_eq!(
            (status.status.as_str(), status.status_time.as_str()),
            (UNKNOWN, format_utc(5_000).as_str())
        );
        assert!(piece_status(&[], &codes).is_none());
    }
}
