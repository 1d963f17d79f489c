//! ASCII digit runs read eight bytes at a time (SWAR, after Lemire's "parsing eight digits"):
//! every scan record carries 30-odd digits, and a byte-at-a-time loop was a tenth of the parse.
//! The byte loops they replace stay in the tests as their twins.

const ZEROS: u64 = 0x3030_3030_3030_3030;
const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const SIXES: u64 = 0x0606_0606_0606_0606;
const THREES: u64 = 0x3333_3333_3333_3333;

/// The value of eight ASCII digits (the first the most significant), `None` if any byte is not
/// a digit.
pub fn eight_digits(bytes: [u8; 8]) -> Option<u64> {
    let word = u64::from_le_bytes(bytes);
    if !is_eight_digits(word) {
        return None;
    }
    let mut value = word - ZEROS;
    value = (value.wrapping_mul(10 * 256 + 1) >> 8) & 0x00FF_00FF_00FF_00FF;
    value = (value.wrapping_mul(100 * 65_536 + 1) >> 16) & 0x0000_FFFF_0000_FFFF;
    Some(value.wrapping_mul(10_000 * (1 << 32) + 1) >> 32)
}

/// Whether every byte of `word` is an ASCII digit. A digit is 0x30..=0x39: its high nibble is
/// 3 and stays 3 when 6 is added. A byte that carries out of itself (≥ 0xFA) has high nibble
/// F, so the carry never hides a bad byte.
fn is_eight_digits(word: u64) -> bool {
    (word & HIGH_NIBBLES) | ((word.wrapping_add(SIXES) & HIGH_NIBBLES) >> 4) == THREES
}

/// The eight bytes from `at`, little-endian.
fn word_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// Whether every byte is an ASCII digit, read eight at a time (the last eight overlapping the
/// word before them).
pub(crate) fn all_digits(bytes: &[u8]) -> bool {
    let Some(last) = bytes.len().checked_sub(8) else {
        return bytes.iter().all(u8::is_ascii_digit);
    };
    let mut at = 0;
    while at < last {
        if !is_eight_digits(word_at(bytes, at)) {
            return false;
        }
        at += 8;
    }
    is_eight_digits(word_at(bytes, last))
}

/// The sums of the digits at even and at odd positions (from 0) of a run of ASCII digits,
/// eight at a time: a Mod 10 check weighs every other digit. Bytes that are not digits give
/// meaningless sums; callers check them first.
pub(crate) fn alternate_digit_sums(digits: &[u8]) -> (u32, u32) {
    const EVEN_BYTES: u64 = 0x00FF_00FF_00FF_00FF;
    // Four 16-bit lanes summed into the top lane by one multiply (each sum is at most 36).
    let lanes_sum = |lanes: u64| (lanes.wrapping_mul(0x0001_0001_0001_0001) >> 48) as u32;
    let sums = |word: u64| {
        let values = word.wrapping_sub(ZEROS);
        (
            lanes_sum(values & EVEN_BYTES),
            lanes_sum((values >> 8) & EVEN_BYTES),
        )
    };
    if digits.len() < 8 {
        return digits
            .iter()
            .enumerate()
            .fold((0, 0), |(even, odd), (i, &d)| {
                let value = u32::from(d.wrapping_sub(b'0'));
                if i % 2 == 0 {
                    (even + value, odd)
                } else {
                    (even, odd + value)
                }
            });
    }
    let mut chunks = digits.chunks_exact(8);
    let (mut even, mut odd) = (0, 0);
    for chunk in chunks.by_ref() {
        let (e, o) = sums(word_at(chunk, 0));
        even += e;
        odd += o;
    }
    let rest = chunks.remainder().len();
    if rest > 0 {
        // The last eight bytes, those already summed shifted out and '0's shifted in, so that
        // the first left, at an even position (a multiple of eight), is the word's first byte.
        let last = word_at(digits, digits.len() - 8) >> (8 * (8 - rest)) | ZEROS << (8 * rest);
        let (e, o) = sums(last);
        even += e;
        odd += o;
    }
    (even, odd)
}

/// The value of at most 19 ASCII digits (an empty run is 0), `None` if any byte is not a digit
/// or there are more than 19.
pub fn digits_value(digits: &[u8]) -> Option<u64> {
    if digits.len() > 19 {
        return None;
    }
    let mut chunks = digits.chunks_exact(8);
    let mut value = 0u64;
    for chunk in chunks.by_ref() {
        value = value * 100_000_000 + eight_digits(chunk.try_into().ok()?)?;
    }
    for &b in chunks.remainder() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

/// The value of at most 38 ASCII digits (a package tracking number, say), `None` as for
/// [`digits_value`].
pub fn wide_digits_value(digits: &[u8]) -> Option<u128> {
    if digits.len() > 38 {
        return None;
    }
    if digits.len() <= 19 {
        return digits_value(digits).map(u128::from);
    }
    // The last sixteen digits as two words, whatever the length: split at nineteen, a package
    // number's 22 digits were 3 and 19, each with digits left over from eight for a byte loop.
    let (high, low) = digits.split_at(digits.len() - 16);
    let low = eight_digits(low[..8].try_into().ok()?)? * 100_000_000
        + eight_digits(low[8..].try_into().ok()?)?;
    let high = match high.len() {
        // Up to eight (a 22-digit package number's six): the first word, the bytes past them
        // shifted out and '0's shifted in before them.
        len @ ..=8 => {
            let word = word_at(digits, 0) << (8 * (8 - len))
                | ZEROS.checked_shr(8 * len as u32).unwrap_or(0);
            u128::from(eight_digits(word.to_le_bytes())?)
        }
        ..=19 => u128::from(digits_value(high)?),
        _ => wide_digits_value(high)?,
    };
    Some(high * 10_000_000_000_000_000 + u128::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive twin of [`digits_value`].
    fn naive_value(digits: &[u8]) -> Option<u64> {
        if digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0')),
        )
    }

    proptest::proptest! {
        #[test]
        fn alternate_sums_equal_the_byte_loop(digits in "[0-9]{0,48}") {
            let naive = digits.bytes().enumerate().fold((0, 0), |(even, odd), (i, d)| {
                let value = u32::from(d - b'0');
                if i % 2 == 0 { (even + value, odd) } else { (even, odd + value) }
            });
            proptest::prop_assert_eq!(alternate_digit_sums(digits.as_bytes()), naive);
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(eight_digits(*b"00000000"), Some(0));
        assert_eq!(eight_digits(*b"12345678"), Some(12_345_678));
        assert_eq!(eight_digits(*b"99999999"), Some(99_999_999));
        assert_eq!(eight_digits(*b"1234567/"), None);
        assert_eq!(eight_digits(*b":2345678"), None);
        assert_eq!(eight_digits(*b"1234\xFA678"), None);
        assert_eq!(digits_value(b""), Some(0));
        assert_eq!(
            digits_value(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(digits_value(b"12345678901234567890"), None);
    }

    proptest::proptest! {
        #[test]
        fn equals_the_byte_loop(
            digits in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::sample::select(b"0123456789".to_vec()),
                    1 => proptest::num::u8::ANY,
                ],
                0..22,
            )
        ) {
            proptest::prop_assert_eq!(digits_value(&digits), naive_value(&digits));
            let naive_wide = digits.iter().all(u8::is_ascii_digit).then(|| {
                digits.iter().fold(0u128, |v, &d| v * 10 + u128::from(d - b'0'))
            });
            proptest::prop_assert_eq!(wide_digits_value(&digits), naive_wide);
            let doubled = [&digits[..], &digits[..]].concat();
            let naive_doubled = (doubled.len() <= 38 && naive_wide.is_some()).then(|| {
                doubled.iter().fold(0u128, |v, &d| v * 10 + u128::from(d - b'0'))
            });
            proptest::prop_assert_eq!(wide_digits_value(&doubled), naive_doubled);
            proptest::prop_assert_eq!(all_digits(&digits), digits.iter().all(u8::is_ascii_digit));
            if let Ok(eight) = <[u8; 8]>::try_from(&digits[..digits.len().min(8)]) {
                proptest::prop_assert_eq!(eight_digits(eight), naive_value(&eight));
            }
        }
    }
}
