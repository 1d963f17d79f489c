//! One error type for every barcode form: [`Error`] wraps an [`ErrorKind`] that says what was
//! wrong and where.

use std::fmt;

/// What was wrong with a barcode input. Positions are 1-based character positions in the input
/// as given (after spaces were removed), bar positions count bars from the left.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The IMb tracking code is not 20 digits long (USPS reference encoder code 09).
    TrackingLength {
        /// Its length.
        len: usize,
    },
    /// The IMb tracking code holds a non-digit (USPS code 10).
    TrackingDigit {
        /// 1-based position in the tracking code.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// The second digit of the barcode identifier is above 4 (USPS code 11).
    BarcodeIdSecondDigit {
        /// The digit found.
        found: u8,
    },
    /// The routing code is not 0, 5, 9 or 11 digits long (USPS code 12).
    RoutingLength {
        /// Its length.
        len: usize,
    },
    /// The routing code holds a non-digit (USPS code 13).
    RoutingDigit {
        /// 1-based position in the routing code.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// A bar string is not 65 bars long.
    BarCount {
        /// How many bars it had.
        len: usize,
    },
    /// A bar string holds something other than A, D, F or T.
    BarState {
        /// 1-based bar position.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// Characters whose 13 bits are no N-of-13 pattern; bit 0 = character A … bit 9 = J.
    InvalidCharacters {
        /// Bit set of the damaged characters.
        characters: u16,
    },
    /// A codeword outside its range (A must be ≤ 1317, J even and ≤ 1270).
    CodewordRange {
        /// `'A'` or `'J'`.
        character: char,
        /// The codeword read.
        codeword: u16,
    },
    /// The frame check sequence read from the bars differs from the CRC-11 of the data.
    CrcMismatch {
        /// CRC-11 computed over the decoded data.
        computed: u16,
        /// Frame check sequence carried by the bars.
        read: u16,
    },
    /// The decoded routing value lies outside every routing range.
    RoutingRange {
        /// The routing value R.
        value: u64,
    },
    /// Bar repair found no single-bar change (0 candidates: two or more bars are damaged) or more
    /// than one (the read is ambiguous).
    Repair {
        /// Number of distinct single-bar corrections that decode.
        candidates: usize,
    },
    /// A package barcode or tracking number of a length no IMpb form has.
    PackageLength {
        /// Digits after removing spaces, parentheses and FNC1.
        len: usize,
    },
    /// A package barcode holds a non-digit.
    PackageDigit {
        /// 1-based position.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// A 22- or 26-digit package tracking number whose channel application identifier is not 91–95.
    PackageChannel {
        /// The two digits found.
        found: u8,
    },
    /// The Mod 10 check digit of a package tracking number is wrong.
    CheckDigit {
        /// The digit the data calls for.
        expected: u8,
        /// The digit found.
        found: u8,
    },
    /// A `420` destination ZIP of a length other than 5 or 9.
    ZipLength {
        /// Its length.
        len: usize,
    },
    /// A `420`+ZIP barcode without FNC1 that is valid with both a 5- and a 9-digit ZIP.
    AmbiguousZip,
    /// A container barcode that is not `99M` + Mailer ID + serial of 18 characters in all.
    ContainerLength {
        /// Characters after `99M`.
        len: usize,
    },
    /// A container barcode with a character that is not allowed at its position.
    ContainerCharacter {
        /// 1-based position in the whole input.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// A 128-bit value that is no barcode key.
    InvalidKey {
        /// The value.
        raw: u128,
    },
    /// Input that is no barcode form imbtrack knows.
    UnknownForm {
        /// Its length after removing spaces.
        len: usize,
    },
}

/// A barcode that could not be parsed, encoded, decoded or repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error { kind }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// A stable snake_case name of the kind, for JSON output and reject counters.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::TrackingLength { .. } => "tracking_length",
            ErrorKind::TrackingDigit { .. } => "tracking_digit",
            ErrorKind::BarcodeIdSecondDigit { .. } => "barcode_id_second_digit",
            ErrorKind::RoutingLength { .. } => "routing_length",
            ErrorKind::RoutingDigit { .. } => "routing_digit",
            ErrorKind::BarCount { .. } => "bar_count",
            ErrorKind::BarState { .. } => "bar_state",
            ErrorKind::InvalidCharacters { .. } => "invalid_characters",
            ErrorKind::CodewordRange { .. } => "codeword_range",
            ErrorKind::CrcMismatch { .. } => "crc_mismatch",
            ErrorKind::RoutingRange { .. } => "routing_range",
            ErrorKind::Repair { .. } => "repair_failed",
            ErrorKind::PackageLength { .. } => "package_length",
            ErrorKind::PackageDigit { .. } => "package_digit",
            ErrorKind::PackageChannel { .. } => "package_channel",
            ErrorKind::CheckDigit { .. } => "check_digit",
            ErrorKind::ZipLength { .. } => "zip_length",
            ErrorKind::AmbiguousZip => "ambiguous_zip",
            ErrorKind::ContainerLength { .. } => "container_length",
            ErrorKind::ContainerCharacter { .. } => "container_character",
            ErrorKind::InvalidKey { .. } => "invalid_key",
            ErrorKind::UnknownForm { .. } => "unknown_form",
        }
    }

    /// The return code USPS's reference encoder (usps4cb) gives for the same fault, where it has one.
    pub fn usps_return_code(&self) -> Option<u8> {
        match self.kind {
            ErrorKind::TrackingLength { .. } => Some(9),
            ErrorKind::TrackingDigit { .. } => Some(10),
            ErrorKind::BarcodeIdSecondDigit { .. } => Some(11),
            ErrorKind::RoutingLength { .. } => Some(12),
            ErrorKind::RoutingDigit { .. } => Some(13),
            _ => None,
        }
    }
}

fn letters(set: u16) -> String {
    (0..10u8)
        .filter(|i| set & (1 << i) != 0)
        .map(|i| char::from(b'A' + i).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::TrackingLength { len } => {
                write!(f, "tracking code must be 20 digits, got {len}")
            }
            ErrorKind::TrackingDigit { position, found } => {
                write!(f, "tracking code has non-digit {found:?} at position {position}")
            }
            ErrorKind::BarcodeIdSecondDigit { found } => {
                write!(f, "barcode identifier's second digit must be 0-4, got {found}")
            }
            ErrorKind::RoutingLength { len } => {
                write!(f, "routing code must be 0, 5, 9 or 11 digits, got {len}")
            }
            ErrorKind::RoutingDigit { position, found } => {
                write!(f, "routing code has non-digit {found:?} at position {position}")
            }
            ErrorKind::BarCount { len } => write!(f, "an IMb has 65 bars, got {len}"),
            ErrorKind::BarState { position, found } => {
                write!(f, "bar {position} is {found:?}, expected one of A, D, F, T")
            }
            ErrorKind::InvalidCharacters { characters } => write!(
                f,
                "character(s) {} are not valid N-of-13 characters (damaged bars)",
                letters(*characters)
            ),
            ErrorKind::CodewordRange { character, codeword } => {
                write!(f, "codeword {character} = {codeword} is out of range")
            }
            ErrorKind::CrcMismatch { computed, read } => write!(
                f,
                "CRC mismatch: bars carry frame check sequence {read:#05x}, data gives {computed:#05x}"
            ),
            ErrorKind::RoutingRange { value } => {
                write!(f, "decoded routing value {value} is outside every routing range")
            }
            ErrorKind::Repair { candidates: 0 } => write!(
                f,
                "no single-bar correction gives a valid IMb (two or more bars damaged, or not an IMb)"
            ),
            ErrorKind::Repair { candidates } => write!(
                f,
                "ambiguous read: {candidates} different single-bar corrections give valid IMbs"
            ),
            ErrorKind::PackageLength { len } => {
                write!(f, "no package barcode form has {len} digits")
            }
            ErrorKind::PackageDigit { position, found } => {
                write!(f, "package barcode has non-digit {found:?} at position {position}")
            }
            ErrorKind::PackageChannel { found } => write!(
                f,
                "channel application identifier must be 91-95, got {found:02}"
            ),
            ErrorKind::CheckDigit { expected, found } => {
                write!(f, "Mod 10 check digit is {found}, the data calls for {expected}")
            }
            ErrorKind::ZipLength { len } => {
                write!(f, "420 destination ZIP must be 5 or 9 digits, got {len}")
            }
            ErrorKind::AmbiguousZip => write!(
                f,
                "420 barcode without FNC1 is valid with both a 5- and a 9-digit ZIP"
            ),
            ErrorKind::ContainerLength { len } => write!(
                f,
                "container barcode needs 18 characters of Mailer ID and serial after 99M, got {len}"
            ),
            ErrorKind::ContainerCharacter { position, found } => {
                write!(f, "container barcode has invalid {found:?} at position {position}")
            }
            ErrorKind::InvalidKey { raw } => write!(f, "{raw:#034x} is not a barcode key"),
            ErrorKind::UnknownForm { len } => write!(
                f,
                "not an IMb (20/25/29/31 digits or 65 bars), IMpb or IMcb ({len} characters)"
            ),
        }
    }
}

impl std::error::Error for Error {}
