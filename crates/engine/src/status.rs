//! The status model: what a piece's scans mean to a person tracking it, from the code tables.
//! The results are typed (keys, instants as ms since the epoch, [`Status`], the stored scans);
//! their JSON form, the API's, is written straight from them by their `Serialize` impls.

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::time::{civil_from_days, format_utc};
use imbtrack_feed::{CodeInfo, CodeTables, HandlingEventType, MailClass, Status, Zip};
use imbtrack_store::StoredScan;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::delivery::expected_delivery_day;

/// Mail statuses in the order a piece moves through them; the furthest reached is the piece's
/// status (scan-feeds.md §2.1: `max(phase rank)`).
const MAIL_ORDER: [Status; 7] = [
    Status::Accepted,
    Status::OriginProcessed,
    Status::InTransit,
    Status::DestinationProcessed,
    Status::SortedForDelivery,
    Status::OutForDelivery,
    Status::Delivered,
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
    /// A Logical Delivery Event's code (mail only).
    pub logical_delivery: bool,
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
    /// A `DELIVERED` status that comes from a logical event (a Logical Delivery Event, or a
    /// scan of the logical type), not from a carrier's scan.
    pub logical: bool,
    /// The day the piece is expected to be delivered, days since the epoch: mail with a
    /// stop-the-clock scan ([`crate::expected_delivery_day`]); an estimate.
    pub expected_delivery: Option<i64>,
    /// Every scan, newest first.
    pub events: Vec<EventView>,
}

/// JSON: `time` (RFC 3339 UTC), `code`, `description`, `status`, `phase` and `stop_the_clock`
/// (mail codes the tables know), `facility_zip`, `facility_name`, `facility_city`,
/// `facility_state`, `handling_event_type`, `scan_type` (`A` actual, `AA` assumed, `L`
/// logical; absent when the feed did not say), `machine`.
impl Serialize for EventView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let scan = &self.scan;
        let facility = scan.facility();
        let mut out = serializer.serialize_struct("EventView", 13)?;
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
        match scan.handling.code() {
            "" => out.skip_field("scan_type")?,
            code => out.serialize_field("scan_type", code)?,
        }
        out.serialize_field("machine", &*scan.machine)?;
        out.end()
    }
}

/// JSON: `barcode` (canonical digits: IMb `TRACKING-ROUTING`, IMpb tracking number), `class`,
/// `routing_zip`, `status`, `logical` (with `DELIVERED` only), `status_time` (RFC 3339 UTC),
/// `expected_delivery` (`YYYY-MM-DD` or null) and `events`, newest first.
impl Serialize for PieceStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("PieceStatus", 8)?;
        out.serialize_field("barcode", &self.barcode.to_barcode().to_string())?;
        out.serialize_field("class", self.class.as_str())?;
        out.serialize_field("routing_zip", &self.routing.to_string())?;
        out.serialize_field("status", self.status.as_str())?;
        if self.status == Status::Delivered {
            out.serialize_field("logical", &self.logical)?;
        } else {
            out.skip_field("logical")?;
        }
        out.serialize_field("status_time", &format_utc(self.status_time_ms))?;
        out.serialize_field(
            "expected_delivery",
            &self.expected_delivery.map(format_date),
        )?;
        out.serialize_field("events", &self.events)?;
        out.end()
    }
}

/// `YYYY-MM-DD` of a day since the epoch.
pub fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

fn view(scan: &StoredScan, codes: &CodeTables) -> EventView {
    let mut view = EventView {
        scan: scan.clone(),
        description: String::new(),
        status: Status::Unknown,
        phase: None,
        stop_the_clock: None,
        logical_delivery: false,
    };
    match codes.lookup(scan.class, scan.code) {
        CodeInfo::Mail(entry) => {
            view.description.clone_from(&entry.description);
            view.status = entry.status;
            view.phase = Some(entry.phase.clone()).filter(|p| !p.is_empty());
            view.stop_the_clock = Some(entry.stop_the_clock);
            view.logical_delivery = entry.logical_delivery;
        }
        CodeInfo::Package(entry) => {
            view.description.clone_from(&entry.description);
            view.status = entry.status;
        }
        CodeInfo::Unknown => {}
    }
    view
}

/// The status of a piece from its scans (oldest first, as the store returns them); `None`
/// without scans. `UNKNOWN` only when no scan's code is known, as of the newest scan.
///
/// Mail: the furthest status reached along [`MAIL_ORDER`], from the first scan that reached it;
/// unless a newer known scan says something off that path (forwarded, returned, an
/// exception), which then is the status. Packages: the newest scan with a known code, since a
/// package's status can go back (an attempt after out-for-delivery).
pub fn piece_status(scans: &[StoredScan], codes: &CodeTables) -> Option<PieceStatus> {
    let first = scans.first()?;
    let newest = scans.last()?;
    let views: Vec<EventView> = scans.iter().map(|s| view(s, codes)).collect();
    let known = |v: &&EventView| v.status != Status::Unknown;
    let newest_known = views.iter().rev().find(known);
    let current = match first.class {
        MailClass::Mail => {
            let rank = |v: &EventView| MAIL_ORDER.iter().position(|s| *s == v.status);
            let furthest = views.iter().filter_map(rank).max();
            // The first (oldest) scan at the furthest status: when that status was reached.
            let on_path = furthest.and_then(|top| views.iter().find(|v| rank(v) == Some(top)));
            match (on_path, newest_known) {
                (Some(path), Some(off))
                    if rank(off).is_none() && off.scan.time_ms > path.scan.time_ms =>
                {
                    Some(off)
                }
                (Some(path), _) => Some(path),
                (None, off) => off,
            }
        }
        MailClass::Package => newest_known,
    };
    let (status, status_time_ms, logical) = match current {
        Some(v) => (
            v.status,
            v.scan.time_ms,
            v.status == Status::Delivered
                && (v.logical_delivery || v.scan.handling == HandlingEventType::Logical),
        ),
        None => (Status::Unknown, newest.time_ms, false),
    };
    let expected_delivery = views
        .iter()
        .find(|v| v.stop_the_clock == Some(true))
        .map(|v| expected_delivery_day(v.scan.time_ms, v.scan.facility().state));
    Some(PieceStatus {
        barcode: first.barcode,
        class: first.class,
        routing: newest.routing,
        status,
        status_time_ms,
        logical,
        expected_delivery,
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

    /// Wednesday 2025-01-15 at `hour`:00 UTC.
    fn wednesday(hour: i64) -> i64 {
        imbtrack_feed::time::days_from_civil(2025, 1, 15) * 86_400_000 + hour * 3_600_000
    }

    fn with_handling(mut scan: StoredScan, handling: HandlingEventType) -> StoredScan {
        scan.handling = handling;
        scan
    }

    #[test]
    fn mail_status_is_the_furthest_reached_and_when() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        // 873 in transit (assumed), 918 sorted, 919 sorted again (stop-the-clock), then a code
        // no table lists: still sorted, since 918.
        let scans = [
            with_handling(scan(&imb, wednesday(1), "873"), HandlingEventType::Assumed),
            scan(&imb, wednesday(2), "918"),
            scan(&imb, wednesday(3), "919"),
            scan(&imb, wednesday(4), "271"),
        ];
        let status = piece_status(&scans, &codes).unwrap();
        assert_eq!(status.status, Status::SortedForDelivery);
        assert_eq!(status.status_time_ms, wednesday(2));
        assert!(!status.logical);
        // 919 at 03:00 UTC in California is Tuesday 19:00 local: Wednesday.
        assert_eq!(
            status.expected_delivery,
            Some(imbtrack_feed::time::days_from_civil(2025, 1, 15))
        );
        assert_eq!(status.events.len(), 4);
        assert_eq!(status.events[0].scan.code.as_str(), "271");
        assert_eq!(status.events[0].status, Status::Unknown);
        assert_eq!(status.events[0].description, "");
        assert_eq!(status.events[3].status, Status::InTransit);
        assert_eq!(status.events[3].phase, None);
        assert_eq!(status.events[3].scan.facility().city, "SAN FRANCISCO");
        assert_eq!(status.class, MailClass::Mail);
        // The JSON the API serves, written straight from the typed result.
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["barcode"], "00270123456789123456");
        assert_eq!(json["class"], "mail");
        assert_eq!(json["status"], "SORTED_FOR_DELIVERY");
        assert!(json.get("logical").is_none());
        assert_eq!(json["status_time"], format_utc(wednesday(2)));
        assert_eq!(json["expected_delivery"], "2025-01-15");
        assert_eq!(json["events"][0]["code"], "271");
        assert_eq!(json["events"][0]["status"], "UNKNOWN");
        assert!(json["events"][0].get("phase").is_none());
        assert_eq!(json["events"][0]["scan_type"], "A");
        assert_eq!(json["events"][3]["scan_type"], "AA");
        assert_eq!(json["events"][3]["handling_event_type"], "assumed");
        assert_eq!(json["events"][3]["facility_city"], "SAN FRANCISCO");
        assert_eq!(json["events"][3]["facility_zip"], "94110");
        assert_eq!(json["events"][2]["stop_the_clock"], false);
        assert_eq!(json["events"][1]["stop_the_clock"], true);
        assert_eq!(
            json["events"][2]["phase"],
            "Phase 3c - Destination Sequenced Carrier Sortation"
        );
    }

    #[test]
    fn a_logical_delivery_event_delivers_logically() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        let scans = [
            scan(&imb, wednesday(2), "918"),
            scan(&imb, wednesday(3), "146"),
            with_handling(scan(&imb, wednesday(20), "517"), HandlingEventType::Logical),
        ];
        let status = piece_status(&scans, &codes).unwrap();
        assert_eq!(
            (status.status, status.status_time_ms),
            (Status::Delivered, wednesday(20))
        );
        assert!(status.logical);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            (json["status"].as_str(), json["logical"].as_bool()),
            (Some("DELIVERED"), Some(true))
        );
        assert_eq!(json["expected_delivery"], serde_json::Value::Null);
        assert_eq!(json["events"][0]["scan_type"], "L");
    }

    #[test]
    fn a_newer_scan_off_the_mail_path_is_the_status() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        let sorted_then_exception = [
            scan(&imb, wednesday(2), "918"),
            scan(&imb, wednesday(5), "999"),
        ];
        let status = piece_status(&sorted_then_exception, &codes).unwrap();
        assert_eq!(
            (status.status, status.status_time_ms),
            (Status::Exception, wednesday(5))
        );
        // An exception older than the furthest progress does not hold it back.
        let exception_then_sorted = [
            scan(&imb, wednesday(2), "999"),
            scan(&imb, wednesday(5), "918"),
        ];
        let status = piece_status(&exception_then_sorted, &codes).unwrap();
        assert_eq!(status.status, Status::SortedForDelivery);
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
        let forwarded = [scan(&impb, 1_000, "10"), scan(&impb, 2_000, "06")];
        assert_eq!(
            piece_status(&forwarded, &codes).unwrap().status,
            Status::Forwarded
        );
        let returned = [scan(&impb, 1_000, "10"), scan(&impb, 2_000, "21")];
        assert_eq!(
            piece_status(&returned, &codes).unwrap().status,
            Status::Returned
        );
    }

    /// Every code of both shipped tables, alone on a piece: the piece has the code's status
    /// (never UNKNOWN), a logical delivery only from 517, an expected day only from a
    /// stop-the-clock code.
    #[test]
    fn every_code_class_gives_its_status() {
        let codes = CodeTables::builtin();
        let imb = Barcode::Imb(Imb::new("00270123456789123456", "").unwrap());
        for (code, entry) in codes.mail_codes() {
            let piece = piece_status(&[scan(&imb, wednesday(12), code.as_str())], &codes).unwrap();
            assert_eq!(piece.status, entry.status, "mail {}", code.as_str());
            assert_ne!(piece.status, Status::Unknown);
            assert_eq!(
                piece.logical,
                code.as_str() == "517",
                "mail {}",
                code.as_str()
            );
            assert_eq!(piece.expected_delivery.is_some(), entry.stop_the_clock);
        }
        let impb = Barcode::Impb(Impb::parse("9405803699300124287899").unwrap());
        for (code, entry) in codes.package_codes() {
            let piece = piece_status(&[scan(&impb, wednesday(12), code.as_str())], &codes).unwrap();
            assert_eq!(piece.status, entry.status, "package {}", code.as_str());
        }
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
        assert_eq!(status.expected_delivery, None);
        assert!(piece_status(&[], &codes).is_none());
    }
}
