//! One scan as a Kafka message: the key is the piece's index key (16 bytes, big-endian), the
//! value a small JSON object, and the partition is chosen by [`partition_for`], the one function
//! producers and routers share.

use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{
    EventCode, Facility, HandlingEventType, MailClass, ScanEvent, SymbolTable, Zip,
};
use serde::{Deserialize, Serialize};

/// A message that does not decode into a scan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The value is not the JSON of a scan.
    #[error("not a scan message: {0}")]
    Json(#[from] serde_json::Error),
    /// A field is out of range.
    #[error("bad {field}: {value:?}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// The partition of a piece among `partitions`: a fixed mix of its key, so every scan of a piece
/// lands in one partition (in order) and anyone can tell which without asking Kafka.
pub fn partition_for(key: BarcodeKey, partitions: i32) -> i32 {
    let raw = key.as_u128();
    let mut h = (raw as u64) ^ ((raw >> 64) as u64).rotate_left(31);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    (h % partitions.max(1) as u64) as i32
}

/// The message key of a piece.
pub fn message_key(key: BarcodeKey) -> [u8; 16] {
    key.as_u128().to_be_bytes()
}

#[derive(Serialize, Deserialize)]
struct WireEvent {
    key: String,
    time_ms: i64,
    routing: u64,
    facility_zip: u64,
    code: String,
    package: bool,
    handling: u8,
    facility_name: String,
    facility_city: String,
    facility_state: String,
    machine: String,
}

/// The message value of `event` (whose symbols are in `symbols`).
pub fn encode(event: &ScanEvent, symbols: &SymbolTable) -> Vec<u8> {
    let facility = symbols.facility(event.facility);
    let wire = WireEvent {
        key: format!("{:032x}", event.barcode.as_u128()),
        time_ms: event.time_ms,
        routing: event.routing.to_bits(),
        facility_zip: event.facility_zip.to_bits(),
        code: event.code.to_string(),
        package: event.class == MailClass::Package,
        handling: event.handling as u8,
        facility_name: facility.name.to_string(),
        facility_city: facility.city.to_string(),
        facility_state: facility.state.to_string(),
        machine: symbols.get(event.machine).to_string(),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// The scan a message value holds, its texts interned into `symbols`.
pub fn decode(value: &[u8], symbols: &mut SymbolTable) -> Result<ScanEvent, WireError> {
    let wire: WireEvent = serde_json::from_slice(value)?;
    let bad = |field: &'static str, value: String| WireError::Field { field, value };
    let raw = u128::from_str_radix(&wire.key, 16).map_err(|_| bad("key", wire.key.clone()))?;
    let barcode = BarcodeKey::from_u128(raw).map_err(|_| bad("key", wire.key.clone()))?;
    Ok(ScanEvent {
        barcode,
        time_ms: wire.time_ms,
        routing: Zip::from_bits(wire.routing)
            .ok_or_else(|| bad("routing", wire.routing.to_string()))?,
        facility_zip: Zip::from_bits(wire.facility_zip)
            .ok_or_else(|| bad("facility_zip", wire.facility_zip.to_string()))?,
        facility: symbols.intern_facility(Facility {
            name: &wire.facility_name,
            city: &wire.facility_city,
            state: &wire.facility_state,
        }),
        machine: symbols.intern(&wire.machine),
        code: EventCode::parse(wire.code.as_bytes())
            .ok_or_else(|| bad("code", wire.code.clone()))?,
        class: if wire.package {
            MailClass::Package
        } else {
            MailClass::Mail
        },
        handling: HandlingEventType::from_byte(wire.handling)
            .ok_or_else(|| bad("handling", wire.handling.to_string()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbtrack_feed::{parse_feed, FeedOptions, RejectList};

    #[test]
    fn every_fixture_scan_survives_the_wire() {
        let feed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/feeds/packages.psv"
        ))
        .unwrap();
        let now = 1_737_331_200_000;
        let parsed = parse_feed(
            "f",
            &feed,
            &FeedOptions::at(now),
            &mut RejectList::default(),
        )
        .unwrap();
        assert!(!parsed.events.is_empty());
        let mut symbols = SymbolTable::new();
        for event in &parsed.events {
            let back = decode(&encode(event, &parsed.symbols), &mut symbols).unwrap();
            assert_eq!(
                (
                    back.barcode,
                    back.time_ms,
                    back.routing,
                    back.facility_zip,
                    back.code
                ),
                (
                    event.barcode,
                    event.time_ms,
                    event.routing,
                    event.facility_zip,
                    event.code
                )
            );
            assert_eq!((back.class, back.handling), (event.class, event.handling));
            assert_eq!(symbols.get(back.machine), parsed.symbols.get(event.machine));
            assert_eq!(
                symbols.facility(back.facility).name,
                parsed.symbols.facility(event.facility).name
            );
        }
        assert!(decode(b"{}", &mut symbols).is_err());
        assert!(decode(b"not json", &mut symbols).is_err());
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let mut counts = [0u32; 8];
        for serial in 0..8000u128 {
            let key = BarcodeKey::from_u128((1u128 << 120) | serial << 40).unwrap();
            let p = partition_for(key, 8);
            assert_eq!(p, partition_for(key, 8));
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
