//! The fixed tables of USPS-B-3200: the N-of-13 character tables (Appendix C's generator, run at
//! compile time), their inverse, and the bar-to-character map (Table IV).

/// Number of bars in an IMb.
pub(crate) const BAR_COUNT: usize = 65;

/// Table I: the 1,287 5-of-13 characters, codewords 0..=1286.
pub(crate) static TABLE_5_OF_13: [u16; 1287] = n_of_13_table::<1287>(5);
/// Table II: the 78 2-of-13 characters, codewords 1287..=1364.
pub(crate) static TABLE_2_OF_13: [u16; 78] = n_of_13_table::<78>(2);

/// Spec Appendix C `InitializeNof13Table`: every 13-bit value with `n` bits set, pairs of a value
/// and its bit-reversal from the start, palindromes from the end.
const fn n_of_13_table<const LEN: usize>(n: u32) -> [u16; LEN] {
    let mut table = [0u16; LEN];
    let mut lo = 0;
    let mut hi = LEN;
    let mut count: u16 = 0;
    while count < 8191 {
        if count.count_ones() == n {
            let rev = count.reverse_bits() >> 3;
            if rev == count {
                hi -= 1;
                table[hi] = count;
            } else if rev > count {
                table[lo] = count;
                table[lo + 1] = rev;
                lo += 2;
            }
        }
        count += 1;
    }
    assert!(
        lo == hi,
        "N-of-13 table size does not match the number of characters"
    );
    table
}

/// Marks a 13-bit value that is no IMb character.
pub(crate) const NOT_A_CHARACTER: u16 = u16::MAX;
/// Set in a [`CHARACTER_TO_CODEWORD`] entry when the character was stored inverted (its FCS bit is 1).
pub(crate) const INVERTED: u16 = 0x8000;

/// Inverse of Tables I and II for all 8,192 13-bit values: codeword (0..=1364), plus [`INVERTED`]
/// for the complemented (8-of-13 and 11-of-13) forms, or [`NOT_A_CHARACTER`].
pub(crate) static CHARACTER_TO_CODEWORD: [u16; 8192] = {
    let mut inverse = [NOT_A_CHARACTER; 8192];
    let mut i = 0;
    while i < 1287 {
        let c = TABLE_5_OF_13[i] as usize;
        inverse[c] = i as u16;
        inverse[c ^ 0x1FFF] = i as u16 | INVERTED;
        i += 1;
    }
    let mut i = 0;
    while i < 78 {
        let c = TABLE_2_OF_13[i] as usize;
        inverse[c] = (1287 + i) as u16;
        inverse[c ^ 0x1FFF] = (1287 + i) as u16 | INVERTED;
        i += 1;
    }
    inverse
};

/// The character (0 = A … 9 = J) carried by each bar's descender (Table IV, index = bar − 1).
pub(crate) static DESCENDER_CHARACTER: [u8; BAR_COUNT] = [
    7, 1, 9, 5, 8, 0, 2, 4, 6, 3, 5, 8, 9, 7, 3, 0, 6, 1, 7, 4, 6, 8, 9, 2, 5, 1, 7, 5, 4, 3, 8, 7,
    6, 0, 2, 5, 4, 9, 3, 0, 1, 6, 8, 2, 0, 4, 5, 9, 6, 7, 5, 2, 6, 3, 8, 5, 1, 9, 8, 7, 4, 0, 2, 6,
    3,
];
/// The bit of that character the descender carries.
pub(crate) static DESCENDER_BIT: [u8; BAR_COUNT] = [
    2, 10, 12, 5, 9, 1, 5, 4, 3, 9, 11, 5, 10, 1, 6, 3, 4, 1, 10, 0, 2, 11, 8, 6, 1, 12, 3, 8, 6,
    4, 4, 11, 0, 6, 1, 9, 11, 5, 3, 7, 3, 10, 7, 11, 8, 2, 10, 3, 5, 8, 0, 3, 12, 11, 8, 4, 5, 1,
    3, 0, 7, 12, 9, 8, 10,
];
/// The character carried by each bar's ascender.
pub(crate) static ASCENDER_CHARACTER: [u8; BAR_COUNT] = [
    4, 0, 2, 6, 3, 5, 1, 9, 8, 7, 1, 2, 0, 6, 4, 8, 2, 9, 5, 3, 0, 1, 3, 7, 4, 6, 8, 9, 2, 0, 5, 1,
    9, 4, 3, 8, 6, 7, 1, 2, 4, 3, 9, 5, 7, 8, 3, 0, 2, 1, 4, 0, 9, 1, 7, 0, 2, 4, 6, 3, 7, 1, 9, 5,
    8,
];
/// The bit of that character the ascender carries.
pub(crate) static ASCENDER_BIT: [u8; BAR_COUNT] = [
    3, 0, 8, 11, 1, 12, 8, 11, 10, 6, 4, 12, 2, 7, 9, 6, 7, 9, 2, 8, 4, 0, 12, 7, 10, 9, 0, 7, 10,
    5, 7, 9, 6, 8, 2, 12, 1, 4, 2, 0, 1, 5, 4, 6, 12, 1, 0, 9, 4, 7, 5, 10, 2, 6, 9, 11, 2, 12, 6,
    7, 5, 11, 0, 3, 2,
];

/// CRC-11 generator x^11+x^10+x^9+x^8+x^5+x^4+x^2+1 without its x^11 term.
pub(crate) const CRC11_POLY: u16 = 0x735;

/// Byte-at-a-time table for the MSB-first CRC-11 (see `crate::imb::frame_check_sequence`).
pub(crate) static CRC11_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 3;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x400 != 0 {
                (crc << 1) ^ CRC11_POLY
            } else {
                crc << 1
            };
            crc &= 0x7FF;
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Spot values from barcode4j's `testCharLookupTableInitialization`.
    #[test]
    fn character_tables_match_published_spot_values() {
        for (index, value) in [
            (0, 31),
            (1, 7936),
            (2, 47),
            (3, 7808),
            (93, 6368),
            (500, 1077),
        ]
        .into_iter()
        .chain([(1000, 2641), (1284, 856), (1285, 744), (1286, 496)])
        {
            assert_eq!(TABLE_5_OF_13[index], value, "Table I[{index}]");
        }
        for (index, value) in [(0, 3), (1, 6144), (2, 5), (3, 5120), (50, 144), (60, 513)]
            .into_iter()
            .chain([(75, 520), (76, 272), (77, 160)])
        {
            assert_eq!(TABLE_2_OF_13[index], value, "Table II[{index}]");
        }
    }

    #[test]
    fn inverse_table_covers_exactly_the_2730_characters() {
        let valid = CHARACTER_TO_CODEWORD
            .iter()
            .filter(|&&e| e != NOT_A_CHARACTER)
            .count();
        assert_eq!(valid, 2730);
        for (value, &entry) in CHARACTER_TO_CODEWORD.iter().enumerate() {
            let ones = (value as u16).count_ones();
            let expect_valid = matches!(ones, 2 | 5 | 8 | 11);
            assert_eq!(entry != NOT_A_CHARACTER, expect_valid, "value {value:#06x}");
            if expect_valid {
                assert_eq!(entry & INVERTED != 0, ones >= 8, "value {value:#06x}");
            }
        }
    }

    /// Every character bit sits on exactly one bar half, so the map is a bijection onto 130 slots.
    #[test]
    fn bar_map_places_every_character_bit_once() {
        let mut seen = [[false; 13]; 10];
        for bar in 0..BAR_COUNT {
            for (c, b) in [
                (DESCENDER_CHARACTER[bar], DESCENDER_BIT[bar]),
                (ASCENDER_CHARACTER[bar], ASCENDER_BIT[bar]),
            ] {
                assert!(
                    !seen[c as usize][b as usize],
                    "bar {} reuses {c}/{b}",
                    bar + 1
                );
                seen[c as usize][b as usize] = true;
            }
            assert_ne!(DESCENDER_CHARACTER[bar], ASCENDER_CHARACTER[bar]);
        }
    }
}
