//! [`Store`]: the head (open buckets in memory behind the WAL), the sealed buckets, and the
//! operations over both: append, seal, compact, expire, query, stats, and recovery at open.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashMap;
use imbtrack_barcode::{BarcodeKey, BarcodeKind};
use imbtrack_feed::time::civil_from_days;
use imbtrack_feed::{MailClass, ScanEvent, ScanIdentity, SymbolTable, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bucket::{self, BloomProbe, BucketKind, SealedBucket, StoredScan, BUCKET_FILE};
use crate::fsutil::{atomic_write, disk_bytes, sync_dir};
use crate::retention::{RetentionPolicy, DAY_MS};
use crate::wal::{Wal, WalRecord, WalRepair};
use crate::{fault, StoreError};

const MANIFEST: &str = "MANIFEST.json";
const BUCKETS: &str = "buckets";
const WAL_DIR: &str = "wal";
const QUARANTINE: &str = "quarantine";
const LOCK: &str = "LOCK";
const TMP_PREFIX: &str = ".tmp-";
const DELETING_PREFIX: &str = ".deleting-";

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: RetentionPolicy::default(),
            seal_grace_ms: DAY_MS,
            wal_segment_bytes: 64 << 20,
            max_deltas: 4,
        }
    }
}

/// A bucket's identity: class and UTC day (days since the epoch).
pub type BucketId = (MailClass, i64);

/// Head buckets are split by barcode hash into this many shards, which appends fill in parallel.
const HEAD_SHARDS: usize = 8;

/// The shard of a piece: high bits of a multiplicative hash of its key.
fn shard_of(key: BarcodeKey) -> usize {
    let raw = key.as_u128();
    let mixed =
        ((raw as u64) ^ ((raw >> 64) as u64).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 61) as usize % HEAD_SHARDS
}

/// One shard of an open bucket: one array of events, each piece's events chained newest to
/// oldest through `previous`, so a piece costs one map entry and no allocation of its own, and
/// deduplication walks the piece's few scans.
#[derive(Default)]
struct HeadShard {
    events: Vec<ScanEvent>,
    previous: Vec<u32>,
    newest: HashMap<BarcodeKey, u32>,
}

const NO_EVENT: u32 = u32::MAX;

impl HeadShard {
    /// The piece's scans, newest first.
    fn scans_of(&self, key: BarcodeKey) -> impl Iterator<Item = &ScanEvent> {
        let mut at = self.newest.get(&key).copied().unwrap_or(NO_EVENT);
        std::iter::from_fn(move || {
            let event = self.events.get(at as usize)?;
            at = self.previous[at as usize];
            Some(event)
        })
    }

    fn insert(&mut self, event: ScanEvent) {
        let index = self.events.len() as u32;
        let previous = self.newest.insert(event.barcode, index).unwrap_or(NO_EVENT);
        self.events.push(event);
        self.previous.push(previous);
    }
}

/// The scans of one open (class, day), in memory, sharded by barcode.
struct HeadBucket {
    shards: Vec<HeadShard>,
}

impl Default for HeadBucket {
    fn default() -> Self {
        HeadBucket {
            shards: (0..HEAD_SHARDS).map(|_| HeadShard::default()).collect(),
        }
    }
}

impl HeadBucket {
    fn scans_of(&self, key: BarcodeKey) -> impl Iterator<Item = &ScanEvent> {
        self.shards[shard_of(key)].scans_of(key)
    }

    fn contains(&self, identity: &ScanIdentity) -> bool {
        self.scans_of(identity.barcode)
            .any(|e| e.identity() == *identity)
    }

    fn insert(&mut self, event: ScanEvent) {
        self.shards[shard_of(event.barcode)].insert(event);
    }

    /// Inserts events known to be new, each shard on its own thread.
    fn insert_all(&mut self, events: Vec<ScanEvent>) {
        let mut parts: Vec<Vec<ScanEvent>> = (0..HEAD_SHARDS).map(|_| Vec::new()).collect();
        for event in events {
            parts[shard_of(event.barcode)].push(event);
        }
        self.shards
            .par_iter_mut()
            .zip(parts)
            .for_each(|(shard, part)| {
                shard.events.reserve(part.len());
                shard.previous.reserve(part.len());
                for event in part {
                    shard.insert(event);
                }
            });
    }

    fn piece_keys(&self) -> impl Iterator<Item = BarcodeKey> + '_ {
        self.shards.iter().flat_map(|s| s.newest.keys().copied())
    }

    fn scan_count(&self) -> usize {
        self.shards.iter().map(|s| s.events.len()).sum()
    }

    fn piece_count(&self) -> usize {
        self.shards.iter().map(|s| s.newest.len()).sum()
    }

    /// A copy of every event, for sealing.
    fn events(&self) -> Vec<ScanEvent> {
        let mut events = Vec::with_capacity(self.scan_count());
        for shard in &self.shards {
            events.extend_from_slice(&shard.events);
        }
        events
    }
}

/// The sealed files of one day.
#[derive(Default)]
struct SealedDay {
    base: Option<SealedBucket>,
    deltas: Vec<SealedBucket>,
}

impl SealedDay {
    fn all(&self) -> impl Iterator<Item = &SealedBucket> {
        self.base.iter().chain(&self.deltas)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    version: u32,
    /// Live bucket directory names under `buckets/`.
    buckets: BTreeSet<String>,
    /// Per class (`mail`, `package`), the last day expiry has removed: scans of that day or
    /// earlier are never taken again, not even from the WAL, so expired data stays gone.
    #[serde(default)]
    expired_through: BTreeMap<String, i64>,
    /// Per sealed (class, day), keyed `class:day`, the WAL position (segment, record) at its
    /// last seal: every scan of that day in the WAL before it is in a sealed bucket, so replay
    /// skips those without looking them up.
    #[serde(default)]
    sealed_through: BTreeMap<String, (u64, u64)>,
    /// Positions reached in named sources (see [`Store::append_at`]) as of this manifest; the
    /// WAL's positions records since then override them.
    #[serde(default)]
    positions: BTreeMap<String, i64>,
}

fn bucket_name((class, day): BucketId) -> String {
    format!("{}:{day}", class.as_str())
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

/// What an expiry pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ExpireReport {
    /// Bucket directories removed.
    pub dropped_buckets: u64,
    /// Open (head) buckets dropped.
    pub dropped_head_buckets: u64,
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

/// What opening the store found and repaired.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Sealed buckets mapped.
    pub buckets_opened: usize,
    /// Buckets moved to `quarantine/`, with why.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Torn or damaged WAL segments cut at their last good record.
    pub wal_repairs: Vec<WalRepair>,
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
    /// Oldest and newest day with data, per class (`YYYY-MM-DD`).
    pub days: BTreeMap<&'static str, (String, String)>,
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn bucket_dir_name(class: MailClass, day: i64, kind: BucketKind, seq: u64) -> String {
    match kind {
        BucketKind::Base => format!("{}-{}-base-{seq:06}", class.as_str(), day_name(day)),
        BucketKind::Delta => format!("{}-{}-delta-{seq:06}", class.as_str(), day_name(day)),
    }
}

/// The class a barcode's scans are kept under.
pub fn class_of(key: BarcodeKey) -> MailClass {
    match key.kind() {
        BarcodeKind::Impb => MailClass::Package,
        BarcodeKind::Imb | BarcodeKind::Imcb => MailClass::Mail,
    }
}

/// The tracking-scan store. See the crate docs and `FORMAT.md`.
pub struct Store {
    dir: PathBuf,
    /// Why the store refuses changes: the first write, fsync or rename that failed.
    failed: Option<String>,
    /// The last durable position per source (manifest, then WAL replay, then appends).
    positions: BTreeMap<String, i64>,
    /// Held (an advisory exclusive lock on `LOCK`) while the store is open: two writers would
    /// interleave WAL records and race on the manifest. The OS releases it when the process
    /// dies, so a crash never leaves the store locked.
    _lock: fs::File,
    options: StoreOptions,
    wal: Wal,
    symbols: SymbolTable,
    symbol_texts: Vec<Arc<str>>,
    head: BTreeMap<BucketId, HeadBucket>,
    sealed: BTreeMap<BucketId, SealedDay>,
    manifest: Manifest,
    /// Head buckets each WAL segment holds scans for; a segment is deleted once none is open.
    segment_buckets: BTreeMap<u64, BTreeSet<BucketId>>,
    /// Whether the open WAL segment holds events (then it is rotated once the head empties).
    segment_has_events: bool,
    next_bucket_seq: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`: maps the sealed buckets the manifest lists
    /// (quarantining any that fail their checks), removes leftovers of interrupted seals and
    /// deletions, and replays the WAL into the head.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<(Store, RecoveryReport), StoreError> {
        let mut report = RecoveryReport::default();
        for sub in [BUCKETS, WAL_DIR, QUARANTINE] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| StoreError::io(&dir.join(sub), e))?;
        }
        let lock_path = dir.join(LOCK);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
        }
        let manifest_path = dir.join(MANIFEST);
        let mut manifest: Manifest = match fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: manifest_path.clone(),
                what: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                version: 1,
                ..Manifest::default()
            },
            Err(e) => return Err(StoreError::io(&manifest_path, e)),
        };

        // Anything not named by the manifest is a seal that did not finish (its scans are still
        // in the WAL) or a deletion that did not: remove it.
        let buckets_dir = dir.join(BUCKETS);
        for entry in fs::read_dir(&buckets_dir)
            .map_err(|e| StoreError::io(&buckets_dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !manifest.buckets.contains(&name) {
                fs::remove_dir_all(entry.path()).map_err(|e| StoreError::io(&entry.path(), e))?;
                report.cleaned_dirs += 1;
            }
        }

        let opened: Vec<(String, Result<SealedBucket, StoreError>)> = manifest
            .buckets
            .par_iter()
            .map(|name| (name.clone(), SealedBucket::open(&buckets_dir.join(name))))
            .collect();
        let mut sealed: BTreeMap<BucketId, SealedDay> = BTreeMap::new();
        let mut next_bucket_seq = 1;
        for (name, result) in opened {
            next_bucket_seq = next_bucket_seq.max(
                name.rsplit('-')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1,
            );
            match result {
                Ok(bucket) => {
                    let day = sealed.entry((bucket.class(), bucket.day())).or_default();
                    match bucket.kind() {
                        BucketKind::Base => day.base = Some(bucket),
                        BucketKind::Delta => day.deltas.push(bucket),
                    }
                    report.buckets_opened += 1;
                }
                Err(StoreError::Corrupt { what, .. }) => {
                    let from = buckets_dir.join(&name);
                    let to = dir.join(QUARANTINE).join(&name);
                    let _ = fs::remove_dir_all(&to);
                    fault::rename(&from, &to).map_err(|e| StoreError::io(&from, e))?;
                    manifest.buckets.remove(&name);
                    report.quarantined.push((to, what));
                }
                Err(other) => return Err(other),
            }
        }
        if !report.quarantined.is_empty() {
            write_manifest(dir, &manifest)?;
        }
        sync_dir(&buckets_dir).map_err(|e| StoreError::io(&buckets_dir, e))?;

        let (wal, replayed, repairs) = Wal::open(&dir.join(WAL_DIR))?;
        report.wal_repairs = repairs;
        let mut store = Store {
            failed: None,
            positions: manifest.positions.clone(),
            _lock: lock,
            dir: dir.to_path_buf(),
            options,
            wal,
            symbols: SymbolTable::new(),
            symbol_texts: vec![Arc::from("")],
            head: BTreeMap::new(),
            sealed,
            manifest,
            segment_buckets: BTreeMap::new(),
            segment_has_events: false,
            next_bucket_seq,
        };
        for (seq, records) in replayed {
            // Each segment starts with its own symbol table, so ids are per segment.
            let mut segment_symbols: HashMap<u32, u32> = HashMap::new();
            for (index, record) in records.into_iter().enumerate() {
                let position = (seq, index as u64);
                match record {
                    WalRecord::Positions(positions) => store.positions.extend(positions),
                    WalRecord::Symbols(symbols) => {
                        for (id, text) in symbols {
                            segment_symbols.insert(id, store.intern(&text));
                        }
                    }
                    WalRecord::Events(events) => {
                        for mut event in events {
                            event.facility =
                                segment_symbols.get(&event.facility).copied().unwrap_or(0);
                            event.machine =
                                segment_symbols.get(&event.machine).copied().unwrap_or(0);
                            let id = bucket_id(&event);
                            let sealed = store
                                .manifest
                                .sealed_through
                                .get(&bucket_name(id))
                                .is_some_and(|&through| position < through);
                            if !sealed && !store.is_expired_day(&event) && store.is_new(&event) {
                                store.insert_head(event);
                                report.replayed_scans += 1;
                            }
                            if store.head.contains_key(&id) {
                                store.segment_buckets.entry(seq).or_default().insert(id);
                            }
                        }
                    }
                }
            }
        }
        store.write_symbol_snapshot()?;
        Ok((store, report))
    }

    fn intern(&mut self, text: &str) -> u32 {
        let id = self.symbols.intern(text);
        while self.symbol_texts.len() < self.symbols.len() {
            let next = self.symbol_texts.len() as u32;
            self.symbol_texts.push(Arc::from(self.symbols.get(next)));
        }
        id
    }

    fn rotate_wal(&mut self) -> Result<(), StoreError> {
        self.wal.rotate()?;
        self.segment_has_events = false;
        self.write_symbol_snapshot()
    }

    fn write_symbol_snapshot(&mut self) -> Result<(), StoreError> {
        let symbols = &self.symbols;
        self.wal.add_symbols(
            (1..symbols.len() as u32)
                .map(|id| (id, symbols.get(id)))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        self.wal.commit()
    }

    /// Whether the event's day was already removed by expiry.
    fn is_expired_day(&self, event: &ScanEvent) -> bool {
        let (class, day) = bucket_id(event);
        self.manifest
            .expired_through
            .get(class.as_str())
            .is_some_and(|&through| day <= through)
    }

    /// Whether the store has no scan with this event's identity.
    fn is_new(&self, event: &ScanEvent) -> bool {
        let id = bucket_id(event);
        if self
            .head
            .get(&id)
            .is_some_and(|head| head.contains(&event.identity()))
        {
            return false;
        }
        let Some(day) = self.sealed.get(&id) else {
            return true;
        };
        let mut found = Vec::new();
        let probe = BloomProbe::new(event.barcode);
        for bucket in day.all() {
            bucket.scans_of(event.barcode, &probe, &mut found);
        }
        !found.iter().any(|s| {
            s.time_ms == event.time_ms
                && s.code == event.code
                && s.facility_zip == event.facility_zip
        })
    }

    fn insert_head(&mut self, event: ScanEvent) {
        self.head
            .entry(bucket_id(&event))
            .or_default()
            .insert(event);
    }

    /// Appends parsed events (their facility and machine ids refer to `symbols`), dropping those
    /// the store already has. Returns once the new ones are durable in the WAL: one write and
    /// one fsync for the whole batch.
    fn append_now(
        &mut self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<AppendReport, StoreError> {
        let first_new_symbol = self.symbols.len() as u32;
        let remap: Vec<u32> = (0..symbols.len() as u32)
            .map(|id| self.intern(symbols.get(id)))
            .collect();
        // Remap symbols and drop days already expired, then find what is new: the checks only
        // read the store, so they run in parallel; repeats within the batch go last.
        let mut expired = 0;
        let mut candidates = Vec::with_capacity(events.len());
        for event in events {
            let mut event = *event;
            event.facility = remap.get(event.facility as usize).copied().unwrap_or(0);
            event.machine = remap.get(event.machine as usize).copied().unwrap_or(0);
            if self.is_expired_day(&event) {
                expired += 1;
            } else {
                candidates.push(event);
            }
        }
        let this = &*self;
        let fresh: Vec<ScanEvent> = candidates
            .into_par_iter()
            .filter(|e| this.is_new(e))
            .collect();
        let fresh = drop_repeats(fresh);
        let report = AppendReport {
            accepted: fresh.len() as u64,
            duplicates: (events.len() - fresh.len()) as u64 - expired,
            expired,
        };
        if fresh.is_empty() && positions.is_empty() {
            return Ok(report);
        }
        if self.wal.segment_bytes() > self.options.wal_segment_bytes {
            self.rotate_wal()?;
        } else if (self.symbols.len() as u32) > first_new_symbol {
            let symbols = &self.symbols;
            let new: Vec<(u32, &str)> = (first_new_symbol..symbols.len() as u32)
                .map(|id| (id, symbols.get(id)))
                .collect();
            self.wal.add_symbols(new.into_iter());
        }
        if !fresh.is_empty() {
            self.wal.add_events(&fresh);
        }
        if !positions.is_empty() {
            self.wal.add_positions(positions);
        }
        self.wal.commit()?;
        self.positions.extend(positions.iter().cloned());
        self.segment_has_events |= !fresh.is_empty();
        let mut by_bucket: BTreeMap<BucketId, Vec<ScanEvent>> = BTreeMap::new();
        for event in fresh {
            by_bucket.entry(bucket_id(&event)).or_default().push(event);
        }
        let seq = self.wal.seq();
        for (id, events) in by_bucket {
            self.segment_buckets.entry(seq).or_default().insert(id);
            self.head.entry(id).or_default().insert_all(events);
        }
        Ok(report)
    }

    /// Seals every head bucket whose day ended at least the grace window before `now_ms`: a day
    /// not yet sealed becomes its base bucket, late scans for a sealed day a delta bucket. Days
    /// with more deltas than allowed are then compacted. WAL segments no open bucket needs any
    /// more are deleted.
    fn seal_now(&mut self, now_ms: i64) -> Result<SealReport, StoreError> {
        let grace = self.options.seal_grace_ms;
        // Sort and encode every due bucket in parallel, reading the head; write them one by
        // one; a head bucket leaves memory only once its file and the manifest are durable.
        let (head, sealed, symbols) = (&self.head, &self.sealed, &self.symbols);
        let encoded: Vec<EncodedBucket> = head
            .iter()
            .filter(|((_, day), _)| (day + 1) * DAY_MS + grace <= now_ms)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(&id, bucket)| {
                let mut events = bucket.events();
                sort_scans(&mut events);
                let kind = if sealed.get(&id).is_some_and(|d| d.base.is_some()) {
                    BucketKind::Delta
                } else {
                    BucketKind::Base
                };
                let bytes = bucket::encode(id.0, kind, id.1, &events, symbols);
                (id, kind, events.len(), bytes)
            })
            .collect();
        let mut report = SealReport::default();
        for (id, kind, scans, bytes) in encoded {
            // Named in the same manifest write that names the bucket.
            self.manifest
                .sealed_through
                .insert(bucket_name(id), self.wal.position());
            let bucket = self.write_bucket(id, kind, &bytes?, &[])?;
            self.head.remove(&id);
            report.sealed_buckets += 1;
            report.sealed_scans += scans as u64;
            let day = self.sealed.entry(id).or_default();
            match kind {
                BucketKind::Base => day.base = Some(bucket),
                BucketKind::Delta => day.deltas.push(bucket),
            }
            if self
                .sealed
                .get(&id)
                .is_some_and(|d| d.deltas.len() > self.options.max_deltas)
            {
                self.compact_now(id)?;
                report.compacted_days += 1;
            }
        }
        self.drop_unneeded_wal()?;
        Ok(report)
    }

    /// Merges a sealed day's deltas into a new base, then removes the old files.
    fn compact_now(&mut self, id: BucketId) -> Result<(), StoreError> {
        let Some(day) = self.sealed.get(&id) else {
            return Ok(());
        };
        if day.deltas.is_empty() {
            return Ok(());
        }
        let mut symbols = SymbolTable::new();
        let mut events = Vec::new();
        for bucket in day.all() {
            bucket.all_events(&mut symbols, &mut events);
        }
        sort_scans(&mut events);
        events.dedup_by_key(|e| e.identity());
        let old: Vec<String> = day.all().map(|b| dir_name(b.dir())).collect();
        let bytes = bucket::encode(id.0, BucketKind::Base, id.1, &events, &symbols)?;
        let merged = self.write_bucket(id, BucketKind::Base, &bytes, &old)?;
        let previous = self.sealed.insert(
            id,
            SealedDay {
                base: Some(merged),
                deltas: Vec::new(),
            },
        );
        drop(previous);
        for name in old {
            self.remove_bucket_dir(&name)?;
        }
        Ok(())
    }

    /// Writes an encoded bucket's directory (temp name, fsync, rename, fsync), then the manifest
    /// naming it (and no longer naming `replaces`), and maps it.
    fn write_bucket(
        &mut self,
        (class, day): BucketId,
        kind: BucketKind,
        bytes: &[u8],
        replaces: &[String],
    ) -> Result<SealedBucket, StoreError> {
        let name = bucket_dir_name(class, day, kind, self.next_bucket_seq);
        self.next_bucket_seq += 1;
        let buckets = self.dir.join(BUCKETS);
        let tmp = buckets.join(format!("{TMP_PREFIX}{name}"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| StoreError::io(&path, e)
        };
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let file_path = tmp.join(BUCKET_FILE);
        {
            let mut file = fs::File::create(&file_path).map_err(io(&file_path))?;
            fault::write_all(&mut file, bytes)
                .and_then(|()| fault::sync(&file, false))
                .map_err(io(&file_path))?;
        }
        sync_dir(&tmp).map_err(io(&tmp))?;
        let final_dir = buckets.join(&name);
        fault::rename(&tmp, &final_dir).map_err(io(&tmp))?;
        sync_dir(&buckets).map_err(io(&buckets))?;
        self.manifest.buckets.insert(name);
        for old in replaces {
            self.manifest.buckets.remove(old);
        }
        self.save_manifest()?;
        SealedBucket::open(&final_dir)
    }

    /// Removes a bucket directory the manifest no longer names: rename first, so a crash never
    /// leaves half a bucket under a live name.
    fn remove_bucket_dir(&mut self, name: &str) -> Result<u64, StoreError> {
        let buckets = self.dir.join(BUCKETS);
        let from = buckets.join(name);
        let doomed = buckets.join(format!("{DELETING_PREFIX}{name}"));
        let bytes = disk_bytes(&from);
        fault::rename(&from, &doomed).map_err(|e| StoreError::io(&from, e))?;
        sync_dir(&buckets).map_err(|e| StoreError::io(&buckets, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| StoreError::io(&doomed, e))?;
        Ok(bytes)
    }

    fn drop_unneeded_wal(&mut self) -> Result<(), StoreError> {
        let head = &self.head;
        let segment_buckets = &mut self.segment_buckets;
        segment_buckets.retain(|_, ids| {
            ids.retain(|id| head.contains_key(id));
            !ids.is_empty()
        });
        if self.head.is_empty() && self.segment_has_events {
            self.rotate_wal()?;
        }
        // Older segments may hold the only record of a position: the manifest takes them first.
        if self.manifest.positions != self.positions {
            self.save_manifest()?;
        }
        let needed = &self.segment_buckets;
        self.wal.remove_older(|seq| !needed.contains_key(&seq))
    }

    /// Writes the manifest with the current positions.
    fn save_manifest(&mut self) -> Result<(), StoreError> {
        self.manifest.positions.clone_from(&self.positions);
        write_manifest(&self.dir, &self.manifest)
    }

    /// Drops every bucket (sealed or open) whose whole day is past its class's window at
    /// `now_ms`, and reports the space freed.
    fn expire_now(&mut self, now_ms: i64) -> Result<ExpireReport, StoreError> {
        let retention = self.options.retention;
        let mut report = ExpireReport::default();
        // Record the horizon first: once it is durable, neither appends nor WAL replay bring
        // back a scan of those days, whatever happens to the deletions below.
        let mut horizon_moved = false;
        for class in [MailClass::Mail, MailClass::Package] {
            // The last day whose end is at least one window before now.
            let through = (now_ms - retention.window_ms(class)).div_euclid(DAY_MS) - 1;
            let entry = self
                .manifest
                .expired_through
                .entry(class.as_str().to_string())
                .or_insert(i64::MIN);
            if through > *entry {
                *entry = through;
                horizon_moved = true;
            }
        }
        let expired_ids = |ids: &mut dyn Iterator<Item = &BucketId>| -> Vec<BucketId> {
            ids.filter(|(class, day)| retention.bucket_expired(*class, *day, now_ms))
                .copied()
                .collect()
        };
        // One manifest write records the horizon and drops the expired buckets' names; the
        // directories are removed after it is durable.
        let mut doomed = Vec::new();
        for id in expired_ids(&mut self.sealed.keys()) {
            if let Some(day) = self.sealed.remove(&id) {
                doomed.extend(day.all().map(|b| dir_name(b.dir())));
            }
            self.manifest.sealed_through.remove(&bucket_name(id));
        }
        for name in &doomed {
            self.manifest.buckets.remove(name);
        }
        if horizon_moved || !doomed.is_empty() {
            self.save_manifest()?;
        }
        for name in doomed {
            report.freed_bytes += self.remove_bucket_dir(&name)?;
            report.dropped_buckets += 1;
        }
        let head_expired = expired_ids(&mut self.head.keys());
        for id in head_expired {
            self.head.remove(&id);
            report.dropped_head_buckets += 1;
        }
        if report.dropped_head_buckets > 0 {
            self.drop_unneeded_wal()?;
        }
        Ok(report)
    }

    /// Every scan of a piece still inside its retention window at `now_ms`, oldest first.
    pub fn lookup(&self, key: BarcodeKey, now_ms: i64) -> Vec<StoredScan> {
        let class = class_of(key);
        let mut found = Vec::new();
        let probe = BloomProbe::new(key);
        for ((_, _), day) in self.sealed.range((class, i64::MIN)..=(class, i64::MAX)) {
            for bucket in day.all() {
                bucket.scans_of(key, &probe, &mut found);
            }
        }
        for (_, head) in self.head.range((class, i64::MIN)..=(class, i64::MAX)) {
            found.extend(head.scans_of(key).map(|e| self.stored(e)));
        }
        found.retain(|s| self.options.retention.serves(s.class, s.time_ms, now_ms));
        found.sort_by(|a, b| {
            (a.time_ms, a.code, a.facility_zip).cmp(&(b.time_ms, b.code, b.facility_zip))
        });
        found
    }

    fn stored(&self, event: &ScanEvent) -> StoredScan {
        let text = |id: u32| {
            self.symbol_texts
                .get(id as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(""))
        };
        StoredScan {
            barcode: event.barcode,
            class: event.class,
            time_ms: event.time_ms,
            routing: event.routing,
            facility_zip: event.facility_zip,
            code: event.code,
            handling: event.handling,
            facility_text: text(event.facility),
            machine: text(event.machine),
        }
    }

    /// Pieces scanned on `day` (days since the epoch) whose routing ZIP starts with `zip`
    /// (5, 9 or 11 digits), with at least one scan that day still inside its window.
    pub fn pieces_by_zip(&self, zip: Zip, day: i64, now_ms: i64) -> Vec<BarcodeKey> {
        self.pieces_of_day(
            day,
            now_ms,
            |bucket, out| bucket.pieces_by_zip(zip, out),
            |e| !e.routing.is_empty() && e.routing.prefix(zip.len()) == Some(zip),
        )
    }

    /// Pieces of a Mailer ID scanned on `day`, with a scan that day still inside its window.
    pub fn pieces_by_mailer(&self, mailer_id: u32, day: i64, now_ms: i64) -> Vec<BarcodeKey> {
        self.pieces_of_day(
            day,
            now_ms,
            |bucket, out| bucket.pieces_by_mailer(mailer_id, out),
            |e| bucket::mailer_id(e.barcode) == Some(mailer_id),
        )
    }

    fn pieces_of_day(
        &self,
        day: i64,
        now_ms: i64,
        from_bucket: impl Fn(&SealedBucket, &mut Vec<BarcodeKey>),
        from_head: impl Fn(&ScanEvent) -> bool,
    ) -> Vec<BarcodeKey> {
        let retention = self.options.retention;
        let mut keys = BTreeSet::new();
        for class in [MailClass::Mail, MailClass::Package] {
            if retention.bucket_expired(class, day, now_ms) {
                continue;
            }
            // Pieces whose every scan that day has expired are left out; only the day that
            // straddles the window's edge needs a look at the scans.
            let edge = !retention.serves(class, day * DAY_MS, now_ms);
            let served = |key: BarcodeKey, scans: &[StoredScan]| {
                !edge
                    || scans
                        .iter()
                        .any(|s| s.barcode == key && retention.serves(class, s.time_ms, now_ms))
            };
            if let Some(sealed) = self.sealed.get(&(class, day)) {
                for bucket in sealed.all() {
                    let mut found = Vec::new();
                    from_bucket(bucket, &mut found);
                    for key in found {
                        let mut scans = Vec::new();
                        if edge {
                            bucket.scans_of(key, &BloomProbe::new(key), &mut scans);
                        }
                        if served(key, &scans) {
                            keys.insert(key);
                        }
                    }
                }
            }
            if let Some(head) = self.head.get(&(class, day)) {
                for key in head.piece_keys() {
                    let mut scans = head.scans_of(key).peekable();
                    if scans.peek().is_some_and(|e| from_head(e))
                        && scans.any(|e| retention.serves(class, e.time_ms, now_ms))
                    {
                        keys.insert(key);
                    }
                }
            }
        }
        keys.into_iter().collect()
    }

    /// Counts, sizes and the day span per class.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        let mut span: BTreeMap<&'static str, (i64, i64)> = BTreeMap::new();
        let mut sealed_scans = 0;
        for (&(class, day), sealed) in &self.sealed {
            for bucket in sealed.all() {
                stats.buckets += 1;
                sealed_scans += bucket.scan_count();
                stats.pieces += bucket.piece_count() as u64;
                stats.sealed_bytes += bucket.file_bytes();
            }
            let entry = span.entry(class.as_str()).or_insert((day, day));
            *entry = (entry.0.min(day), entry.1.max(day));
        }
        stats.scans = sealed_scans;
        for (&(class, day), head) in &self.head {
            stats.head_buckets += 1;
            stats.scans += head.scan_count() as u64;
            stats.pieces += head.piece_count() as u64;
            let entry = span.entry(class.as_str()).or_insert((day, day));
            *entry = (entry.0.min(day), entry.1.max(day));
        }
        stats.bytes = stats.sealed_bytes + disk_bytes(&self.dir.join(WAL_DIR));
        stats.bytes_per_scan = if sealed_scans > 0 {
            stats.sealed_bytes as f64 / sealed_scans as f64
        } else {
            0.0
        };
        stats.days = span
            .into_iter()
            .map(|(class, (a, b))| (class, (day_name(a), day_name(b))))
            .collect();
        stats
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

/// `events` without the later copies of any identity, order kept. Repeats inside one batch are
/// rare, so identities are compared only where their 64-bit hashes meet, after sorting
/// (hash, index) pairs rather than the 64-byte events themselves.
fn drop_repeats(events: Vec<ScanEvent>) -> Vec<ScanEvent> {
    let hasher = hashbrown::DefaultHashBuilder::default();
    let mut hashes: Vec<(u64, u32)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                std::hash::BuildHasher::hash_one(&hasher, e.identity()),
                i as u32,
            )
        })
        .collect();
    hashes.sort_unstable();
    let mut repeat = vec![false; events.len()];
    for run in hashes
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
    {
        for (n, &(_, later)) in run.iter().enumerate().skip(1) {
            let identity = events[later as usize].identity();
            if run[..n].iter().any(|&(_, earlier)| {
                !repeat[earlier as usize] && events[earlier as usize].identity() == identity
            }) {
                repeat[later as usize] = true;
            }
        }
    }
    events
        .into_iter()
        .zip(repeat)
        .filter_map(|(e, r)| (!r).then_some(e))
        .collect()
}

/// A due head bucket, encoded for sealing: id, kind, scan count, file bytes.
type EncodedBucket = (BucketId, BucketKind, usize, Result<Vec<u8>, StoreError>);

fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn bucket_id(event: &ScanEvent) -> BucketId {
    (event.class, event.time_ms.div_euclid(DAY_MS))
}

/// Order inside a bucket: by piece, then time, code and facility.
fn sort_scans(events: &mut [ScanEvent]) {
    events.sort_unstable_by(|a, b| {
        (a.barcode, a.time_ms, a.code, a.facility_zip).cmp(&(
            b.barcode,
            b.time_ms,
            b.code,
            b.facility_zip,
        ))
    });
}

/// The changing operations, each refused once an earlier one failed (see
/// [`StoreError::Failed`]); a failure of one marks the store failed.
impl Store {
    fn guarded<T>(
        &mut self,
        operation: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(why) = &self.failed {
            return Err(StoreError::Failed(why.clone()));
        }
        let result = operation(self);
        if let Err(error) = &result {
            self.failed = Some(error.to_string());
        }
        result
    }

    /// Why the store takes no more changes, if an operation failed.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Appends parsed events (their facility and machine ids refer to `symbols`), dropping those
    /// the store already has. Returns once the new ones are durable in the WAL: one write and
    /// one fsync for the whole batch.
    pub fn append(
        &mut self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
    ) -> Result<AppendReport, StoreError> {
        self.guarded(|store| store.append_now(events, symbols, &[]))
    }

    /// [`Store::append`], recording with the events how far each named source has been read
    /// (a Kafka partition and the offset to resume from, say): the positions are durable in
    /// the same fsync as the events, so after a crash [`Store::positions`] says exactly where
    /// to resume, never before an event the store has nor after one it lacks. Positions are
    /// recorded even when every event was a duplicate.
    pub fn append_at(
        &mut self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<AppendReport, StoreError> {
        self.guarded(|store| store.append_now(events, symbols, positions))
    }

    /// The last durable position of each source given to [`Store::append_at`].
    pub fn positions(&self) -> &BTreeMap<String, i64> {
        &self.positions
    }

    /// Seals every head bucket whose day ended at least the grace window before `now_ms` (see
    /// the private `seal_now` for the steps).
    pub fn seal(&mut self, now_ms: i64) -> Result<SealReport, StoreError> {
        self.guarded(|store| store.seal_now(now_ms))
    }

    /// Merges a day's deltas into its base bucket.
    pub fn compact(&mut self, id: BucketId) -> Result<(), StoreError> {
        self.guarded(|store| store.compact_now(id))
    }

    /// Drops every bucket whose whole day is past its class's retention window at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) -> Result<ExpireReport, StoreError> {
        self.guarded(|store| store.expire_now(now_ms))
    }
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let path = dir.join(MANIFEST);
    let bytes =
        serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::Invariant(e.to_string()))?;
    atomic_write(&path, &bytes).map_err(|e| StoreError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use imbtrack_barcode::{Barcode, Imb};
    use imbtrack_feed::{EventCode, HandlingEventType};

    use super::*;

    fn event(serial: u64, time_ms: i64, machine: u32) -> ScanEvent {
        ScanEvent {
            barcode: Barcode::Imb(Imb::new(&format!("00270123456{serial:09}"), "").unwrap()).key(),
            time_ms,
            routing: Zip::NONE,
            facility_zip: Zip::parse(b"94110").unwrap(),
            facility: 0,
            machine,
            code: EventCode::parse(b"918").unwrap(),
            class: MailClass::Mail,
            handling: HandlingEventType::Physical,
        }
    }

    proptest::proptest! {
        /// The hash-based dedup keeps exactly the first copy of each identity, in order, like
        /// its naive twin.
        #[test]
        fn drop_repeats_equals_naive(picks in proptest::collection::vec((0u64..5, 0i64..4), 0..60)) {
            let events: Vec<ScanEvent> = picks.iter().enumerate().map(|(i, &(s, t))| event(s, t, i as u32)).collect();
            let mut seen = std::collections::HashSet::new();
            let naive: Vec<ScanEvent> = events.iter().copied().filter(|e| seen.insert(e.identity())).collect();
            proptest::prop_assert_eq!(drop_repeats(events), naive);
        }
    }
}
