//! Format v1: fixed-width records (32 bytes a piece, 12 a scan) and plain sorted indexes. Every
//! index is checked at open, so reads need no further checks. Written only when a store is told
//! to (`BucketFormat::V1`), to stay readable by releases before v2.

use std::ops::Range;
use std::path::Path;

use imbtrack_feed::{MailClass, ScanEvent, SymbolTable, Zip};

use super::{
    bloom_section, corrupt, frame, partition_point, pieces_of, routing_key, routing_key_matches,
    u128_at, u32_at, u64_at, BucketKind, Header, PieceEntry, ScanFields, TableBuilder, Tables,
};
use crate::StoreError;

pub(super) const VERSION: u32 = 1;
pub(super) const SECTION_COUNT: usize = 11;

// Section numbers, in file order.
/// Per piece, sorted by key: key u128, routing ZIP bits u64, first scan u32, scan count u32.
const PIECES: usize = 0;
/// Per scan, grouped by piece: ms into the day u32, facility u32, code u16, machine u16.
const SCANS: usize = 1;
/// Sorted routing keys u64 of pieces with a routing ZIP.
const ZIP_KEYS: usize = 2;
/// The piece number of each routing key, u32.
const ZIP_PIECES: usize = 3;
/// Sorted Mailer IDs u32.
const MAILER_IDS: usize = 4;
/// The piece number of each Mailer ID, u32.
const MAILER_PIECES: usize = 5;
const BLOOM: usize = 6;
const CODES: usize = 7;
const FACILITIES: usize = 8;
const MACHINES: usize = 9;
/// Every 64th piece key, u128.
const FENCES: usize = 10;

const FENCE_STRIDE: usize = 64;
const PIECE_LEN: usize = 32;
const PIECE_ROUTING_OFFSET: usize = 16;
const PIECE_FIRST_SCAN_OFFSET: usize = PIECE_ROUTING_OFFSET + 8;
const PIECE_SCAN_COUNT_OFFSET: usize = PIECE_FIRST_SCAN_OFFSET + 4;
const SCAN_LEN: usize = 12;
const SCAN_FACILITY_OFFSET: usize = 4;
const SCAN_CODE_OFFSET: usize = SCAN_FACILITY_OFFSET + 4;
const SCAN_MACHINE_OFFSET: usize = SCAN_CODE_OFFSET + 2;

/// Builds a v1 bucket file from the scans of one (class, day), sorted by piece and time and
/// free of duplicates.
pub(super) fn encode(
    class: MailClass,
    kind: BucketKind,
    day: i64,
    scans: &[ScanEvent],
    symbols: &SymbolTable,
) -> Result<Vec<u8>, StoreError> {
    let mut tables = TableBuilder::new();
    let mut pieces = Vec::new();
    let mut scan_bytes = Vec::with_capacity(scans.len() * SCAN_LEN);
    let mut zips: Vec<(u64, u32)> = Vec::new();
    let mut mailers: Vec<(u32, u32)> = Vec::new();
    let mut keys = Vec::new();
    let mut start = 0;
    for piece_scans in pieces_of(scans) {
        let key = piece_scans[0].barcode;
        let piece = keys.len() as u32;
        let routing = piece_scans[0].routing;
        pieces.extend_from_slice(&key.as_u128().to_le_bytes());
        pieces.extend_from_slice(&routing.to_bits().to_le_bytes());
        pieces.extend_from_slice(&(start as u32).to_le_bytes());
        pieces.extend_from_slice(&(piece_scans.len() as u32).to_le_bytes());
        if !routing.is_empty() {
            zips.push((routing_key(routing), piece));
        }
        if let Some(mid) = key.mailer_id() {
            mailers.push((mid, piece));
        }
        for scan in piece_scans {
            let fields = tables.fields(scan, day)?;
            scan_bytes.extend_from_slice(&fields.offset_ms.to_le_bytes());
            scan_bytes.extend_from_slice(&fields.facility.to_le_bytes());
            scan_bytes.extend_from_slice(&fields.code.to_le_bytes());
            scan_bytes.extend_from_slice(&fields.machine.to_le_bytes());
        }
        keys.push(key.as_u128());
        start += piece_scans.len();
    }
    zips.sort_unstable();
    mailers.sort_unstable();
    let [codes, facilities, machines] = tables.sections(symbols);
    let fences = keys
        .iter()
        .step_by(FENCE_STRIDE)
        .flat_map(|k| k.to_le_bytes())
        .collect();
    let sections = [
        pieces,
        scan_bytes,
        zips.iter().flat_map(|(k, _)| k.to_le_bytes()).collect(),
        zips.iter().flat_map(|(_, p)| p.to_le_bytes()).collect(),
        mailers.iter().flat_map(|(m, _)| m.to_le_bytes()).collect(),
        mailers.iter().flat_map(|(_, p)| p.to_le_bytes()).collect(),
        bloom_section(keys.iter().copied()),
        codes,
        facilities,
        machines,
        fences,
    ];
    let header = Header {
        version: VERSION,
        class,
        kind,
        day,
        scan_count: scans.len() as u64,
        piece_count: keys.len(),
    };
    Ok(frame(&header, &sections, &[]))
}

pub(super) struct Layout {
    sections: Vec<Range<usize>>,
    piece_count: usize,
}

impl Layout {
    /// Checks that the sections agree with the counts and that every index stays in bounds.
    pub(super) fn open(
        map: &[u8],
        header: &Header,
        sections: &[Range<usize>],
        path: &Path,
    ) -> Result<(Layout, Tables, Range<usize>), StoreError> {
        let len = |s: usize| sections[s].len();
        let piece_count = header.piece_count;
        let sizes_agree = piece_count.checked_mul(PIECE_LEN) == Some(len(PIECES))
            && (len(SCANS) as u64) == header.scan_count.saturating_mul(SCAN_LEN as u64)
            && len(ZIP_KEYS) == len(ZIP_PIECES) * 2
            && len(ZIP_PIECES) % 4 == 0
            && len(MAILER_IDS) == len(MAILER_PIECES)
            && len(MAILER_IDS) % 4 == 0
            && len(FENCES) == piece_count.div_ceil(FENCE_STRIDE) * 16;
        if !sizes_agree {
            return Err(corrupt(path, "section sizes disagree with the counts"));
        }
        let section = |s: usize| &map[sections[s].clone()];
        let tables = Tables::read(section(CODES), section(FACILITIES), section(MACHINES), path)?;
        let layout = Layout {
            sections: sections.to_vec(),
            piece_count,
        };
        layout.check_references(map, header.scan_count, &tables, path)?;
        Ok((layout, tables, sections[BLOOM].clone()))
    }

    fn check_references(
        &self,
        map: &[u8],
        scan_count: u64,
        tables: &Tables,
        path: &Path,
    ) -> Result<(), StoreError> {
        let mut expected_first = 0u64;
        for i in 0..self.piece_count {
            let entry = self.piece(map, i);
            if entry.scan_at as u64 != expected_first || entry.scans == 0 {
                return Err(corrupt(
                    path,
                    format!("piece {i} does not cover the next scans"),
                ));
            }
            expected_first += entry.scans as u64;
        }
        if expected_first != scan_count {
            return Err(corrupt(path, "pieces do not cover every scan"));
        }
        if !(0..scan_count as usize).all(|i| tables.admits(&self.scan_fields(map, i))) {
            return Err(corrupt(path, "a scan refers past a table"));
        }
        let in_range = |s: usize| {
            self.section(map, s)
                .chunks_exact(4)
                .all(|p| (u32_at(p, 0) as usize) < self.piece_count)
        };
        if !in_range(ZIP_PIECES) || !in_range(MAILER_PIECES) {
            return Err(corrupt(path, "an index refers past the pieces"));
        }
        Ok(())
    }

    fn section<'m>(&self, map: &'m [u8], section: usize) -> &'m [u8] {
        &map[self.sections[section].clone()]
    }

    fn key_at(&self, map: &[u8], i: usize) -> u128 {
        u128_at(self.section(map, PIECES), i * PIECE_LEN)
    }

    fn piece(&self, map: &[u8], i: usize) -> PieceEntry {
        let pieces = self.section(map, PIECES);
        let at = i * PIECE_LEN;
        PieceEntry {
            key: u128_at(pieces, at),
            routing: Some(
                Zip::from_bits(u64_at(pieces, at + PIECE_ROUTING_OFFSET)).unwrap_or(Zip::NONE),
            ),
            scans: u32_at(pieces, at + PIECE_SCAN_COUNT_OFFSET) as usize,
            scan_at: u32_at(pieces, at + PIECE_FIRST_SCAN_OFFSET) as usize,
        }
    }

    fn scan_fields(&self, map: &[u8], i: usize) -> ScanFields {
        let scan = &self.section(map, SCANS)[i * SCAN_LEN..(i + 1) * SCAN_LEN];
        ScanFields {
            offset_ms: u32_at(scan, 0),
            facility: u32_at(scan, SCAN_FACILITY_OFFSET),
            code: u16::from_le_bytes([scan[SCAN_CODE_OFFSET], scan[SCAN_CODE_OFFSET + 1]]),
            machine: u16::from_le_bytes([scan[SCAN_MACHINE_OFFSET], scan[SCAN_MACHINE_OFFSET + 1]]),
        }
    }

    pub(super) fn find(&self, map: &[u8], target: u128) -> Option<PieceEntry> {
        let fences = self.section(map, FENCES);
        let after = partition_point(fences.len() / 16, |i| u128_at(fences, i * 16) <= target);
        let mut lo = after.checked_sub(1)? * FENCE_STRIDE;
        let mut hi = (lo + FENCE_STRIDE).min(self.piece_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key_at(map, mid).cmp(&target) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.piece(map, mid)),
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
        for &i in pieces.iter().filter(|&&i| i < self.piece_count) {
            f(i, &self.piece(map, i));
        }
    }

    pub(super) fn scan(&self, map: &[u8], piece: &PieceEntry, j: usize) -> Option<ScanFields> {
        let index = piece.scan_at.checked_add(j)?;
        (index < self.section(map, SCANS).len() / SCAN_LEN).then(|| self.scan_fields(map, index))
    }

    pub(super) fn pieces_by_routing(&self, map: &[u8], range: &Range<u64>, out: &mut Vec<usize>) {
        let keys = self.section(map, ZIP_KEYS);
        let piece_of = self.section(map, ZIP_PIECES);
        let start = partition_point(keys.len() / 8, |i| u64_at(keys, i * 8) < range.start);
        for i in start..keys.len() / 8 {
            let key = u64_at(keys, i * 8);
            if key >= range.end {
                break;
            }
            if routing_key_matches(key, range) {
                out.push(u32_at(piece_of, i * 4) as usize);
            }
        }
    }

    pub(super) fn pieces_by_mailer(&self, map: &[u8], mailer_id: u32, out: &mut Vec<usize>) {
        let ids = self.section(map, MAILER_IDS);
        let piece_of = self.section(map, MAILER_PIECES);
        let count = ids.len() / 4;
        let start = partition_point(count, |i| u32_at(ids, i * 4) < mailer_id);
        out.extend(
            (start..count)
                .take_while(|&i| u32_at(ids, i * 4) == mailer_id)
                .map(|i| u32_at(piece_of, i * 4) as usize),
        );
    }
}
