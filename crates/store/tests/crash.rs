//! Crash test: a child process appends batches and prints `ack N` after each append returns;
//! the parent kills it with SIGKILL at random moments, reopens the store and checks that every
//! acknowledged scan is there exactly once and that the store opens without manual repair.
//! `IMBTRACK_CRASH_ROUNDS` sets the rounds (default 20).

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{at, mail_key, scan};
use imbtrack_feed::{ScanEvent, SplitMix64, SymbolTable};
use imbtrack_store::{RetentionPolicy, Store, StoreOptions, DAY_MS};

const CHILD_ENV: &str = "IMBTRACK_CRASH_CHILD";
const BASE_DAY: i64 = 20_100;
const PIECES_PER_BATCH: u64 = 100;
const BATCHES_PER_DAY: u64 = 8;

fn options() -> StoreOptions {
    // Small WAL segments and no grace, so rotation and sealing happen while the child runs.
    // Retention long enough that no acknowledged scan ages out during the test.
    let retention = RetentionPolicy::with_override(100_000 * DAY_MS, 100_000 * DAY_MS).unwrap();
    StoreOptions {
        seal_grace_ms: 0,
        wal_segment_bytes: 64 << 10,
        retention,
        ..StoreOptions::default()
    }
}

/// Batch `n` of round `round`: two scans for each of 100 pieces, on the batch's day.
fn batch(round: u64, n: u64, symbols: &mut SymbolTable) -> Vec<ScanEvent> {
    let day = BASE_DAY + (n / BATCHES_PER_DAY) as i64;
    (0..PIECES_PER_BATCH)
        .flat_map(|i| {
            // Serials are 9 digits: a million per round (a round acknowledges a few hundred batches of
            // 100) leaves room for 999 rounds.
            let key = mail_key(round * 1_000_000 + n * PIECES_PER_BATCH + i, "94110");
            let offset = ((n % BATCHES_PER_DAY) * 1_000_000 + i * 1000) as i64;
            [
                scan(symbols, key, at(day, offset), "918"),
                scan(symbols, key, at(day, offset + 500), "919"),
            ]
        })
        .collect()
}

/// The source name of a round's positions.
fn source(round: u64) -> String {
    format!("round-{round}")
}

/// The child: append batches until killed, saying which were acknowledged.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("IMBTRACK_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let (store, _) = Store::open(dir.as_ref(), options()).unwrap();
    let mut symbols = SymbolTable::new();
    let mut out = std::io::stdout().lock();
    for n in 0..100_000 {
        let events = batch(round, n, &mut symbols);
        // The position to resume from goes with the batch, as a Kafka consumer's offset does.
        store
            .append_at(&events, &symbols, &[(source(round), n as i64 + 1)])
            .unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
        if n % 3 == 2 {
            let day = BASE_DAY + (n / BATCHES_PER_DAY) as i64;
            store.seal(day * DAY_MS).unwrap();
        }
        // Checkpoints between seals, so kills land in them and reopening starts from them.
        if n % 4 == 1 {
            store.checkpoint().unwrap();
        }
    }
}

#[test]
fn kill_nine_at_random_moments() {
    let rounds: u64 = std::env::var("IMBTRACK_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = SplitMix64(0x1AB7_C0DE);
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut symbols = SymbolTable::new();
    let mut total_acked_scans = 0;
    let mut rounds_from_checkpoint = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("IMBTRACK_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()))
                .last()
        });
        // Let it get going, then kill it somewhere in 30-530 ms.
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(30 + rng.next_u64() % 500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = reader.join().unwrap();
        if let Some(last) = last {
            acked.insert(round, last);
            total_acked_scans += (last + 1) * PIECES_PER_BATCH * 2;
        }
        eprintln!(
            "round {round}: killed after {:?}, last ack {last:?}",
            started.elapsed()
        );

        let (store, report) = Store::open(dir.path(), options()).unwrap();
        assert!(
            report.quarantined.is_empty(),
            "round {round}: {:?}",
            report.quarantined
        );
        // A kill during a checkpoint leaves the previous one in place, never a torn one.
        assert_eq!(report.checkpoint_rejected, None, "round {round}");
        rounds_from_checkpoint += u64::from(report.checkpoint_scans > 0);
        let now = at(BASE_DAY + 10_000, 0);
        // The recorded position is just past the last acknowledged batch, or one further (the
        // batch in flight was durable but not yet acknowledged), and that batch is all there.
        let position = store.positions().get(&source(round)).copied();
        let acked_through = last.map_or(0, |l| l as i64 + 1);
        assert!(
            position.unwrap_or(0) == acked_through || position == Some(acked_through + 1),
            "round {round}: position {position:?}, acknowledged through {acked_through}"
        );
        if let Some(position) = position {
            let newest = batch(round, position as u64 - 1, &mut symbols);
            assert!(newest.iter().all(|e| store
                .lookup(e.barcode, now)
                .iter()
                .any(|s| s.time_ms == e.time_ms)));
        }
        for (&r, &last) in &acked {
            // Every acknowledged batch of every round so far, checked in full for this round and
            // by a sample for the earlier ones.
            let batches: Vec<u64> = if r == round {
                (0..=last).collect()
            } else {
                (0..=last).step_by(7).collect()
            };
            for n in batches {
                let events = batch(r, n, &mut symbols);
                for pair in events.chunks(2) {
                    let found = store.lookup(pair[0].barcode, now);
                    assert_eq!(
                        found.len(),
                        2,
                        "round {round}: batch {n} of round {r}, piece {:?}: {found:?} {report:?}",
                        pair[0].barcode
                    );
                    assert_eq!(
                        (found[0].time_ms, found[1].time_ms),
                        (pair[0].time_ms, pair[1].time_ms)
                    );
                }
            }
        }
        // Nothing doubled anywhere: at most the acknowledged scans plus one unacknowledged batch
        // per round (the one in flight when killed).
        let stats = store.stats();
        assert!(
            stats.scans >= total_acked_scans,
            "round {round}: {} < {total_acked_scans}",
            stats.scans
        );
        assert!(
            stats.scans <= total_acked_scans + (round + 1) * PIECES_PER_BATCH * 2,
            "round {round}: {} scans",
            stats.scans
        );
    }
    assert!(
        acked.len() as u64 >= rounds / 2,
        "the child acknowledged too rarely to test anything: {acked:?}"
    );
    assert!(
        rounds_from_checkpoint >= rounds / 4,
        "only {rounds_from_checkpoint} of {rounds} reopenings started from a checkpoint"
    );
}
