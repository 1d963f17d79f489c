//! Scans as Kafka messages. Producers send frames ([`encode_frame`]): up to [`FRAME_SCANS`] scans
//! of one partition in one binary, versioned, checksummed message, so a node reads thousands of
//! scans per message instead of one. Older producers sent one scan per message as a small JSON
//! object ([`encode`]); [`decode_message`] reads both. The partition is chosen by
//! [`partition_for`], the one function producers and routers share.
//!
//! ```text
//! frame: "IMBTFRM1" | version u8 (1) | scans u32 | symbols u32, then (length u32, UTF-8)...
//!        | scans × 56-byte scan records (ScanEvent::encode_record; facility and machine ids
//!          index the frame's symbols, 1-based, 0 = none) | CRC-32 of all before it u32
//! ```

use hashbrown::HashMap;
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{
    EventCode, Facility, HandlingEventType, MailClass, ScanEvent, SymbolTable, Zip, SCAN_RECORD_LEN,
};
use serde::{Deserialize, Serialize};

const FRAME_MAGIC: &[u8; 8] = b"IMBTFRM1";
const FRAME_VERSION: u8 = 1;
/// Most scans in one frame: about 230 KB, well under Kafka's default 1 MB message limit.
pub const FRAME_SCANS: usize = 4096;

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
    /// A frame that fails its checks.
    #[error("bad frame: {0}")]
    Frame(String),
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

/// A frame of `events` (all of one partition, in order), their symbols (ids into `symbols`)
/// carried along: only the texts the frame uses.
pub fn encode_frame(events: &[ScanEvent], symbols: &SymbolTable) -> Vec<u8> {
    let mut local: HashMap<u32, u32> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    let mut records = Vec::with_capacity(events.len() * SCAN_RECORD_LEN);
    for event in events {
        let mut event = *event;
        for id in [&mut event.facility, &mut event.machine] {
            if *id != 0 {
                *id = *local.entry(*id).or_insert_with(|| {
                    texts.push(symbols.get(*id));
                    texts.len() as u32
                });
            }
        }
        event.encode_record(&mut records);
    }
    let mut out = Vec::with_capacity(records.len() + 64);
    out.extend_from_slice(FRAME_MAGIC);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    out.extend_from_slice(&(texts.len() as u32).to_le_bytes());
    for text in texts {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&records);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    out
}

/// The next `n` bytes of a frame, advancing `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or_else(|| WireError::Frame("cut short".to_string()))?;
    *rest = tail;
    Ok(head)
}

/// Appends the scans of a message value to `out`, their texts interned into `symbols`: a frame,
/// or the JSON of one scan (older producers). Returns how many; on an error nothing is
/// appended.
pub fn decode_message(
    value: &[u8],
    symbols: &mut SymbolTable,
    out: &mut Vec<ScanEvent>,
) -> Result<usize, WireError> {
    if !value.starts_with(FRAME_MAGIC) {
        out.push(decode(value, symbols)?);
        return Ok(1);
    }
    let bad = |what: &str| WireError::Frame(what.to_string());
    let (body, crc) = value
        .split_last_chunk::<4>()
        .ok_or_else(|| bad("shorter than its checksum"))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(bad("checksum mismatch"));
    }
    let mut rest = &body[FRAME_MAGIC.len()..];
    let version = take(&mut rest, 1)?[0];
    if version != FRAME_VERSION {
        return Err(WireError::Frame(format!(
            "version {version}, this build reads {FRAME_VERSION}"
        )));
    }
    let u32_of = |bytes: &[u8]| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let scans = u32_of(take(&mut rest, 4)?) as usize;
    let texts = u32_of(take(&mut rest, 4)?) as usize;
    // Frame ids 1..=texts to this table's ids; 0 stays "none".
    let mut ids = Vec::with_capacity(texts.min(rest.len() / 4) + 1);
    ids.push(0);
    for _ in 0..texts {
        let len = u32_of(take(&mut rest, 4)?) as usize;
        let text =
            std::str::from_utf8(take(&mut rest, len)?).map_err(|_| bad("a symbol is not UTF-8"))?;
        ids.push(symbols.intern(text));
    }
    if rest.len()
        != scans
            .checked_mul(SCAN_RECORD_LEN)
            .ok_or_else(|| bad("scan count"))?
    {
        return Err(bad("scan records do not match the scan count"));
    }
    let start = out.len();
    for record in rest.chunks_exact(SCAN_RECORD_LEN) {
        let symbol = |id: u32| ids.get(id as usize).copied();
        let decoded = ScanEvent::decode_record(record).and_then(|mut event| {
            event.facility = symbol(event.facility)?;
            event.machine = symbol(event.machine)?;
            Some(event)
        });
        match decoded {
            Some(event) => out.push(event),
            None => {
                out.truncate(start);
                return Err(bad("a scan record holds an invalid field"));
            }
        }
    }
    Ok(scans)
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
    fn frames_round_trip_and_damaged_ones_are_refused_whole() {
        let feed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/feeds/packages.psv"
        ))
        .unwrap();
        let parsed = parse_feed(
            "f",
            &feed,
            &FeedOptions::at(1_737_331_200_000),
            &mut RejectList::default(),
        )
        .unwrap();
        let frame = encode_frame(&parsed.events, &parsed.symbols);
        let mut symbols = SymbolTable::new();
        let mut out = Vec::new();
        let n = decode_message(&frame, &mut symbols, &mut out).unwrap();
        assert_eq!(n, parsed.events.len());
        for (back, event) in out.iter().zip(&parsed.events) {
            assert_eq!(
                (
                    back.barcode,
                    back.time_ms,
                    back.code,
                    back.class,
                    back.handling
                ),
                (
                    event.barcode,
                    event.time_ms,
                    event.code,
                    event.class,
                    event.handling
                )
            );
            assert_eq!(symbols.get(back.machine), parsed.symbols.get(event.machine));
            assert_eq!(
                symbols.get(back.facility),
                parsed.symbols.get(event.facility)
            );
        }
        // Any flipped byte, any cut, another version: refused, nothing appended.
        for at in [0, 8, 9, 20, frame.len() / 2, frame.len() - 1] {
            let mut damaged = frame.clone();
            damaged[at] ^= 0x20;
            let mut none = Vec::new();
            assert!(
                decode_message(&damaged, &mut symbols, &mut none).is_err(),
                "byte {at}"
            );
            assert!(none.is_empty());
        }
        let mut none = Vec::new();
        assert!(decode_message(&frame[..frame.len() - 9], &mut symbols, &mut none).is_err());
        let mut newer = frame[..frame.len() - 4].to_vec();
        newer[8] = 2;
        newer.extend_from_slice(&crc32fast::hash(&newer).to_le_bytes());
        match decode_message(&newer, &mut symbols, &mut none) {
            Err(WireError::Frame(why)) => assert!(why.contains("version 2"), "{why}"),
            other => panic!("{other:?}"),
        }
        // An older producer's JSON message still reads.
        let json = encode(&parsed.events[0], &parsed.symbols);
        assert_eq!(decode_message(&json, &mut symbols, &mut none).unwrap(), 1);
        assert_eq!(none[0].barcode, parsed.events[0].barcode);
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
