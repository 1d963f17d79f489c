//! Bucket files of every format version stay readable, and v2 stays what FORMAT.md says.
//!
//! `tests/data/v1-store` holds the buckets `imbtrack ingest` sealed in format v1 from
//! `data/feeds/ivmtr_pipe_camel.psv` and `packages.psv` at 2025-02-01; it opens and answers
//! exactly the scans those feeds hold, and `compact --upgrade` rewrites it into byte for byte the
//! v2 files committed under `tests/data/v2-buckets` (named by class and day), which open and
//! answer the same. Any change to how buckets are read or written that breaks files already on
//! disk fails here: change those files only with a new format version. A large store written in
//! v1 answers every query the same after the upgrade.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use imbtrack_feed::time::parse_timestamp;
use imbtrack_feed::{generate, parse_feed, FeedOptions, GenOptions, RejectList};
use imbtrack_store::{BucketFormat, DayPiece, RetentionPolicy, Store, StoreOptions, DAY_MS};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Every scan of the fixture's feeds, looked up in `store`.
fn assert_answers_its_feeds(store: &Store, now: i64) {
    let mut checked = 0;
    for feed in ["ivmtr_pipe_camel.psv", "packages.psv"] {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../data/feeds")
                .join(feed),
        )
        .unwrap();
        let parsed = parse_feed(
            feed,
            &bytes,
            &FeedOptions::at(now),
            &mut RejectList::default(),
        )
        .unwrap();
        for event in &parsed.events {
            let found = store.lookup(event.barcode, now);
            let scan = found
                .iter()
                .find(|s| s.time_ms == event.time_ms && s.code == event.code)
                .unwrap_or_else(|| panic!("{feed}: {:?} missing: {found:?}", event.barcode));
            assert_eq!(
                (scan.class, scan.routing, scan.facility_zip, scan.handling),
                (
                    event.class,
                    event.routing,
                    event.facility_zip,
                    event.handling
                )
            );
            assert_eq!(&*scan.machine, parsed.symbols.get(event.machine));
            assert_eq!(
                scan.facility().name,
                parsed.symbols.facility(event.facility).name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    assert_eq!(store.stats().scans, 6);
}

#[test]
fn a_v1_store_opens_answers_its_feeds_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let now = parse_timestamp(b"2025-02-01T00:00:00Z", None).unwrap();
    let (store, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.buckets_opened, 5);
    assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
    assert_eq!(
        store.stats().formats,
        BTreeMap::from([("v1".to_string(), 5)])
    );
    assert_answers_its_feeds(&store, now);

    let upgrade = store.compact(true).unwrap();
    assert_eq!(
        (upgrade.days, upgrade.buckets_upgraded, upgrade.scans),
        (5, 5, 6)
    );
    assert_eq!(
        store.stats().formats,
        BTreeMap::from([("v2".to_string(), 5)])
    );
    assert_answers_its_feeds(&store, now);
    // A second pass has nothing left to do.
    assert_eq!(store.compact(true).unwrap().days, 0);
    drop(store);
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(
        store.stats().formats,
        BTreeMap::from([("v2".to_string(), 5)])
    );
    assert_answers_its_feeds(&store, now);
}

/// The v1 fixture store, upgraded in place; its bucket files by class and day.
fn upgraded_fixture(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    copy_dir(&fixture(), dir);
    let (store, _) = Store::open(dir, StoreOptions::default()).unwrap();
    store.compact(true).unwrap();
    drop(store);
    bucket_files(dir)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store")
}

fn committed_v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v2-buckets")
}

/// `mail-2025-01-14-base-000007/scans.bin` as `mail-2025-01-14-base`, with its bytes.
fn bucket_files(store: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(store.join("buckets"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            let (day, _sequence) = name.rsplit_once('-').unwrap();
            (
                day.to_string(),
                std::fs::read(path.join("scans.bin")).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_upgrade_writes_the_committed_v2_files() {
    let dir = tempfile::tempdir().unwrap();
    let written = upgraded_fixture(dir.path());
    let committed: BTreeMap<String, Vec<u8>> = std::fs::read_dir(committed_v2())
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &written {
        assert!(bytes == &committed[name], "{name}: the v2 writer changed");
    }
}

#[test]
fn committed_v2_files_open_and_answer_their_feeds() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    // The fixture's manifest names each day's bucket; put the committed v2 file in its place.
    for entry in std::fs::read_dir(dir.path().join("buckets")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (day, _) = name.rsplit_once('-').unwrap();
        std::fs::copy(
            committed_v2().join(format!("{day}.bin")),
            path.join("scans.bin"),
        )
        .unwrap();
    }
    let (store, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
    assert_eq!(
        store.stats().formats,
        BTreeMap::from([("v2".to_string(), 5)])
    );
    let now = parse_timestamp(b"2025-02-01T00:00:00Z", None).unwrap();
    assert_answers_its_feeds(&store, now);
}

/// Pieces a query found, with their scans (not where they were found, which an upgrade moves).
fn described(store: &Store, pieces: &[DayPiece], now: i64) -> String {
    assert!(!pieces.is_empty());
    let described: Vec<String> = pieces
        .iter()
        .map(|p| format!("{:?} {:?}", p.key, store.lookup_day_piece(p, now)))
        .collect();
    described.join("; ")
}

/// Every answer a store gives about a generated feed: each piece's scans, and the pieces of a
/// sample of ZIP Codes and Mailer IDs per day.
fn answers(store: &Store, feed: &[u8], now: i64) -> Vec<String> {
    let parsed = parse_feed(
        "f.psv",
        feed,
        &FeedOptions::at(now),
        &mut RejectList::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut keys: Vec<_> = parsed.events.iter().map(|e| e.barcode).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in &keys {
        out.push(format!("{key:?} {:?}", store.lookup(*key, now)));
    }
    for event in parsed.events.iter().step_by(97) {
        let day = event.time_ms.div_euclid(DAY_MS);
        for digits in [5, 9, 11] {
            if let Some(zip) = event.routing.prefix(digits) {
                let pieces = store.pieces_by_zip(zip, day, now);
                out.push(format!("{zip} {}", described(store, &pieces, now)));
            }
        }
        if let Some(mid) = event.barcode.mailer_id() {
            let pieces = store.pieces_by_mailer(mid, day, now);
            out.push(format!("{mid} {}", described(store, &pieces, now)));
        }
    }
    assert!(out.len() > keys.len());
    out
}

#[test]
fn a_large_v1_store_answers_the_same_after_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let start = 20_100;
    let now = (start + 6) * DAY_MS;
    let mut feed = Vec::new();
    let options = GenOptions {
        days: 4,
        ..GenOptions::new(5_000, start)
    };
    generate(&options, &mut feed, |_| {}).unwrap();
    let v1 = StoreOptions {
        seal_grace_ms: 0,
        max_deltas: 100,
        retention: RetentionPolicy::with_override(100 * DAY_MS, 100 * DAY_MS).unwrap(),
        bucket_format: BucketFormat::V1,
        ..StoreOptions::default()
    };
    let parsed = parse_feed(
        "f.psv",
        &feed,
        &FeedOptions::at(now),
        &mut RejectList::default(),
    )
    .unwrap();
    let (store, _) = Store::open(dir.path(), v1.clone()).unwrap();
    // Two halves, sealed in between: the later half's scans of sealed days become deltas.
    let half = parsed.events.len() / 2;
    store
        .append(&parsed.events[..half], &parsed.symbols)
        .unwrap();
    store.seal(now).unwrap();
    store
        .append(&parsed.events[half..], &parsed.symbols)
        .unwrap();
    store.seal(now).unwrap();
    let before = answers(&store, &feed, now);
    let stats = store.stats();
    assert_eq!(stats.formats.keys().collect::<Vec<_>>(), ["v1"]);
    assert!(stats.buckets > 10, "{stats:?}");
    drop(store);

    let (store, _) = Store::open(
        dir.path(),
        StoreOptions {
            bucket_format: BucketFormat::V2,
            ..v1
        },
    )
    .unwrap();
    assert_eq!(answers(&store, &feed, now), before);
    let report = store.compact(true).unwrap();
    assert_eq!(report.buckets_upgraded, stats.buckets);
    assert!(report.bytes_after * 2 < report.bytes_before, "{report:?}");
    assert_eq!(store.stats().formats.keys().collect::<Vec<_>>(), ["v2"]);
    assert_eq!(answers(&store, &feed, now), before);
}
