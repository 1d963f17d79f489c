//! Format v2 against a model: every piece, ZIP and Mailer ID a bucket was written from is
//! answered exactly, and a rewrite of its events gives the same file.

use std::collections::{BTreeMap, BTreeSet};

use imbtrack_barcode::{Barcode, BarcodeKey, Imb};
use imbtrack_feed::{
    generate, EventCode, Facility, GenOptions, HandlingEventType, MailClass, ScanEvent,
    SymbolTable, Zip,
};
use proptest::prelude::*;

use super::*;

/// The largest (class, day) group of a generated feed, in bucket order, and its symbols.
fn generated_day(seed: u64, pieces: u64) -> (MailClass, i64, Vec<ScanEvent>, SymbolTable) {
    let mut symbols = SymbolTable::new();
    let mut groups: BTreeMap<(u8, i64), Vec<ScanEvent>> = BTreeMap::new();
    let options = GenOptions {
        seed,
        days: 2,
        ..GenOptions::new(pieces, 20_100)
    };
    generate(&options, std::io::sink(), |line| {
        if line.kind != imbtrack_feed::LineKind::Good {
            return;
        }
        let event = line.event(&mut symbols);
        groups
            .entry((line.class as u8, line.time_ms.div_euclid(DAY_MS)))
            .or_default()
            .push(event);
    })
    .unwrap();
    let ((class, day), mut events) = groups
        .into_iter()
        .max_by_key(|(_, events)| events.len())
        .unwrap();
    in_bucket_order(&mut events);
    (MailClass::from_byte(class).unwrap(), day, events, symbols)
}

fn in_bucket_order(events: &mut Vec<ScanEvent>) {
    events.sort_unstable_by_key(|e| (e.barcode, e.time_ms, e.code, e.facility_zip));
    events.dedup_by_key(|e| e.identity());
}

fn open_encoded(bytes: &[u8]) -> (tempfile::TempDir, SealedBucket) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(BUCKET_FILE), bytes).unwrap();
    let bucket = SealedBucket::open(dir.path()).unwrap();
    (dir, bucket)
}

/// Every question a bucket answers, asked of buckets of both formats and of the events they
/// were made from.
fn assert_answers(class: MailClass, day: i64, events: &[ScanEvent], symbols: &SymbolTable) {
    for format in [BucketFormat::V1, BucketFormat::V2] {
        assert_format_answers(format, class, day, events, symbols);
    }
}

fn assert_format_answers(
    format: BucketFormat,
    class: MailClass,
    day: i64,
    events: &[ScanEvent],
    symbols: &SymbolTable,
) {
    let bytes = encode(format, class, BucketKind::Base, day, events, symbols).unwrap();
    let (_dir, bucket) = open_encoded(&bytes);
    assert_eq!(bucket.version(), format.version());
    assert_eq!(bucket.scan_count(), events.len() as u64);
    let mut by_piece: BTreeMap<BarcodeKey, Vec<&ScanEvent>> = BTreeMap::new();
    for e in events {
        by_piece.entry(e.barcode).or_default().push(e);
    }
    assert_eq!(bucket.piece_count(), by_piece.len());
    let mut found = Vec::new();
    for (key, expected) in &by_piece {
        found.clear();
        bucket.scans_of(*key, &BloomProbe::new(*key), &mut found);
        let got: Vec<_> = found
            .iter()
            .map(|s| {
                (
                    s.time_ms,
                    s.routing,
                    s.facility_zip,
                    s.code,
                    s.handling,
                    s.facility_text.to_string(),
                    s.machine.to_string(),
                )
            })
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|e| {
                (
                    e.time_ms,
                    expected[0].routing,
                    e.facility_zip,
                    e.code,
                    e.handling,
                    symbols.get(e.facility).to_string(),
                    symbols.get(e.machine).to_string(),
                )
            })
            .collect();
        assert_eq!(got, want, "{key:?}");
    }
    // A key next to a stored one is not found.
    for key in by_piece.keys().take(50) {
        if let Ok(near) = BarcodeKey::from_u128(key.as_u128() + 1) {
            if !by_piece.contains_key(&near) {
                found.clear();
                bucket.scans_of(near, &BloomProbe::new(near), &mut found);
                assert!(found.is_empty());
            }
        }
    }
    // ZIP queries of every length a stored routing has, and Mailer IDs.
    let mut queries: BTreeSet<Zip> = BTreeSet::new();
    for scans in by_piece.values().take(200) {
        for digits in [5, 9, 11] {
            queries.extend(scans[0].routing.prefix(digits));
        }
    }
    for zip in queries {
        let mut got = Vec::new();
        bucket.pieces_by_zip(zip, &mut got);
        let got: BTreeSet<BarcodeKey> = got.into_iter().map(|(k, _)| k).collect();
        let want: BTreeSet<BarcodeKey> = by_piece
            .iter()
            .filter(|(_, s)| s[0].routing.prefix(zip.len()) == Some(zip))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(got, want, "ZIP {zip}");
    }
    let mailers: BTreeSet<u32> = by_piece.keys().filter_map(|k| k.mailer_id()).collect();
    for mid in mailers.iter().take(100) {
        let mut got = Vec::new();
        bucket.pieces_by_mailer(*mid, &mut got);
        for &(key, piece) in &got {
            let mut scans = Vec::new();
            bucket.scans_at(piece, key, &mut scans);
            assert_eq!(scans.len(), by_piece[&key].len());
        }
        let got: BTreeSet<BarcodeKey> = got.into_iter().map(|(k, _)| k).collect();
        let want: BTreeSet<BarcodeKey> = by_piece
            .keys()
            .filter(|k| k.mailer_id() == Some(*mid))
            .copied()
            .collect();
        assert_eq!(got, want, "Mailer ID {mid}");
    }
    // Reading every event back and writing them again gives the same bytes.
    let mut again_symbols = SymbolTable::new();
    let mut again = Vec::new();
    bucket.all_events(&mut again_symbols, &mut again);
    assert_eq!(again.len(), events.len());
    let rewritten = encode(format, class, BucketKind::Base, day, &again, &again_symbols).unwrap();
    assert_eq!(rewritten, bytes);
}

#[test]
fn a_generated_day_is_answered_exactly() {
    let (class, day, events, symbols) = generated_day(1, 3_000);
    assert!(events.len() > 3_000);
    assert_answers(class, day, &events, &symbols);
}

#[test]
fn packages_are_answered_exactly() {
    for seed in 1..4 {
        let (_, day, events, symbols) = generated_day(seed, 2_000);
        let mut packages: Vec<ScanEvent> = events;
        packages.retain(|e| e.class == MailClass::Package);
        if !packages.is_empty() {
            assert_answers(MailClass::Package, day, &packages, &symbols);
        }
    }
}

/// Hand-made scans for what generated feeds lack: millisecond times, routings that differ from
/// the barcode's, no routing at all, many sites.
fn odd_events(seed: u64, pieces: usize, symbols: &mut SymbolTable) -> Vec<ScanEvent> {
    let mut rng = imbtrack_feed::SplitMix64(seed);
    let day = 20_200;
    let facilities: Vec<u32> = (0..40)
        .map(|i| {
            symbols.intern_facility(Facility {
                name: &format!("F{i}"),
                city: "C",
                state: "ST",
            })
        })
        .collect();
    let mut events = Vec::new();
    for p in 0..pieces {
        let routing = match rng.below(4) {
            0 => String::new(),
            1 => format!("{:05}", rng.below(100_000)),
            2 => format!("{:09}", rng.below(1_000_000_000)),
            _ => format!("{:011}", rng.below(100_000_000_000)),
        };
        let tracking = format!(
            "00{:03}{:06}{:09}",
            270 + rng.below(3),
            100_000 + rng.below(5),
            p * (1 + rng.below(1000) as usize)
        );
        let key = Barcode::Imb(Imb::new(&tracking, &routing).unwrap()).key();
        let stored_routing = match rng.below(3) {
            0 => Zip::parse(format!("{:05}", rng.below(100_000)).as_bytes()).unwrap(),
            1 => Zip::NONE,
            _ => Zip::parse(routing.as_bytes()).unwrap_or(Zip::NONE),
        };
        for _ in 0..1 + rng.below(5) {
            events.push(ScanEvent {
                barcode: key,
                time_ms: day * DAY_MS + rng.below(DAY_MS as u64) as i64,
                routing: stored_routing,
                facility_zip: Zip::parse(format!("{:05}", rng.below(100)).as_bytes()).unwrap(),
                facility: facilities[rng.below(40) as usize],
                machine: symbols.intern(&format!("M{}", rng.below(300))),
                code: EventCode::parse(format!("{:03}", rng.below(900)).as_bytes()).unwrap(),
                class: MailClass::Mail,
                handling: HandlingEventType::from_byte(rng.below(4) as u8).unwrap(),
            });
        }
    }
    in_bucket_order(&mut events);
    // The store gives a piece its first scan's routing.
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn odd_scans_are_answered_exactly(seed in any::<u64>(), pieces in 1usize..400) {
        let mut symbols = SymbolTable::new();
        let events = odd_events(seed, pieces, &mut symbols);
        assert_answers(MailClass::Mail, 20_200, &events, &symbols);
    }

    #[test]
    fn generated_days_are_answered_exactly(seed in any::<u64>()) {
        let (class, day, events, symbols) = generated_day(seed, 300);
        assert_answers(class, day, &events, &symbols);
    }
}

#[test]
fn the_bloom_hash_matches_format_md() {
    let key = Barcode::Imb(Imb::new("00270123456789123456", "94110").unwrap()).key();
    assert_eq!(key.as_u128(), 0x0100_0000_77f5_7b49_ed52_3000_0001_6f9f);
    let h = bloom_hash(key.as_u128());
    assert_eq!(h, 0xc22b_ca49_2bd9_efd7);
    assert_eq!(h.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0xd586_c598_2632_d0a3);
    let probe = BloomProbe::new(key);
    let mut bits: Vec<u64> = Vec::new();
    for (word, mask) in probe.mask.iter().enumerate() {
        bits.extend(
            (0..64)
                .filter(|b| mask >> b & 1 == 1)
                .map(|b| word as u64 * 64 + b),
        );
    }
    assert_eq!(bits, [54, 89, 163, 260, 360, 396]);
    assert_eq!(
        [probe.block(1), probe.block(7), probe.block(1000)],
        [0, 5, 758]
    );
}

proptest! {
    /// A prefetch's lines are the lines the slice has a byte in, each once, in order: its
    /// first byte's, its last byte's and every line between, wherever the slice starts; an
    /// empty slice has none.
    #[test]
    fn cache_lines_are_the_lines_a_slice_touches(start in 0usize..200, len in 0usize..40) {
        let words = [0u32; 256];
        let items = &words[start..start + len];
        let address = |line: *const u8| line as usize;
        let lines: Vec<usize> = cache_lines(items).map(address).collect();
        let first = items.as_ptr() as usize;
        let expected: Vec<usize> = match len {
            0 => Vec::new(),
            _ => (first / 64..=(first + 4 * len - 1) / 64).map(|line| line * 64).collect(),
        };
        prop_assert_eq!(lines, expected);
    }
}
