//! The Intelligent Mail barcode (USPS-B-3200): fields, the 102-bit value, CRC-11, and the
//! encoder, decoder and single-bar repair over the 65 bars.

use std::fmt;

use crate::digits::digits_value;
use crate::error::{Error, ErrorKind};
use crate::tables::{
    ASCENDER_BIT, ASCENDER_CHARACTER, BAR_COUNT, CHARACTER_TO_CODEWORD, CRC11_TABLE, DESCENDER_BIT,
    DESCENDER_CHARACTER, INVERTED, NOT_A_CHARACTER, TABLE_2_OF_13, TABLE_5_OF_13,
};

/// Length of the tracking code.
const TRACKING_LEN: usize = 20;
const TEN_TO_18: u128 = 1_000_000_000_000_000_000;
/// The tracking code's share of the value: 10 × 5 × 10^18 combinations (second digit in base 5).
pub(crate) const TRACKING_SPAN: u128 = 50 * TEN_TO_18;
/// First routing value R of each routing length; the ranges are disjoint, which is what lets a
/// decoder recover the length (spec step 1).
const ROUTING_BASE_5: u64 = 1;
const ROUTING_BASE_9: u64 = 100_001;
const ROUTING_BASE_11: u64 = 1_000_100_001;
/// One past the largest routing value (an 11-digit routing of all nines).
pub(crate) const ROUTING_END: u64 = 101_000_100_001;

/// The routing code's digit count and number for a routing value R (spec step 1), `(0, 0)` for
/// no routing; `None` when R lies in no routing range.
pub(crate) fn routing_of_value(routing_value: u64) -> Option<(usize, u64)> {
    match routing_value {
        0 => Some((0, 0)),
        ROUTING_BASE_5..ROUTING_BASE_9 => Some((5, routing_value - ROUTING_BASE_5)),
        ROUTING_BASE_9..ROUTING_BASE_11 => Some((9, routing_value - ROUTING_BASE_9)),
        ROUTING_BASE_11..ROUTING_END => Some((11, routing_value - ROUTING_BASE_11)),
        _ => None,
    }
}

/// The Mailer ID of an IMb's tracking value (below [`TRACKING_SPAN`]): digits 6 to 11 of the
/// tracking code, or 6 to 14 where the first of them is a 9.
pub(crate) fn imb_mailer_id(tracking_value: u128) -> u32 {
    debug_assert!(tracking_value < TRACKING_SPAN);
    // The last fifteen digits: the Mailer ID, then the serial.
    let mailer_and_serial = (tracking_value % TEN_TO_18) as u64 % 1_000_000_000_000_000;
    let six = mailer_and_serial / 1_000_000_000;
    if six >= 900_000 {
        (mailer_and_serial / 1_000_000) as u32
    } else {
        six as u32
    }
}

/// What [`values_of_digit_fields`] reads of an IMb's digit fields.
pub(crate) struct DigitFieldValues {
    /// The tracking code's value (its second digit in base 5).
    pub(crate) tracking: u128,
    /// The routing value R (spec step 1).
    pub(crate) routing: u64,
    /// The routing digits as a number, 0 for none.
    pub(crate) routing_number: u64,
}

/// The values of an IMb's digit fields, read eight digits at a time; `None` unless
/// [`Imb::from_digit_fields`] accepts the fields.
pub(crate) fn values_of_digit_fields(tracking: &[u8], routing: &[u8]) -> Option<DigitFieldValues> {
    let tracking: &[u8; TRACKING_LEN] = tracking.try_into().ok()?;
    let barcode_id = [tracking[0], tracking[1]].map(|digit| digit.wrapping_sub(b'0'));
    let (base, _) = routing_range(routing.len())?;
    let tail = digits_value(&tracking[2..])?;
    let routing_number = if routing.is_empty() {
        0
    } else {
        digits_value(routing)?
    };
    // Eighteen digits and as many as the routing's length: numbers in range.
    values_in_range(barcode_id, tail, base, routing_number)
}

/// The first routing value R of a routing code of `len` digits, and how many values the
/// length has; `None` for a length no routing code has.
fn routing_range(len: usize) -> Option<(u64, u64)> {
    match len {
        0 => Some((0, 1)),
        5 => Some((ROUTING_BASE_5, ROUTING_BASE_9 - ROUTING_BASE_5)),
        9 => Some((ROUTING_BASE_9, ROUTING_BASE_11 - ROUTING_BASE_9)),
        11 => Some((ROUTING_BASE_11, ROUTING_END - ROUTING_BASE_11)),
        _ => None,
    }
}

/// The values of an IMb whose digits were read apart: `barcode_id` its first two digits'
/// values, `tail` its other eighteen tracking digits as a number, and its routing digits'
/// count and number; `None` unless they are an IMb's (a first digit of at most 9, a second of
/// at most 4, a tail below 10^18, a routing of 0, 5, 9 or 11 digits and a number that fits).
pub(crate) fn values_of_numbers(
    barcode_id: [u8; 2],
    tail: u64,
    routing_len: usize,
    routing_number: u64,
) -> Option<DigitFieldValues> {
    let (base, span) = routing_range(routing_len)?;
    if u128::from(tail) >= TEN_TO_18 || routing_number >= span {
        return None;
    }
    values_in_range(barcode_id, tail, base, routing_number)
}

/// [`values_of_numbers`] of a tail and routing number known to be in range, the routing's
/// first value R being `base`.
fn values_in_range(
    barcode_id: [u8; 2],
    tail: u64,
    base: u64,
    routing_number: u64,
) -> Option<DigitFieldValues> {
    let [first, second] = barcode_id;
    if first > 9 || second > 4 {
        return None;
    }
    let head = u128::from(first * 5 + second);
    Some(DigitFieldValues {
        tracking: head * TEN_TO_18 + u128::from(tail),
        routing: routing_number + base,
        routing_number,
    })
}

/// The data of one IMb: a 20-digit tracking code and a 0/5/9/11-digit routing code, every field
/// kept as digits with its leading zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Imb {
    /// ASCII digits: tracking code, then `routing_len` routing digits, then zeros.
    digits: [u8; 31],
    routing_len: u8,
}

/// Which way up the bars were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// As printed, left to right.
    Normal,
    /// Rotated 180°: the bar string arrived reversed with ascenders and descenders swapped.
    UpsideDown,
}

impl Orientation {
    /// `normal` or `upside_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Orientation::Normal => "normal",
            Orientation::UpsideDown => "upside_down",
        }
    }
}

/// The 65 bars of an IMb as the letters A (ascender), D (descender), F (full) and T (tracker).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bars([u8; BAR_COUNT]);

/// A single damaged bar that [`decode`] with repair corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRepair {
    /// The corrected bars, in the orientation they were read.
    pub bars: Bars,
    /// 1-based position of the corrected bar in the bars as read.
    pub position: usize,
    /// The bar state that was read there.
    pub was: char,
}

/// The result of decoding a bar string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedImb {
    /// The barcode's data.
    pub imb: Imb,
    /// How the bars were read.
    pub orientation: Orientation,
    /// The corrected bar, when repair was asked for and needed.
    pub repair: Option<BarRepair>,
}

fn error<T>(kind: ErrorKind) -> Result<T, Error> {
    Err(Error::new(kind))
}

/// The first character of `s` that is no ASCII digit, with its index.
fn first_non_digit(s: &str) -> Option<(usize, char)> {
    s.chars().enumerate().find(|(_, c)| !c.is_ascii_digit())
}

impl Imb {
    /// Builds an IMb from its tracking code (20 digits) and routing code (0, 5, 9 or 11 digits).
    /// As in USPS's reference encoder, leading and trailing whitespace of each field is trimmed
    /// and faults are checked in its order: tracking length, tracking digits, barcode
    /// identifier, routing length, routing digits.
    pub fn new(tracking: &str, routing: &str) -> Result<Imb, Error> {
        if let Some(imb) = Imb::from_digit_fields(tracking.as_bytes(), routing.as_bytes()) {
            return Ok(imb);
        }
        let (tracking, routing) = (tracking.trim(), routing.trim());
        let tracking_len = tracking.chars().count();
        if tracking_len != TRACKING_LEN {
            return error(ErrorKind::TrackingLength { len: tracking_len });
        }
        if let Some((i, found)) = first_non_digit(tracking) {
            return error(ErrorKind::TrackingDigit {
                position: i + 1,
                found,
            });
        }
        let mut digits = [b'0'; 31];
        digits[..TRACKING_LEN].copy_from_slice(tracking.as_bytes());
        if digits[1] > b'4' {
            return error(ErrorKind::BarcodeIdSecondDigit {
                found: digits[1] - b'0',
            });
        }
        let routing_len = routing.chars().count();
        if !matches!(routing_len, 0 | 5 | 9 | 11) {
            return error(ErrorKind::RoutingLength { len: routing_len });
        }
        if let Some((i, found)) = first_non_digit(routing) {
            return error(ErrorKind::RoutingDigit {
                position: i + 1,
                found,
            });
        }
        digits[TRACKING_LEN..TRACKING_LEN + routing_len].copy_from_slice(routing.as_bytes());
        Ok(Imb {
            digits,
            routing_len: routing_len as u8,
        })
    }

    /// The fast path of [`Imb::new`] for fields that are plain ASCII digits of valid lengths
    /// (nearly every feed record): `None` for anything else, which [`Imb::new`] then explains.
    pub fn from_digit_fields(tracking: &[u8], routing: &[u8]) -> Option<Imb> {
        let valid = tracking.len() == TRACKING_LEN
            && matches!(routing.len(), 0 | 5 | 9 | 11)
            && tracking.iter().chain(routing).all(u8::is_ascii_digit)
            && tracking[1] <= b'4';
        valid.then(|| {
            let mut digits = [b'0'; 31];
            digits[..TRACKING_LEN].copy_from_slice(tracking);
            digits[TRACKING_LEN..TRACKING_LEN + routing.len()].copy_from_slice(routing);
            Imb {
                digits,
                routing_len: routing.len() as u8,
            }
        })
    }

    /// Parses a payload: `TRACKING-ROUTING`, or 20, 25, 29 or 31 digits (the tracking code
    /// followed by the routing code). All whitespace is ignored.
    pub fn from_payload(payload: &str) -> Result<Imb, Error> {
        let bytes = payload.as_bytes();
        if bytes.len() >= TRACKING_LEN {
            if let Some(imb) =
                Imb::from_digit_fields(&bytes[..TRACKING_LEN], &bytes[TRACKING_LEN..])
            {
                return Ok(imb);
            }
        }
        if payload.contains(char::is_whitespace) {
            let compact: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
            return Imb::from_payload(&compact);
        }
        if let Some((tracking, routing)) = payload.split_once('-') {
            return Imb::new(tracking, routing);
        }
        let split = payload
            .char_indices()
            .nth(TRACKING_LEN)
            .map_or(payload.len(), |(i, _)| i);
        Imb::new(&payload[..split], &payload[split..])
    }

    /// The 20-digit tracking code.
    pub fn tracking(&self) -> &str {
        self.digit_str(0, TRACKING_LEN)
    }

    /// The routing code's ASCII digits, for callers that parse them further.
    pub fn routing_digits(&self) -> &[u8] {
        &self.digits[TRACKING_LEN..TRACKING_LEN + self.routing_len as usize]
    }

    /// The routing code: empty, or a 5-, 9- or 11-digit ZIP Code.
    pub fn routing(&self) -> &str {
        self.digit_str(TRACKING_LEN, TRACKING_LEN + self.routing_len as usize)
    }

    /// Barcode identifier (2 digits).
    pub fn barcode_id(&self) -> &str {
        self.digit_str(0, 2)
    }

    /// Service type identifier (3 digits).
    pub fn service_type(&self) -> &str {
        self.digit_str(2, 5)
    }

    /// Mailer ID: 9 digits when its first digit is 9, else 6.
    pub fn mailer_id(&self) -> &str {
        self.digit_str(5, 5 + self.mailer_id_len())
    }

    /// Serial number: 6 digits after a 9-digit Mailer ID, else 9.
    pub fn serial(&self) -> &str {
        self.digit_str(5 + self.mailer_id_len(), TRACKING_LEN)
    }

    fn mailer_id_len(&self) -> usize {
        if self.digits[5] == b'9' {
            9
        } else {
            6
        }
    }

    fn digit_str(&self, from: usize, to: usize) -> &str {
        std::str::from_utf8(&self.digits[from..to]).expect("IMb digits are ASCII")
    }

    /// The routing value R of spec step 1: 0 for no routing, else the routing number plus the
    /// base of its length's range.
    pub(crate) fn routing_value(&self) -> u64 {
        self.values().routing
    }

    /// The tracking code as a number below [`TRACKING_SPAN`], second digit in base 5.
    pub(crate) fn tracking_value(&self) -> u128 {
        self.values().tracking
    }

    fn values(&self) -> DigitFieldValues {
        values_of_digit_fields(&self.digits[..TRACKING_LEN], self.routing_digits())
            .expect("an Imb holds valid digit fields")
    }

    /// The binary value of spec step 1 (at most 102 bits).
    pub fn value(&self) -> u128 {
        u128::from(self.routing_value()) * TRACKING_SPAN + self.tracking_value()
    }

    /// The inverse of [`Imb::value`] over its two parts; fails when `routing_value` lies in no
    /// routing range. `tracking_value` must be below [`TRACKING_SPAN`].
    pub(crate) fn from_parts(tracking_value: u128, routing_value: u64) -> Result<Imb, Error> {
        debug_assert!(tracking_value < TRACKING_SPAN);
        let head = (tracking_value / TEN_TO_18) as u8;
        Imb::from_split(head, (tracking_value % TEN_TO_18) as u64, routing_value)
    }

    /// The inverse of [`Imb::value`]. One 128-by-64-bit division splits off the last 18
    /// tracking digits; the rest (R × 50 + the first two digits) fits a `u64`.
    fn from_value(value: u128) -> Result<Imb, Error> {
        let high = u64::try_from(value / TEN_TO_18)
            .map_err(|_| Error::new(ErrorKind::RoutingRange { value: u64::MAX }))?;
        Imb::from_split((high % 50) as u8, (value % TEN_TO_18) as u64, high / 50)
    }

    /// Builds the digits from the first two tracking digits as `head` = 5 × d0 + d1, the last
    /// 18 as a number, and the routing value R.
    fn from_split(head: u8, tail: u64, routing_value: u64) -> Result<Imb, Error> {
        let Some((routing_len, routing)) = routing_of_value(routing_value) else {
            return error(ErrorKind::RoutingRange {
                value: routing_value,
            });
        };
        let mut digits = [b'0'; 31];
        digits[0] = b'0' + head / 5;
        digits[1] = b'0' + head % 5;
        write_digits(&mut digits[2..TRACKING_LEN], tail);
        write_digits(
            &mut digits[TRACKING_LEN..TRACKING_LEN + routing_len],
            routing,
        );
        Ok(Imb {
            digits,
            routing_len: routing_len as u8,
        })
    }

    /// The 65 bars of this IMb (spec steps 2–6).
    pub fn encode(&self) -> Bars {
        let value = self.value();
        let fcs = frame_check_sequence(value);
        let mut codewords = [0u16; 10];
        let mut rest = value;
        codewords[9] = (rest % 636) as u16;
        rest /= 636;
        for cw in codewords[1..9].iter_mut().rev() {
            *cw = (rest % 1365) as u16;
            rest /= 1365;
        }
        codewords[0] = rest as u16;
        codewords[9] *= 2;
        if fcs & 0x400 != 0 {
            codewords[0] += 659;
        }
        let mut characters = [0u16; 10];
        for (i, (ch, &cw)) in characters.iter_mut().zip(&codewords).enumerate() {
            *ch = if cw < 1287 {
                TABLE_5_OF_13[cw as usize]
            } else {
                TABLE_2_OF_13[cw as usize - 1287]
            };
            if fcs & (1 << i) != 0 {
                *ch ^= 0x1FFF;
            }
        }
        let mut bars = [0u8; BAR_COUNT];
        for (bar, slot) in bars.iter_mut().enumerate() {
            let bit = |chars: &[u8; BAR_COUNT], bits: &[u8; BAR_COUNT]| {
                characters[chars[bar] as usize] >> bits[bar] & 1
            };
            let state = bit(&ASCENDER_CHARACTER, &ASCENDER_BIT) << 1
                | bit(&DESCENDER_CHARACTER, &DESCENDER_BIT);
            *slot = STATE_LETTERS[state as usize];
        }
        Bars(bars)
    }
}

/// Writes `value` as exactly `out.len()` decimal digits (leading zeros kept).
fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl fmt::Display for Imb {
    /// The tracking code, then `-` and the routing code when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tracking())?;
        if self.routing_len > 0 {
            write!(f, "-{}", self.routing())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Imb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imb({self})")
    }
}

/// The CRC-11 frame check sequence of a value (spec step 2): MSB first over its 13 big-endian
/// bytes. USPS's routine skips the two always-zero top bits of the first byte and starts from
/// 0x7FF; running over those two zero bits from 0x5A8 reaches the same state, so a plain
/// byte-table CRC serves.
pub fn frame_check_sequence(value: u128) -> u16 {
    let bytes = value.to_be_bytes();
    bytes[3..].iter().fold(0x5A8u16, |crc, &byte| {
        let index = ((crc >> 3) as u8 ^ byte) as usize;
        ((crc << 8) ^ CRC11_TABLE[index]) & 0x7FF
    })
}

/// Bar letter for each state: bit 1 = ascender, bit 0 = descender.
const STATE_LETTERS: [u8; 4] = *b"TDAF";

/// Bar state of each bar letter (the inverse of [`STATE_LETTERS`]); a table rather than a
/// `match`, because bar letters are unpredictable and a branch per bar mispredicts half the time.
static LETTER_STATES: [u8; 256] = {
    let mut states = [0u8; 256];
    states[b'D' as usize] = 1;
    states[b'A' as usize] = 2;
    states[b'F' as usize] = 3;
    states
};

/// Each bar letter in either case mapped to its upper case; 0 for anything else.
static CANONICAL_LETTERS: [u8; 256] = {
    let mut letters = [0u8; 256];
    let mut i = 0;
    while i < 4 {
        let upper = STATE_LETTERS[i];
        letters[upper as usize] = upper;
        letters[upper.to_ascii_lowercase() as usize] = upper;
        i += 1;
    }
    letters
};

fn bar_state(letter: u8) -> u8 {
    LETTER_STATES[letter as usize]
}

impl Bars {
    /// Parses 65 bar letters in any case; whitespace is ignored.
    pub fn parse(input: &str) -> Result<Bars, Error> {
        // Fast path: exactly 65 bar letters, checked and upper-cased through a table.
        if let Ok(letters) = <&[u8; BAR_COUNT]>::try_from(input.as_bytes()) {
            let bars = letters.map(|b| CANONICAL_LETTERS[b as usize]);
            if !bars.contains(&0) {
                return Ok(Bars(bars));
            }
        }
        let mut bars = [0u8; BAR_COUNT];
        let mut count = 0;
        for c in input.chars().filter(|c| !c.is_whitespace()) {
            let letter = c.to_ascii_uppercase();
            if !matches!(letter, 'A' | 'D' | 'F' | 'T') {
                return error(ErrorKind::BarState {
                    position: count + 1,
                    found: c,
                });
            }
            if count < BAR_COUNT {
                bars[count] = letter as u8;
            }
            count += 1;
        }
        if count != BAR_COUNT {
            return error(ErrorKind::BarCount { len: count });
        }
        Ok(Bars(bars))
    }

    /// The bars as a 65-letter string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("bar letters are ASCII")
    }

    /// The string a reader produces when it scans these bars upside down: reversed, with
    /// ascenders and descenders swapped.
    pub fn flipped(&self) -> Bars {
        let mut out = self.0;
        out.reverse();
        for bar in &mut out {
            *bar = match *bar {
                b'A' => b'D',
                b'D' => b'A',
                other => other,
            };
        }
        Bars(out)
    }

    fn letter(&self, position: usize) -> u8 {
        self.0[position]
    }

    fn with_bar(&self, position: usize, letter: u8) -> Bars {
        let mut out = self.0;
        out[position] = letter;
        Bars(out)
    }
}

impl fmt::Display for Bars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Bars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bars({})", self.as_str())
    }
}

/// Decodes bars read as printed, with every check of spec §4.1 and no retries.
pub fn decode_exact(bars: &Bars) -> Result<Imb, Error> {
    let mut characters = [0u16; 10];
    for (bar, &letter) in bars.0.iter().enumerate() {
        let state = u16::from(bar_state(letter));
        characters[DESCENDER_CHARACTER[bar] as usize] |= (state & 1) << DESCENDER_BIT[bar];
        characters[ASCENDER_CHARACTER[bar] as usize] |= (state >> 1) << ASCENDER_BIT[bar];
    }
    let mut codewords = [0u16; 10];
    let mut read_fcs = 0u16;
    let mut invalid = 0u16;
    for (i, (cw, &ch)) in codewords.iter_mut().zip(&characters).enumerate() {
        let entry = CHARACTER_TO_CODEWORD[ch as usize];
        if entry == NOT_A_CHARACTER {
            invalid |= 1 << i;
            continue;
        }
        *cw = entry & !INVERTED;
        if entry & INVERTED != 0 {
            read_fcs |= 1 << i;
        }
    }
    if invalid != 0 {
        return error(ErrorKind::InvalidCharacters {
            characters: invalid,
        });
    }
    let (mut a, mut j) = (codewords[0], codewords[9]);
    if j % 2 != 0 || j > 1270 {
        return error(ErrorKind::CodewordRange {
            character: 'J',
            codeword: j,
        });
    }
    if a > 1317 {
        return error(ErrorKind::CodewordRange {
            character: 'A',
            codeword: a,
        });
    }
    j /= 2;
    if a >= 659 {
        a -= 659;
        read_fcs |= 0x400;
    }
    let value = codewords[1..9]
        .iter()
        .fold(u128::from(a), |v, &cw| v * 1365 + u128::from(cw))
        * 636
        + u128::from(j);
    let computed = frame_check_sequence(value);
    if computed != read_fcs {
        return error(ErrorKind::CrcMismatch {
            computed,
            read: read_fcs,
        });
    }
    Imb::from_value(value)
}

/// Decodes bars as printed or, failing that, as read upside down. With `repair`, a read that
/// fails both ways is retried with each single bar changed; it is accepted only when exactly one
/// change (over both orientations) gives a valid IMb. The error is that of the read as given.
pub fn decode(bars: &Bars, repair: bool) -> Result<DecodedImb, Error> {
    let first_error = match decode_exact(bars) {
        Ok(imb) => {
            return Ok(DecodedImb {
                imb,
                orientation: Orientation::Normal,
                repair: None,
            })
        }
        Err(e) => e,
    };
    let flipped = bars.flipped();
    if let Ok(imb) = decode_exact(&flipped) {
        return Ok(DecodedImb {
            imb,
            orientation: Orientation::UpsideDown,
            repair: None,
        });
    }
    if !repair {
        return Err(first_error);
    }
    // Distinct IMbs one bar change away; a second one makes the read ambiguous.
    let mut found: Option<DecodedImb> = None;
    let mut candidates = 0;
    for position in 0..BAR_COUNT {
        let was = bars.letter(position);
        for &letter in STATE_LETTERS.iter().filter(|&&l| l != was) {
            let candidate = bars.with_bar(position, letter);
            let read = decode_exact(&candidate)
                .map(|imb| (imb, Orientation::Normal))
                .or_else(|_| {
                    decode_exact(&candidate.flipped()).map(|imb| (imb, Orientation::UpsideDown))
                });
            let Ok((imb, orientation)) = read else {
                continue;
            };
            if found.is_some_and(|f| f.imb == imb) {
                continue;
            }
            candidates += 1;
            if candidates > 1 {
                continue;
            }
            let repair = BarRepair {
                bars: candidate,
                position: position + 1,
                was: char::from(was),
            };
            found = Some(DecodedImb {
                imb,
                orientation,
                repair: Some(repair),
            });
        }
    }
    match found {
        Some(decoded) if candidates == 1 => Ok(decoded),
        _ => error(ErrorKind::Repair { candidates }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// USPS's own CRC routine (spec step 2), bit by bit: the naive twin of the table CRC.
    fn usps_crc11(value: u128) -> u16 {
        let bytes = value.to_be_bytes();
        let bytes = &bytes[3..];
        let mut fcs: u16 = 0x7FF;
        let step = |data: u16, fcs: &mut u16| {
            *fcs = if (*fcs ^ data) & 0x400 != 0 {
                (*fcs << 1) ^ 0xF35
            } else {
                *fcs << 1
            } & 0x7FF;
        };
        let mut data = u16::from(bytes[0]) << 5;
        for _ in 2..8 {
            step(data, &mut fcs);
            data <<= 1;
        }
        for &byte in &bytes[1..] {
            let mut data = u16::from(byte) << 3;
            for _ in 0..8 {
                step(data, &mut fcs);
                data <<= 1;
            }
        }
        fcs
    }

    #[test]
    fn table_crc_equals_usps_routine_at_the_edges() {
        let max = (1u128 << 102) - 1;
        for value in [
            0,
            1,
            0x400,
            0x7FF,
            1 << 101,
            max,
            max / 3,
            5050005000049999999999999999999,
        ] {
            assert_eq!(frame_check_sequence(value), usps_crc11(value), "{value}");
        }
    }

    proptest::proptest! {
        #[test]
        fn table_crc_equals_usps_routine(value in 0u128..(1u128 << 102)) {
            proptest::prop_assert_eq!(frame_check_sequence(value), usps_crc11(value));
        }
    }

    /// Spec §5.1: FCS and the codewords after step 4 pin down each step of the encoder.
    #[test]
    fn spec_examples_intermediate_values() {
        let cases: [(&str, u16, [u16; 10], [u16; 10]); 4] = [
            (
                "",
                0x051,
                [0, 0, 0, 0, 559, 202, 508, 451, 124, 34],
                [
                    0x1FE0, 0x001F, 0x001F, 0x001F, 0x0ADB, 0x01A3, 0x1BC3, 0x1838, 0x012B, 0x0076,
                ],
            ),
            (
                "01234",
                0x065,
                [0, 0, 15, 14, 290, 567, 385, 48, 388, 666],
                [
                    0x1FE0, 0x001F, 0x02BF, 0x0057, 0x0255, 0x18DB, 0x1B17, 0x009D, 0x030B, 0x0583,
                ],
            ),
            (
                "012345678",
                0x606,
                [659, 110, 1113, 1363, 198, 413, 470, 468, 1333, 1026],
                [
                    0x1154, 0x1F07, 0x01FE, 0x0110, 0x019A, 0x1298, 0x03A2, 0x03A1, 0x0084, 0x14EE,
                ],
            ),
            (
                "01234567891",
                0x751,
                [673, 787, 607, 1022, 861, 19, 816, 1294, 35, 602],
                [
                    0x0DCB, 0x085C, 0x08E4, 0x0B06, 0x06DD, 0x1740, 0x17C6, 0x1200, 0x123F, 0x1B2B,
                ],
            ),
        ];
        for (routing, fcs, codewords, characters) in cases {
            let imb = Imb::new("01234567094987654321", routing).unwrap();
            assert_eq!(
                frame_check_sequence(imb.value()),
                fcs,
                "FCS, routing {routing:?}"
            );
            let bars = imb.encode();
            // Read the characters back off the bars and check them and their codewords.
            let mut read = [0u16; 10];
            for (bar, &letter) in bars.0.iter().enumerate() {
                let state = u16::from(bar_state(letter));
                read[DESCENDER_CHARACTER[bar] as usize] |= (state & 1) << DESCENDER_BIT[bar];
                read[ASCENDER_CHARACTER[bar] as usize] |= (state >> 1) << ASCENDER_BIT[bar];
            }
            assert_eq!(read, characters, "characters, routing {routing:?}");
            let read_codewords = read.map(|c| CHARACTER_TO_CODEWORD[c as usize] & !INVERTED);
            assert_eq!(read_codewords, codewords, "codewords, routing {routing:?}");
        }
    }

    #[test]
    fn spec_example_hex_values() {
        let hex = |routing: &str| {
            format!(
                "{:026X}",
                Imb::new("01234567094987654321", routing).unwrap().value()
            )
        };
        assert_eq!(hex(""), "00000000001122103B5C2004B1");
        assert_eq!(hex("01234"), "0000000D138A87BAB5CF3804B1");
        assert_eq!(hex("012345678"), "000202BDC097711204D21804B1");
        assert_eq!(hex("01234567891"), "016907B2A24ABC16A2E5C004B1");
    }

    #[test]
    fn fields_split_by_mailer_id_length() {
        let six = Imb::new("01234567094987654321", "").unwrap();
        assert_eq!(
            (
                six.barcode_id(),
                six.service_type(),
                six.mailer_id(),
                six.serial()
            ),
            ("01", "234", "567094", "987654321")
        );
        let nine = Imb::new("00708901019658000000", "631469772").unwrap();
        assert_eq!(
            (nine.mailer_id(), nine.serial(), nine.routing()),
            ("901019658", "000000", "631469772")
        );
    }

    #[test]
    fn payload_forms_agree() {
        let dashed = Imb::from_payload("01234567094987654321-01234567891").unwrap();
        assert_eq!(
            Imb::from_payload("0123456709 4987654321 01234567891").unwrap(),
            dashed
        );
        assert_eq!(
            Imb::from_payload("0123456709498765432101234567891").unwrap(),
            dashed
        );
        assert_eq!(dashed.to_string(), "01234567094987654321-01234567891");
        assert_eq!(
            Imb::from_payload("01234567094987654321").unwrap().routing(),
            ""
        );
        assert_eq!(
            Imb::from_payload("0123456709498765432101")
                .unwrap_err()
                .kind(),
            &ErrorKind::RoutingLength { len: 2 }
        );
        assert_eq!(
            Imb::from_payload("0123").unwrap_err().kind(),
            &ErrorKind::TrackingLength { len: 4 }
        );
    }

    #[test]
    fn routing_range_edges_round_trip() {
        for routing in [
            "",
            "00000",
            "99999",
            "000000000",
            "999999999",
            "00000000000",
            "99999999999",
        ] {
            let imb = Imb::new("94999999999999999999", routing).unwrap();
            let back = Imb::from_parts(imb.tracking_value(), imb.routing_value()).unwrap();
            assert_eq!(back, imb);
            assert_eq!(
                decode_exact(&imb.encode()).unwrap(),
                imb,
                "routing {routing:?}"
            );
        }
        assert!(Imb::from_parts(0, ROUTING_END).is_err());
    }

    #[test]
    fn bar_parsing_errors_name_the_bar() {
        let err = Bars::parse("AADTX").unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::BarState {
                position: 5,
                found: 'X'
            }
        );
        assert_eq!(
            Bars::parse("AADT").unwrap_err().kind(),
            &ErrorKind::BarCount { len: 4 }
        );
    }
}
