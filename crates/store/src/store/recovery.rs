//! Opening a store: the lock, the manifest, the sealed buckets (quarantining any that fail their
//! checks), leftovers of interrupted seals and deletions, and the WAL replayed into the head.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use imbtrack_feed::{ScanEvent, SymbolTable};
use rayon::prelude::*;

use super::append::sort_out;
use super::checkpoint::{read_checkpoint, LoadedCheckpoint};
use super::head::{HeadBucket, ShardGroups, SiteNumbers};
use super::layout::{
    bucket_dir_seq, bucket_name, BucketId, Manifest, BUCKETS, LOCK, QUARANTINE, WAL_DIR,
};
use super::{RecoveryReport, SealedDay, Store, StoreOptions, View, Writer};
use crate::bucket::{BucketKind, SealedBucket};
use crate::fsutil::sync_dir;
use crate::wal::{Wal, WalRecord};
use crate::{fault, StoreError};

impl Store {
    /// Opens (or creates) the store in `dir`: maps the sealed buckets the manifest lists
    /// (quarantining any that fail their checks), removes leftovers of interrupted seals and
    /// deletions, and replays the WAL into the head.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<(Store, RecoveryReport), StoreError> {
        let mut report = RecoveryReport::default();
        for sub in [BUCKETS, WAL_DIR, QUARANTINE] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| StoreError::io(&dir.join(sub), e))?;
        }
        let lock = lock_store(dir)?;
        let mut manifest = Manifest::read(dir)?;

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
        let mut view = View::default();
        let mut next_bucket_seq = 1;
        for (name, result) in opened {
            next_bucket_seq = next_bucket_seq.max(bucket_dir_seq(&name) + 1);
            match result {
                Ok(bucket) => {
                    let day: &mut SealedDay = view
                        .sealed
                        .entry((bucket.class(), bucket.day()))
                        .or_default();
                    match bucket.kind() {
                        BucketKind::Base => day.base = Some(Arc::new(bucket)),
                        BucketKind::Delta => day.deltas.push(Arc::new(bucket)),
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
            manifest.write(dir)?;
        }
        sync_dir(&buckets_dir).map_err(|e| StoreError::io(&buckets_dir, e))?;

        let site_numbers = SiteNumbers::default();
        let checkpoint = read_checkpoint(dir, site_numbers.table()).unwrap_or_else(|why| {
            report.checkpoint_rejected = Some(why);
            None
        });
        // Where replay starts (the checkpoint's position), and from where the WAL's positions
        // records are newer than the positions already known.
        let from = checkpoint.as_ref().map(|c| c.through);
        let mut replay = Replay {
            manifest: &manifest,
            view: &mut view,
            report: &mut report,
            symbols: SymbolTable::new(),
            positions: manifest.positions.clone(),
            positions_from: manifest.positions_at,
            segment_buckets: BTreeMap::new(),
            site_numbers,
            from,
            sealed_through: HashMap::new(),
            segment: None,
            segment_symbols: HashMap::new(),
        };
        if let Some(checkpoint) = checkpoint {
            if checkpoint.through > replay.positions_from {
                replay.positions_from = checkpoint.through;
                replay.positions = checkpoint.positions.clone();
            }
            for (id, head) in checkpoint.buckets {
                if LoadedCheckpoint::keeps(&checkpoint.through, replay.manifest, id) {
                    replay.report.checkpoint_scans += head.scan_count() as u64;
                    replay.view.head.insert(id, Arc::new(head));
                }
            }
            replay.segment_buckets = checkpoint.segments;
            let head = &replay.view.head;
            replay.segment_buckets.retain(|_, ids| {
                ids.retain(|id| head.contains_key(id));
                !ids.is_empty()
            });
            replay.symbols = checkpoint.symbols;
        }
        let opened = Wal::open(&dir.join(WAL_DIR), from, &mut |position, record| {
            replay.record(position, record)
        })?;
        let Replay {
            symbols,
            positions,
            segment_buckets,
            site_numbers,
            ..
        } = replay;
        report.wal_repairs = opened.repairs;
        let mut writer = Writer {
            positions,
            wal: opened.wal,
            symbols,
            logged_symbols: 1,
            manifest,
            segment_buckets,
            segment_has_events: false,
            scans_since_checkpoint: 0,
            next_bucket_seq,
            batch_site_numbers: Vec::new(),
            site_numbers,
        };
        writer.write_symbol_snapshot()?;
        view.symbol_texts = writer.symbol_texts();
        let group = writer.wal.group();
        let store = Store {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            view: ArcSwap::from_pointee(view),
            writer: Mutex::new(writer),
            maintenance: Mutex::new(()),
            group,
            failed: Mutex::new(None),
        };
        Ok((store, report))
    }
}

/// What replaying the WAL builds, one record at a time as [`Wal::open`] reads them: a restart
/// holds one record's events at a time besides the head, not the whole WAL's decoded.
struct Replay<'a> {
    manifest: &'a Manifest,
    view: &'a mut View,
    report: &'a mut RecoveryReport,
    symbols: SymbolTable,
    positions: BTreeMap<String, i64>,
    /// Positions records from here on are newer than `positions`.
    positions_from: (u64, u64),
    segment_buckets: BTreeMap<u64, BTreeSet<BucketId>>,
    site_numbers: SiteNumbers,
    /// The checkpoint's position, where replay starts.
    from: Option<(u64, u64)>,
    /// Where each bucket's sealed files end in the WAL, looked up once a bucket.
    sealed_through: HashMap<BucketId, Option<(u64, u64)>>,
    /// The segment being read, and its symbol ids as the store's.
    segment: Option<u64>,
    segment_symbols: HashMap<u32, u32>,
}

impl Replay<'_> {
    /// Applies the record at `position` (segment, record number in it).
    fn record(&mut self, position: (u64, u64), record: WalRecord) {
        let seq = position.0;
        if self.segment != Some(seq) {
            // Each segment starts with its own symbol table, so ids are per segment; the
            // records after a checkpoint use the writer's ids as the checkpoint kept them.
            self.segment = Some(seq);
            self.segment_symbols.clear();
            if self.from.is_some_and(|from| seq == from.0) {
                let ids = 0..self.symbols.len() as u32;
                self.segment_symbols.extend(ids.map(|id| (id, id)));
            }
        }
        match record {
            WalRecord::Positions(positions) => {
                if position >= self.positions_from {
                    self.positions.extend(positions);
                }
            }
            WalRecord::Symbols(symbols) => {
                for (id, text) in symbols {
                    self.segment_symbols.insert(id, self.symbols.intern(&text));
                }
            }
            WalRecord::Events(events) => self.events(position, events),
        }
    }

    /// Puts the events no sealed file has yet into the head as an append does, each that is
    /// new there once.
    fn events(&mut self, position: (u64, u64), mut events: Vec<ScanEvent>) {
        let mut site_numbers = Vec::with_capacity(events.len());
        let mut ids = Vec::new();
        let segment_symbols = &self.segment_symbols;
        let (manifest, view, sealed_through) =
            (self.manifest, &*self.view, &mut self.sealed_through);
        let (keep, bucket_indexes) = sort_out(
            &mut events,
            |id| segment_symbols.get(&id).copied().unwrap_or(0),
            &mut self.site_numbers,
            &mut site_numbers,
            |event, id| {
                if ids.last() != Some(&id) && !ids.contains(&id) {
                    ids.push(id);
                }
                let sealed = *sealed_through
                    .entry(id)
                    .or_insert_with(|| manifest.sealed_through.get(&bucket_name(id)).copied());
                sealed.is_some_and(|through| position < through)
                    || manifest.is_expired_day(event)
                    || view.in_sealed(event)
            },
        );
        let buckets: Vec<(Arc<HeadBucket>, ShardGroups)> = bucket_indexes
            .into_shard_groups(&site_numbers)
            .into_iter()
            .map(|(id, groups)| {
                let head = self.view.head.entry(id);
                (
                    head.or_insert_with(|| {
                        Arc::new(HeadBucket::new(id, self.site_numbers.table()))
                    })
                    .clone(),
                    groups,
                )
            })
            .collect();
        let heads: Vec<(&HeadBucket, &ShardGroups)> = buckets
            .iter()
            .map(|(head, groups)| (&**head, groups))
            .collect();
        let present = HeadBucket::insert_new_in(&heads, &events, &keep);
        let candidates = keep.iter().filter(|&&k| k).count();
        self.report.replayed_scans += (candidates - present.len()) as u64;
        for id in ids {
            if self.view.head.contains_key(&id) {
                self.segment_buckets
                    .entry(position.0)
                    .or_default()
                    .insert(id);
            }
        }
    }
}

/// Takes the store's exclusive lock, or says who has it.
fn lock_store(dir: &Path) -> Result<fs::File, StoreError> {
    let lock_path = dir.join(LOCK);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io(&lock_path, e)),
    }
}
