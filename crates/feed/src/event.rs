//! [`ScanEvent`], the fixed-layout record every feed format becomes, and its small parts.

use std::fmt;

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use imbtrack_barcode::{eight_digits, BarcodeKey};

/// Which retention class a scan belongs to: letters and flats (IMb) or packages and Special
/// Services (IMpb).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MailClass {
    /// Letters and flats, identified by an IMb.
    Mail = 0,
    /// Packages and Special Services, identified by an IMpb or package tracking number.
    Package = 1,
}

impl MailClass {
    /// `mail` or `package`.
    pub fn as_str(self) -> &'static str {
        match self {
            MailClass::Mail => "mail",
            MailClass::Package => "package",
        }
    }

    /// The class whose byte (`class as u8`, as stored files and messages carry it) is `byte`.
    pub fn from_byte(byte: u8) -> Option<MailClass> {
        match byte {
            0 => Some(MailClass::Mail),
            1 => Some(MailClass::Package),
            _ => None,
        }
    }
}

/// IV-MTR's scan type (`handlingEventType`): whether the piece itself was scanned, or the scan
/// was assumed from its container's, or made by the system. The data dictionary's codes are `A`
/// actual, `AA` assumed actual, `L` logical and `AL` assumed logical (op-codes.md §1); an
/// assumed logical scan is logical here (stored files keep four kinds in two bits). Descriptions
/// (`Actual`, `Physical`, `Assumed`, `Logical`) are read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HandlingEventType {
    /// Not given, or not recognised.
    Unknown = 0,
    /// Actual: the piece itself was scanned (`A`).
    Physical = 1,
    /// Assumed actual: inherited from a tray, pallet or truck scan through eDoc nesting (`AA`).
    Assumed = 2,
    /// Logical: system-made, such as a Logical Delivery Event (`L`, and `AL`).
    Logical = 3,
}

impl HandlingEventType {
    /// Reads a feed's scan type code or description.
    pub fn parse(text: &[u8]) -> HandlingEventType {
        // Asked for every record: the codes as feeds write them first, then compared in place,
        // never copied.
        match text {
            b"A" | b"P" => return HandlingEventType::Physical,
            b"AA" => return HandlingEventType::Assumed,
            b"L" | b"AL" => return HandlingEventType::Logical,
            _ => {}
        }
        let text = text.trim_ascii();
        let is = |code: &[u8]| text.eq_ignore_ascii_case(code);
        let starts = |prefix: &[u8]| {
            text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        if is(b"A") || is(b"P") {
            HandlingEventType::Physical
        } else if is(b"AA") {
            HandlingEventType::Assumed
        } else if is(b"L") || is(b"AL") || starts(b"ASSUMED LOGICAL") || starts(b"LOGICAL") {
            HandlingEventType::Logical
        } else if starts(b"ASSUMED") {
            HandlingEventType::Assumed
        } else if starts(b"ACTUAL") || starts(b"PHYSICAL") {
            HandlingEventType::Physical
        } else {
            HandlingEventType::Unknown
        }
    }

    /// The kind whose byte (`handling as u8`, as stored files and messages carry it) is `byte`.
    pub fn from_byte(byte: u8) -> Option<HandlingEventType> {
        match byte {
            0 => Some(HandlingEventType::Unknown),
            1 => Some(HandlingEventType::Physical),
            2 => Some(HandlingEventType::Assumed),
            3 => Some(HandlingEventType::Logical),
            _ => None,
        }
    }

    /// `physical`, `assumed`, `logical` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlingEventType::Unknown => "unknown",
            HandlingEventType::Physical => "physical",
            HandlingEventType::Assumed => "assumed",
            HandlingEventType::Logical => "logical",
        }
    }

    /// The data dictionary's scan type code: `A`, `AA`, `L`, or empty for unknown (what the
    /// generator writes and the API shows as `scan_type`).
    pub fn code(self) -> &'static str {
        match self {
            HandlingEventType::Unknown => "",
            HandlingEventType::Physical => "A",
            HandlingEventType::Assumed => "AA",
            HandlingEventType::Logical => "L",
        }
    }
}

/// A ZIP Code of 5, 9 or 11 digits (ZIP, ZIP+4, ZIP+4+delivery point), or none, packed in a
/// `u64`: the number in the low 40 bits, the length above. Leading zeros survive.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Zip(u64);

const ZIP_LEN_SHIFT: u32 = 40;

impl Zip {
    /// No ZIP.
    pub const NONE: Zip = Zip(0);

    /// Parses 5, 9 or 11 digits; `12345-6789` is accepted for ZIP+4. `None` for anything else.
    pub fn parse(text: &[u8]) -> Option<Zip> {
        // Five digits, every record's facility ZIP: one word, '0's in front.
        if let [a, b, c, d, e] = *text {
            let value = eight_digits([b'0', b'0', b'0', a, b, c, d, e])?;
            return Some(Zip(5 << ZIP_LEN_SHIFT | value));
        }
        let mut value = 0u64;
        let mut len = 0u64;
        for (i, &b) in text.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    value = value * 10 + u64::from(b - b'0');
                    len += 1;
                }
                b'-' if i == 5 && text.len() == 10 => {}
                _ => return None,
            }
        }
        matches!(len, 5 | 9 | 11).then_some(Zip(len << ZIP_LEN_SHIFT | value))
    }

    /// Makes a ZIP from its number and digit count (5, 9 or 11).
    pub fn from_parts(value: u64, len: u32) -> Option<Zip> {
        let fits = match len {
            5 => value < 100_000,
            9 => value < 1_000_000_000,
            11 => value < 100_000_000_000,
            _ => false,
        };
        fits.then_some(Zip(u64::from(len) << ZIP_LEN_SHIFT | value))
    }

    /// The routing ZIP a barcode key implies: an IMb's routing code (read from the key's bits),
    /// none for other kinds. A feed record's IMb routing is this; bucket format v2 stores a
    /// piece's routing only when it differs from it.
    pub fn implied_by(key: BarcodeKey) -> Zip {
        key.imb_routing()
            .and_then(|(len, number)| Zip::from_parts(number, len))
            .unwrap_or(Zip::NONE)
    }

    /// Number of digits: 0, 5, 9 or 11.
    pub fn len(self) -> u32 {
        (self.0 >> ZIP_LEN_SHIFT) as u32
    }

    /// Whether this is no ZIP.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The ZIP as a number (without its length).
    pub fn value(self) -> u64 {
        self.0 & ((1 << ZIP_LEN_SHIFT) - 1)
    }

    /// The first `digits` digits (5, 9 or 11) of this ZIP, if it has that many.
    pub fn prefix(self, digits: u32) -> Option<Zip> {
        let len = self.len();
        (digits <= len && matches!(digits, 5 | 9 | 11)).then(|| {
            Zip((u64::from(digits) << ZIP_LEN_SHIFT) | (self.value() / 10u64.pow(len - digits)))
        })
    }

    /// The packed form, for storage.
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// The inverse of [`Zip::to_bits`].
    pub fn from_bits(bits: u64) -> Option<Zip> {
        if bits == 0 {
            return Some(Zip::NONE);
        }
        Zip::from_parts(
            bits & ((1 << ZIP_LEN_SHIFT) - 1),
            (bits >> ZIP_LEN_SHIFT) as u32,
        )
    }
}

impl fmt::Display for Zip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.len() {
            0 => Ok(()),
            len => write!(f, "{:0width$}", self.value(), width = len as usize),
        }
    }
}

impl fmt::Debug for Zip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zip({self})")
    }
}

/// The lanes of `word`'s bytes that are ASCII digits and those that are ASCII letters: 0x80 in
/// each such byte. A byte below 0x80 plus (0x80 - lo) has its top bit set when it is at least
/// `lo`, and plus (0x7F - hi) has it clear when it is at most `hi`; neither sum carries into
/// the next byte.
fn alphanumeric_lanes(word: u32) -> [u32; 2] {
    const ONES: u32 = 0x0101_0101;
    const TOP_BITS: u32 = 0x8080_8080;
    const LOWER_CASE_BITS: u32 = 0x2020_2020;
    let ascii = !word & TOP_BITS;
    let low7 = word & !TOP_BITS;
    let within = |value: u32, lo: u32, hi: u32| {
        (value + ONES * (0x80 - lo)) & !(value + ONES * (0x7F - hi)) & TOP_BITS
    };
    let digits = within(low7, u32::from(b'0'), u32::from(b'9'));
    // Letters with the lowercase bit set, so 'a' and 'A' fall in one range.
    let letters = within(low7 | LOWER_CASE_BITS, u32::from(b'a'), u32::from(b'z'));
    [digits & ascii, letters & ascii]
}

/// A scan event code, kept as text: a 3-character mail operation code (`918`) or a
/// 2-character package event code (`01`, `OF`). ASCII, zero-padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventCode([u8; 3]);

impl EventCode {
    /// Accepts 1 to 3 ASCII letters or digits (upper-cased); `None` otherwise.
    pub fn parse(text: &[u8]) -> Option<EventCode> {
        // The bytes as one word, each checked and upper-cased in its lane at once (a byte at a
        // time, a code cost a record ~60 instructions). Built as a value, not byte by byte in
        // memory: a wider read of bytes just stored one at a time cannot be forwarded from the
        // stores and waits for them.
        let (word, lanes) = match *text {
            [a] => (u32::from(a), 0x0000_0080),
            [a, b] => (u32::from_le_bytes([a, b, 0, 0]), 0x0000_8080),
            [a, b, c] => (u32::from_le_bytes([a, b, c, 0]), 0x0080_8080),
            _ => return None,
        };
        let [digits, letters] = alphanumeric_lanes(word);
        if (digits | letters) & lanes != lanes {
            return None;
        }
        // A letter's lane bit (0x80), moved to 0x20, is the lowercase bit to clear.
        let [a, b, c, _] = (word & !(letters >> 2)).to_le_bytes();
        Some(EventCode([a, b, c]))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(3);
        std::str::from_utf8(&self.0[..len]).expect("event codes are ASCII")
    }

    /// The raw bytes, for storage.
    pub fn to_bytes(self) -> [u8; 3] {
        self.0
    }

    /// The inverse of [`EventCode::to_bytes`].
    pub fn from_bytes(bytes: [u8; 3]) -> Option<EventCode> {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(3);
        EventCode::parse(&bytes[..len]).filter(|code| code.0 == bytes)
    }
}

impl fmt::Display for EventCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for EventCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventCode({self})")
    }
}

/// An interned string id in a [`SymbolTable`]; 0 means none.
pub type Symbol = u32;

/// One scan of one piece: what the store keeps. 64 bytes, `Copy`, no heap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ScanEvent {
    /// The piece (an IMb key includes its routing code).
    pub barcode: BarcodeKey,
    /// Scan instant, milliseconds since the Unix epoch, UTC.
    pub time_ms: i64,
    /// Routing (destination) ZIP: the IMb's routing code or the IMpb's `420` ZIP.
    pub routing: Zip,
    /// ZIP of the facility that scanned the piece.
    pub facility_zip: Zip,
    /// Facility name, city and state, interned ([`SymbolTable::facility`]).
    pub facility: Symbol,
    /// Machine name, interned.
    pub machine: Symbol,
    /// Operation code (mail) or event code (package).
    pub code: EventCode,
    /// Mail or package.
    pub class: MailClass,
    /// Physical, assumed or logical.
    pub handling: HandlingEventType,
}

/// What makes two scans the same scan: the same piece, instant, event code and facility.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ScanIdentity {
    /// The piece.
    pub barcode: BarcodeKey,
    /// The instant.
    pub time_ms: i64,
    /// The event code.
    pub code: EventCode,
    /// The facility.
    pub facility_zip: Zip,
}

/// Bytes of a scan's fixed-size record ([`ScanEvent::encode_record`]).
pub const SCAN_RECORD_LEN: usize = 56;

impl ScanEvent {
    /// Appends the scan as its fixed-size little-endian record (the WAL logs scans so): key
    /// u128 | time ms i64 | routing ZIP bits u64 | facility ZIP bits u64 | facility symbol u32
    /// | machine symbol u32 | code 3 bytes | class u8 | handling u8 | 3 zero bytes.
    pub fn encode_record(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.barcode.as_u128().to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&self.routing.to_bits().to_le_bytes());
        out.extend_from_slice(&self.facility_zip.to_bits().to_le_bytes());
        out.extend_from_slice(&self.facility.to_le_bytes());
        out.extend_from_slice(&self.machine.to_le_bytes());
        out.extend_from_slice(&self.code.to_bytes());
        out.push(self.class as u8);
        out.push(self.handling as u8);
        out.extend_from_slice(&[0; 3]);
    }

    /// Reads a record [`ScanEvent::encode_record`] wrote; `None` if it is not
    /// [`SCAN_RECORD_LEN`] bytes or a field holds no valid value.
    pub fn decode_record(bytes: &[u8]) -> Option<ScanEvent> {
        let bytes: &[u8; SCAN_RECORD_LEN] = bytes.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut field = [0; 8];
            field.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(field)
        };
        let u32_at = |at: usize| {
            let mut field = [0; 4];
            field.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(field)
        };
        let mut key = [0; 16];
        key.copy_from_slice(&bytes[..16]);
        Some(ScanEvent {
            barcode: BarcodeKey::from_u128(u128::from_le_bytes(key)).ok()?,
            time_ms: u64_at(16) as i64,
            routing: Zip::from_bits(u64_at(24))?,
            facility_zip: Zip::from_bits(u64_at(32))?,
            facility: u32_at(40),
            machine: u32_at(44),
            code: EventCode::from_bytes([bytes[48], bytes[49], bytes[50]])?,
            class: MailClass::from_byte(bytes[51])?,
            handling: HandlingEventType::from_byte(bytes[52])?,
        })
    }

    /// The identity deduplication goes by.
    pub fn identity(&self) -> ScanIdentity {
        ScanIdentity {
            barcode: self.barcode,
            time_ms: self.time_ms,
            code: self.code,
            facility_zip: self.facility_zip,
        }
    }
}

/// A facility's descriptive fields, as interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facility<'a> {
    /// Facility name.
    pub name: &'a str,
    /// City.
    pub city: &'a str,
    /// Two-letter state.
    pub state: &'a str,
}

/// Separates a facility's fields inside its interned string.
const FIELD_SEPARATOR: char = '\u{1f}';

/// Interns the repetitive strings of a feed (facility and machine names) as small ids, so a
/// [`ScanEvent`] stays fixed-size. Each parser thread keeps its own table; [`SymbolTable::absorb`]
/// merges them. Lookups hash the parts of a name in place, so interning a known name allocates
/// nothing.
#[derive(Clone)]
pub struct SymbolTable {
    /// Ids of `strings`, found by the hash of their parts.
    ids: HashTable<Symbol>,
    strings: Vec<Box<str>>,
    hasher: DefaultHashBuilder,
    /// Names recently interned. A feed repeats a few hundred facility and machine names; a
    /// hit, one compare of the bytes a record holds them in, skips joining the parts and
    /// hashing them, which was a sixth of the parse.
    recent: RecentNames,
    /// Sites (a facility and a machine lying together) recently interned, apart from the
    /// names: a national feed's thousands of sites would evict its few hundred names.
    recent_sites: RecentNames,
    /// Sites looked up in `recent_sites`, and those not found there, while it is used.
    site_lookups: u64,
    site_misses: u64,
    /// Whether `recent_sites` was left ([`SITE_MISS_LIMIT`]).
    recent_sites_left: bool,
}

const RECENT_BITS: u32 = 10;
const RECENT_SLOTS: usize = 1 << RECENT_BITS;

/// Sites missed after which a table stops keeping recent sites if they missed most lookups: a
/// feed naming more sites than the slots hold (a national feed's 8,000 missed ~87 % of its
/// rows), where each miss looked up, and each time kept, the site besides its facility and
/// machine. Each chunk's table learns it anew: four times the slots cost a national feed's
/// parse ~9 %. Most lookups, not a number alone: three of a small feed's sites sharing a set
/// (likely among a hundred) miss on their every row, and the others never.
const SITE_MISS_LIMIT: u64 = RECENT_SLOTS as u64;

/// Names recently interned, by the [`sketch`] of their parts as they lay, two ways a set.
#[derive(Clone)]
struct RecentNames {
    slots: Box<[RecentName]>,
}

impl Default for RecentNames {
    fn default() -> Self {
        RecentNames {
            slots: vec![RecentName::default(); RECENT_SLOTS].into(),
        }
    }
}

impl RecentNames {
    /// The two ways of the set `span` and its part lengths fall in. Two ways, the name seen
    /// last in the first: with one slot a name, a few dozen names would likely have two
    /// contending for one slot, each evicting the other on every record. Inlined always, its
    /// sketch with it: a call of its own a row, as the compiler left either, cost ~1 % of an
    /// ingest.
    #[inline(always)]
    fn set(span: &[u8], lengths: u64) -> usize {
        sketch(span, lengths) & !1
    }

    /// The entry of `parts` lying in `span`, moved to its set's first way; `None` if there is
    /// none (or the parts are too long to cache).
    #[inline(always)]
    fn entry(
        &mut self,
        span: &[u8],
        parts: &[&[u8]],
        compare: impl SpanCompare,
    ) -> Option<&RecentName> {
        let lengths = part_lengths(parts)?;
        let slot = Self::set(span, lengths);
        let holds = |recent: &RecentName| {
            recent.lengths == lengths
                && recent.bytes.len() == span.len()
                && compare.same_span(&recent.bytes, span)
        };
        if holds(&self.slots[slot]) {
            return Some(&self.slots[slot]);
        }
        if holds(&self.slots[slot + 1]) {
            self.slots.swap(slot, slot + 1);
            return Some(&self.slots[slot]);
        }
        None
    }

    /// Keeps `parts` lying in `span` as the first way of their set, the way that was first
    /// becoming the second.
    fn remember(&mut self, span: &[u8], parts: &[&[u8]], symbol: Symbol, second: Symbol) {
        let Some(lengths) = part_lengths(parts) else {
            return;
        };
        let slot = Self::set(span, lengths);
        self.slots.swap(slot, slot + 1);
        self.slots[slot] = RecentName {
            symbol,
            second,
            lengths,
            bytes: span.into(),
        };
    }
}

/// A name recently interned: the bytes its parts lay in, one byte apart (a record's adjacent
/// columns with their delimiters, or the parts joined), and [`part_lengths`]. The two say
/// exactly what the parts are, whatever the bytes between them.
///
/// A record's facility and machine names, when adjacent, are cached as one entry of four parts
/// holding both symbols, among the recent sites ([`SymbolTable::intern_site_span`]).
#[derive(Clone, Default)]
struct RecentName {
    symbol: Symbol,
    /// The machine's symbol, in an entry of a facility and a machine; else 0.
    second: Symbol,
    lengths: u64,
    bytes: Box<[u8]>,
}

/// Up to four part lengths below 4 KiB and their count, packed; `None` for other names, which
/// are not cached.
fn part_lengths(parts: &[&[u8]]) -> Option<u64> {
    const LENGTH_BITS: usize = 12;
    if parts.len() > 4 {
        return None;
    }
    let mut packed = (parts.len() as u64) << (4 * LENGTH_BITS);
    for (i, part) in parts.iter().enumerate() {
        if part.len() >= 1 << LENGTH_BITS {
            return None;
        }
        packed |= (part.len() as u64) << (LENGTH_BITS * i);
    }
    Some(packed)
}

/// A cheap hash of a name's bytes (the first and last eight, or four, or the first, middle
/// and last) and part lengths, a slot of [`RecentNames`]. Names that share it only
/// share a slot. Inlined always, as [`RecentNames::set`] is.
#[inline(always)]
fn sketch(bytes: &[u8], lengths: u64) -> usize {
    let ends = match bytes.len() {
        8.. => word_at(bytes, 0) ^ word_at(bytes, bytes.len() - 8).rotate_left(32),
        4.. => u64::from(half_at(bytes, 0)) ^ u64::from(half_at(bytes, bytes.len() - 4)) << 24,
        0 => 0,
        len => {
            u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16
        }
    };
    ((ends ^ lengths).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_BITS)) as usize
}

/// The eight bytes of `bytes` from `at`, little-endian.
pub(crate) fn word_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// The four bytes of `bytes` from `at`, little-endian.
fn half_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

impl Default for SymbolTable {
    fn default() -> Self {
        SymbolTable {
            ids: HashTable::new(),
            strings: vec!["".into()],
            hasher: DefaultHashBuilder::default(),
            recent: RecentNames::default(),
            recent_sites: RecentNames::default(),
            site_lookups: 0,
            site_misses: 0,
            recent_sites_left: false,
        }
    }
}

impl fmt::Debug for SymbolTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.strings.iter()).finish()
    }
}

/// Bytes of `parts` joined by [`FIELD_SEPARATOR`].
fn joined_len(parts: &[&[u8]]) -> usize {
    parts.iter().map(|p| p.len()).sum::<usize>() + parts.len().saturating_sub(1)
}

/// `parts` joined by [`FIELD_SEPARATOR`] at the start of `buffer`; `None` when they do not fit.
fn join_parts<'b>(parts: &[&[u8]], buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let joined = buffer.get_mut(..joined_len(parts))?;
    let mut at = 0;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            joined[at] = FIELD_SEPARATOR as u8;
            at += 1;
        }
        joined[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    Some(joined)
}

/// Whether `stored` is `parts` joined by [`FIELD_SEPARATOR`].
fn joins(stored: &str, parts: &[&[u8]]) -> bool {
    let mut rest = stored.as_bytes();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            match rest.split_first() {
                Some((&sep, r)) if sep == FIELD_SEPARATOR as u8 => rest = r,
                _ => return false,
            }
        }
        match rest.split_at_checked(part.len()) {
            Some((head, r)) if same_bytes(head, part) => rest = r,
            _ => return false,
        }
    }
    rest.is_empty()
}

/// `a == b` for slices of one length, compared in place: names run 2 to 40 bytes, and a
/// `memcmp` call for each part of every record was a twentieth of the parse.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let len = a.len();
    if len < 8 {
        return if len >= 4 {
            half_at(a, 0) == half_at(b, 0) && half_at(a, len - 4) == half_at(b, len - 4)
        } else {
            a.iter().zip(b).all(|(x, y)| x == y)
        };
    }
    // Words from the front, and the last word (overlapping the one before it). A plain loop:
    // `step_by` cost a site lookup a seventh of its instructions.
    let mut at = 0;
    while at + 8 < len {
        if word_at(a, at) != word_at(b, at) {
            return false;
        }
        at += 8;
    }
    word_at(a, len - 8) == word_at(b, len - 8)
}

/// How a recent name's span is compared with a record's of the same length: [`same_bytes`]
/// ([`WordCompare`]), or a reader's wider compare where the processor has one.
pub(crate) trait SpanCompare: Copy {
    /// `a == b` for slices of one length.
    fn same_span(self, a: &[u8], b: &[u8]) -> bool;
}

/// [`same_bytes`], on any processor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WordCompare;

impl SpanCompare for WordCompare {
    #[inline(always)]
    fn same_span(self, a: &[u8], b: &[u8]) -> bool {
        same_bytes(a, b)
    }
}

impl SymbolTable {
    /// An empty table.
    pub fn new() -> SymbolTable {
        SymbolTable::default()
    }

    /// The hash of the parts joined by [`FIELD_SEPARATOR`], so a name hashes the same whether
    /// it comes in parts or already joined (a hasher's `write` calls do not compose).
    fn hash_joined(hasher: &DefaultHashBuilder, parts: &[&[u8]]) -> u64 {
        let mut buffer = [0u8; 192];
        let mut heap;
        let joined = match join_parts(parts, &mut buffer) {
            Some(joined) => joined,
            None => {
                heap = vec![0; joined_len(parts)];
                join_parts(parts, &mut heap).expect("sized to fit")
            }
        };
        hasher.hash_one(joined)
    }

    /// The id of the parts joined, adding them if new; all-empty parts are 0. The parts are
    /// checked to be UTF-8 only when they are new, so a known name costs one compare; `None`
    /// when a new one is not UTF-8.
    pub(crate) fn intern_bytes(&mut self, parts: &[&[u8]]) -> Option<Symbol> {
        let mut buffer = [0u8; 64];
        match join_parts(parts, &mut buffer) {
            Some(joined) => self.intern_span(joined, parts),
            None => self.intern_uncached(parts),
        }
    }

    /// [`SymbolTable::intern_bytes`] of parts that lie in `span` one byte apart, in order, and
    /// fill it (a record's adjacent columns: the span runs from the first one's start to the
    /// last one's end, delimiters included).
    pub(crate) fn intern_span(&mut self, span: &[u8], parts: &[&[u8]]) -> Option<Symbol> {
        debug_assert_eq!(span.len(), joined_len(parts));
        if let Some(recent) = self.recent.entry(span, parts, WordCompare) {
            return Some(recent.symbol);
        }
        let symbol = self.intern_uncached(parts)?;
        self.recent.remember(span, parts, symbol, 0);
        Some(symbol)
    }

    /// The symbols of a facility (its name, city and state, the first three parts) and a
    /// machine name (the fourth) that lie in `span` one byte apart, in order: the same as
    /// [`SymbolTable::intern_span`] of each, found with one lookup of the recent sites where
    /// a feed's columns lie so (the IV-MTR layout ends with them), or, once the feed has shown
    /// more sites than those hold, of its facility and its machine among the recent names.
    ///
    /// Inlined, the recent names' hit with it: returned from a call, the two symbols went
    /// through memory as two stores read back as one load, which the store buffer cannot
    /// forward (a tenth of the plain rows' reader's cycles stalled there).
    ///
    /// `compare` compares the span with a recent one: the plain rows' reader passes its
    /// whole-span compare where the processor has one.
    #[inline(always)]
    pub(crate) fn intern_site_span(
        &mut self,
        span: &[u8],
        parts: &[&[u8]; 4],
        compare: impl SpanCompare,
    ) -> Option<(Symbol, Symbol)> {
        debug_assert_eq!(span.len(), joined_len(parts));
        if !self.recent_sites_left {
            self.site_lookups += 1;
            if let Some(recent) = self.recent_sites.entry(span, parts, compare) {
                return Some((recent.symbol, recent.second));
            }
        }
        self.intern_site_span_uncached(span, parts)
    }

    /// [`SymbolTable::intern_site_span`] of a site the recent sites lack, or of any site once
    /// they are no longer used.
    #[inline(never)]
    fn intern_site_span_uncached(
        &mut self,
        span: &[u8],
        parts: &[&[u8]; 4],
    ) -> Option<(Symbol, Symbol)> {
        let facility_len = joined_len(&parts[..3]);
        let facility = self.intern_span(&span[..facility_len], &parts[..3])?;
        let machine = self.intern_span(parts[3], &parts[3..])?;
        if !self.recent_sites_left {
            self.site_misses += 1;
            self.recent_sites_left =
                self.site_misses >= SITE_MISS_LIMIT && 2 * self.site_misses > self.site_lookups;
            self.recent_sites.remember(span, parts, facility, machine);
        }
        Some((facility, machine))
    }

    /// The id of the parts joined, found by their hash or added.
    fn intern_uncached(&mut self, parts: &[&[u8]]) -> Option<Symbol> {
        if parts.iter().all(|p| p.is_empty()) {
            return Some(0);
        }
        let hash = Self::hash_joined(&self.hasher, parts);
        let strings = &self.strings;
        if let Some(&id) = self
            .ids
            .find(hash, |&id| joins(&strings[id as usize], parts))
        {
            return Some(id);
        }
        // The separator is ASCII: the joined bytes are UTF-8 exactly when every part is.
        let mut joined = vec![0; joined_len(parts)];
        join_parts(parts, &mut joined).expect("sized to fit");
        let joined = String::from_utf8(joined).ok()?;
        let id = self.strings.len() as Symbol;
        self.strings.push(joined.into());
        let (strings, hasher) = (&self.strings, &self.hasher);
        self.ids.insert_unique(hash, id, |&id| {
            Self::hash_joined(hasher, &[strings[id as usize].as_bytes()])
        });
        Some(id)
    }

    fn intern_parts(&mut self, parts: &[&str]) -> Symbol {
        let bytes: [&[u8]; 3] = [
            parts.first().map_or(&[][..], |p| p.as_bytes()),
            parts.get(1).map_or(&[][..], |p| p.as_bytes()),
            parts.get(2).map_or(&[][..], |p| p.as_bytes()),
        ];
        self.intern_bytes(&bytes[..parts.len()])
            .expect("str parts are UTF-8")
    }

    /// The id of `text`, adding it if new; the empty string is 0.
    pub fn intern(&mut self, text: &str) -> Symbol {
        self.intern_parts(&[text])
    }

    /// Interns a facility's name, city and state as one symbol.
    pub fn intern_facility(&mut self, facility: Facility<'_>) -> Symbol {
        self.intern_parts(&[facility.name, facility.city, facility.state])
    }

    /// The string of `id` (empty for 0 or an unknown id).
    pub fn get(&self, id: Symbol) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }

    /// The facility fields of a symbol made by [`SymbolTable::intern_facility`].
    pub fn facility(&self, id: Symbol) -> Facility<'_> {
        let mut parts = self.get(id).split(FIELD_SEPARATOR);
        Facility {
            name: parts.next().unwrap_or(""),
            city: parts.next().unwrap_or(""),
            state: parts.next().unwrap_or(""),
        }
    }

    /// Number of symbols, the empty one included.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether only the empty symbol is present.
    pub fn is_empty(&self) -> bool {
        self.strings.len() == 1
    }

    /// Adds every string of `other` and returns, for each of `other`'s ids, the id it has here.
    pub fn absorb(&mut self, other: &SymbolTable) -> Vec<Symbol> {
        other.strings.iter().map(|s| self.intern(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data dictionary's scan type codes (op-codes.md §1) and the descriptions feeds carry.
    #[test]
    fn scan_types_by_code_and_description() {
        use HandlingEventType::*;
        for (text, kind) in [
            ("A", Physical),
            ("a", Physical),
            ("P", Physical),
            ("Actual", Physical),
            ("Physical Scan", Physical),
            ("AA", Assumed),
            ("Assumed Actual", Assumed),
            ("L", Logical),
            ("AL", Logical),
            ("Assumed Logical", Logical),
            ("logical", Logical),
            (" AA ", Assumed),
            ("", Unknown),
            ("X", Unknown),
            ("AAA", Unknown),
        ] {
            assert_eq!(HandlingEventType::parse(text.as_bytes()), kind, "{text:?}");
        }
        for kind in [Physical, Assumed, Logical] {
            assert_eq!(HandlingEventType::parse(kind.code().as_bytes()), kind);
            assert_eq!(HandlingEventType::from_byte(kind as u8), Some(kind));
        }
    }

    #[test]
    fn zip_forms() {
        assert_eq!(Zip::parse(b"01234").unwrap().to_string(), "01234");
        assert_eq!(Zip::parse(b"01234-5678").unwrap().to_string(), "012345678");
        assert_eq!(
            Zip::parse(b"01234567891")
                .unwrap()
                .prefix(5)
                .unwrap()
                .to_string(),
            "01234"
        );
        assert_eq!(
            Zip::parse(b"01234567891")
                .unwrap()
                .prefix(9)
                .unwrap()
                .to_string(),
            "012345678"
        );
        for bad in [
            &b"1234"[..],
            b"123456",
            b"1234a",
            b"",
            b"-1234",
            b"012345678912",
        ] {
            assert_eq!(Zip::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let zip = Zip::parse(b"00000").unwrap();
        assert_ne!(zip, Zip::NONE);
        assert_eq!(Zip::from_bits(zip.to_bits()), Some(zip));
    }

    #[test]
    fn event_codes_keep_text() {
        assert_eq!(EventCode::parse(b"918").unwrap().as_str(), "918");
        assert_eq!(EventCode::parse(b"of").unwrap().as_str(), "OF");
        assert_eq!(EventCode::parse(b"01").unwrap().as_str(), "01");
        assert!(EventCode::parse(b"9180").is_none());
        assert!(EventCode::parse(b"").is_none());
        assert!(EventCode::parse(b"9 8").is_none());
        assert!(EventCode::parse(b"91\xC3").is_none());
        assert!(EventCode::parse(b"\x00").is_none());
        let code = EventCode::parse(b"PC").unwrap();
        assert_eq!(EventCode::from_bytes(code.to_bytes()), Some(code));
    }

    #[test]
    fn a_name_is_one_symbol_in_parts_or_joined() {
        let mut table = SymbolTable::new();
        let parts = table.intern_facility(Facility {
            name: "A P&DC",
            city: "A",
            state: "IL",
        });
        assert_eq!(table.intern("A P&DC\u{1f}A\u{1f}IL"), parts);
        let long = "x".repeat(300);
        let long_parts = table.intern_facility(Facility {
            name: &long,
            city: "B",
            state: "CA",
        });
        assert_eq!(table.intern(&format!("{long}\u{1f}B\u{1f}CA")), long_parts);
        assert_eq!(table.len(), 3);
    }

    /// Names that share their first and last eight bytes and part lengths share a recent slot,
    /// and still keep their own ids.
    #[test]
    fn names_sharing_a_recent_slot_keep_their_ids() {
        let mut table = SymbolTable::new();
        let names: [&[u8]; 3] = [
            b"ABCDEFGH-1-IJKLMNOP",
            b"ABCDEFGH-2-IJKLMNOP",
            b"ABCDEFGH-3-IJKLMNOP",
        ];
        let lengths = part_lengths(&[names[0]]).unwrap();
        assert!(names
            .iter()
            .all(|name| sketch(name, lengths) == sketch(names[0], lengths)));
        let ids: Vec<Symbol> = (0..9)
            .map(|i| table.intern_span(names[i % 3], &[names[i % 3]]).unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 3, 1, 2, 3, 1, 2, 3]);
        assert_eq!(table.get(2), "ABCDEFGH-2-IJKLMNOP");
    }

    /// The same bytes cut into other parts are another name.
    #[test]
    fn a_span_is_read_by_its_part_lengths() {
        let mut table = SymbolTable::new();
        let span = b"A|BC|D";
        let first = table.intern_span(span, &[b"A", b"BC", b"D"]).unwrap();
        let second = table.intern_span(span, &[b"A|B", b"|", b""]).unwrap();
        assert_ne!(first, second);
        assert_eq!(table.get(first), "A\u{1f}BC\u{1f}D");
        assert_eq!(table.get(second), "A|B\u{1f}|\u{1f}");
        assert_eq!(table.intern_span(span, &[b"A", b"BC", b"D"]), Some(first));
    }

    proptest::proptest! {
        /// Names interned in parts, through the recent slots (laid out with any byte between
        /// the parts, or joined) or not, get the ids a map of their joined texts gives: each
        /// new text the next id, the empty name 0.
        #[test]
        fn interning_equals_a_map_of_joined_texts(
            names in proptest::collection::vec(
                (proptest::collection::vec("[ab|\u{1f}]{0,3}", 1..4), 0u8..3),
                0..80,
            )
        ) {
            let mut table = SymbolTable::new();
            let mut model: std::collections::HashMap<String, Symbol> = std::collections::HashMap::new();
            for (parts, between) in &names {
                let joined = parts.join("\u{1f}");
                let expected = if parts.iter().all(|p| p.is_empty()) {
                    0
                } else {
                    let next = model.len() as Symbol + 1;
                    *model.entry(joined).or_insert(next)
                };
                let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
                let id = match between {
                    0 => table.intern_bytes(&bytes),
                    _ => {
                        let separator = if *between == 1 { "|" } else { "a" };
                        let span = parts.join(separator);
                        table.intern_span(span.as_bytes(), &bytes)
                    }
                };
                proptest::prop_assert_eq!(id, Some(expected));
            }
        }

        /// Codes read a word at a time, against the byte loop: the same codes accepted, the
        /// same upper-cased bytes.
        #[test]
        fn event_codes_equal_the_byte_loop(text in proptest::collection::vec(proptest::sample::select(b"09AZaz@[`{/:\x00\x7f\x80\xc1\xda\xe1\xfa\xff".to_vec()), 0..5)) {
            let naive = (matches!(text.len(), 1..=3) && text.iter().all(u8::is_ascii_alphanumeric)).then(|| {
                let mut bytes = [0u8; 3];
                for (at, b) in text.iter().enumerate() {
                    bytes[at] = b.to_ascii_uppercase();
                }
                bytes
            });
            proptest::prop_assert_eq!(EventCode::parse(&text).map(EventCode::to_bytes), naive);
        }

        /// Five bytes read as one word and a byte, against a digit at a time.
        #[test]
        fn five_digit_zips_equal_the_digit_loop(text in proptest::array::uniform5(proptest::sample::select(b"0123456789/:-\x00\xfa\xff".to_vec()))) {
            let naive = text.iter().all(u8::is_ascii_digit).then(|| {
                let value = text.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
                Zip::from_parts(value, 5).expect("five digits")
            });
            proptest::prop_assert_eq!(Zip::parse(&text), naive);
        }

        #[test]
        fn same_bytes_is_equality(a in proptest::collection::vec(0u8..3, 0..40), flip in proptest::num::usize::ANY) {
            proptest::prop_assert!(same_bytes(&a, &a));
            if !a.is_empty() {
                let mut b = a.clone();
                let at = flip % b.len();
                b[at] ^= 1;
                proptest::prop_assert!(!same_bytes(&a, &b));
            }
        }

        /// A facility and machine found with one lookup get the symbols interning each alone
        /// gives, in a table that also interns their parts alone between records.
        #[test]
        fn site_lookups_equal_interning_each(
            sites in proptest::collection::vec(
                (proptest::collection::vec("[ab|]{0,2}", 4..=4), proptest::bool::ANY),
                0..80,
            )
        ) {
            let (mut table, mut twin) = (SymbolTable::new(), SymbolTable::new());
            for (parts, alone) in &sites {
                let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
                let expected = (
                    twin.intern_bytes(&parts[..3]).unwrap(),
                    twin.intern_bytes(&parts[3..]).unwrap(),
                );
                let found = if *alone {
                    (
                        table.intern_bytes(&parts[..3]).unwrap(),
                        table.intern_bytes(&parts[3..]).unwrap(),
                    )
                } else {
                    let span = parts.join(&b'|');
                    let parts: [&[u8]; 4] = parts.try_into().unwrap();
                    table.intern_site_span(&span, &parts, WordCompare).unwrap()
                };
                proptest::prop_assert_eq!(found, expected);
            }
        }
    }

    /// Rows of sites `site(i)` for `i` drawn at random from `0..sites`, looked up in a table
    /// and checked against a twin interning each site's facility and machine alone; the table.
    fn site_rows(rows: u64, sites: u64, site: impl Fn(u64) -> (String, String)) -> SymbolTable {
        let (mut table, mut twin) = (SymbolTable::new(), SymbolTable::new());
        let mut rng = 7u64;
        for _ in 0..rows {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            let (name, machine) = site((rng >> 33) % sites);
            let parts: [&[u8]; 4] = [name.as_bytes(), b"CITY", b"FL", machine.as_bytes()];
            let expected = (
                twin.intern_bytes(&parts[..3]).unwrap(),
                twin.intern_bytes(&parts[3..]).unwrap(),
            );
            let span = parts.join(&b'|');
            let found = table.intern_site_span(&span, &parts, WordCompare).unwrap();
            assert_eq!(found, expected, "{name} {machine}");
        }
        table
    }

    /// A feed of more sites than the recent sites hold: each site's symbols are those its
    /// facility and machine interned alone get, while the recent sites are used and after the
    /// table leaves them.
    #[test]
    fn more_sites_than_slots_keep_their_symbols() {
        let table = site_rows(3 * SITE_MISS_LIMIT, 8_000, |i| {
            (format!("PLANT {}", i / 20), format!("DBCS{}", i % 20))
        });
        assert!(table.recent_sites_left, "the recent sites are left");
    }

    /// A small feed whose sites include three sharing one set of the recent sites (two ways),
    /// on a fifth of its rows: they miss on many of their rows, past the miss limit, yet the
    /// table keeps its recent sites, which the other hundred hit.
    #[test]
    fn a_few_sites_sharing_a_set_keep_the_recent_sites() {
        let site = |i: u64| (format!("{i} PLANT"), "DBCS".to_string());
        let set = |i: u64| {
            let (name, machine) = site(i);
            let parts: [&[u8]; 4] = [name.as_bytes(), b"CITY", b"FL", machine.as_bytes()];
            RecentNames::set(
                &parts.join(&b'|'),
                part_lengths(&parts).expect("short parts"),
            )
        };
        let first = (0..)
            .find(|&i| (i + 1..i + 1_000).filter(|&j| set(j) == set(i)).count() >= 2)
            .expect("three sites sharing a set");
        let shared: Vec<u64> = (first..first + 1_000)
            .filter(|&j| set(j) == set(first))
            .take(3)
            .collect();
        let others: Vec<u64> = (10_000..)
            .filter(|&j| set(j) != set(first))
            .take(100)
            .collect();
        let table = site_rows(20 * SITE_MISS_LIMIT, 125, |i| match i {
            0..25 => site(shared[i as usize % 3]),
            _ => site(others[i as usize - 25]),
        });
        assert!(table.site_misses > SITE_MISS_LIMIT, "the three thrash");
        assert!(!table.recent_sites_left, "the recent sites are kept");
    }

    #[test]
    fn symbols_merge() {
        let mut a = SymbolTable::new();
        let mut b = SymbolTable::new();
        let x = a.intern("DBCS");
        let y = b.intern("AFCS");
        let z = b.intern("DBCS");
        let facility = b.intern_facility(Facility {
            name: "CHICAGO P&DC",
            city: "CHICAGO",
            state: "IL",
        });
        let remap = a.absorb(&b);
        assert_eq!(remap[z as usize], x);
        assert_eq!(a.get(remap[y as usize]), "AFCS");
        assert_eq!(a.facility(remap[facility as usize]).city, "CHICAGO");
        assert_eq!(remap[0], 0);
        assert_eq!(std::mem::size_of::<ScanEvent>(), 64);
    }

    proptest::proptest! {
        /// A scan's record reads back as the scan, and no record of another length reads.
        #[test]
        fn scan_records_round_trip(
            tracking in 0u64..10u64.pow(15),
            time_ms in proptest::num::i64::ANY,
            zips in (0u64..100_000, 0u64..100_000_000_000),
            symbols in (proptest::num::u32::ANY, proptest::num::u32::ANY),
            code in "[0-9A-Z]{1,3}",
            package in proptest::bool::ANY,
            handling in 0u8..4,
        ) {
            let imb = imbtrack_barcode::Imb::new(&format!("00270{tracking:015}"), "").unwrap();
            let barcode = imbtrack_barcode::Barcode::Imb(imb).key();
            let event = ScanEvent {
                barcode,
                time_ms,
                routing: Zip::from_parts(zips.1, 11).unwrap(),
                facility_zip: Zip::from_parts(zips.0, 5).unwrap(),
                facility: symbols.0,
                machine: symbols.1,
                code: EventCode::parse(code.as_bytes()).unwrap(),
                class: if package { MailClass::Package } else { MailClass::Mail },
                handling: HandlingEventType::from_byte(handling).unwrap(),
            };
            let mut record = Vec::new();
            event.encode_record(&mut record);
            proptest::prop_assert_eq!(record.len(), SCAN_RECORD_LEN);
            proptest::prop_assert_eq!(ScanEvent::decode_record(&record), Some(event));
            proptest::prop_assert_eq!(ScanEvent::decode_record(&record[1..]), None);
        }
    }
}
