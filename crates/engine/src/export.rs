//! A mailer's raw scans of a day, as IV-MTR-style records: what `GET
//! /v1/mailers/{mid}/scans` and `imbtrack export` write. The columns are a delimited feed's
//! (`imb` or `impb`, `scanDatetime`, `scanEventCode`, …), so an export is itself a feed that
//! imbtrack, or a mailer's IV-MTR loader, reads back.

use std::io::{self, Write};

use imbtrack_barcode::Barcode;
use imbtrack_feed::time::{format_utc, DAY_MS};
use imbtrack_store::{DayPiece, StoredScan};

use crate::Engine;

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Comma-separated with a header row (fields quoted where needed).
    Csv,
    /// One JSON object a line, the same names as the CSV's columns.
    Jsonl,
}

impl ExportFormat {
    /// `csv` or `jsonl`.
    pub fn parse(text: &str) -> Option<ExportFormat> {
        match text {
            "csv" => Some(ExportFormat::Csv),
            "jsonl" => Some(ExportFormat::Jsonl),
            _ => None,
        }
    }

    /// The media type of the body.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }
}

/// The columns, in order.
const COLUMNS: [&str; 12] = [
    "imb",
    "impb",
    "mailClass",
    "scanDatetime",
    "scanEventCode",
    "handlingEventType",
    "scanFacilityZip",
    "scanFacilityName",
    "scanFacilityCity",
    "scanFacilityState",
    "machineName",
    "routingZip",
];

/// A scan's fields, in [`COLUMNS`] order.
fn fields(scan: &StoredScan) -> [String; 12] {
    let barcode = scan.barcode.to_barcode();
    let (imb, impb) = match barcode {
        Barcode::Impb(_) => (String::new(), barcode.to_string()),
        _ => (barcode.to_string(), String::new()),
    };
    let facility = scan.facility();
    [
        imb,
        impb,
        scan.class.as_str().to_string(),
        format_utc(scan.time_ms),
        scan.code.as_str().to_string(),
        scan.handling.code().to_string(),
        scan.facility_zip.to_string(),
        facility.name.to_string(),
        facility.city.to_string(),
        facility.state.to_string(),
        scan.machine.to_string(),
        scan.routing.to_string(),
    ]
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str, out: &mut Vec<u8>) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

impl Engine {
    /// Writes the scans of `pieces` (a day query's, [`Engine::day_pieces_by_mailer`]) that
    /// fall on `day` (UTC), oldest first per piece, pieces in key order; a CSV starts with its
    /// header row. Returns the scans written.
    pub fn export_day(
        &self,
        pieces: &[DayPiece],
        day: i64,
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> io::Result<u64> {
        let now = self.now_ms();
        let on_day = day * DAY_MS..(day + 1) * DAY_MS;
        let mut buffer = Vec::with_capacity(64 * 1024);
        if format == ExportFormat::Csv {
            buffer.extend_from_slice(COLUMNS.join(",").as_bytes());
            buffer.push(b'\n');
        }
        let mut written = 0u64;
        for piece in pieces {
            for scan in self.store.lookup_day_piece(piece, now) {
                if !on_day.contains(&scan.time_ms) {
                    continue;
                }
                let values = fields(&scan);
                match format {
                    ExportFormat::Csv => {
                        for (i, value) in values.iter().enumerate() {
                            if i > 0 {
                                buffer.push(b',');
                            }
                            csv_field(value, &mut buffer);
                        }
                    }
                    ExportFormat::Jsonl => {
                        let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                            .iter()
                            .zip(values)
                            .filter(|(_, v)| !v.is_empty())
                            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                            .collect();
                        serde_json::to_writer(&mut buffer, &object)?;
                    }
                }
                buffer.push(b'\n');
                written += 1;
                if buffer.len() >= 60 * 1024 {
                    out.write_all(&buffer)?;
                    buffer.clear();
                }
            }
        }
        out.write_all(&buffer)?;
        out.flush()?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;
    use imbtrack_feed::time::{days_from_civil, parse_timestamp};
    use imbtrack_feed::{parse_feed, FeedOptions, RejectList};

    #[test]
    fn an_export_is_a_feed_that_reads_back_to_the_same_scans() {
        let dir = tempfile::tempdir().unwrap();
        let now = parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap();
        let (engine, _) = Engine::open(dir.path(), EngineOptions::at(now)).unwrap();
        let feed = "imb|scanDatetime|scanEventCode|scanFacilityZip|scanFacilityName|handlingEventType|machineName\n\
            0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110|SF, \"MAIN\" P&DC|A|DBCS\n\
            0027012345678912345612345678901|2025-01-16T10:00:00-05:00|919|94110|SF P&DC|AA|DBCS\n\
            00270123456789123457|2025-01-15T11:00:00-05:00|873|60607||AA|\n\
            0027098765412345678912345678901|2025-01-15T11:00:00-05:00|918|94110||A|\n";
        engine
            .ingest("f", feed.as_bytes(), &mut RejectList::default(), &|_| {})
            .unwrap();
        let day = days_from_civil(2025, 1, 15);
        let pieces = engine.day_pieces_by_mailer(123456, day);
        for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
            let mut out = Vec::new();
            let written = engine.export_day(&pieces, day, format, &mut out).unwrap();
            // The Mailer ID's two pieces' scans of that day; not the next day's, not another
            // mailer's.
            assert_eq!(written, 2, "{format:?}");
            let parsed = parse_feed(
                "export",
                &out,
                &FeedOptions::at(now),
                &mut RejectList::default(),
            )
            .unwrap();
            assert_eq!(parsed.events.len(), 2, "{}", String::from_utf8_lossy(&out));
            let mut times: Vec<i64> = parsed.events.iter().map(|e| e.time_ms).collect();
            times.sort_unstable();
            assert_eq!(
                times,
                [
                    parse_timestamp(b"2025-01-15T15:00:00Z", None).unwrap(),
                    parse_timestamp(b"2025-01-15T16:00:00Z", None).unwrap()
                ]
            );
            let first = parsed
                .events
                .iter()
                .find(|e| e.code.as_str() == "918")
                .unwrap();
            assert_eq!(
                parsed.symbols.facility(first.facility).name,
                "SF, \"MAIN\" P&DC"
            );
            assert_eq!(first.routing.to_string(), "12345678901");
        }
    }
}
