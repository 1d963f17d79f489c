//! The integer codecs of bucket format v2: LEB128 varints and fixed-width bit fields. Every
//! reader is checked (`None` on bytes that end early or overflow), since a bucket whose
//! checksums were forged can hold anything.

/// Appends `value` as LEB128: seven bits a byte, least significant first, the top bit set on
/// every byte but the last.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a LEB128 value at `*at` and moves past it; `None` if the bytes end first or the value
/// does not fit 128 bits.
pub(crate) fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u128> {
    let mut value = 0u128;
    for shift in (0..128).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        let bits = u128::from(byte & 0x7F);
        if shift > 0 && bits >> (128 - shift) != 0 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Bytes a fixed-width bit array carries after its last field, so that every field is read
/// with one unaligned 16-byte load.
pub(crate) const BIT_PADDING: usize = 16;

/// Bytes of a bit array of `count` fields of `width` bits, padding included.
pub(crate) fn bit_array_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8) + BIT_PADDING
}

/// Bits needed to write every number up to `max`.
pub(crate) fn bits_for(max: u128) -> u32 {
    u128::BITS - max.leading_zeros()
}

/// The widest field a bit array holds: one 16-byte load must cover it at any bit offset.
pub(crate) const MAX_FIELD_BITS: u32 = 120;

/// ORs a field of `width` (≤ [`MAX_FIELD_BITS`]) bits into a zeroed bit array at bit `bit`
/// (counted from bit 0 of byte 0, least significant first); the array must have 16 bytes from
/// byte `bit / 8` on.
pub(crate) fn put_bits(array: &mut [u8], bit: usize, width: u32, value: u128) {
    debug_assert!(width <= MAX_FIELD_BITS && (width == 128 || value >> width == 0));
    let slot: &mut [u8; 16] = (&mut array[bit / 8..bit / 8 + 16])
        .try_into()
        .expect("16 bytes");
    let word = u128::from_le_bytes(*slot) | value << (bit % 8);
    *slot = word.to_le_bytes();
}

/// Reads the field of `width` (≤ [`MAX_FIELD_BITS`]) bits at bit `bit`; `None` when the
/// 16-byte load would pass the array's end.
pub(crate) fn get_bits(array: &[u8], bit: usize, width: u32) -> Option<u128> {
    let slot: [u8; 16] = array.get(bit / 8..bit / 8 + 16)?.try_into().ok()?;
    let word = u128::from_le_bytes(slot) >> (bit % 8);
    Some(word & ((1u128 << width) - 1))
}

/// Writes the low `n` bytes of `value`, little-endian.
pub(crate) fn put_uint(out: &mut Vec<u8>, value: u64, n: usize) {
    out.extend_from_slice(&value.to_le_bytes()[..n]);
}

/// Reads an `n`-byte little-endian number at `*at` and moves past it.
pub(crate) fn get_uint(bytes: &[u8], at: &mut usize, n: usize) -> Option<u64> {
    let field = bytes.get(*at..at.checked_add(n)?)?;
    *at += n;
    let mut word = [0u8; 8];
    word.get_mut(..n)?.copy_from_slice(field);
    Some(u64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints_have_the_documented_bytes() {
        let mut out = Vec::new();
        for value in [0, 1, 127, 128, 300, u128::MAX] {
            put_varint(&mut out, value);
        }
        let expected_head = [0x00, 0x01, 0x7F, 0x80, 0x01, 0xAC, 0x02];
        assert_eq!(out[..7], expected_head);
        assert_eq!(out.len(), 7 + 19);
        assert_eq!(*out.last().unwrap(), 0x03);
    }

    #[test]
    fn bad_varints_are_refused() {
        assert_eq!(get_varint(&[0x80, 0x80], &mut 0), None);
        let mut too_big = vec![0xFF; 18];
        too_big.push(0x04);
        assert_eq!(get_varint(&too_big, &mut 0), None);
        assert_eq!(get_varint(&[0xFF; 40], &mut 0), None);
    }

    #[test]
    fn bits_are_packed_from_bit_zero() {
        let mut array = vec![0u8; bit_array_len(3, 5)];
        for (i, v) in [0b10101, 0b00011, 0b11111].into_iter().enumerate() {
            put_bits(&mut array, i * 5, 5, v);
        }
        assert_eq!(array[..2], [0b0111_0101, 0b0111_1100]);
        assert_eq!(array.len(), 2 + BIT_PADDING);
    }

    proptest! {
        #[test]
        fn varints_round_trip(values in proptest::collection::vec(any::<u128>(), 0..50)) {
            let mut out = Vec::new();
            for &v in &values {
                put_varint(&mut out, v >> (v % 128) as u32);
            }
            let mut at = 0;
            for &v in &values {
                prop_assert_eq!(get_varint(&out, &mut at), Some(v >> (v % 128) as u32));
            }
            prop_assert_eq!(at, out.len());
        }

        #[test]
        fn bit_fields_round_trip(width in 0u32..=MAX_FIELD_BITS, raw in proptest::collection::vec(any::<u128>(), 0..100)) {
            let values: Vec<u128> = raw.iter().map(|v| v & ((1u128 << width) - 1)).collect();
            let mut array = vec![0u8; bit_array_len(values.len(), width)];
            for (i, &v) in values.iter().enumerate() {
                put_bits(&mut array, i * width as usize, width, v);
            }
            for (i, &v) in values.iter().enumerate() {
                prop_assert_eq!(get_bits(&array, i * width as usize, width), Some(v));
            }
        }

        #[test]
        fn uints_round_trip(value in any::<u64>(), n in 1usize..=8) {
            let value = if n == 8 { value } else { value & ((1 << (8 * n)) - 1) };
            let mut out = Vec::new();
            put_uint(&mut out, value, n);
            prop_assert_eq!(get_uint(&out, &mut 0, n), Some(value));
        }
    }
}
