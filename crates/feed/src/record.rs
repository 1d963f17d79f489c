//! The fields a scan record can carry, however its format names them, and the one function that
//! turns them into a [`ScanEvent`] or a [`RejectReason`].

use imbtrack_barcode::{Barcode, BarcodeKey, BarcodeKind, Imb, Impb};

use crate::event::{
    EventCode, HandlingEventType, MailClass, ScanEvent, Symbol, SymbolTable, WordCompare, Zip,
};
use crate::reject::RejectReason;
use crate::time::{parse_date_and_time, parse_timestamp, DAY_MS};

/// A field imbtrack reads from a record. Everything else in a record is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Imb,
    ImbTracking,
    ImbRouting,
    Impb,
    Time,
    Date,
    TimeOfDay,
    Code,
    FacilityZip,
    RoutingZip,
    Handling,
    FacilityName,
    FacilityCity,
    FacilityState,
    Machine,
}

pub(crate) const FIELD_COUNT: usize = 15;

/// Every field, in declaration order (`FIELDS[f as usize] == f`).
pub(crate) const FIELDS: [Field; FIELD_COUNT] = [
    Field::Imb,
    Field::ImbTracking,
    Field::ImbRouting,
    Field::Impb,
    Field::Time,
    Field::Date,
    Field::TimeOfDay,
    Field::Code,
    Field::FacilityZip,
    Field::RoutingZip,
    Field::Handling,
    Field::FacilityName,
    Field::FacilityCity,
    Field::FacilityState,
    Field::Machine,
];

/// The field a column header or JSON key names. Names are compared lower-cased with `_`, `-`,
/// spaces and dots removed, so `scanDatetime`, `scan_date_time` and `Scan Datetime` agree. The
/// legacy IMb Tracing names (`imb_digits`, `postnet`, `facility`, `op_code`, `scan_date`,
/// `scan_time`) map onto the same fields.
pub(crate) fn field_for_name(name: &str) -> Option<Field> {
    let mut key = [0u8; 32];
    let mut len = 0;
    for b in name
        .trim()
        .bytes()
        .filter(|b| !matches!(b, b'_' | b'-' | b' ' | b'.'))
    {
        if len == key.len() {
            return None;
        }
        key[len] = b.to_ascii_lowercase();
        len += 1;
    }
    Some(match &key[..len] {
        b"imb" | b"barcode" => Field::Imb,
        b"imbtrackingcode" | b"imbdigits" | b"trackingcode" => Field::ImbTracking,
        b"imbroutingcode" | b"postnet" | b"routingcode" => Field::ImbRouting,
        b"impb" | b"pic" | b"trackingnumber" => Field::Impb,
        b"scandatetime" | b"eventdatetime" | b"scantimestamp" => Field::Time,
        b"scandate" => Field::Date,
        b"scantime" => Field::TimeOfDay,
        b"scaneventcode" | b"opcode" | b"operationcode" | b"eventcode" => Field::Code,
        b"scanfacilityzip" | b"facility" | b"facilityzip" | b"facilityidzip" => Field::FacilityZip,
        b"destinationzipcode" | b"destinationzip" | b"routingzip" => Field::RoutingZip,
        b"handlingeventtype" => Field::Handling,
        b"scanfacilityname" => Field::FacilityName,
        b"scanfacilitycity" => Field::FacilityCity,
        b"scanfacilitystate" => Field::FacilityState,
        b"machinename" => Field::Machine,
        _ => return None,
    })
}

/// The values of one record by [`Field`], borrowed from the input; an empty slice is absent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    values: [&'a [u8]; FIELD_COUNT],
    /// The line every value lies in, when they all do (an unquoted delimited row); else empty.
    line: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Says that every value set lies in `line`.
    pub(crate) fn set_line(&mut self, line: &'a [u8]) {
        self.line = line;
    }

    pub(crate) fn set(&mut self, field: Field, value: &'a [u8]) {
        self.values[field as usize] = if trimmed_as_is(value) {
            value
        } else {
            value.trim_ascii()
        };
    }

    pub(crate) fn get(&self, field: Field) -> &'a [u8] {
        self.values[field as usize]
    }

    fn text(&self, field: Field) -> Result<&'a str, RejectReason> {
        std::str::from_utf8(self.get(field)).map_err(|_| RejectReason::InvalidUtf8)
    }
}

/// Whether trimming would leave `value` as it is, told by its first and last bytes: nearly
/// every value starts and ends with a byte above the space, which no trimming removes, so two
/// compares stand for two whitespace scans. (A control byte at an edge says "maybe" too.)
pub(crate) fn trimmed_as_is(value: &[u8]) -> bool {
    match (value.first(), value.last()) {
        (Some(&first), Some(&last)) => first > b' ' && last > b' ',
        _ => true,
    }
}

/// Parse settings that come from the source, not the bytes.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// The format, or `None` to detect it from the first bytes.
    pub format: Option<crate::Format>,
    /// Minutes east of UTC for timestamps that carry no offset; `None` rejects them.
    pub default_offset_minutes: Option<i32>,
    /// "Now", milliseconds since the epoch, for the time plausibility check.
    pub now_ms: i64,
    /// Oldest accepted scan, as an age before `now_ms`.
    pub max_age_ms: i64,
    /// Latest accepted scan, as a distance after `now_ms` (clock skew at plants).
    pub max_ahead_ms: i64,
    /// Longest accepted record in bytes.
    pub max_record_len: usize,
}

impl FeedOptions {
    /// Defaults for a feed read at `now_ms`: detect the format, no default offset, scans from
    /// up to 400 days ago (past every retention window) to one day ahead, records up to 64 KiB.
    pub fn at(now_ms: i64) -> FeedOptions {
        FeedOptions {
            format: None,
            default_offset_minutes: None,
            now_ms,
            max_age_ms: 400 * DAY_MS,
            max_ahead_ms: DAY_MS,
            max_record_len: 64 * 1024,
        }
    }

    /// Whether a scan at `time_ms` lies in the accepted window around "now".
    pub(crate) fn accepts_time(&self, time_ms: i64) -> bool {
        (self.now_ms - self.max_age_ms..=self.now_ms + self.max_ahead_ms).contains(&time_ms)
    }
}

/// Validates a record and builds its event. Checks go barcode, time, event code, facility ZIP,
/// so a record with several faults is rejected for the first.
pub(crate) fn build_event(
    raw: &RawRecord<'_>,
    options: &FeedOptions,
    symbols: &mut SymbolTable,
) -> Result<ScanEvent, RejectReason> {
    let (barcode, routing) = barcode(raw)?;

    let time_ms = if !raw.get(Field::Time).is_empty() {
        parse_timestamp(raw.get(Field::Time), options.default_offset_minutes)?
    } else if !raw.get(Field::Date).is_empty() {
        parse_date_and_time(
            raw.get(Field::Date),
            raw.get(Field::TimeOfDay),
            options.default_offset_minutes,
        )?
    } else {
        return Err(RejectReason::MissingTime);
    };
    if !options.accepts_time(time_ms) {
        return Err(RejectReason::TimeOutOfRange);
    }

    let code = match raw.get(Field::Code) {
        [] => return Err(RejectReason::MissingEventCode),
        text => EventCode::parse(text).ok_or(RejectReason::BadEventCode)?,
    };
    let facility_zip = match raw.get(Field::FacilityZip) {
        [] => return Err(RejectReason::MissingZip),
        text => Zip::parse(text).ok_or(RejectReason::BadZip {
            field: "facility_zip",
        })?,
    };

    let site = site_symbols(raw, symbols).ok_or(RejectReason::InvalidUtf8)?;
    Ok(scan_event(
        (barcode, routing),
        time_ms,
        code,
        facility_zip,
        site,
        raw.get(Field::Handling),
    ))
}

/// The event of a record's checked values: its barcode key and routing ZIP, its time, code
/// and facility ZIP, its facility and machine symbols, and its scan type as written.
pub(crate) fn scan_event(
    (barcode, routing): (BarcodeKey, Zip),
    time_ms: i64,
    code: EventCode,
    facility_zip: Zip,
    (facility, machine): (Symbol, Symbol),
    handling: &[u8],
) -> ScanEvent {
    ScanEvent {
        barcode,
        time_ms,
        routing,
        facility_zip,
        facility,
        machine,
        code,
        class: match barcode.kind() {
            BarcodeKind::Impb => MailClass::Package,
            BarcodeKind::Imb | BarcodeKind::Imcb => MailClass::Mail,
        },
        handling: HandlingEventType::parse(handling),
    }
}

/// The symbols of the record's facility (name, city, state) and machine name; `None` when a
/// new one is not UTF-8.
fn site_symbols(raw: &RawRecord<'_>, symbols: &mut SymbolTable) -> Option<(Symbol, Symbol)> {
    let parts = [
        raw.get(Field::FacilityName),
        raw.get(Field::FacilityCity),
        raw.get(Field::FacilityState),
        raw.get(Field::Machine),
    ];
    site_symbols_in(raw.line, parts, symbols)
}

/// The symbols of a facility (its name, city and state, the first three parts) and a machine
/// name (the fourth), parts that lie in `line` where they are a line's values. Where the four
/// columns lie side by side in that order (the IV-MTR layout), one lookup finds both.
pub(crate) fn site_symbols_in(
    line: &[u8],
    parts: [&[u8]; 4],
    symbols: &mut SymbolTable,
) -> Option<(Symbol, Symbol)> {
    if let Some(span) = span_of(line, &parts) {
        return symbols.intern_site_span(span, &parts, WordCompare);
    }
    let facility_parts = &parts[..3];
    let facility = match span_of(line, facility_parts) {
        Some(span) => symbols.intern_span(span, facility_parts),
        None => symbols.intern_bytes(facility_parts),
    }?;
    let machine = symbols.intern_span(parts[3], &parts[3..])?;
    Some((facility, machine))
}

/// The bytes `parts` lie in, from the first one's start to the last one's end, when they lie in
/// `line` in order one byte apart (adjacent columns); `None` otherwise.
fn span_of<'l>(line: &'l [u8], parts: &[&[u8]]) -> Option<&'l [u8]> {
    // Where each part starts in the line, by address: a part that is not the line's has no
    // offset inside it (allocations do not overlap), and `get` below checks the range.
    let base = line.as_ptr() as usize;
    let offset = |part: &[u8]| (part.as_ptr() as usize).checked_sub(base);
    let start = offset(parts.first()?)?;
    let mut end = start;
    for (i, part) in parts.iter().enumerate() {
        let at = offset(part)?;
        if i > 0 && at != end + 1 {
            return None;
        }
        end = at + part.len();
    }
    line.get(start..end)
}

/// The record's barcode key and routing ZIP, from whichever barcode columns it has. An IMb of
/// plain digits (nearly every mail record) goes straight to its key.
fn barcode(raw: &RawRecord<'_>) -> Result<(BarcodeKey, Zip), RejectReason> {
    let imb_bytes = raw.get(Field::Imb);
    if let Some(barcode) = imb_digits_key(imb_bytes) {
        return Ok(barcode);
    }
    let (tracking, routing) = (raw.get(Field::ImbTracking), raw.get(Field::ImbRouting));
    if imb_bytes.is_empty() {
        if let Some(barcode) = imb_digit_fields_key(tracking, routing) {
            return Ok(barcode);
        }
    }
    let (barcode, routing) = any_barcode(raw)?;
    Ok((barcode.key(), routing))
}

/// The key and routing ZIP of an IMb of digits only: its 20-digit tracking code and the
/// routing digits after.
pub(crate) fn imb_digits_key(imb: &[u8]) -> Option<(BarcodeKey, Zip)> {
    let (tracking, routing) = imb.split_at_checked(20)?;
    imb_digit_fields_key(tracking, routing)
}

/// The key and routing ZIP of the IMb of these tracking and routing digit fields (the ZIP made
/// of the routing digits' number, not read back from the key's bits).
fn imb_digit_fields_key(tracking: &[u8], routing: &[u8]) -> Option<(BarcodeKey, Zip)> {
    let (key, routing_number) = BarcodeKey::of_imb_digit_fields(tracking, routing)?;
    Some((key, imb_routing_zip(routing_number, routing.len())))
}

/// An IMb's routing ZIP from its routing digits' number and count, the key made of them being
/// an IMb's (so the number has no more digits than the count, and the count is 0, 5, 9 or 11).
pub(crate) fn imb_routing_zip(routing_number: u64, routing_len: usize) -> Zip {
    Zip::from_parts(routing_number, routing_len as u32).unwrap_or(Zip::NONE)
}

/// The general way of [`barcode`]: every form, with its reject reasons.
fn any_barcode(raw: &RawRecord<'_>) -> Result<(Barcode, Zip), RejectReason> {
    let imb_routing = |imb: &Imb| routing_zip(imb.routing_digits());
    let routing_of_package = |impb: &Impb| package_routing(impb, raw.get(Field::RoutingZip));
    let imb = raw.text(Field::Imb)?;
    if !imb.is_empty() {
        // Nearly always 20-31 digits; bars, dashed and package forms go the general way.
        let barcode = match Imb::from_payload(imb) {
            Ok(imb) => Barcode::Imb(imb),
            Err(e)
                if imb.bytes().all(|b| b.is_ascii_digit())
                    && matches!(imb.len(), 20 | 25 | 29 | 31) =>
            {
                return Err(RejectReason::BadBarcode(e))
            }
            Err(_) => Barcode::parse(imb).map_err(RejectReason::BadBarcode)?,
        };
        let routing = match &barcode {
            Barcode::Imb(imb) => imb_routing(imb)?,
            Barcode::Impb(impb) => routing_of_package(impb)?,
            Barcode::Imcb(_) => Zip::NONE,
        };
        return Ok((barcode, routing));
    }
    let tracking = raw.text(Field::ImbTracking)?;
    if !tracking.is_empty() {
        let imb =
            Imb::new(tracking, raw.text(Field::ImbRouting)?).map_err(RejectReason::BadBarcode)?;
        return Ok((Barcode::Imb(imb), imb_routing(&imb)?));
    }
    if let Some(result) = Impb::from_digits(raw.get(Field::Impb)) {
        let impb = result.map_err(RejectReason::BadBarcode)?;
        return Ok((Barcode::Impb(impb), routing_of_package(&impb)?));
    }
    let package = raw.text(Field::Impb)?;
    if !package.is_empty() {
        let impb = Impb::parse(package).map_err(RejectReason::BadBarcode)?;
        return Ok((Barcode::Impb(impb), routing_of_package(&impb)?));
    }
    Err(RejectReason::MissingBarcode)
}

/// A routing ZIP's digits as a [`Zip`]; none when there are none.
pub(crate) fn routing_zip(digits: &[u8]) -> Result<Zip, RejectReason> {
    if digits.is_empty() {
        Ok(Zip::NONE)
    } else {
        Zip::parse(digits).ok_or(RejectReason::BadZip { field: "routing" })
    }
}

/// A package's routing ZIP: the barcode's `420` ZIP, else the destination ZIP column's value
/// (`destination_zip`, empty when the record has none).
pub(crate) fn package_routing(impb: &Impb, destination_zip: &[u8]) -> Result<Zip, RejectReason> {
    if impb.zip_digits().is_empty() {
        routing_zip(destination_zip)
    } else {
        routing_zip(impb.zip_digits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_list_is_in_order() {
        for (i, field) in FIELDS.iter().enumerate() {
            assert_eq!(*field as usize, i);
        }
    }

    #[test]
    fn header_names_in_any_style() {
        for name in [
            "scanDatetime",
            "scan_date_time",
            "SCAN DATETIME",
            " scanDateTime ",
        ] {
            assert_eq!(field_for_name(name), Some(Field::Time), "{name}");
        }
        assert_eq!(field_for_name("imbTrackingCode"), Some(Field::ImbTracking));
        assert_eq!(field_for_name("imb_routing_code"), Some(Field::ImbRouting));
        assert_eq!(field_for_name("pic"), Some(Field::Impb));
        assert_eq!(field_for_name("op_code"), Some(Field::Code));
        assert_eq!(field_for_name("edocJobId"), None);
        assert_eq!(
            field_for_name("a_name_much_longer_than_any_field_we_know_of"),
            None
        );
    }
}
