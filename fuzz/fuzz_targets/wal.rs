//! Any bytes as a WAL segment: the store opens (cutting what does not check) and serves.
#![no_main]

use imbtrack_barcode::{Barcode, Imb};
use imbtrack_store::{Store, StoreOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("wal")).expect("wal dir");
    // A valid segment header first half of the time, so the fuzzer reaches the records.
    let mut segment = if data.first().is_some_and(|b| b % 2 == 0) {
        b"IMBTWAL1".to_vec()
    } else {
        Vec::new()
    };
    segment.extend_from_slice(data);
    std::fs::write(dir.path().join("wal/0000000000000001.wal"), &segment).expect("write");
    let (store, _) =
        Store::open(dir.path(), StoreOptions::default()).expect("a damaged WAL is cut, not fatal");
    let key = Barcode::Imb(Imb::new("00270123456789123456", "").expect("valid")).key();
    let _ = store.lookup(key, 1_736_000_000_000);
    let _ = store.stats();
});
