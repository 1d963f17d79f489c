//! Store benchmarks: append throughput, point lookups over 30 sealed daily buckets of 1 M
//! scans each (median and p99 printed beside criterion's figures), open time of that store,
//! bytes per scan, and the time to drop one bucket.
//! Run: `cargo bench -p imbtrack-store --bench store` (builds a ~0.7 GB store under target/ once).

#![allow(clippy::unwrap_used)] // a panic is how a bench reports a wrong setup

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use imbtrack_barcode::{Barcode, BarcodeKey, Imb};
use imbtrack_feed::{
    EventCode, Facility, HandlingEventType, MailClass, ScanEvent, SplitMix64, SymbolTable, Zip,
};
use imbtrack_store::{RetentionPolicy, Store, StoreOptions, DAY_MS};

const DAYS: i64 = 30;
const SCANS_PER_DAY: usize = 1_000_000;
const FIRST_DAY: i64 = 20_400;
const CODES: [&str; 6] = ["873", "874", "271", "893", "918", "919"];

fn key(day: i64, piece: u64) -> BarcodeKey {
    let mailer = 100_000 + (piece * 7919 + day as u64) % 800_000;
    let serial = (day as u64 % 1000) * 1_000_000 + piece;
    let routing = format!("{:05}{:06}", 10_000 + piece % 89_000, piece % 1_000_000);
    Barcode::Imb(Imb::new(&format!("00270{mailer:06}{serial:09}"), &routing).unwrap()).key()
}

/// About 1 M scans of one day: pieces of 3-8 scans at 16 facilities.
fn day_events(day: i64, symbols: &mut SymbolTable) -> (Vec<ScanEvent>, Vec<BarcodeKey>) {
    let mut rng = SplitMix64(day as u64);
    let facilities: Vec<(Zip, u32)> = (0..16)
        .map(|i| {
            let zip = Zip::parse(format!("{:05}", 10_000 + i * 5_000).as_bytes()).unwrap();
            (
                zip,
                symbols.intern_facility(Facility {
                    name: &format!("PLANT {i} P&DC"),
                    city: &format!("CITY {i}"),
                    state: "ST",
                }),
            )
        })
        .collect();
    let machines: Vec<u32> = ["DBCS", "AFCS200", "DIOSS", "CIOSS"]
        .iter()
        .map(|m| symbols.intern(m))
        .collect();
    let (mut events, mut keys) = (Vec::with_capacity(SCANS_PER_DAY), Vec::new());
    let mut piece = 0;
    while events.len() < SCANS_PER_DAY {
        let key = key(day, piece);
        piece += 1;
        keys.push(key);
        let routing = match key.to_barcode() {
            Barcode::Imb(imb) => Zip::parse(imb.routing().as_bytes()).unwrap(),
            _ => Zip::NONE,
        };
        let mut time = day * DAY_MS + (rng.next_u64() % (DAY_MS as u64 / 2)) as i64;
        for code in CODES.iter().take(3 + (rng.next_u64() % 4) as usize) {
            let (facility_zip, facility) = facilities[(rng.next_u64() % 16) as usize];
            events.push(ScanEvent {
                barcode: key,
                time_ms: time,
                routing,
                facility_zip,
                facility,
                machine: machines[(rng.next_u64() % 4) as usize],
                code: EventCode::parse(code.as_bytes()).unwrap(),
                class: MailClass::Mail,
                handling: HandlingEventType::Physical,
            });
            time += (rng.next_u64() % 3_600_000) as i64;
        }
    }
    (events, keys)
}

fn options() -> StoreOptions {
    StoreOptions {
        seal_grace_ms: 0,
        retention: RetentionPolicy::with_override(10_000 * DAY_MS, 10_000 * DAY_MS).unwrap(),
        ..StoreOptions::default()
    }
}

/// The 30-day store, built once and kept under target/.
fn thirty_day_store() -> (PathBuf, Vec<BarcodeKey>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-store-30x1M");
    let done = dir.join("COMPLETE");
    let mut keys = Vec::new();
    let mut symbols = SymbolTable::new();
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = Store::open(&dir, options()).unwrap();
        for day in FIRST_DAY..FIRST_DAY + DAYS {
            let (events, day_keys) = day_events(day, &mut symbols);
            store.append(&events, &symbols).unwrap();
            store.seal((day + 1) * DAY_MS).unwrap();
            keys.extend(day_keys.iter().step_by(97));
        }
        std::fs::write(&done, b"").unwrap();
    } else {
        for day in FIRST_DAY..FIRST_DAY + DAYS {
            keys.extend((0..170_000).step_by(97).map(|p| key(day, p)));
        }
    }
    (dir, keys)
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn store_benches(c: &mut Criterion) {
    let (dir, keys) = thirty_day_store();
    let now = (FIRST_DAY + DAYS) * DAY_MS;
    let (store, report) = Store::open(&dir, options()).unwrap();
    assert_eq!(report.buckets_opened as i64, DAYS);
    let stats = store.stats();
    assert!(stats.scans >= (DAYS as u64) * SCANS_PER_DAY as u64);
    eprintln!(
        "store: {} buckets, {} scans, {} pieces, {:.2} bytes/scan on disk (indexes included)",
        stats.buckets, stats.scans, stats.pieces, stats.bytes_per_scan
    );

    // Every key asked for exists: a fast wrong answer is no answer.
    let mut rng = SplitMix64(7);
    let sample: Vec<BarcodeKey> = (0..100_000)
        .map(|_| keys[(rng.next_u64() % keys.len() as u64) as usize])
        .collect();
    assert!(sample
        .iter()
        .take(1000)
        .all(|k| !store.lookup(*k, now).is_empty()));
    let mut latencies: Vec<u128> = sample
        .iter()
        .map(|k| {
            let start = Instant::now();
            black_box(store.lookup(*k, now));
            start.elapsed().as_nanos()
        })
        .collect();
    latencies.sort_unstable();
    eprintln!(
        "lookup over {DAYS} sealed buckets: p50 {} ns, p99 {} ns, p99.9 {} ns ({} lookups)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.len()
    );

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("lookup_30_buckets", |b| {
        b.iter(|| {
            i = (i + 1) % sample.len();
            store.lookup(sample[i], now).len()
        })
    });
    drop(store);
    group.sample_size(20);
    group.bench_function("open_30_buckets", |b| {
        b.iter(|| Store::open(&dir, options()).unwrap().1.buckets_opened)
    });

    // Append: batches of 100 k scans into a fresh store, one fsync each.
    let mut symbols = SymbolTable::new();
    let (events, _) = day_events(FIRST_DAY, &mut symbols);
    let batch = &events[..100_000];
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.sample_size(10);
    group.bench_function("append_100k", |b| {
        b.iter_batched(
            || {
                let tmp = tempfile::tempdir().unwrap();
                let (store, _) = Store::open(tmp.path(), options()).unwrap();
                (tmp, store)
            },
            |(tmp, store)| {
                assert_eq!(
                    store.append(batch, &symbols).unwrap().accepted,
                    batch.len() as u64
                );
                (tmp, store)
            },
            BatchSize::PerIteration,
        )
    });

    // Drop one sealed 1 M-scan bucket.
    group.throughput(Throughput::Elements(1));
    group.bench_function("expire_one_1M_bucket", |b| {
        b.iter_batched(
            || {
                let tmp = tempfile::tempdir().unwrap();
                let (store, _) = Store::open(
                    tmp.path(),
                    StoreOptions {
                        seal_grace_ms: 0,
                        ..StoreOptions::default()
                    },
                )
                .unwrap();
                store.append(&events, &symbols).unwrap();
                store.seal((FIRST_DAY + 1) * DAY_MS).unwrap();
                (tmp, store)
            },
            |(tmp, store)| {
                let report = store.expire((FIRST_DAY + 40) * DAY_MS).unwrap();
                assert_eq!(report.dropped_buckets, 1);
                (tmp, store)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
