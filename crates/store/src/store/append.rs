//! Appending: symbols, the expiry horizon, duplicates, the WAL write, the head insert, and the
//! shared fsync.

use std::sync::Arc;

use imbtrack_feed::{MailClass, ScanEvent, SymbolTable};
use rayon::prelude::*;

use super::head::{HeadBucket, ShardGroups, HEAD_SHARDS};
use super::layout::{bucket_id, BucketId};
use super::{AppendReport, PendingAppend, Store, View, Writer};
use crate::bucket::BloomProbe;
use crate::StoreError;

impl Writer {
    /// Every symbol's text, by id, for the view.
    pub(crate) fn symbol_texts(&self) -> Arc<Vec<Arc<str>>> {
        Arc::new(
            (0..self.symbols.len() as u32)
                .map(|id| Arc::from(self.symbols.get(id)))
                .collect(),
        )
    }

    /// Starts a new WAL segment, which begins with the whole symbol table.
    pub(crate) fn rotate_wal(&mut self) -> Result<(), StoreError> {
        self.wal.rotate()?;
        self.segment_has_events = false;
        self.write_symbol_snapshot()
    }

    /// Writes the whole symbol table (but id 0, the empty text) at the open segment's start.
    pub(crate) fn write_symbol_snapshot(&mut self) -> Result<(), StoreError> {
        self.logged_symbols = 1;
        self.log_new_symbols();
        self.wal.commit()
    }

    /// Queues a record of the symbols the open segment has none for yet: those interned since
    /// its last symbols record, by this append or by an earlier one that wrote nothing (all
    /// duplicates), whose symbols later events may use without their being new.
    fn log_new_symbols(&mut self) {
        let (from, to) = (self.logged_symbols, self.symbols.len() as u32);
        if to > from {
            let symbols = &self.symbols;
            let new: Vec<(u32, &str)> = (from..to).map(|id| (id, symbols.get(id))).collect();
            self.wal.add_symbols(new.into_iter());
            self.logged_symbols = to;
        }
    }
}

impl View {
    /// Whether the store has no scan with this event's identity.
    pub(crate) fn is_new(&self, event: &ScanEvent) -> bool {
        let identity = event.identity();
        !self
            .heads_of_bucket(bucket_id(event))
            .any(|head| head.contains(&identity))
            && !self.in_sealed(event)
    }

    /// Whether a sealed file of the event's day holds a scan with its identity.
    fn in_sealed(&self, event: &ScanEvent) -> bool {
        let Some(day) = self.sealed.get(&bucket_id(event)) else {
            return false;
        };
        let mut found = Vec::new();
        let probe = BloomProbe::new(event.barcode);
        for bucket in day.all() {
            bucket.scans_of(event.barcode, &probe, &mut found);
        }
        found.iter().any(|s| {
            s.time_ms == event.time_ms
                && s.code == event.code
                && s.facility_zip == event.facility_zip
        })
    }
}

impl Store {
    /// See [`Store::append_pending`]. The writer lock covers the checks, the WAL write and the
    /// head insert; the fsync is left to [`Store::durable`], after it is released.
    pub(super) fn append_now(
        &self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<PendingAppend, StoreError> {
        let mut guard = self.writer();
        let writer = &mut *guard;
        // Another appender may have failed since `guarded` looked.
        if let Some(why) = self.failure().or_else(|| self.group.failure()) {
            return Err(StoreError::Failed(why));
        }
        let remap: Vec<u32> = (0..symbols.len() as u32)
            .map(|id| writer.symbols.intern(symbols.get(id)))
            .collect();
        // Remap symbols, drop days already expired and list each bucket's events, then find
        // what is new: the checks only read, so they run in parallel.
        let expired_through = [MailClass::Mail, MailClass::Package]
            .map(|class| writer.manifest.expired_through_day(class));
        let mut expired = 0;
        let mut candidates = std::mem::take(&mut writer.candidates);
        candidates.clear();
        // A batch spans few buckets: a short list, searched from the last one hit.
        let mut bucket_indexes: Vec<(BucketId, Vec<u32>)> = Vec::new();
        let mut last = 0;
        for event in events {
            let mut event = *event;
            event.facility = remap.get(event.facility as usize).copied().unwrap_or(0);
            event.machine = remap.get(event.machine as usize).copied().unwrap_or(0);
            let id = bucket_id(&event);
            if expired_through[id.0 as usize].is_some_and(|through| id.1 <= through) {
                expired += 1;
                continue;
            }
            if bucket_indexes
                .get(last)
                .is_none_or(|(known, _)| *known != id)
            {
                last = match bucket_indexes.iter().position(|(known, _)| *known == id) {
                    Some(found) => found,
                    None => {
                        bucket_indexes.push((id, Vec::new()));
                        bucket_indexes.len() - 1
                    }
                };
            }
            bucket_indexes[last].1.push(candidates.len() as u32);
            candidates.push(event);
        }
        let view = self.view.load_full();
        // Which candidates are new: each bucket's events grouped by head shard and probed
        // there (one lock a shard), then in the day's sealed files if it has any, then
        // repeats within the batch (a repeat has its first copy's bucket and shard).
        let mut keep = vec![true; candidates.len()];
        let mut buckets = Vec::with_capacity(bucket_indexes.len());
        for (id, indexes) in bucket_indexes {
            let groups = ShardGroups::new(&candidates, &indexes);
            let mut open_probes = None;
            for (n, head) in view.heads_of_bucket(id).enumerate() {
                let probes = head.probe_all(&candidates, &groups);
                for (index, probe) in groups.with_probes(&probes) {
                    keep[index as usize] &= !probe.present;
                }
                // The open head comes first; a frozen one (being sealed) only answers.
                if n == 0 && view.head.contains_key(&id) {
                    open_probes = Some(probes);
                }
            }
            if view.sealed.contains_key(&id) {
                let in_sealed: Vec<u32> = indexes
                    .par_iter()
                    .copied()
                    .filter(|&i| keep[i as usize] && view.in_sealed(&candidates[i as usize]))
                    .collect();
                for index in in_sealed {
                    keep[index as usize] = false;
                }
            }
            let repeats: Vec<u32> = (0..HEAD_SHARDS)
                .into_par_iter()
                .flat_map_iter(|shard| repeats(&candidates, groups.of(shard), &keep))
                .collect();
            for index in repeats {
                keep[index as usize] = false;
            }
            buckets.push((id, groups, open_probes));
        }
        let fresh = keep.iter().filter(|&&k| k).count();
        let report = AppendReport {
            accepted: fresh as u64,
            duplicates: (events.len() - fresh) as u64 - expired,
            expired,
        };
        if fresh == 0 && positions.is_empty() {
            return Ok(PendingAppend {
                report,
                ticket: None,
            });
        }
        if writer.wal.segment_bytes() > self.options.wal_segment_bytes {
            writer.rotate_wal()?;
        } else {
            writer.log_new_symbols();
        }
        if fresh > 0 {
            writer.wal.add_events(
                candidates
                    .iter()
                    .zip(&keep)
                    .filter_map(|(event, &k)| k.then_some(event)),
            );
        }
        if !positions.is_empty() {
            writer.wal.add_positions(positions);
        }
        let ticket = writer.wal.write()?;
        writer.positions.extend(positions.iter().cloned());
        writer.segment_has_events |= fresh > 0;
        writer.scans_since_checkpoint += fresh as u64;
        let seq = writer.wal.seq();
        // Only buckets that take fresh scans get a head (if new) and a WAL segment entry.
        buckets.retain(|(_, groups, _)| groups.indexes().iter().any(|&i| keep[i as usize]));
        // The view `fresh` was checked against is still current: only the writer changes it.
        // It needs the texts of any new symbols and a head bucket for any new day before the
        // events go in.
        let new_ids: Vec<BucketId> = buckets
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !view.head.contains_key(id))
            .collect();
        let texts = (view.symbol_texts.len() < writer.symbols.len()).then(|| writer.symbol_texts());
        if texts.is_some() || !new_ids.is_empty() {
            self.publish(writer, |view| {
                if let Some(texts) = texts {
                    view.symbol_texts = texts;
                }
                for id in new_ids {
                    view.head.insert(id, Arc::new(HeadBucket::new(id)));
                }
            });
        }
        let view = self.view.load();
        for (id, groups, probes) in buckets {
            writer.segment_buckets.entry(seq).or_default().insert(id);
            if let Some(head) = view.head.get(&id) {
                head.insert_probed(&candidates, &groups, probes.as_deref(), &keep);
            }
        }
        writer.candidates = candidates;
        Ok(PendingAppend {
            report,
            ticket: Some(ticket),
        })
    }
}

/// The later copies of any identity among the kept events of `indexes` (in input order).
/// Repeats inside one batch are rare, so identities are compared only where their 64-bit
/// hashes meet, after sorting (hash, index) pairs rather than the 64-byte events themselves.
fn repeats(events: &[ScanEvent], indexes: &[u32], keep: &[bool]) -> Vec<u32> {
    let hasher = hashbrown::DefaultHashBuilder::default();
    let mut hashes: Vec<(u64, u32)> = indexes
        .iter()
        .filter(|&&i| keep[i as usize])
        .map(|&i| {
            let identity = events[i as usize].identity();
            (std::hash::BuildHasher::hash_one(&hasher, identity), i)
        })
        .collect();
    hashes.sort_unstable();
    let mut later_copies = Vec::new();
    let mut firsts: Vec<u32> = Vec::new();
    for run in hashes
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
    {
        // The run's distinct identities by their first copy: one, but for a hash collision.
        firsts.clear();
        for &(_, index) in run {
            let identity = events[index as usize].identity();
            if firsts
                .iter()
                .any(|&first| events[first as usize].identity() == identity)
            {
                later_copies.push(index);
            } else {
                firsts.push(index);
            }
        }
    }
    later_copies
}

#[cfg(test)]
mod tests {
    use imbtrack_barcode::{Barcode, Imb};
    use imbtrack_feed::{EventCode, HandlingEventType, MailClass, Zip};

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

    /// A hostile batch of one scan repeated: every copy but the first goes, in one pass.
    #[test]
    fn a_batch_of_one_scan_repeated_keeps_its_first() {
        let events = vec![event(1, 0, 0); 200_000];
        let indexes: Vec<u32> = (0..events.len() as u32).collect();
        let later = repeats(&events, &indexes, &vec![true; events.len()]);
        assert_eq!(later.len(), events.len() - 1);
        assert!(!later.contains(&0));
    }

    proptest::proptest! {
        /// The hash-based dedup keeps exactly the first copy of each identity, in order, like
        /// its naive twin.
        #[test]
        fn drop_repeats_equals_naive(picks in proptest::collection::vec((0u64..5, 0i64..4), 0..60)) {
            let events: Vec<ScanEvent> = picks.iter().enumerate().map(|(i, &(s, t))| event(s, t, i as u32)).collect();
            let mut seen = std::collections::HashSet::new();
            let naive: Vec<ScanEvent> = events.iter().copied().filter(|e| seen.insert(e.identity())).collect();
            let indexes: Vec<u32> = (0..events.len() as u32).collect();
            let later = repeats(&events, &indexes, &vec![true; events.len()]);
            let kept: Vec<ScanEvent> = events.iter().enumerate().filter(|(i, _)| !later.contains(&(*i as u32))).map(|(_, e)| *e).collect();
            proptest::prop_assert_eq!(kept, naive);
        }
    }
}
