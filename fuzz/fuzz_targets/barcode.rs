//! Any text as any barcode form: errors, never panics; what parses round-trips through its key.
#![no_main]

use imbtrack_barcode::{decode, Barcode, BarcodeKey, Bars, Imb, Imcb, Impb};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(barcode) = Barcode::parse(text) {
        let key = barcode.key();
        let again =
            BarcodeKey::from_u128(key.as_u128()).expect("a key made by Barcode::key is valid");
        assert_eq!(again.to_barcode().key(), key);
    }
    if let Ok(imb) = Imb::from_payload(text) {
        assert_eq!(
            decode(&imb.encode(), false).expect("own bars decode").imb,
            imb
        );
    }
    if let Ok(bars) = Bars::parse(text) {
        let _ = decode(&bars, true);
    }
    let _ = Impb::parse(text);
    let _ = Imcb::parse(text);
    if data.len() >= 16 {
        let raw = u128::from_le_bytes(data[..16].try_into().expect("16 bytes"));
        if let Ok(key) = BarcodeKey::from_u128(raw) {
            assert_eq!(key.to_barcode().key(), key);
        }
    }
});
