//! IV-MTR delimited files (`|` or `,`, a header row naming the columns, quoted fields, CRLF or
//! LF, UTF-8 BOM) and the headerless legacy IMb Tracing record.

use std::borrow::Cow;

use memchr::memchr;

use crate::plain_row::PlainRowReader;
use crate::record::{field_for_name, Field, RawRecord};
use crate::reject::RejectReason;
use crate::FeedError;

/// The columns of a delimited feed, by position.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    columns: Vec<Option<Field>>,
    delimiter: u8,
    /// The readers of the feed's plain rows, when its columns allow them.
    plain: Option<PlainRowReader>,
}

/// The legacy IMb Tracing record's columns, in the order its files give them.
const LEGACY_COLUMNS: [Field; 6] = [
    Field::ImbTracking,
    Field::ImbRouting,
    Field::FacilityZip,
    Field::Code,
    Field::Date,
    Field::TimeOfDay,
];

impl Header {
    /// Reads a header row; the delimiter is `|` if the row has one, else `,`.
    pub(crate) fn parse(line: &[u8]) -> Result<Header, FeedError> {
        let delimiter = if memchr(b'|', line).is_some() {
            b'|'
        } else {
            b','
        };
        let mut names = Vec::new();
        split_fields(line, delimiter, &mut names)
            .map_err(|_| FeedError::Header("unterminated quote".into()))?;
        let mut columns = Vec::with_capacity(names.len());
        for name in &names {
            let name = std::str::from_utf8(name)
                .map_err(|_| FeedError::Header("header is not UTF-8".into()))?;
            columns.push(field_for_name(name));
        }
        let has = |f: Field| columns.contains(&Some(f));
        if !(has(Field::Imb) || has(Field::ImbTracking) || has(Field::Impb)) {
            return Err(FeedError::Header(
                "no barcode column (imb, imbTrackingCode, impb or pic)".into(),
            ));
        }
        if !(has(Field::Time) || has(Field::Date)) {
            return Err(FeedError::Header("no scanDatetime column".into()));
        }
        for (field, name) in [
            (Field::Code, "scanEventCode"),
            (Field::FacilityZip, "scanFacilityZip"),
        ] {
            if !has(field) {
                return Err(FeedError::Header(format!("no {name} column")));
            }
        }
        Ok(Header::new(columns, delimiter))
    }

    /// A header of these columns, and the readers of its plain rows if they allow them.
    fn new(columns: Vec<Option<Field>>, delimiter: u8) -> Header {
        Header {
            plain: PlainRowReader::for_columns(&columns, delimiter),
            columns,
            delimiter,
        }
    }

    /// The readers of the feed's plain rows, if its columns allow them.
    pub(crate) fn plain_rows(&self) -> Option<&PlainRowReader> {
        self.plain.as_ref()
    }

    /// This header without its plain-row readers: every row read the general way, the twin
    /// the tests compare the plain rows' reader with.
    #[cfg(test)]
    pub(crate) fn general_only(&self) -> Header {
        Header {
            plain: None,
            ..self.clone()
        }
    }

    /// This header with its plain rows' blocks scanned sixteen bytes at a time.
    #[cfg(test)]
    pub(crate) fn narrow_scan_only(&self) -> Header {
        Header {
            plain: self.plain.as_ref().map(PlainRowReader::narrow_only),
            ..self.clone()
        }
    }

    /// The headerless legacy layout: tracking, routing, facility ZIP, op code, date, time.
    pub(crate) fn legacy() -> Header {
        Header::new(LEGACY_COLUMNS.iter().copied().map(Some).collect(), b',')
    }

    /// Whether `line` looks like a headerless legacy record: six comma-separated fields, the
    /// first a 20-digit tracking code.
    pub(crate) fn is_legacy_record(line: &[u8]) -> bool {
        let mut fields = line.trim_ascii().split(|&b| b == b',');
        let first = fields.next().unwrap_or_default();
        first.len() == 20 && first.iter().all(u8::is_ascii_digit) && fields.count() == 5
    }

    /// Reads a row without quotes (nearly all) into `record`, checking its column count: one
    /// pass, sixty-four bytes at a time, each value placed by its column as it is found.
    /// `None` when the row holds a quote: [`Header::read_quoted`] reads it.
    ///
    /// A row whose count is right sets the field of every column, so a caller may keep one
    /// record for all its rows: no value of an earlier row is left in it (fields no column
    /// names are never set).
    pub(crate) fn read_unquoted<'i>(
        &self,
        line: &'i [u8],
        record: &mut RawRecord<'i>,
    ) -> Option<Result<(), RejectReason>> {
        let mut column = 0;
        let mut start = 0;
        let unquoted = for_each_delimiter(line, self.delimiter, |end| {
            if let Some(Some(field)) = self.columns.get(column) {
                record.set(*field, &line[start..end]);
            }
            column += 1;
            start = end + 1;
        });
        if !unquoted {
            return None;
        }
        if let Some(Some(field)) = self.columns.get(column) {
            record.set(*field, &line[start..]);
        }
        record.set_line(line);
        Some(self.check_count(column + 1))
    }

    /// Reads a row with quotes into `record` (which starts empty), split by [`split_fields`]
    /// into `fields`, reused between rows, which the record then borrows.
    pub(crate) fn read_quoted<'r, 'i: 'r>(
        &self,
        line: &'i [u8],
        fields: &'r mut Vec<Cow<'i, [u8]>>,
        record: &mut RawRecord<'r>,
    ) -> Result<(), RejectReason> {
        split_fields(line, self.delimiter, fields)?;
        self.check_count(fields.len())?;
        for (column, value) in self.columns.iter().zip(fields.iter()) {
            if let Some(field) = column {
                record.set(*field, value);
            }
        }
        Ok(())
    }

    fn check_count(&self, found: usize) -> Result<(), RejectReason> {
        if found == self.columns.len() {
            Ok(())
        } else {
            Err(RejectReason::ColumnCount {
                expected: self.columns.len(),
                found,
            })
        }
    }
}

/// Calls `on_delimiter` with the position of each `delimiter` byte, in order, sixteen bytes at
/// a time. Returns false, having stopped early, when the line holds a double quote.
pub(crate) fn for_each_delimiter(
    line: &[u8],
    delimiter: u8,
    mut on_delimiter: impl FnMut(usize),
) -> bool {
    let mut each = |at: usize, mut delimiters: u64| {
        while delimiters != 0 {
            on_delimiter(at + delimiters.trailing_zeros() as usize);
            delimiters &= delimiters - 1;
        }
    };
    let mut blocks = line.chunks_exact(WIDE);
    let mut at = 0;
    for block in blocks.by_ref() {
        let [delimiters, quotes] =
            wide_masks(block.try_into().expect("blocks of 64"), [delimiter, b'"']);
        if quotes != 0 {
            return false;
        }
        each(at, delimiters);
        at += WIDE;
    }
    let tail = blocks.remainder();
    if tail.is_empty() {
        return true;
    }
    // The line's last 64 bytes, those already seen shifted out; a line shorter than that is
    // copied to the end of a zeroed block (no delimiter is a zero byte).
    let seen = WIDE - tail.len();
    let mut padded = [0u8; WIDE];
    let last = match line.last_chunk::<WIDE>() {
        Some(last) => last,
        None => {
            padded[seen..].copy_from_slice(tail);
            &padded
        }
    };
    let [delimiters, quotes] = wide_masks(last, [delimiter, b'"']);
    if quotes >> seen != 0 {
        return false;
    }
    each(at, delimiters >> seen);
    true
}

/// Bytes a line is scanned by at a time: a record of 100-130 bytes is two blocks.
pub(crate) const WIDE: usize = 64;

/// [`block_masks`] of 64 bytes: four blocks of sixteen, their masks side by side. Inlined
/// always: called as a function, it kept its masks in memory and cost twice the instructions.
#[inline(always)]
pub(crate) fn wide_masks<const N: usize>(block: &[u8; WIDE], bytes: [u8; N]) -> [u64; N] {
    let mut masks = [0u64; N];
    for (i, part) in block.chunks_exact(16).enumerate() {
        let part_masks = block_masks(part.try_into().expect("blocks of 16"), bytes);
        for (mask, part_mask) in masks.iter_mut().zip(part_masks) {
            *mask |= u64::from(part_mask) << (16 * i);
        }
    }
    masks
}

/// Bit i of mask j set where byte i of `block` is `bytes[j]`: a compare of sixteen bytes for
/// each.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)]
fn block_masks<const N: usize>(block: &[u8; 16], bytes: [u8; N]) -> [u32; N] {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: these intrinsics need SSE2 only, which this build targets (the cfg above; every
    // x86_64 has it); the one load reads the sixteen bytes `block` holds, unaligned.
    unsafe {
        let loaded = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        bytes
            .map(|byte| _mm_movemask_epi8(_mm_cmpeq_epi8(loaded, _mm_set1_epi8(byte as i8))) as u32)
    }
}

/// [`block_masks`] elsewhere, and its twin in the tests: one byte at a time.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn block_masks_bytewise<const N: usize>(block: &[u8; 16], bytes: [u8; N]) -> [u32; N] {
    bytes.map(|byte| {
        block
            .iter()
            .enumerate()
            .fold(0u32, |mask, (i, &b)| mask | u32::from(b == byte) << i)
    })
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use block_masks_bytewise as block_masks;

/// Splits a line into fields. Unquoted fields, and quoted ones without doubled quotes, borrow
/// from the line; only a quoted field with `""` inside is copied. Quoted newlines are not
/// supported: a record is a line, which is what lets a file be cut into chunks at any newline.
pub(crate) fn split_fields<'i>(
    line: &'i [u8],
    delimiter: u8,
    fields: &mut Vec<Cow<'i, [u8]>>,
) -> Result<(), RejectReason> {
    fields.clear();
    let mut pos = 0;
    loop {
        let rest = &line[pos..];
        let leading = rest.len() - rest.trim_ascii_start().len();
        if rest.get(leading) != Some(&b'"') {
            match memchr(delimiter, rest) {
                Some(d) => {
                    fields.push(Cow::Borrowed(&rest[..d]));
                    pos += d + 1;
                    continue;
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(());
                }
            }
        }
        let (field, after) = quoted_field(line, pos + leading + 1)?;
        fields.push(field);
        // Anything between the closing quote and the delimiter is dropped.
        match memchr(delimiter, &line[after..]) {
            Some(d) => pos = after + d + 1,
            None => return Ok(()),
        }
    }
}

/// The quoted field whose inside starts at `open`, and the position after its closing quote.
fn quoted_field(line: &[u8], open: usize) -> Result<(Cow<'_, [u8]>, usize), RejectReason> {
    let mut copy: Option<Vec<u8>> = None;
    let mut i = open;
    loop {
        let quote = i + memchr(b'"', &line[i..]).ok_or(RejectReason::UnterminatedQuote)?;
        if line.get(quote + 1) == Some(&b'"') {
            copy.get_or_insert_with(Vec::new)
                .extend_from_slice(&line[i..=quote]);
            i = quote + 2;
            continue;
        }
        let field = match copy {
            Some(mut c) => {
                c.extend_from_slice(&line[i..quote]);
                Cow::Owned(c)
            }
            None => Cow::Borrowed(&line[open..quote]),
        };
        return Ok((field, quote + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str, delimiter: u8) -> Result<Vec<String>, RejectReason> {
        let mut fields = Vec::new();
        split_fields(line.as_bytes(), delimiter, &mut fields)?;
        Ok(fields
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect())
    }

    #[test]
    fn quoting() {
        assert_eq!(split("a|b||c", b'|').unwrap(), ["a", "b", "", "c"]);
        assert_eq!(split("\"a,1\",b", b',').unwrap(), ["a,1", "b"]);
        assert_eq!(
            split("\"say \"\"hi\"\"\",x", b',').unwrap(),
            ["say \"hi\"", "x"]
        );
        assert_eq!(split("x, \"y\" ,\"\"", b',').unwrap(), ["x", "y", ""]);
        assert_eq!(split("a,\"b", b','), Err(RejectReason::UnterminatedQuote));
    }

    /// The naive twin of [`for_each_delimiter`].
    fn naive_delimiters(line: &[u8], delimiter: u8) -> Option<Vec<usize>> {
        if line.contains(&b'"') {
            return None;
        }
        Some(
            line.iter()
                .enumerate()
                .filter(|(_, &b)| b == delimiter)
                .map(|(i, _)| i)
                .collect(),
        )
    }

    proptest::proptest! {
        #[test]
        fn block_masks_equal_the_byte_loop(block in proptest::array::uniform16(proptest::sample::select(vec![b'|', b',', b'"', b'\n', b'a', 0, 0xFF]))) {
            let bytes = [b'|', b',', b'"', b'\n'];
            proptest::prop_assert_eq!(block_masks(&block, bytes), block_masks_bytewise(&block, bytes));
        }

        #[test]
        fn delimiter_scan_equals_naive(
            mut line in proptest::collection::vec(proptest::sample::select(vec![b'|', b'a', b'"', 0x80, 0xFF, 0, b'9']), 0..200),
            unquote in proptest::bool::ANY,
        ) {
            // Half the lines lose their quotes, so long ones are scanned to the end too.
            if unquote {
                line.retain(|&b| b != b'"');
            }
            let mut found = Vec::new();
            let unquoted = for_each_delimiter(&line, b'|', |i| found.push(i));
            let naive = naive_delimiters(&line, b'|');
            proptest::prop_assert_eq!(unquoted, naive.is_some());
            if let Some(naive) = naive {
                proptest::prop_assert_eq!(found, naive);
            }
        }

        /// The quoted path agrees with the fast path on any fields without quotes.
        #[test]
        fn quoted_equals_plain(fields in proptest::collection::vec("[a-z0-9 ]{0,6}", 1..8)) {
            let plain = fields.join("|");
            let quoted = fields.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join("|");
            let trimmed: Vec<String> = fields.to_vec();
            proptest::prop_assert_eq!(split(&plain, b'|').unwrap(), trimmed.clone());
            proptest::prop_assert_eq!(split(&quoted, b'|').unwrap(), trimmed);
        }
    }
}
