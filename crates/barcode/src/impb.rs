//! Intelligent Mail package barcodes (IMpb, GS1-128 `420`+ZIP + tracking number) and the bare
//! USPS package tracking numbers, with their Mod 10 check digit.
//!
//! A tracking number has one of the lengths USPS package barcodes have
//! ([`TRACKING_LENGTHS`]): 22 or 26 digits starting with a channel application identifier
//! 91–95, or 20 digits (the legacy Publication 109 form, no channel); with `420` and a 5- or
//! 9-digit ZIP before it, 30, 34 or 38 digits in all. Any other length is
//! [`ErrorKind::PackageLength`], whatever its check digit says.

use std::fmt;

use crate::digits::{all_digits, alternate_digit_sums};
use crate::error::{Error, ErrorKind};

const MIN_TRACKING: usize = 20;
/// The longest tracking number a key holds (keys of older stores may hold any length up to it).
const MAX_TRACKING: usize = 34;
/// The lengths of USPS package tracking numbers: legacy (no channel), and with a channel 91–95.
pub const TRACKING_LENGTHS: [usize; 3] = [20, 22, 26];
/// The GS1 application identifier of the destination ZIP.
const POSTAL_AI: &[u8] = b"420";
/// ASCII group separator, how scanners transmit FNC1.
const FNC1: char = '\u{1d}';

/// A package barcode: its tracking number (20, 22 or 26 digits, check digit last) and, when the
/// barcode carried `420`+ZIP, the 5- or 9-digit destination ZIP.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Impb {
    tracking: [u8; MAX_TRACKING],
    tracking_len: u8,
    zip: [u8; 9],
    zip_len: u8,
}

/// The Mod 10 check digit of USPS tracking numbers: from the rightmost data digit leftwards,
/// weights 3, 1, 3, 1 …; check = (10 − sum mod 10) mod 10.
pub fn mod10_check_digit(data: impl DoubleEndedIterator<Item = u8>) -> u8 {
    // Weight 3 on every other digit from the right: a running sum taken three times where
    // the weight is 3, with no per-digit multiply or cycled iterator.
    let (mut heavy, mut light) = (0u32, 0u32);
    for (i, digit) in data.rev().enumerate() {
        let value = u32::from(digit.wrapping_sub(b'0'));
        if i % 2 == 0 {
            heavy += value;
        } else {
            light += value;
        }
    }
    let sum = heavy * 3 + light;
    ((10 - sum % 10) % 10) as u8
}

/// [`mod10_check_digit`] of ASCII digits, summed eight at a time: the digit at distance `d`
/// from the last one weighs 3 when `d` is even.
fn mod10_of_digits(data: &[u8]) -> u8 {
    let (even, odd) = alternate_digit_sums(data);
    let heavy = if data.len() % 2 == 1 { even } else { odd };
    let sum = even + odd + 2 * heavy;
    ((10 - sum % 10) % 10) as u8
}

/// The tracking number and ZIP digits (empty when bare) that [`Impb::from_digits`] reads
/// `bytes` as, for the forms of nearly every feed record: a 22- or 26-digit tracking number
/// with its channel, bare or after `420` and a 5- or 9-digit ZIP. Read in place, without
/// building the [`Impb`] (a package record's barcode then cost ~570 instructions: the record
/// built, copied through its `Result` and read back for the key). `None` for anything else,
/// `from_digits` then says what it is: a legacy 20-digit number, a ZIP either split would
/// fit, a wrong check digit.
pub(crate) fn common_package_digits(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let valid = |tracking: &[u8]| {
        matches!(tracking.len(), 22 | 26)
            && (91..=95).contains(&((tracking[0] - b'0') * 10 + (tracking[1] - b'0')))
            && tracking
                .split_last()
                .is_some_and(|(&check, data)| mod10_of_digits(data) == check - b'0')
    };
    if !(MIN_TRACKING..=MAX_TRACKING + 12).contains(&bytes.len()) || !all_digits(bytes) {
        return None;
    }
    if !(bytes.starts_with(POSTAL_AI) && bytes.len() >= 30) {
        return valid(bytes).then_some((bytes, &bytes[..0]));
    }
    // Both splits of the ZIP, as `parse_routed` tries them; exactly one must hold.
    let split = |zip_len: usize| {
        let (zip, tracking) = bytes[POSTAL_AI.len()..].split_at(zip_len);
        valid(tracking).then_some((tracking, zip))
    };
    match (split(5), split(9)) {
        (Some(digits), None) | (None, Some(digits)) => Some(digits),
        _ => None,
    }
}

/// The Mailer ID of a package tracking number of `len` digits written as `number` (a key's
/// bits), as [`Impb::mailer_id`] and [`parse_mailer_id`](crate::parse_mailer_id) give it: a
/// 22-digit number of channel 92 carries a 9-digit one after its service type, of channel 93
/// a 6-digit one (each valid only by the Mailer ID rule of its first digit).
pub(crate) fn impb_mailer_id(len: usize, number: u128) -> Option<u32> {
    if len != 22 {
        return None;
    }
    let (mailer_id, nine_digits) = match number / 10u128.pow(20) {
        92 => ((number / 10u128.pow(8) % 1_000_000_000) as u32, true),
        93 => ((number / 10u128.pow(11) % 1_000_000) as u32, false),
        _ => return None,
    };
    let valid = if nine_digits {
        mailer_id >= 900_000_000
    } else {
        mailer_id < 900_000
    };
    valid.then_some(mailer_id)
}

/// A candidate split of a `420` barcode without FNC1 (or a bare number) into ZIP and tracking.
fn checked(digits: &[u8], zip: &[u8], require_channel: bool) -> Result<Impb, Error> {
    let len = digits.len();
    if !TRACKING_LENGTHS.contains(&len) || (len == 20 && !zip.is_empty()) {
        return Err(Error::new(ErrorKind::PackageLength {
            len: len + zip.len() + if zip.is_empty() { 0 } else { POSTAL_AI.len() },
        }));
    }
    let channel = (digits[0] - b'0') * 10 + (digits[1] - b'0');
    let has_channel = (91..=95).contains(&channel);
    if (require_channel || matches!(len, 22 | 26)) && !has_channel {
        return Err(Error::new(ErrorKind::PackageChannel { found: channel }));
    }
    let (data, check) = (&digits[..len - 1], digits[len - 1] - b'0');
    let expected = mod10_of_digits(data);
    // Legacy 20-digit Pub 109 numbers are checked as if `91` preceded them.
    let legacy = len == 20 && mod10_check_digit(b"91".iter().chain(data).copied()) == check;
    if expected != check && !legacy {
        return Err(Error::new(ErrorKind::CheckDigit {
            expected,
            found: check,
        }));
    }
    let mut impb = Impb {
        tracking: [b'0'; MAX_TRACKING],
        tracking_len: len as u8,
        zip: [b'0'; 9],
        zip_len: zip.len() as u8,
    };
    impb.tracking[..len].copy_from_slice(digits);
    impb.zip[..zip.len()].copy_from_slice(zip);
    Ok(impb)
}

impl Impb {
    /// Parses a package barcode: `420` + ZIP5/ZIP9 + tracking number (FNC1 as ASCII 29 or
    /// GS1 parentheses, or no separator at all), or a bare 20, 22 or 26-digit tracking number.
    /// Whitespace is ignored.
    pub fn parse(input: &str) -> Result<Impb, Error> {
        if let Some(result) = Impb::from_digits(input.as_bytes()) {
            return result;
        }
        let mut digits = [0u8; 64];
        let mut len = 0;
        // Digit count at the first separator after the `420` AI, where the ZIP ends.
        let mut separator_at = None;
        for (position, c) in input.chars().filter(|c| !c.is_whitespace()).enumerate() {
            match c {
                '0'..='9' => {
                    if len == digits.len() {
                        return Err(Error::new(ErrorKind::PackageLength { len: input.len() }));
                    }
                    digits[len] = c as u8;
                    len += 1;
                }
                FNC1 | '(' | ')' => {
                    if len > POSTAL_AI.len() && separator_at.is_none() {
                        separator_at = Some(len);
                    }
                }
                _ => {
                    return Err(Error::new(ErrorKind::PackageDigit {
                        position: position + 1,
                        found: c,
                    }))
                }
            }
        }
        Impb::parse_digits(&digits[..len], separator_at)
    }

    /// What [`Impb::parse`] says of `bytes` when they are digits only and of a package
    /// barcode's length (nearly every feed record's form), read without a UTF-8 check; `None`
    /// for anything else.
    pub fn from_digits(bytes: &[u8]) -> Option<Result<Impb, Error>> {
        ((MIN_TRACKING..=MAX_TRACKING + 12).contains(&bytes.len()) && all_digits(bytes))
            .then(|| Impb::parse_digits(bytes, None))
    }

    /// Digits only; `separator_at` is where an FNC1 or parenthesis ended the ZIP.
    fn parse_digits(digits: &[u8], separator_at: Option<usize>) -> Result<Impb, Error> {
        let len = digits.len();
        if len > MAX_TRACKING || (digits.starts_with(POSTAL_AI) && len >= 30) {
            return Impb::parse_routed(digits, separator_at);
        }
        if len < MIN_TRACKING {
            return Err(Error::new(ErrorKind::PackageLength { len }));
        }
        checked(digits, &[], false)
    }

    /// `420` + ZIP + tracking number.
    fn parse_routed(digits: &[u8], separator_at: Option<usize>) -> Result<Impb, Error> {
        if !digits.starts_with(POSTAL_AI) {
            return Err(Error::new(ErrorKind::PackageLength { len: digits.len() }));
        }
        if let Some(end) = separator_at {
            let zip = &digits[POSTAL_AI.len()..end];
            if !matches!(zip.len(), 5 | 9) {
                return Err(Error::new(ErrorKind::ZipLength { len: zip.len() }));
            }
            return checked(&digits[end..], zip, true);
        }
        let split = |zip_len: usize| {
            let end = POSTAL_AI.len() + zip_len;
            checked(
                &digits[end.min(digits.len())..],
                &digits[POSTAL_AI.len()..end.min(digits.len())],
                true,
            )
        };
        match (split(5), split(9)) {
            (Ok(_), Ok(_)) => Err(Error::new(ErrorKind::AmbiguousZip)),
            (Ok(impb), Err(_)) | (Err(_), Ok(impb)) => Ok(impb),
            // Report the split that got furthest: a wrong check digit says more than a wrong length.
            (Err(five), Err(nine)) => Err(if progress(&nine) > progress(&five) {
                nine
            } else {
                five
            }),
        }
    }

    pub(crate) fn from_tracking_digits(tracking: &[u8]) -> Impb {
        let mut impb = Impb {
            tracking: [b'0'; MAX_TRACKING],
            tracking_len: tracking.len() as u8,
            zip: [b'0'; 9],
            zip_len: 0,
        };
        impb.tracking[..tracking.len()].copy_from_slice(tracking);
        impb
    }

    /// The tracking number's ASCII digits, for callers that parse them further.
    pub fn tracking_digits(&self) -> &[u8] {
        &self.tracking[..self.tracking_len as usize]
    }

    /// The destination ZIP's ASCII digits (empty without `420`).
    pub fn zip_digits(&self) -> &[u8] {
        &self.zip[..self.zip_len as usize]
    }

    /// The tracking number, check digit included.
    pub fn tracking(&self) -> &str {
        ascii(&self.tracking[..self.tracking_len as usize])
    }

    /// The destination ZIP from `420`, or empty.
    pub fn zip(&self) -> &str {
        ascii(&self.zip[..self.zip_len as usize])
    }

    /// The channel application identifier (`91`–`95`) of a 22- or 26-digit number.
    pub fn channel(&self) -> Option<&str> {
        self.structured().then(|| &self.tracking()[..2])
    }

    /// The 3-digit service type code of a 22- or 26-digit number.
    pub fn service_type(&self) -> Option<&str> {
        self.structured().then(|| &self.tracking()[2..5])
    }

    /// The Mailer ID of a 22-digit commercial number: 9 digits after channel `92`, 6 after `93`.
    pub fn mailer_id(&self) -> Option<&str> {
        self.mailer_id_len().map(|len| &self.tracking()[5..5 + len])
    }

    /// The serial number between the Mailer ID and the check digit of a 22-digit commercial number.
    pub fn serial(&self) -> Option<&str> {
        let len = self.tracking_len as usize;
        self.mailer_id_len()
            .map(|mid| &self.tracking()[5 + mid..len - 1])
    }

    /// The Mod 10 check digit (the last digit).
    pub fn check_digit(&self) -> u8 {
        self.tracking[self.tracking_len as usize - 1] - b'0'
    }

    fn structured(&self) -> bool {
        matches!(self.tracking_len, 22 | 26)
            && self.tracking[0] == b'9'
            && (b'1'..=b'5').contains(&self.tracking[1])
    }

    fn mailer_id_len(&self) -> Option<usize> {
        match (self.tracking_len, &self.tracking[..2]) {
            (22, b"92") => Some(9),
            (22, b"93") => Some(6),
            _ => None,
        }
    }
}

/// How far a candidate split got through [`checked`].
fn progress(error: &Error) -> u8 {
    match error.kind() {
        ErrorKind::PackageLength { .. } => 0,
        ErrorKind::PackageChannel { .. } => 1,
        _ => 2,
    }
}

fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("package barcode digits are ASCII")
}

impl fmt::Display for Impb {
    /// `420` + ZIP + tracking number when a ZIP is known, else the tracking number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.zip_len > 0 {
            write!(f, "420{}", self.zip())?;
        }
        f.write_str(self.tracking())
    }
}

impl fmt::Debug for Impb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Impb({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// imb-symbology.md §6: every example passes, with its fields.
    #[test]
    fn documented_examples_parse() {
        let cases = [
            (
                "420 22153 9101026837331000039521",
                "22153",
                "9101026837331000039521",
            ),
            (
                "420 10023 3424 9200190132607600833457",
                "100233424",
                "9200190132607600833457",
            ),
            (
                "420 10282 0000 9261290113185417468510",
                "102820000",
                "9261290113185417468510",
            ),
            ("9361 2898 7870 0317 6337 95", "", "9361289878700317633795"),
            ("9400 1112 0108 0805 4830 16", "", "9400111201080805483016"),
            ("9405803699300124287899", "", "9405803699300124287899"),
            ("9505 5110 6960 5048 6006 24", "", "9505511069605048600624"),
            ("9101 1234 5678 9000 0000 13", "", "9101123456789000000013"),
            (
                "92748931507708513018050063",
                "",
                "92748931507708513018050063",
            ),
            ("7196 9010 7560 0307 7385", "", "71969010756003077385"),
        ];
        for (input, zip, tracking) in cases {
            let impb = Impb::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((impb.zip(), impb.tracking()), (zip, tracking), "{input}");
        }
        let with_fnc1 = Impb::parse("420100233424\u{1d}9200190132607600833457").unwrap();
        assert_eq!(with_fnc1.zip(), "100233424");

        let commercial = Impb::parse("4201002334249200190132607600833457").unwrap();
        assert_eq!(commercial.channel(), Some("92"));
        assert_eq!(commercial.service_type(), Some("001"));
        assert_eq!(commercial.mailer_id(), Some("901326076"));
        assert_eq!(commercial.serial(), Some("0083345"));
        assert_eq!(commercial.check_digit(), 7);
        let six = Impb::parse("9361289878700317633795").unwrap();
        assert_eq!(
            (six.service_type(), six.mailer_id(), six.serial()),
            (Some("612"), Some("898787"), Some("0031763379"))
        );
        assert_eq!(six.check_digit(), 5);
    }

    /// `digits` with its Mod 10 check digit appended.
    fn with_check(digits: &str) -> String {
        let check = mod10_check_digit(digits.bytes());
        format!("{digits}{check}")
    }

    #[test]
    fn only_the_lengths_usps_package_barcodes_have_are_taken() {
        // A 21-digit number starting 92 passes Mod 10 but is no USPS package barcode.
        for data in [
            "92000123456789012345",
            "9200012345678901234567",
            "92000123456789012345678",
            "920001234567890123456789012",
            "9200012345678901234567890123456",
        ] {
            let number = with_check(data);
            assert_eq!(
                Impb::parse(&number).unwrap_err().kind(),
                &ErrorKind::PackageLength { len: number.len() },
                "{number}"
            );
        }
        // 22 and 26 digits, bare and behind 420 + ZIP5 or ZIP9 (30 to 38 digits in all).
        for tracking in [
            with_check("920001234567890123456"),
            with_check("9200012345678901234567890"),
        ] {
            for zip in ["", "42010023", "420100233424"] {
                let input = format!("{zip}{tracking}");
                let impb = Impb::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
                assert_eq!(impb.tracking(), tracking, "{input}");
            }
        }
        // The legacy 20-digit form has no channel and never comes behind 420 + ZIP.
        assert!(Impb::parse("71969010756003077385").is_ok());
        assert_eq!(
            Impb::parse("4201002371969010756003077385")
                .unwrap_err()
                .kind(),
            &ErrorKind::PackageLength { len: 28 }
        );
        // A channel outside 91–95 on a 22-digit number.
        let no_channel = with_check("880001234567890123456");
        assert_eq!(
            Impb::parse(&no_channel).unwrap_err().kind(),
            &ErrorKind::PackageChannel { found: 88 }
        );
    }

    #[test]
    fn documented_invalid_cases_fail() {
        let off_by_one = Impb::parse("4201028200009261290113185417468511").unwrap_err();
        assert_eq!(
            off_by_one.kind(),
            &ErrorKind::CheckDigit {
                expected: 0,
                found: 1
            }
        );
        let zeros = Impb::parse("9200000000000000000000").unwrap_err();
        assert_eq!(
            zeros.kind(),
            &ErrorKind::CheckDigit {
                expected: 1,
                found: 0
            }
        );
        assert_eq!(
            Impb::parse("12345").unwrap_err().kind(),
            &ErrorKind::PackageLength { len: 5 }
        );
        assert_eq!(
            Impb::parse("9400 1112 01O8").unwrap_err().kind(),
            &ErrorKind::PackageDigit {
                position: 11,
                found: 'O'
            }
        );
        assert_eq!(
            Impb::parse("8400111201080805483016").unwrap_err().kind(),
            &ErrorKind::PackageChannel { found: 84 }
        );
    }

    proptest::proptest! {
        /// Any 21 digits after a channel get the right check digit appended, and only that one passes.
        #[test]
        fn check_digit_round_trip(channel in 91u8..=95, body in "[0-9]{19}", zip in "([0-9]{5}){0,1}") {
            let data = format!("{channel}{body}");
            let check = mod10_check_digit(data.bytes());
            for digit in 0..10u8 {
                let input = format!("{}{}{}", if zip.is_empty() { "" } else { "420" }, zip, format_args!("{data}{digit}"));
                proptest::prop_assert_eq!(Impb::parse(&input).is_ok(), digit == check, "{}", input);
            }
        }

        /// The check digit summed eight digits at a time equals the digit-by-digit one.
        #[test]
        fn mod10_of_digits_equals_the_digit_loop(data in "[0-9]{0,40}") {
            proptest::prop_assert_eq!(mod10_of_digits(data.as_bytes()), mod10_check_digit(data.bytes()));
        }
    }
}
