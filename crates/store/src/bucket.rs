//! Sealed buckets: one immutable, checksummed file per (class, UTC day), memory-mapped and read
//! in place. The byte layout is in `crates/store/FORMAT.md`; little-endian throughout.
//!
//! ```text
//! [header 512 B: magic, version, class, kind, day, counts, section table, header CRC]
//! [pieces][scans][zip keys][zip pieces][mailer ids][mailer pieces][bloom][codes][facilities][machines]
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{EventCode, HandlingEventType, MailClass, ScanEvent, SymbolTable, Zip};
use memmap2::Mmap;

use crate::retention::DAY_MS;
use crate::StoreError;

pub(crate) const MAGIC: &[u8; 8] = b"IMBTBKT1";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 512;
/// The file inside each bucket directory.
pub(crate) const BUCKET_FILE: &str = "scans.bin";

// Header offsets, each after the previous field.
const VERSION_OFFSET: usize = 8;
const CLASS_OFFSET: usize = VERSION_OFFSET + 4;
const KIND_OFFSET: usize = CLASS_OFFSET + 1;
const DAY_OFFSET: usize = 16;
const SCAN_COUNT_OFFSET: usize = DAY_OFFSET + 8;
const PIECE_COUNT_OFFSET: usize = SCAN_COUNT_OFFSET + 8;
const SECTION_COUNT_OFFSET: usize = PIECE_COUNT_OFFSET + 8;
const SECTIONS_OFFSET: usize = SECTION_COUNT_OFFSET + 8;
/// Each section: offset u64, length u64, CRC-32 u32, 4 bytes unused.
const SECTION_ENTRY_LEN: usize = 24;
const HEADER_CRC_OFFSET: usize = HEADER_LEN - 4;

/// The sections of a bucket file, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Per piece, sorted by key: key u128, routing ZIP bits u64, first scan u32, scan count u32.
    Pieces,
    /// Per scan, grouped by piece, by time within a piece: ms into the day u32, facility u32,
    /// code index u16 (handling event type in the top 2 bits), machine u16.
    Scans,
    /// Sorted routing keys (see [`routing_key`]) of pieces with a routing ZIP, u64 each.
    ZipKeys,
    /// The piece index of each routing key, u32 each.
    ZipPieces,
    /// Sorted Mailer IDs of pieces that have one, u32 each.
    MailerIds,
    /// The piece index of each Mailer ID, u32 each.
    MailerPieces,
    /// Blocked Bloom filter over piece keys: 512-bit blocks of 8 u64 words.
    Bloom,
    /// Event codes, 4 bytes each (3 bytes of code, 1 unused).
    Codes,
    /// Facilities: count u32, then each: ZIP bits u64, length u32, UTF-8 name/city/state.
    Facilities,
    /// Machine names: count u32, then each: length u32, UTF-8.
    Machines,
    /// Every 64th piece key, u128 each: a lookup searches these (small, cache-friendly) first,
    /// then 64 pieces.
    Fences,
}

const SECTIONS: [Section; 11] = [
    Section::Pieces,
    Section::Scans,
    Section::ZipKeys,
    Section::ZipPieces,
    Section::MailerIds,
    Section::MailerPieces,
    Section::Bloom,
    Section::Codes,
    Section::Facilities,
    Section::Machines,
    Section::Fences,
];

/// Pieces between two fence keys.
const FENCE_STRIDE: usize = 64;

const PIECE_LEN: usize = 32;
const SCAN_LEN: usize = 12;
const BLOOM_BLOCK_WORDS: usize = 8;
const BLOOM_BITS_PER_PIECE: usize = 10;
const HANDLING_SHIFT: u16 = 14;

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
pub(crate) fn routing_key_range(query: Zip) -> std::ops::Range<u64> {
    let (low, span, min_code) = match query.len() {
        5 => (query.value() * 1_000_000, 1_000_000, 1),
        9 => (query.value() * 100, 100, 2),
        _ => (query.value(), 1, 3),
    };
    low * 4 + min_code..(low + span) * 4
}

/// The Mailer ID a piece is filed under, if its barcode carries one.
pub(crate) fn mailer_id(key: BarcodeKey) -> Option<u32> {
    key.to_barcode().mailer_id()
}

fn bloom_hash(key: BarcodeKey) -> u64 {
    let raw = key.as_u128();
    let mut h = (raw as u64) ^ ((raw >> 64) as u64).rotate_left(29);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
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

/// Builds a bucket file from the scans of one (class, day), sorted and free of duplicates.
pub(crate) fn encode(
    class: MailClass,
    kind: BucketKind,
    day: i64,
    scans: &[ScanEvent],
    symbols: &SymbolTable,
) -> Result<Vec<u8>, StoreError> {
    debug_assert!(scans
        .windows(2)
        .all(|w| (w[0].barcode, w[0].time_ms) <= (w[1].barcode, w[1].time_ms)));
    let day_start = day * DAY_MS;
    let mut codes: Vec<EventCode> = Vec::new();
    let mut code_index = hashbrown::HashMap::new();
    let mut facilities: Vec<(Zip, u32)> = Vec::new();
    let mut facility_index = hashbrown::HashMap::new();
    let mut machines: Vec<u32> = vec![0];
    let mut machine_index: hashbrown::HashMap<u32, u16> = [(0u32, 0u16)].into_iter().collect();

    let mut pieces = Vec::new();
    let mut scan_bytes = Vec::with_capacity(scans.len() * SCAN_LEN);
    let mut zips: Vec<(u64, u32)> = Vec::new();
    let mut mailers: Vec<(u32, u32)> = Vec::new();
    let mut start = 0;
    while start < scans.len() {
        let key = scans[start].barcode;
        let end = start
            + scans[start..]
                .iter()
                .take_while(|s| s.barcode == key)
                .count();
        let piece = (pieces.len() / PIECE_LEN) as u32;
        let routing = scans[start].routing;
        pieces.extend_from_slice(&key.as_u128().to_le_bytes());
        pieces.extend_from_slice(&routing.to_bits().to_le_bytes());
        pieces.extend_from_slice(&(start as u32).to_le_bytes());
        pieces.extend_from_slice(&((end - start) as u32).to_le_bytes());
        if !routing.is_empty() {
            zips.push((routing_key(routing), piece));
        }
        if let Some(mid) = mailer_id(key) {
            mailers.push((mid, piece));
        }
        for scan in &scans[start..end] {
            let offset = scan.time_ms - day_start;
            if !(0..DAY_MS).contains(&offset) {
                return Err(StoreError::Invariant(format!(
                    "scan at {} is outside bucket day {day}",
                    scan.time_ms
                )));
            }
            let code = *code_index.entry(scan.code).or_insert_with(|| {
                codes.push(scan.code);
                codes.len() as u16 - 1
            });
            let facility = *facility_index
                .entry((scan.facility_zip, scan.facility))
                .or_insert_with(|| {
                    facilities.push((scan.facility_zip, scan.facility));
                    facilities.len() as u32 - 1
                });
            let next_machine = machines.len();
            let machine = *machine_index.entry(scan.machine).or_insert_with(|| {
                machines.push(scan.machine);
                next_machine as u16
            });
            if codes.len() >= 1 << HANDLING_SHIFT || machines.len() > usize::from(u16::MAX) {
                return Err(StoreError::Invariant(format!(
                    "bucket day {day} has too many distinct codes or machines"
                )));
            }
            scan_bytes.extend_from_slice(&(offset as u32).to_le_bytes());
            scan_bytes.extend_from_slice(&facility.to_le_bytes());
            scan_bytes.extend_from_slice(
                &(code | (scan.handling as u16) << HANDLING_SHIFT).to_le_bytes(),
            );
            scan_bytes.extend_from_slice(&machine.to_le_bytes());
        }
        start = end;
    }
    let piece_count = pieces.len() / PIECE_LEN;
    zips.sort_unstable();
    mailers.sort_unstable();

    let blocks = (piece_count * BLOOM_BITS_PER_PIECE).div_ceil(512).max(1);
    let mut bloom = vec![0u64; blocks * BLOOM_BLOCK_WORDS];
    for i in 0..piece_count {
        let raw = u128::from_le_bytes(
            pieces[i * PIECE_LEN..i * PIECE_LEN + 16]
                .try_into()
                .expect("16 bytes"),
        );
        let key = BarcodeKey::from_u128(raw).map_err(|e| StoreError::Invariant(e.to_string()))?;
        let probe = BloomProbe::new(key);
        let block = probe.block(blocks);
        for (word, mask) in bloom[block * BLOOM_BLOCK_WORDS..][..BLOOM_BLOCK_WORDS]
            .iter_mut()
            .zip(probe.mask)
        {
            *word |= mask;
        }
    }

    let mut sections: Vec<Vec<u8>> = Vec::with_capacity(SECTIONS.len());
    for section in SECTIONS {
        sections.push(match section {
            Section::Pieces => std::mem::take(&mut pieces),
            Section::Scans => std::mem::take(&mut scan_bytes),
            Section::ZipKeys => zips.iter().flat_map(|(k, _)| k.to_le_bytes()).collect(),
            Section::ZipPieces => zips.iter().flat_map(|(_, p)| p.to_le_bytes()).collect(),
            Section::MailerIds => mailers.iter().flat_map(|(m, _)| m.to_le_bytes()).collect(),
            Section::MailerPieces => mailers.iter().flat_map(|(_, p)| p.to_le_bytes()).collect(),
            Section::Bloom => bloom.iter().flat_map(|w| w.to_le_bytes()).collect(),
            Section::Codes => codes
                .iter()
                .flat_map(|c| {
                    let [a, b, c] = c.to_bytes();
                    [a, b, c, 0]
                })
                .collect(),
            Section::Facilities => {
                let mut out = (facilities.len() as u32).to_le_bytes().to_vec();
                for (zip, symbol) in &facilities {
                    let text = symbols.get(*symbol).as_bytes();
                    out.extend_from_slice(&zip.to_bits().to_le_bytes());
                    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    out.extend_from_slice(text);
                }
                out
            }
            Section::Fences => (0..piece_count)
                .step_by(FENCE_STRIDE)
                .flat_map(|i| {
                    let key: [u8; 16] = sections[Section::Pieces as usize]
                        [i * PIECE_LEN..i * PIECE_LEN + 16]
                        .try_into()
                        .expect("16 bytes");
                    key
                })
                .collect(),
            Section::Machines => {
                let mut out = (machines.len() as u32).to_le_bytes().to_vec();
                for symbol in &machines {
                    let text = symbols.get(*symbol).as_bytes();
                    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                    out.extend_from_slice(text);
                }
                out
            }
        });
    }

    let mut file = vec![0u8; HEADER_LEN];
    file[..8].copy_from_slice(MAGIC);
    file[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&VERSION.to_le_bytes());
    file[CLASS_OFFSET] = class as u8;
    file[KIND_OFFSET] = kind as u8;
    file[DAY_OFFSET..DAY_OFFSET + 8].copy_from_slice(&day.to_le_bytes());
    file[SCAN_COUNT_OFFSET..SCAN_COUNT_OFFSET + 8]
        .copy_from_slice(&(scans.len() as u64).to_le_bytes());
    file[PIECE_COUNT_OFFSET..PIECE_COUNT_OFFSET + 8]
        .copy_from_slice(&(piece_count as u64).to_le_bytes());
    file[SECTION_COUNT_OFFSET..SECTION_COUNT_OFFSET + 4]
        .copy_from_slice(&(SECTIONS.len() as u32).to_le_bytes());
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
    Ok(file)
}

/// Recomputes every section checksum and the header checksum of a bucket file in place, as far
/// as its section table allows. For tests and fuzzing: a file damaged and then re-checksummed
/// passes the CRC checks, which lets them exercise the structural checks behind.
#[doc(hidden)]
pub fn rechecksum(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    for i in 0..SECTIONS.len() {
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

fn handling_of(bits: u16) -> HandlingEventType {
    HandlingEventType::from_byte(bits as u8).unwrap_or(HandlingEventType::Unknown)
}

/// A sealed bucket, mapped read-only and validated at open.
pub struct SealedBucket {
    dir: PathBuf,
    map: Mmap,
    class: MailClass,
    kind: BucketKind,
    day: i64,
    scan_count: u64,
    piece_count: usize,
    sections: [(usize, usize); SECTIONS.len()],
    codes: Vec<EventCode>,
    facilities: Vec<(Zip, Arc<str>)>,
    machines: Vec<Arc<str>>,
    bloom_blocks: usize,
}

impl std::fmt::Debug for SealedBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedBucket({} {:?} day {} {} scans)",
            self.class.as_str(),
            self.kind,
            self.day,
            self.scan_count
        )
    }
}

fn corrupt(path: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
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
        let text = bytes.get(at..at + len).ok_or_else(|| bad("truncated"))?;
        at += len;
        out.push((
            zip,
            Arc::from(std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?),
        ));
    }
    Ok(out)
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
        let bytes: &[u8] = &map;
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(corrupt(&path, "not a bucket file (bad magic or too short)"));
        }
        if crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]) != u32_at(bytes, HEADER_CRC_OFFSET) {
            return Err(corrupt(&path, "header checksum mismatch"));
        }
        let version = u32_at(bytes, VERSION_OFFSET);
        if version != VERSION {
            return Err(corrupt(
                &path,
                format!("format version {version}, this build reads {VERSION}"),
            ));
        }
        let class = MailClass::from_byte(bytes[CLASS_OFFSET])
            .ok_or_else(|| corrupt(&path, format!("class byte {}", bytes[CLASS_OFFSET])))?;
        let kind = match bytes[KIND_OFFSET] {
            0 => BucketKind::Base,
            1 => BucketKind::Delta,
            other => return Err(corrupt(&path, format!("kind byte {other}"))),
        };
        let day = u64_at(bytes, DAY_OFFSET) as i64;
        let scan_count = u64_at(bytes, SCAN_COUNT_OFFSET);
        let piece_count = u64_at(bytes, PIECE_COUNT_OFFSET) as usize;
        if u32_at(bytes, SECTION_COUNT_OFFSET) as usize != SECTIONS.len() {
            return Err(corrupt(&path, "wrong number of sections"));
        }
        let mut sections = [(0usize, 0usize); SECTIONS.len()];
        for (i, slot) in sections.iter_mut().enumerate() {
            let entry = SECTIONS_OFFSET + i * SECTION_ENTRY_LEN;
            let (offset, len) = (
                u64_at(bytes, entry) as usize,
                u64_at(bytes, entry + 8) as usize,
            );
            let end = offset
                .checked_add(len)
                .filter(|&end| end <= bytes.len() && offset >= HEADER_LEN);
            let Some(end) = end else {
                return Err(corrupt(
                    &path,
                    format!("section {:?} lies outside the file", SECTIONS[i]),
                ));
            };
            if crc32fast::hash(&bytes[offset..end]) != u32_at(bytes, entry + 16) {
                return Err(corrupt(
                    &path,
                    format!("section {:?} checksum mismatch", SECTIONS[i]),
                ));
            }
            *slot = (offset, end);
        }
        let len = |s: Section| sections[s as usize].1 - sections[s as usize].0;
        let sizes_agree = len(Section::Pieces) == piece_count * PIECE_LEN
            && len(Section::Scans) as u64 == scan_count * SCAN_LEN as u64
            && len(Section::ZipKeys) == len(Section::ZipPieces) * 2
            && len(Section::MailerIds) == len(Section::MailerPieces)
            && len(Section::Bloom) % (BLOOM_BLOCK_WORDS * 8) == 0
            && len(Section::Bloom) > 0
            && len(Section::Codes) % 4 == 0
            && len(Section::Fences) == piece_count.div_ceil(FENCE_STRIDE) * 16;
        if !sizes_agree {
            return Err(corrupt(&path, "section sizes disagree with the counts"));
        }
        let section = |s: Section| &bytes[sections[s as usize].0..sections[s as usize].1];
        let codes = section(Section::Codes)
            .chunks_exact(4)
            .map(|c| EventCode::from_bytes([c[0], c[1], c[2]]))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt(&path, "bad event code"))?;
        let facilities = read_strings(section(Section::Facilities), true, &path)?;
        let machines: Vec<Arc<str>> = read_strings(section(Section::Machines), false, &path)?
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let bloom_blocks = len(Section::Bloom) / (BLOOM_BLOCK_WORDS * 8);
        let bucket = SealedBucket {
            dir: dir.to_path_buf(),
            class,
            kind,
            day,
            scan_count,
            piece_count,
            sections,
            codes,
            facilities,
            machines,
            bloom_blocks,
            map,
        };
        bucket.check_references(&path)?;
        Ok(bucket)
    }

    /// Every index a reader follows stays in bounds, so queries never need to check again.
    fn check_references(&self, path: &Path) -> Result<(), StoreError> {
        let pieces = self.section(Section::Pieces);
        let mut expected_first = 0u64;
        for i in 0..self.piece_count {
            let at = i * PIECE_LEN;
            let (first, count) = (
                u32_at(pieces, at + 24) as u64,
                u32_at(pieces, at + 28) as u64,
            );
            if first != expected_first || count == 0 {
                return Err(corrupt(
                    path,
                    format!("piece {i} does not cover the next scans"),
                ));
            }
            expected_first += count;
        }
        if expected_first != self.scan_count {
            return Err(corrupt(path, "pieces do not cover every scan"));
        }
        let scans = self.section(Section::Scans);
        for scan in scans.chunks_exact(SCAN_LEN) {
            let facility = u32_at(scan, 4) as usize;
            let code = u16::from_le_bytes([scan[8], scan[9]]) & ((1 << HANDLING_SHIFT) - 1);
            let machine = u16::from_le_bytes([scan[10], scan[11]]) as usize;
            if facility >= self.facilities.len()
                || usize::from(code) >= self.codes.len()
                || machine >= self.machines.len()
            {
                return Err(corrupt(path, "a scan refers past a table"));
            }
        }
        let in_range = |s: Section| {
            self.section(s)
                .chunks_exact(4)
                .all(|p| (u32_at(p, 0) as usize) < self.piece_count)
        };
        if !in_range(Section::ZipPieces) || !in_range(Section::MailerPieces) {
            return Err(corrupt(path, "an index refers past the pieces"));
        }
        Ok(())
    }

    fn section(&self, section: Section) -> &[u8] {
        let (start, end) = self.sections[section as usize];
        &self.map[start..end]
    }

    /// The directory holding the bucket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mail or package.
    pub fn class(&self) -> MailClass {
        self.class
    }

    /// Base or delta.
    pub fn kind(&self) -> BucketKind {
        self.kind
    }

    /// The UTC day, in days since the epoch.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// Scans held.
    pub fn scan_count(&self) -> u64 {
        self.scan_count
    }

    /// Pieces held.
    pub fn piece_count(&self) -> usize {
        self.piece_count
    }

    /// Bytes of the bucket file.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    fn key_at(&self, pieces: &[u8], i: usize) -> u128 {
        u128::from_le_bytes(
            pieces[i * PIECE_LEN..i * PIECE_LEN + 16]
                .try_into()
                .expect("16 bytes"),
        )
    }

    /// Whether the filter admits the probed key (false means certainly absent).
    pub fn may_contain(&self, probe: &BloomProbe) -> bool {
        let bloom = self.section(Section::Bloom);
        let block = &bloom[probe.block(self.bloom_blocks) * BLOOM_BLOCK_WORDS * 8..]
            [..BLOOM_BLOCK_WORDS * 8];
        block
            .chunks_exact(8)
            .zip(probe.mask)
            .fold(true, |all, (word, mask)| {
                all & (u64::from_le_bytes(word.try_into().expect("8 bytes")) & mask == mask)
            })
    }

    fn find_piece(&self, key: BarcodeKey) -> Option<usize> {
        let pieces = self.section(Section::Pieces);
        let fences = self.section(Section::Fences);
        let target = key.as_u128();
        let fence = |i: usize| {
            u128::from_le_bytes(fences[i * 16..i * 16 + 16].try_into().expect("16 bytes"))
        };
        let after = partition_point(fences.len() / 16, |i| fence(i) <= target);
        if after == 0 {
            return None;
        }
        let mut lo = (after - 1) * FENCE_STRIDE;
        let mut hi = (lo + FENCE_STRIDE).min(self.piece_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key_at(pieces, mid).cmp(&target) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Appends the piece's scans to `out`; `probe` is `BloomProbe::new(key)`.
    pub fn scans_of(&self, key: BarcodeKey, probe: &BloomProbe, out: &mut Vec<StoredScan>) {
        if !self.may_contain(probe) {
            return;
        }
        if let Some(piece) = self.find_piece(key) {
            self.push_piece(piece, key, out);
        }
    }

    /// Appends the scans of piece number `piece` (a position [`SealedBucket::pieces_by_zip`] or
    /// [`SealedBucket::pieces_by_mailer`] gave) if its key is `key`, without searching for it.
    pub fn scans_at(&self, piece: usize, key: BarcodeKey, out: &mut Vec<StoredScan>) {
        let pieces = self.section(Section::Pieces);
        if piece < self.piece_count && self.key_at(pieces, piece) == key.as_u128() {
            self.push_piece(piece, key, out);
        }
    }

    /// Appends the scans of piece number `piece`, whose key is `key`.
    fn push_piece(&self, piece: usize, key: BarcodeKey, out: &mut Vec<StoredScan>) {
        let pieces = self.section(Section::Pieces);
        let at = piece * PIECE_LEN;
        let routing = Zip::from_bits(u64_at(pieces, at + 16)).unwrap_or(Zip::NONE);
        let (first, count) = (
            u32_at(pieces, at + 24) as usize,
            u32_at(pieces, at + 28) as usize,
        );
        let scans = &self.section(Section::Scans)[first * SCAN_LEN..(first + count) * SCAN_LEN];
        let day_start = self.day * DAY_MS;
        for scan in scans.chunks_exact(SCAN_LEN) {
            let code_bits = u16::from_le_bytes([scan[8], scan[9]]);
            let (facility_zip, facility_text) = &self.facilities[u32_at(scan, 4) as usize];
            out.push(StoredScan {
                barcode: key,
                class: self.class,
                time_ms: day_start + i64::from(u32_at(scan, 0)),
                routing,
                facility_zip: *facility_zip,
                code: self.codes[usize::from(code_bits & ((1 << HANDLING_SHIFT) - 1))],
                handling: handling_of(code_bits >> HANDLING_SHIFT),
                facility_text: facility_text.clone(),
                machine: self.machines[usize::from(u16::from_le_bytes([scan[10], scan[11]]))]
                    .clone(),
            });
        }
    }

    /// Keys and positions of pieces whose routing ZIP starts with `zip` (5, 9 or 11 digits).
    pub fn pieces_by_zip(&self, zip: Zip, out: &mut Vec<(BarcodeKey, usize)>) {
        let keys = self.section(Section::ZipKeys);
        let count = keys.len() / 8;
        let range = routing_key_range(zip);
        let key = |i: usize| u64_at(keys, i * 8);
        let start = partition_point(count, |i| key(i) < range.start);
        let pieces = self.section(Section::Pieces);
        let piece_of = self.section(Section::ZipPieces);
        for i in start..count {
            let k = key(i);
            if k >= range.end {
                break;
            }
            // Longer routings only: a 5-digit routing does not answer a 9-digit query.
            if (k % 4) >= range.start % 4 {
                let piece = u32_at(piece_of, i * 4) as usize;
                if let Ok(key) = BarcodeKey::from_u128(self.key_at(pieces, piece)) {
                    out.push((key, piece));
                }
            }
        }
    }

    /// Keys and positions of pieces with this Mailer ID.
    pub fn pieces_by_mailer(&self, mailer_id: u32, out: &mut Vec<(BarcodeKey, usize)>) {
        let ids = self.section(Section::MailerIds);
        let count = ids.len() / 4;
        let start = partition_point(count, |i| u32_at(ids, i * 4) < mailer_id);
        let pieces = self.section(Section::Pieces);
        let piece_of = self.section(Section::MailerPieces);
        for i in (start..count).take_while(|&i| u32_at(ids, i * 4) == mailer_id) {
            let piece = u32_at(piece_of, i * 4) as usize;
            if let Ok(key) = BarcodeKey::from_u128(self.key_at(pieces, piece)) {
                out.push((key, piece));
            }
        }
    }

    /// Every scan, as events with symbols interned into `symbols` (to merge buckets).
    pub(crate) fn all_events(&self, symbols: &mut SymbolTable, out: &mut Vec<ScanEvent>) {
        let mut found = Vec::new();
        let pieces = self.section(Section::Pieces);
        for piece in 0..self.piece_count {
            found.clear();
            let Ok(key) = BarcodeKey::from_u128(self.key_at(pieces, piece)) else {
                continue;
            };
            self.push_piece(piece, key, &mut found);
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
        }
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
