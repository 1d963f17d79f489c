//! Any bytes as a WAL segment: the store opens (cutting what does not check) and serves.
#![no_main]

use imbtrack_barcode::{Barcode, Imb};
use imbtrack_store::{Store, StoreOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("wal")).expect("wal dir");
    // By the first byte: a valid segment header, then the bytes as records; the bytes as the
    // whole segment (so a seed segment starting "IMBT" reads as itself); or the bytes after
    // the first as one record's payload under a length and CRC that check, so the record
    // decoders see any payload (a random CRC almost never checks).
    let mut segment = Vec::new();
    match data.first().map(|b| b % 3) {
        Some(0) => {
            segment.extend_from_slice(b"IMBTWAL1");
            segment.extend_from_slice(data);
        }
        Some(2) => {
            let payload = &data[1..];
            segment.extend_from_slice(b"IMBTWAL1");
            segment.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            segment.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            segment.extend_from_slice(payload);
        }
        _ => segment.extend_from_slice(data),
    }
    std::fs::write(dir.path().join("wal/0000000000000001.wal"), &segment).expect("write");
    let (store, _) =
        Store::open(dir.path(), StoreOptions::default()).expect("a damaged WAL is cut, not fatal");
    let key = Barcode::Imb(Imb::new("00270123456789123456", "").expect("valid")).key();
    let _ = store.lookup(key, 1_736_000_000_000);
    let _ = store.stats();
});
