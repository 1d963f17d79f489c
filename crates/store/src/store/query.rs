//! Queries, each over one loaded [`View`]: they take no lock but a head shard's read lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{MailClass, ScanEvent, Zip};

use super::head::{HeadBucket, HeadShard};
use super::layout::{class_of, day_name, BucketId, WAL_DIR};
use super::{Store, StoreStats, View};
use crate::bucket::{BloomProbe, SealedBucket, StoredScan};
use crate::fsutil::disk_bytes;
use crate::retention::DAY_MS;

impl View {
    /// Open and frozen head buckets of `class`.
    fn heads_of(&self, class: MailClass) -> impl Iterator<Item = (BucketId, &Arc<HeadBucket>)> {
        self.head
            .range((class, i64::MIN)..=(class, i64::MAX))
            .map(|(&id, head)| (id, head))
            .chain(
                self.sealing
                    .iter()
                    .filter(move |(id, _)| id.0 == class)
                    .map(|(id, head)| (*id, head)),
            )
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
}

/// A piece a day query ([`Store::pieces_by_zip`], [`Store::pieces_by_mailer`]) found, with its
/// positions in that day's sealed buckets: reading its scans ([`Store::lookup_day_piece`])
/// reads those buckets at the positions instead of searching them again.
#[derive(Clone)]
pub struct DayPiece {
    /// The piece.
    pub key: BarcodeKey,
    positions: Vec<(Arc<SealedBucket>, usize)>,
}

impl Store {
    /// Every scan of a piece still inside its retention window at `now_ms`, oldest first.
    pub fn lookup(&self, key: BarcodeKey, now_ms: i64) -> Vec<StoredScan> {
        self.lookup_day_piece(
            &DayPiece {
                key,
                positions: Vec::new(),
            },
            now_ms,
        )
    }

    /// [`Store::lookup`] of a piece a day query found, reading the buckets that query found it
    /// in at its positions there (a bucket compacted away since is not read: its scans are in
    /// the bucket that replaced it, which is searched).
    pub fn lookup_day_piece(&self, piece: &DayPiece, now_ms: i64) -> Vec<StoredScan> {
        let key = piece.key;
        self.lookup_with(key, &piece.positions, now_ms, |head, f| {
            head.with_shard_of(key, f);
            Some(())
        })
        .unwrap_or_default()
    }

    /// [`Store::lookup`] without waiting: `None` when an append is inserting into the piece's
    /// head shard at this moment (then [`Store::lookup`] waits the few microseconds that takes).
    /// For callers that must not block, such as an async runtime's workers.
    pub fn try_lookup(&self, key: BarcodeKey, now_ms: i64) -> Option<Vec<StoredScan>> {
        self.lookup_with(key, &[], now_ms, |head, f| head.try_with_shard_of(key, f))
    }

    fn lookup_with(
        &self,
        key: BarcodeKey,
        known: &[(Arc<SealedBucket>, usize)],
        now_ms: i64,
        in_shard: impl Fn(&HeadBucket, &mut dyn FnMut(&HeadShard)) -> Option<()>,
    ) -> Option<Vec<StoredScan>> {
        let view = self.view.load();
        let class = class_of(key);
        let mut found = Vec::new();
        let probe = BloomProbe::new(key);
        // Each step starts its loads in every bucket before reading any (filters; then the
        // index, then the blocks of the buckets that may hold the piece), so their cache and
        // TLB misses overlap instead of adding up.
        let sealed: Vec<&Arc<SealedBucket>> = view
            .sealed
            .range((class, i64::MIN)..=(class, i64::MAX))
            .flat_map(|(_, day)| day.all())
            .collect();
        for bucket in &sealed {
            bucket.prefetch_filter(&probe);
        }
        let mut candidates = Vec::new();
        for bucket in sealed {
            match known.iter().find(|(b, _)| Arc::ptr_eq(b, bucket)) {
                Some(&(_, at)) => bucket.scans_at(at, key, &mut found),
                None if bucket.may_contain(&probe) => candidates.push(bucket),
                None => {}
            }
        }
        for bucket in &candidates {
            bucket.prefetch_index(key);
        }
        for bucket in &candidates {
            bucket.prefetch(key);
        }
        for bucket in candidates {
            bucket.scans_of_present(key, &mut found);
        }
        for (_, head) in view.heads_of(class) {
            in_shard(head, &mut |shard: &HeadShard| {
                found.extend(shard.scans_of(key).map(|e| view.stored(&e)));
            })?;
        }
        found.retain(|s| self.options.retention.serves(s.class, s.time_ms, now_ms));
        found.sort_by(|a, b| {
            (a.time_ms, a.code, a.facility_zip).cmp(&(b.time_ms, b.code, b.facility_zip))
        });
        Some(found)
    }

    /// Pieces scanned on `day` (days since the epoch) whose routing ZIP starts with `zip`
    /// (5, 9 or 11 digits), with at least one scan that day still inside its window.
    pub fn pieces_by_zip(&self, zip: Zip, day: i64, now_ms: i64) -> Vec<DayPiece> {
        self.pieces_of_day(
            day,
            now_ms,
            |bucket, out| bucket.pieces_by_zip(zip, out),
            |e| !e.routing.is_empty() && e.routing.prefix(zip.len()) == Some(zip),
        )
    }

    /// Pieces of a Mailer ID scanned on `day`, with a scan that day still inside its window.
    pub fn pieces_by_mailer(&self, mailer_id: u32, day: i64, now_ms: i64) -> Vec<DayPiece> {
        self.pieces_of_day(
            day,
            now_ms,
            |bucket, out| bucket.pieces_by_mailer(mailer_id, out),
            |e| e.barcode.mailer_id() == Some(mailer_id),
        )
    }

    fn pieces_of_day(
        &self,
        day: i64,
        now_ms: i64,
        from_bucket: impl Fn(&SealedBucket, &mut Vec<(BarcodeKey, usize)>),
        from_head: impl Fn(&ScanEvent) -> bool,
    ) -> Vec<DayPiece> {
        let view = self.view.load();
        let retention = self.options.retention;
        let mut pieces: BTreeMap<BarcodeKey, Vec<(Arc<SealedBucket>, usize)>> = BTreeMap::new();
        for class in [MailClass::Mail, MailClass::Package] {
            if retention.bucket_expired(class, day, now_ms) {
                continue;
            }
            // Pieces whose every scan that day has expired are left out; only the day that
            // straddles the window's edge needs a look at the scans.
            let edge = !retention.serves(class, day * DAY_MS, now_ms);
            if let Some(sealed) = view.sealed.get(&(class, day)) {
                for bucket in sealed.all() {
                    let mut found = Vec::new();
                    from_bucket(bucket, &mut found);
                    for (key, at) in found {
                        let mut scans = Vec::new();
                        if edge {
                            bucket.scans_at(at, key, &mut scans);
                        }
                        if !edge
                            || scans
                                .iter()
                                .any(|s| retention.serves(class, s.time_ms, now_ms))
                        {
                            pieces.entry(key).or_default().push((bucket.clone(), at));
                        }
                    }
                }
            }
            for head in view.heads_of_bucket((class, day)) {
                head.for_each_shard(|shard| {
                    for key in shard.piece_keys() {
                        let mut scans = shard.scans_of(key).peekable();
                        if scans.peek().is_some_and(&from_head)
                            && scans.any(|e| retention.serves(class, e.time_ms, now_ms))
                        {
                            pieces.entry(key).or_default();
                        }
                    }
                });
            }
        }
        pieces
            .into_iter()
            .map(|(key, positions)| DayPiece { key, positions })
            .collect()
    }

    /// Counts, sizes and the day span per class.
    pub fn stats(&self) -> StoreStats {
        let view = self.view.load();
        let mut stats = StoreStats::default();
        let mut span: BTreeMap<&'static str, (i64, i64)> = BTreeMap::new();
        let mut widen = |class: MailClass, day: i64| {
            let entry = span.entry(class.as_str()).or_insert((day, day));
            *entry = (entry.0.min(day), entry.1.max(day));
        };
        let mut sealed_scans = 0;
        for (&(class, day), sealed) in &view.sealed {
            for bucket in sealed.all() {
                stats.buckets += 1;
                sealed_scans += bucket.scan_count();
                stats.pieces += bucket.piece_count() as u64;
                stats.sealed_bytes += bucket.file_bytes();
                *stats
                    .formats
                    .entry(format!("v{}", bucket.version()))
                    .or_default() += 1;
            }
            widen(class, day);
        }
        stats.scans = sealed_scans;
        for class in [MailClass::Mail, MailClass::Package] {
            for ((_, day), head) in view.heads_of(class) {
                stats.head_buckets += 1;
                stats.head_scans += head.scan_count() as u64;
                stats.head_bytes += head.heap_bytes() as u64;
                stats.pieces += head.piece_count() as u64;
                widen(class, day);
            }
        }
        stats.scans += stats.head_scans;
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
}
