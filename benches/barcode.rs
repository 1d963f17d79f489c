//! Encode, decode and repair throughput of the IMb codec over the 8,128 valid rows of the USPS
//! test set. Run: `cargo bench -p imbtrack-barcode --bench barcode`.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imbtrack_barcode::{decode, Barcode, Bars, Imb};

const TEST_SET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/imb/uspsIMbEncoderTestCases.csv"
);

/// The valid rows of the USPS set as (IMb, bars).
fn usps_rows() -> Vec<(Imb, Bars)> {
    let text = std::fs::read_to_string(TEST_SET).expect("data/imb/uspsIMbEncoderTestCases.csv");
    let rows: Vec<(Imb, Bars)> = text
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.len() > 4 && fields[4] == "00").then(|| {
                let imb = Imb::new(fields[1], fields[2]).expect("valid row");
                (imb, Bars::parse(fields[3]).expect("valid bars"))
            })
        })
        .collect();
    // A bench that measures the wrong work is worse than none.
    assert_eq!(rows.len(), 8_128);
    rows
}

fn codec(c: &mut Criterion) {
    let rows = usps_rows();
    let mut group = c.benchmark_group("imb");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            rows.iter()
                .map(|(imb, _)| black_box(imb).encode())
                .filter(|bars| bars.as_str().len() == 65)
                .count()
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|(_, bars)| decode(black_box(bars), false).is_ok())
                .count()
        })
    });
    let flipped: Vec<Bars> = rows.iter().map(|(_, bars)| bars.flipped()).collect();
    group.bench_function("decode_upside_down", |b| {
        b.iter(|| {
            flipped
                .iter()
                .filter(|bars| decode(black_box(bars), false).is_ok())
                .count()
        })
    });
    let texts: Vec<String> = rows
        .iter()
        .map(|(imb, _)| format!("{}{}", imb.tracking(), imb.routing()))
        .collect();
    group.bench_function("parse_digits_to_key", |b| {
        b.iter(|| {
            texts
                .iter()
                .filter_map(|t| Barcode::parse(black_box(t)).ok())
                .fold(0u128, |acc, b| acc ^ b.key().as_u128())
        })
    });
    let bar_texts: Vec<String> = rows.iter().map(|(_, bars)| bars.to_string()).collect();
    group.bench_function("parse_bars_to_key", |b| {
        b.iter(|| {
            bar_texts
                .iter()
                .filter_map(|t| Barcode::parse(black_box(t)).ok())
                .fold(0u128, |acc, b| acc ^ b.key().as_u128())
        })
    });
    group.finish();

    // Repair is the slow path: up to 390 trial decodes per damaged read.
    let damaged: Vec<Bars> = rows
        .iter()
        .step_by(64)
        .map(|(_, bars)| {
            let mut text = bars.to_string();
            let replacement = if text.starts_with('T') { "F" } else { "T" };
            text.replace_range(0..1, replacement);
            Bars::parse(&text).expect("damaged bars still parse")
        })
        .collect();
    let mut group = c.benchmark_group("imb_repair");
    group.throughput(Throughput::Elements(damaged.len() as u64));
    group.bench_function("repair_one_bar", |b| {
        b.iter(|| {
            damaged
                .iter()
                .filter(|bars| decode(black_box(bars), true).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
