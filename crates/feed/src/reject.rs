//! Rejected records: why ([`RejectReason`]), where ([`Reject`]), and where they go
//! ([`RejectSink`], [`RejectFile`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

use crate::time::TimeError;

/// Why a record was not accepted. [`RejectReason::code`] names each for counters and files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The barcode failed to parse; the barcode crate says why.
    BadBarcode(imbtrack_barcode::Error),
    /// No barcode column had a value.
    MissingBarcode,
    /// No scan time.
    MissingTime,
    /// The scan time is no timestamp of an accepted form, or a field is out of range.
    BadTime,
    /// The scan time has no UTC offset and the source gives no default.
    TimeWithoutOffset,
    /// The scan time is absurdly far from now.
    TimeOutOfRange,
    /// No event code.
    MissingEventCode,
    /// An event code that is not 1–3 letters or digits.
    BadEventCode,
    /// A ZIP that is not 5, 9 or 11 digits.
    BadZip {
        /// Which field: `facility_zip` or `routing`.
        field: &'static str,
    },
    /// No facility ZIP.
    MissingZip,
    /// A delimited row with the wrong number of columns.
    ColumnCount {
        /// Columns in the header.
        expected: usize,
        /// Columns in the row.
        found: usize,
    },
    /// A quoted field that never closes on its line.
    UnterminatedQuote,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A record longer than the size limit.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A JSON record that does not parse as an object of scan fields.
    MalformedJson(String),
}

impl RejectReason {
    /// Stable snake_case name, used as the counter key and in the rejects file.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::BadBarcode(_) => "bad_barcode",
            RejectReason::MissingBarcode => "missing_barcode",
            RejectReason::MissingTime => "missing_time",
            RejectReason::BadTime => "bad_time",
            RejectReason::TimeWithoutOffset => "time_without_offset",
            RejectReason::TimeOutOfRange => "time_out_of_range",
            RejectReason::MissingEventCode => "missing_event_code",
            RejectReason::BadEventCode => "bad_event_code",
            RejectReason::BadZip { .. } => "bad_zip",
            RejectReason::MissingZip => "missing_zip",
            RejectReason::ColumnCount { .. } => "column_count",
            RejectReason::UnterminatedQuote => "unterminated_quote",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::TooLong { .. } => "too_long",
            RejectReason::MalformedJson(_) => "malformed_json",
        }
    }
}

impl From<TimeError> for RejectReason {
    fn from(error: TimeError) -> Self {
        match error {
            TimeError::Malformed | TimeError::OutOfRange => RejectReason::BadTime,
            TimeError::WithoutOffset => RejectReason::TimeWithoutOffset,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::BadBarcode(e) => write!(f, "bad barcode: {e}"),
            RejectReason::MissingBarcode => {
                f.write_str("no barcode (imb, imbTrackingCode, impb or pic)")
            }
            RejectReason::MissingTime => f.write_str("no scan time"),
            RejectReason::BadTime => f.write_str("scan time is not a valid timestamp"),
            RejectReason::TimeWithoutOffset => {
                f.write_str("scan time has no UTC offset and the source sets no default")
            }
            RejectReason::TimeOutOfRange => {
                f.write_str("scan time is too far in the past or future")
            }
            RejectReason::MissingEventCode => f.write_str("no event code"),
            RejectReason::BadEventCode => f.write_str("event code is not 1-3 letters or digits"),
            RejectReason::BadZip { field } => write!(f, "{field} is not a 5, 9 or 11-digit ZIP"),
            RejectReason::MissingZip => f.write_str("no facility ZIP"),
            RejectReason::ColumnCount { expected, found } => {
                write!(f, "row has {found} columns, the header {expected}")
            }
            RejectReason::UnterminatedQuote => {
                f.write_str("quoted field does not close on its line")
            }
            RejectReason::InvalidUtf8 => f.write_str("record is not valid UTF-8"),
            RejectReason::TooLong { len } => {
                write!(f, "record of {len} bytes is over the size limit")
            }
            RejectReason::MalformedJson(e) => write!(f, "malformed JSON: {e}"),
        }
    }
}

/// One rejected record and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject<'a> {
    /// 1-based line of the record (of its first line, for a JSON body).
    pub line: u64,
    /// Index of the event in a JSON body's event array.
    pub index: Option<u64>,
    /// Why.
    pub reason: RejectReason,
    /// The record as it came.
    pub raw: &'a [u8],
}

/// Where rejected records go.
pub trait RejectSink {
    /// Takes one rejected record of the feed `source`.
    fn reject(&mut self, source: &str, reject: &Reject<'_>) -> io::Result<()>;
}

/// Rejects kept in memory, for tests and for parallel parsing that writes them in order later.
#[derive(Debug, Default, Clone)]
pub struct RejectList {
    /// (line, index, reason, raw record) of each reject, in input order.
    pub rejects: Vec<(u64, Option<u64>, RejectReason, Vec<u8>)>,
}

impl RejectList {
    /// Hands every reject, in order, to `sink` as rejects of `source`.
    pub fn replay(&self, source: &str, sink: &mut dyn RejectSink) -> io::Result<()> {
        for (line, index, reason, raw) in &self.rejects {
            sink.reject(
                source,
                &Reject {
                    line: *line,
                    index: *index,
                    reason: reason.clone(),
                    raw,
                },
            )?;
        }
        Ok(())
    }
}

impl RejectSink for RejectList {
    fn reject(&mut self, _source: &str, reject: &Reject<'_>) -> io::Result<()> {
        self.rejects.push((
            reject.line,
            reject.index,
            reject.reason.clone(),
            reject.raw.to_vec(),
        ));
        Ok(())
    }
}

/// Discards rejects (their counts are still in the [`ParseReport`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardRejects;

impl RejectSink for DiscardRejects {
    fn reject(&mut self, _source: &str, _reject: &Reject<'_>) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Serialize)]
struct RejectLine<'a> {
    source: &'a str,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    reason: &'static str,
    message: String,
    raw: std::borrow::Cow<'a, str>,
}

/// Writes each reject as one JSON line: `source`, `line`, `index` (JSON bodies), `reason`,
/// `message` and the `raw` record (invalid UTF-8 replaced).
pub struct RejectFile<W: Write> {
    out: W,
}

impl<W: Write> RejectFile<W> {
    /// Writes rejects to `out`.
    pub fn new(out: W) -> RejectFile<W> {
        RejectFile { out }
    }

    /// The writer back, for flushing.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> RejectSink for RejectFile<W> {
    fn reject(&mut self, source: &str, reject: &Reject<'_>) -> io::Result<()> {
        let line = RejectLine {
            source,
            line: reject.line,
            index: reject.index,
            reason: reject.reason.code(),
            message: reject.reason.to_string(),
            raw: String::from_utf8_lossy(reject.raw.trim_ascii_end()),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }
}

/// What a parse did: every non-blank record is either accepted or rejected.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ParseReport {
    /// Non-blank records seen (lines, or events of a JSON body).
    pub records: u64,
    /// Records that became scan events.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Rejected records by [`RejectReason::code`].
    pub rejects_by_reason: BTreeMap<&'static str, u64>,
}

impl ParseReport {
    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: &ParseReport) {
        self.records += other.records;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        for (reason, count) in &other.rejects_by_reason {
            *self.rejects_by_reason.entry(reason).or_default() += count;
        }
    }

    pub(crate) fn count_reject(&mut self, reason: &RejectReason) {
        self.records += 1;
        self.rejected += 1;
        *self.rejects_by_reason.entry(reason.code()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_file_writes_one_json_line_each() {
        let mut file = RejectFile::new(Vec::new());
        let reject = Reject {
            line: 7,
            index: None,
            reason: RejectReason::MissingZip,
            raw: b"a|b|\xFF\r\n",
        };
        file.reject("plant.psv", &reject).unwrap();
        let json = Reject {
            line: 1,
            index: Some(3),
            reason: RejectReason::ColumnCount {
                expected: 4,
                found: 5,
            },
            raw: b"{}",
        };
        file.reject("push", &json).unwrap();
        let text = String::from_utf8(file.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["source"], "plant.psv");
        assert_eq!(lines[0]["line"], 7);
        assert_eq!(lines[0]["reason"], "missing_zip");
        assert_eq!(lines[0]["raw"], "a|b|\u{FFFD}");
        assert!(lines[0].get("index").is_none());
        assert_eq!(lines[1]["index"], 3);
        assert_eq!(lines[1]["message"], "row has 5 columns, the header 4");
    }
}
