//! The status model: what a piece's scans mean to a person tracking it, from the code tables.
//! The results are typed (keys, instants as ms since the epoch, [`Status`], the stored scans);
//! their JSON form, the API's, is written straight from them by their `Serialize` impls.

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::time::format_utc;
use imbtrack_feed::{CodeInfo, CodeTables, MailClass, Status, Zip};
use imbtrack_store::StoredScan;
use serde::ser::{Serialize, SerializeStruct, Serializer};

/// Mail statuses in the order a piece moves through them; the furthest reached is the piece's
/// status (scan-feeds.md §2.1: `max(phase rank)`, stop-the-clock terminal).
const MAIL_ORDER: [Status; 6] = [
    Status::Accepted,
    Status::OriginProcessed,
    Status::InTransit,
    Status::DestinationProcessed,
    Status::SortedForDelivery,
    Status::DeliveredEstimated,
];

/// One scan as a tracking frontend shows it: the stored scan and what its code means.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    /// The scan.
    pub scan: StoredScan,
    /// What the code means, or empty when unknown.
    pub description: String,
    /// Normalised status of this scan ([`Status::Unknown`] for an unlisted code).
    pub status: Status,
    /// Mail phase (mail only, when known).
    pub phase: Option<String>,
    /// Whether the scan stops the service clock (mail only, when known).
    pub stop_the_clock: Option<bool>,
}

/// A piece's current status and history.
#[derive(Debug, Clone, PartialEq)]
pub struct PieceStatus {
    /// The piece.
    pub barcode: BarcodeKey,
    /// Mail or package.
    pub class: MailClass,
    /// Routing ZIP of its newest scan.
    pub routing: Zip,
    /// Current status.
    pub status: Status,
    /// When the current status was reached, ms since the epoch.
    pub status_time_ms: i64,
    /// Every scan, newest first.
    pub events: Vec<EventView>,
}

/// JSON: `time` (RFC 3339 UTC), `code`, `description`, `status`, `phase` and `stop_the_clock`
/// (mail codes the tables know), `facility_zip`, `facility_name`, `facility_city`,
/// `facility_state`, `handling_event_type`, `machine`.
impl Serialize for EventView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let scan = &self.scan;
        let facility = scan.facility();
        let mut out = serializer.serialize_struct("EventView", 12)?;
        out.serialize_field("time", &format_utc(scan.time_ms))?;
        out.serialize_field("code", scan.code.as_str())?;
        out.serialize_field("description", &self.description)?;
        out.serialize_field("status", self.status.as_str())?;
        match &self.phase {
            Some(phase) => out.serialize_field("phase", phase)?,
            None => out.skip_field("phase")?,
        }
        match self.stop_the_clock {
            Some(stop) => out.serialize_field("stop_the_clock", &stop)?,
            None => out.skip_field("stop_the_clock")?,
        }
        out.serialize_field("facility_zip", &scan.facility_zip.to_string())?;
        out.serialize_field("facility_name", facility.name)?;
        out.serialize_field("facility_city", facility.city)?;
        out.serialize_field("facility_state", facility.state)?;
        out.serialize_field("handling_event_type", scan.handling.as_str())?;
        out.serialize_field("machine", &*scan.machine)?;
        out.end()
    }
}

/// JSON: `barcode` (canonical digits: IMb `TRACKING-ROUTING`, IMpb tracking number), `class`,
/// `routing_zip`, `status`, `status_time` (RFC 3339 UTC) and `events`, newest first.
impl Serialize for PieceStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("PieceStatus", 6)?;
        out.serialize_field("barcode", &self.barcode.to_barcode().to_string())?;
        out.serialize_field("class", self.class.as_str())?;
        out.serialize_field("routing_zip", &self.routing.to_string())?;
        out.serialize_field("status", self.status.as_str())?;
        out.serialize_field("status_time", &format_utc(self.status_time_ms))?;
        out.serialize_field("events", &self.events)?;
        out.end()
    }
}

fn view(scan: &StoredScan, codes: &CodeTables) -> EventView {
    let (description, status, phase, stop_the_clock) = match codes.lookup(scan.class, scan.code) {
        CodeInfo::Mail(entry) => {
            let status = if entry.stop_the_clock {
                Status::DeliveredEstimated
            } else {
                entry.status
            };
            (
                entry.description.clone(),
                status,
                Some(entry.phase.clone()),
                Some(entry.stop_the_clock),
            )
        }
        CodeInfo::Package(entry) => (entry.description.clone(), entry.status, None, None),
        CodeInfo::Unknown => (String::new(), Status::Unknown, None, None),
    };
    EventView {
        scan: scan.clone(),
        description,
        status,
        phase,
        stop_the_clock,
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
    let known = |v: &&EventView| v.status != Status::Unknown;
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
    let (status, status_time_ms) = match current {
        Some(v) => (v.status, v.scan.time_ms),
        None => (Status::Unknown, newest.time_ms),
    };
    Some(PieceStatus {
        barcode: first.barcode,
        class: first.class,
        routing: newest.routing,
        status,
        status_time_ms,
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
        assert_eq!(status.status, Status::SortedForDelivery);
        assert_eq!(status.status_time_ms, 2_000);
        assert_eq!(status.events.len(), 4);
        assert_eq!(status.events[0].scan.code.as_str(), "999");
        assert_eq!(status.events[0].status, Status::Unknown);
        assert_eq!(status.events[0].description, "");
        assert_eq!(
            status.events[3].phase.as_deref(),
            Some("Phase 0 - Acceptance")
        );
        assert_eq!(status.events[3].scan.facility().city, "SAN FRANCISCO");
        assert_eq!(status.class, MailClass::Mail);
        // The JSON the API serves, written straight from the typed result.
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["barcode"], "00270123456789123456");
        assert_eq!(json["class"], "mail");
        assert_eq!(json["status"], "SORTED_FOR_DELIVERY");
        assert_eq!(json["status_time"], format_utc(2_000));
        assert_eq!(json["events"][0]["code"], "999");
        assert_eq!(json["events"][0]["status"], "UNKNOWN");
        assert!(json["events"][0].get("phase").is_none());
        assert_eq!(json["events"][3]["facility_city"], "SAN FRANCISCO");
        assert_eq!(json["events"][3]["facility_zip"], "94110");
        assert_eq!(json["events"][3]["handling_event_type"], "physical");
        assert_eq!(json["events"][3]["stop_the_clock"], false);
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
            (status.status, status.status_time_ms),
            (Status::Attempted, 2_000)
        );
        assert_eq!(status.events[1].description, "Attempted / Notice Left");
    }

    #[test]
    fn unknown_codes_only_and_no_scans() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        let status = piece_status(&[scan(&imb, 5_000, "123")], &codes).unwrap();
        assert_eq!(
            (status.status, status.status_time_ms),
            (Status::Unknown, 5_000)
        );
        assert!(piece_status(&[], &codes).is_none());
    }
}
