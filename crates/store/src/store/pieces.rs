//! [`PieceTable`], a head shard's index from a piece's key hash to its piece number.
//!
//! An append looks up every scan's piece in a table far larger than the caches, so each
//! lookup waits on memory. hashbrown keeps its slots private, so a batch cannot ask for the
//! slot its next lookups will read before it needs them; this table can
//! ([`PieceTable::prefetch`]), and the misses of a batch overlap instead of adding up.
//!
//! Open addressing with linear probing over a power-of-two array of 8-byte slots, each the
//! high 32 bits of the key's hash (the tag) beside the piece number. The slot is picked by the
//! tag, so growing rehashes from the slots alone; keys are compared only where tags meet.

use crate::bucket::prefetch_lines;

/// A slot that holds no piece (piece numbers stay below `u32::MAX`).
const EMPTY: u64 = u64::MAX;
const FIRST_CAPACITY: usize = 16;

/// Piece numbers by key hash; see the module docs.
pub(crate) struct PieceTable {
    slots: Vec<u64>,
    len: usize,
}

impl Default for PieceTable {
    fn default() -> Self {
        PieceTable {
            slots: vec![EMPTY; FIRST_CAPACITY],
            len: 0,
        }
    }
}

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl PieceTable {
    fn home(&self, tag: u32) -> usize {
        tag as usize & (self.slots.len() - 1)
    }

    /// The piece whose key has this hash and for which `is` says yes (it checks the key).
    pub(crate) fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag(hash);
        let mask = self.slots.len() - 1;
        let mut at = self.home(tag);
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return None;
            }
            if (slot >> 32) as u32 == tag && is(slot as u32) {
                return Some(slot as u32);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `piece` under `hash`; the caller knows its key is not here yet.
    pub(crate) fn insert(&mut self, hash: u64, piece: u32) {
        // At most three slots in four full, so probes stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow(self.slots.len() * 2);
        }
        self.place(u64::from(tag(hash)) << 32 | u64::from(piece));
        self.len += 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.slots.len() - 1;
        let mut at = self.home((slot >> 32) as u32);
        while self.slots[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }

    fn grow(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; capacity]);
        for slot in old.into_iter().filter(|&slot| slot != EMPTY) {
            self.place(slot);
        }
    }

    /// Makes room for `additional` more pieces without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = ((self.len + additional) * 4)
            .div_ceil(3)
            .next_power_of_two();
        if needed > self.slots.len() {
            self.grow(needed);
        }
    }

    /// Starts loading the slot a lookup of `hash` reads first, without waiting for it.
    pub(crate) fn prefetch(&self, hash: u64) {
        let at = self.home(tag(hash));
        prefetch_lines(&self.slots[at..at + 1]);
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    proptest::proptest! {
        /// The table finds what a map of the same keys finds, through growth, with hashes
        /// made to collide (few distinct tags) as well as spread.
        #[test]
        fn finds_what_a_map_finds(keys in proptest::collection::vec(0u64..5_000, 0..600), spread in proptest::bool::ANY) {
            let hash = |key: u64| if spread { key.wrapping_mul(0x9E37_79B9_7F4A_7C15) } else { (key % 7) << 40 };
            let mut table = PieceTable::default();
            let mut pieces: Vec<u64> = Vec::new();
            let mut model = HashMap::new();
            for key in keys {
                let found = table.find(hash(key), |piece| pieces[piece as usize] == key);
                proptest::prop_assert_eq!(found, model.get(&key).copied());
                if found.is_none() {
                    let piece = pieces.len() as u32;
                    pieces.push(key);
                    table.insert(hash(key), piece);
                    model.insert(key, piece);
                }
            }
            for (key, piece) in &model {
                proptest::prop_assert_eq!(table.find(hash(*key), |p| pieces[p as usize] == *key), Some(*piece));
            }
            proptest::prop_assert_eq!(table.find(hash(9_999), |p| pieces[p as usize] == 9_999), None);
        }
    }

    #[test]
    fn reserve_makes_room_once() {
        let mut table = PieceTable::default();
        table.reserve(1_000);
        let capacity = table.slots.len();
        for piece in 0..1_000u32 {
            table.insert(u64::from(piece).wrapping_mul(0x9E37_79B9_7F4A_7C15), piece);
        }
        assert_eq!(table.slots.len(), capacity);
        assert!(capacity >= 1_334);
    }
}
