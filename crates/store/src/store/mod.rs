//! [`Store`]: the head (open buckets in memory behind the WAL), the sealed buckets, and the
//! operations over both.
//!
//! # Readers never wait for writers
//!
//! Everything a lookup reads is in one immutable [`View`] behind an `ArcSwap`: the sealed
//! buckets (mapped files), the open head buckets, the head buckets being sealed, and the symbol
//! texts. A lookup loads the current view (no lock) and, for an open bucket, takes the read
//! lock of the one head shard that holds its piece. Changes go through the writer lock, which
//! readers never take:
//!
//! - an append checks each event and inserts the new ones into the head shards in one pass
//!   (each shard's lock held only for its share of the batch), queues their WAL records, and
//!   leaves the writer lock; it then waits for an fsync covering its records, which writes
//!   the queued records first and is shared with the appenders around it
//!   ([`crate::wal::GroupCommit`]). A scan can be seen by a lookup up to one fsync before its
//!   append is acknowledged; an acknowledged scan is durable.
//! - a seal freezes the due head buckets (moves them, in a new view, from `head` to `sealing`,
//!   where lookups still find them and appends no longer reach them), sorts, encodes, writes
//!   and maps their files with no lock held, and then installs them and drops the frozen
//!   buckets in one view swap. Compaction and expiry install their result the same way and
//!   delete files after the swap; a reader still holding the older view keeps its mappings.
//!
//! Seals, compactions and expiries run one at a time (the maintenance lock).
//!
//! # Restart
//!
//! Opening a store replays the WAL into the head. A checkpoint (`checkpoint`) of the head,
//! written at clean shutdown and every [`StoreOptions::checkpoint_scans`] scans, bounds that
//! to the WAL written after it.
//!
//! The module's parts: [`head`] (open buckets), [`layout`] (names, manifest, bucket
//! directories), `checkpoint`, `recovery` (open), `append`, `maintenance` (seal, compact,
//! expire) and `query`.

mod append;
mod checkpoint;
mod codec;
pub(crate) mod head;
pub(crate) mod layout;
mod maintenance;
mod pieces;
mod query;
mod recovery;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use imbtrack_feed::{ScanEvent, SymbolTable};
use serde::Serialize;

use crate::bucket::{BucketFormat, SealedBucket};
use crate::retention::{RetentionPolicy, DAY_MS};
use crate::wal::{GroupCommit, SyncTicket, Wal, WalRepair};
use crate::StoreError;
pub use checkpoint::CheckpointReport;
use head::{HeadBucket, SiteNumbers};
use layout::{BucketId, Manifest};
pub use query::DayPiece;

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Retention windows.
    pub retention: RetentionPolicy,
    /// How long after its day ends a head bucket stays open for late scans before sealing.
    pub seal_grace_ms: i64,
    /// Size at which the WAL starts a new segment.
    pub wal_segment_bytes: u64,
    /// Delta buckets a day may have before they are merged into its base.
    pub max_deltas: usize,
    /// Scans appended since the last head checkpoint that make another one due
    /// ([`Store::checkpoint_due`]).
    pub checkpoint_scans: u64,
    /// The format seals and compactions write (v2 unless a store must stay readable by a
    /// release from before v2).
    pub bucket_format: BucketFormat,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: RetentionPolicy::default(),
            seal_grace_ms: DAY_MS,
            wal_segment_bytes: 64 << 20,
            max_deltas: 4,
            checkpoint_scans: 1_000_000,
            bucket_format: BucketFormat::default(),
        }
    }
}

/// What an append did. `accepted + duplicates + expired` is the number of events given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppendReport {
    /// New scans, now durable.
    pub accepted: u64,
    /// Scans the store already had (same piece, instant, code and facility).
    pub duplicates: u64,
    /// Scans of days the store has already expired, not kept.
    pub expired: u64,
}

/// An append whose new scans are in the head and whose WAL records are queued, not yet
/// written and fsynced. [`Store::durable`] waits for the fsync that covers it (shared with
/// other appenders, and writing the queued records first) and only then says what was
/// accepted; until then nothing is acknowledged.
#[derive(Debug)]
#[must_use = "an append is acknowledged only once `Store::durable` returns"]
pub struct PendingAppend {
    report: AppendReport,
    /// Where the append's WAL records end; `None` when it wrote nothing.
    ticket: Option<SyncTicket>,
}

/// What an expiry pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ExpireReport {
    /// Bucket directories removed.
    pub dropped_buckets: u64,
    /// Open (head) buckets dropped.
    pub dropped_head_buckets: u64,
    /// Quarantined (corrupt) bucket directories removed.
    pub dropped_quarantined: u64,
    /// Bytes of the removed files.
    pub freed_bytes: u64,
}

/// What a seal pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SealReport {
    /// Buckets written (bases and deltas).
    pub sealed_buckets: u64,
    /// Scans moved from the head into them.
    pub sealed_scans: u64,
    /// Days whose deltas were merged into their base.
    pub compacted_days: u64,
}

/// What a compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// Days rewritten as one base bucket.
    pub days: u64,
    /// Bucket files those days had before (bases and deltas).
    pub buckets_replaced: u64,
    /// Of those, files in an older format than the store writes.
    pub buckets_upgraded: u64,
    /// Scans rewritten.
    pub scans: u64,
    /// Bytes of the files replaced, and of the files written.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
}

/// What opening the store found and repaired.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Sealed buckets mapped.
    pub buckets_opened: usize,
    /// Buckets moved to `quarantine/`, with why.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Torn or damaged WAL segments cut at their last good record.
    pub wal_repairs: Vec<WalRepair>,
    /// Scans read from the head checkpoint.
    pub checkpoint_scans: u64,
    /// Why the head checkpoint was ignored (the whole WAL was replayed instead), if it was.
    pub checkpoint_rejected: Option<String>,
    /// Scans replayed from the WAL into the head.
    pub replayed_scans: u64,
    /// Leftover temporary or half-deleted directories removed.
    pub cleaned_dirs: usize,
}

/// Store-wide counts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StoreStats {
    /// Sealed bucket files.
    pub buckets: u64,
    /// Open head buckets.
    pub head_buckets: u64,
    /// Scans, sealed and in the head.
    pub scans: u64,
    /// Pieces, counted once per bucket they appear in.
    pub pieces: u64,
    /// Bytes on disk: sealed buckets and WAL.
    pub bytes: u64,
    /// Bytes of sealed buckets only.
    pub sealed_bytes: u64,
    /// Sealed bytes per sealed scan, indexes included.
    pub bytes_per_scan: f64,
    /// Heap bytes of the open (head) buckets, unused capacity included.
    pub head_bytes: u64,
    /// Scans in the open (head) buckets.
    pub head_scans: u64,
    /// Oldest and newest day with data, per class (`YYYY-MM-DD`).
    pub days: BTreeMap<&'static str, (String, String)>,
    /// Sealed bucket files per format (`"v1"`, `"v2"`): older ones go with `compact --upgrade`.
    pub formats: BTreeMap<String, u64>,
}

/// The sealed files of one day.
#[derive(Default, Clone)]
pub(crate) struct SealedDay {
    pub(crate) base: Option<Arc<SealedBucket>>,
    pub(crate) deltas: Vec<Arc<SealedBucket>>,
}

impl SealedDay {
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<SealedBucket>> {
        self.base.iter().chain(&self.deltas)
    }
}

/// What lookups read: an immutable snapshot, replaced whole (never changed in place, except
/// for inserts into open head buckets under their shard locks).
#[derive(Default, Clone)]
pub(crate) struct View {
    /// Open buckets, which appends fill.
    pub(crate) head: BTreeMap<BucketId, Arc<HeadBucket>>,
    /// Head buckets a seal has frozen and is writing out; served until their files replace
    /// them.
    pub(crate) sealing: Vec<(BucketId, Arc<HeadBucket>)>,
    /// Sealed days.
    pub(crate) sealed: BTreeMap<BucketId, SealedDay>,
    /// Facility and machine texts of the head's symbol ids.
    pub(crate) symbol_texts: Arc<Vec<Arc<str>>>,
}

impl View {
    /// The open head bucket of `id` and the frozen one a seal is writing out, if any.
    pub(crate) fn heads_of_bucket(&self, id: BucketId) -> impl Iterator<Item = &Arc<HeadBucket>> {
        self.head
            .get(&id)
            .into_iter()
            .chain(self.frozen_heads_of_bucket(id))
    }

    /// The frozen heads of bucket `id`, being sealed: lookups and duplicate checks still read
    /// them, appends no longer reach them.
    pub(crate) fn frozen_heads_of_bucket(
        &self,
        id: BucketId,
    ) -> impl Iterator<Item = &Arc<HeadBucket>> {
        self.sealing
            .iter()
            .filter(move |(frozen, _)| *frozen == id)
            .map(|(_, head)| head)
    }
}

/// What only the writer touches: the WAL, the symbol table, the manifest and bookkeeping.
pub(crate) struct Writer {
    pub(crate) wal: Wal,
    pub(crate) symbols: SymbolTable,
    /// Symbol ids below this have a record in the open WAL segment.
    pub(crate) logged_symbols: u32,
    pub(crate) manifest: Manifest,
    /// The last position per source (manifest, then WAL replay, then appends).
    pub(crate) positions: BTreeMap<String, i64>,
    /// Head buckets each WAL segment holds scans for; a segment is deleted once none is open.
    pub(crate) segment_buckets: BTreeMap<u64, BTreeSet<BucketId>>,
    /// Whether the open WAL segment holds events (then it is rotated once the head empties).
    pub(crate) segment_has_events: bool,
    /// Scans appended since the last head checkpoint (or the store's opening).
    pub(crate) scans_since_checkpoint: u64,
    pub(crate) next_bucket_seq: u64,
    /// The site number of each event of the last append, kept for the next one's: its pages
    /// are in memory already, where a fresh buffer of a large batch faults every page in again.
    pub(crate) batch_site_numbers: Vec<u32>,
    pub(crate) site_numbers: SiteNumbers,
}

/// The tracking-scan store. See the crate docs and `FORMAT.md`. `Sync`: lookups from any
/// number of threads while appends, seals and expiries go on (see the module docs).
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    /// Held (an advisory exclusive lock on `LOCK`) while the store is open: two writers would
    /// interleave WAL records and race on the manifest. The OS releases it when the process
    /// dies, so a crash never leaves the store locked.
    _lock: fs::File,
    view: ArcSwap<View>,
    writer: Mutex<Writer>,
    /// Taken by seal, compaction and expiry, one at a time.
    maintenance: Mutex<()>,
    group: Arc<GroupCommit>,
    /// Why the store refuses changes: the first write, fsync or rename that failed.
    failed: Mutex<Option<String>>,
}

/// A panic while one of the store's mutexes was held leaves what it guards as the last
/// completed step left it (each change to disk is atomic, and a failed one marks the store
/// failed), so a poisoned lock is taken as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.writer)
    }

    /// Replaces the view with `change` applied to a copy of it. Callers hold the writer lock,
    /// so no two changes race.
    fn publish(&self, _writer: &Writer, change: impl FnOnce(&mut View)) {
        let mut view = View::clone(&self.view.load());
        change(&mut view);
        self.view.store(Arc::new(view));
    }

    /// Why the store takes no more changes, if a write, fsync or rename failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    fn fail(&self, error: &StoreError) {
        let mut failed = lock(&self.failed);
        if failed.is_none() {
            *failed = Some(match error {
                StoreError::Failed(why) => why.clone(),
                other => other.to_string(),
            });
        }
    }

    /// Refuses when the store failed earlier (see [`StoreError::Failed`]); otherwise runs
    /// `operation` and marks the store failed if it fails.
    fn guarded<T>(
        &self,
        operation: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(why) = self.failure() {
            return Err(StoreError::Failed(why));
        }
        let result = operation();
        if let Err(error) = &result {
            self.fail(error);
        }
        result
    }

    /// Appends parsed events (their facility and machine ids refer to `symbols`), dropping those
    /// the store already has. Returns once the new ones are durable in the WAL; appends from
    /// several threads share fsyncs.
    pub fn append(
        &self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
    ) -> Result<AppendReport, StoreError> {
        self.append_at(events, symbols, &[])
    }

    /// [`Store::append`], recording with the events how far each named source has been read
    /// (a Kafka partition and the offset to resume from, say): the positions are durable in
    /// the same fsync as the events, so after a crash [`Store::positions`] says exactly where
    /// to resume, never before an event the store has nor after one it lacks. Positions are
    /// recorded even when every event was a duplicate.
    pub fn append_at(
        &self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<AppendReport, StoreError> {
        let pending = self.append_pending(&mut events.to_vec(), symbols, positions)?;
        self.durable(pending)
    }

    /// [`Store::append_at`] up to queueing the WAL records, without waiting for their write
    /// and fsync: a pipeline appends its next batch while this one's fsync runs, and hands
    /// this to [`Store::durable`] before it acknowledges anything. Lookups may see the new
    /// scans before they are durable, as they may during any append's fsync.
    ///
    /// The batch is the caller's buffer, not a copy: each event's facility and machine are
    /// rewritten to the store's symbol ids, so its contents are the store's afterwards (a
    /// parser's reused buffer is cleared before it is filled again).
    pub fn append_pending(
        &self,
        events: &mut [ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<PendingAppend, StoreError> {
        self.guarded(|| self.append_now(events, symbols, positions))
    }

    /// Waits until a [`Store::append_pending`]'s scans and positions are durable (running
    /// the fsync when no other appender is) and returns what it did. If that fsync fails,
    /// the store is marked failed and takes nothing more.
    pub fn durable(&self, pending: PendingAppend) -> Result<AppendReport, StoreError> {
        match pending.ticket {
            None => Ok(pending.report),
            Some(ticket) => self
                .guarded(|| self.group.wait(ticket))
                .map(|()| pending.report),
        }
    }

    /// The last durable position of each source given to [`Store::append_at`]. An append's
    /// positions are known before its fsync completes, so this waits for the fsync covering
    /// everything written so far (shared with the appenders) rather than say a position that a
    /// crash could still take back. If that fsync fails, the store is marked failed and takes
    /// nothing more.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        let (positions, written) = {
            let writer = self.writer();
            (writer.positions.clone(), writer.wal.written())
        };
        if let Err(error) = self.group.wait(written) {
            self.fail(&error);
        }
        positions
    }

    /// Seals every head bucket whose day ended at least the grace window before `now_ms` (see
    /// the module docs for how it stays out of readers' way).
    pub fn seal(&self, now_ms: i64) -> Result<SealReport, StoreError> {
        let _maintenance = lock(&self.maintenance);
        self.guarded(|| self.seal_now(now_ms))
    }

    /// Writes a checkpoint of the head, so that the next [`Store::open`] replays only the WAL
    /// written after it. Runs beside lookups and appends (see `checkpoint.rs`), one at a time
    /// with seals and expiries.
    pub fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        let _maintenance = lock(&self.maintenance);
        self.guarded(|| self.checkpoint_now())
    }

    /// Whether [`StoreOptions::checkpoint_scans`] scans have come in since the last
    /// checkpoint; with `any`, whether any have (for a clean shutdown).
    pub fn checkpoint_due(&self, any: bool) -> bool {
        let since = self.writer().scans_since_checkpoint;
        since
            >= if any {
                1
            } else {
                self.options.checkpoint_scans
            }
    }

    /// Merges every sealed day's deltas into its base bucket; with `upgrade`, also rewrites
    /// every day that has a bucket in an older format than [`StoreOptions::bucket_format`].
    /// Lookups and appends go on meanwhile; each day is swapped in once its new file is durable.
    pub fn compact(&self, upgrade: bool) -> Result<CompactReport, StoreError> {
        let _maintenance = lock(&self.maintenance);
        self.guarded(|| {
            let mut report = CompactReport::default();
            let days: Vec<BucketId> = self.view.load().sealed.keys().copied().collect();
            for id in days {
                self.compact_now(id, upgrade, &mut report)?;
            }
            Ok(report)
        })
    }

    /// Drops every bucket whose whole day is past its class's retention window at `now_ms`.
    pub fn expire(&self, now_ms: i64) -> Result<ExpireReport, StoreError> {
        let _maintenance = lock(&self.maintenance);
        self.guarded(|| self.expire_now(now_ms))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it runs with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }
}
