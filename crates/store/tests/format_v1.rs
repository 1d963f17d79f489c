//! A store written by the v1 format (`tests/data/v1-store`: the buckets `imbtrack ingest` sealed
//! from `data/feeds/ivmtr_pipe_camel.psv` and `packages.psv` at 2025-02-01) opens and answers
//! exactly the scans those feeds hold: any change to how buckets are read that breaks stores
//! already on disk fails here. Regenerate only with a format version change. Then `compact
//! --upgrade` rewrites them in v2 and they answer the same; and a large store written in v1
//! answers every query the same after the upgrade.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::Path;

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
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store");
    copy_dir(&fixture, dir.path());
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
        if let Some(mid) = event.barcode.to_barcode().mailer_id() {
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
