//! Seal, compact and expire: the slow work (sorting, encoding, writing, deleting) runs with no
//! lock that readers or appenders take; each result is installed in one view swap under the
//! writer lock, after its files are durable.

use std::sync::Arc;

use imbtrack_feed::{MailClass, ScanEvent, SymbolTable};
use rayon::prelude::*;

use super::checkpoint::CHECKPOINT;
use super::head::HeadBucket;
use super::layout::{
    bucket_dir_id, bucket_dir_name, bucket_name, dir_name, remove_bucket_dir, write_bucket_dir,
    BucketId, QUARANTINE,
};
use super::{CompactReport, ExpireReport, SealReport, SealedDay, Store, Writer};
use crate::bucket::{self, BucketKind, SealedBucket};
use crate::fsutil::disk_bytes;
use crate::retention::DAY_MS;
use crate::StoreError;

/// A head bucket frozen for sealing, and what it becomes.
struct Frozen {
    id: BucketId,
    head: Arc<HeadBucket>,
    kind: BucketKind,
}

/// A frozen bucket's scan count and file bytes.
type Encoded<'a> = (&'a Frozen, usize, Result<Vec<u8>, StoreError>);

impl Writer {
    /// Writes the manifest with the current positions. The WAL is made durable first: a
    /// position must never be durable before the scans it says were read.
    fn save_manifest(&mut self, dir: &std::path::Path) -> Result<(), StoreError> {
        self.wal.commit()?;
        self.manifest.positions.clone_from(&self.positions);
        self.manifest.positions_at = self.wal.position();
        self.manifest.write(dir)
    }

    /// A new bucket directory name.
    fn next_bucket_name(&mut self, (class, day): BucketId, kind: BucketKind) -> String {
        let name = bucket_dir_name(class, day, kind, self.next_bucket_seq);
        self.next_bucket_seq += 1;
        name
    }
}

impl Store {
    /// Seals every head bucket whose day ended at least the grace window before `now_ms`: a day
    /// not yet sealed becomes its base bucket, late scans for a sealed day a delta bucket. Days
    /// with more deltas than allowed are then compacted. WAL segments no open bucket needs any
    /// more are deleted.
    pub(super) fn seal_now(&self, now_ms: i64) -> Result<SealReport, StoreError> {
        let grace = self.options.seal_grace_ms;
        // Freeze: from here appends for those days start new head buckets, and every scan of
        // those days in the WAL before `through` is in a frozen bucket.
        let (frozen, symbols, through) = {
            let writer = self.writer();
            let view = self.view.load();
            let frozen: Vec<Frozen> = view
                .head
                .iter()
                .filter(|((_, day), _)| (day + 1) * DAY_MS + grace <= now_ms)
                .map(|(&id, head)| Frozen {
                    id,
                    head: head.clone(),
                    kind: if view.sealed.get(&id).is_some_and(|d| d.base.is_some()) {
                        BucketKind::Delta
                    } else {
                        BucketKind::Base
                    },
                })
                .collect();
            if !frozen.is_empty() {
                self.publish(&writer, |view| {
                    for f in &frozen {
                        view.head.remove(&f.id);
                        view.sealing.push((f.id, f.head.clone()));
                    }
                });
            }
            (frozen, writer.symbols.clone(), writer.wal.position())
        };
        let mut report = SealReport::default();
        // Sort and encode in parallel; write, map and install one by one.
        let encoded: Vec<Encoded<'_>> = frozen
            .par_iter()
            .map(|f| {
                let mut events = f.head.events();
                sort_scans(&mut events);
                let bytes = bucket::encode(
                    self.options.bucket_format,
                    f.id.0,
                    f.kind,
                    f.id.1,
                    &events,
                    &symbols,
                );
                (f, events.len(), bytes)
            })
            .collect();
        for (f, scans, bytes) in encoded {
            let name = self.writer().next_bucket_name(f.id, f.kind);
            let path = write_bucket_dir(&self.dir, &name, &bytes?)?;
            let bucket = Arc::new(SealedBucket::open(&path)?);
            let mut writer = self.writer();
            writer.manifest.buckets.insert(name);
            // Named in the same manifest write that names the bucket.
            writer
                .manifest
                .sealed_through
                .insert(bucket_name(f.id), through);
            writer.save_manifest(&self.dir)?;
            let mut deltas = 0;
            self.publish(&writer, |view| {
                let day = view.sealed.entry(f.id).or_default();
                match f.kind {
                    BucketKind::Base => day.base = Some(bucket),
                    BucketKind::Delta => day.deltas.push(bucket),
                }
                deltas = day.deltas.len();
                view.sealing.retain(|(_, head)| !Arc::ptr_eq(head, &f.head));
            });
            drop(writer);
            report.sealed_buckets += 1;
            report.sealed_scans += scans as u64;
            if deltas > self.options.max_deltas {
                self.compact_now(f.id, false, &mut CompactReport::default())?;
                report.compacted_days += 1;
            }
        }
        let mut writer = self.writer();
        self.drop_unneeded_wal(&mut writer)?;
        Ok(report)
    }

    /// Merges a sealed day's deltas into a new base, then removes the old files. With
    /// `upgrade`, a day whose buckets include one in an older format than the store writes is
    /// rewritten too, deltas or not.
    pub(super) fn compact_now(
        &self,
        id: BucketId,
        upgrade: bool,
        report: &mut CompactReport,
    ) -> Result<(), StoreError> {
        let Some(day) = self.view.load().sealed.get(&id).cloned() else {
            return Ok(());
        };
        let format = self.options.bucket_format;
        let outdated = day.all().filter(|b| b.version() < format.version()).count() as u64;
        if day.deltas.is_empty() && !(upgrade && outdated > 0) {
            return Ok(());
        }
        let mut symbols = SymbolTable::new();
        let mut events = Vec::new();
        for bucket in day.all() {
            bucket.all_events(&mut symbols, &mut events);
            report.buckets_replaced += 1;
            report.bytes_before += bucket.file_bytes();
        }
        report.buckets_upgraded += outdated;
        sort_scans(&mut events);
        events.dedup_by_key(|e| e.identity());
        report.days += 1;
        report.scans += events.len() as u64;
        let old: Vec<String> = day.all().map(|b| dir_name(b.dir())).collect();
        let bytes = bucket::encode(format, id.0, BucketKind::Base, id.1, &events, &symbols)?;
        report.bytes_after += bytes.len() as u64;
        let name = self.writer().next_bucket_name(id, BucketKind::Base);
        let path = write_bucket_dir(&self.dir, &name, &bytes)?;
        let merged = Arc::new(SealedBucket::open(&path)?);
        {
            let mut writer = self.writer();
            writer.manifest.buckets.insert(name);
            for name in &old {
                writer.manifest.buckets.remove(name);
            }
            writer.save_manifest(&self.dir)?;
            self.publish(&writer, |view| {
                view.sealed.insert(
                    id,
                    SealedDay {
                        base: Some(merged),
                        deltas: Vec::new(),
                    },
                );
            });
        }
        for name in old {
            remove_bucket_dir(&self.dir, &name)?;
        }
        Ok(())
    }

    /// Forgets which WAL segments hold scans of buckets no longer open and deletes the segments
    /// no open bucket needs; starts a new segment when the head is empty.
    fn drop_unneeded_wal(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let view = self.view.load();
        writer.segment_buckets.retain(|_, ids| {
            ids.retain(|id| view.heads_of_bucket(*id).next().is_some());
            !ids.is_empty()
        });
        if view.head.is_empty() && view.sealing.is_empty() && writer.segment_has_events {
            writer.rotate_wal()?;
        }
        // Older segments may hold the only record of a position: the manifest takes them first.
        if writer.manifest.positions != writer.positions {
            writer.save_manifest(&self.dir)?;
        }
        let Writer {
            wal,
            segment_buckets,
            ..
        } = writer;
        wal.remove_older(|seq| !segment_buckets.contains_key(&seq))
    }

    /// Drops every bucket (sealed or open) whose whole day is past its class's window at
    /// `now_ms`, and reports the space freed.
    pub(super) fn expire_now(&self, now_ms: i64) -> Result<ExpireReport, StoreError> {
        let retention = self.options.retention;
        let mut report = ExpireReport::default();
        let mut writer = self.writer();
        // Record the horizon first: once it is durable, neither appends nor WAL replay bring
        // back a scan of those days, whatever happens to the deletions below.
        let mut horizon_moved = false;
        for class in [MailClass::Mail, MailClass::Package] {
            // The last day whose end is at least one window before now.
            let through = (now_ms - retention.window_ms(class)).div_euclid(DAY_MS) - 1;
            let entry = writer
                .manifest
                .expired_through
                .entry(class.as_str().to_string())
                .or_insert(i64::MIN);
            if through > *entry {
                *entry = through;
                horizon_moved = true;
            }
        }
        let view = self.view.load();
        let expired = |id: &&BucketId| retention.bucket_expired(id.0, id.1, now_ms);
        let sealed_ids: Vec<BucketId> = view.sealed.keys().filter(expired).copied().collect();
        let head_ids: Vec<BucketId> = view.head.keys().filter(expired).copied().collect();
        // One manifest write records the horizon and drops the expired buckets' names; the
        // directories are removed after it is durable and the view no longer has them.
        let mut doomed = Vec::new();
        for id in &sealed_ids {
            if let Some(day) = view.sealed.get(id) {
                doomed.extend(day.all().map(|b| dir_name(b.dir())));
            }
            writer.manifest.sealed_through.remove(&bucket_name(*id));
        }
        for name in &doomed {
            writer.manifest.buckets.remove(name);
        }
        if horizon_moved || !doomed.is_empty() {
            writer.save_manifest(&self.dir)?;
        }
        if !sealed_ids.is_empty() || !head_ids.is_empty() {
            self.publish(&writer, |view| {
                for id in &sealed_ids {
                    view.sealed.remove(id);
                }
                for id in &head_ids {
                    view.head.remove(id);
                }
            });
        }
        report.dropped_head_buckets = head_ids.len() as u64;
        if report.dropped_head_buckets > 0 {
            self.drop_unneeded_wal(&mut writer)?;
        }
        drop(writer);
        // Buckets set aside as corrupt hold scans too: they go when their day does.
        let quarantine = self.dir.join(QUARANTINE);
        for entry in std::fs::read_dir(&quarantine).map_err(|e| StoreError::io(&quarantine, e))? {
            let path = entry.map_err(|e| StoreError::io(&quarantine, e))?.path();
            let expired = bucket_dir_id(&dir_name(&path))
                .is_some_and(|(class, day)| retention.bucket_expired(class, day, now_ms));
            if expired {
                report.freed_bytes += disk_bytes(&path);
                std::fs::remove_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
                report.dropped_quarantined += 1;
            }
        }
        // The checkpoint must not keep the dropped buckets' scans on disk either.
        if report.dropped_head_buckets > 0 && self.dir.join(CHECKPOINT).exists() {
            self.checkpoint_now()?;
        }
        for name in doomed {
            report.freed_bytes += remove_bucket_dir(&self.dir, &name)?;
            report.dropped_buckets += 1;
        }
        Ok(report)
    }
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
