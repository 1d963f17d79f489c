//! Scans built directly, for store tests.

#![allow(dead_code, clippy::unwrap_used)]

use imbtrack_barcode::{mod10_check_digit, Barcode, BarcodeKey, Imb, Impb};
use imbtrack_feed::{
    EventCode, Facility, HandlingEventType, MailClass, ScanEvent, SymbolTable, Zip,
};
use imbtrack_store::DAY_MS;

/// A mail piece of Mailer ID 123456 with the given serial and routing.
pub fn mail_key(serial: u64, routing: &str) -> BarcodeKey {
    Barcode::Imb(Imb::new(&format!("00270123456{serial:09}"), routing).unwrap()).key()
}

/// A package of Mailer ID 898787 with the given serial.
pub fn package_key(serial: u64) -> BarcodeKey {
    let data = format!("93612898787{serial:010}");
    let tracking = format!("{data}{}", mod10_check_digit(data.bytes()));
    Barcode::Impb(Impb::parse(&tracking).unwrap()).key()
}

/// Milliseconds of a day number plus an offset.
pub fn at(day: i64, offset_ms: i64) -> i64 {
    day * DAY_MS + offset_ms
}

/// A scan of `key` at `time_ms` with event code `code` at facility 94110.
pub fn scan(symbols: &mut SymbolTable, key: BarcodeKey, time_ms: i64, code: &str) -> ScanEvent {
    let class = match key.to_barcode() {
        Barcode::Impb(_) => MailClass::Package,
        _ => MailClass::Mail,
    };
    let routing = match key.to_barcode() {
        Barcode::Imb(imb) => Zip::parse(imb.routing().as_bytes()).unwrap_or(Zip::NONE),
        _ => Zip::NONE,
    };
    ScanEvent {
        barcode: key,
        time_ms,
        routing,
        facility_zip: Zip::parse(b"94110").unwrap(),
        facility: symbols.intern_facility(Facility {
            name: "SAN FRANCISCO CA P&DC",
            city: "SAN FRANCISCO",
            state: "CA",
        }),
        machine: symbols.intern("DBCS"),
        code: EventCode::parse(code.as_bytes()).unwrap(),
        class,
        handling: HandlingEventType::Physical,
    }
}
