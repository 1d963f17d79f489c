//! Faults injected into the store's I/O: every write, fsync and rename of a workload (appends,
//! checkpoints, seals, expiry) is failed in turn, with EIO and with ENOSPC, writes also cut short. Each time
//! the operation must fail with an error, the store must refuse further changes, and reopened it
//! must hold every acknowledged batch exactly once and every other batch whole or not at all.
//! The workload runs twice: each append waiting for its own fsync, and pipelined as ingest
//! appends (a batch's fsync awaited only after the next batch is written).
//! Then a real full disk: a 1 MiB tmpfs (when the test runs as root and may mount).
//!
//! The fault plan is process-wide, so this file is its own test binary and its tests take a lock.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::{at, mail_key, package_key, scan};
use imbtrack_feed::{ScanEvent, SymbolTable};
use imbtrack_store::fault::{self, Fault, FaultOp};
use imbtrack_store::{RetentionPolicy, Store, StoreError, StoreOptions, DAY_MS};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const BASE_DAY: i64 = 20_100;
const BATCHES: u64 = 12;
const PIECES: u64 = 50;

fn options() -> StoreOptions {
    StoreOptions {
        seal_grace_ms: 0,
        // Small segments, so rotation happens within the workload.
        wal_segment_bytes: 16 << 10,
        retention: RetentionPolicy::new(30 * DAY_MS, 90 * DAY_MS).unwrap(),
        ..StoreOptions::default()
    }
}

/// Batch `n`: two scans of each of 50 mail pieces and one of 10 packages, on day `n / 3`.
fn batch(n: u64, symbols: &mut SymbolTable) -> Vec<ScanEvent> {
    let day = BASE_DAY + (n / 3) as i64;
    let mut events = Vec::new();
    for i in 0..PIECES {
        let key = mail_key(n * 1000 + i, "94110");
        let offset = ((n % 3) * 1_000_000 + i * 1000) as i64;
        events.push(scan(symbols, key, at(day, offset), "918"));
        events.push(scan(symbols, key, at(day, offset + 500), "919"));
    }
    for i in 0..10 {
        events.push(scan(
            symbols,
            package_key(n * 1000 + i),
            at(day, 7_000_000),
            "03",
        ));
    }
    events
}

/// "Now" after batch `n`: the next day has begun, so earlier days seal.
fn now_after(n: u64) -> i64 {
    at(BASE_DAY + (n / 3) as i64 + 1, 1)
}

/// Scans of batch `n` the store serves at `now`.
fn present(store: &Store, n: u64, now: i64) -> usize {
    (0..PIECES)
        .map(|i| store.lookup(mail_key(n * 1000 + i, "94110"), now).len())
        .sum::<usize>()
        + (0..10)
            .map(|i| store.lookup(package_key(n * 1000 + i), now).len())
            .sum::<usize>()
}

const SCANS_PER_BATCH: usize = (PIECES * 2 + 10) as usize;

/// Runs the workload until it ends or an operation fails; returns the acknowledged batches and
/// whether a fault stopped it. `pipelined`, each batch's append waits for its fsync only after
/// the next batch is written (as ingest does), and is acknowledged then.
fn workload(dir: &Path, pipelined: bool) -> (Vec<u64>, bool) {
    let mut acked = Vec::new();
    let store = match Store::open(dir, options()) {
        Ok((store, _)) => store,
        Err(_) => return (acked, true),
    };
    let mut symbols = SymbolTable::default();
    let mut waiting = None;
    for n in 0..BATCHES {
        let mut events = batch(n, &mut symbols);
        let step = store
            .append_pending(&mut events, &symbols, &[])
            .and_then(|pending| {
                if !pipelined {
                    return store.durable(pending).map(|_| acked.push(n));
                }
                match waiting.replace((n, pending)) {
                    Some((earlier, pending)) => store.durable(pending).map(|_| acked.push(earlier)),
                    None => Ok(()),
                }
            })
            .and_then(|()| match n % 3 {
                2 => {
                    store.seal(now_after(n)).map(|_| ())?;
                    store.expire(now_after(n)).map(|_| ())
                }
                1 => store.checkpoint().map(|_| ()),
                _ => Ok(()),
            });
        match step {
            Ok(()) => {}
            Err(error) => {
                // The append itself may have been durable before a seal failed.
                if !matches!(error, StoreError::Io { .. } | StoreError::Corrupt { .. }) {
                    panic!("a fault must surface as an I/O error, got {error}");
                }
                // Sticky: nothing more is taken until the store is reopened.
                let again = store.append(&batch(99, &mut symbols), &symbols);
                assert!(
                    matches!(again, Err(StoreError::Failed(_))),
                    "{:?}",
                    again.map(|_| ())
                );
                assert!(store.failure().is_some());
                return (acked, true);
            }
        }
    }
    if let Some((last, pending)) = waiting {
        if store.durable(pending).is_err() {
            return (acked, true);
        }
        acked.push(last);
    }
    (acked, false)
}

/// Reopens the store without faults and checks what it holds.
fn check_reopened(dir: &Path, acked: &[u64], context: &str) {
    let (store, _) = Store::open(dir, options())
        .unwrap_or_else(|e| panic!("{context}: the store must reopen: {e}"));
    let now = now_after(BATCHES);
    for n in 0..BATCHES {
        let found = present(&store, n, now);
        if acked.contains(&n) {
            assert_eq!(found, SCANS_PER_BATCH, "{context}: acknowledged batch {n}");
        } else {
            assert!(
                found == 0 || found == SCANS_PER_BATCH,
                "{context}: batch {n} half there ({found} scans)"
            );
        }
    }
    // And it takes changes again.
    let mut symbols = SymbolTable::default();
    store
        .append(&batch(BATCHES, &mut symbols), &symbols)
        .unwrap();
    store.seal(now_after(BATCHES + 3)).unwrap();
    assert_eq!(
        present(&store, BATCHES, now_after(BATCHES + 3)),
        SCANS_PER_BATCH
    );
}

#[test]
fn every_write_fsync_and_rename_can_fail() {
    let _lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut fired = 0;
    for (op, pipelined) in [FaultOp::Write, FaultOp::Sync, FaultOp::Rename]
        .into_iter()
        .flat_map(|op| [(op, false), (op, true)])
    {
        for errno in [5, 28] {
            for after in 0.. {
                let dir = tempfile::tempdir().unwrap();
                let short_write = if after % 2 == 1 { 13 } else { 0 };
                fault::arm(Fault {
                    op,
                    after,
                    errno,
                    short_write,
                });
                let (acked, stopped) = workload(dir.path(), pipelined);
                let hits = fault::disarm();
                if hits == 0 {
                    assert!(!stopped, "{op:?} {after}: stopped without a fault");
                    assert_eq!(acked.len() as u64, BATCHES);
                    break;
                }
                assert!(
                    stopped,
                    "{op:?} #{after} errno {errno} pipelined {pipelined}: the fault went unnoticed"
                );
                check_reopened(
                    dir.path(),
                    &acked,
                    &format!(
                        "{op:?} #{after} errno {errno} short {short_write} pipelined {pipelined}"
                    ),
                );
                fired += 1;
            }
        }
    }
    eprintln!("faults injected and recovered from: {fired}");
    assert!(fired > 100, "only {fired} faults fired");
}

#[test]
fn a_full_disk_stops_ingest_and_loses_nothing_acknowledged() {
    let _lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = tempfile::tempdir().unwrap();
    let mount = base.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "skipping the tmpfs test: cannot mount (not root?); the injected ENOSPC runs above"
        );
        return;
    }
    let unmount = || {
        let _ = std::process::Command::new("umount").arg(&mount).status();
    };
    let result = std::panic::catch_unwind(|| {
        let dir = mount.join("store");
        let (store, _) = Store::open(&dir, options()).unwrap();
        let mut symbols = SymbolTable::default();
        let mut acked = Vec::new();
        let mut failure = None;
        for n in 0..10_000 {
            match store.append(&batch(n, &mut symbols), &symbols) {
                Ok(_) => acked.push(n),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = failure.expect("1 MiB must fill up");
        assert!(
            failure.to_string().contains("No space left on device"),
            "{failure}"
        );
        assert!(matches!(
            store.append(&batch(0, &mut symbols), &symbols),
            Err(StoreError::Failed(_))
        ));
        drop(store);
        // The operator frees space; the store reopens with every acknowledged batch.
        assert!(std::process::Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&mount)
            .status()
            .unwrap()
            .success());
        let (store, report) = Store::open(&dir, options()).unwrap();
        for &n in &acked {
            assert_eq!(
                present(&store, n, now_after(n)),
                SCANS_PER_BATCH,
                "batch {n}"
            );
        }
        eprintln!(
            "tmpfs full after {} batches; reopened cutting {} torn bytes",
            acked.len(),
            report
                .wal_repairs
                .iter()
                .map(|r| r.dropped_bytes)
                .sum::<u64>()
        );
    });
    unmount();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
