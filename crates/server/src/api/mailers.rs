//! `GET /v1/mailers/{mid}/summary`: a mailer's day.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use imbtrack_barcode::Barcode;
use imbtrack_engine::{EventView, PieceStatus};
use imbtrack_feed::time::{format_utc, DAY_MS};
use imbtrack_feed::Zip;
use serde::Serialize;
use serde_json::json;

use super::error::{internal, ApiError};
use super::params::{parse_count, parse_day, query_params};
use super::peers::{ask_others, owned_here};
use super::AuditNote;
use super::{json_response, noted, require_lookups, Shared};
use crate::auth::{parse_mailer_id, Caller};
/// A piece that has not moved for a while.
#[derive(Serialize)]
struct StalePiece {
    barcode: String,
    status: &'static str,
    last_scan_time: String,
    last_facility_zip: String,
    last_facility_name: String,
}

#[derive(Serialize, Default)]
struct FacilityCount {
    facility_zip: String,
    facility_name: String,
    scans: u64,
    pieces: u64,
}

/// Facilities by scans, most first (then by ZIP and name, so every node orders them alike).
fn busiest_first(facilities: &mut [FacilityCount]) {
    facilities.sort_by(|a, b| {
        b.scans
            .cmp(&a.scans)
            .then_with(|| a.facility_zip.cmp(&b.facility_zip))
            .then_with(|| a.facility_name.cmp(&b.facility_name))
    });
}

/// Most stale pieces listed in a summary (all are counted).
const STALE_LISTED: usize = 100;

/// A mailer's day: pieces by status, scans and pieces by facility that `day` (days since the
/// epoch), and the pieces not delivered whose newest scan is before `stale_before_ms`.
fn summarize(pieces: &[PieceStatus], day: i64, stale_before_ms: i64) -> serde_json::Value {
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_facility: BTreeMap<(Zip, &str), FacilityCount> = BTreeMap::new();
    let mut stale = Vec::new();
    let mut stale_count = 0u64;
    for piece in pieces {
        *by_status.entry(piece.status.as_str()).or_default() += 1;
        let mut seen_at = std::collections::BTreeSet::new();
        let that_day = |e: &&EventView| e.scan.time_ms.div_euclid(DAY_MS) == day;
        for event in piece.events.iter().filter(that_day) {
            let key = (event.scan.facility_zip, event.scan.facility().name);
            let entry = by_facility.entry(key).or_insert_with(|| FacilityCount {
                facility_zip: key.0.to_string(),
                facility_name: key.1.to_string(),
                ..FacilityCount::default()
            });
            entry.scans += 1;
            if seen_at.insert(key) {
                entry.pieces += 1;
            }
        }
        let Some(newest) = piece.events.first() else {
            continue;
        };
        if !piece.status.is_delivered() && newest.scan.time_ms < stale_before_ms {
            stale_count += 1;
            if stale.len() < STALE_LISTED {
                stale.push(StalePiece {
                    barcode: piece.barcode.to_barcode().to_string(),
                    status: piece.status.as_str(),
                    last_scan_time: format_utc(newest.scan.time_ms),
                    last_facility_zip: newest.scan.facility_zip.to_string(),
                    last_facility_name: newest.scan.facility().name.to_string(),
                });
            }
        }
    }
    let mut facilities: Vec<FacilityCount> = by_facility.into_values().collect();
    busiest_first(&mut facilities);
    json!({
        "pieces": pieces.len(),
        "by_status": by_status,
        "by_facility": facilities,
        "stale": {"count": stale_count, "listed": stale},
    })
}

/// Adds another node's summary of the same Mailer ID and day into `into`.
fn merge_summary(into: &mut serde_json::Value, other: &serde_json::Value) {
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    into["pieces"] = json!(count(&into["pieces"]) + count(&other["pieces"]));
    if let (Some(mine), Some(theirs)) = (
        into["by_status"].as_object_mut(),
        other["by_status"].as_object(),
    ) {
        for (status, n) in theirs {
            let sum = mine.get(status).map_or(0, count) + count(n);
            mine.insert(status.clone(), json!(sum));
        }
    }
    let mut facilities: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for side in [&*into, other] {
        for f in side["by_facility"].as_array().into_iter().flatten() {
            let key = (
                f["facility_zip"].as_str().unwrap_or("").to_string(),
                f["facility_name"].as_str().unwrap_or("").to_string(),
            );
            let entry = facilities.entry(key).or_default();
            entry.0 += count(&f["scans"]);
            entry.1 += count(&f["pieces"]);
        }
    }
    let mut merged: Vec<FacilityCount> = facilities
        .into_iter()
        .map(
            |((facility_zip, facility_name), (scans, pieces))| FacilityCount {
                facility_zip,
                facility_name,
                scans,
                pieces,
            },
        )
        .collect();
    busiest_first(&mut merged);
    into["by_facility"] = json!(merged);
    into["stale"]["count"] =
        json!(count(&into["stale"]["count"]) + count(&other["stale"]["count"]));
    let mut listed: Vec<serde_json::Value> = into["stale"]["listed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    listed.extend(
        other["stale"]["listed"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    listed.truncate(STALE_LISTED);
    into["stale"]["listed"] = json!(listed);
}

/// A request about a Mailer ID's day (`/v1/mailers/{mid}/…?date=YYYY-MM-DD`), checked.
pub(super) struct MailerDay {
    pub mid: u32,
    /// The Mailer ID as the path gave it.
    pub mid_text: String,
    /// Days since the epoch, and as the query gave it.
    pub day: i64,
    pub date: String,
    /// Every query parameter (`date` and the route's `extra` ones).
    pub params: BTreeMap<String, String>,
}

impl MailerDay {
    /// Parses the Mailer ID and `date`, allowing the route's `extra` query parameters.
    pub(super) fn parse(
        path: Result<Path<String>, PathRejection>,
        query: Option<&str>,
        extra: &[&str],
    ) -> Result<MailerDay, ApiError> {
        let Path(mid_text) = path?;
        let known: Vec<&str> = std::iter::once("date")
            .chain(extra.iter().copied())
            .collect();
        let params = query_params(query, &known)?;
        let mid =
            parse_mailer_id(&mid_text).map_err(|e| ApiError::bad_request("bad_mailer_id", e))?;
        let (day, date) = parse_day(&params)?;
        Ok(MailerDay {
            mid,
            mid_text,
            day,
            date,
            params,
        })
    }

    /// For a caller who may not see this Mailer ID, the answer (404, exactly as for a Mailer ID
    /// with no pieces that day), audited under `key`; `None` for one who may.
    pub(super) fn refused(&self, caller: &Caller, key: &str) -> Option<Response> {
        if caller.sees(Some(self.mid)) {
            return None;
        }
        let error = ApiError::not_found(format!(
            "no pieces of Mailer ID {} on {}",
            self.mid_text, self.date
        ));
        let note = AuditNote {
            key: Some(key.to_string()),
            ..AuditNote::default()
        };
        Some(noted(error.into_response(), note))
    }
}

pub(super) async fn mailer_summary(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let asked = MailerDay::parse(path, query.as_deref(), &["stale_hours"])?;
    let (mid, day) = (asked.mid, asked.day);
    let (mid_text, date) = (&asked.mid_text, &asked.date);
    let stale_hours = parse_count(&asked.params, "stale_hours", 24, 24 * 90)?;
    let key = format!("mailer {mid_text} {date}");
    if let Some(refused) = asked.refused(&caller, &key) {
        return Ok(refused);
    }
    let engine = state.engine.clone();
    let peers = state.peers.clone();
    let mut summary = tokio::task::spawn_blocking(move || {
        let found = engine
            .day_pieces_by_mailer(mid, day)
            .into_iter()
            .filter(|piece| owned_here(peers.as_ref(), piece.key))
            .collect();
        let pieces = engine.statuses(found);
        let stale_before = engine.now_ms() - stale_hours as i64 * 3_600_000;
        summarize(&pieces, day, stale_before)
    })
    .await
    .map_err(internal)?;
    let path = format!(
        "/v1/mailers/{mid_text}/summary?{}",
        query.as_deref().unwrap_or("")
    );
    for share in ask_others(&state, &caller, &headers, &path).await? {
        merge_summary(&mut summary, &share);
    }
    let count = summary["pieces"].as_u64().unwrap_or(0);
    summary["mailer_id"] = json!(mid_text);
    summary["date"] = json!(date);
    summary["stale_hours"] = json!(stale_hours);
    // The barcodes the answer lists (this node's and the others'), as answered.
    let listed = summary["stale"]["listed"].as_array().into_iter().flatten();
    let barcodes = listed
        .filter_map(|piece| Barcode::parse(piece["barcode"].as_str()?).ok())
        .map(|barcode| barcode.key())
        .collect();
    let note = AuditNote {
        key: Some(key),
        barcodes,
        results: count,
    };
    Ok(noted(json_response(&summary), note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use imbtrack_barcode::BarcodeKey;
    use imbtrack_feed::time::{parse_date, parse_timestamp};
    use imbtrack_feed::Status;

    fn event(time: &str, zip: &str, status: &str) -> EventView {
        EventView {
            scan: imbtrack_store::StoredScan {
                barcode: BarcodeKey::from_u128(1 << 120).unwrap(),
                class: imbtrack_feed::MailClass::Mail,
                time_ms: parse_timestamp(time.as_bytes(), None).unwrap(),
                routing: Zip::parse(b"94110").unwrap(),
                facility_zip: Zip::parse(zip.as_bytes()).unwrap(),
                code: imbtrack_feed::EventCode::parse(b"919").unwrap(),
                handling: imbtrack_feed::HandlingEventType::Physical,
                facility_text: Arc::from(format!("P&DC {zip}")),
                machine: Arc::from(""),
            },
            description: String::new(),
            status: Status::parse(status).unwrap(),
            phase: None,
            stop_the_clock: None,
            logical_delivery: false,
        }
    }

    fn piece(serial: u64, status: &str, events: Vec<EventView>) -> PieceStatus {
        let barcode = Barcode::parse(&format!("00270123456{serial:09}")).unwrap();
        PieceStatus {
            barcode: barcode.key(),
            class: imbtrack_feed::MailClass::Mail,
            routing: Zip::parse(b"94110").unwrap(),
            status: Status::parse(status).unwrap(),
            status_time_ms: events[0].scan.time_ms,
            logical: false,
            expected_delivery: None,
            events,
        }
    }

    #[test]
    fn summaries_count_the_days_scans_and_stale_undelivered_pieces() {
        let pieces = vec![
            // Scanned twice that day at one facility, once the day before: stale.
            piece(
                1,
                "IN_TRANSIT",
                vec![
                    event("2025-01-11T09:00:00Z", "94110", "IN_TRANSIT"),
                    event("2025-01-11T08:00:00Z", "94110", "ACCEPTED"),
                    event("2025-01-10T08:00:00Z", "60607", "ACCEPTED"),
                ],
            ),
            // Delivered long ago: never stale.
            piece(
                2,
                "DELIVERED",
                vec![event("2025-01-11T10:00:00Z", "60607", "DELIVERED")],
            ),
            // Recent: not stale.
            piece(
                3,
                "IN_TRANSIT",
                vec![event("2025-01-11T23:00:00Z", "94110", "IN_TRANSIT")],
            ),
        ];
        let cutoff = parse_timestamp(b"2025-01-11T12:00:00Z", None).unwrap();
        let day = parse_date("2025-01-11").unwrap();
        let summary = summarize(&pieces, day, cutoff);
        assert_eq!(summary["pieces"], 3);
        assert_eq!(
            summary["by_status"],
            json!({"IN_TRANSIT": 2, "DELIVERED": 1})
        );
        assert_eq!(
            summary["by_facility"],
            json!([
                {"facility_zip": "94110", "facility_name": "P&DC 94110", "scans": 3, "pieces": 2},
                {"facility_zip": "60607", "facility_name": "P&DC 60607", "scans": 1, "pieces": 1},
            ])
        );
        assert_eq!(summary["stale"]["count"], 1);
        assert_eq!(
            summary["stale"]["listed"][0]["barcode"],
            "00270123456000000001"
        );
        assert_eq!(
            summary["stale"]["listed"][0]["last_scan_time"],
            "2025-01-11T09:00:00Z"
        );
    }
}
