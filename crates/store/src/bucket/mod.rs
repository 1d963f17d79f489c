//! Sealed buckets: one immutable, checksummed file per (class, UTC day), memory-mapped and read
//! in place. The byte layout of every version is in `crates/store/FORMAT.md`; little-endian
//! throughout. New buckets are written in format v2 ([`v2`]); v1 files ([`v1`]) are still
//! read, and `Store::compact(true)` (`imbtrack compact --upgrade`) rewrites them.
//!
//! ```text
//! [header 512 B: magic, version, class, kind, day, counts, section table, version's fields, CRC]
//! [section]…  each on a 64-byte boundary, each with its CRC-32 in the table
//! ```

mod codec;
mod v1;
mod v2;

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{EventCode, HandlingEventType, MailClass, ScanEvent, SymbolTable, Zip};
use memmap2::Mmap;

use crate::retention::DAY_MS;
use crate::StoreError;

/// The first bytes of every bucket file, whatever its version.
const MAGIC: &[u8; 8] = b"IMBTBKT1";
const HEADER_LEN: usize = 512;
/// The file inside each bucket directory.
pub(crate) const BUCKET_FILE: &str = "scans.bin";

// Header offsets, each after the previous field.
const VERSION_OFFSET: usize = MAGIC.len();
const CLASS_OFFSET: usize = VERSION_OFFSET + 4;
const KIND_OFFSET: usize = CLASS_OFFSET + 1;
const DAY_OFFSET: usize = KIND_OFFSET + 3;
const SCAN_COUNT_OFFSET: usize = DAY_OFFSET + 8;
const PIECE_COUNT_OFFSET: usize = SCAN_COUNT_OFFSET + 8;
const SECTION_COUNT_OFFSET: usize = PIECE_COUNT_OFFSET + 8;
const SECTIONS_OFFSET: usize = SECTION_COUNT_OFFSET + 8;
/// Each section: offset u64, length u64, CRC-32 u32, 4 bytes unused.
const SECTION_ENTRY_LEN: usize = 24;
const HEADER_CRC_OFFSET: usize = HEADER_LEN - 4;
/// The most sections any version has (the section table must fit before the version's own
/// header fields and the CRC).
const MAX_SECTIONS: usize = 12;

const BLOOM_BLOCK_WORDS: usize = 8;
const BLOOM_BLOCK_BYTES: usize = BLOOM_BLOCK_WORDS * 8;
const BLOOM_BITS_PER_PIECE: usize = 10;
/// An event code index carries the handling event type in its top two bits.
const HANDLING_SHIFT: u16 = 14;

/// The format a store writes new buckets in. Every release reads both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketFormat {
    /// Fixed-width records, ~2× the bytes: only to keep a store readable by a release from
    /// before v2 (during a rolling upgrade, or to be able to roll back).
    V1,
    /// Blocked, delta-coded and bit-packed (FORMAT.md).
    #[default]
    V2,
}

impl BucketFormat {
    /// The version number files of this format carry.
    pub fn version(self) -> u32 {
        match self {
            BucketFormat::V1 => v1::VERSION,
            BucketFormat::V2 => v2::VERSION,
        }
    }
}

/// Builds a bucket file in `format` from the scans of one (class, day), sorted by piece, time,
/// code and facility, and free of duplicates.
pub(crate) fn encode(
    format: BucketFormat,
    class: MailClass,
    kind: BucketKind,
    day: i64,
    scans: &[ScanEvent],
    symbols: &SymbolTable,
) -> Result<Vec<u8>, StoreError> {
    debug_assert!(scans
        .windows(2)
        .all(|w| (w[0].barcode, w[0].time_ms) <= (w[1].barcode, w[1].time_ms)));
    match format {
        BucketFormat::V1 => v1::encode(class, kind, day, scans, symbols),
        BucketFormat::V2 => v2::encode(class, kind, day, scans, symbols),
    }
}

/// Whether a bucket holds a whole day or late scans for an already sealed day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BucketKind {
    /// The day's main bucket.
    Base,
    /// Late scans for a sealed day, merged into the base when the day is compacted.
    Delta,
}

/// Sort key of a routing ZIP that makes 5-, 9- and 11-digit prefix queries ranges: the ZIP
/// padded to 11 digits, times 4, plus its length code.
pub(crate) fn routing_key(zip: Zip) -> u64 {
    let (padded, code) = match zip.len() {
        5 => (zip.value() * 1_000_000, 1),
        9 => (zip.value() * 100, 2),
        11 => (zip.value(), 3),
        _ => (0, 0),
    };
    padded * 4 + code
}

/// The routing keys a query ZIP matches: every routing at least as long that starts with it.
/// A key in the range matches only if [`routing_key_matches`] also says so.
fn routing_key_range(query: Zip) -> Range<u64> {
    let (low, span, min_code) = match query.len() {
        5 => (query.value() * 1_000_000, 1_000_000, 1),
        9 => (query.value() * 100, 100, 2),
        _ => (query.value(), 1, 3),
    };
    low * 4 + min_code..(low + span) * 4
}

/// Whether a routing key inside `range` (from [`routing_key_range`]) answers the query: longer
/// routings only, since a 5-digit routing does not answer a 9-digit query.
fn routing_key_matches(key: u64, range: &Range<u64>) -> bool {
    range.contains(&key) && key % 4 >= range.start % 4
}

/// The 64-bit hash of a key that the Bloom filter uses (FORMAT.md gives it step by step, with a
/// test vector): the key's two halves folded, then the murmur3 64-bit finaliser.
fn bloom_hash(key: u128) -> u64 {
    let mut h = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// Asks the processor to start loading every cache line of `bytes`, without waiting for any:
/// a lookup across buckets first starts the loads it will need from each, so their cache and
/// TLB misses overlap instead of adding up.
pub(crate) fn prefetch_lines<T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in cache_lines(items) {
        // SAFETY: a prefetch is a hint: it never faults (not even on a bad address), changes
        // no memory and returns nothing, and SSE, which provides it, is part of every x86_64
        // target.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

/// The start of each 64-byte cache line `items` has a byte in, first to last: an item need
/// not start a line (a batch's 64-byte events are 16-byte aligned, most across two lines).
fn cache_lines<T>(items: &[T]) -> impl Iterator<Item = *const u8> {
    const LINE: usize = 64;
    let first = items.as_ptr().cast::<u8>();
    let into_line = first as usize % LINE;
    let line_start = first.wrapping_sub(into_line);
    let span = match size_of_val(items) {
        0 => 0,
        bytes => into_line + bytes,
    };
    (0..span)
        .step_by(LINE)
        .map(move |offset| line_start.wrapping_add(offset))
}

/// A key's Bloom probe, computed once per lookup and used against every bucket: the hash that
/// picks the block (by multiply-shift, no division) and the six bits to find in it, as a mask
/// per word of the 512-bit block.
#[derive(Debug, Clone, Copy)]
pub struct BloomProbe {
    block_hash: u64,
    mask: [u64; BLOOM_BLOCK_WORDS],
}

impl BloomProbe {
    /// The probe of `key`.
    pub fn new(key: BarcodeKey) -> BloomProbe {
        BloomProbe::of_raw(key.as_u128())
    }

    fn of_raw(key: u128) -> BloomProbe {
        let h = bloom_hash(key);
        let second = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut mask = [0u64; BLOOM_BLOCK_WORDS];
        for i in 0..6 {
            let bit = (second >> (i * 9)) & 511;
            mask[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        BloomProbe {
            block_hash: h >> 32,
            mask,
        }
    }

    fn block(&self, blocks: usize) -> usize {
        ((self.block_hash * blocks as u64) >> 32) as usize
    }
}

/// The Bloom filter section over these piece keys: 10 bits a piece, at least one block.
fn bloom_section(keys: impl ExactSizeIterator<Item = u128>) -> Vec<u8> {
    let blocks = (keys.len() * BLOOM_BITS_PER_PIECE).div_ceil(512).max(1);
    let mut bloom = vec![0u64; blocks * BLOOM_BLOCK_WORDS];
    for key in keys {
        let probe = BloomProbe::of_raw(key);
        let block = probe.block(blocks);
        for (word, mask) in bloom[block * BLOOM_BLOCK_WORDS..][..BLOOM_BLOCK_WORDS]
            .iter_mut()
            .zip(probe.mask)
        {
            *word |= mask;
        }
    }
    bloom.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// What every version's header says, besides its sections.
#[derive(Debug, Clone, Copy)]
struct Header {
    version: u32,
    class: MailClass,
    kind: BucketKind,
    day: i64,
    scan_count: u64,
    piece_count: usize,
}

/// Lays out a bucket file: the header with `fields` (the version's own header fields, written
/// right after the section table), then each section on a 64-byte boundary.
fn frame(header: &Header, sections: &[Vec<u8>], fields: &[u8]) -> Vec<u8> {
    let fields_offset = SECTIONS_OFFSET + sections.len() * SECTION_ENTRY_LEN;
    debug_assert!(
        sections.len() <= MAX_SECTIONS && fields_offset + fields.len() <= HEADER_CRC_OFFSET
    );
    let mut file = vec![0u8; HEADER_LEN];
    file[..VERSION_OFFSET].copy_from_slice(MAGIC);
    file[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&header.version.to_le_bytes());
    file[CLASS_OFFSET] = header.class as u8;
    file[KIND_OFFSET] = header.kind as u8;
    file[DAY_OFFSET..DAY_OFFSET + 8].copy_from_slice(&header.day.to_le_bytes());
    file[SCAN_COUNT_OFFSET..SCAN_COUNT_OFFSET + 8]
        .copy_from_slice(&header.scan_count.to_le_bytes());
    file[PIECE_COUNT_OFFSET..PIECE_COUNT_OFFSET + 8]
        .copy_from_slice(&(header.piece_count as u64).to_le_bytes());
    file[SECTION_COUNT_OFFSET..SECTION_COUNT_OFFSET + 4]
        .copy_from_slice(&(sections.len() as u32).to_le_bytes());
    file[fields_offset..fields_offset + fields.len()].copy_from_slice(fields);
    for (i, bytes) in sections.iter().enumerate() {
        // Sections start on a cache line, so a Bloom block is one line (if the map is aligned,
        // which page-aligned mappings are).
        file.resize(file.len().next_multiple_of(64), 0);
        let entry = SECTIONS_OFFSET + i * SECTION_ENTRY_LEN;
        let offset = file.len() as u64;
        file[entry..entry + 8].copy_from_slice(&offset.to_le_bytes());
        file[entry + 8..entry + 16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        file[entry + 16..entry + 20].copy_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        file.extend_from_slice(bytes);
    }
    let crc = crc32fast::hash(&file[..HEADER_CRC_OFFSET]);
    file[HEADER_CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    file
}

/// Recomputes every section checksum and the header checksum of a bucket file in place, as far
/// as its section table allows. For tests and fuzzing: a file damaged and then re-checksummed
/// passes the CRC checks, which lets them exercise the structural checks behind.
#[doc(hidden)]
pub fn rechecksum(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let sections = (u32_at(bytes, SECTION_COUNT_OFFSET) as usize).min(MAX_SECTIONS);
    for i in 0..sections {
        let entry = SECTIONS_OFFSET + i * SECTION_ENTRY_LEN;
        let (offset, len) = (
            u64_at(bytes, entry) as usize,
            u64_at(bytes, entry + 8) as usize,
        );
        if let Some(section) = offset
            .checked_add(len)
            .and_then(|end| bytes.get(offset..end))
        {
            let crc = crc32fast::hash(section);
            bytes[entry + 16..entry + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
    bytes[HEADER_CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

fn corrupt(path: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Checks the header and every section's bounds and checksum; gives the header and each
/// section's byte range, as many sections as the file's version has.
fn read_frame(bytes: &[u8], path: &Path) -> Result<(Header, Vec<Range<usize>>), StoreError> {
    if bytes.len() < HEADER_LEN || &bytes[..VERSION_OFFSET] != MAGIC {
        return Err(corrupt(path, "not a bucket file (bad magic or too short)"));
    }
    if crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]) != u32_at(bytes, HEADER_CRC_OFFSET) {
        return Err(corrupt(path, "header checksum mismatch"));
    }
    let version = u32_at(bytes, VERSION_OFFSET);
    let expected_sections = match version {
        v1::VERSION => v1::SECTION_COUNT,
        v2::VERSION => v2::SECTION_COUNT,
        _ => {
            return Err(corrupt(
                path,
                format!("format version {version}, this build reads 1 and 2"),
            ))
        }
    };
    let class = MailClass::from_byte(bytes[CLASS_OFFSET])
        .ok_or_else(|| corrupt(path, format!("class byte {}", bytes[CLASS_OFFSET])))?;
    let kind = match bytes[KIND_OFFSET] {
        0 => BucketKind::Base,
        1 => BucketKind::Delta,
        other => return Err(corrupt(path, format!("kind byte {other}"))),
    };
    let header = Header {
        version,
        class,
        kind,
        day: u64_at(bytes, DAY_OFFSET) as i64,
        scan_count: u64_at(bytes, SCAN_COUNT_OFFSET),
        piece_count: usize::try_from(u64_at(bytes, PIECE_COUNT_OFFSET))
            .map_err(|_| corrupt(path, "piece count"))?,
    };
    if u32_at(bytes, SECTION_COUNT_OFFSET) as usize != expected_sections {
        return Err(corrupt(path, "wrong number of sections"));
    }
    let mut sections = Vec::with_capacity(expected_sections);
    for i in 0..expected_sections {
        let entry = SECTIONS_OFFSET + i * SECTION_ENTRY_LEN;
        let (offset, len) = (
            u64_at(bytes, entry) as usize,
            u64_at(bytes, entry + 8) as usize,
        );
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= bytes.len() && offset >= HEADER_LEN);
        let Some(end) = end else {
            return Err(corrupt(path, format!("section {i} lies outside the file")));
        };
        if crc32fast::hash(&bytes[offset..end]) != u32_at(bytes, entry + 16) {
            return Err(corrupt(path, format!("section {i} checksum mismatch")));
        }
        sections.push(offset..end);
    }
    Ok((header, sections))
}

/// The small tables every version shares: event codes, facilities and machine names, which
/// scans refer to by index.
struct Tables {
    codes: Vec<EventCode>,
    facilities: Vec<(Zip, Arc<str>)>,
    machines: Vec<Arc<str>>,
}

impl Tables {
    fn read(
        codes: &[u8],
        facilities: &[u8],
        machines: &[u8],
        path: &Path,
    ) -> Result<Tables, StoreError> {
        if !codes.len().is_multiple_of(4) {
            return Err(corrupt(path, "code table length"));
        }
        let codes = codes
            .chunks_exact(4)
            .map(|c| EventCode::from_bytes([c[0], c[1], c[2]]))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt(path, "bad event code"))?;
        let facilities = read_strings(facilities, true, path)?;
        let machines = read_strings(machines, false, path)?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        Ok(Tables {
            codes,
            facilities,
            machines,
        })
    }

    /// Whether a scan's indexes all point into the tables.
    fn admits(&self, fields: &ScanFields) -> bool {
        (fields.facility as usize) < self.facilities.len()
            && usize::from(fields.code & ((1 << HANDLING_SHIFT) - 1)) < self.codes.len()
            && usize::from(fields.machine) < self.machines.len()
    }
}

/// The scans of one piece after another: runs of equal barcodes in bucket order.
fn pieces_of(scans: &[ScanEvent]) -> impl Iterator<Item = &[ScanEvent]> {
    scans.chunk_by(|a, b| a.barcode == b.barcode)
}

/// The writer's side of [`Tables`]: each distinct code, facility and machine gets the next
/// index as it is first met.
#[derive(Default)]
struct TableBuilder {
    codes: Vec<EventCode>,
    code_index: hashbrown::HashMap<EventCode, u16>,
    facilities: Vec<(Zip, u32)>,
    facility_index: hashbrown::HashMap<(Zip, u32), u32>,
    machines: Vec<u32>,
    machine_index: hashbrown::HashMap<u32, u16>,
}

impl TableBuilder {
    fn new() -> TableBuilder {
        // Machine 0 is the empty name (symbol 0), which scans without a machine use.
        TableBuilder {
            machines: vec![0],
            machine_index: [(0, 0)].into_iter().collect(),
            ..TableBuilder::default()
        }
    }

    /// A scan of bucket day `day` as table indexes (handling event type included) and its
    /// milliseconds into the day; an error if the scan is not of that day or the tables are
    /// full.
    fn fields(&mut self, scan: &ScanEvent, day: i64) -> Result<ScanFields, StoreError> {
        let offset_ms = scan.time_ms - day * DAY_MS;
        if !(0..DAY_MS).contains(&offset_ms) {
            return Err(StoreError::Invariant(format!(
                "scan at {} is outside bucket day {day}",
                scan.time_ms
            )));
        }
        let code = *self.code_index.entry(scan.code).or_insert_with(|| {
            self.codes.push(scan.code);
            self.codes.len() as u16 - 1
        });
        let facility = *self
            .facility_index
            .entry((scan.facility_zip, scan.facility))
            .or_insert_with(|| {
                self.facilities.push((scan.facility_zip, scan.facility));
                self.facilities.len() as u32 - 1
            });
        let next_machine = self.machines.len();
        let machine = *self.machine_index.entry(scan.machine).or_insert_with(|| {
            self.machines.push(scan.machine);
            next_machine as u16
        });
        if self.codes.len() >= 1 << HANDLING_SHIFT || self.machines.len() > usize::from(u16::MAX) {
            return Err(StoreError::Invariant(format!(
                "bucket day {day} has too many distinct codes or machines"
            )));
        }
        Ok(ScanFields {
            offset_ms: offset_ms as u32,
            facility,
            code: code | (scan.handling as u16) << HANDLING_SHIFT,
            machine,
        })
    }

    /// The code, facility and machine sections.
    fn sections(&self, symbols: &SymbolTable) -> [Vec<u8>; 3] {
        let codes = self
            .codes
            .iter()
            .flat_map(|c| {
                let [a, b, c] = c.to_bytes();
                [a, b, c, 0]
            })
            .collect();
        let mut facilities = (self.facilities.len() as u32).to_le_bytes().to_vec();
        for (zip, symbol) in &self.facilities {
            let text = symbols.get(*symbol).as_bytes();
            facilities.extend_from_slice(&zip.to_bits().to_le_bytes());
            facilities.extend_from_slice(&(text.len() as u32).to_le_bytes());
            facilities.extend_from_slice(text);
        }
        let mut machines = (self.machines.len() as u32).to_le_bytes().to_vec();
        for &symbol in &self.machines {
            let text = symbols.get(symbol);
            machines.extend_from_slice(&(text.len() as u32).to_le_bytes());
            machines.extend_from_slice(text.as_bytes());
        }
        [codes, facilities, machines]
    }
}

fn read_strings(
    bytes: &[u8],
    with_zip: bool,
    path: &Path,
) -> Result<Vec<(Zip, Arc<str>)>, StoreError> {
    let bad = |what: &str| corrupt(path, format!("string table: {what}"));
    let count = bytes
        .get(..4)
        .map(|b| u32_at(b, 0))
        .ok_or_else(|| bad("truncated"))? as usize;
    let mut at = 4;
    let mut out = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        let zip = if with_zip {
            let bits = bytes
                .get(at..at + 8)
                .map(|b| u64_at(b, 0))
                .ok_or_else(|| bad("truncated"))?;
            at += 8;
            Zip::from_bits(bits).ok_or_else(|| bad("bad ZIP"))?
        } else {
            Zip::NONE
        };
        let len = bytes
            .get(at..at + 4)
            .map(|b| u32_at(b, 0))
            .ok_or_else(|| bad("truncated"))? as usize;
        at += 4;
        let text = bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| bad("truncated"))?;
        at += len;
        out.push((
            zip,
            Arc::from(std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?),
        ));
    }
    Ok(out)
}

/// One scan as a bucket holds it: milliseconds into the day and indexes into the [`Tables`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ScanFields {
    offset_ms: u32,
    facility: u32,
    /// Code index, handling event type in the top two bits.
    code: u16,
    machine: u16,
}

/// One piece as a bucket holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PieceEntry {
    key: u128,
    /// The piece's routing ZIP, or `None` when it is the one the key implies.
    routing: Option<Zip>,
    /// Its scans.
    scans: usize,
    /// Where the layout finds its first scan (v1: its number; v2: its bit in the pieces
    /// section).
    scan_at: usize,
}

/// One scan as the store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScan {
    /// The piece.
    pub barcode: BarcodeKey,
    /// Mail or package.
    pub class: MailClass,
    /// Scan instant, UTC milliseconds.
    pub time_ms: i64,
    /// The piece's routing ZIP.
    pub routing: Zip,
    /// Facility ZIP.
    pub facility_zip: Zip,
    /// Event code.
    pub code: EventCode,
    /// Physical, assumed or logical.
    pub handling: HandlingEventType,
    /// Facility name, city and state joined by U+001F (see [`StoredScan::facility`]).
    pub facility_text: Arc<str>,
    /// Machine name (empty when not given).
    pub machine: Arc<str>,
}

impl StoredScan {
    /// The facility's name, city and state.
    pub fn facility(&self) -> imbtrack_feed::Facility<'_> {
        let mut parts = self.facility_text.split('\u{1f}');
        imbtrack_feed::Facility {
            name: parts.next().unwrap_or(""),
            city: parts.next().unwrap_or(""),
            state: parts.next().unwrap_or(""),
        }
    }
}

/// How a version lays out its pieces, scans and indexes.
enum Layout {
    V1(v1::Layout),
    V2(v2::Layout),
}

impl Layout {
    fn find(&self, map: &[u8], key: u128) -> Option<PieceEntry> {
        match self {
            Layout::V1(l) => l.find(map, key),
            Layout::V2(l) => l.find(map, key),
        }
    }

    /// Calls `f` with each of `pieces` (ascending piece numbers) that the bucket holds.
    fn visit(&self, map: &[u8], pieces: &[usize], f: &mut dyn FnMut(usize, &PieceEntry)) {
        match self {
            Layout::V1(l) => l.visit(map, pieces, f),
            Layout::V2(l) => l.visit(map, pieces, f),
        }
    }

    /// Scan `j` of `piece`.
    fn scan(&self, map: &[u8], piece: &PieceEntry, j: usize) -> Option<ScanFields> {
        match self {
            Layout::V1(l) => l.scan(map, piece, j),
            Layout::V2(l) => l.scan(map, piece, j),
        }
    }

    /// Piece numbers whose routing key is in `range` (see [`routing_key_matches`]).
    fn pieces_by_routing(&self, map: &[u8], range: &Range<u64>, out: &mut Vec<usize>) {
        match self {
            Layout::V1(l) => l.pieces_by_routing(map, range, out),
            Layout::V2(l) => l.pieces_by_routing(map, range, out),
        }
    }

    fn pieces_by_mailer(&self, map: &[u8], mailer_id: u32, out: &mut Vec<usize>) {
        match self {
            Layout::V1(l) => l.pieces_by_mailer(map, mailer_id, out),
            Layout::V2(l) => l.pieces_by_mailer(map, mailer_id, out),
        }
    }
}

/// A sealed bucket, mapped read-only and checked at open.
pub struct SealedBucket {
    dir: PathBuf,
    map: Mmap,
    header: Header,
    tables: Tables,
    bloom: Range<usize>,
    bloom_blocks: usize,
    layout: Layout,
}

impl std::fmt::Debug for SealedBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedBucket(v{} {} {:?} day {} {} scans)",
            self.header.version,
            self.header.class.as_str(),
            self.header.kind,
            self.header.day,
            self.header.scan_count
        )
    }
}

impl SealedBucket {
    /// Maps `dir/scans.bin` and checks its header, every section's length and checksum, and the
    /// small tables. Any fault is [`StoreError::Corrupt`], naming the file.
    pub fn open(dir: &Path) -> Result<SealedBucket, StoreError> {
        let path = dir.join(BUCKET_FILE);
        let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
        // SAFETY: sealed bucket files are never modified after their directory is renamed into
        // place; they are only removed, by renaming the directory away first. A process that
        // edits them behind the store's back breaks that contract (and may cause SIGBUS).
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StoreError::io(&path, e))?;
        let (header, sections) = read_frame(&map, &path)?;
        let (layout, tables, bloom) = match header.version {
            v1::VERSION => {
                let (layout, tables, bloom) = v1::Layout::open(&map, &header, &sections, &path)?;
                (Layout::V1(layout), tables, bloom)
            }
            _ => {
                let (layout, tables, bloom) = v2::Layout::open(&map, &header, &sections, &path)?;
                (Layout::V2(layout), tables, bloom)
            }
        };
        if bloom.is_empty() || bloom.len() % BLOOM_BLOCK_BYTES != 0 {
            return Err(corrupt(&path, "Bloom filter length"));
        }
        Ok(SealedBucket {
            dir: dir.to_path_buf(),
            bloom_blocks: bloom.len() / BLOOM_BLOCK_BYTES,
            bloom,
            header,
            tables,
            layout,
            map,
        })
    }

    /// The directory holding the bucket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format version of the file.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Mail or package.
    pub fn class(&self) -> MailClass {
        self.header.class
    }

    /// Base or delta.
    pub fn kind(&self) -> BucketKind {
        self.header.kind
    }

    /// The UTC day, in days since the epoch.
    pub fn day(&self) -> i64 {
        self.header.day
    }

    /// Scans held.
    pub fn scan_count(&self) -> u64 {
        self.header.scan_count
    }

    /// Pieces held.
    pub fn piece_count(&self) -> usize {
        self.header.piece_count
    }

    /// Bytes of the bucket file.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    fn bloom_block(&self, probe: &BloomProbe) -> &[u8] {
        &self.map[self.bloom.clone()][probe.block(self.bloom_blocks) * BLOOM_BLOCK_BYTES..]
            [..BLOOM_BLOCK_BYTES]
    }

    /// Starts loading the filter block [`SealedBucket::may_contain`] reads.
    pub fn prefetch_filter(&self, probe: &BloomProbe) {
        prefetch_lines(self.bloom_block(probe));
    }

    /// Whether the filter admits the probed key (false means certainly absent).
    pub fn may_contain(&self, probe: &BloomProbe) -> bool {
        let block = self.bloom_block(probe);
        block
            .chunks_exact(8)
            .zip(probe.mask)
            .fold(true, |all, (word, mask)| {
                all & (u64::from_le_bytes(word.try_into().expect("8 bytes")) & mask == mask)
            })
    }

    /// Appends the piece's scans to `out`; `probe` is `BloomProbe::new(key)`.
    pub fn scans_of(&self, key: BarcodeKey, probe: &BloomProbe, out: &mut Vec<StoredScan>) {
        if self.may_contain(probe) {
            self.scans_of_present(key, out);
        }
    }

    /// Starts loading the part of the piece index a lookup of `key` searches first, without
    /// waiting for it.
    pub fn prefetch_index(&self, key: BarcodeKey) {
        if let Layout::V2(layout) = &self.layout {
            layout.prefetch_index(key.as_u128());
        }
    }

    /// Starts loading the piece block a lookup of `key` reads, without waiting for it (best
    /// after [`SealedBucket::prefetch_index`] had time to load).
    pub fn prefetch(&self, key: BarcodeKey) {
        if let Layout::V2(layout) = &self.layout {
            layout.prefetch(&self.map, key.as_u128());
        }
    }

    /// [`SealedBucket::scans_of`] once [`SealedBucket::may_contain`] said yes.
    pub fn scans_of_present(&self, key: BarcodeKey, out: &mut Vec<StoredScan>) {
        if let Some(entry) = self.layout.find(&self.map, key.as_u128()) {
            self.push_piece(&entry, key, out);
        }
    }

    /// Appends the scans of piece number `piece` (a position [`SealedBucket::pieces_by_zip`] or
    /// [`SealedBucket::pieces_by_mailer`] gave) if its key is `key`, without searching for it.
    pub fn scans_at(&self, piece: usize, key: BarcodeKey, out: &mut Vec<StoredScan>) {
        self.layout.visit(&self.map, &[piece], &mut |_, entry| {
            if entry.key == key.as_u128() {
                self.push_piece(entry, key, out);
            }
        });
    }

    /// Appends the scans of a piece whose key is `key`. Their table indexes are in range: open
    /// checked every v1 scan's, and every v2 site's (a v2 scan only names a site).
    fn push_piece(&self, entry: &PieceEntry, key: BarcodeKey, out: &mut Vec<StoredScan>) {
        let routing = entry.routing.unwrap_or_else(|| Zip::implied_by(key));
        let day_start = self.header.day * DAY_MS;
        for j in 0..entry.scans {
            let Some(fields) = self.layout.scan(&self.map, entry, j) else {
                break;
            };
            let (facility_zip, facility_text) = &self.tables.facilities[fields.facility as usize];
            out.push(StoredScan {
                barcode: key,
                class: self.header.class,
                time_ms: day_start + i64::from(fields.offset_ms),
                routing,
                facility_zip: *facility_zip,
                code: self.tables.codes[usize::from(fields.code & ((1 << HANDLING_SHIFT) - 1))],
                handling: HandlingEventType::from_byte((fields.code >> HANDLING_SHIFT) as u8)
                    .unwrap_or(HandlingEventType::Unknown),
                facility_text: facility_text.clone(),
                machine: self.tables.machines[usize::from(fields.machine)].clone(),
            });
        }
    }

    /// Keys and positions of these pieces (any order, repeats allowed).
    fn keyed(&self, mut pieces: Vec<usize>, out: &mut Vec<(BarcodeKey, usize)>) {
        pieces.sort_unstable();
        pieces.dedup();
        self.layout.visit(&self.map, &pieces, &mut |piece, entry| {
            if let Ok(key) = BarcodeKey::from_u128(entry.key) {
                out.push((key, piece));
            }
        });
    }

    /// Keys and positions of pieces whose routing ZIP starts with `zip` (5, 9 or 11 digits).
    pub fn pieces_by_zip(&self, zip: Zip, out: &mut Vec<(BarcodeKey, usize)>) {
        let mut pieces = Vec::new();
        self.layout
            .pieces_by_routing(&self.map, &routing_key_range(zip), &mut pieces);
        self.keyed(pieces, out);
    }

    /// Keys and positions of pieces with this Mailer ID.
    pub fn pieces_by_mailer(&self, mailer_id: u32, out: &mut Vec<(BarcodeKey, usize)>) {
        let mut pieces = Vec::new();
        self.layout
            .pieces_by_mailer(&self.map, mailer_id, &mut pieces);
        self.keyed(pieces, out);
    }

    /// Every scan, as events with symbols interned into `symbols` (to merge or rewrite buckets).
    pub(crate) fn all_events(&self, symbols: &mut SymbolTable, out: &mut Vec<ScanEvent>) {
        let all: Vec<usize> = (0..self.header.piece_count).collect();
        let mut found = Vec::new();
        self.layout.visit(&self.map, &all, &mut |_, entry| {
            let Ok(key) = BarcodeKey::from_u128(entry.key) else {
                return;
            };
            found.clear();
            self.push_piece(entry, key, &mut found);
            out.extend(found.iter().map(|s| ScanEvent {
                barcode: s.barcode,
                time_ms: s.time_ms,
                routing: s.routing,
                facility_zip: s.facility_zip,
                facility: symbols.intern(&s.facility_text),
                machine: symbols.intern(&s.machine),
                code: s.code,
                class: s.class,
                handling: s.handling,
            }));
        });
    }
}

/// The first index in `0..count` for which `before` is false (`before` must be monotone).
fn partition_point(count: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests;
