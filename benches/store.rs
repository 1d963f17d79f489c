//! Store benchmarks on a realistic feed: 30 days of `imbtrack gen` traffic (mail and 20 %
//! packages, ~2 scans a piece-day, about 1 M scans a day), sealed once in format v1 and once in
//! v2. For each: bytes per scan, point lookups of stored (and of absent) pieces over the 30
//! days (p50/p99 printed beside criterion's figures), open time of the store, and the time to
//! drop one day's buckets; then append throughput.
//! Run: `cargo bench -p imbtrack-store --bench store` (builds both stores under target/ once,
//! ~1.5 GB; `STORE_BENCH_PIECES` sets the feed's size, default 5,500,000 pieces).

#![allow(clippy::unwrap_used)] // a panic is how a bench reports a wrong setup

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::{generate, GenOptions, LineKind, ScanEvent, SplitMix64, SymbolTable};
use imbtrack_store::{BucketFormat, RetentionPolicy, Store, StoreOptions, DAY_MS};

const DAYS: u32 = 30;
const FIRST_DAY: i64 = 20_400;
/// The day the benches look from: every generated scan is sealed by then.
const NOW: i64 = (FIRST_DAY + DAYS as i64 + 10) * DAY_MS;

fn pieces() -> u64 {
    std::env::var("STORE_BENCH_PIECES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5_500_000)
}

/// Every good scan of the generated feed, and its symbols.
fn feed_events() -> (Vec<ScanEvent>, SymbolTable) {
    let mut symbols = SymbolTable::new();
    let mut events = Vec::new();
    let options = GenOptions {
        days: DAYS,
        ..GenOptions::new(pieces(), FIRST_DAY)
    };
    generate(&options, std::io::sink(), |line| {
        if line.kind == LineKind::Good {
            events.push(line.event(&mut symbols));
        }
    })
    .unwrap();
    (events, symbols)
}

fn options(format: BucketFormat) -> StoreOptions {
    StoreOptions {
        seal_grace_ms: 0,
        retention: RetentionPolicy::with_override(10_000 * DAY_MS, 10_000 * DAY_MS).unwrap(),
        bucket_format: format,
        ..StoreOptions::default()
    }
}

/// The store of the feed in `format`, built once and kept under target/.
fn store_dir(format: BucketFormat, events: &[ScanEvent], symbols: &SymbolTable) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../target/bench-store-gen-{}-v{}",
        pieces(),
        format.version()
    ));
    let done = dir.join("COMPLETE");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = Store::open(&dir, options(format)).unwrap();
        for chunk in events.chunks(1 << 20) {
            store.append(chunk, symbols).unwrap();
        }
        store.seal(NOW).unwrap();
        std::fs::write(&done, b"").unwrap();
    }
    dir
}

/// The sorted time of a lookup of each key, in nanoseconds.
fn lookup_latencies(store: &Store, keys: &[BarcodeKey]) -> Vec<u128> {
    let mut latencies: Vec<u128> = keys
        .iter()
        .map(|k| {
            let start = Instant::now();
            black_box(store.lookup(*k, NOW));
            start.elapsed().as_nanos()
        })
        .collect();
    latencies.sort_unstable();
    latencies
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn store_benches(c: &mut Criterion) {
    let (events, symbols) = feed_events();
    // Stored pieces picked at random, the same for both formats.
    let mut rng = SplitMix64(7);
    let sample: Vec<BarcodeKey> = (0..100_000)
        .map(|_| events[(rng.next_u64() % events.len() as u64) as usize].barcode)
        .collect();
    // One day of the feed, for the expiry bench.
    let one_day = FIRST_DAY + i64::from(DAYS) / 2;
    let day_events: Vec<ScanEvent> = events
        .iter()
        .filter(|e| e.time_ms.div_euclid(DAY_MS) == one_day)
        .cloned()
        .collect();
    for format in [BucketFormat::V1, BucketFormat::V2] {
        let dir = store_dir(format, &events, &symbols);
        let name = format!("store_v{}", format.version());
        let (store, report) = Store::open(&dir, options(format)).unwrap();
        let stats = store.stats();
        assert_eq!(stats.head_scans, 0);
        eprintln!(
            "{name}: {} buckets ({} opened), {} scans, {:.2} scans a piece-day, {:.2} bytes/scan on disk (indexes included)",
            stats.buckets,
            report.buckets_opened,
            stats.scans,
            stats.scans as f64 / stats.pieces as f64,
            stats.bytes_per_scan
        );
        // Every key asked for exists: a fast wrong answer is no answer.
        assert!(sample
            .iter()
            .take(1000)
            .all(|k| !store.lookup(*k, NOW).is_empty()));
        let latencies = lookup_latencies(&store, &sample);
        eprintln!(
            "{name}: lookup over {} sealed buckets: p50 {} ns, p99 {} ns, p99.9 {} ns ({} lookups)",
            stats.buckets,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            latencies.len()
        );
        // Pieces not stored (the next key up), which tracking pages ask for too.
        let absent: Vec<BarcodeKey> = sample
            .iter()
            .filter_map(|k| BarcodeKey::from_u128(k.as_u128() + 1).ok())
            .collect();
        let latencies = lookup_latencies(&store, &absent);
        eprintln!(
            "{name}: lookup of absent pieces: p50 {} ns, p99 {} ns ({} lookups)",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.len()
        );
        let mut group = c.benchmark_group(&name);
        group.throughput(Throughput::Elements(1));
        let mut i = 0;
        group.bench_function("lookup", |b| {
            b.iter(|| {
                i = (i + 1) % sample.len();
                store.lookup(sample[i], NOW).len()
            })
        });
        drop(store);
        group.sample_size(20);
        group.bench_function("open", |b| {
            b.iter(|| Store::open(&dir, options(format)).unwrap().1.buckets_opened)
        });
        // Drop one day's sealed buckets (mail and packages).
        group.sample_size(10);
        group.bench_function("expire_one_day", |b| {
            b.iter_batched(
                || {
                    let tmp = tempfile::tempdir().unwrap();
                    let short = StoreOptions {
                        retention: RetentionPolicy::with_override(DAY_MS, DAY_MS).unwrap(),
                        ..options(format)
                    };
                    let (store, _) = Store::open(tmp.path(), short).unwrap();
                    store.append(&day_events, &symbols).unwrap();
                    store.seal(NOW).unwrap();
                    (tmp, store)
                },
                |(tmp, store)| {
                    let report = store.expire(NOW).unwrap();
                    assert_eq!(report.dropped_buckets, 2);
                    (tmp, store)
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }

    // Append: batches of 100 k scans into a fresh store, one fsync each.
    let batch = &events[..100_000];
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.sample_size(10);
    group.bench_function("append_100k", |b| {
        b.iter_batched(
            || {
                let tmp = tempfile::tempdir().unwrap();
                let (store, _) = Store::open(tmp.path(), options(BucketFormat::V2)).unwrap();
                (tmp, store)
            },
            |(tmp, store)| {
                assert!(store.append(batch, &symbols).unwrap().accepted > 0);
                (tmp, store)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
