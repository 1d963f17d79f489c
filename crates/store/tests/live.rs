//! The store used live: readers look pieces up while appenders on several threads write and
//! maintenance seals, compacts and expires. No acknowledged scan may ever be missing from a
//! lookup, none may show twice, and the store must reopen with everything.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;

use common::{at, mail_key, scan};
use imbtrack_feed::{ScanEvent, SymbolTable};
use imbtrack_store::{Store, StoreOptions, DAY_MS};

const DAY: i64 = 20_100;
const APPENDERS: u64 = 3;
const BATCHES: u64 = 40;
const PIECES: u64 = 50;

fn options() -> StoreOptions {
    StoreOptions {
        seal_grace_ms: 0,
        // Small segments and few deltas: rotations and compactions happen during the run.
        wal_segment_bytes: 16 << 10,
        max_deltas: 2,
        ..StoreOptions::default()
    }
}

/// Batch `n` of appender `a`: one scan for each of its pieces, on one of three days, so some
/// batches land on days already sealed (deltas) and some on the open one.
fn batch(a: u64, n: u64, symbols: &mut SymbolTable) -> Vec<ScanEvent> {
    (0..PIECES)
        .map(|p| {
            let key = mail_key(a * 10_000 + p, "94110");
            scan(
                symbols,
                key,
                at(DAY + (n % 3) as i64, n as i64 * 1000),
                "918",
            )
        })
        .collect()
}

#[test]
fn lookups_see_every_acknowledged_scan_while_appends_seal_and_compact_run() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let now = at(DAY + 3, 0);
    let acked: Vec<AtomicU64> = (0..APPENDERS).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    // Appenders, maintenance, two readers and this thread.
    let start = Barrier::new(APPENDERS as usize + 4);
    std::thread::scope(|scope| {
        for a in 0..APPENDERS {
            let (store, acked, start) = (&store, &acked, &start);
            scope.spawn(move || {
                let mut symbols = SymbolTable::new();
                start.wait();
                for n in 0..BATCHES {
                    let report = store.append(&batch(a, n, &mut symbols), &symbols).unwrap();
                    assert_eq!(report.accepted, PIECES);
                    acked[a as usize].store(n + 1, Ordering::SeqCst);
                }
            });
        }
        // Maintenance: seal every due day over and over (deltas, then compactions).
        {
            let (store, done, start) = (&store, &done, &start);
            scope.spawn(move || {
                start.wait();
                while !done.load(Ordering::SeqCst) {
                    store.seal(now).unwrap();
                    store.expire(now).unwrap();
                }
            });
        }
        // Readers: each piece has one scan per batch, so whatever was acknowledged before a
        // lookup started is in its answer, once (and at most one batch more, seen up to an
        // fsync before its acknowledgement).
        for r in 0..2u64 {
            let (store, acked, done, lookups, start) = (&store, &acked, &done, &lookups, &start);
            scope.spawn(move || {
                start.wait();
                let mut i = r;
                while !done.load(Ordering::SeqCst) {
                    let a = i % APPENDERS;
                    let p = (i / APPENDERS) % PIECES;
                    let before = acked[a as usize].load(Ordering::SeqCst);
                    let scans = store.lookup(mail_key(a * 10_000 + p, "94110"), now);
                    let after = acked[a as usize].load(Ordering::SeqCst);
                    assert!(
                        scans.len() >= before as usize && scans.len() <= after as usize + 1,
                        "piece {a}/{p}: {} scans, {before}..{after} batches acknowledged",
                        scans.len()
                    );
                    let mut times: Vec<i64> = scans.iter().map(|s| s.time_ms).collect();
                    times.dedup();
                    assert_eq!(times.len(), scans.len(), "a scan shows twice");
                    lookups.fetch_add(1, Ordering::Relaxed);
                    i += 2;
                }
            });
        }
        start.wait();
        while acked.iter().any(|n| n.load(Ordering::SeqCst) < BATCHES) {
            std::thread::yield_now();
        }
        done.store(true, Ordering::SeqCst);
    });
    assert!(lookups.load(Ordering::Relaxed) > 0);
    store.seal(now + DAY_MS).unwrap();
    drop(store);
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    for a in 0..APPENDERS {
        for p in 0..PIECES {
            let scans = store.lookup(mail_key(a * 10_000 + p, "94110"), now);
            assert_eq!(scans.len(), BATCHES as usize, "piece {a}/{p} after reopen");
        }
    }
    assert!(store.stats().buckets > 0, "maintenance sealed nothing");
}
