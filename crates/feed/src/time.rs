//! Scan timestamps: ISO 8601 with an offset or `Z` (fractions of a second allowed, `T` or a
//! space between date and time, offsets `±HH`, `±HHMM`, `±HH:MM`), and the legacy IMb Tracing
//! form `M/D/YYYY` + `hh:mmAM`. A time without an offset takes the source's default offset or is
//! rejected. Everything becomes milliseconds since the Unix epoch, UTC.

use imbtrack_barcode::eight_digits;

use crate::event::word_at;

/// Why a timestamp was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not a timestamp of any accepted form.
    Malformed,
    /// A field out of range (month 13, day 31 of a 30-day month, hour 25, offset beyond ±18 h).
    OutOfRange,
    /// No UTC offset, and the source gives no default.
    WithoutOffset,
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `YYYY-MM-DD` date (a real day, years 1000 to 9999) as days since the epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (i64::from(digits(0..4)?), digits(5..7)?, digits(8..10)?);
    let days = days_from_civil(year, month, day);
    (year >= 1000 && civil_from_days(days) == (year, month, day)).then_some(days)
}

/// The date of a day number from [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Milliseconds in a (UTC) day: buckets, retention windows and day queries count in these.
pub const DAY_MS: i64 = 86_400_000;

/// Formats epoch milliseconds as RFC 3339 UTC (`2025-01-15T15:00:00Z`, `.123` when there are
/// milliseconds).
pub fn format_utc(time_ms: i64) -> String {
    let days = time_ms.div_euclid(DAY_MS);
    let ms = time_ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{frac:03}Z");
    }
    // Digits written in place: every scan of every answer goes through here, and the
    // formatting machinery costs several times more.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, y as u32);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h as u32);
    put(14, 2, min as u32);
    put(17, 2, s as u32);
    put(20, 3, frac as u32);
    let len = if frac == 0 {
        text[19] = b'Z';
        20
    } else {
        24
    };
    String::from_utf8_lossy(&text[..len]).into_owned()
}

/// A cursor over ASCII bytes with the few reads timestamps need.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    /// Exactly `n` digits.
    fn digits(&mut self, n: usize) -> Result<u32, TimeError> {
        let field = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or(TimeError::Malformed)?;
        let mut value = 0u32;
        for &b in field {
            if !b.is_ascii_digit() {
                return Err(TimeError::Malformed);
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos += n;
        Ok(value)
    }

    /// One to `max` digits.
    fn some_digits(&mut self, max: usize) -> Result<u32, TimeError> {
        let n = self.bytes[self.pos..]
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n == 0 {
            return Err(TimeError::Malformed);
        }
        self.digits(n)
    }

    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

/// 1970-01-01 counted in days from the start of year -399 (year 1, four hundred years back).
const EPOCH_DAYS_FROM_MINUS_400: i64 = 719_162 + 146_097;

/// Milliseconds since the epoch of a date and time of day (years are four digits in every
/// accepted form), or why not. Unsigned arithmetic: a division of an unsigned number by a
/// constant is a multiply and a shift, where the signed, Euclidean ones of [`days_from_civil`]
/// cost several times more, and every record pays them.
fn epoch_ms(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    ms: u32,
) -> Result<i64, TimeError> {
    Ok(epoch_days(year, month, day)? * DAY_MS + ms_into_day(hour, minute, second, ms)?)
}

/// Days since the epoch of a date (see [`epoch_ms`]), or why not.
fn epoch_days(year: u32, month: u32, day: u32) -> Result<i64, TimeError> {
    debug_assert!(year <= 9999);
    /// Days of the year before each month's first, in a common year.
    const DAYS_BEFORE: [u32; 13] = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&month) || day == 0 || day > month_days {
        return Err(TimeError::OutOfRange);
    }
    // Days before the year counted from year -399, so nothing goes below zero.
    let y = year + 399;
    let days_before_year = y * 365 + y / 4 - y / 100 + y / 400;
    let day_of_year = DAYS_BEFORE[month as usize] + u32::from(leap && month > 2) + day - 1;
    Ok(i64::from(days_before_year + day_of_year) - EPOCH_DAYS_FROM_MINUS_400)
}

/// Milliseconds into its day of a time of day, or why not.
fn ms_into_day(hour: u32, minute: u32, second: u32, ms: u32) -> Result<i64, TimeError> {
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimeError::OutOfRange);
    }
    // A leap second is folded into the next second's start; scans are not that precise.
    let seconds = i64::from(hour * 3600 + minute * 60 + second.min(59));
    Ok(seconds * 1000 + i64::from(ms))
}

/// Reads `Z`, `±HH`, `±HHMM` or `±HH:MM` (minutes east of UTC), or nothing.
fn offset(cursor: &mut Cursor<'_>) -> Result<Option<i32>, TimeError> {
    let sign = match cursor.peek() {
        None => return Ok(None),
        Some(b'Z' | b'z') => {
            cursor.pos += 1;
            return Ok(Some(0));
        }
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(_) => return Err(TimeError::Malformed),
    };
    cursor.pos += 1;
    let hours = cursor.digits(2)?;
    let minutes = if cursor.at_end() {
        0
    } else {
        cursor.eat(b':');
        cursor.digits(2)?
    };
    minutes_east(sign, hours, minutes).map(Some)
}

/// An offset's minutes east of UTC from its sign (±1), hours (up to 18) and minutes.
fn minutes_east(sign: i32, hours: u32, minutes: u32) -> Result<i32, TimeError> {
    if hours > 18 || minutes > 59 {
        return Err(TimeError::OutOfRange);
    }
    Ok(sign * (hours * 60 + minutes) as i32)
}

fn apply_offset(
    local_ms: i64,
    offset: Option<i32>,
    default_offset: Option<i32>,
) -> Result<i64, TimeError> {
    let minutes = offset.or(default_offset).ok_or(TimeError::WithoutOffset)?;
    Ok(local_ms - i64::from(minutes) * 60_000)
}

/// Parses one timestamp field. `default_offset` (minutes east of UTC) applies to times that
/// carry none. Legacy `M/D/YYYY hh:mmAM` is accepted here too.
pub fn parse_timestamp(text: &[u8], default_offset: Option<i32>) -> Result<i64, TimeError> {
    let text = text.trim_ascii();
    fixed_rfc3339(text, None).unwrap_or_else(|| any_timestamp(text, default_offset))
}

/// The start of the days (date and UTC offset) of a feed's recent timestamps, so that
/// [`fixed_rfc3339`] reads a timestamp of one of them by its time of day alone: a feed's
/// rows fall on a few days, and the calendar's arithmetic was a third of a timestamp's cost.
pub(crate) struct RecentDays {
    /// By a hash of the day's text (`YYYY-MM-` as a word, then `DD` and the offset's
    /// `±HH:MM`, if any, in another): that text and the day's start, ms since the epoch. A
    /// text word of zero (no `-` in it) names no day. On the heap: 24 KiB.
    days: Box<[(u64, u64, i64); RECENT_DAYS]>,
}

/// Days [`RecentDays`] keeps, by slot: a day's file holds a few dates at each of its plants'
/// offsets, but a backlog or a package feed spans months of them (an 80-day feed has ~400
/// dates and offsets), and with 64 slots most of its timestamps found theirs taken by another
/// day (with 1,024 such a feed parses ~11 % faster, a few days' feed as fast).
const RECENT_BITS: u32 = 10;
const RECENT_DAYS: usize = 1 << RECENT_BITS;

impl Default for RecentDays {
    fn default() -> Self {
        RecentDays {
            days: Box::new([(0, 0, 0); RECENT_DAYS]),
        }
    }
}

impl RecentDays {
    /// [`day_start`] of [`whole_seconds`]' words, kept here for the timestamps after; `None`
    /// when they hold no day ([`day_in_place`]). Only days in place are kept, so a day found
    /// here, its text the same bytes, is not checked again. Inlined always: as a call, a
    /// timestamp paid ~20 instructions more.
    #[inline(always)]
    fn day_start(
        &mut self,
        date: u64,
        middle: u64,
        zone: Option<u64>,
    ) -> Option<Result<i64, TimeError>> {
        // The day's text: the date word, then "DD" and the offset's "±HH:MM" (its word less
        // the seconds), which no timestamp without an offset has.
        let day_text = middle & 0xFFFF | zone.map_or(0, |zone| zone >> 16 << 16);
        let hash = (date ^ day_text.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &mut self.days[(hash >> (64 - RECENT_BITS)) as usize];
        if slot.0 == date && slot.1 == day_text {
            return Some(Ok(slot.2));
        }
        if !day_in_place(date, middle, zone) {
            return None;
        }
        let start = day_start(date, middle, zone);
        if let Ok(start) = start {
            *slot = (date, day_text, start);
        }
        Some(start)
    }
}

/// The digits' bytes of [`whole_seconds`]' words: `YYYY-MM-`, `DDTHH:MM`'s `DD`, `HH:MM:SS`
/// and `SS±HH:MM`'s offset.
const DATE_DIGITS: u64 = 0x00FF_FF00_FFFF_FFFF;
const MIDDLE_DIGITS: u64 = 0xFFFF;
const TIME_DIGITS: u64 = 0xFFFF_00FF_FF00_FFFF;
const ZONE_DIGITS: u64 = 0xFFFF_00FF_FF00_0000;

/// Eight ASCII `'0'`s: a digit's byte XOR this is its value.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// Whether every byte of `words` that `lanes` selects is below ten. A byte of ten or more
/// has a high nibble, or gets one when six is added; the carry out of a byte of 0xFA or more
/// can only make the next byte look larger, so nothing is ever let through wrongly.
fn all_below_ten<const N: usize>(words: [u64; N], lanes: [u64; N]) -> bool {
    words.iter().zip(lanes).all(|(&word, lanes)| {
        (word | word.wrapping_add(0x0606_0606_0606_0606)) & 0xF0F0_F0F0_F0F0_F0F0 & lanes == 0
    })
}

/// The two-digit numbers of `word`'s digit pairs (its bytes, less `'0'`, masked by `lanes` to
/// the digits): byte i of the result is ten times byte i plus byte i + 1, for every pair at
/// once. No byte carries into the next: a pair is at most 99.
fn digit_pairs(word: u64, lanes: u64) -> u64 {
    let digits = (word ^ ASCII_ZEROS) & lanes;
    digits.wrapping_mul(10).wrapping_add(digits >> 8)
}

/// Byte `at` of `word`.
fn byte_of(word: u64, at: u32) -> u32 {
    (word >> (8 * at)) as u32 & 0xFF
}

/// `YYYY-MM-DDTHH:MM:SS`, optionally `.fff` or `.ffffff`, then `Z` or `±HH:MM`: the forms
/// nearly every feed writes, read from overlapping words at fixed positions, every digit pair
/// in a word converted at once; `None` for any other shape, which [`any_timestamp`] reads.
/// Where it answers it answers as [`any_timestamp`] does, range errors included. A feed's
/// reader passes its [`RecentDays`]; a lone timestamp has none to keep.
pub(crate) fn fixed_rfc3339(
    text: &[u8],
    recent: Option<&mut RecentDays>,
) -> Option<Result<i64, TimeError>> {
    let fraction_digits = match text.len() {
        20 | 25 => return whole_seconds(text, 0, recent),
        24 | 29 => 3,
        27 | 32 => 6,
        _ => return None,
    };
    // Milliseconds or microseconds after the seconds: the whole seconds' form once they are
    // taken out, and the milliseconds they give (microseconds cut, as `any_timestamp` does).
    let (head, rest) = text.split_at(19);
    let (fraction, zone) = rest.split_at(1 + fraction_digits);
    let (b'.', digits) = fraction.split_first()? else {
        return None;
    };
    let mut padded = [b'0'; 8];
    padded[8 - digits.len()..].copy_from_slice(digits);
    let ms = eight_digits(padded)? / if digits.len() == 6 { 1000 } else { 1 };
    let mut whole = [0u8; 25];
    whole[..19].copy_from_slice(head);
    whole[19..19 + zone.len()].copy_from_slice(zone);
    whole_seconds(&whole[..19 + zone.len()], ms as u32, recent)
}

/// [`fixed_rfc3339`] of `YYYY-MM-DDTHH:MM:SS` then `Z` or `±HH:MM`, `ms` milliseconds after.
/// Inlined always: as a call, every timestamp of a feed paid ~20 instructions more.
#[inline(always)]
fn whole_seconds(
    text: &[u8],
    ms: u32,
    recent: Option<&mut RecentDays>,
) -> Option<Result<i64, TimeError>> {
    // "YYYY-MM-", "DDTHH:MM", "HH:MM:SS" and, with an offset, "SS±HH:MM" (the offset's word
    // overlaps the time's so that it ends where the text does).
    let zone = match text.len() {
        20 => None,
        25 => Some(word_at(text, 17)),
        _ => return None,
    };
    let (date, middle, time) = (word_at(text, 0), word_at(text, 8), word_at(text, 11));
    // The time of day, each timestamp's own: "HH:MM:SS" after a 'T', then a 'Z' if no offset.
    let time_in_place = time & 0x0000_FF00_00FF_0000 == 0x0000_3A00_003A_0000
        && matches!(text[10], b'T' | b't' | b' ')
        && (zone.is_some() || matches!(text[19], b'Z' | b'z'))
        && all_below_ten([time ^ ASCII_ZEROS], [TIME_DIGITS]);
    if !time_in_place {
        return None;
    }
    let time = digit_pairs(time, TIME_DIGITS);
    let into_day = ms_into_day(byte_of(time, 0), byte_of(time, 3), byte_of(time, 6), ms);
    // The day's text: checked here, or found among the recent days, all checked when kept.
    let start = match recent {
        Some(recent) => recent.day_start(date, middle, zone)?,
        None => day_in_place(date, middle, zone).then(|| day_start(date, middle, zone))?,
    };
    match start {
        Ok(start) => Some(into_day.map(|into_day| start + into_day)),
        Err(e) => Some(Err(e)),
    }
}

/// Whether [`whole_seconds`]' words hold a day where they should: `YYYY-MM-` and `DD` digits
/// and dashes, and the offset's `±HH:MM` if there is one.
fn day_in_place(date: u64, middle: u64, zone: Option<u64>) -> bool {
    let zone_in_place = zone.is_none_or(|zone| {
        zone & 0x0000_FF00_0000_0000 == 0x0000_3A00_0000_0000
            && matches!(byte_of(zone, 2) as u8, b'+' | b'-')
    });
    // Digits in place: each of those bytes, less '0', below ten.
    let values = [
        date ^ ASCII_ZEROS,
        middle ^ ASCII_ZEROS,
        zone.map_or(0, |zone| zone ^ ASCII_ZEROS),
    ];
    date & 0xFF00_00FF_0000_0000 == 0x2D00_002D_0000_0000
        && zone_in_place
        && all_below_ten(values, [DATE_DIGITS, MIDDLE_DIGITS, ZONE_DIGITS])
}

/// The start, ms since the epoch, of the day that [`whole_seconds`]' words name: its date at
/// its offset (UTC without one).
fn day_start(date: u64, middle: u64, zone: Option<u64>) -> Result<i64, TimeError> {
    let date = digit_pairs(date, DATE_DIGITS);
    let year = byte_of(date, 0) * 100 + byte_of(date, 2);
    let day = byte_of(digit_pairs(middle, MIDDLE_DIGITS), 0);
    let days = epoch_days(year, byte_of(date, 5), day)?;
    let east = match zone {
        None => 0,
        Some(zone) => {
            let sign = if byte_of(zone, 2) == u32::from(b'-') {
                -1
            } else {
                1
            };
            let pairs = digit_pairs(zone, ZONE_DIGITS);
            minutes_east(sign, byte_of(pairs, 3), byte_of(pairs, 6))?
        }
    };
    Ok(days * DAY_MS - i64::from(east) * 60_000)
}

/// Every accepted timestamp form, read field by field.
fn any_timestamp(text: &[u8], default_offset: Option<i32>) -> Result<i64, TimeError> {
    if text.contains(&b'/') {
        let split = text
            .iter()
            .position(|&b| b == b' ' || b == b'T')
            .ok_or(TimeError::Malformed)?;
        return parse_date_and_time(&text[..split], &text[split + 1..], default_offset);
    }
    let mut c = Cursor {
        bytes: text,
        pos: 0,
    };
    let year = c.digits(4)?;
    if !c.eat(b'-') {
        return Err(TimeError::Malformed);
    }
    let month = c.digits(2)?;
    if !c.eat(b'-') {
        return Err(TimeError::Malformed);
    }
    let day = c.digits(2)?;
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(TimeError::Malformed);
    }
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return Err(TimeError::Malformed);
    }
    let minute = c.digits(2)?;
    let second = if c.eat(b':') { c.digits(2)? } else { 0 };
    let mut ms = 0;
    if c.eat(b'.') || c.eat(b',') {
        let start = c.pos;
        let fraction = c.some_digits(9)?;
        let digits = (c.pos - start) as u32;
        ms = if digits >= 3 {
            fraction / 10u32.pow(digits - 3)
        } else {
            fraction * 10u32.pow(3 - digits)
        };
    }
    let local = epoch_ms(year, month, day, hour, minute, second, ms)?;
    let zone = offset(&mut c)?;
    if !c.at_end() {
        return Err(TimeError::Malformed);
    }
    apply_offset(local, zone, default_offset)
}

/// Parses the legacy record's separate date (`M/D/YYYY`) and time (`hh:mmAM`, `hh:mm AM`,
/// `HH:MM` or `HH:MM:SS`, optionally followed by an offset) fields.
pub fn parse_date_and_time(
    date: &[u8],
    time: &[u8],
    default_offset: Option<i32>,
) -> Result<i64, TimeError> {
    let mut d = Cursor {
        bytes: date.trim_ascii(),
        pos: 0,
    };
    let month = d.some_digits(2)?;
    if !d.eat(b'/') {
        return Err(TimeError::Malformed);
    }
    let day = d.some_digits(2)?;
    if !d.eat(b'/') {
        return Err(TimeError::Malformed);
    }
    let year = d.digits(4)?;
    if !d.at_end() {
        return Err(TimeError::Malformed);
    }
    let mut t = Cursor {
        bytes: time.trim_ascii(),
        pos: 0,
    };
    let mut hour = t.some_digits(2)?;
    if !t.eat(b':') {
        return Err(TimeError::Malformed);
    }
    let minute = t.digits(2)?;
    let second = if t.eat(b':') { t.digits(2)? } else { 0 };
    t.eat(b' ');
    let meridiem = match t.peek().map(|b| b.to_ascii_uppercase()) {
        Some(m @ (b'A' | b'P')) => {
            t.pos += 1;
            if !(t.eat(b'M') || t.eat(b'm')) {
                return Err(TimeError::Malformed);
            }
            Some(m)
        }
        _ => None,
    };
    if let Some(m) = meridiem {
        if hour == 0 || hour > 12 {
            return Err(TimeError::OutOfRange);
        }
        hour = hour % 12 + if m == b'P' { 12 } else { 0 };
    }
    let local = epoch_ms(year, month, day, hour, minute, second, 0)?;
    t.eat(b' ');
    let zone = offset(&mut t)?;
    if !t.at_end() {
        return Err(TimeError::Malformed);
    }
    apply_offset(local, zone, default_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_round_trips() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_736_953_200_123), "2025-01-15T15:00:00.123Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
        for ms in [
            0,
            1,
            999,
            86_399_999,
            951_782_400_000,
            4_102_444_799_999,
            -86_400_001,
        ] {
            let text = format_utc(ms);
            assert_eq!(parse_timestamp(text.as_bytes(), None), Ok(ms), "{text}");
        }
    }

    /// A backlog of more dates and offsets than the recent days have slots, read twice
    /// through one cache (so slots are taken over, and a day meets its slot holding another),
    /// reads as each timestamp does alone.
    #[test]
    fn a_backlog_of_more_days_than_slots_reads_as_alone() {
        let mut recent = RecentDays::default();
        let zones = ["Z", "-05:00", "+05:30", "-10:00"];
        let stamps: Vec<String> = (0..2 * RECENT_DAYS as i64)
            .map(|n| {
                let day = format_utc(1_700_000_000_000 + n / 4 * DAY_MS);
                format!("{}T13:04:05{}", &day[..10], zones[n as usize % 4])
            })
            .collect();
        for text in stamps.iter().chain(&stamps) {
            let alone = fixed_rfc3339(text.as_bytes(), None);
            assert!(alone.is_some(), "{text}");
            assert_eq!(
                fixed_rfc3339(text.as_bytes(), Some(&mut recent)),
                alone,
                "{text}"
            );
        }
    }

    #[test]
    fn dates_parse_only_when_they_exist() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "24-01-01",
            "2024-01-01T",
            "+024-01-01",
            "0999-12-31",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    fn utc(text: &str) -> Result<String, TimeError> {
        parse_timestamp(text.as_bytes(), None).map(format_utc)
    }

    #[test]
    fn iso_forms() {
        assert_eq!(
            utc("2025-01-15T10:00:00-05:00").unwrap(),
            "2025-01-15T15:00:00Z"
        );
        assert_eq!(utc("2025-01-15T10:00:00Z").unwrap(), "2025-01-15T10:00:00Z");
        assert_eq!(
            utc("2025-01-15 10:00:00.123456-0500").unwrap(),
            "2025-01-15T15:00:00.123Z"
        );
        assert_eq!(
            utc("2025-01-15T10:00:00.5+01").unwrap(),
            "2025-01-15T09:00:00.500Z"
        );
        assert_eq!(utc("2024-02-29T23:59Z").unwrap(), "2024-02-29T23:59:00Z");
        assert_eq!(
            utc("2025-01-01T00:30:00+01:00").unwrap(),
            "2024-12-31T23:30:00Z"
        );
    }

    #[test]
    fn faults() {
        assert_eq!(utc("2025-01-15T10:00:00"), Err(TimeError::WithoutOffset));
        assert_eq!(
            parse_timestamp(b"2025-01-15T10:00:00", Some(-300))
                .map(format_utc)
                .unwrap(),
            "2025-01-15T15:00:00Z"
        );
        assert_eq!(utc("2025-02-29T10:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(utc("2025-13-01T10:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(utc("2025-01-15T24:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(utc("2025-01-15T10:00:00+19:00"), Err(TimeError::OutOfRange));
        assert_eq!(utc("2025-01-15"), Err(TimeError::Malformed));
        assert_eq!(utc("yesterday"), Err(TimeError::Malformed));
        assert_eq!(utc("2025-01-15T10:00:00Zjunk"), Err(TimeError::Malformed));
        assert_eq!(utc(""), Err(TimeError::Malformed));
    }

    #[test]
    fn legacy_forms() {
        let legacy = |d: &str, t: &str| {
            parse_date_and_time(d.as_bytes(), t.as_bytes(), Some(-480)).map(format_utc)
        };
        assert_eq!(
            legacy("2/16/2012", "10:56PM").unwrap(),
            "2012-02-17T06:56:00Z"
        );
        assert_eq!(
            legacy("2/17/2012", "04:29AM").unwrap(),
            "2012-02-17T12:29:00Z"
        );
        assert_eq!(
            legacy("12/1/2012", "12:05 am").unwrap(),
            "2012-12-01T08:05:00Z"
        );
        assert_eq!(
            legacy("12/1/2012", "12:05PM").unwrap(),
            "2012-12-01T20:05:00Z"
        );
        assert_eq!(legacy("12/1/2012", "13:05PM"), Err(TimeError::OutOfRange));
        assert_eq!(
            parse_date_and_time(b"2/16/2012", b"10:56PM", None),
            Err(TimeError::WithoutOffset)
        );
        assert_eq!(
            parse_timestamp(b"2/16/2012 10:56PM -08:00", None)
                .map(format_utc)
                .unwrap(),
            "2012-02-17T06:56:00Z"
        );
    }

    proptest::proptest! {
        #[test]
        fn civil_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            proptest::prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        /// The fixed-position reader answers, where it answers, as the general one does:
        /// on timestamps of its shapes with any digits (months 13, hour 24, offsets ±19:60),
        /// fractions of 1 to 9 digits, and on those with one byte changed.
        #[test]
        fn fixed_reader_equals_the_general_one(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]{1,9})?(Z|z|[+-][0-9]{2}(:[0-9]{2})?)",
            typical in (2000u32..2100, 1u32..13, 1u32..32, 0u32..24, 0u32..60, 0u32..61, -18i32..19, 0u32..60),
            fraction in proptest::option::of("[.][0-9]{3}([0-9]{3})?"),
            flip in (proptest::num::usize::ANY, proptest::num::u8::ANY),
        ) {
            let (y, mo, d, h, mi, se, oh, om) = typical;
            let sign = if oh < 0 { '-' } else { '+' };
            let fraction = fraction.unwrap_or_default();
            let typical = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}{fraction}{sign}{:02}:{om:02}", oh.abs());
            let alone = fixed_rfc3339(typical.as_bytes(), None);
            proptest::prop_assert!(alone.is_some());
            // One cache of days for all: a text may be read by a day another one left there.
            let mut recent = RecentDays::default();
            for text in [text.into_bytes(), typical.into_bytes()] {
                let mut flipped = text.clone();
                let at = flip.0 % flipped.len();
                flipped[at] = flip.1;
                for text in [text.clone(), flipped, text] {
                    if let Some(fixed) = fixed_rfc3339(&text, Some(&mut recent)) {
                        proptest::prop_assert_eq!(fixed, any_timestamp(&text, Some(60)));
                    }
                }
            }
        }

        /// A feed's timestamps read one after another through one cache of recent days (few
        /// days and offsets, so that most are read by their time of day alone, some with a
        /// byte changed) read as each does alone.
        #[test]
        fn timestamps_read_through_recent_days_as_alone(
            stamps in proptest::collection::vec(
                (
                    (0usize..12, 0u32..25, 0u32..61, 0u32..62, 0usize..5),
                    proptest::option::of("[.][0-9]{3}([0-9]{3})?"),
                    proptest::option::of((proptest::num::usize::ANY, proptest::num::u8::ANY)),
                ),
                1..80,
            ),
        ) {
            const DAYS: [&str; 12] = [
                "2025-01-30", "2025-01-31", "2025-02-01", "2025-02-28", "2025-02-29", "2024-02-29",
                "2025-01-08", "2025-01-18", "2025-11-31", "2025-12-31", "2025-00-10", "2025-13-01",
            ];
            const ZONES: [&str; 5] = ["Z", "z", "-05:00", "+05:30", "-19:00"];
            let mut recent = RecentDays::default();
            for ((day, h, mi, se, zone), fraction, flip) in stamps {
                let (day, zone, fraction) = (DAYS[day], ZONES[zone], fraction.unwrap_or_default());
                let mut text = format!("{day}T{h:02}:{mi:02}:{se:02}{fraction}{zone}").into_bytes();
                if let Some((at, byte)) = flip {
                    let at = at % text.len();
                    text[at] = byte;
                }
                let alone = fixed_rfc3339(&text, None);
                proptest::prop_assert_eq!(fixed_rfc3339(&text, Some(&mut recent)), alone);
                if let Some(alone) = alone {
                    proptest::prop_assert_eq!(alone, any_timestamp(&text, Some(60)));
                }
            }
        }

        /// The unsigned epoch equals its naive twin: a date is valid when it survives the
        /// round trip through [`days_from_civil`] and [`civil_from_days`].
        #[test]
        fn epoch_equals_the_civil_day_count(
            year in 0u32..10_000, month in 0u32..14, day in 0u32..33,
            hour in 0u32..25, minute in 0u32..61, second in 0u32..62, ms in 0u32..1000,
        ) {
            let days = days_from_civil(i64::from(year), month, day);
            let real_date = (1..=12).contains(&month)
                && day >= 1
                && civil_from_days(days) == (i64::from(year), month, day);
            let naive = if real_date && hour <= 23 && minute <= 59 && second <= 60 {
                let seconds = i64::from(hour * 3600 + minute * 60 + second.min(59));
                Ok(days * DAY_MS + seconds * 1000 + i64::from(ms))
            } else {
                Err(TimeError::OutOfRange)
            };
            proptest::prop_assert_eq!(epoch_ms(year, month, day, hour, minute, second, ms), naive);
        }

        #[test]
        fn formatted_times_parse_back(ms in -2_000_000_000_000i64..5_000_000_000_000) {
            proptest::prop_assert_eq!(parse_timestamp(format_utc(ms).as_bytes(), None), Ok(ms));
        }
    }
}
