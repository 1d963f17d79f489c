/*!
Keeps scans where they can be found fast and dropped whole: an in-memory head behind a
write-ahead log, and immutable, checksummed, memory-mapped buckets of one UTC day and one class
each. The file formats and the crash reasoning are in `crates/store/FORMAT.md`.

# Brief overview

- [`Store::append`] takes parsed [`imbtrack_feed::ScanEvent`]s, drops those already stored
  (same piece, instant, event code and facility, across files, buckets and restarts), writes
  the rest to the WAL with one fsync, and only then counts them as accepted.
- [`Store::seal`] turns head buckets whose day is over (plus a grace window) into
  [`SealedBucket`]s; late scans for a sealed day become a small delta bucket, merged into the
  day by [`Store::compact`]. Buckets are written in format v2 (blocked, bit-packed, ~11 bytes a
  scan); v1 buckets of older releases are read as they are and rewritten by
  `Store::compact(true)` ([`BucketFormat`]).
- [`Store::lookup`], [`Store::pieces_by_zip`] and [`Store::pieces_by_mailer`] answer queries,
  never returning a scan past its [`RetentionPolicy`] window; [`Store::expire`] removes whole
  buckets once their day is past it.
- [`Store::open`] maps sealed buckets without rebuilding anything, quarantines any that fail
  their checksums, reads the head checkpoint ([`Store::checkpoint`]) and replays the WAL
  written after it, cutting a torn last record.

# Example

```
use imbtrack_feed::{parse_feed, FeedOptions, RejectList, time::parse_timestamp};
use imbtrack_store::{Store, StoreOptions};

let dir = tempfile::tempdir()?;
let now = parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap();
let feed = b"imb|scanDatetime|scanEventCode|scanFacilityZip\n\
0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110\n";
let parsed = parse_feed("f.psv", feed, &FeedOptions::at(now), &mut RejectList::default())?;

let (store, _) = Store::open(dir.path(), StoreOptions::default())?;
assert_eq!(store.append(&parsed.events, &parsed.symbols)?.accepted, 1);
assert_eq!(store.append(&parsed.events, &parsed.symbols)?.duplicates, 1);
store.seal(now)?;
drop(store);

let (store, report) = Store::open(dir.path(), StoreOptions::default())?;
assert_eq!(report.buckets_opened, 1);
let scans = store.lookup(parsed.events[0].barcode, now);
assert_eq!(scans[0].code.as_str(), "918");
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]

mod bucket;
#[doc(hidden)]
pub mod fault;
mod fsutil;
mod retention;
mod store;
mod wal;

use std::path::{Path, PathBuf};

pub use crate::bucket::{
    rechecksum, BloomProbe, BucketFormat, BucketKind, SealedBucket, StoredScan,
};
pub use crate::retention::{RetentionError, RetentionPolicy, DAY_MS};
pub use crate::store::layout::{class_of, day_name, BucketId};
pub use crate::store::{
    AppendReport, CheckpointReport, CompactReport, DayPiece, ExpireReport, PendingAppend,
    RecoveryReport, SealReport, Store, StoreOptions, StoreStats,
};
pub use crate::wal::WalRepair;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file failed its checks. For a bucket, `Store::open` moves it to `quarantine/`; the
    /// operator can delete it or restore it from a backup, and the WAL keeps any scans that
    /// were not yet sealed.
    #[error("{path} is corrupt ({what}); it was moved aside and the rest of the store serves")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        what: String,
    },
    /// Another process (or another `Store` in this one) has the store open.
    #[error("the store in {dir} is open in another process (a running `imbtrack serve`?)")]
    InUse {
        /// The store's directory.
        dir: PathBuf,
    },
    /// An earlier write, fsync or rename failed, so what is on disk may no longer match what is
    /// in memory: the store takes no more changes until it is opened again (which recovers it
    /// from disk, as after a crash). Reads still answer.
    #[error("the store failed earlier and takes no more changes until it is reopened: {0}")]
    Failed(String),
    /// Data that breaks an internal rule (a bug, or a bucket larger than the format allows).
    #[error("internal invariant broken: {0}")]
    Invariant(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
