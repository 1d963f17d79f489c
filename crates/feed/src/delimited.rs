//! IV-MTR delimited files (`|` or `,`, a header row naming the columns, quoted fields, CRLF or
//! LF, UTF-8 BOM) and the headerless legacy IMb Tracing record.

use std::borrow::Cow;

use memchr::memchr;

use crate::record::{field_for_name, Field, RawRecord};
use crate::reject::RejectReason;
use crate::FeedError;

/// The columns of a delimited feed, by position.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    columns: Vec<Option<Field>>,
    delimiter: u8,
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
        Ok(Header { columns, delimiter })
    }

    /// The headerless legacy layout: tracking, routing, facility ZIP, op code, date, time.
    pub(crate) fn legacy() -> Header {
        Header {
            columns: LEGACY_COLUMNS.iter().copied().map(Some).collect(),
            delimiter: b',',
        }
    }

    /// Whether `line` looks like a headerless legacy record: six comma-separated fields, the
    /// first a 20-digit tracking code.
    pub(crate) fn is_legacy_record(line: &[u8]) -> bool {
        let mut fields = line.trim_ascii().split(|&b| b == b',');
        let first = fields.next().unwrap_or_default();
        first.len() == 20 && first.iter().all(u8::is_ascii_digit) && fields.count() == 5
    }

    /// Reads a row into a record, checking its column count. A line without quotes (nearly
    /// all) is split in one pass, eight bytes at a time, each value placed by its column as it
    /// is found; a line with quotes is split by [`split_fields`] into `fields`, reused between
    /// lines, which the record then borrows.
    pub(crate) fn read<'r, 'i: 'r>(
        &self,
        line: &'i [u8],
        fields: &'r mut Vec<Cow<'i, [u8]>>,
    ) -> Result<RawRecord<'r>, RejectReason> {
        let mut record = RawRecord::default();
        let mut column = 0;
        let mut start = 0;
        let unquoted = for_each_delimiter(line, self.delimiter, |end| {
            if let Some(Some(field)) = self.columns.get(column) {
                record.set(*field, &line[start..end]);
            }
            column += 1;
            start = end + 1;
        });
        if unquoted {
            if let Some(Some(field)) = self.columns.get(column) {
                record.set(*field, &line[start..]);
            }
            return self.check_count(column + 1).map(|()| record);
        }
        split_fields(line, self.delimiter, fields)?;
        self.check_count(fields.len())?;
        let mut record = RawRecord::default();
        for (column, value) in self.columns.iter().zip(fields.iter()) {
            if let Some(field) = column {
                record.set(*field, value);
            }
        }
        Ok(record)
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

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// The high bit of each byte of `x` that is zero, and no other bit (exact: no borrow crosses
/// bytes, unlike the shorter `(x - ONES) & !x` form).
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// Calls `on_delimiter` with the position of each `delimiter` byte, in order, eight bytes at a
/// time. Returns false, having stopped early, when the line holds a double quote.
pub(crate) fn for_each_delimiter(
    line: &[u8],
    delimiter: u8,
    mut on_delimiter: impl FnMut(usize),
) -> bool {
    let (delimiters, quotes) = (ONES * u64::from(delimiter), ONES * u64::from(b'"'));
    let mut chunks = line.chunks_exact(8);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        if zero_bytes(word ^ quotes) != 0 {
            return false;
        }
        let mut hits = zero_bytes(word ^ delimiters);
        while hits != 0 {
            on_delimiter(i * 8 + hits.trailing_zeros() as usize / 8);
            hits &= hits - 1;
        }
    }
    let tail = line.len() - chunks.remainder().len();
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == b'"' {
            return false;
        }
        if b == delimiter {
            on_delimiter(tail + i);
        }
    }
    true
}

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
        fn delimiter_scan_equals_naive(line in proptest::collection::vec(proptest::sample::select(vec![b'|', b'a', b'"', 0x80, 0xFF, 0, b'9']), 0..70)) {
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
