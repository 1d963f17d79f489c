//! Any bytes opened as a sealed bucket: an error, or a bucket whose queries stay in bounds. Half
//! the inputs get their checksums recomputed first, so the structural checks behind the CRCs
//! are exercised too (the last byte chooses).
#![no_main]

use imbtrack_barcode::{Barcode, Imb};
use imbtrack_feed::Zip;
use imbtrack_store::SealedBucket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = data.to_vec();
    if data.last().is_some_and(|b| b % 2 == 0) {
        imbtrack_store::rechecksum(&mut bytes);
    }
    std::fs::write(dir.path().join("scans.bin"), &bytes).expect("write");
    if let Ok(bucket) = SealedBucket::open(dir.path()) {
        let key = Barcode::Imb(Imb::new("00270123456789123456", "94110").expect("valid")).key();
        let mut scans = Vec::new();
        bucket.scans_of(key, &imbtrack_store::BloomProbe::new(key), &mut scans);
        let mut keys = Vec::new();
        bucket.pieces_by_zip(Zip::parse(b"94110").expect("zip"), &mut keys);
        bucket.pieces_by_mailer(123456, &mut keys);
    }
});
