//! A store written by the v1 format (`tests/data/v1-store`: the buckets `imbtrack ingest` sealed
//! from `data/feeds/ivmtr_pipe_camel.psv` and `packages.psv` at 2025-02-01) opens and answers
//! exactly the scans those feeds hold: any change to how buckets are read that breaks stores
//! already on disk fails here. Regenerate only with a format version change.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::Path;

use imbtrack_feed::time::parse_timestamp;
use imbtrack_feed::{parse_feed, FeedOptions, RejectList};
use imbtrack_store::{Store, StoreOptions};

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

#[test]
fn a_v1_store_opens_and_answers_its_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store");
    copy_dir(&fixture, dir.path());
    let (store, report) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.buckets_opened, 5);
    assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
    let now = parse_timestamp(b"2025-02-01T00:00:00Z", None).unwrap();
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
