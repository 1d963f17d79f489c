//! Property tests: any valid payload, of every routing length and both Mailer ID lengths,
//! survives payload → bars → payload, both ways up, and payload → key → payload.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use imbtrack_barcode::{decode, decode_exact, Barcode, BarcodeKey, Imb, Orientation};
use proptest::prelude::*;

/// A valid tracking code: barcode ID (second digit 0-4), service type, and a 6-digit Mailer ID
/// (first digit 0-8) with a 9-digit serial or a 9-digit one (first digit 9) with a 6-digit serial.
fn tracking() -> impl Strategy<Value = String> {
    let six = ("[0-8][0-9]{5}", "[0-9]{9}").prop_map(|(mid, serial)| format!("{mid}{serial}"));
    let nine = ("9[0-9]{8}", "[0-9]{6}").prop_map(|(mid, serial)| format!("{mid}{serial}"));
    ("[0-9][0-4]", "[0-9]{3}", prop_oneof![six, nine])
        .prop_map(|(bi, stid, rest)| format!("{bi}{stid}{rest}"))
}

fn routing() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[0-9]{5}", "[0-9]{9}", "[0-9]{11}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn payload_bars_payload(tracking in tracking(), routing in routing()) {
        let imb = Imb::new(&tracking, &routing).unwrap();
        prop_assert_eq!(imb.tracking(), tracking.as_str());
        prop_assert_eq!(imb.routing(), routing.as_str());
        let mailer_id_len = if tracking.as_bytes()[5] == b'9' { 9 } else { 6 };
        prop_assert_eq!(imb.mailer_id(), &tracking[5..5 + mailer_id_len]);
        prop_assert_eq!(imb.serial(), &tracking[5 + mailer_id_len..]);

        let bars = imb.encode();
        prop_assert_eq!(decode_exact(&bars).unwrap(), imb);
        let read = decode(&bars.flipped(), false).unwrap();
        prop_assert_eq!((read.imb, read.orientation), (imb, Orientation::UpsideDown));

        let payload = format!("{tracking}{routing}");
        prop_assert_eq!(Imb::from_payload(&payload).unwrap(), imb);
        prop_assert_eq!(Imb::from_payload(&imb.to_string()).unwrap(), imb);
    }

    #[test]
    fn payload_key_payload(tracking in tracking(), routing in routing()) {
        let barcode = Barcode::Imb(Imb::new(&tracking, &routing).unwrap());
        let key = barcode.key();
        prop_assert_eq!(BarcodeKey::from_u128(key.as_u128()).unwrap(), key);
        prop_assert_eq!(key.to_barcode(), barcode);
        prop_assert!(BarcodeKey::imb_tracking_range(&tracking).unwrap().contains(&key));
    }

    /// Keys order IMbs by tracking code first, as the tracking-major layout promises.
    #[test]
    fn key_order_follows_tracking_value(a in tracking(), b in tracking(), ra in routing(), rb in routing()) {
        let key = |t: &str, r: &str| Barcode::Imb(Imb::new(t, r).unwrap()).key();
        let value = |t: &str| Imb::new(t, "").unwrap().value();
        if value(&a) < value(&b) {
            prop_assert!(key(&a, &ra) < key(&b, &rb));
        }
    }
}
