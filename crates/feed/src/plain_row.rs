//! Plain delimited rows read straight into a [`ScanEvent`]. A row is plain when it has no
//! quote and every value has its usual form as it stands (an IMb or a package barcode of
//! digits, a `YYYY-MM-DDTHH:MM:SS` timestamp with `Z` or an offset, names without blanks at
//! their edges, and so on); nearly every row of a feed is.
//!
//! The general reader ([`Header::read_unquoted`](crate::delimited::Header) and
//! [`build_event`](crate::record::build_event)) finds a row's line, then its delimiters, places
//! each value by its column's field, trims it, and converts the fields; for a row of ten
//! columns the framing was about a third of the row's instructions. Here one scan of the row's
//! 64-byte blocks finds its delimiters, its quotes and its newline together, each column's value
//! goes to a slot fixed by the header, and the slots are converted as they stand. Anything
//! else - a quote, a blank at a name's edge, a value not accepted as it stands, a row near the
//! end of its chunk - gives `None`, and the general reader reads the row, rejecting it if it
//! must: this reader never rejects, so every reject reason stays the general reader's. The
//! tests hold the two equal on rows of every kind.

use imbtrack_barcode::{Barcode, BarcodeKey, Impb};

use crate::delimited::{wide_masks, WIDE};
use crate::event::{EventCode, ScanEvent, SpanCompare, SymbolTable, WordCompare, Zip};
use crate::record::{
    imb_digits_key, imb_routing_zip, package_routing, routing_zip, scan_event, site_symbols_in,
    trimmed_as_is, FeedOptions, Field, FIELD_COUNT,
};
use crate::time::{fixed_rfc3339, RecentDays};

/// Where a column's value goes: one slot a field read, and one for the columns not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Slot {
    Imb,
    Impb,
    Time,
    Code,
    FacilityZip,
    Handling,
    FacilityName,
    FacilityCity,
    FacilityState,
    Machine,
    Unread,
}

const SLOT_COUNT: usize = Slot::Unread as usize + 1;

/// A delimited feed's columns as the slots of its plain rows' values.
#[derive(Debug, Clone)]
pub(crate) struct PlainRowReader {
    slots: Vec<Slot>,
    /// Whether the four site columns lie side by side in the IV-MTR order, so that a row's
    /// span of them is known without working it out from where the values are.
    site_side_by_side: bool,
    delimiter: u8,
    /// The whole-block scan, where the processor has it ([`WideScan::detect`]).
    wide_scan: Option<WideScan>,
}

/// The site columns in the IV-MTR order.
const SITE_SLOTS: [Slot; 4] = [
    Slot::FacilityName,
    Slot::FacilityCity,
    Slot::FacilityState,
    Slot::Machine,
];

impl PlainRowReader {
    /// The slots of a header's columns; `None` when a column names a field plain rows are not
    /// read for (a date and a time apart, tracking and routing codes apart, a destination ZIP)
    /// or two columns name one field: such feeds are read by the general reader alone.
    pub(crate) fn for_columns(columns: &[Option<Field>], delimiter: u8) -> Option<PlainRowReader> {
        let mut slots = Vec::with_capacity(columns.len());
        let mut named = [false; FIELD_COUNT];
        for name in columns {
            let Some(field) = *name else {
                slots.push(Slot::Unread);
                continue;
            };
            if std::mem::replace(&mut named[field as usize], true) {
                return None;
            }
            slots.push(match field {
                Field::Imb => Slot::Imb,
                Field::Impb => Slot::Impb,
                Field::Time => Slot::Time,
                Field::Code => Slot::Code,
                Field::FacilityZip => Slot::FacilityZip,
                Field::Handling => Slot::Handling,
                Field::FacilityName => Slot::FacilityName,
                Field::FacilityCity => Slot::FacilityCity,
                Field::FacilityState => Slot::FacilityState,
                Field::Machine => Slot::Machine,
                Field::ImbTracking
                | Field::ImbRouting
                | Field::Date
                | Field::TimeOfDay
                | Field::RoutingZip => return None,
            });
        }
        Some(PlainRowReader {
            site_side_by_side: slots.windows(4).any(|run| run == SITE_SLOTS),
            slots,
            delimiter,
            wide_scan: WideScan::detect(),
        })
    }

    /// This reader scanning sixteen bytes at a time on any processor: the twin the tests
    /// compare the whole-block scan with.
    #[cfg(test)]
    pub(crate) fn narrow_only(&self) -> PlainRowReader {
        PlainRowReader {
            wide_scan: None,
            ..self.clone()
        }
    }

    /// Reads the plain rows from `start` of `bytes` on, pushing their events onto `events`,
    /// until a row that is not plain ([`PlainRowReader::read_row`]) or the end; gives how many
    /// it read and where the row after them starts. Each row's blocks are scanned whole where
    /// the processor can ([`WideScan`]), sixteen bytes at a time elsewhere.
    pub(crate) fn read_rows(
        &self,
        bytes: &[u8],
        start: usize,
        options: &FeedOptions,
        symbols: &mut SymbolTable,
        recent_days: &mut RecentDays,
        events: &mut Vec<ScanEvent>,
    ) -> (u64, usize) {
        match self.wide_scan {
            // SAFETY: a `WideScan` exists only where the processor has the features the
            // function is compiled for.
            #[allow(unsafe_code)]
            Some(scan) => unsafe {
                self.read_rows_wide(scan, bytes, start, options, symbols, recent_days, events)
            },
            None => self.read_rows_with(
                NarrowScan,
                bytes,
                start,
                options,
                symbols,
                recent_days,
                events,
            ),
        }
    }

    /// [`PlainRowReader::read_rows_with`] compiled with AVX-512, so the whole-block scan's
    /// compares are inlined into the row reader (a call a block cost more than it saved).
    ///
    /// # Safety
    ///
    /// The processor must have AVX-512F and AVX-512BW, as a `WideScan` proves.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
    unsafe fn read_rows_wide(
        &self,
        scan: WideScan,
        bytes: &[u8],
        start: usize,
        options: &FeedOptions,
        symbols: &mut SymbolTable,
        recent_days: &mut RecentDays,
        events: &mut Vec<ScanEvent>,
    ) -> (u64, usize) {
        self.read_rows_with(scan, bytes, start, options, symbols, recent_days, events)
    }

    /// [`PlainRowReader::read_rows`] with the block scan `scan`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn read_rows_with<S: RowScan>(
        &self,
        scan: S,
        bytes: &[u8],
        mut start: usize,
        options: &FeedOptions,
        symbols: &mut SymbolTable,
        recent_days: &mut RecentDays,
        events: &mut Vec<ScanEvent>,
    ) -> (u64, usize) {
        let mut rows = 0;
        while start < bytes.len() {
            let Some(newline) =
                self.read_row(scan, bytes, start, options, symbols, recent_days, events)
            else {
                break;
            };
            rows += 1;
            start = newline + 1;
        }
        (rows, start)
    }

    /// Pushes the event of the plain row at `start` of `bytes` onto `events` and gives where
    /// the row's newline is; `None` when the row is not plain (see the module's comment), which
    /// the general reader then reads. Values are converted in
    /// [`build_event`](crate::record::build_event)'s order, the site's names last, so a row
    /// left to the general reader has interned no name it would not have. (The event is
    /// pushed here, not returned: returned, its 64 bytes went through the stack twice more.)
    /// Inlined always, into each of [`PlainRowReader::read_rows`]' scans.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_row<S: RowScan>(
        &self,
        scan: S,
        bytes: &[u8],
        start: usize,
        options: &FeedOptions,
        symbols: &mut SymbolTable,
        recent_days: &mut RecentDays,
        events: &mut Vec<ScanEvent>,
    ) -> Option<usize> {
        let row = &bytes[start..];
        let (values, newline) = self.split(scan, row)?;
        let line_len = newline - usize::from(newline > 0 && row[newline - 1] == b'\r');
        if line_len > options.max_record_len {
            return None;
        }
        let value = |slot: Slot| values[slot as usize];
        let imb = value(Slot::Imb);
        let (barcode, routing) = if imb.is_empty() {
            let package = value(Slot::Impb);
            match BarcodeKey::of_common_package_digits(package) {
                Some((key, zip)) => (key, routing_zip(zip).ok()?),
                None => {
                    let impb = Impb::from_digits(package)?.ok()?;
                    (Barcode::Impb(impb).key(), package_routing(&impb, b"").ok()?)
                }
            }
        } else {
            scan.imb_digits_key(imb)?
        };
        let time_ms = fixed_rfc3339(value(Slot::Time), Some(recent_days))?.ok()?;
        if !options.accepts_time(time_ms) {
            return None;
        }
        let code = EventCode::parse(value(Slot::Code))?;
        let facility_zip = Zip::parse(value(Slot::FacilityZip))?;
        let parts = SITE_SLOTS.map(value);
        if !parts.iter().all(|part| trimmed_as_is(part)) {
            return None;
        }
        let site = if self.site_side_by_side {
            // From the name's start to the machine's end, one delimiter between each two.
            let site_start = parts[0].as_ptr() as usize - row.as_ptr() as usize;
            let site_len = parts.iter().map(|part| part.len()).sum::<usize>() + parts.len() - 1;
            symbols.intern_site_span(&row[site_start..site_start + site_len], &parts, scan)?
        } else {
            site_symbols_in(row, parts, symbols)?
        };
        events.push(scan_event(
            (barcode, routing),
            time_ms,
            code,
            facility_zip,
            site,
            value(Slot::Handling),
        ));
        Some(start + newline)
    }

    /// The row's values by slot and where its newline is; `None` when the row holds a quote,
    /// has more or fewer columns than the header, or runs to the end of `row` before a whole
    /// block (the chunk's last bytes).
    #[inline(always)]
    fn split<'a, S: RowScan>(
        &self,
        scan: S,
        row: &'a [u8],
    ) -> Option<([&'a [u8]; SLOT_COUNT], usize)> {
        // A slot no column fills holds an empty slice that is not the row's, as the general
        // reader's record does: no name is taken to lie next to it.
        let mut values: [&[u8]; SLOT_COUNT] = [&[]; SLOT_COUNT];
        let mut ends = ColumnEnds::new(scan, row, self.delimiter)?;
        let mut at = 0;
        let mut end = 0;
        for &slot in &self.slots {
            end = ends.next()?;
            values[slot as usize] = &row[at..end];
            at = end + 1;
        }
        // The last column's end must be the newline: an earlier newline leaves `next` nothing
        // more to give, a later one fails this.
        if row[end] != b'\n' {
            return None;
        }
        let last = &mut values[*self.slots.last()? as usize];
        if let Some(without_return) = last.strip_suffix(b"\r") {
            *last = without_return;
        }
        Some((values, end))
    }
}

/// How a row's bytes are read where vector instructions pay: its 64-byte blocks, for each of
/// three bytes (the delimiter, the newline, the quote) a mask of the places it has in the
/// block; an IMb of digits only, to its key and routing ZIP as [`imb_digits_key`] gives them;
/// and a site's span, compared with a recent one ([`SpanCompare`]). Holding a value of the type
/// is the permission to use it: a [`WideScan`] is made only where the processor can run it.
pub(crate) trait RowScan: SpanCompare {
    fn masks(self, block: &[u8; WIDE], bytes: [u8; 3]) -> [u64; 3];

    fn imb_digits_key(self, imb: &[u8]) -> Option<(BarcodeKey, Zip)>;
}

/// Sixteen bytes a compare ([`wide_masks`]) and eight digits a word (as the general reader
/// reads an IMb), on any processor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NarrowScan;

impl RowScan for NarrowScan {
    #[inline(always)]
    fn masks(self, block: &[u8; WIDE], bytes: [u8; 3]) -> [u64; 3] {
        wide_masks(block, bytes)
    }

    #[inline(always)]
    fn imb_digits_key(self, imb: &[u8]) -> Option<(BarcodeKey, Zip)> {
        imb_digits_key(imb)
    }
}

impl SpanCompare for NarrowScan {
    #[inline(always)]
    fn same_span(self, a: &[u8], b: &[u8]) -> bool {
        WordCompare.same_span(a, b)
    }
}

/// The whole block in one compare a byte (AVX-512BW): 7 instructions a block where
/// [`NarrowScan`] takes about 55 (a row is one or two blocks); and an IMb's digits sixteen to
/// a vector (SSSE3's multiply-adds, which AVX-512 implies). Made only by [`WideScan::detect`],
/// where the processor has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WideScan(WideScanProof);

/// What a [`WideScan`] holds: nothing on x86_64, where `detect` makes one only once it has
/// checked; elsewhere a type with no value, so none is ever made.
#[cfg(target_arch = "x86_64")]
type WideScanProof = ();
#[cfg(not(target_arch = "x86_64"))]
type WideScanProof = std::convert::Infallible;

impl WideScan {
    /// A `WideScan` if this processor has AVX-512F and AVX-512BW.
    pub(crate) fn detect() -> Option<WideScan> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            return Some(WideScan(()));
        }
        None
    }
}

/// `$call`, a function compiled for AVX-512F and BW, called under the proof `$scan` (a
/// [`WideScan`]) holds; on other targets no `WideScan` exists and there is nothing to call.
macro_rules! under_wide_scan {
    ($scan:expr, $call:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            let WideScan(()) = $scan;
            // SAFETY: a `WideScan` is made only where the processor has AVX-512F and BW.
            #[allow(unsafe_code)]
            unsafe {
                $call
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        match $scan.0 {}
    }};
}

impl RowScan for WideScan {
    #[inline(always)]
    fn masks(self, block: &[u8; WIDE], bytes: [u8; 3]) -> [u64; 3] {
        under_wide_scan!(self, wide_scan_masks(block, bytes))
    }

    #[inline(always)]
    fn imb_digits_key(self, imb: &[u8]) -> Option<(BarcodeKey, Zip)> {
        under_wide_scan!(self, wide_imb_digits_key(imb))
    }
}

impl SpanCompare for WideScan {
    #[inline(always)]
    fn same_span(self, a: &[u8], b: &[u8]) -> bool {
        if a.len() > WIDE {
            return WordCompare.same_span(a, b);
        }
        under_wide_scan!(self, wide_same_span(a, b))
    }
}

/// [`WideScan`]'s compare of spans up to 64 bytes long (nearly every site's): loaded from
/// each slice under a mask of its length and compared in one instruction, with no branch on
/// where the first difference is ([`WordCompare`]'s word loop mispredicted its exit about once
/// a row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
#[allow(unsafe_code)]
fn wide_same_span(a: &[u8], b: &[u8]) -> bool {
    use std::arch::x86_64::{_mm512_cmpneq_epi8_mask, _mm512_maskz_loadu_epi8};
    debug_assert!(a.len() == b.len() && a.len() <= WIDE);
    // The low `len` bits (a shift by 64, for an empty span, is none).
    let in_span = u64::MAX.checked_shr((WIDE - a.len()) as u32).unwrap_or(0);
    // SAFETY: each load reads only the bytes its mask selects, the slice's own (a masked-off
    // byte is not accessed, and a fault on it is suppressed); it needs no alignment.
    let (a, b) = unsafe {
        (
            _mm512_maskz_loadu_epi8(in_span, a.as_ptr().cast()),
            _mm512_maskz_loadu_epi8(in_span, b.as_ptr().cast()),
        )
    };
    _mm512_cmpneq_epi8_mask(a, b) == 0
}

/// [`WideScan`]'s masks: one unaligned load of the block, one compare a byte into a mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
#[allow(unsafe_code)]
fn wide_scan_masks(block: &[u8; WIDE], [a, b, c]: [u8; 3]) -> [u64; 3] {
    use std::arch::x86_64::{_mm512_cmpeq_epi8_mask, _mm512_loadu_si512, _mm512_set1_epi8};
    // SAFETY: the load reads the 64 bytes `block` holds; it needs no alignment.
    let loaded = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
    [
        _mm512_cmpeq_epi8_mask(loaded, _mm512_set1_epi8(a as i8)),
        _mm512_cmpeq_epi8_mask(loaded, _mm512_set1_epi8(b as i8)),
        _mm512_cmpeq_epi8_mask(loaded, _mm512_set1_epi8(c as i8)),
    ]
}

/// [`WideScan`]'s sixteen digits: each byte less `'0'` checked below ten, then digit pairs,
/// fours and eights summed by multiply-adds (after Lemire's "parsing eight digits"), the two
/// eights joined.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
#[allow(unsafe_code)]
fn wide_sixteen_digits(digits: &[u8; 16]) -> Option<u64> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cvtsi128_si32, _mm_extract_epi32, _mm_loadu_si128, _mm_madd_epi16,
        _mm_maddubs_epi16, _mm_max_epu8, _mm_movemask_epi8, _mm_packus_epi32, _mm_set1_epi8,
        _mm_setr_epi16, _mm_setr_epi8, _mm_sub_epi8,
    };
    // SAFETY: the load reads the 16 bytes `digits` holds; it needs no alignment.
    let loaded = unsafe { _mm_loadu_si128(digits.as_ptr().cast()) };
    let values = _mm_sub_epi8(loaded, _mm_set1_epi8(b'0' as i8));
    let nine = _mm_set1_epi8(9);
    if _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(values, nine), nine)) != 0xFFFF {
        return None;
    }
    let pairs = _mm_maddubs_epi16(
        values,
        _mm_setr_epi8(10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1),
    );
    let fours = _mm_madd_epi16(pairs, _mm_setr_epi16(100, 1, 100, 1, 100, 1, 100, 1));
    let fours = _mm_packus_epi32(fours, fours);
    let eights = _mm_madd_epi16(
        fours,
        _mm_setr_epi16(10_000, 1, 10_000, 1, 10_000, 1, 10_000, 1),
    );
    let high = u64::from(_mm_cvtsi128_si32(eights) as u32);
    let low = u64::from(_mm_extract_epi32::<1>(eights) as u32);
    Some(high * 100_000_000 + low)
}

/// [`WideScan`]'s IMb key and routing ZIP (twenty tracking digits, then 0, 5, 9 or 11 routing
/// digits): the last sixteen tracking digits in one vector, and the routing digits in another,
/// as the IMb's last sixteen bytes with those before the routing made `'0'`s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn wide_imb_digits_key(imb: &[u8]) -> Option<(BarcodeKey, Zip)> {
    let routing_len = imb.len().checked_sub(20).filter(|&len| len <= 11)?;
    let [first, second, third, fourth] = <[u8; 4]>::try_from(&imb[..4])
        .ok()?
        .map(|digit| digit.wrapping_sub(b'0'));
    if third > 9 || fourth > 9 {
        return None;
    }
    let sixteen = wide_sixteen_digits(imb[4..20].try_into().ok()?)?;
    let routing_number = match routing_len {
        0 => 0,
        _ => {
            let last = u128::from_le_bytes(imb[imb.len() - 16..].try_into().ok()?);
            let routing = u128::MAX << (8 * (16 - routing_len));
            let padded = last & routing | u128::from_le_bytes([b'0'; 16]) & !routing;
            wide_sixteen_digits(&padded.to_le_bytes())?
        }
    };
    let tail = u64::from(third * 10 + fourth) * 10_000_000_000_000_000 + sixteen;
    let (key, routing_number) =
        BarcodeKey::of_imb_numbers([first, second], tail, routing_len, routing_number)?;
    Some((key, imb_routing_zip(routing_number, routing_len)))
}

/// The ends of a row's columns, in order: its delimiters, then its newline, found a 64-byte
/// block at a time.
struct ColumnEnds<'a, S> {
    scan: S,
    row: &'a [u8],
    delimiter: u8,
    /// Where the block being read starts.
    base: usize,
    /// The block's column ends not yet given, one bit each.
    pending: u64,
    /// Whether the newline has been found (no block after it is read).
    newline_found: bool,
}

impl<'a, S: RowScan> ColumnEnds<'a, S> {
    /// `None` when the row's first block holds a quote before any newline, or is not whole.
    #[inline(always)]
    fn new(scan: S, row: &'a [u8], delimiter: u8) -> Option<ColumnEnds<'a, S>> {
        let mut ends = ColumnEnds {
            scan,
            row,
            delimiter,
            base: 0,
            pending: 0,
            newline_found: false,
        };
        ends.read_block()?;
        Some(ends)
    }

    /// Reads the block at `base`: its delimiters up to and including the row's newline.
    #[inline(always)]
    fn read_block(&mut self) -> Option<()> {
        let block = self.row.get(self.base..self.base + WIDE)?.try_into().ok()?;
        let [delimiters, newlines, quotes] = self.scan.masks(block, [self.delimiter, b'\n', b'"']);
        // Bits up to the first newline's, all when there is none.
        let in_row = newlines ^ newlines.wrapping_sub(1);
        self.newline_found = newlines != 0;
        if quotes & in_row != 0 {
            return None;
        }
        self.pending = (delimiters | newlines) & in_row;
        Some(())
    }

    /// The next column's end; `None` past the newline, or where a later block is not plain.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.pending == 0 {
            if self.newline_found {
                return None;
            }
            self.base += WIDE;
            self.read_block()?;
        }
        let end = self.base + self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        Some(end)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::generate::{generate, GenFormat, GenOptions};
    use crate::parse::{ChunkOutput, PreparedFeed};
    use crate::time::{days_from_civil, parse_timestamp};

    /// Rows of the generator's feed, good and spoilt in every way it spoils them.
    fn generated_rows() -> Vec<Vec<u8>> {
        let mut options = GenOptions::new(300, days_from_civil(2025, 1, 10));
        options.days = 3;
        options.seed = 7;
        options.bad_share = 0.2;
        options.format = GenFormat::Psv;
        let mut bytes = Vec::new();
        generate(&options, &mut bytes, |_| {}).expect("writes to memory");
        bytes
            .split(|&b| b == b'\n')
            .skip(1)
            .filter(|row| !row.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    const HEADER: &str = "imb|impb|scanDatetime|scanEventCode|scanFacilityZip|handlingEventType|scanFacilityName|scanFacilityCity|scanFacilityState|machineName";

    fn options() -> FeedOptions {
        FeedOptions::at(parse_timestamp(b"2025-01-20T00:00:00Z", None).expect("a timestamp"))
    }

    /// A chunk's output with its events' sites as names, so that outputs of two tables compare.
    fn comparable(output: &ChunkOutput) -> impl PartialEq + std::fmt::Debug + '_ {
        let events: Vec<_> = output
            .events
            .iter()
            .map(|event| {
                (
                    *event,
                    output.symbols.get(event.facility),
                    output.symbols.get(event.machine),
                )
            })
            .collect();
        (
            events,
            output.symbols.len(),
            &output.rejects.rejects,
            output.lines,
            format!("{:?}", output.report),
        )
    }

    /// Parses `feed` both ways, the plain rows' blocks scanned whole (where the processor can)
    /// and sixteen bytes at a time; the outputs must be equal.
    fn both_ways(feed: &[u8]) -> Result<(), TestCaseError> {
        let prepared = || PreparedFeed::prepare(feed, None).expect("a header");
        let plain = prepared();
        let [chunk] = plain.chunks_at(&[])[..] else {
            unreachable!("no cuts, one chunk")
        };
        let general = prepared().general_only().parse_chunk(chunk, &options());
        for plain in [plain, prepared().narrow_scan_only()] {
            let plain = plain.parse_chunk(chunk, &options());
            prop_assert_eq!(comparable(&plain), comparable(&general));
        }
        Ok(())
    }

    /// A byte a spoilt row may get: delimiters, quotes, blanks, line ends, digits, letters, the
    /// timestamp's punctuation, bytes that are not UTF-8.
    fn spoiling_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(b"|,\" \t\r\n09AZaz-:T+.\x80\xff".to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Rows spoilt anywhere - a byte replaced, dropped or put in - read the same by the
        /// plain rows' reader and by the general one: events, names, rejects and counts; with
        /// the columns in any order, a column imbtrack does not read among them.
        #[test]
        fn plain_rows_read_as_the_general_reader_reads_them(
            picks in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, spoiling_byte()), 0..3)), 1..40),
            crlf in any::<bool>(),
            order in Just((0..11).collect::<Vec<usize>>()).prop_shuffle(),
            in_order in any::<bool>(),
        ) {
            // The generator's ten columns and an eleventh no field is read from, in the
            // generator's order or shuffled.
            let order = if in_order { (0..11).collect() } else { order };
            let reordered = |columns: Vec<&[u8]>| -> Vec<u8> {
                order.iter().map(|&i| columns.get(i).copied().unwrap_or(b"Phase 1")).collect::<Vec<_>>().join(&b'|')
            };
            let rows = generated_rows();
            let mut header: Vec<&[u8]> = HEADER.as_bytes().split(|&b| b == b'|').collect();
            header.push(b"mailPhase");
            let mut feed = reordered(header);
            for (row, spoils) in &picks {
                let mut row = reordered(row.get(&rows).split(|&b| b == b'|').collect());
                for (at, how, byte) in spoils {
                    let at = at.index(row.len() + 1);
                    match how {
                        0 if at < row.len() => row[at] = *byte,
                        1 if at < row.len() => { row.remove(at); }
                        _ => row.insert(at, *byte),
                    }
                }
                feed.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                feed.extend_from_slice(&row);
            }
            feed.push(b'\n');
            both_ways(&feed)?;
        }
    }

    /// Every row of the generator's feed the plain rows' reader reads gives the event the
    /// general reader gives, with line feeds and with carriage returns too; and it reads every
    /// row the general reader accepts but those whose blocks run past the chunk's end.
    #[test]
    fn plain_rows_are_read_by_the_plain_reader() {
        let rows = generated_rows();
        for line_end in [&b"\n"[..], b"\r\n"] {
            let mut feed = HEADER.as_bytes().to_vec();
            feed.extend_from_slice(line_end);
            let mut starts = Vec::new();
            for row in &rows {
                starts.push(feed.len());
                feed.extend_from_slice(row);
                feed.extend_from_slice(line_end);
            }
            let prepared = PreparedFeed::prepare(&feed, None).expect("a header");
            let header = prepared.header().expect("a delimited feed");
            let reader = header.plain_rows().expect("the IV-MTR layout");
            let wide = reader.wide_scan;
            let (mut plain_symbols, mut general_symbols) = (SymbolTable::new(), SymbolTable::new());
            let mut recent_days = RecentDays::default();
            let (mut read_plain, mut accepted) = (0, 0); // the latter within the feed's whole blocks
            for (row, &start) in rows.iter().zip(&starts) {
                let mut record = crate::record::RawRecord::default();
                let general = match header.read_unquoted(row, &mut record) {
                    Some(Ok(())) => {
                        crate::record::build_event(&record, &options(), &mut general_symbols).ok()
                    }
                    _ => None,
                };
                // A row is read a whole block at a time, up to its newline's block.
                let blocks = (row.len() + line_end.len() - 1) / WIDE + 1;
                let within_the_feed = start + blocks * WIDE <= feed.len();
                accepted += usize::from(general.is_some() && within_the_feed);
                let mut events = Vec::new();
                let narrow = reader.read_row(
                    NarrowScan,
                    &feed,
                    start,
                    &options(),
                    &mut plain_symbols,
                    &mut recent_days,
                    &mut events,
                );
                if let Some(scan) = wide {
                    let read = reader.read_row(
                        scan,
                        &feed,
                        start,
                        &options(),
                        &mut plain_symbols,
                        &mut recent_days,
                        &mut events,
                    );
                    assert_eq!(read, narrow);
                }
                if let Some(newline) = narrow {
                    assert_eq!(events.pop(), general);
                    if wide.is_some() {
                        assert_eq!(events.pop(), general);
                    }
                    assert!(events.is_empty());
                    assert_eq!(newline, start + row.len() + line_end.len() - 1);
                    read_plain += 1;
                }
            }
            assert_eq!(read_plain, accepted, "{line_end:?}");
        }
    }

    /// Digits, now and then another byte.
    fn mostly_digits(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                40 => prop::sample::select(b"0123456789".to_vec()),
                1 => any::<u8>(),
            ],
            len,
        )
    }

    proptest! {
        /// Sixteen digits read in one vector are the number the byte loop reads, and no byte
        /// that is not a digit is taken.
        #[test]
        fn sixteen_digits_equal_the_byte_loop(digits in mostly_digits(16..=16)) {
            let digits: &[u8; 16] = digits.as_slice().try_into().expect("16 bytes");
            #[cfg(target_arch = "x86_64")]
            if WideScan::detect().is_some() {
                // SAFETY: the processor has the features, just checked.
                #[allow(unsafe_code)]
                let read = unsafe { wide_sixteen_digits(digits) };
                prop_assert_eq!(read, imbtrack_barcode::digits_value(digits));
            }
        }

        /// An IMb's key and routing ZIP read sixteen digits to a vector are the general
        /// reader's, for fields of every length around the IMb's.
        #[test]
        fn imb_keys_read_wide_equal_the_general_readers(imb in mostly_digits(18..=33)) {
            if let Some(scan) = WideScan::detect() {
                prop_assert_eq!(scan.imb_digits_key(&imb), imb_digits_key(&imb));
            }
        }

        /// The whole-block scan's masks are the sixteen-byte scan's, for any bytes (blocks of
        /// few distinct bytes, so that each searched byte is often there).
        #[test]
        fn whole_block_masks_equal_narrow_ones(
            block in prop::collection::vec(prop::sample::select(b"|\n\"a\x00\xff".to_vec()), WIDE),
            bytes in prop::array::uniform3(prop::sample::select(b"|\n\"a\x00\xff".to_vec())),
        ) {
            let block: &[u8; WIDE] = block.as_slice().try_into().expect("64 bytes");
            if let Some(scan) = WideScan::detect() {
                prop_assert_eq!(scan.masks(block, bytes), NarrowScan.masks(block, bytes));
            }
        }

        /// The whole-span compare is equality, for spans of every length around a block's,
        /// a byte changed anywhere or nowhere (spans cut from a longer buffer, so that a byte
        /// past the span differs).
        #[test]
        fn wide_span_compares_are_equality(
            span in prop::collection::vec(prop::sample::select(b"ab|".to_vec()), 0..=WIDE + 8),
            flip in any::<prop::sample::Index>(),
            flipped in any::<bool>(),
        ) {
            let mut other = span.clone();
            other.push(b'x');
            if flipped && !span.is_empty() {
                other[flip.index(span.len())] ^= 1;
            }
            let other = &other[..span.len()];
            if let Some(scan) = WideScan::detect() {
                prop_assert_eq!(scan.same_span(&span, other), span == other);
                prop_assert_eq!(scan.same_span(&span, other), NarrowScan.same_span(&span, other));
            }
        }
    }

    #[test]
    fn layouts_plain_rows_are_read_in() {
        let reader = |names: &[&str]| {
            let fields: Vec<_> = names
                .iter()
                .map(|name| crate::record::field_for_name(name))
                .collect();
            PlainRowReader::for_columns(&fields, b'|').map(|reader| reader.slots)
        };
        assert_eq!(
            reader(&[
                "scanDatetime",
                "x",
                "imb",
                "scanEventCode",
                "scanFacilityZip"
            ]),
            Some(vec![
                Slot::Time,
                Slot::Unread,
                Slot::Imb,
                Slot::Code,
                Slot::FacilityZip
            ])
        );
        // Site columns in any order; a field named twice, a date apart.
        assert_eq!(
            reader(&["machineName", "imb", "scanFacilityCity", "scanFacilityName"]),
            Some(vec![
                Slot::Machine,
                Slot::Imb,
                Slot::FacilityCity,
                Slot::FacilityName
            ])
        );
        assert_eq!(reader(&["imb", "imb"]), None);
        assert_eq!(reader(&["imb", "scanDate", "scanTime"]), None);
    }
}
