//! Appending: symbols, the expiry horizon, duplicates, the WAL write, the head insert, and the
//! shared fsync.

use std::sync::Arc;

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{MailClass, ScanEvent, SymbolTable};
use rayon::prelude::*;

use super::head::{key_hash, shard_of, HeadBucket, ShardGroups, SiteNumbers, NO_SITE_NUMBER};
use super::layout::{bucket_id, BucketId};
use super::{AppendReport, PendingAppend, Store, View, Writer};
use crate::bucket::BloomProbe;
use crate::wal::SyncTicket;
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

    /// Queues an append's WAL records (starting a new segment first when the open one is past
    /// `segment_limit`): the kept events (with their site numbers), the positions, and any
    /// symbols they need; returns the ticket its fsync waits for.
    fn log_append(
        &mut self,
        candidates: &[ScanEvent],
        keep: &[bool],
        site_numbers: &[u32],
        positions: &[(String, i64)],
        segment_limit: u64,
    ) -> Result<SyncTicket, StoreError> {
        if self.wal.segment_bytes() > segment_limit {
            self.rotate_wal()?;
        } else {
            self.log_new_symbols();
        }
        self.wal.add_events(
            candidates
                .iter()
                .zip(keep)
                .zip(site_numbers)
                .filter_map(|((event, &k), &number)| k.then_some((event, number))),
        );
        if !positions.is_empty() {
            self.wal.add_positions(positions);
        }
        let ticket = self.wal.write();
        self.positions.extend(positions.iter().cloned());
        Ok(ticket)
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

/// Sorts out a batch for the head, in place: rewrites each event's facility and machine by
/// `symbol`, sets aside those `set_aside` names (given each event and its bucket; `keep` false,
/// no site number), and numbers the others' sites into `site_numbers` (one a batch event)
/// and files them, with their head shards, under their buckets. What an append and a WAL
/// replay both do to a batch.
pub(crate) fn sort_out(
    events: &mut [ScanEvent],
    symbol: impl Fn(u32) -> u32,
    numbers: &mut SiteNumbers,
    site_numbers: &mut Vec<u32>,
    mut set_aside: impl FnMut(&ScanEvent, BucketId) -> bool,
) -> (Vec<bool>, BucketIndexes) {
    let mut keep = vec![true; events.len()];
    site_numbers.clear();
    let mut bucket_indexes = BucketIndexes::default();
    for (index, event) in events.iter_mut().enumerate() {
        event.facility = symbol(event.facility);
        event.machine = symbol(event.machine);
        let id = bucket_id(event);
        if set_aside(event, id) {
            keep[index] = false;
            site_numbers.push(NO_SITE_NUMBER);
        } else {
            // The shard and key hash are worked out here, where the event is in the cache:
            // the shard in a pass of its own when the groups were made cost a fifth of the
            // writer's grouping time; the hash, in each shard's insert, missed the cache
            // about once an event (`imbtrack ingest` -5.5 %).
            bucket_indexes.push(id, index as u32, event.barcode);
            site_numbers.push(numbers.number(event));
        }
    }
    (keep, bucket_indexes)
}

/// A batch's events (as indexes into it, with their head shards and key hashes) by bucket, in
/// the order each bucket was first seen.
pub(crate) struct BucketIndexes {
    buckets: Vec<(BucketId, BucketEvents)>,
    /// Where in `buckets` each bucket is, one plus its index, by [`BucketIndexes::slot`] (0
    /// for none): a batch's mail and package events alternate, and a list searched from the
    /// last bucket hit was searched again for every other event.
    slots: [u8; 2 * DAY_SLOTS],
}

/// A bucket's events in a batch: their indexes, and beside each its key's head shard and
/// [`key_hash`] (worked out here, where the event is in the cache).
#[derive(Debug, Default, PartialEq)]
struct BucketEvents {
    indexes: Vec<u32>,
    shards: Vec<u8>,
    hashes: Vec<u64>,
}

/// Days [`BucketIndexes::slots`] holds a slot for, a class: days further apart share one.
const DAY_SLOTS: usize = 64;

impl Default for BucketIndexes {
    fn default() -> Self {
        BucketIndexes {
            buckets: Vec::new(),
            slots: [0; 2 * DAY_SLOTS],
        }
    }
}

impl BucketIndexes {
    fn slot((class, day): BucketId) -> usize {
        class as usize * DAY_SLOTS + day.rem_euclid(DAY_SLOTS as i64) as usize
    }

    /// Files event `index`, of key `key`, under bucket `id`. Inlined, with the look at its
    /// slot; a bucket not there is [`BucketIndexes::position_of`].
    #[inline(always)]
    fn push(&mut self, id: BucketId, index: u32, key: BarcodeKey) {
        let slot = Self::slot(id);
        let at = match usize::from(self.slots[slot]).checked_sub(1) {
            Some(at) if self.buckets.get(at).is_some_and(|(known, _)| *known == id) => at,
            _ => self.position_of(id, slot),
        };
        let events = &mut self.buckets[at].1;
        events.indexes.push(index);
        events.shards.push(shard_of(key));
        events.hashes.push(key_hash(key));
    }

    /// Where bucket `id` is in `buckets`, added if new, its slot `slot` made to point there
    /// (a batch spans few buckets: a short list, searched).
    #[inline(never)]
    fn position_of(&mut self, id: BucketId, slot: usize) -> usize {
        let at = match self.buckets.iter().position(|(known, _)| *known == id) {
            Some(found) => found,
            None => {
                self.buckets.push((id, BucketEvents::default()));
                self.buckets.len() - 1
            }
        };
        // A batch past 255 buckets (a feed of scans strewn over years) searches every time.
        self.slots[slot] = u8::try_from(at + 1).unwrap_or(0);
        at
    }

    /// Each bucket's events (with their site numbers) grouped by head shard, for one lock a
    /// shard.
    pub(crate) fn into_shard_groups(self, site_numbers: &[u32]) -> Vec<(BucketId, ShardGroups)> {
        self.buckets
            .into_iter()
            .map(|(id, events)| {
                let groups = ShardGroups::new(
                    &events.indexes,
                    &events.shards,
                    &events.hashes,
                    site_numbers,
                );
                (id, groups)
            })
            .collect()
    }
}

impl View {
    /// Whether a sealed file of the event's day holds a scan with its identity.
    pub(crate) fn in_sealed(&self, event: &ScanEvent) -> bool {
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
    /// See [`Store::append_pending`]. The writer lock covers the checks, the head insert and
    /// queueing the WAL records; their write and fsync are left to [`Store::durable`], after
    /// it is released.
    pub(super) fn append_now(
        &self,
        events: &mut [ScanEvent],
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
        // Remap symbols (in the caller's buffer: a copy of every event cost a tenth of an
        // ingest's writer thread), set aside days already expired and list each bucket's
        // events, then find what is new: the checks only read, so they run in parallel.
        let expired_through = [MailClass::Mail, MailClass::Package]
            .map(|class| writer.manifest.expired_through_day(class));
        let mut expired = 0;
        let mut site_numbers = std::mem::take(&mut writer.batch_site_numbers);
        let (mut keep, bucket_indexes) = sort_out(
            events,
            |id| remap.get(id as usize).copied().unwrap_or(0),
            &mut writer.site_numbers,
            &mut site_numbers,
            |_, id| {
                let gone = expired_through[id.0 as usize].is_some_and(|through| id.1 <= through);
                expired += u64::from(gone);
                gone
            },
        );
        let candidates: &[ScanEvent] = events;
        let view = self.view.load_full();
        // Which candidates are new, bucket by bucket, each bucket's events grouped by head
        // shard (one lock a shard): first what only answers, a frozen head being sealed and
        // the day's sealed files; then the open head takes each event it lacks, a repeat of
        // one it took earlier in the batch included, in one probe per event.
        let buckets = bucket_indexes.into_shard_groups(&site_numbers);
        for (id, groups) in &buckets {
            for head in view.frozen_heads_of_bucket(*id) {
                let probes = head.probe_all(candidates, groups);
                for (index, probe) in groups.with_probes(&probes) {
                    keep[index as usize] &= !probe.present;
                }
            }
            if view.sealed.contains_key(id) {
                let in_sealed: Vec<u32> = groups
                    .indexes()
                    .par_iter()
                    .copied()
                    .filter(|&i| keep[i as usize] && view.in_sealed(&candidates[i as usize]))
                    .collect();
                for index in in_sealed {
                    keep[index as usize] = false;
                }
            }
        }
        // The view the checks read is still current: only the writer changes it. It needs the
        // texts of any new symbols, and a head bucket for any day with events still to go in
        // (an empty one would be sealed into an empty file), before events go in.
        let new_ids: Vec<BucketId> = buckets
            .iter()
            .filter(|(id, groups)| {
                !view.head.contains_key(id) && groups.indexes().iter().any(|&i| keep[i as usize])
            })
            .map(|(id, _)| *id)
            .collect();
        let texts = (view.symbol_texts.len() < writer.symbols.len()).then(|| writer.symbol_texts());
        if texts.is_some() || !new_ids.is_empty() {
            let numbered = Arc::clone(writer.site_numbers.table());
            self.publish(writer, |view| {
                if let Some(texts) = texts {
                    view.symbol_texts = texts;
                }
                for id in new_ids {
                    view.head
                        .insert(id, Arc::new(HeadBucket::new(id, &numbered)));
                }
            });
        }
        // Events go into the head before their WAL records: lookups may see a scan before it
        // is durable either way (until the fsync), and a failure to log them (a segment
        // rotation's) fails the store below, under this same writer turn.
        let view = self.view.load();
        let heads: Vec<(&HeadBucket, &ShardGroups)> = buckets
            .iter()
            .filter_map(|(id, groups)| Some((&**view.head.get(id)?, groups)))
            .collect();
        for index in HeadBucket::insert_new_in(&heads, candidates, &keep) {
            keep[index as usize] = false;
        }
        let fresh = keep.iter().filter(|&&k| k).count();
        let report = AppendReport {
            accepted: fresh as u64,
            duplicates: (candidates.len() - fresh) as u64 - expired,
            expired,
        };
        if fresh == 0 && positions.is_empty() {
            writer.batch_site_numbers = site_numbers;
            return Ok(PendingAppend {
                report,
                ticket: None,
            });
        }
        let logged = writer.log_append(
            candidates,
            &keep,
            &site_numbers,
            positions,
            self.options.wal_segment_bytes,
        );
        let ticket = match logged {
            Ok(ticket) => ticket,
            Err(error) => {
                // The head holds scans the WAL lacks: no other change may follow them.
                self.fail(&error);
                return Err(error);
            }
        };
        writer.segment_has_events |= fresh > 0;
        writer.scans_since_checkpoint += fresh as u64;
        let seq = writer.wal.seq();
        for (id, groups) in &buckets {
            if groups.indexes().iter().any(|&i| keep[i as usize]) {
                writer.segment_buckets.entry(seq).or_default().insert(*id);
            }
        }
        writer.batch_site_numbers = site_numbers;
        Ok(PendingAppend {
            report,
            ticket: Some(ticket),
        })
    }
}

#[cfg(test)]
mod tests {
    use imbtrack_barcode::{Barcode, Imb};
    use imbtrack_feed::{EventCode, HandlingEventType, MailClass, Zip};

    use super::*;
    use crate::store::head::{SiteNumbers, NO_SITE_NUMBER};

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

    /// What `insert_new` keeps of `events` into `head`, in order, their sites numbered by
    /// `numbers` (one for the head's life, as the store's writer keeps one).
    fn kept_by_insert(
        head: &HeadBucket,
        numbers: &mut SiteNumbers,
        events: &[ScanEvent],
    ) -> Vec<ScanEvent> {
        let indexes: Vec<u32> = (0..events.len() as u32).collect();
        let site_numbers: Vec<u32> = events.iter().map(|e| numbers.number(e)).collect();
        let groups = ShardGroups::of_events(events, &indexes, &site_numbers);
        let present = head.insert_new(events, &groups, &vec![true; events.len()]);
        let present: std::collections::HashSet<u32> = present.into_iter().collect();
        events
            .iter()
            .enumerate()
            .filter(|(i, _)| !present.contains(&(*i as u32)))
            .map(|(_, e)| *e)
            .collect()
    }

    /// A hostile batch of one scan repeated: every copy but the first goes, each found by one
    /// probe of a one-scan chain.
    #[test]
    fn a_batch_of_one_scan_repeated_keeps_its_first() {
        let events = vec![event(1, 0, 0); 200_000];
        let mut numbers = SiteNumbers::default();
        let head = HeadBucket::new(bucket_id(&events[0]), numbers.table());
        assert_eq!(kept_by_insert(&head, &mut numbers, &events), [events[0]]);
        assert_eq!(head.scan_count(), 1);
    }

    /// One piece with hundreds of scans a day (past the long-chain set) keeps each identity
    /// once, within a batch and across batches, and a later batch of it costs one set probe a
    /// scan, not a walk of its chain.
    #[test]
    fn a_piece_with_many_scans_keeps_each_once() {
        let scans = |times: std::ops::Range<i64>| -> Vec<ScanEvent> {
            times
                .flat_map(|t| [event(7, t, 0), event(7, t, 1)])
                .collect()
        };
        let mut numbers = SiteNumbers::default();
        let head = HeadBucket::new(bucket_id(&event(7, 0, 0)), numbers.table());
        let first = scans(0..300);
        let kept = kept_by_insert(&head, &mut numbers, &first);
        assert_eq!(kept.len(), 300);
        let second = scans(200..2_000);
        assert_eq!(kept_by_insert(&head, &mut numbers, &second).len(), 1_700);
        assert_eq!(head.scan_count(), 2_000);
        assert!(head.contains(&event(7, 1_999, 0).identity()));
        assert!(!head.contains(&event(7, 2_000, 0).identity()));
        assert!(kept_by_insert(&head, &mut numbers, &scans(0..2_000)).is_empty());
    }

    proptest::proptest! {
        /// Events filed by bucket are the naive grouping: buckets in the order first seen,
        /// each with its events' indexes, shards and key hashes in order; with days far enough
        /// apart to share a slot, and more buckets than slots can point at.
        #[test]
        fn bucket_lists_are_a_naive_grouping(ids in proptest::collection::vec((0u8..2, 0i64..400), 0..3_000)) {
            let mut filed = BucketIndexes::default();
            let mut naive: Vec<(BucketId, BucketEvents)> = Vec::new();
            for (index, &(class, day)) in ids.iter().enumerate() {
                let id = (if class == 0 { MailClass::Mail } else { MailClass::Package }, day);
                let key = event(index as u64, 0, 0).barcode;
                filed.push(id, index as u32, key);
                let at = match naive.iter().position(|(known, _)| *known == id) {
                    Some(at) => at,
                    None => {
                        naive.push((id, BucketEvents::default()));
                        naive.len() - 1
                    }
                };
                let events = &mut naive[at].1;
                events.indexes.push(index as u32);
                events.shards.push(shard_of(key));
                events.hashes.push(key_hash(key));
            }
            proptest::prop_assert_eq!(filed.buckets, naive);
        }

        /// Two batches into one head keep exactly the first copy of each identity, in order,
        /// across the batches as within each, like the naive twin; events `keep` leaves out
        /// are neither inserted nor reported.
        #[test]
        fn insert_new_equals_naive(
            first in proptest::collection::vec((0u64..5, 0i64..4), 0..60),
            second in proptest::collection::vec((0u64..5, 0i64..4), 0..60),
        ) {
            let batch = |picks: &[(u64, i64)]| -> Vec<ScanEvent> {
                picks.iter().enumerate().map(|(i, &(s, t))| event(s, t, i as u32)).collect()
            };
            let (first, second) = (batch(&first), batch(&second));
            let mut seen = std::collections::HashSet::new();
            let mut naive = |events: &[ScanEvent]| -> Vec<ScanEvent> {
                events.iter().copied().filter(|e| seen.insert(e.identity())).collect()
            };
            let mut numbers = SiteNumbers::default();
            let head = HeadBucket::new(bucket_id(&event(0, 0, 0)), numbers.table());
            let (kept_first, kept_second) = (naive(&first), naive(&second));
            proptest::prop_assert_eq!(kept_by_insert(&head, &mut numbers, &first), kept_first.clone());
            proptest::prop_assert_eq!(kept_by_insert(&head, &mut numbers, &second), kept_second.clone());
            let indexes: Vec<u32> = (0..second.len() as u32).collect();
            let site_numbers = vec![NO_SITE_NUMBER; second.len()];
            let groups = ShardGroups::of_events(&second, &indexes, &site_numbers);
            let scans = head.scan_count();
            proptest::prop_assert!(head.insert_new(&second, &groups, &vec![false; second.len()]).is_empty());
            proptest::prop_assert_eq!(head.scan_count(), scans);
            // Each scan reads back whole: its site, found by number, is its own.
            let order = |mut events: Vec<ScanEvent>| {
                events.sort_by_key(|e| (e.barcode, e.time_ms, e.machine));
                events
            };
            let kept = [kept_first, kept_second].concat();
            proptest::prop_assert_eq!(order(head.events()), order(kept));
        }
    }
}
