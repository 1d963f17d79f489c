//! Format v2: pieces in blocks of 64 behind fence keys, each block holding fixed-width piece
//! records (key as an offset from the fence, scan offset) and then its pieces' scans as
//! fixed-width bit fields (time from the day's start, and a "site": one facility, event code,
//! handling type and machine combination from a per-bucket table), so a lookup touches one
//! fence group and one block; the ZIP index delta-coded in blocks; the Mailer ID index as runs
//! of pieces. Every read is checked, since a forged file can hold anything.

use std::ops::Range;
use std::path::Path;

use imbtrack_feed::{MailClass, ScanEvent, SymbolTable, Zip};

use super::codec::{
    bit_array_len, bits_for, get_bits, get_uint, get_varint, put_bits, put_uint, put_varint,
    BIT_PADDING, MAX_FIELD_BITS,
};
use super::{
    bloom_section, corrupt, frame, partition_point, pieces_of, prefetch_lines, routing_key,
    routing_key_matches, u128_at, u32_at, u64_at, BucketKind, Header, PieceEntry, ScanFields,
    TableBuilder, Tables, SECTIONS_OFFSET, SECTION_ENTRY_LEN,
};
use crate::StoreError;

pub(super) const VERSION: u32 = 2;
pub(super) const SECTION_COUNT: usize = 10;

// Section numbers, in file order (FORMAT.md describes each).
const BLOCKS: usize = 0;
const PIECES: usize = 1;
const ZIP_FENCES: usize = 2;
const ZIPS: usize = 3;
const MAILER_RUNS: usize = 4;
const BLOOM: usize = 5;
const CODES: usize = 6;
const FACILITIES: usize = 7;
const MACHINES: usize = 8;
const SITES: usize = 9;

// Header fields, after the section table.
const TIME_UNIT_OFFSET: usize = SECTIONS_OFFSET + SECTION_COUNT * SECTION_ENTRY_LEN;
const TIME_BITS_OFFSET: usize = TIME_UNIT_OFFSET + 4;
const SITE_BITS_OFFSET: usize = TIME_BITS_OFFSET + 1;
const PIECE_BYTES_OFFSET: usize = SITE_BITS_OFFSET + 1;
const FIELDS_END: usize = PIECE_BYTES_OFFSET + 2;

/// Pieces a block holds (the last may hold fewer).
const PIECES_PER_BLOCK: usize = 64;
/// A block table entry: the block's first key u128, its byte offset in the pieces section u32,
/// the number of its first scan u32.
const BLOCK_OFFSET_OFFSET: usize = 16;
const BLOCK_FIRST_SCAN_OFFSET: usize = BLOCK_OFFSET_OFFSET + 4;
const BLOCK_ENTRY_LEN: usize = BLOCK_FIRST_SCAN_OFFSET + 4;
/// A block's header: high bits u8, scan offset bits u8, routing bits u8, unused u8, explicit
/// routing bitmap u64.
const BLOCK_SCAN_BITS_OFFSET: usize = 1;
const BLOCK_ROUTING_BITS_OFFSET: usize = BLOCK_SCAN_BITS_OFFSET + 1;
const BLOCK_BITMAP_OFFSET: usize = BLOCK_ROUTING_BITS_OFFSET + 2;
const BLOCK_HEADER_LEN: usize = BLOCK_BITMAP_OFFSET + 8;
/// ZIP index entries a block holds (the last may hold fewer).
const ZIPS_PER_BLOCK: usize = 64;
/// A ZIP fence: the block's first routing key u64, byte offset in the ZIP section u32, unused u32.
const ZIP_FENCE_OFFSET_OFFSET: usize = 8;
const ZIP_FENCE_LEN: usize = ZIP_FENCE_OFFSET_OFFSET + 8;
/// A Mailer ID run: Mailer ID u32, first piece u32, piece count u32.
const RUN_FIRST_OFFSET: usize = 4;
const RUN_COUNT_OFFSET: usize = RUN_FIRST_OFFSET + 4;
const RUN_LEN: usize = RUN_COUNT_OFFSET + 4;
/// A site: facility index u32, code index u16 (handling type in the top two bits), machine u16.
const SITE_CODE_OFFSET: usize = 4;
const SITE_MACHINE_OFFSET: usize = SITE_CODE_OFFSET + 2;
const SITE_LEN: usize = SITE_MACHINE_OFFSET + 2;
/// A key is coded as its high part (key >> 37, as an offset from the block's first key's) and
/// its low 37 bits: an IMb's routing value is exactly the low 37 bits, which sorting does not
/// make small.
const KEY_LOW_BITS: u32 = 37;
const KEY_LOW_MASK: u128 = (1 << KEY_LOW_BITS) - 1;

/// A routing ZIP as one number: 0 for none, else the ZIP's number × 4 plus its length code
/// (1: 5 digits, 2: 9, 3: 11).
fn zip_word(zip: Zip) -> u64 {
    let code = match zip.len() {
        5 => 1,
        9 => 2,
        11 => 3,
        _ => return 0,
    };
    zip.value() * 4 + code
}

fn zip_from_word(word: u64) -> Option<Zip> {
    match word % 4 {
        _ if word == 0 => Some(Zip::NONE),
        1 => Zip::from_parts(word / 4, 5),
        2 => Zip::from_parts(word / 4, 9),
        3 => Zip::from_parts(word / 4, 11),
        _ => None,
    }
}

fn too_big(day: i64, what: &str) -> StoreError {
    StoreError::Invariant(format!(
        "bucket day {day}: {what} exceeds format v2's limits"
    ))
}

/// Bytes of `count` fields of `width` bits, without padding.
fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

/// `count` fields of `width` bits, packed (FORMAT.md: bit 0 of byte 0 first).
fn pack(values: impl ExactSizeIterator<Item = u128>, width: u32) -> Vec<u8> {
    let count = values.len();
    let mut packed = vec![0u8; bit_array_len(count, width)];
    for (i, value) in values.enumerate() {
        put_bits(&mut packed, i * width as usize, width, value);
    }
    packed.truncate(packed_len(count, width));
    packed
}

/// One piece as the encoder sees it.
struct PieceToWrite {
    key: u128,
    /// Its first scan's number.
    first_scan: usize,
    /// Its routing ZIP, unless the key implies it.
    routing: Option<Zip>,
}

/// Appends one block: its header, the piece records, the explicit routings, then the block's
/// scans (`scans`: each one's field of `scan_width` bits), each part starting on a byte.
fn encode_block(block: &[PieceToWrite], scans: &[u128], scan_width: u32, out: &mut Vec<u8>) {
    let (first_key, first_scan) = (block[0].key, block[0].first_scan);
    let high = |key: u128| (key >> KEY_LOW_BITS) - (first_key >> KEY_LOW_BITS);
    let last = &block[block.len() - 1];
    let high_bits = bits_for(high(last.key));
    let scan_bits = bits_for((last.first_scan - first_scan) as u128);
    let explicit: Vec<(usize, u64)> = block
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, zip_word(p.routing?))))
        .collect();
    let routing_bits = bits_for(u128::from(explicit.iter().map(|e| e.1).max().unwrap_or(0)));
    let bitmap = explicit.iter().fold(0u64, |map, (i, _)| map | 1 << i);
    out.extend_from_slice(&[high_bits as u8, scan_bits as u8, routing_bits as u8, 0]);
    out.extend_from_slice(&bitmap.to_le_bytes());
    let record_bits = high_bits + KEY_LOW_BITS + scan_bits;
    let mut records = vec![0u8; bit_array_len(block.len(), record_bits)];
    for (i, piece) in block.iter().enumerate() {
        let at = i * record_bits as usize;
        put_bits(&mut records, at, high_bits, high(piece.key));
        let low_at = at + high_bits as usize;
        put_bits(&mut records, low_at, KEY_LOW_BITS, piece.key & KEY_LOW_MASK);
        let scan_at = low_at + KEY_LOW_BITS as usize;
        let offset = (piece.first_scan - first_scan) as u128;
        put_bits(&mut records, scan_at, scan_bits, offset);
    }
    records.truncate(packed_len(block.len(), record_bits));
    out.extend_from_slice(&records);
    let words = explicit.iter().map(|(_, word)| u128::from(*word));
    out.extend_from_slice(&pack(words, routing_bits));
    out.extend_from_slice(&pack(scans.iter().copied(), scan_width));
}

/// Builds a v2 bucket file (see [`super::encode`]).
pub(super) fn encode(
    class: MailClass,
    kind: BucketKind,
    day: i64,
    scans: &[ScanEvent],
    symbols: &SymbolTable,
) -> Result<Vec<u8>, StoreError> {
    u32::try_from(scans.len()).map_err(|_| too_big(day, "scan count"))?;
    let mut tables = TableBuilder::new();
    let mut sites: Vec<ScanFields> = Vec::new();
    let mut site_index: hashbrown::HashMap<ScanFields, u32> = hashbrown::HashMap::new();
    let mut scan_values: Vec<(u32, u32)> = Vec::with_capacity(scans.len());
    for scan in scans {
        let fields = tables.fields(scan, day)?;
        let site = ScanFields {
            offset_ms: 0,
            ..fields
        };
        let index = *site_index.entry(site).or_insert_with(|| {
            sites.push(site);
            sites.len() as u32 - 1
        });
        scan_values.push((fields.offset_ms, index));
    }
    let time_unit: u32 = if scan_values.iter().all(|(t, _)| t % 1000 == 0) {
        1000
    } else {
        1
    };
    let max_time = scan_values.iter().map(|(t, _)| t / time_unit).max();
    let time_bits = bits_for(u128::from(max_time.unwrap_or(0)));
    let site_bits = bits_for(sites.len().saturating_sub(1) as u128);
    let scan_fields: Vec<u128> = scan_values
        .iter()
        .map(|(time, site)| u128::from(time / time_unit) | u128::from(*site) << time_bits)
        .collect();

    let mut pieces: Vec<PieceToWrite> = Vec::new();
    let mut zips: Vec<(u64, u32)> = Vec::new();
    let mut runs: Vec<[u32; 3]> = Vec::new();
    let mut start = 0;
    for piece_scans in pieces_of(scans) {
        let key = piece_scans[0].barcode;
        let piece = u32::try_from(pieces.len()).map_err(|_| too_big(day, "piece count"))?;
        let routing = piece_scans[0].routing;
        if !routing.is_empty() {
            zips.push((routing_key(routing), piece));
        }
        if let Some(mid) = key.mailer_id() {
            match runs.last_mut() {
                Some([run_mid, first, count]) if *run_mid == mid && *first + *count == piece => {
                    *count += 1
                }
                _ => runs.push([mid, piece, 1]),
            }
        }
        pieces.push(PieceToWrite {
            key: key.as_u128(),
            first_scan: start,
            routing: (routing != Zip::implied_by(key)).then_some(routing),
        });
        start += piece_scans.len();
    }
    let piece_count = pieces.len();
    let mut block_table = Vec::new();
    let mut piece_bytes = Vec::new();
    for (b, block) in pieces.chunks(PIECES_PER_BLOCK).enumerate() {
        let offset = u32::try_from(piece_bytes.len()).map_err(|_| too_big(day, "piece bytes"))?;
        block_table.extend_from_slice(&block[0].key.to_le_bytes());
        block_table.extend_from_slice(&offset.to_le_bytes());
        block_table.extend_from_slice(&(block[0].first_scan as u32).to_le_bytes());
        let scans_end = pieces
            .get((b + 1) * PIECES_PER_BLOCK)
            .map_or(scans.len(), |next| next.first_scan);
        let block_scans = &scan_fields[block[0].first_scan..scans_end];
        encode_block(block, block_scans, time_bits + site_bits, &mut piece_bytes);
    }
    piece_bytes.extend_from_slice(&[0; BIT_PADDING]);

    let piece_number_bytes = bits_for(piece_count.saturating_sub(1) as u128)
        .div_ceil(8)
        .max(1) as usize;
    zips.sort_unstable();
    let mut zip_fences = Vec::new();
    let mut zip_bytes = Vec::new();
    for (i, &(key, piece)) in zips.iter().enumerate() {
        if i % ZIPS_PER_BLOCK == 0 {
            let offset = u32::try_from(zip_bytes.len()).map_err(|_| too_big(day, "ZIP bytes"))?;
            zip_fences.extend_from_slice(&key.to_le_bytes());
            zip_fences.extend_from_slice(&offset.to_le_bytes());
            zip_fences.extend_from_slice(&[0; 4]);
        } else {
            put_varint(&mut zip_bytes, u128::from(key - zips[i - 1].0));
        }
        put_uint(&mut zip_bytes, u64::from(piece), piece_number_bytes);
    }
    runs.sort_unstable();
    let bloom = bloom_section(pieces.iter().map(|p| p.key));
    let [codes, facilities, machines] = tables.sections(symbols);
    let site_bytes = sites
        .iter()
        .flat_map(|s| {
            let mut site = [0u8; SITE_LEN];
            site[..SITE_CODE_OFFSET].copy_from_slice(&s.facility.to_le_bytes());
            site[SITE_CODE_OFFSET..SITE_MACHINE_OFFSET].copy_from_slice(&s.code.to_le_bytes());
            site[SITE_MACHINE_OFFSET..].copy_from_slice(&s.machine.to_le_bytes());
            site
        })
        .collect();

    let mut fields = [0u8; FIELDS_END - TIME_UNIT_OFFSET];
    fields[..4].copy_from_slice(&time_unit.to_le_bytes());
    fields[TIME_BITS_OFFSET - TIME_UNIT_OFFSET] = time_bits as u8;
    fields[SITE_BITS_OFFSET - TIME_UNIT_OFFSET] = site_bits as u8;
    fields[PIECE_BYTES_OFFSET - TIME_UNIT_OFFSET] = piece_number_bytes as u8;
    let sections = [
        block_table,
        piece_bytes,
        zip_fences,
        zip_bytes,
        runs.iter()
            .flat_map(|run| run.map(u32::to_le_bytes))
            .flatten()
            .collect(),
        bloom,
        codes,
        facilities,
        machines,
        site_bytes,
    ];
    let header = Header {
        version: VERSION,
        class,
        kind,
        day,
        scan_count: scans.len() as u64,
        piece_count,
    };
    Ok(frame(&header, &sections, &fields))
}

/// The reader of a v2 file.
pub(super) struct Layout {
    sections: Vec<Range<usize>>,
    piece_count: usize,
    time_unit: u32,
    time_bits: u32,
    site_bits: u32,
    piece_number_bytes: usize,
    sites: Vec<ScanFields>,
    /// The block table, copied out of the map (24 bytes a block of 64 pieces), so a lookup
    /// reads one page of the map: each block's first key,
    fences: Vec<u128>,
    /// its byte offset in the pieces section (then the section's end),
    block_offsets: Vec<u32>,
    /// and the number of its first scan (then the scan count).
    block_first_scans: Vec<u32>,
    /// The first key of every [`FENCE_GROUP`]th block: small enough to stay in cache across
    /// lookups, it narrows a lookup to one group of fences (1 KiB), which
    /// [`Layout::prefetch_index`] loads.
    top_fences: Vec<u128>,
}

/// Fences a top-level fence stands for.
const FENCE_GROUP: usize = 64;

/// One block of pieces, its header read.
struct Block<'m> {
    /// The pieces section from the block's start on.
    bytes: &'m [u8],
    /// Where `bytes` starts in the pieces section.
    offset: usize,
    /// Its first piece's number.
    first_piece: usize,
    /// Pieces in it.
    len: usize,
    fence: u128,
    /// Scans in it.
    scans: usize,
    high_bits: u32,
    scan_bits: u32,
    routing_bits: u32,
    explicit: u64,
}

impl Block<'_> {
    fn record_bits(&self) -> usize {
        (self.high_bits + KEY_LOW_BITS + self.scan_bits) as usize
    }

    /// Byte where the explicit routings start.
    fn routings_at(&self) -> usize {
        BLOCK_HEADER_LEN + packed_len(self.len, self.record_bits() as u32)
    }

    /// Byte where the scans start.
    fn scans_at(&self) -> usize {
        let routings = self.explicit.count_ones() as usize;
        self.routings_at() + packed_len(routings, self.routing_bits)
    }

    fn key(&self, i: usize) -> Option<u128> {
        let at = BLOCK_HEADER_LEN * 8 + i * self.record_bits();
        let high = get_bits(self.bytes, at, self.high_bits)?;
        let low = get_bits(self.bytes, at + self.high_bits as usize, KEY_LOW_BITS)?;
        let high = (self.fence >> KEY_LOW_BITS).checked_add(high)?;
        (high < 1 << (128 - KEY_LOW_BITS)).then_some(high << KEY_LOW_BITS | low)
    }

    /// Piece `i`'s first scan, counted from the block's first.
    fn scan_offset(&self, i: usize) -> Option<usize> {
        if i == self.len {
            return Some(self.scans);
        }
        let at = BLOCK_HEADER_LEN * 8
            + i * self.record_bits()
            + (self.high_bits + KEY_LOW_BITS) as usize;
        usize::try_from(get_bits(self.bytes, at, self.scan_bits)?).ok()
    }

    /// Piece `i` of the block, whose key is `key`.
    fn entry(&self, i: usize, key: u128, scan_width: u32) -> Option<PieceEntry> {
        let (start, end) = (self.scan_offset(i)?, self.scan_offset(i + 1)?);
        let routing = if self.explicit >> i & 1 == 1 {
            let rank = (self.explicit & ((1 << i) - 1)).count_ones() as usize;
            let at = self.routings_at() * 8 + rank * self.routing_bits as usize;
            let word = get_bits(self.bytes, at, self.routing_bits)?;
            Some(zip_from_word(u64::try_from(word).ok()?)?)
        } else {
            None
        };
        let scans_at = (self.offset + self.scans_at()) * 8;
        Some(PieceEntry {
            key,
            routing,
            scans: end.checked_sub(start)?,
            scan_at: scans_at.checked_add(start.checked_mul(scan_width as usize)?)?,
        })
    }
}

impl Layout {
    /// Checks the header fields, that the sections agree with the counts, the block tables, and
    /// the small tables. What lies inside blocks is checked as it is read.
    pub(super) fn open(
        map: &[u8],
        header: &Header,
        sections: &[Range<usize>],
        path: &Path,
    ) -> Result<(Layout, Tables, Range<usize>), StoreError> {
        let bad = |what: &str| corrupt(path, what.to_string());
        let time_unit = u32_at(map, TIME_UNIT_OFFSET);
        let (time_bits, site_bits) = (
            u32::from(map[TIME_BITS_OFFSET]),
            u32::from(map[SITE_BITS_OFFSET]),
        );
        let piece_number_bytes = usize::from(map[PIECE_BYTES_OFFSET]);
        if !matches!(time_unit, 1 | 1000) || time_bits > 32 || site_bits > 32 {
            return Err(bad("bad scan field widths"));
        }
        let piece_count = header.piece_count;
        if !(1..=4).contains(&piece_number_bytes)
            || (piece_count as u64) > 1 << (8 * piece_number_bytes)
        {
            return Err(bad("bad piece number width"));
        }
        let scan_count = usize::try_from(header.scan_count).map_err(|_| bad("scan count"))?;
        let len = |s: usize| sections[s].len();
        let blocks = piece_count.div_ceil(PIECES_PER_BLOCK);
        let sizes_agree = scan_count < 1 << 32
            && len(BLOCKS) == blocks * BLOCK_ENTRY_LEN
            && (len(PIECES) == 0) == (blocks == 0)
            && len(ZIP_FENCES) % ZIP_FENCE_LEN == 0
            && (len(ZIP_FENCES) == 0) == (len(ZIPS) == 0)
            && len(MAILER_RUNS) % RUN_LEN == 0
            && len(SITES) % SITE_LEN == 0
            && (scan_count == 0 || len(SITES) > 0);
        if !sizes_agree {
            return Err(bad("section sizes disagree with the counts"));
        }
        let section = |s: usize| &map[sections[s].clone()];
        let tables = Tables::read(section(CODES), section(FACILITIES), section(MACHINES), path)?;
        let sites: Vec<ScanFields> = section(SITES)
            .chunks_exact(SITE_LEN)
            .map(|s| ScanFields {
                offset_ms: 0,
                facility: u32_at(s, 0),
                code: u16::from_le_bytes([s[SITE_CODE_OFFSET], s[SITE_CODE_OFFSET + 1]]),
                machine: u16::from_le_bytes([s[SITE_MACHINE_OFFSET], s[SITE_MACHINE_OFFSET + 1]]),
            })
            .collect();
        if !sites.iter().all(|s| tables.admits(s)) {
            return Err(bad("a site refers past a table"));
        }
        // Block offsets and first scans only grow, from zero, within their sections.
        let block_table = section(BLOCKS);
        let mut previous = (0, 0);
        for b in 0..blocks {
            let at = b * BLOCK_ENTRY_LEN;
            let entry = (
                u32_at(block_table, at + BLOCK_OFFSET_OFFSET) as usize,
                u32_at(block_table, at + BLOCK_FIRST_SCAN_OFFSET) as usize,
            );
            let first_ok = b > 0 || entry == (0, 0);
            if !first_ok || entry < previous || entry.0 >= len(PIECES) || entry.1 >= scan_count {
                return Err(bad("block table out of order or out of bounds"));
            }
            previous = entry;
        }
        let zip_fences = section(ZIP_FENCES);
        let mut previous = 0;
        for f in 0..len(ZIP_FENCES) / ZIP_FENCE_LEN {
            let offset = u32_at(zip_fences, f * ZIP_FENCE_LEN + ZIP_FENCE_OFFSET_OFFSET) as usize;
            if (f == 0 && offset != 0) || offset < previous || offset >= len(ZIPS) {
                return Err(bad("ZIP block table out of order or out of bounds"));
            }
            previous = offset;
        }
        let layout = Layout {
            sections: sections.to_vec(),
            piece_count,
            time_unit,
            time_bits,
            site_bits,
            piece_number_bytes,
            sites,
            block_offsets: block_table
                .chunks_exact(BLOCK_ENTRY_LEN)
                .map(|entry| u32_at(entry, BLOCK_OFFSET_OFFSET))
                .chain([len(PIECES) as u32])
                .collect(),
            block_first_scans: block_table
                .chunks_exact(BLOCK_ENTRY_LEN)
                .map(|entry| u32_at(entry, BLOCK_FIRST_SCAN_OFFSET))
                .chain([scan_count as u32])
                .collect(),
            fences: block_table
                .chunks_exact(BLOCK_ENTRY_LEN)
                .map(|entry| u128_at(entry, 0))
                .collect(),
            top_fences: block_table
                .chunks_exact(BLOCK_ENTRY_LEN)
                .step_by(FENCE_GROUP)
                .map(|entry| u128_at(entry, 0))
                .collect(),
        };
        Ok((layout, tables, sections[BLOOM].clone()))
    }

    fn section<'m>(&self, map: &'m [u8], section: usize) -> &'m [u8] {
        &map[self.sections[section].clone()]
    }

    fn scan_width(&self) -> u32 {
        self.time_bits + self.site_bits
    }

    /// Block `block` (which must exist), its header checked.
    fn block<'m>(&self, map: &'m [u8], block: usize) -> Option<Block<'m>> {
        let offset = self.block_offsets[block] as usize;
        let first_scan = self.block_first_scans[block] as usize;
        let scans_end = self.block_first_scans[block + 1] as usize;
        let bytes = self.section(map, PIECES).get(offset..)?;
        let header = bytes.get(..BLOCK_HEADER_LEN)?;
        let first_piece = block * PIECES_PER_BLOCK;
        let block = Block {
            bytes,
            offset,
            first_piece,
            len: (self.piece_count - first_piece).min(PIECES_PER_BLOCK),
            fence: self.fences[block],
            scans: scans_end.checked_sub(first_scan)?,
            high_bits: u32::from(header[0]),
            scan_bits: u32::from(header[BLOCK_SCAN_BITS_OFFSET]),
            routing_bits: u32::from(header[BLOCK_ROUTING_BITS_OFFSET]),
            explicit: u64_at(header, BLOCK_BITMAP_OFFSET),
        };
        let widths_fit =
            block.high_bits <= MAX_FIELD_BITS && block.scan_bits <= 32 && block.routing_bits <= 64;
        widths_fit.then_some(block)
    }

    /// The fences of the group that holds `target`'s block, and the group's first block.
    fn fence_group(&self, target: u128) -> Option<(&[u128], usize)> {
        let group = self
            .top_fences
            .partition_point(|&f| f <= target)
            .checked_sub(1)?;
        let first = group * FENCE_GROUP;
        let end = (first + FENCE_GROUP).min(self.fences.len());
        Some((&self.fences[first..end], first))
    }

    /// The number of the block that holds `target` if any block does.
    fn block_of(&self, target: u128) -> Option<usize> {
        let (fences, first) = self.fence_group(target)?;
        Some(first + fences.partition_point(|&f| f <= target).checked_sub(1)?)
    }

    /// Starts loading the block table entries [`Layout::find`] searches for `target`.
    pub(super) fn prefetch_index(&self, target: u128) {
        if let Some((fences, first)) = self.fence_group(target) {
            prefetch_lines(fences);
            let blocks = first..first + fences.len() + 1;
            prefetch_lines(&self.block_offsets[blocks.clone()]);
            prefetch_lines(&self.block_first_scans[blocks]);
        }
    }

    /// Starts loading the block a lookup of `target` reads, its scans included (best after
    /// [`Layout::prefetch_index`]: this reads the block table).
    pub(super) fn prefetch(&self, map: &[u8], target: u128) {
        if let Some(block) = self.block_of(target) {
            let (start, end) = (self.block_offsets[block], self.block_offsets[block + 1]);
            if let Some(bytes) = self.section(map, PIECES).get(start as usize..end as usize) {
                prefetch_lines(bytes);
            }
        }
    }

    pub(super) fn find(&self, map: &[u8], target: u128) -> Option<PieceEntry> {
        let block = self.block(map, self.block_of(target)?)?;
        // Keys only grow within a block: binary search, a key that does not decode ends it.
        let (mut lo, mut hi) = (0, block.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match block.key(mid)?.cmp(&target) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return block.entry(mid, target, self.scan_width()),
            }
        }
        None
    }

    pub(super) fn visit(
        &self,
        map: &[u8],
        pieces: &[usize],
        f: &mut dyn FnMut(usize, &PieceEntry),
    ) {
        let mut current: Option<Block<'_>> = None;
        for &piece in pieces.iter().filter(|&&p| p < self.piece_count) {
            let number = piece / PIECES_PER_BLOCK;
            if current
                .as_ref()
                .is_none_or(|b| b.first_piece != number * PIECES_PER_BLOCK)
            {
                current = self.block(map, number);
            }
            let Some(block) = current.as_ref() else {
                continue;
            };
            let i = piece - block.first_piece;
            let entry = block
                .key(i)
                .and_then(|key| block.entry(i, key, self.scan_width()));
            if let Some(entry) = entry {
                f(piece, &entry);
            }
        }
    }

    /// Scan `j` of a piece [`Layout::find`] or [`Layout::visit`] gave.
    pub(super) fn scan(&self, map: &[u8], piece: &PieceEntry, j: usize) -> Option<ScanFields> {
        let width = self.scan_width();
        let bit = piece.scan_at.checked_add(j.checked_mul(width as usize)?)?;
        // At most 64 bits wide (time ≤ 32, site ≤ 32).
        let value = get_bits(self.section(map, PIECES), bit, width)? as u64;
        let time = (value & ((1 << self.time_bits) - 1)) * u64::from(self.time_unit);
        let site = self
            .sites
            .get(usize::try_from(value >> self.time_bits).ok()?)?;
        Some(ScanFields {
            offset_ms: u32::try_from(time).ok()?,
            ..*site
        })
    }

    pub(super) fn pieces_by_routing(&self, map: &[u8], range: &Range<u64>, out: &mut Vec<usize>) {
        let fences = self.section(map, ZIP_FENCES);
        let bytes = self.section(map, ZIPS);
        let count = fences.len() / ZIP_FENCE_LEN;
        let first = partition_point(count, |f| u64_at(fences, f * ZIP_FENCE_LEN) < range.start);
        for block in first.saturating_sub(1)..count {
            let fence = block * ZIP_FENCE_LEN;
            let mut key = u64_at(fences, fence);
            let mut at = u32_at(fences, fence + ZIP_FENCE_OFFSET_OFFSET) as usize;
            let end = if block + 1 < count {
                u32_at(fences, fence + ZIP_FENCE_LEN + ZIP_FENCE_OFFSET_OFFSET) as usize
            } else {
                bytes.len()
            };
            let Some(block_bytes) = bytes.get(..end) else {
                return;
            };
            let mut first_entry = true;
            while at < end {
                if !first_entry {
                    let delta =
                        get_varint(block_bytes, &mut at).and_then(|d| u64::try_from(d).ok());
                    let Some(next) = delta.and_then(|d| key.checked_add(d)) else {
                        return;
                    };
                    key = next;
                }
                first_entry = false;
                let Some(piece) = get_uint(block_bytes, &mut at, self.piece_number_bytes) else {
                    return;
                };
                if key >= range.end {
                    return;
                }
                if routing_key_matches(key, range) {
                    out.push(piece as usize);
                }
            }
        }
    }

    pub(super) fn pieces_by_mailer(&self, map: &[u8], mailer_id: u32, out: &mut Vec<usize>) {
        let runs = self.section(map, MAILER_RUNS);
        let count = runs.len() / RUN_LEN;
        let start = partition_point(count, |r| u32_at(runs, r * RUN_LEN) < mailer_id);
        for run in (start..count).take_while(|&r| u32_at(runs, r * RUN_LEN) == mailer_id) {
            let first = u32_at(runs, run * RUN_LEN + RUN_FIRST_OFFSET) as usize;
            let pieces = u32_at(runs, run * RUN_LEN + RUN_COUNT_OFFSET) as usize;
            out.extend(first..first.saturating_add(pieces).min(self.piece_count));
        }
    }
}
