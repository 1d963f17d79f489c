//! The head: the scans of open (class, day) buckets, in memory, readable while appends go on.
//!
//! A bucket is split by barcode hash into [`HEAD_SHARDS`] shards, each behind its own
//! read-write lock. The one writer (an append, under the store's writer lock) holds a shard's
//! write lock only while it pushes that shard's share of a batch into memory: never across a
//! WAL write, an fsync or a seal. Readers take a shard's read lock for the few scans of one
//! piece. With many small shards a hash-table resize, the longest thing a writer does under a
//! shard lock, moves 1/64 of the bucket's pieces.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashMap;
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{ScanEvent, ScanIdentity};
use rayon::prelude::*;

/// Shards per open bucket.
pub(crate) const HEAD_SHARDS: usize = 64;

/// The shard of a piece: high bits of a multiplicative hash of its key.
fn shard_of(key: BarcodeKey) -> usize {
    let raw = key.as_u128();
    let mixed =
        ((raw as u64) ^ ((raw >> 64) as u64).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 58) as usize % HEAD_SHARDS
}

const NO_EVENT: u32 = u32::MAX;

/// One shard of an open bucket: one array of events, each piece's events chained newest to
/// oldest through `previous`, so a piece costs one map entry and no allocation of its own, and
/// deduplication walks the piece's few scans.
#[derive(Default)]
pub(crate) struct HeadShard {
    events: Vec<ScanEvent>,
    previous: Vec<u32>,
    newest: HashMap<BarcodeKey, u32>,
}

impl HeadShard {
    /// The piece's scans, newest first.
    pub(crate) fn scans_of(&self, key: BarcodeKey) -> impl Iterator<Item = &ScanEvent> {
        let mut at = self.newest.get(&key).copied().unwrap_or(NO_EVENT);
        std::iter::from_fn(move || {
            let event = self.events.get(at as usize)?;
            at = self.previous[at as usize];
            Some(event)
        })
    }

    /// Every piece's key.
    pub(crate) fn piece_keys(&self) -> impl Iterator<Item = BarcodeKey> + '_ {
        self.newest.keys().copied()
    }

    fn insert(&mut self, event: ScanEvent) {
        let index = self.events.len() as u32;
        let previous = self.newest.insert(event.barcode, index).unwrap_or(NO_EVENT);
        self.events.push(event);
        self.previous.push(previous);
    }
}

/// The scans of one open (class, day), sharded by barcode. Shared (`Arc`) between the store's
/// published view and its writer; only the writer inserts.
pub(crate) struct HeadBucket {
    shards: Vec<RwLock<HeadShard>>,
}

impl Default for HeadBucket {
    fn default() -> Self {
        HeadBucket {
            shards: (0..HEAD_SHARDS)
                .map(|_| RwLock::new(HeadShard::default()))
                .collect(),
        }
    }
}

/// A panic under a shard lock leaves the shard as its last completed insert left it (an insert
/// pushes the event before linking it), so a poisoned lock is taken as it is.
fn read(shard: &RwLock<HeadShard>) -> RwLockReadGuard<'_, HeadShard> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &RwLock<HeadShard>) -> RwLockWriteGuard<'_, HeadShard> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

impl HeadBucket {
    /// Runs `f` on the shard that holds `key`, under its read lock.
    pub(crate) fn with_shard_of<T>(&self, key: BarcodeKey, f: impl FnOnce(&HeadShard) -> T) -> T {
        f(&read(&self.shards[shard_of(key)]))
    }

    /// [`HeadBucket::with_shard_of`] when the shard's lock is free now; `None` when an insert
    /// holds it.
    pub(crate) fn try_with_shard_of<T>(
        &self,
        key: BarcodeKey,
        f: impl FnOnce(&HeadShard) -> T,
    ) -> Option<T> {
        match self.shards[shard_of(key)].try_read() {
            Ok(shard) => Some(f(&shard)),
            Err(std::sync::TryLockError::Poisoned(shard)) => Some(f(&shard.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Runs `f` on each shard in turn, each under its read lock only while `f` runs on it.
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&HeadShard)) {
        for shard in &self.shards {
            f(&read(shard));
        }
    }

    /// Whether a scan with this identity is here.
    pub(crate) fn contains(&self, identity: &ScanIdentity) -> bool {
        self.with_shard_of(identity.barcode, |shard| {
            shard
                .scans_of(identity.barcode)
                .any(|e| e.identity() == *identity)
        })
    }

    /// Inserts one event (WAL replay).
    pub(crate) fn insert(&self, event: ScanEvent) {
        write(&self.shards[shard_of(event.barcode)]).insert(event);
    }

    /// Inserts events known to be new, shards in parallel, each shard's lock held only for its
    /// own share.
    pub(crate) fn insert_all(&self, events: Vec<ScanEvent>) {
        let mut parts: Vec<Vec<ScanEvent>> = (0..HEAD_SHARDS).map(|_| Vec::new()).collect();
        for event in events {
            parts[shard_of(event.barcode)].push(event);
        }
        self.shards
            .par_iter()
            .zip(parts)
            .filter(|(_, part)| !part.is_empty())
            .for_each(|(shard, part)| {
                let mut shard = write(shard);
                shard.events.reserve(part.len());
                shard.previous.reserve(part.len());
                for event in part {
                    shard.insert(event);
                }
            });
    }

    /// Scans held.
    pub(crate) fn scan_count(&self) -> usize {
        self.shards.iter().map(|s| read(s).events.len()).sum()
    }

    /// Pieces held.
    pub(crate) fn piece_count(&self) -> usize {
        self.shards.iter().map(|s| read(s).newest.len()).sum()
    }

    /// A copy of every event, for sealing.
    pub(crate) fn events(&self) -> Vec<ScanEvent> {
        let mut events = Vec::with_capacity(self.scan_count());
        for shard in &self.shards {
            events.extend_from_slice(&read(shard).events);
        }
        events
    }
}
