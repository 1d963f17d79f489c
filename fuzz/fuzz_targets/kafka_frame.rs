//! Any bytes as a Kafka message value (a frame, or an older producer's JSON scan): decoded or
//! refused, never a panic; and what decodes re-encodes to a frame holding the same scans.
#![no_main]

use imbtrack_feed::{ScanEvent, SymbolTable};
use imbtrack_kafka::wire::{decode_message, encode_frame};
use libfuzzer_sys::fuzz_target;

/// A scan's fields, its texts read through its table.
fn fields(event: &ScanEvent, symbols: &SymbolTable) -> String {
    format!(
        "{:?} {} {} {} {:?} {:?} {:?} {} {}",
        event.barcode,
        event.time_ms,
        event.routing,
        event.facility_zip,
        event.code,
        event.class,
        event.handling,
        symbols.get(event.facility),
        symbols.get(event.machine)
    )
}

fuzz_target!(|data: &[u8]| {
    // As it came, and with a good checksum appended, so that frames get past their CRC.
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    for value in [data, &sealed[..]] {
        let (mut symbols, mut events) = (SymbolTable::new(), Vec::new());
        let Ok(count) = decode_message(value, &mut symbols, &mut events) else {
            assert!(events.is_empty(), "a refused message appends nothing");
            continue;
        };
        assert_eq!(count, events.len());
        let frame = encode_frame(&events, &symbols);
        let (mut again_symbols, mut again) = (SymbolTable::new(), Vec::new());
        decode_message(&frame, &mut again_symbols, &mut again).expect("a frame we wrote");
        assert_eq!(again.len(), events.len());
        for (first, second) in events.iter().zip(&again) {
            assert_eq!(fields(first, &symbols), fields(second, &again_symbols));
        }
    }
});
