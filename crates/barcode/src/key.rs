//! [`Barcode`], any barcode form imbtrack accepts, and [`BarcodeKey`], its compact 128-bit index
//! key.
//!
//! Key layout (bit 0 = least significant):
//!
//! | bits     | IMb                         | IMpb                        | IMcb                          |
//! |----------|-----------------------------|-----------------------------|-------------------------------|
//! | 120..128 | kind 1                      | kind 2                      | kind 3                        |
//! | 113..117 | —                           | tracking length − 20        | —                             |
//! | 37..103  | tracking value (66 bits)    | tracking digits as a number | —                             |
//! | 0..37    | routing value R (37 bits)   | (part of the number)        | —                             |
//! | 72..102  | —                           | —                           | Mailer ID as a number         |
//! | 0..72    | —                           | —                           | serial, 6 bits a character    |
//!
//! An IMb key is tracking-major, so every key of one tracking code, whatever its routing, lies in
//! one contiguous range ([`BarcodeKey::imb_tracking_range`]). An IMpb key holds the tracking
//! number only: the `420` ZIP is routing, which the scan record keeps beside the key. Kind 0 is
//! never a key, so an all-zero slot can mark "empty" in a table.

use std::fmt;
use std::ops::Range;

use crate::digits::wide_digits_value;
use crate::error::{Error, ErrorKind};
use crate::imb::{
    decode, imb_mailer_id, routing_of_value, values_of_digit_fields, values_of_numbers, Bars,
    DigitFieldValues, Imb, ROUTING_END, TRACKING_SPAN,
};
use crate::imcb::Imcb;
use crate::impb::{common_package_digits, impb_mailer_id, Impb};

const KIND_SHIFT: u32 = 120;
const KIND_IMB: u128 = 1;
const KIND_IMPB: u128 = 2;
const KIND_IMCB: u128 = 3;
const IMB_ROUTING_BITS: u32 = 37;
const IMPB_LENGTH_SHIFT: u32 = 113;
const IMCB_SERIAL_BITS: u32 = 72;

/// The kinds of barcode imbtrack indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BarcodeKind {
    /// Intelligent Mail barcode (letters and flats).
    Imb,
    /// Intelligent Mail package barcode or package tracking number.
    Impb,
    /// Intelligent Mail container barcode.
    Imcb,
}

/// Any barcode form imbtrack accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Barcode {
    /// An IMb.
    Imb(Imb),
    /// A package barcode.
    Impb(Impb),
    /// A container barcode.
    Imcb(Imcb),
}

/// A barcode as one `u128`, ordered and hashable; see the module docs for the layout.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BarcodeKey(u128);

fn is_bar_letter(c: char) -> bool {
    matches!(c.to_ascii_uppercase(), 'A' | 'D' | 'F' | 'T')
}

/// A Mailer ID as a number, if `text` is one: 6 digits not starting with 9, or 9 digits
/// starting with 9. Only then are numbers unambiguous: a 9-digit field `000839744` (a package
/// barcode's, say) is no Mailer ID, and must not pass for the 6-digit `839744`.
pub fn parse_mailer_id(text: &str) -> Option<u32> {
    let valid = text.bytes().all(|b| b.is_ascii_digit())
        && match text.len() {
            6 => !text.starts_with('9'),
            9 => text.starts_with('9'),
            _ => false,
        };
    valid.then(|| text.parse().ok()).flatten()
}

/// How many digits a Mailer ID is written with: 9 for the 9-digit ones (from 900000000 up), 6
/// for the others.
pub fn mailer_id_digits(mailer_id: u32) -> usize {
    if mailer_id >= 900_000_000 {
        9
    } else {
        6
    }
}

/// A Mailer ID as written: 6 digits, leading zeros kept, or 9 ([`parse_mailer_id`] reads it
/// back).
pub fn format_mailer_id(mailer_id: u32) -> String {
    format!("{mailer_id:0width$}", width = mailer_id_digits(mailer_id))
}

impl Barcode {
    /// Recognises the form of `input` and parses it:
    /// - 65 bar letters → IMb (decoded as printed or upside down, never repaired);
    /// - `99M…` or `(99)M…` → IMcb;
    /// - `TRACKING-ROUTING`, or 20, 25, 29 or 31 digits → IMb; a 20-digit number that is no
    ///   valid IMb is tried as a legacy package number;
    /// - other digit strings → IMpb (`420`+ZIP forms and bare tracking numbers).
    ///
    /// Whitespace is ignored; a caller that knows the class (a feed's `impb` column) should call
    /// [`Impb::parse`] directly, since 20-digit numbers read as IMbs here.
    pub fn parse(input: &str) -> Result<Barcode, Error> {
        let significant = || input.chars().filter(|c| !c.is_whitespace());
        let len = significant().count();
        if len == 65 && significant().all(is_bar_letter) {
            return Ok(Barcode::Imb(decode(&Bars::parse(input)?, false)?.imb));
        }
        let trimmed = input.trim_start();
        if trimmed.starts_with("99M") || trimmed.starts_with("(99)") {
            return Imcb::parse(input).map(Barcode::Imcb);
        }
        if input.contains('-') {
            return Imb::from_payload(input).map(Barcode::Imb);
        }
        match len {
            20 => Imb::from_payload(input)
                .map(Barcode::Imb)
                .or_else(|e| Impb::parse(input).map(Barcode::Impb).map_err(|_| e)),
            25 | 29 | 31 => Imb::from_payload(input).map(Barcode::Imb),
            _ if significant().any(|c| c.is_ascii_alphabetic()) => {
                Err(Error::new(ErrorKind::UnknownForm { len }))
            }
            _ => Impb::parse(input).map(Barcode::Impb),
        }
    }

    /// The Mailer ID the piece is filed under, if its barcode carries one (every IMb and IMcb;
    /// IMpbs whose channel application identifier places one).
    pub fn mailer_id(&self) -> Option<u32> {
        match self {
            Barcode::Imb(imb) => parse_mailer_id(imb.mailer_id()),
            Barcode::Impb(impb) => impb.mailer_id().and_then(parse_mailer_id),
            Barcode::Imcb(imcb) => parse_mailer_id(imcb.mailer_id()),
        }
    }

    /// Which kind of barcode this is.
    pub fn kind(&self) -> BarcodeKind {
        match self {
            Barcode::Imb(_) => BarcodeKind::Imb,
            Barcode::Impb(_) => BarcodeKind::Impb,
            Barcode::Imcb(_) => BarcodeKind::Imcb,
        }
    }

    /// The index key. For a package barcode it covers the tracking number, not the `420` ZIP.
    pub fn key(&self) -> BarcodeKey {
        let raw = match self {
            Barcode::Imb(imb) => imb_key(imb.tracking_value(), imb.routing_value()),
            // The digits as bytes: `tracking()` would check them as UTF-8, twice a key.
            Barcode::Impb(impb) => impb_key(impb.tracking_digits())
                .expect("an Impb's tracking number is 20 to 34 digits"),
            Barcode::Imcb(imcb) => {
                let mailer_id = imcb
                    .mailer_id()
                    .bytes()
                    .fold(0u128, |v, d| v * 10 + u128::from(d - b'0'));
                let serial = imcb.serial().bytes().enumerate().fold(0u128, |v, (i, c)| {
                    v | u128::from(serial_code(c)) << (6 * (11 - i))
                });
                KIND_IMCB << KIND_SHIFT | mailer_id << IMCB_SERIAL_BITS | serial
            }
        };
        BarcodeKey(raw)
    }
}

impl fmt::Display for Barcode {
    /// The canonical digit string: IMb `TRACKING-ROUTING`, IMpb `420`+ZIP+tracking, IMcb `99M…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Barcode::Imb(b) => b.fmt(f),
            Barcode::Impb(b) => b.fmt(f),
            Barcode::Imcb(b) => b.fmt(f),
        }
    }
}

fn serial_code(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'A' + 10,
    }
}

fn serial_char(code: u8) -> Option<u8> {
    match code {
        0..=9 => Some(b'0' + code),
        10..=35 => Some(b'A' + code - 10),
        _ => None,
    }
}

fn write_decimal(out: &mut [u8], mut value: u128) -> Option<()> {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    (value == 0).then_some(())
}

fn imb_key(tracking_value: u128, routing_value: u64) -> u128 {
    KIND_IMB << KIND_SHIFT | tracking_value << IMB_ROUTING_BITS | u128::from(routing_value)
}

/// The raw key of a package tracking number of 20 to 34 ASCII digits; `None` for others.
fn impb_key(digits: &[u8]) -> Option<u128> {
    let length = digits.len().checked_sub(20)?;
    Some(
        KIND_IMPB << KIND_SHIFT
            | (length as u128) << IMPB_LENGTH_SHIFT
            | wide_digits_value(digits)?,
    )
}

impl BarcodeKey {
    /// The key of the IMb with these tracking and routing digit fields, read without building
    /// the [`Imb`]: what `Imb::from_digit_fields` then [`Barcode::key`] give, at feed speed;
    /// with it, the routing digits as a number (0 for none), which a feed's routing ZIP is
    /// made of without reading the key's bits back.
    pub fn of_imb_digit_fields(tracking: &[u8], routing: &[u8]) -> Option<(BarcodeKey, u64)> {
        values_of_digit_fields(tracking, routing).map(BarcodeKey::of_imb_values)
    }

    /// [`BarcodeKey::of_imb_digit_fields`] of digits read apart: `barcode_id` the first two
    /// tracking digits' values (0-9 each), `tail` the other eighteen as a number, and the
    /// routing digits' count (0, 5, 9 or 11) and number; `None` unless they are an IMb's (a
    /// second digit above 4, say). For a reader that turns digits into numbers its own way.
    pub fn of_imb_numbers(
        barcode_id: [u8; 2],
        tail: u64,
        routing_len: usize,
        routing_number: u64,
    ) -> Option<(BarcodeKey, u64)> {
        values_of_numbers(barcode_id, tail, routing_len, routing_number)
            .map(BarcodeKey::of_imb_values)
    }

    fn of_imb_values(values: DigitFieldValues) -> (BarcodeKey, u64) {
        (
            BarcodeKey(imb_key(values.tracking, values.routing)),
            values.routing_number,
        )
    }

    /// The key of the package barcode of digits only that [`Impb::from_digits`] accepts in
    /// `bytes`, with its `420` ZIP's digits (empty when bare), read without building the
    /// [`Impb`], for the forms nearly every feed record has; `None` for the others (legacy
    /// 20-digit numbers among them), which the caller reads through `from_digits`.
    pub fn of_common_package_digits(bytes: &[u8]) -> Option<(BarcodeKey, &[u8])> {
        let (tracking, zip) = common_package_digits(bytes)?;
        Some((BarcodeKey(impb_key(tracking)?), zip))
    }

    /// The raw value, for storage.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Checks a stored raw value and makes it a key again; anything that did not come from
    /// [`Barcode::key`] is an error.
    pub fn from_u128(raw: u128) -> Result<BarcodeKey, Error> {
        if BarcodeKey::is_key(raw) {
            Ok(BarcodeKey(raw))
        } else {
            Err(Error::new(ErrorKind::InvalidKey { raw }))
        }
    }

    /// Whether [`Barcode::key`] gives `raw`, read from the bits where that is cheap: a WAL
    /// replay or a bucket check asks it of every stored key, and rebuilding each barcode's
    /// digits cost a restart ~15 % of its time. An IMb key is one exactly when its tracking
    /// value is below [`TRACKING_SPAN`] and its routing value lies in a routing range; an IMpb
    /// key when its length field is at most 14 and its number has at most that many digits.
    /// IMcb keys, rare, are rebuilt ([`BarcodeKey::rebuilds_to_itself`], the twin the tests
    /// compare every kind with).
    fn is_key(raw: u128) -> bool {
        let body = raw & ((1 << KIND_SHIFT) - 1);
        match raw >> KIND_SHIFT {
            KIND_IMB => {
                let tracking = body >> IMB_ROUTING_BITS;
                let routing = (body & ((1 << IMB_ROUTING_BITS) - 1)) as u64;
                tracking < TRACKING_SPAN && routing_of_value(routing).is_some()
            }
            KIND_IMPB => {
                let extra_digits = (body >> IMPB_LENGTH_SHIFT) as u32;
                let number = body & ((1 << IMPB_LENGTH_SHIFT) - 1);
                extra_digits <= 14 && number < 10u128.pow(20 + extra_digits)
            }
            _ => BarcodeKey::rebuilds_to_itself(raw),
        }
    }

    /// Whether `raw` makes a barcode whose key is `raw` again.
    fn rebuilds_to_itself(raw: u128) -> bool {
        BarcodeKey::barcode_of(raw).is_some_and(|barcode| barcode.key().0 == raw)
    }

    /// The kind of barcode.
    pub fn kind(self) -> BarcodeKind {
        match self.0 >> KIND_SHIFT {
            KIND_IMB => BarcodeKind::Imb,
            KIND_IMPB => BarcodeKind::Impb,
            _ => BarcodeKind::Imcb,
        }
    }

    /// The barcode again, losslessly (an IMpb without its `420` ZIP).
    pub fn to_barcode(self) -> Barcode {
        BarcodeKey::barcode_of(self.0).expect("a BarcodeKey always holds a valid barcode")
    }

    /// An IMb key's routing code as its digit count (5, 9 or 11) and number, read from the key's
    /// bits without decoding the barcode; `None` for other kinds and for an IMb without routing.
    pub fn imb_routing(self) -> Option<(u32, u64)> {
        if self.0 >> KIND_SHIFT != KIND_IMB {
            return None;
        }
        let routing_value = (self.0 & ((1 << IMB_ROUTING_BITS) - 1)) as u64;
        match routing_of_value(routing_value)? {
            (0, _) => None,
            (len, number) => Some((len as u32, number)),
        }
    }

    /// The Mailer ID of the barcode, as [`Barcode::mailer_id`] gives it: an IMb's and an IMpb's
    /// read from the key's bits (a seal asks it of every piece, and rebuilding the barcode's
    /// digits for it cost ~400 instructions an IMb, ~1,000 a package), an IMcb's from its
    /// barcode.
    pub fn mailer_id(self) -> Option<u32> {
        let body = self.0 & ((1 << KIND_SHIFT) - 1);
        match self.0 >> KIND_SHIFT {
            KIND_IMB => Some(imb_mailer_id(body >> IMB_ROUTING_BITS)),
            KIND_IMPB => impb_mailer_id(
                (body >> IMPB_LENGTH_SHIFT) as usize + 20,
                body & ((1 << IMPB_LENGTH_SHIFT) - 1),
            ),
            _ => self.to_barcode().mailer_id(),
        }
    }

    /// Every IMb key with this tracking code, whatever the routing.
    pub fn imb_tracking_range(tracking: &str) -> Result<Range<BarcodeKey>, Error> {
        let start = Barcode::Imb(Imb::new(tracking, "")?).key().0;
        Ok(BarcodeKey(start)..BarcodeKey(start + (1 << IMB_ROUTING_BITS)))
    }

    fn barcode_of(raw: u128) -> Option<Barcode> {
        let body = raw & ((1 << KIND_SHIFT) - 1);
        match raw >> KIND_SHIFT {
            KIND_IMB => {
                let tracking = body >> IMB_ROUTING_BITS;
                let routing = (body & ((1 << IMB_ROUTING_BITS) - 1)) as u64;
                if tracking >= TRACKING_SPAN || routing >= ROUTING_END {
                    return None;
                }
                Imb::from_parts(tracking, routing).ok().map(Barcode::Imb)
            }
            KIND_IMPB => {
                let len = (body >> IMPB_LENGTH_SHIFT) as usize + 20;
                let mut digits = [0u8; 34];
                let digits = digits.get_mut(..len)?;
                write_decimal(digits, body & ((1 << IMPB_LENGTH_SHIFT) - 1))?;
                Some(Barcode::Impb(Impb::from_tracking_digits(digits)))
            }
            KIND_IMCB => {
                let mailer_id = body >> IMCB_SERIAL_BITS;
                let mut text = [0u8; 18];
                let mailer_id_len = mailer_id_digits(u32::try_from(mailer_id).ok()?);
                write_decimal(&mut text[..mailer_id_len], mailer_id)?;
                for (i, slot) in text[mailer_id_len..].iter_mut().enumerate() {
                    *slot = serial_char((body >> (6 * (11 - i)) & 0x3F) as u8)?;
                }
                Some(Barcode::Imcb(Imcb::from_body(text)))
            }
            _ => None,
        }
    }
}

impl fmt::Debug for BarcodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BarcodeKey({:#034x} = {})", self.0, self.to_barcode())
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    #[test]
    fn imb_routing_is_read_from_the_key() {
        for (routing, expected) in [
            ("", None),
            ("01234", Some((5, 1234))),
            ("012345678", Some((9, 12_345_678))),
            ("01234567891", Some((11, 1_234_567_891))),
        ] {
            let key = Barcode::Imb(Imb::new("01234567094987654321", routing).unwrap()).key();
            assert_eq!(key.imb_routing(), expected, "{routing}");
        }
        let package = Barcode::parse("9400111899223197428497").unwrap().key();
        assert_eq!(package.imb_routing(), None);
    }

    #[test]
    fn forms_are_recognised() {
        let imb = Barcode::parse("01234567094987654321-01234567891").unwrap();
        assert_eq!(
            Barcode::parse("AADTFFDFTDADTAADAATFDTDDAAADDTDTTDAFADADDDTFFFDDTTTADFAAADFTDAADA")
                .unwrap(),
            imb
        );
        assert_eq!(
            Barcode::parse("0123456709498765432101234567891").unwrap(),
            imb
        );
        assert_eq!(
            Barcode::parse("9400 1112 0108 0805 4830 16")
                .unwrap()
                .kind(),
            BarcodeKind::Impb
        );
        assert_eq!(
            Barcode::parse("4201002334249200190132607600833457")
                .unwrap()
                .kind(),
            BarcodeKind::Impb
        );
        assert_eq!(
            Barcode::parse("99M123456ABC123456789").unwrap().kind(),
            BarcodeKind::Imcb
        );
        // 20 digits read as an IMb first; when the second digit rules that out, as a legacy
        // package number.
        assert_eq!(
            Barcode::parse("7196 9010 7560 0307 7385").unwrap().kind(),
            BarcodeKind::Imb
        );
        assert_eq!(
            Barcode::parse("07123456789012345678").unwrap().kind(),
            BarcodeKind::Impb
        );
        assert_eq!(
            Barcode::parse("9999999999999999999 5").unwrap_err().code(),
            "barcode_id_second_digit"
        );
        assert_eq!(Barcode::parse("hello").unwrap_err().code(), "unknown_form");
    }

    #[test]
    fn keys_round_trip_every_kind() {
        for input in [
            "00000000000000000000",
            "94999999999999999999-99999999999",
            "01234567094987654321-012345678",
            "9405803699300124287899",
            "4201002334249200190132607600833457",
            "71969010756003077385",
            "92748931507708513018050063",
            "99M123456ABC123456789",
            "99M901234567XYZ000001",
            "99M000000000000000000",
        ] {
            let barcode = Barcode::parse(input).unwrap();
            let key = barcode.key();
            let back = BarcodeKey::from_u128(key.as_u128()).unwrap();
            assert_eq!(back, key);
            let again = key.to_barcode();
            assert_eq!(again.key(), key, "{input}");
            match (barcode, again) {
                (Barcode::Impb(a), Barcode::Impb(b)) => assert_eq!(a.tracking(), b.tracking()),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    /// Key bodies near the edges of each kind's fields, and anywhere else.
    fn key_bodies() -> impl Strategy<Value = u128> {
        let shifted = |value: u128, delta: i64| value.wrapping_add_signed(i128::from(delta));
        proptest::prop_oneof![
            proptest::num::u128::ANY,
            // IMpb: a number at the edge of its length field's digit count.
            (0u32..16, -2i64..3).prop_map(move |(extra, delta)| {
                u128::from(extra) << IMPB_LENGTH_SHIFT | shifted(10u128.pow(20 + extra), delta)
            }),
            // IMb: a tracking value at the edge of its span, any routing value.
            (-2i64..3, 0u128..1 << IMB_ROUTING_BITS).prop_map(move |(delta, routing)| {
                shifted(TRACKING_SPAN, delta) << IMB_ROUTING_BITS | routing
            }),
            // IMb: a routing value at the edge of a routing range.
            (0..TRACKING_SPAN, 0usize..5, -2i64..3).prop_map(move |(tracking, edge, delta)| {
                let edge = [0, 1, 100_001, 1_000_100_001, 101_000_100_001][edge];
                tracking << IMB_ROUTING_BITS | shifted(edge, delta) & ((1 << IMB_ROUTING_BITS) - 1)
            }),
        ]
        .prop_map(|body| body & ((1 << KIND_SHIFT) - 1))
    }

    /// Numbers that no IMb's digits write are no key: a second digit above 4, a tail of
    /// nineteen digits, a routing number longer than its count, a count no routing has.
    #[test]
    fn imb_numbers_out_of_range_are_no_key() {
        let key = |id, tail, len, number| BarcodeKey::of_imb_numbers(id, tail, len, number);
        assert!(key([0, 0], 999_999_999_999_999_999, 11, 99_999_999_999).is_some());
        assert!(key([9, 4], 0, 0, 0).is_some());
        assert_eq!(key([0, 5], 0, 0, 0), None);
        assert_eq!(key([10, 0], 0, 0, 0), None);
        assert_eq!(key([0, 0], 1_000_000_000_000_000_000, 0, 0), None);
        assert_eq!(key([0, 0], 0, 5, 100_000), None);
        assert_eq!(key([0, 0], 0, 0, 1), None);
        assert_eq!(key([0, 0], 0, 3, 1), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// An IMb key's Mailer ID read from its bits is its barcode's, for tracking values of
        /// every kind (around the 6-to-9-digit edge of a Mailer ID too) and any routing.
        #[test]
        fn imb_mailer_ids_from_bits_equal_the_barcodes(
            tracking in proptest::prop_oneof![
                0..TRACKING_SPAN,
                // The last fifteen digits (Mailer ID and serial) either side of 9 × 10^14.
                (0..TRACKING_SPAN / 10u128.pow(15), 0u128..4).prop_map(|(head, delta)| {
                    head * 10u128.pow(15) + 900_000_000_000_000 - 2 + delta
                }),
            ],
            routing in 0u64..ROUTING_END,
        ) {
            let raw = KIND_IMB << KIND_SHIFT | tracking << IMB_ROUTING_BITS | u128::from(routing);
            proptest::prop_assume!(BarcodeKey::is_key(raw));
            let key = BarcodeKey(raw);
            proptest::prop_assert_eq!(key.mailer_id(), key.to_barcode().mailer_id());
        }

        /// The bits check answers as rebuilding the barcode does.
        #[test]
        fn is_key_equals_rebuilding(kind in 0u128..5, body in key_bodies()) {
            let raw = kind << KIND_SHIFT | body;
            proptest::prop_assert_eq!(
                BarcodeKey::is_key(raw),
                BarcodeKey::rebuilds_to_itself(raw),
                "{:#x}",
                raw
            );
        }
    }

    #[test]
    fn foreign_values_are_not_keys() {
        for raw in [
            0u128,
            1,
            u128::MAX,
            4 << KIND_SHIFT,
            KIND_IMB << KIND_SHIFT | (TRACKING_SPAN << IMB_ROUTING_BITS),
        ] {
            assert_eq!(
                BarcodeKey::from_u128(raw).unwrap_err().code(),
                "invalid_key",
                "{raw:#x}"
            );
        }
    }

    #[test]
    fn tracking_range_holds_every_routing() {
        let range = BarcodeKey::imb_tracking_range("01234567094987654321").unwrap();
        for routing in ["", "01234", "012345678", "01234567891", "99999999999"] {
            let key = Barcode::Imb(Imb::new("01234567094987654321", routing).unwrap()).key();
            assert!(range.contains(&key), "{routing}");
        }
        let other = Barcode::Imb(Imb::new("01234567094987654322", "").unwrap()).key();
        assert!(!range.contains(&other));
    }

    #[test]
    fn a_mailer_id_field_is_one_only_by_the_mailer_id_rule() {
        // Channel 92: a 9-digit field. Starting with 9 it is a Mailer ID; `000839744` is not,
        // and so cannot pass for the 6-digit Mailer ID 839744.
        // Each read from the barcode and from its key's bits, which must agree.
        let with_field = |channel: &str, field: &str| {
            let body = format!("{channel}055{field}{}", &"1234567890"[..16 - field.len()]);
            let check = crate::mod10_check_digit(body.bytes());
            let barcode = Barcode::parse(&format!("{body}{check}")).unwrap();
            assert_eq!(barcode.key().mailer_id(), barcode.mailer_id(), "{body}");
            barcode.mailer_id()
        };
        assert_eq!(with_field("92", "901234567"), Some(901_234_567));
        assert_eq!(with_field("92", "900000000"), Some(900_000_000));
        assert_eq!(with_field("92", "899999999"), None);
        assert_eq!(with_field("92", "000839744"), None);
        // Channel 93: a 6-digit field, a Mailer ID unless it starts with 9.
        assert_eq!(with_field("93", "899999"), Some(899_999));
        assert_eq!(with_field("93", "900000"), None);
        assert_eq!(with_field("93", "000123"), Some(123));
        assert_eq!(parse_mailer_id("839744"), Some(839_744));
        assert_eq!(parse_mailer_id("939744"), None);
        assert_eq!(parse_mailer_id("000839744"), None);
        assert_eq!(parse_mailer_id("83974"), None);
        // Written back as read: leading zeros kept on 6 digits.
        for text in ["000123", "839744", "901234567"] {
            assert_eq!(format_mailer_id(parse_mailer_id(text).unwrap()), text);
        }
    }

    /// The key of an IMb the way [`BarcodeKey::of_imb_digit_fields`] replaced: its digits
    /// folded one at a time.
    fn naive_imb_key(tracking: &[u8], routing: &[u8]) -> Option<u128> {
        let imb = Imb::from_digit_fields(tracking, routing)?;
        let fold = |digits: &[u8]| {
            digits
                .iter()
                .fold(0u128, |v, &d| v * 10 + u128::from(d - b'0'))
        };
        let head = u128::from((tracking[0] - b'0') * 5 + (tracking[1] - b'0'));
        let tracking_value = head * 1_000_000_000_000_000_000 + fold(&tracking[2..]);
        let base = match routing.len() {
            0 => return Some(imb_key(tracking_value, 0)),
            5 => 1,
            9 => 100_001,
            _ => 1_000_100_001,
        };
        let routing_value = fold(imb.routing_digits()) as u64 + base;
        Some(imb_key(tracking_value, routing_value))
    }

    /// Digits of a package barcode: `420` and a ZIP or not, a channel or not, a check digit
    /// right or not, and lengths around the right ones.
    fn package_digits() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            // A 9-digit ZIP ending in a channel: the 26-digit split may hold too.
            prop_oneof![
                Just(String::new()),
                "420[0-9]{5}",
                "420[0-9]{9}",
                "420[0-9]{5}9[1-5][0-9]{2}",
                "420[0-9]{0,12}"
            ],
            prop_oneof!["9[1-5]", "[0-9]{2}"],
            // Data and check digit: 22 or 26 digits with the channel, or other lengths.
            prop_oneof!["[0-9]{20}", "[0-9]{24}", "[0-9]{16,27}"],
            any::<bool>(),
        )
            .prop_map(|(zip, channel, body, fix_check)| {
                let mut tracking = format!("{channel}{body}").into_bytes();
                if fix_check && tracking.len() > 1 {
                    let last = tracking.len() - 1;
                    tracking[last] =
                        b'0' + crate::impb::mod10_check_digit(tracking[..last].iter().copied());
                }
                let mut digits = zip.into_bytes();
                digits.extend_from_slice(&tracking);
                digits
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Package digits read in place give what `Impb::from_digits` and `Barcode::key` give,
        /// and are read so wherever `from_digits` accepts them but for legacy 20-digit numbers.
        #[test]
        fn package_keys_read_in_place_equal_the_impb_s(digits in package_digits()) {
            let slow = Impb::from_digits(&digits).and_then(Result::ok);
            match BarcodeKey::of_common_package_digits(&digits) {
                Some((key, zip)) => {
                    let impb = slow.expect("from_digits accepts what is read in place");
                    proptest::prop_assert_eq!(key, Barcode::Impb(impb).key());
                    proptest::prop_assert_eq!(zip, impb.zip_digits());
                }
                None => proptest::prop_assert!(slow.is_none_or(|impb| impb.tracking_digits().len() == 20)),
            }
        }

        /// A package key's Mailer ID read from its bits is its barcode's.
        #[test]
        fn package_mailer_ids_from_bits_equal_the_barcodes(digits in package_digits()) {
            if let Some(impb) = Impb::from_digits(&digits).and_then(Result::ok) {
                let key = Barcode::Impb(impb).key();
                proptest::prop_assert_eq!(key.mailer_id(), Barcode::Impb(impb).mailer_id());
            }
        }

        #[test]
        fn imb_keys_of_digit_fields_equal_the_digit_loop(
            tracking in proptest::collection::vec(
                proptest::prop_oneof![
                    30 => proptest::sample::select(b"0123456789".to_vec()),
                    1 => proptest::num::u8::ANY,
                ],
                19..=21,
            ),
            routing in proptest::prop_oneof![
                proptest::strategy::Just(String::new()),
                "[0-9]{5}",
                "[0-9]{9}",
                "[0-9]{11}",
                "[0-9a]{0,12}",
            ],
        ) {
            let routing = routing.as_bytes();
            let fast = BarcodeKey::of_imb_digit_fields(&tracking, routing);
            let key = fast.map(|(key, _)| key);
            proptest::prop_assert_eq!(key.map(BarcodeKey::as_u128), naive_imb_key(&tracking, routing));
            if let Some(imb) = Imb::from_digit_fields(&tracking, routing) {
                proptest::prop_assert_eq!(key, Some(Barcode::Imb(imb).key()));
                // The routing number is the routing code's, as the key's bits give it back
                // (with the digit count, none for no routing, and then 0).
                let from_bits = key.and_then(BarcodeKey::imb_routing);
                let given = fast.and_then(|(_, n)| (!routing.is_empty()).then_some((routing.len() as u32, n)));
                proptest::prop_assert_eq!(given, from_bits);
                proptest::prop_assert!(!routing.is_empty() || fast.is_some_and(|(_, n)| n == 0));
                // The same digits read apart and given as numbers make the same key.
                let barcode_id = [tracking[0] - b'0', tracking[1] - b'0'];
                let tail = crate::digits::digits_value(&tracking[2..]).expect("digits");
                let number = crate::digits::digits_value(routing).expect("digits");
                proptest::prop_assert_eq!(BarcodeKey::of_imb_numbers(barcode_id, tail, routing.len(), number), fast);
            }
        }
    }
}
