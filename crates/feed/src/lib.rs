/*!
Turns the bytes plants and USPS feeds send into validated [`ScanEvent`]s, fast, and never lets
one bad record stop a feed or vanish silently.

# Brief overview

- [`ScanEvent`] is the fixed-layout, 64-byte record the store keeps: barcode key, class, routing
  ZIP, scan instant (UTC milliseconds), event code, facility ZIP, handling event type, and
  interned facility and machine names ([`SymbolTable`]).
- [`PreparedFeed`] takes a feed's bytes (gzip detected by magic bytes), detects its [`Format`]
  (IV-MTR delimited with a header row, IV-MTR JSON bodies or JSON lines, legacy IMb Tracing
  records), and cuts it into [`Chunk`]s at record boundaries that parse independently, so
  several threads can parse one file. [`parse_feed`] and [`parse_feed_parallel`] do it all.
- A delimited feed's plain rows (no quotes, every value in its usual form as it stands) are
  read straight into their events, their delimiters, quotes and newline found in one scan; any
  other row goes to the general reader, which alone rejects, so both give the same answer.
- Every record is either accepted or rejected with a [`RejectReason`]; rejects go to a
  [`RejectSink`] (such as [`RejectFile`], one JSON line each) and are counted in the
  [`ParseReport`].
- [`CodeTables`] loads the mail operation code and package event code tables of `data/`.
- `generate` writes a realistic synthetic feed (`imbtrack gen`; cargo feature `generator`, on
  by default, which the crates that only read scans leave out).

# Example

```
use imbtrack_feed::{parse_feed, FeedOptions, RejectList, time::parse_timestamp};

let feed = b"imb|scanDatetime|scanEventCode|scanFacilityZip|machineName\n\
0123456709498765432101234567891|2025-01-15T10:00:00-05:00|918|94110|DBCS\n\
not-a-barcode|2025-01-15T10:00:00-05:00|918|94110|DBCS\n";
let now = parse_timestamp(b"2025-01-16T00:00:00Z", None).unwrap();
let mut rejects = RejectList::default();
let parsed = parse_feed("example.psv", feed, &FeedOptions::at(now), &mut rejects)?;
assert_eq!(parsed.report.accepted, 1);
assert_eq!(parsed.report.rejects_by_reason["bad_barcode"], 1);
assert_eq!(parsed.events[0].code.as_str(), "918");
assert_eq!(parsed.symbols.get(parsed.events[0].machine), "DBCS");
assert_eq!(rejects.rejects[0].0, 3); // the line number
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]

mod codes;
mod delimited;
mod event;
#[cfg(feature = "generator")]
mod generate;
mod json;
mod parse;
mod plain_row;
mod record;
mod reject;
pub mod time;

pub use crate::codes::{CodeInfo, CodeTables, CodeTablesError, MailOpCode, PackageEvent, Status};
pub use crate::event::{
    EventCode, Facility, HandlingEventType, MailClass, ScanEvent, ScanIdentity, Symbol,
    SymbolTable, Zip, SCAN_RECORD_LEN,
};
#[cfg(feature = "generator")]
pub use crate::generate::{
    generate, GenFormat, GenOptions, GenSummary, GeneratedLine, LineKind, SplitMix64,
};
pub use crate::parse::{
    parse_feed, parse_feed_at, parse_feed_parallel, Chunk, ChunkOutput, FeedError, Format,
    LineNumbers, ParsedFeed, PreparedFeed,
};
pub use crate::record::FeedOptions;
pub use crate::reject::{
    DiscardRejects, ParseReport, Reject, RejectFile, RejectList, RejectReason, RejectSink,
};
