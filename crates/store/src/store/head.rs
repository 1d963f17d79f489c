//! The head: the scans of open (class, day) buckets, in memory, readable while appends go on.
//!
//! A bucket is split by barcode hash into [`HEAD_SHARDS`] shards, each behind its own
//! read-write lock. The one writer (an append, under the store's writer lock) holds a shard's
//! write lock only while it pushes that shard's share of a batch into memory: never across a
//! WAL write, an fsync or a seal. Readers take a shard's read lock for the few scans of one
//! piece.
//!
//! # Memory
//!
//! A scan costs 16 bytes ([`HeadScan`]): its time as milliseconds into the bucket's day (the
//! bucket knows its class and day), the index of its piece's previous scan, its site (facility
//! ZIP, facility and machine, by its store-wide number: [`SiteNumbers`]) and its code and
//! handling. Its routing ZIP is the piece's, kept once per piece; the rare scan whose routing
//! differs has a site of its shard's own that says so. A piece costs its key, routing, newest scan and a
//! filter of its scans' identities, in one 32-byte record (a lookup that finds the piece reads
//! one cache line, not three arrays), and an 8-byte slot in its shard's [`PieceTable`] (at
//! most three in four slots full). Arrays grow in chunks ([`Chunked`]), so growth never copies
//! a shard and wastes at most part of one chunk; the table is the one thing that doubles, and
//! it holds 8-byte slots only. [`HeadBucket::heap_bytes`] counts it all.

use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::{DefaultHashBuilder, HashMap, HashSet};
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{
    EventCode, HandlingEventType, MailClass, ScanEvent, ScanIdentity, Symbol, Zip,
};
use rayon::prelude::*;

use super::codec::{put_u32, put_u64, take, take_u32, take_u64};
use super::layout::BucketId;
use super::pieces::PieceTable;
use crate::bucket::prefetch_lines;
use crate::retention::DAY_MS;

/// How many lookups ahead a batch starts loading what it will read (see
/// [`HeadShard::prefetch_ahead`]).
const PREFETCH_AHEAD: usize = 8;

/// Shards per open bucket.
pub(crate) const HEAD_SHARDS: usize = 64;

/// The hash a head shard's [`PieceTable`] files a key under: one hasher for every shard of
/// every bucket (seeded at random once a process, as hashbrown seeds its own), so a batch's
/// keys are hashed where the append first reads them ([`ShardGroups`] carries the hashes), not
/// again when each shard's turn comes and the event has left the cache.
pub(crate) fn key_hash(key: BarcodeKey) -> u64 {
    static HASHER: LazyLock<DefaultHashBuilder> = LazyLock::new(DefaultHashBuilder::default);
    HASHER.hash_one(key)
}

/// The shard of a piece: high bits of a multiplicative hash of its key.
pub(crate) fn shard_of(key: BarcodeKey) -> u8 {
    let raw = key.as_u128();
    let mixed =
        ((raw as u64) ^ ((raw >> 64) as u64).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 58) as usize % HEAD_SHARDS) as u8
}

const NO_SCAN: u32 = u32::MAX;
/// [`Probe::piece`] when the shard has no piece of the key.
const NO_PIECE: u32 = u32::MAX;
/// [`Site::routing`] when the scan's routing ZIP is its piece's.
const PIECE_ROUTING: u32 = u32::MAX;

const CHUNK: usize = 1 << 10;

/// An append-only array kept in chunks of [`CHUNK`] elements: growing it never moves what it
/// holds (a doubling `Vec` copies everything, under the shard lock, and leaves up to half its
/// capacity unused); the unused tail of the last chunk is all it wastes.
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: u32,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// Appends `value` and returns its index.
    fn push(&mut self, value: T) -> u32 {
        let chunk = self.len as usize / CHUNK;
        if chunk == self.chunks.len() {
            // Whole at once: grown by doubling, every chunk was reallocated and copied 10 times.
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[chunk].push(value);
        self.len += 1;
        self.len - 1
    }

    /// Makes room for `additional` more elements in chunks of their final size, so pushing
    /// them allocates nothing more (a checkpoint's shard is read this way, leaving no freed
    /// buffers behind in the allocator).
    fn reserve(&mut self, additional: usize) {
        let total = self.len as usize + additional;
        for chunk in 0..total.div_ceil(CHUNK) {
            let size = (total - chunk * CHUNK).min(CHUNK);
            if chunk == self.chunks.len() {
                self.chunks.push(Vec::with_capacity(size));
            } else {
                let held = &mut self.chunks[chunk];
                held.reserve_exact(size.saturating_sub(held.len()));
            }
        }
    }

    fn get(&self, index: u32) -> &T {
        &self.chunks[index as usize / CHUNK][index as usize % CHUNK]
    }

    fn get_mut(&mut self, index: u32) -> &mut T {
        &mut self.chunks[index as usize / CHUNK][index as usize % CHUNK]
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Vec<T>>()
            + self
                .chunks
                .iter()
                .map(|c| c.capacity() * size_of::<T>())
                .sum::<usize>()
    }
}

/// Where a scan happened, as a shard interns it (a scan whose site has no store-wide number,
/// or whose routing ZIP is not its piece's; [`HeadScan::site`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Site {
    facility_zip: Zip,
    facility: Symbol,
    machine: Symbol,
    /// [`PIECE_ROUTING`], or an index into the shard's other routings for a scan whose
    /// routing ZIP is not its piece's.
    routing: u32,
}

/// A site's fields: facility ZIP, facility and machine.
type SiteFields = (Zip, Symbol, Symbol);

/// Numbers for the sites (facility ZIP, facility, machine) appends see, store-wide, and the
/// [`SiteTable`] the head reads them back by: a head scan holds its site's number, so no shard
/// interns the site again. (Each shard of each day interned its own: a national feed's
/// thousands of sites made nearly every scan a new site of its shard, a hash insert each, and
/// an ingest four times slower than one of a hundred sites.) The first [`NUMBERED_SITES`] sites
/// are numbered; later ones, from a hostile feed, are interned by each shard.
pub(crate) struct SiteNumbers {
    numbers: HashMap<SiteFields, u32>,
    table: Arc<SiteTable>,
    /// Sites numbered at most: [`NUMBERED_SITES`] (fewer in tests of what lies past it).
    limit: usize,
    /// Sites numbered, by a hash of their fields, two ways a set (the site met last in the
    /// first): a day's file names a few hundred sites, nearly every one found here by one
    /// compare, not looked up in `numbers` (a hash map's lookup an event, ~60 instructions, on
    /// the writer's thread, the ingest's slowest). With one way of 8,192 slots a national
    /// feed's 8,000 sites missed about a third of the time.
    recent: Box<[RecentSite; RECENT_SITES]>,
}

/// A slot of [`SiteNumbers::recent`]: a site and its number ([`NO_SITE_NUMBER`] when empty).
#[derive(Clone, Copy)]
struct RecentSite {
    site: SiteFields,
    number: u32,
}

/// [`SiteNumbers::recent`]'s slots: a national feed's sites, a few thousand, with room.
const RECENT_SITE_BITS: u32 = 14;
const RECENT_SITES: usize = 1 << RECENT_SITE_BITS;

impl Default for SiteNumbers {
    fn default() -> Self {
        let empty = RecentSite {
            site: (Zip::NONE, 0, 0),
            number: NO_SITE_NUMBER,
        };
        SiteNumbers {
            numbers: HashMap::new(),
            table: Arc::default(),
            limit: NUMBERED_SITES,
            recent: vec![empty; RECENT_SITES]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("RECENT_SITES slots")),
        }
    }
}

/// Sites [`SiteNumbers`] numbers at most (the [`SiteTable`]'s capacity).
const NUMBERED_SITES: usize = SITE_CHUNKS * SITE_CHUNK;
const SITE_CHUNK: usize = 1 << 10;
const SITE_CHUNKS: usize = 1 << 10;

/// Sites by store-wide number ([`SiteNumbers`]): written once each, by the writer as it numbers
/// them, before any scan holds the number; read by every head shard, under no lock. Chunks are
/// made as numbers reach them, so a few thousand sites cost a few chunks.
pub(crate) struct SiteTable {
    chunks: Box<[OnceLock<SiteChunk>]>,
}

/// [`SITE_CHUNK`] sites of a [`SiteTable`], each set once.
type SiteChunk = Box<[OnceLock<SiteFields>]>;

impl Default for SiteTable {
    fn default() -> Self {
        SiteTable {
            chunks: (0..SITE_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl SiteTable {
    /// The fields of site `number`; `None` for a number not given out.
    fn get(&self, number: u32) -> Option<SiteFields> {
        let number = number as usize;
        let chunk = self.chunks.get(number / SITE_CHUNK)?.get()?;
        chunk[number % SITE_CHUNK].get().copied()
    }

    /// Gives `number` (below [`NUMBERED_SITES`], not given before) its fields.
    fn set(&self, number: u32, fields: SiteFields) {
        let number = number as usize;
        let chunk = self.chunks[number / SITE_CHUNK]
            .get_or_init(|| (0..SITE_CHUNK).map(|_| OnceLock::new()).collect());
        let set = chunk[number % SITE_CHUNK].set(fields);
        debug_assert!(set.is_ok(), "a site number is given once");
    }
}
/// The number of a site [`SiteNumbers`] has none for (the WAL's encoder reads the numbers too).
pub(crate) use crate::wal::NO_SITE_NUMBER;

impl SiteNumbers {
    /// The number of `event`'s site, or [`NO_SITE_NUMBER`] once the numbers are all given.
    /// Inlined, the recent slots with it; the rest is [`SiteNumbers::number_of_new`].
    #[inline(always)]
    pub(crate) fn number(&mut self, event: &ScanEvent) -> u32 {
        let site = (event.facility_zip, event.facility, event.machine);
        let mixed = site.0.to_bits() ^ u64::from(site.1) << 40 ^ u64::from(site.2) << 20;
        let slot =
            (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_SITE_BITS)) as usize & !1;
        let first = self.recent[slot];
        if first.site == site && first.number != NO_SITE_NUMBER {
            return first.number;
        }
        let second = self.recent[slot + 1];
        if second.site == site && second.number != NO_SITE_NUMBER {
            self.recent.swap(slot, slot + 1);
            return second.number;
        }
        self.number_of_new(site, slot)
    }

    /// The number of a site not in its recent set, whose first way, `slot`, it then takes (the
    /// site there moving to the second).
    #[inline(never)]
    fn number_of_new(&mut self, site: SiteFields, slot: usize) -> u32 {
        let number = match self.numbers.get(&site) {
            Some(&number) => number,
            None if self.numbers.len() >= self.limit => return NO_SITE_NUMBER,
            None => {
                let number = self.numbers.len() as u32;
                self.table.set(number, site);
                self.numbers.insert(site, number);
                number
            }
        };
        self.recent[slot + 1] = self.recent[slot];
        self.recent[slot] = RecentSite { site, number };
        number
    }

    /// The table the head reads the numbers' sites from.
    pub(crate) fn table(&self) -> &Arc<SiteTable> {
        &self.table
    }

    /// Numbers for at most `limit` sites.
    #[cfg(test)]
    pub(crate) fn with_limit(limit: usize) -> SiteNumbers {
        SiteNumbers {
            limit: limit.min(NUMBERED_SITES),
            ..SiteNumbers::default()
        }
    }
}

impl Site {
    fn of(event: &ScanEvent, routing: u32) -> Site {
        Site {
            facility_zip: event.facility_zip,
            facility: event.facility,
            machine: event.machine,
            routing,
        }
    }
}

/// One scan in the head (16 bytes; see the module docs).
#[derive(Clone, Copy)]
struct HeadScan {
    /// Milliseconds since the bucket's day began.
    time_in_day: u32,
    /// The piece's scan before this one, or [`NO_SCAN`].
    previous: u32,
    /// The site's store-wide number ([`SiteNumbers`]), or [`LOCAL_SITE`] and an index into
    /// the shard's own sites.
    site: u32,
    code: EventCode,
    handling: HandlingEventType,
}

const _: () = assert!(size_of::<HeadScan>() == 16);

/// [`HeadScan::site`]'s mark of a site the shard interned itself (numbers stay below it).
const LOCAL_SITE: u32 = 1 << 31;
const _: () = assert!(NUMBERED_SITES <= LOCAL_SITE as usize);

/// Values interned per shard, each given the index of its first appearance.
struct Interned<T> {
    values: Vec<T>,
    ids: HashMap<T, u32>,
    /// Ids recently given, by a cheap hash of the value ([`RecentKey`]), checked against
    /// `values`: a shard sees the same few sites over and over, and a hit skips hashing the
    /// value in full and probing a table that no longer fits in cache.
    recent: Box<[u32; RECENT_SLOTS]>,
}

const RECENT_BITS: u32 = 8;
const RECENT_SLOTS: usize = 1 << RECENT_BITS;
/// [`Interned::recent`] slot that holds no id.
const NO_ID: u32 = u32::MAX;

/// A value with a cheap hash for [`Interned::recent`].
trait RecentKey {
    /// Some 64 bits of the value; equal values give equal bits.
    fn bits(&self) -> u64;
}

impl RecentKey for Site {
    fn bits(&self) -> u64 {
        self.facility_zip.to_bits()
            ^ u64::from(self.facility).rotate_left(40)
            ^ u64::from(self.machine).rotate_left(20)
            ^ u64::from(self.routing).rotate_left(52)
    }
}

impl RecentKey for Zip {
    fn bits(&self) -> u64 {
        self.to_bits()
    }
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: Vec::new(),
            ids: HashMap::new(),
            recent: Box::new([NO_ID; RECENT_SLOTS]),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash + RecentKey> Interned<T> {
    fn id(&mut self, value: T) -> u32 {
        let slot =
            (value.bits().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_BITS)) as usize;
        let recent = self.recent[slot];
        if recent != NO_ID && self.values[recent as usize] == value {
            return recent;
        }
        let values = &mut self.values;
        let id = *self.ids.entry(value).or_insert_with(|| {
            values.push(value);
            values.len() as u32 - 1
        });
        self.recent[slot] = id;
        id
    }

    fn heap_bytes(&self) -> usize {
        self.values.capacity() * size_of::<T>()
            + self.ids.capacity() * (size_of::<(T, u32)>() + 1)
            + size_of::<[u32; RECENT_SLOTS]>()
    }
}

/// A piece of a shard's day: its key, its routing ZIP (its scans' unless their site says
/// otherwise), its newest scan and a filter of its scans' identities, side by side, so that
/// finding a piece and linking a scan to it read one place in memory, not three arrays.
#[derive(Clone, Copy)]
struct Piece {
    key: BarcodeKey,
    routing: Zip,
    newest: u32,
    /// Two bits a scan identity ([`identity_bits`]) for each of the piece's scans: a probe
    /// whose bits are not all here knows the identity is new without walking the chain
    /// (each scan of which is a cache miss in a head larger than the caches). With a day's
    /// few scans a piece, about one new identity in a hundred walks anyway.
    identities: u32,
}

/// Two of 32 bits, picked by a hash of a scan identity, for [`Piece::identities`].
fn identity_bits(&(time_in_day, code, facility_zip): &ChainIdentity) -> u32 {
    let [a, b, c] = code.to_bytes();
    let code = u64::from(u32::from_le_bytes([a, b, c, 0]));
    let mixed = (u64::from(time_in_day) ^ code << 32 ^ facility_zip.to_bits().rotate_left(21))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    1 << (mixed >> 59) | 1 << ((mixed >> 54) & 31)
}

// Two to a cache line: the module's memory figures count on it.
const _: () = assert!(size_of::<Piece>() == 32);

/// One shard of an open bucket: every scan in one array, each piece's scans chained newest to
/// oldest through [`HeadScan::previous`], so a piece costs no allocation of its own and
/// deduplication walks the piece's few scans (a set answers for a piece with many).
pub(crate) struct HeadShard {
    class: MailClass,
    day_start_ms: i64,
    scans: Chunked<HeadScan>,
    pieces: Chunked<Piece>,
    /// Piece indexes, by key hash.
    piece_index: PieceTable,
    /// The sites of scans that hold no store-wide number.
    sites: Interned<Site>,
    /// The sites of the store-wide numbers scans hold.
    numbered: Arc<SiteTable>,
    other_routings: Interned<Zip>,
    /// The scan identities (time in day, code, facility ZIP) of each piece with a long chain.
    /// A piece with more than [`LONG_CHAIN`] scans in a day is hostile or broken, and walking
    /// its chain for each new scan of it would make a batch of them quadratic; an insert that
    /// walks that far builds the piece's set, and probes read it instead of the chain.
    long_chains: HashMap<u32, HashSet<ChainIdentity>>,
}

/// A scan's identity within its piece and day: time in day, event code, facility ZIP.
type ChainIdentity = (u32, EventCode, Zip);

/// Chain length past which a piece's identities are kept in a set ([`HeadShard::long_chains`]).
const LONG_CHAIN: u32 = 64;

impl HeadShard {
    fn new((class, day): BucketId, numbered: &Arc<SiteTable>) -> HeadShard {
        HeadShard {
            class,
            day_start_ms: day * DAY_MS,
            scans: Chunked::default(),
            pieces: Chunked::default(),
            piece_index: PieceTable::default(),
            sites: Interned::default(),
            numbered: Arc::clone(numbered),
            other_routings: Interned::default(),
            long_chains: HashMap::new(),
        }
    }

    /// Starts loading what the lookup [`PREFETCH_AHEAD`] after the `n`th of a group will
    /// read first: its event (a shard's events are scattered through the batch) and its table
    /// slot. (Prefetching the piece records too, in a second step, measured slower.)
    fn prefetch_ahead(&self, events: &[ScanEvent], group: &[u32], hashes: &[u64], n: usize) {
        if let (Some(&ahead), Some(&hash)) = (
            group.get(n + PREFETCH_AHEAD),
            hashes.get(n + PREFETCH_AHEAD),
        ) {
            prefetch_lines(std::slice::from_ref(&events[ahead as usize]));
            self.piece_index.prefetch(hash);
        }
    }

    fn piece_of(&self, key: BarcodeKey) -> Option<u32> {
        self.piece_of_hashed(key, key_hash(key))
    }

    fn piece_of_hashed(&self, key: BarcodeKey, hash: u64) -> Option<u32> {
        self.piece_index
            .find(hash, |piece| self.pieces.get(piece).key == key)
    }

    /// Site `site` of a scan ([`HeadScan::site`]): a numbered one is at its piece's routing.
    fn site(&self, site: u32) -> Site {
        if site & LOCAL_SITE != 0 {
            return self.sites.values[(site & !LOCAL_SITE) as usize];
        }
        let (facility_zip, facility, machine) = self
            .numbered
            .get(site)
            .unwrap_or_else(|| unreachable!("a scan's site number is given out first"));
        Site {
            facility_zip,
            facility,
            machine,
            routing: PIECE_ROUTING,
        }
    }

    fn event(&self, piece: u32, scan: &HeadScan) -> ScanEvent {
        let site = self.site(scan.site);
        let piece = self.pieces.get(piece);
        ScanEvent {
            barcode: piece.key,
            time_ms: self.day_start_ms + i64::from(scan.time_in_day),
            routing: match site.routing {
                PIECE_ROUTING => piece.routing,
                other => self.other_routings.values[other as usize],
            },
            facility_zip: site.facility_zip,
            facility: site.facility,
            machine: site.machine,
            code: scan.code,
            class: self.class,
            handling: scan.handling,
        }
    }

    /// A piece's scans with their indexes, newest first.
    fn chain(&self, piece: u32) -> impl Iterator<Item = (u32, &HeadScan)> {
        let mut at = self.pieces.get(piece).newest;
        std::iter::from_fn(move || {
            if at == NO_SCAN {
                return None;
            }
            let index = at;
            let scan = self.scans.get(index);
            at = scan.previous;
            Some((index, scan))
        })
    }

    /// The piece's scans, newest first.
    pub(crate) fn scans_of(&self, key: BarcodeKey) -> impl Iterator<Item = ScanEvent> + '_ {
        let piece = self.piece_of(key);
        piece
            .into_iter()
            .flat_map(move |piece| self.chain(piece).map(move |(_, s)| self.event(piece, s)))
    }

    /// Every piece's key.
    pub(crate) fn piece_keys(&self) -> impl Iterator<Item = BarcodeKey> + '_ {
        self.pieces.iter().map(|piece| piece.key)
    }

    /// Every scan, piece by piece.
    fn events(&self) -> impl Iterator<Item = ScanEvent> + '_ {
        (0..self.pieces.len).flat_map(move |piece| {
            self.chain(piece)
                .map(move |(_, scan)| self.event(piece, scan))
        })
    }

    /// The piece of `identity` here ([`NO_PIECE`] if none) and whether that piece has a scan
    /// with this identity: compared in place, no event built.
    fn probe(&self, identity: &ScanIdentity, hash: u64) -> Probe {
        let Some(piece) = self.piece_of_hashed(identity.barcode, hash) else {
            return Probe {
                piece: NO_PIECE,
                present: false,
                walked: 0,
            };
        };
        let Ok(time_in_day) = u32::try_from(identity.time_ms - self.day_start_ms) else {
            return Probe {
                piece,
                present: false,
                walked: 0,
            };
        };
        let wanted = (time_in_day, identity.code, identity.facility_zip);
        let bits = identity_bits(&wanted);
        if self.pieces.get(piece).identities & bits != bits {
            return Probe {
                piece,
                present: false,
                walked: 0,
            };
        }
        if let Some(identities) = self.long_chains.get(&piece) {
            return Probe {
                piece,
                present: identities.contains(&wanted),
                walked: 0,
            };
        }
        let mut walked = 0;
        let present = self.chain(piece).any(|(_, scan)| {
            walked += 1;
            self.chain_identity(scan) == wanted
        });
        Probe {
            piece,
            present,
            walked,
        }
    }

    fn chain_identity(&self, scan: &HeadScan) -> ChainIdentity {
        let facility_zip = self.site(scan.site).facility_zip;
        (scan.time_in_day, scan.code, facility_zip)
    }

    /// Inserts `event` into `piece`, as a probe under this same write turn found it, or into a
    /// new piece when that probe found none ([`NO_PIECE`]): no second lookup either way (half
    /// a feed's scans are their piece's first of the day); returns the piece.
    fn insert_into(&mut self, event: ScanEvent, piece: u32, hash: u64, site_number: u32) -> u32 {
        let piece = if piece == NO_PIECE {
            self.new_piece(&event, hash)
        } else {
            piece
        };
        self.push_scan(piece, &event, site_number);
        piece
    }

    /// Inserts `event` (its site numbered `site_number`) unless a scan with its identity is
    /// here; whether it went in. A probe that walks a long chain gives the piece its set of
    /// identities.
    fn insert_if_new(&mut self, event: &ScanEvent, hash: u64, site_number: u32) -> bool {
        let probe = self.probe(&event.identity(), hash);
        if probe.walked >= LONG_CHAIN {
            let identities = self
                .chain(probe.piece)
                .map(|(_, scan)| self.chain_identity(scan))
                .collect();
            self.long_chains.insert(probe.piece, identities);
        }
        if probe.present {
            return false;
        }
        let piece = self.insert_into(*event, probe.piece, hash, site_number);
        self.note_newest(piece);
        true
    }

    /// Adds `piece`'s newest scan to its identity set, if it has one.
    fn note_newest(&mut self, piece: u32) {
        if !self.long_chains.contains_key(&piece) {
            return;
        }
        let identity = self.chain_identity(self.scans.get(self.pieces.get(piece).newest));
        if let Some(identities) = self.long_chains.get_mut(&piece) {
            identities.insert(identity);
        }
    }

    /// A new piece for `event`'s key (of hash `hash`), which the caller found missing.
    fn new_piece(&mut self, event: &ScanEvent, hash: u64) -> u32 {
        let piece = self.pieces.push(Piece {
            key: event.barcode,
            routing: event.routing,
            newest: NO_SCAN,
            identities: 0,
        });
        self.piece_index.insert(hash, piece);
        piece
    }

    fn push_scan(&mut self, piece: u32, event: &ScanEvent, site_number: u32) {
        let site = if self.pieces.get(piece).routing != event.routing {
            let routing = self.other_routings.id(event.routing);
            self.sites.id(Site::of(event, routing)) | LOCAL_SITE
        } else if site_number == NO_SITE_NUMBER {
            self.sites.id(Site::of(event, PIECE_ROUTING)) | LOCAL_SITE
        } else {
            site_number
        };
        let time_in_day = (event.time_ms - self.day_start_ms) as u32;
        let record = self.pieces.get_mut(piece);
        record.identities |= identity_bits(&(time_in_day, event.code, event.facility_zip));
        record.newest = self.scans.push(HeadScan {
            time_in_day,
            previous: record.newest,
            site,
            code: event.code,
            handling: event.handling,
        });
    }

    fn heap_bytes(&self) -> usize {
        self.scans.heap_bytes()
            + self.pieces.heap_bytes()
            + self.piece_index.heap_bytes()
            + self.sites.heap_bytes()
            + self.other_routings.heap_bytes()
            + self
                .long_chains
                .values()
                .map(|identities| identities.capacity() * (size_of::<ChainIdentity>() + 1))
                .sum::<usize>()
    }

    /// Appends the shard's first `scans` scans to `out` (see `checkpoint.rs` for the layout):
    /// its sites and other routings, then each piece with a scan among them, with those scans
    /// oldest first. Scans after the first `scans` (appended since the checkpoint's position)
    /// are left out, and so are pieces that have only those. Site numbers are this process's
    /// own, so the sites the scans name by number are written after the shard's own ones, as
    /// if it had interned them.
    fn encode_prefix(&self, scans: u32, out: &mut Vec<u8>) {
        let mut sites = self.sites.values.clone();
        let mut written_ids: HashMap<u32, u32> = HashMap::new();
        let mut written_id = |site: u32| {
            if site & LOCAL_SITE != 0 {
                return site & !LOCAL_SITE;
            }
            *written_ids.entry(site).or_insert_with(|| {
                // A site the shard holds as its own too (one its scans from before a restart
                // name, decoded from the last checkpoint) is written once.
                let fields = self.site(site);
                self.sites.ids.get(&fields).copied().unwrap_or_else(|| {
                    sites.push(fields);
                    sites.len() as u32 - 1
                })
            })
        };
        let mut pieces_out = Vec::new();
        let mut pieces = 0u32;
        let mut chain = Vec::new();
        for piece in 0..self.pieces.len {
            chain.clear();
            chain.extend(self.chain(piece).filter(|&(index, _)| index < scans));
            if chain.is_empty() {
                continue;
            }
            pieces += 1;
            let record = self.pieces.get(piece);
            pieces_out.extend_from_slice(&record.key.as_u128().to_le_bytes());
            put_u64(&mut pieces_out, record.routing.to_bits());
            put_u32(&mut pieces_out, chain.len() as u32);
            for (_, scan) in chain.iter().rev() {
                put_u32(&mut pieces_out, scan.time_in_day);
                put_u32(&mut pieces_out, written_id(scan.site));
                pieces_out.extend_from_slice(&scan.code.to_bytes());
                pieces_out.push(scan.handling as u8);
            }
        }
        put_u32(out, sites.len() as u32);
        for site in &sites {
            put_u64(out, site.facility_zip.to_bits());
            put_u32(out, site.facility);
            put_u32(out, site.machine);
            put_u32(out, site.routing);
        }
        put_u32(out, self.other_routings.values.len() as u32);
        for zip in &self.other_routings.values {
            put_u64(out, zip.to_bits());
        }
        put_u32(out, pieces);
        put_u32(out, scans);
        out.extend_from_slice(&pieces_out);
    }

    /// Reads a shard written by [`HeadShard::encode_prefix`] from the front of `bytes`,
    /// advancing it; `None` if the bytes do not hold a consistent shard number `index` of
    /// `id`.
    pub(crate) fn decode(
        id: BucketId,
        index: usize,
        bytes: &mut &[u8],
        numbered: &Arc<SiteTable>,
    ) -> Option<HeadShard> {
        let mut shard = HeadShard::new(id, numbered);
        for _ in 0..take_u32(bytes)? {
            let site = Site {
                facility_zip: Zip::from_bits(take_u64(bytes)?)?,
                facility: take_u32(bytes)?,
                machine: take_u32(bytes)?,
                routing: take_u32(bytes)?,
            };
            if shard.sites.id(site) != shard.sites.values.len() as u32 - 1 {
                return None;
            }
        }
        for _ in 0..take_u32(bytes)? {
            let zip = Zip::from_bits(take_u64(bytes)?)?;
            if shard.other_routings.id(zip) != shard.other_routings.values.len() as u32 - 1 {
                return None;
            }
        }
        let routings = shard.other_routings.values.len();
        if shard
            .sites
            .values
            .iter()
            .any(|site| site.routing != PIECE_ROUTING && site.routing as usize >= routings)
        {
            return None;
        }
        let (pieces, scans) = (take_u32(bytes)?, take_u32(bytes)?);
        // Sized from the counts, but no more than the bytes left could hold.
        let pieces_fit = (pieces as usize).min(bytes.len() / 28);
        shard.pieces.reserve(pieces_fit);
        shard.piece_index.reserve(pieces_fit);
        shard.scans.reserve((scans as usize).min(bytes.len() / 12));
        for _ in 0..pieces {
            let key = BarcodeKey::from_u128(u128::from_le_bytes(take(bytes, 16)?.try_into().ok()?))
                .ok()?;
            let routing = Zip::from_bits(take_u64(bytes)?)?;
            if usize::from(shard_of(key)) != index || shard.piece_of(key).is_some() {
                return None;
            }
            let piece = shard.pieces.push(Piece {
                key,
                routing,
                newest: NO_SCAN,
                identities: 0,
            });
            shard.piece_index.insert(key_hash(key), piece);
            let (mut previous, mut identities) = (NO_SCAN, 0);
            for _ in 0..take_u32(bytes)? {
                let time_in_day = take_u32(bytes)?;
                let site = take_u32(bytes)?;
                let scan = HeadScan {
                    time_in_day,
                    previous,
                    // Decoded sites are the shard's own ([`HeadShard::encode_prefix`]).
                    site: site | LOCAL_SITE,
                    code: EventCode::from_bytes(take(bytes, 3)?.try_into().ok()?)?,
                    handling: HandlingEventType::from_byte(take(bytes, 1)?[0])?,
                };
                let valid =
                    i64::from(time_in_day) < DAY_MS && (site as usize) < shard.sites.values.len();
                if !valid {
                    return None;
                }
                identities |= identity_bits(&shard.chain_identity(&scan));
                previous = shard.scans.push(scan);
            }
            let record = shard.pieces.get_mut(piece);
            record.newest = previous;
            record.identities = identities;
        }
        (shard.scans.len == scans).then_some(shard)
    }
}

/// What a shard holds of one event: its piece ([`NO_PIECE`] if none) and whether the scan is
/// there already.
#[derive(Clone, Copy)]
pub(crate) struct Probe {
    piece: u32,
    /// A scan with the event's identity is here.
    pub(crate) present: bool,
    /// Scans of the piece's chain compared (0 when its identity filter or set answered).
    walked: u32,
}

/// Indexes of one bucket's events grouped by head shard, input order kept inside each group
/// (a counting sort), so an append takes each shard's lock once, not once an event.
pub(crate) struct ShardGroups {
    order: Vec<u32>,
    /// The site number of each event in `order`, beside it: an insert reads them in group
    /// order, where reading them by event index missed the cache about once an event.
    site_numbers: Vec<u32>,
    /// The [`key_hash`] of each event in `order`, beside it.
    hashes: Vec<u64>,
    starts: [u32; HEAD_SHARDS + 1],
}

impl ShardGroups {
    /// Groups `indexes` (into a batch's events and their `site_numbers`) by `shards`, each
    /// event's ([`shard_of`] its key), with `hashes` (each event's [`key_hash`], in
    /// `indexes`' order).
    pub(crate) fn new(
        indexes: &[u32],
        shards: &[u8],
        hashes: &[u64],
        site_numbers: &[u32],
    ) -> ShardGroups {
        let mut starts = [0u32; HEAD_SHARDS + 1];
        for &shard in shards {
            starts[shard as usize + 1] += 1;
        }
        for shard in 0..HEAD_SHARDS {
            starts[shard + 1] += starts[shard];
        }
        let mut next = starts;
        let mut order = vec![0; indexes.len()];
        let mut grouped_site_numbers = vec![0; indexes.len()];
        let mut grouped_hashes = vec![0; indexes.len()];
        for ((&index, &shard), &hash) in indexes.iter().zip(shards).zip(hashes) {
            let at = next[shard as usize] as usize;
            order[at] = index;
            grouped_site_numbers[at] = site_numbers[index as usize];
            grouped_hashes[at] = hash;
            next[shard as usize] += 1;
        }
        ShardGroups {
            order,
            site_numbers: grouped_site_numbers,
            hashes: grouped_hashes,
            starts,
        }
    }

    /// [`ShardGroups::new`] with each event's shard worked out from `events`.
    #[cfg(test)]
    pub(crate) fn of_events(
        events: &[ScanEvent],
        indexes: &[u32],
        site_numbers: &[u32],
    ) -> ShardGroups {
        let keys = indexes.iter().map(|&i| events[i as usize].barcode);
        let shards: Vec<u8> = keys.clone().map(shard_of).collect();
        let hashes: Vec<u64> = keys.map(key_hash).collect();
        ShardGroups::new(indexes, &shards, &hashes, site_numbers)
    }

    /// Every grouped index, shard by shard.
    pub(crate) fn indexes(&self) -> &[u32] {
        &self.order
    }

    /// The event indexes of `shard`, in input order.
    pub(crate) fn of(&self, shard: usize) -> &[u32] {
        &self.order[self.range_of(shard)]
    }

    /// The site numbers of `shard`'s events, in [`ShardGroups::of`]'s order.
    fn site_numbers_of(&self, shard: usize) -> &[u32] {
        &self.site_numbers[self.range_of(shard)]
    }

    /// The key hashes of `shard`'s events, in [`ShardGroups::of`]'s order.
    fn hashes_of(&self, shard: usize) -> &[u64] {
        &self.hashes[self.range_of(shard)]
    }

    fn range_of(&self, shard: usize) -> std::ops::Range<usize> {
        self.starts[shard] as usize..self.starts[shard + 1] as usize
    }

    /// Every grouped index with its probe, shard by shard.
    pub(crate) fn with_probes<'a>(
        &'a self,
        probes: &'a [Vec<Probe>],
    ) -> impl Iterator<Item = (u32, Probe)> + 'a {
        (0..HEAD_SHARDS).flat_map(move |shard| {
            self.of(shard)
                .iter()
                .copied()
                .zip(probes[shard].iter().copied())
        })
    }
}

/// The scans of one open (class, day), sharded by barcode. Shared (`Arc`) between the store's
/// published view and its writer; only the writer inserts.
pub(crate) struct HeadBucket {
    shards: Vec<RwLock<HeadShard>>,
}

/// A panic under a shard lock leaves the shard as its last completed insert left it (an insert
/// pushes the scan before linking it), so a poisoned lock is taken as it is.
fn read(shard: &RwLock<HeadShard>) -> RwLockReadGuard<'_, HeadShard> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &RwLock<HeadShard>) -> RwLockWriteGuard<'_, HeadShard> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

impl HeadBucket {
    /// An empty bucket for `id`, its scans' site numbers those of `numbered`.
    pub(crate) fn new(id: BucketId, numbered: &Arc<SiteTable>) -> HeadBucket {
        HeadBucket {
            shards: (0..HEAD_SHARDS)
                .map(|_| RwLock::new(HeadShard::new(id, numbered)))
                .collect(),
        }
    }

    /// A bucket of decoded shards ([`HeadShard::decode`]), in shard order; `None` unless there
    /// are [`HEAD_SHARDS`].
    pub(crate) fn from_shards(shards: Vec<HeadShard>) -> Option<HeadBucket> {
        (shards.len() == HEAD_SHARDS).then(|| HeadBucket {
            shards: shards.into_iter().map(RwLock::new).collect(),
        })
    }

    /// Runs `f` on the shard that holds `key`, under its read lock.
    pub(crate) fn with_shard_of<T>(&self, key: BarcodeKey, f: impl FnOnce(&HeadShard) -> T) -> T {
        f(&read(&self.shards[usize::from(shard_of(key))]))
    }

    /// [`HeadBucket::with_shard_of`] when the shard's lock is free now; `None` when an insert
    /// holds it.
    pub(crate) fn try_with_shard_of<T>(
        &self,
        key: BarcodeKey,
        f: impl FnOnce(&HeadShard) -> T,
    ) -> Option<T> {
        match self.shards[usize::from(shard_of(key))].try_read() {
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

    /// Whether a scan with this identity is here (tests; appends probe in batches).
    #[cfg(test)]
    pub(crate) fn contains(&self, identity: &ScanIdentity) -> bool {
        self.with_shard_of(identity.barcode, |shard| {
            shard.probe(identity, key_hash(identity.barcode)).present
        })
    }

    /// Probes every grouped event in its shard, shards in parallel, each under its read lock
    /// once; the probes of a shard follow its group's order.
    pub(crate) fn probe_all(&self, events: &[ScanEvent], groups: &ShardGroups) -> Vec<Vec<Probe>> {
        self.shards
            .par_iter()
            .enumerate()
            .map(|(index, shard)| {
                let group = groups.of(index);
                if group.is_empty() {
                    return Vec::new();
                }
                let shard = read(shard);
                let hashes = groups.hashes_of(index);
                group
                    .iter()
                    .zip(hashes)
                    .enumerate()
                    .map(|(n, (&i, &hash))| {
                        shard.prefetch_ahead(events, group, hashes, n);
                        shard.probe(&events[i as usize].identity(), hash)
                    })
                    .collect()
            })
            .collect()
    }

    /// Inserts each grouped event that `keep` takes and the bucket lacks, shards in parallel,
    /// each under its write lock once, and returns the indexes of those it already had. A
    /// repeat within the batch is had by the time it comes: its first copy went in before it
    /// (a shard's group keeps input order), so each event costs one probe, repeats included.
    /// (Tests; a batch inserts into all its buckets at once, [`HeadBucket::insert_new_in`].)
    #[cfg(test)]
    pub(crate) fn insert_new(
        &self,
        events: &[ScanEvent],
        groups: &ShardGroups,
        keep: &[bool],
    ) -> Vec<u32> {
        HeadBucket::insert_new_in(&[(self, groups)], events, keep)
    }

    /// [`HeadBucket::insert_new`] into several buckets, each with its groups: every shard of
    /// every bucket is a task of one parallel loop. A batch spans a few days; with a loop a
    /// bucket, the writer waited behind the parse tasks on the pool once for each.
    pub(crate) fn insert_new_in(
        heads: &[(&HeadBucket, &ShardGroups)],
        events: &[ScanEvent],
        keep: &[bool],
    ) -> Vec<u32> {
        let tasks: Vec<(&HeadBucket, &ShardGroups, usize)> = heads
            .iter()
            .flat_map(|&(head, groups)| (0..HEAD_SHARDS).map(move |s| (head, groups, s)))
            .filter(|(_, groups, s)| groups.of(*s).iter().any(|&i| keep[i as usize]))
            .collect();
        tasks
            .par_iter()
            .flat_map_iter(|&(head, groups, index)| {
                let mut present = Vec::new();
                let mut shard = write(&head.shards[index]);
                let group = groups.of(index);
                let hashes = groups.hashes_of(index);
                let site_numbers = groups.site_numbers_of(index);
                for (n, (&i, &site_number)) in group.iter().zip(site_numbers).enumerate() {
                    shard.prefetch_ahead(events, group, hashes, n);
                    let i = i as usize;
                    if keep[i] && !shard.insert_if_new(&events[i], hashes[n], site_number) {
                        present.push(i as u32);
                    }
                }
                present
            })
            .collect()
    }

    /// Inserts events known to be new, their sites numbered by `numbers` (whose table this
    /// bucket reads; tests build heads so).
    #[cfg(test)]
    pub(crate) fn insert_all(&self, events: Vec<ScanEvent>, numbers: &mut SiteNumbers) {
        let indexes: Vec<u32> = (0..events.len() as u32).collect();
        let site_numbers: Vec<u32> = events.iter().map(|e| numbers.number(e)).collect();
        let groups = ShardGroups::of_events(&events, &indexes, &site_numbers);
        self.insert_new(&events, &groups, &vec![true; events.len()]);
    }

    /// Scans per shard, in shard order: what a checkpoint taken now covers.
    pub(crate) fn shard_scan_counts(&self) -> Vec<u32> {
        self.shards.iter().map(|s| read(s).scans.len).collect()
    }

    /// Scans held.
    pub(crate) fn scan_count(&self) -> usize {
        self.shards.iter().map(|s| read(s).scans.len as usize).sum()
    }

    /// Pieces held.
    pub(crate) fn piece_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| read(s).pieces.len as usize)
            .sum()
    }

    /// Heap bytes held, scans, pieces, tables and unused capacity together.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|s| read(s).heap_bytes()).sum()
    }

    /// A copy of every event, for sealing.
    pub(crate) fn events(&self) -> Vec<ScanEvent> {
        let mut events = Vec::with_capacity(self.scan_count());
        for shard in &self.shards {
            events.extend(read(shard).events());
        }
        events
    }

    /// Encodes shard `index`'s first `scans` scans (see [`HeadShard::encode_prefix`]).
    pub(crate) fn encode_shard_prefix(&self, index: usize, scans: u32, out: &mut Vec<u8>) {
        read(&self.shards[index]).encode_prefix(scans, out);
    }
}

#[cfg(test)]
mod tests {
    use imbtrack_barcode::{Barcode, Imb};

    use super::*;

    const DAY: i64 = 20_400;

    fn event(serial: u64, scan: i64, routing: &str) -> ScanEvent {
        ScanEvent {
            barcode: Barcode::Imb(Imb::new(&format!("00270123456{serial:09}"), "").unwrap()).key(),
            time_ms: DAY * DAY_MS + scan * 3_600_000 + serial as i64,
            routing: Zip::parse(routing.as_bytes()).unwrap_or(Zip::NONE),
            facility_zip: Zip::parse(b"94110").unwrap(),
            facility: (scan % 3) as u32,
            machine: (serial % 7) as u32,
            code: EventCode::parse(b"918").unwrap(),
            class: MailClass::Mail,
            handling: HandlingEventType::Physical,
        }
    }

    proptest::proptest! {
        /// Site numbers through the recent slots are the numbers a plain map gives, first seen
        /// first numbered, none past the limit, and the table gives each number's site back:
        /// with a few facilities' many machines (sites of one facility sharing slots) and with
        /// more sites than are numbered.
        #[test]
        fn site_numbers_are_a_maps(sites in proptest::collection::vec((0u32..6_000, 0u32..300, 0u32..3), 1..12_000), few in proptest::bool::ANY) {
            const LIMIT: usize = 5_000;
            let mut numbers = SiteNumbers::with_limit(LIMIT);
            let mut model: std::collections::HashMap<(Zip, Symbol, Symbol), u32> = Default::default();
            for (facility, machine, zip) in sites {
                let facility = if few { facility % 4 } else { facility };
                let mut site = event(0, 0, "");
                site.facility = facility;
                site.machine = machine;
                site.facility_zip = Zip::from_parts(u64::from(zip), 5).expect("a ZIP");
                let key = (site.facility_zip, site.facility, site.machine);
                let expected = match model.get(&key) {
                    Some(&number) => number,
                    None if model.len() >= LIMIT => NO_SITE_NUMBER,
                    None => {
                        let number = model.len() as u32;
                        model.insert(key, number);
                        number
                    }
                };
                proptest::prop_assert_eq!(numbers.number(&site), expected);
                if expected != NO_SITE_NUMBER {
                    proptest::prop_assert_eq!(numbers.table().get(expected), Some(key));
                }
            }
        }
    }

    /// A day's worth of a plant's scans, several per piece, a few with a routing ZIP that
    /// differs from the piece's first.
    fn sample(pieces: u64) -> Vec<ScanEvent> {
        (0..4)
            .flat_map(|scan| {
                (0..pieces).map(move |serial| {
                    let routing = if scan == 3 && serial % 10 == 0 {
                        "94107"
                    } else {
                        ""
                    };
                    event(serial, scan, routing)
                })
            })
            .collect()
    }

    fn sorted(mut events: Vec<ScanEvent>) -> Vec<ScanEvent> {
        events.sort_by_key(|e| (e.barcode, e.time_ms));
        events
    }

    #[test]
    fn scans_come_back_as_they_went_in() {
        // Six of the sample's 21 sites numbered: the rest are the shards' own, as sites past
        // the numbers' limit are.
        let mut numbers = SiteNumbers::with_limit(6);
        let head = HeadBucket::new((MailClass::Mail, DAY), numbers.table());
        let events = sample(20_000);
        head.insert_all(events.clone(), &mut numbers);
        assert_eq!(head.scan_count(), events.len());
        assert_eq!(head.piece_count(), 20_000);
        assert_eq!(sorted(head.events()), sorted(events.clone()));
        let key = events[10].barcode;
        let scans: Vec<ScanEvent> = head.with_shard_of(key, |s| s.scans_of(key).collect());
        let mut expected: Vec<ScanEvent> = events
            .iter()
            .filter(|e| e.barcode == key)
            .copied()
            .collect();
        expected.reverse();
        assert_eq!(scans, expected);
        assert!(head.contains(&events[10].identity()));
        let mut other = events[10];
        other.time_ms += 1;
        assert!(!head.contains(&other.identity()));
    }

    #[test]
    fn a_scan_costs_at_most_40_bytes() {
        let mut numbers = SiteNumbers::default();
        let head = HeadBucket::new((MailClass::Mail, DAY), numbers.table());
        // Enough pieces that each shard's arrays are mostly whole chunks, as in a real day.
        head.insert_all(sample(100_000), &mut numbers);
        let per_scan = head.heap_bytes() as f64 / head.scan_count() as f64;
        assert!(per_scan <= 40.0, "{per_scan:.1} bytes per scan");
    }

    #[test]
    fn a_prefix_round_trips_without_the_later_scans() {
        let id = (MailClass::Mail, DAY);
        // Some sites numbered and some the shards' own, as in `scans_come_back_as_they_went_in`.
        let mut numbers = SiteNumbers::with_limit(6);
        let head = HeadBucket::new(id, numbers.table());
        let events = sample(20_000);
        let (early, late) = events.split_at(50_000);
        head.insert_all(early.to_vec(), &mut numbers);
        let counts = head.shard_scan_counts();
        head.insert_all(late.to_vec(), &mut numbers);
        let mut bytes = Vec::new();
        for (index, &count) in counts.iter().enumerate() {
            head.encode_shard_prefix(index, count, &mut bytes);
        }
        let mut rest = &bytes[..];
        let shards = (0..HEAD_SHARDS)
            .map(|i| HeadShard::decode(id, i, &mut rest, numbers.table()))
            .collect::<Option<Vec<_>>>()
            .unwrap();
        assert!(rest.is_empty());
        let restored = HeadBucket::from_shards(shards).unwrap();
        assert_eq!(sorted(restored.events()), sorted(early.to_vec()));
        // Its pieces know their scans again: the early ones are found, the late ones go in.
        for &event in early {
            assert!(restored.contains(&event.identity()));
        }
        restored.insert_all(events.clone(), &mut numbers);
        assert_eq!(restored.scan_count(), events.len());
        // Checkpointed again, the decoded scans' sites and the new ones' numbered ones, the
        // same sites, come back as one.
        let mut again = Vec::new();
        for index in 0..HEAD_SHARDS {
            let count = restored.shard_scan_counts()[index];
            restored.encode_shard_prefix(index, count, &mut again);
        }
        let mut rest = &again[..];
        let shards = (0..HEAD_SHARDS)
            .map(|i| HeadShard::decode(id, i, &mut rest, &Arc::default()))
            .collect::<Option<Vec<_>>>()
            .unwrap();
        let restored_again = HeadBucket::from_shards(shards).unwrap();
        assert_eq!(sorted(restored_again.events()), sorted(events.clone()));
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let mut rest = &bytes[..cut];
            let whole = (0..HEAD_SHARDS)
                .all(|i| HeadShard::decode(id, i, &mut rest, numbers.table()).is_some());
            assert!(!whole, "a shard list cut at {cut} decoded");
        }
    }
}
