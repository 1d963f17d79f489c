/*!
Joins the feed parser and the store into the pipeline a plant runs all day, and answers
status queries in Rust.

# Brief overview

- [`Engine`] owns a [`Store`] (whose lookups never wait for its appends, seals or fsyncs, so
  one engine serves lookups from many threads while it ingests) and the [`CodeTables`].
  [`Engine::ingest`] takes a feed's bytes (or [`Engine::ingest_file`] a path, memory-mapped):
  the feed is cut into chunks at record boundaries, each chunk is parsed as its own task on the
  engine's parser pool, a writer appends the parsed chunks to the store in feed order
  ([`Engine::append_pending`]) while later chunks parse, and the calling thread waits for each
  append's WAL fsync ([`Engine::durable`], shared with other appenders) before it counts the
  chunk, while the writer goes on. Bounded channels between the three keep memory flat
  whatever the feed's size.
- [`Clock`] is "now" for retention: fixed (tests, replays, the CLI's `--now`) or the system
  clock (a long-running server).
- Every record ends accepted, duplicate or rejected; rejects go to a [`RejectSink`] and the
  [`IngestSummary`] counts them by reason. Counters go through the `metrics` crate.
- [`Engine::piece`], [`Engine::pieces_by_zip`] and [`Engine::pieces_by_mailer`] return
  [`PieceStatus`]: the status model of [`piece_status`] over the scans still inside their
  retention window.

# Example

```
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::{RejectList, time::parse_timestamp};
use imbtrack_barcode::Barcode;

let dir = tempfile::tempdir()?;
let now = parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap();
let (engine, _) = Engine::open(dir.path(), EngineOptions::at(now))?;
let feed = b"imb|scanDatetime|scanEventCode|scanFacilityZip\n\
0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110\n";
let summary = engine.ingest("f.psv", feed, &mut RejectList::default(), &|_| {})?;
assert_eq!(summary.accepted, 1);

let barcode = Barcode::parse("0027012345678912345612345678901")?;
let piece = engine.piece(&barcode).unwrap();
assert_eq!(piece.status, imbtrack_feed::Status::SortedForDelivery);
let phase = piece.events[0].phase.as_deref();
assert_eq!(phase, Some("Phase 3c - Destination Sequenced Carrier Sortation"));
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]

mod delivery;
mod export;
mod status;
mod watch;

/// The data directory's rejects directory ([`Engine::rejects_dir`]).
pub const REJECTS_DIR: &str = "rejects";

/// Dates a copy of raw feed data (a rejects file, a spooled feed) as of `now_ms`, the clock
/// [`Engine::expire_copies`] later judges it by (with `--now`, not the wall clock).
pub fn date_copy(file: &File, now_ms: i64) -> std::io::Result<()> {
    file.set_modified(UNIX_EPOCH + std::time::Duration::from_millis(now_ms.max(0) as u64))
}

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use imbtrack_barcode::{Barcode, BarcodeKey};
use imbtrack_feed::{
    ChunkOutput, CodeTables, FeedError, FeedOptions, MailClass, PreparedFeed, RejectSink,
    ScanEvent, SymbolTable, Zip,
};
use imbtrack_store::{
    AppendReport, CheckpointReport, CompactReport, DayPiece, ExpireReport, RecoveryReport,
    SealReport, Store, StoreError, StoreOptions, StoreStats, StoredScan,
};
use serde::Serialize;

pub use crate::delivery::expected_delivery_day;
pub use crate::export::ExportFormat;
pub use crate::status::{format_date, piece_status, EventView, PieceStatus};
pub use crate::watch::{StatusChange, StatusWatch};

/// Bytes of feed per parse chunk: big enough that a chunk's WAL fsync is amortised over ~50,000
/// records, small enough that a window of chunks stays a few hundred MB at most.
const CHUNK_BYTES: usize = 8 << 20;

/// An ingest or query that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The feed as a whole could not be read.
    #[error("{source_name}: {error}")]
    Feed {
        /// The feed's name.
        source_name: String,
        /// What was wrong.
        error: FeedError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The parser threads could not be started.
    #[error("starting the parser threads: {0}")]
    ParsePool(#[from] rayon::ThreadPoolBuildError),
}

/// "Now" for retention, sealing and the time plausibility check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// A fixed instant, ms since the epoch (tests, replays, `--now`).
    Fixed(i64),
    /// The system clock.
    System,
}

impl Clock {
    /// The current instant, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::Fixed(ms) => *ms,
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }
}

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// "Now" for retention, sealing and the time plausibility check.
    pub clock: Clock,
    /// Store tunables (retention windows among them).
    pub store: StoreOptions,
    /// Feed parsing defaults (format, default UTC offset, limits); its `now_ms` is set from ours.
    pub feed: FeedOptions,
    /// Parser threads, a pool of their own (as many as rayon's global pool by default).
    pub threads: usize,
    /// What scan codes mean ([`CodeTables::builtin`] by default).
    pub codes: CodeTables,
}

impl EngineOptions {
    /// Defaults at a fixed `now_ms`.
    pub fn at(now_ms: i64) -> EngineOptions {
        EngineOptions::with_clock(Clock::Fixed(now_ms))
    }

    /// Defaults following `clock`.
    pub fn with_clock(clock: Clock) -> EngineOptions {
        EngineOptions {
            clock,
            store: StoreOptions::default(),
            feed: FeedOptions::at(clock.now_ms()),
            threads: rayon::current_num_threads(),
            codes: CodeTables::builtin(),
        }
    }
}

/// What one ingest did: `accepted + duplicates + rejected` = `records`, every non-blank record.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct IngestSummary {
    /// Feeds ingested.
    pub files: u64,
    /// Non-blank records read.
    pub lines: u64,
    /// New scans, durable in the store.
    pub accepted: u64,
    /// Scans the store already had (or that repeat within the feed).
    pub duplicates: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Rejected records by reason.
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Scans of days the store already expired, not kept.
    pub expired: u64,
    /// Wall time.
    pub elapsed_s: f64,
    /// `lines / elapsed_s`.
    pub scans_per_s: f64,
}

impl IngestSummary {
    /// Adds another summary's counts (elapsed time included).
    pub fn merge(&mut self, other: &IngestSummary) {
        self.files += other.files;
        self.lines += other.lines;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.expired += other.expired;
        for (reason, count) in &other.rejects_by_reason {
            *self.rejects_by_reason.entry(reason.clone()).or_default() += count;
        }
        self.elapsed_s += other.elapsed_s;
        self.scans_per_s = if self.elapsed_s > 0.0 {
            self.lines as f64 / self.elapsed_s
        } else {
            0.0
        };
    }
}

/// Progress of an ingest, reported after each chunk is durable.
#[derive(Debug, Clone, Copy)]
pub struct IngestProgress {
    /// Feed bytes done.
    pub bytes_done: u64,
    /// Feed bytes in all.
    pub bytes_total: u64,
    /// Records done.
    pub records: u64,
    /// Records rejected so far.
    pub rejected: u64,
}

/// The pipeline and the query API over one store. `Sync`: lookups read the store's current
/// snapshot while ingests, pushes, seals and expiries change it.
pub struct Engine {
    store: Store,
    codes: CodeTables,
    options: EngineOptions,
    /// Who hears of status changes ([`Engine::watch`]).
    watch: std::sync::RwLock<Option<std::sync::Arc<dyn StatusWatch>>>,
    /// Held by appends that touch watched pieces, from the statuses before to those after.
    watched_appends: std::sync::Mutex<()>,
    /// Where feeds are parsed ([`Engine::ingest`]): a pool apart from rayon's global one,
    /// which runs the store's appends. On one pool, each append's head inserts queued behind
    /// whole chunks' parses (its FIFO), and the appends are an ingest's slowest stage: the
    /// parse ran ahead to the end of its window and a core idled while the writer caught up.
    /// On two, the OS shares the cores between the parses and the inserts.
    parse_pool: rayon::ThreadPool,
}

/// An append not yet acknowledged: [`Engine::durable`] waits for it.
#[derive(Debug)]
#[must_use = "an append is acknowledged only once `Engine::durable` returns"]
pub enum PendingAppend {
    /// Durable already (an append that changed a watched piece).
    Durable(AppendReport),
    /// In the store, waiting for its WAL write and fsync; `expired` scans were left out
    /// before the store saw them.
    Written {
        /// The store's part.
        store: imbtrack_store::PendingAppend,
        /// Scans past their window, not stored.
        expired: u64,
    },
}

impl Engine {
    /// Opens the store in `dir` (recovering it as [`Store::open`] does) with the options' code
    /// tables.
    pub fn open(
        dir: &Path,
        options: EngineOptions,
    ) -> Result<(Engine, RecoveryReport), EngineError> {
        let (store, report) = Store::open(dir, options.store.clone())?;
        let parse_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads.max(1))
            .thread_name(|index| format!("imbtrack-parse-{index}"))
            .build()?;
        Ok((
            Engine {
                store,
                codes: options.codes.clone(),
                options,
                watch: std::sync::RwLock::new(None),
                watched_appends: std::sync::Mutex::new(()),
                parse_pool,
            },
            report,
        ))
    }

    /// "Now", ms since the epoch, by the engine's clock.
    pub fn now_ms(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// Seals the days that are due at "now" (see [`Store::seal`]).
    pub fn seal(&self) -> Result<SealReport, EngineError> {
        let now = self.now_ms();
        Ok(self.store.seal(now)?)
    }

    /// Drops the buckets past their retention window at "now" (see [`Store::expire`]).
    pub fn expire(&self) -> Result<ExpireReport, EngineError> {
        let now = self.now_ms();
        Ok(self.store.expire(now)?)
    }

    /// Merges sealed days' late-scan buckets into their base; with `upgrade`, also rewrites
    /// days holding buckets of an older format (see [`Store::compact`]).
    pub fn compact(&self, upgrade: bool) -> Result<CompactReport, EngineError> {
        Ok(self.store.compact(upgrade)?)
    }

    /// Where `imbtrack ingest` writes rejects files by default: raw records, so kept no longer
    /// than scans ([`Engine::expire_copies`]).
    pub fn rejects_dir(&self) -> PathBuf {
        self.store.dir().join(REJECTS_DIR)
    }

    /// The longest retention window: a copy of raw feed data (a spooled feed, a rejects file)
    /// may hold scans of any class, so it is kept at most this long.
    pub fn longest_window_ms(&self) -> i64 {
        let retention = self.store.options().retention;
        retention
            .window_ms(MailClass::Mail)
            .max(retention.window_ms(MailClass::Package))
    }

    /// Deletes the regular files directly in `dir` last modified more than `keep_ms` before
    /// "now", and returns how many went. A file cannot hold a scan newer than its last change
    /// (scans from the future are rejected), so with `keep_ms` the longest window everything
    /// in such a file has expired. A missing `dir` removes nothing.
    pub fn expire_copies(&self, dir: &Path, keep_ms: i64) -> std::io::Result<u64> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let cutoff = self.now_ms() - keep_ms;
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            let modified_ms = meta
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if meta.is_file() && modified_ms < cutoff {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes a checkpoint of the head (see [`Store::checkpoint`]) if one is due: with `any`
    /// (at a clean shutdown) when any scan came in since the last one, otherwise every
    /// `checkpoint_scans` scans. `None` when none was due.
    pub fn checkpoint(&self, any: bool) -> Result<Option<CheckpointReport>, EngineError> {
        if !self.store.checkpoint_due(any) {
            return Ok(None);
        }
        Ok(Some(self.store.checkpoint()?))
    }

    /// Appends parsed events (ids into `symbols`) with the positions reached in named sources,
    /// durable together (see [`Store::append_at`]).
    /// Scans already past their retention window at "now" are not stored at all (counted as
    /// `expired`): the window is the most the data may be kept, from the scan on.
    ///
    /// Pieces of watched Mailer IDs ([`Engine::watch`]) whose status the append changed are
    /// told to the watch before this returns.
    pub fn append_at(
        &self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<AppendReport, StoreError> {
        let pending = self.append_pending(&mut events.to_vec(), symbols, positions)?;
        self.durable(pending)
    }

    /// [`Engine::append_at`] without waiting for the fsync (see [`Store::append_pending`]):
    /// nothing is acknowledged until [`Engine::durable`] returns. An append that changes a
    /// watched piece's status is durable, and told to the watch, before this returns, so
    /// that changes are told one append at a time, in order. As with the store's, the batch
    /// is the caller's buffer: its scans inside their window moved to its front, their symbol
    /// ids rewritten to the store's.
    pub fn append_pending(
        &self,
        events: &mut [ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<PendingAppend, StoreError> {
        let live = self.move_live_to_front(events);
        self.append_live_pending(events, live, symbols, positions)
    }

    /// Moves the scans still inside their retention window at "now" to the front of `events`,
    /// in their order, and returns how many there are.
    fn move_live_to_front(&self, events: &mut [ScanEvent]) -> usize {
        let now = self.now_ms();
        let retention = self.store.options().retention;
        let live = |e: &ScanEvent| retention.serves(e.class, e.time_ms, now);
        let Some(first_expired) = events.iter().position(|e| !live(e)) else {
            return events.len();
        };
        let mut kept = first_expired;
        for index in first_expired + 1..events.len() {
            if live(&events[index]) {
                events[kept] = events[index];
                kept += 1;
            }
        }
        kept
    }

    /// [`Engine::append_pending`] of the first `live` of `events`, those inside their window
    /// ([`Engine::move_live_to_front`]); the others count as expired.
    fn append_live_pending(
        &self,
        events: &mut [ScanEvent],
        live: usize,
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<PendingAppend, StoreError> {
        let Some((watch, pieces)) = self.watched_pieces(&events[..live]) else {
            return self.append_unwatched_pending(events, live, symbols, positions);
        };
        let _one_at_a_time = self
            .watched_appends
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = self.statuses_of(&pieces);
        let pending = self.append_unwatched_pending(events, live, symbols, positions)?;
        let report = self.durable(pending)?;
        let changes = watch::changes(before, self.statuses_of(&pieces));
        if !changes.is_empty() {
            watch.changed(changes);
        }
        Ok(PendingAppend::Durable(report))
    }

    /// Waits until an [`Engine::append_pending`] is durable and returns what it did.
    pub fn durable(&self, pending: PendingAppend) -> Result<AppendReport, StoreError> {
        match pending {
            PendingAppend::Durable(report) => Ok(report),
            PendingAppend::Written { store, expired } => {
                let mut report = self.store.durable(store)?;
                report.expired += expired;
                Ok(report)
            }
        }
    }

    /// [`Engine::append_at`] without telling the watch: for copies of scans that are told where
    /// they are owned (a Kafka node's standbys).
    pub fn append_unwatched(
        &self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<AppendReport, StoreError> {
        let mut events = events.to_vec();
        let live = self.move_live_to_front(&mut events);
        let pending = self.append_unwatched_pending(&mut events, live, symbols, positions)?;
        self.durable(pending)
    }

    /// The store's append of the first `live` of `events`, those inside their window; the
    /// others count as expired.
    fn append_unwatched_pending(
        &self,
        events: &mut [ScanEvent],
        live: usize,
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<PendingAppend, StoreError> {
        let expired = (events.len() - live) as u64;
        Ok(PendingAppend::Written {
            store: self
                .store
                .append_pending(&mut events[..live], symbols, positions)?,
            expired,
        })
    }

    /// The last durable position of each named source (see [`Store::positions`]).
    pub fn positions(&self) -> BTreeMap<String, i64> {
        self.store.positions()
    }

    /// Why the store takes no more changes, if a write failed (see [`Store::failure`]).
    pub fn failure(&self) -> Option<String> {
        self.store.failure()
    }

    /// Counts, sizes and day spans of the store.
    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// A piece's scans still inside their window at "now", oldest first.
    pub fn scans(&self, key: BarcodeKey) -> Vec<StoredScan> {
        self.store.lookup(key, self.now_ms())
    }

    /// The code tables in use.
    pub fn codes(&self) -> &CodeTables {
        &self.codes
    }

    /// The options in use.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Ingests a file, memory-mapped (so a large feed is paged in and out as it is read).
    pub fn ingest_file(
        &self,
        path: &Path,
        rejects: &mut dyn RejectSink,
        progress: &dyn Fn(IngestProgress),
    ) -> Result<IngestSummary, EngineError> {
        let io = |error| EngineError::Io {
            path: path.display().to_string(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let name = path.display().to_string();
        if len == 0 {
            return self.ingest(&name, &[], rejects, progress);
        }
        // SAFETY: the map is read-only and lives only for this call. A feed file that another
        // process truncates while it is being ingested can make this process fault (SIGBUS);
        // feeds are written elsewhere and renamed into place (or spooled) before ingest.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        self.ingest(&name, &map, rejects, progress)
    }

    /// Ingests a feed's bytes. Chunks parse in parallel while a writer thread appends the parsed
    /// ones to the store, in feed order; a record counts as accepted only once its chunk's WAL
    /// write is fsynced.
    pub fn ingest(
        &self,
        source: &str,
        input: &[u8],
        rejects: &mut dyn RejectSink,
        progress: &dyn Fn(IngestProgress),
    ) -> Result<IngestSummary, EngineError> {
        let started = Instant::now();
        let feed_error = |error| EngineError::Feed {
            source_name: source.to_string(),
            error,
        };
        let mut feed_options = self.options.feed.clone();
        feed_options.now_ms = self.now_ms();
        let feed = PreparedFeed::prepare(input, feed_options.format).map_err(feed_error)?;
        let chunks = feed.chunks(feed.len() / CHUNK_BYTES + 1);
        let window = self.options.threads.max(1) * 2;
        let bytes_total = feed.len() as u64;

        // Each chunk's parse is its own task on the parser pool, its output awaited in feed
        // order through a one-slot channel: a pool thread that finishes a chunk takes the next
        // at once, instead of idling until a whole window of chunks is done. At most `window`
        // chunks are parsed ahead of the writer.
        let (sender, receiver) = crossbeam_channel::bounded::<
            crossbeam_channel::Receiver<(usize, ChunkOutput, usize)>,
        >(window);
        // Event buffers of appended chunks, back to the parser for reuse.
        let (spare_sender, spares) = crossbeam_channel::unbounded::<Vec<ScanEvent>>();
        let mut summary = IngestSummary {
            files: 1,
            ..IngestSummary::default()
        };
        let result: Result<(), EngineError> = std::thread::scope(|scope| {
            // The parser: chunks handed to the pool in feed order. It stops when the writer
            // below stops taking (an error).
            let feed = &feed;
            let feed_options = &feed_options;
            let spares = &spares;
            scope.spawn(move || {
                self.parse_pool.in_place_scope_fifo(|parse| {
                    for chunk in chunks {
                        let (output_sender, output) = crossbeam_channel::bounded(1);
                        parse.spawn_fifo(move |_| {
                            let events = spares.try_recv().unwrap_or_default();
                            let mut parsed = feed.parse_chunk_into(chunk, feed_options, events);
                            // Here, not on the writer's thread: the writer is the slower stage.
                            let live = self.move_live_to_front(&mut parsed.events);
                            // The writer may have stopped: then the output is dropped.
                            let _ = output_sender.send((chunk.len(), parsed, live));
                        });
                        if sender.send(output).is_err() {
                            return;
                        }
                    }
                });
            });
            // The writer: each chunk's store append, up to its queued WAL records, in feed
            // order. It goes on to the next chunk while this thread waits for the write and
            // fsync, so appends never wait for one another's fsyncs.
            let (written_sender, written) = crossbeam_channel::bounded(window);
            scope.spawn(move || {
                for output in receiver {
                    // A parse task always sends, unless it panicked (the scope then panics).
                    let Ok((chunk_bytes, mut output, live)) = output.recv() else {
                        return;
                    };
                    let mut events = std::mem::take(&mut output.events);
                    let pending = self.append_live_pending(&mut events, live, &output.symbols, &[]);
                    let failed = pending.is_err();
                    // The parser may have finished: then the buffer is simply dropped.
                    let _ = spare_sender.send(events);
                    if written_sender.send((chunk_bytes, output, pending)).is_err() || failed {
                        return;
                    }
                }
            });
            // This thread: each chunk's rejects, then the fsync that makes its append durable,
            // then its counts.
            let mut bytes_done = 0u64;
            let mut lines = feed.line_numbers();
            for (chunk_bytes, mut output, pending) in written {
                lines.place(&mut output);
                output
                    .rejects
                    .replay(source, rejects)
                    .map_err(|e| feed_error(FeedError::Rejects(e)))?;
                let AppendReport {
                    accepted,
                    duplicates,
                    expired,
                } = self.durable(pending?)?;
                summary.lines += output.report.records;
                summary.accepted += accepted;
                summary.duplicates += duplicates;
                summary.expired += expired;
                summary.rejected += output.report.rejected;
                for (reason, count) in &output.report.rejects_by_reason {
                    *summary
                        .rejects_by_reason
                        .entry((*reason).to_string())
                        .or_default() += count;
                    metrics::counter!("imbtrack_rejects_total", "reason" => *reason)
                        .increment(*count);
                }
                metrics::counter!("imbtrack_ingested_scans_total").increment(accepted);
                metrics::counter!("imbtrack_duplicate_scans_total").increment(duplicates);
                bytes_done += chunk_bytes as u64;
                progress(IngestProgress {
                    bytes_done,
                    bytes_total,
                    records: summary.lines,
                    rejected: summary.rejected,
                });
            }
            Ok(())
        });
        result?;
        summary.elapsed_s = started.elapsed().as_secs_f64();
        summary.scans_per_s = if summary.elapsed_s > 0.0 {
            summary.lines as f64 / summary.elapsed_s
        } else {
            0.0
        };
        Ok(summary)
    }

    /// A piece's status and history at the engine's "now", or `None` when the store has no scan
    /// of it inside its window. An IMb is the tracking code with its routing code: the same
    /// tracking code with another routing is another barcode.
    pub fn piece(&self, barcode: &Barcode) -> Option<PieceStatus> {
        self.piece_by_key(barcode.key())
    }

    /// [`Engine::piece`] by index key.
    pub fn piece_by_key(&self, key: BarcodeKey) -> Option<PieceStatus> {
        piece_status(&self.scans(key), &self.codes)
    }

    /// [`Engine::piece`] without waiting: `None` when an append is inserting into the piece's
    /// part of the open day at this moment (see [`Store::try_lookup`]).
    pub fn try_piece(&self, barcode: &Barcode) -> Option<Option<PieceStatus>> {
        let scans = self.store.try_lookup(barcode.key(), self.now_ms())?;
        Some(piece_status(&scans, &self.codes))
    }

    /// The pieces routed to `zip` (5, 9 or 11 digits) with scans on `day` (days since the
    /// epoch) still inside their window, in key order, with where that day's buckets hold them
    /// ([`Engine::statuses`] reads them there).
    pub fn day_pieces_by_zip(&self, zip: Zip, day: i64) -> Vec<DayPiece> {
        let now = self.now_ms();
        self.store.pieces_by_zip(zip, day, now)
    }

    /// A Mailer ID's pieces with scans on `day` still inside their window, in key order (see
    /// [`Engine::day_pieces_by_zip`]).
    pub fn day_pieces_by_mailer(&self, mailer_id: u32, day: i64) -> Vec<DayPiece> {
        let now = self.now_ms();
        self.store.pieces_by_mailer(mailer_id, day, now)
    }

    /// Pieces routed to `zip` with scans on `day`, each with its full status.
    pub fn pieces_by_zip(&self, zip: Zip, day: i64) -> Vec<PieceStatus> {
        self.statuses(self.day_pieces_by_zip(zip, day))
    }

    /// A Mailer ID's pieces with scans on `day`, each with its full status.
    pub fn pieces_by_mailer(&self, mailer_id: u32, day: i64) -> Vec<PieceStatus> {
        self.statuses(self.day_pieces_by_mailer(mailer_id, day))
    }

    /// The statuses of pieces a day query found, read where it found them.
    pub fn statuses(&self, pieces: Vec<DayPiece>) -> Vec<PieceStatus> {
        let now = self.now_ms();
        pieces
            .iter()
            .filter_map(|piece| piece_status(&self.store.lookup_day_piece(piece, now), &self.codes))
            .collect()
    }
}
