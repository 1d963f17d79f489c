//! Appending: symbols, the expiry horizon, duplicates, the WAL write, the head insert, and the
//! shared fsync.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbtrack_feed::{ScanEvent, SymbolTable};
use rayon::prelude::*;

use super::head::HeadBucket;
use super::layout::{bucket_id, BucketId};
use super::{AppendReport, Store, View, Writer};
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
        let id = bucket_id(event);
        let identity = event.identity();
        if self
            .heads_of_bucket(id)
            .any(|head| head.contains(&identity))
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
}

impl Store {
    /// See [`Store::append_at`]. The writer lock covers the checks, the WAL write and the head
    /// insert; the fsync is waited for after it is released.
    pub(super) fn append_now(
        &self,
        events: &[ScanEvent],
        symbols: &SymbolTable,
        positions: &[(String, i64)],
    ) -> Result<AppendReport, StoreError> {
        let mut guard = self.writer();
        let writer = &mut *guard;
        // Another appender may have failed since `guarded` looked.
        if let Some(why) = self.failure().or_else(|| self.group.failure()) {
            return Err(StoreError::Failed(why));
        }
        let remap: Vec<u32> = (0..symbols.len() as u32)
            .map(|id| writer.symbols.intern(symbols.get(id)))
            .collect();
        // Remap symbols and drop days already expired, then find what is new: the checks only
        // read, so they run in parallel; repeats within the batch go last.
        let mut expired = 0;
        let mut candidates = Vec::with_capacity(events.len());
        for event in events {
            let mut event = *event;
            event.facility = remap.get(event.facility as usize).copied().unwrap_or(0);
            event.machine = remap.get(event.machine as usize).copied().unwrap_or(0);
            if writer.manifest.is_expired_day(&event) {
                expired += 1;
            } else {
                candidates.push(event);
            }
        }
        let view = self.view.load_full();
        let fresh: Vec<ScanEvent> = candidates
            .into_par_iter()
            .filter(|e| view.is_new(e))
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
        if writer.wal.segment_bytes() > self.options.wal_segment_bytes {
            writer.rotate_wal()?;
        } else {
            writer.log_new_symbols();
        }
        if !fresh.is_empty() {
            writer.wal.add_events(&fresh);
        }
        if !positions.is_empty() {
            writer.wal.add_positions(positions);
        }
        let ticket = writer.wal.write()?;
        writer.positions.extend(positions.iter().cloned());
        writer.segment_has_events |= !fresh.is_empty();
        writer.scans_since_checkpoint += fresh.len() as u64;
        let mut by_bucket: BTreeMap<BucketId, Vec<ScanEvent>> = BTreeMap::new();
        for event in fresh {
            by_bucket.entry(bucket_id(&event)).or_default().push(event);
        }
        let seq = writer.wal.seq();
        // The view `fresh` was checked against is still current: only the writer changes it.
        // It needs the texts of any new symbols and a head bucket for any new day before the
        // events go in.
        let new_ids: Vec<BucketId> = by_bucket
            .keys()
            .filter(|id| !view.head.contains_key(id))
            .copied()
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
        for (id, events) in by_bucket {
            writer.segment_buckets.entry(seq).or_default().insert(id);
            if let Some(head) = view.head.get(&id) {
                head.insert_all(events);
            }
        }
        drop(guard);
        self.group.wait(ticket)?;
        Ok(report)
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
