/*!
Encodes, decodes and repairs USPS Intelligent Mail barcodes, parses package (IMpb) and container
(IMcb) barcodes, and turns any of them into a compact [`BarcodeKey`] for indexing.

# Brief overview

- [`Imb`] is the data of an Intelligent Mail barcode: a 20-digit tracking code (barcode ID,
  service type, Mailer ID, serial) and a 0/5/9/11-digit routing code. [`Imb::encode`] gives its
  65 [`Bars`]; [`decode`] reads bars back with every check of USPS-B-3200 (N-of-13 characters,
  CRC-11, codeword ranges, routing ranges), recognises upside-down reads, and on request repairs
  exactly one damaged bar, reporting it in [`DecodedImb::repair`].
- [`Impb`] is a package barcode (`420`+ZIP + tracking number with its Mod 10 check digit) or a bare
  20, 22 or 26-digit tracking number; [`Imcb`] a container barcode (`99M` + Mailer ID + serial).
- [`Barcode`] is any of the three, recognised from its form by [`Barcode::parse`];
  [`Barcode::key`] packs it into a [`BarcodeKey`], a `u128` that converts back losslessly.
- Every failure is an [`Error`] whose [`ErrorKind`] says what was wrong and where.

The crate uses nothing beyond `std`, allocates nothing on the encode and decode paths, and keeps
every field as digits with its leading zeros.

# Example

```
use imbtrack_barcode::{decode, Bars, Barcode, Imb, Orientation};

let imb = Imb::from_payload("01234567094987654321-01234567891")?;
let bars = imb.encode();
assert_eq!(bars.as_str(), "AADTFFDFTDADTAADAATFDTDDAAADDTDTTDAFADADDDTFFFDDTTTADFAAADFTDAADA");

// A reader that scanned the piece upside down still gets the right data.
let read = decode(&bars.flipped(), false)?;
assert_eq!(read.orientation, Orientation::UpsideDown);
assert_eq!(read.imb.mailer_id(), "567094");
assert_eq!(read.imb.routing(), "01234567891");

// One damaged bar is repaired only when asked, and reported.
let damaged = Bars::parse("TADTFFDFTDADTAADAATFDTDDAAADDTDTTDAFADADDDTFFFDDTTTADFAAADFTDAADA")?;
assert!(decode(&damaged, false).is_err());
let repaired = decode(&damaged, true)?;
assert_eq!(repaired.imb, imb);
assert_eq!(repaired.repair.map(|r| r.position), Some(1));

// Any form becomes one index key and back.
let key = Barcode::parse("0123456709498765432101234567891")?.key();
assert_eq!(key.to_barcode(), Barcode::Imb(imb));
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]

mod digits;
mod error;
mod imb;
mod imcb;
mod impb;
mod key;
mod tables;

pub use crate::digits::{digits_value, eight_digits, wide_digits_value};
pub use crate::error::{Error, ErrorKind};
pub use crate::imb::{
    decode, decode_exact, frame_check_sequence, BarRepair, Bars, DecodedImb, Imb, Orientation,
};
pub use crate::imcb::Imcb;
pub use crate::impb::{mod10_check_digit, Impb, TRACKING_LENGTHS};
pub use crate::key::{
    format_mailer_id, mailer_id_digits, parse_mailer_id, Barcode, BarcodeKey, BarcodeKind,
};
