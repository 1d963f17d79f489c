//! Opening a store: the lock, the manifest, the sealed buckets (quarantining any that fail their
//! checks), leftovers of interrupted seals and deletions, and the WAL replayed into the head.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use imbtrack_feed::SymbolTable;
use rayon::prelude::*;

use super::append::BucketIndexes;
use super::checkpoint::{read_checkpoint, LoadedCheckpoint};
use super::head::{HeadBucket, ShardGroups, SiteNumbers};
use super::layout::{
    bucket_dir_seq, bucket_id, bucket_name, BucketId, Manifest, BUCKETS, LOCK, QUARANTINE, WAL_DIR,
};
use super::{RecoveryReport, SealedDay, Store, StoreOptions, View, Writer};
use crate::bucket::{BucketKind, SealedBucket};
use crate::fsutil::sync_dir;
use crate::wal::{Replayed, Wal, WalRecord};
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

        let checkpoint = read_checkpoint(dir).unwrap_or_else(|why| {
            report.checkpoint_rejected = Some(why);
            None
        });
        let opened = Wal::open(&dir.join(WAL_DIR), checkpoint.as_ref().map(|c| c.through))?;
        report.wal_repairs = opened.repairs;
        let (wal, replayed) = (opened.wal, opened.replayed);
        let mut writer = Writer {
            positions: manifest.positions.clone(),
            wal,
            symbols: SymbolTable::new(),
            logged_symbols: 1,
            manifest,
            segment_buckets: BTreeMap::new(),
            segment_has_events: false,
            scans_since_checkpoint: 0,
            next_bucket_seq,
            candidate_site_numbers: Vec::new(),
            site_numbers: SiteNumbers::default(),
        };
        // Where replay starts (the checkpoint's position), and from where the WAL's positions
        // records are newer than the positions already known.
        let replay_from = checkpoint.as_ref().map(|c| c.through);
        let mut positions_from = writer.manifest.positions_at;
        if let Some(checkpoint) = checkpoint {
            if checkpoint.through > positions_from {
                positions_from = checkpoint.through;
                writer.positions = checkpoint.positions.clone();
            }
            for (id, head) in checkpoint.buckets {
                if LoadedCheckpoint::keeps(&checkpoint.through, &writer.manifest, id) {
                    report.checkpoint_scans += head.scan_count() as u64;
                    view.head.insert(id, Arc::new(head));
                }
            }
            writer.segment_buckets = checkpoint.segments;
            writer.segment_buckets.retain(|_, ids| {
                ids.retain(|id| view.head.contains_key(id));
                !ids.is_empty()
            });
            writer.symbols = checkpoint.symbols;
        }
        // Where each bucket's sealed files end in the WAL, looked up once a bucket.
        let mut sealed_through: HashMap<BucketId, Option<(u64, u64)>> = HashMap::new();
        for Replayed {
            seq,
            first,
            records,
        } in replayed
        {
            // Each segment starts with its own symbol table, so ids are per segment; the
            // records after a checkpoint use the writer's ids as the checkpoint kept them.
            let mut segment_symbols: HashMap<u32, u32> = HashMap::new();
            if replay_from.is_some_and(|from| seq == from.0) {
                segment_symbols.extend((0..writer.symbols.len() as u32).map(|id| (id, id)));
            }
            for (index, record) in records.into_iter().enumerate() {
                let position = (seq, first + index as u64);
                match record {
                    WalRecord::Positions(positions) => {
                        if position >= positions_from {
                            writer.positions.extend(positions);
                        }
                    }
                    WalRecord::Symbols(symbols) => {
                        for (id, text) in symbols {
                            segment_symbols.insert(id, writer.symbols.intern(&text));
                        }
                    }
                    WalRecord::Events(events) => {
                        // The events no sealed file has yet go into the head as an append's
                        // do, a record at a time, each that is new there once.
                        let mut candidates = Vec::with_capacity(events.len());
                        let mut site_numbers = Vec::with_capacity(events.len());
                        let mut bucket_indexes = BucketIndexes::default();
                        let mut ids = Vec::new();
                        for mut event in events {
                            event.facility =
                                segment_symbols.get(&event.facility).copied().unwrap_or(0);
                            event.machine =
                                segment_symbols.get(&event.machine).copied().unwrap_or(0);
                            let id = bucket_id(&event);
                            if ids.last() != Some(&id) && !ids.contains(&id) {
                                ids.push(id);
                            }
                            let sealed = *sealed_through.entry(id).or_insert_with(|| {
                                writer
                                    .manifest
                                    .sealed_through
                                    .get(&bucket_name(id))
                                    .copied()
                            });
                            if sealed.is_some_and(|through| position < through)
                                || writer.manifest.is_expired_day(&event)
                                || view.in_sealed(&event)
                            {
                                continue;
                            }
                            bucket_indexes.push(id, candidates.len() as u32);
                            site_numbers.push(writer.site_numbers.number(&event));
                            candidates.push(event);
                        }
                        let keep = vec![true; candidates.len()];
                        let buckets: Vec<(Arc<HeadBucket>, ShardGroups)> = bucket_indexes
                            .into_shard_groups(&candidates)
                            .into_iter()
                            .map(|(id, groups)| {
                                let head = view
                                    .head
                                    .entry(id)
                                    .or_insert_with(|| Arc::new(HeadBucket::new(id)));
                                (head.clone(), groups)
                            })
                            .collect();
                        let heads: Vec<(&HeadBucket, &ShardGroups)> = buckets
                            .iter()
                            .map(|(head, groups)| (&**head, groups))
                            .collect();
                        let present =
                            HeadBucket::insert_new_in(&heads, &candidates, &site_numbers, &keep);
                        report.replayed_scans += (candidates.len() - present.len()) as u64;
                        for id in ids {
                            if view.head.contains_key(&id) {
                                writer.segment_buckets.entry(seq).or_default().insert(id);
                            }
                        }
                    }
                }
            }
        }
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
