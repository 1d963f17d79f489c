//! Scans already past their retention window when they arrive are never stored.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use imbtrack_barcode::Barcode;
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::time::parse_timestamp;
use imbtrack_feed::RejectList;

#[test]
fn scans_past_their_window_on_arrival_are_counted_expired_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = parse_timestamp(b"2025-03-01T00:00:00Z", None).unwrap();
    let (engine, _) = Engine::open(dir.path(), EngineOptions::at(now)).unwrap();
    // Mail is kept 30 days, packages 90: 40 days old, the letter is past its window, the
    // package is not; a letter from yesterday is kept.
    let feed = b"imb|scanDatetime|scanEventCode|scanFacilityZip\n\
        0027012345678912345612345678901|2025-01-20T10:00:00Z|918|94110\n\
        0027012345678912345712345678901|2025-02-28T10:00:00Z|918|94110\n\
        9405803699300124287899|2025-01-20T10:00:00Z|03|94110\n";
    let summary = engine
        .ingest("f.psv", feed, &mut RejectList::default(), &|_| {})
        .unwrap();
    assert_eq!((summary.accepted, summary.expired), (2, 1));
    let old = Barcode::parse("0027012345678912345612345678901").unwrap();
    assert!(engine.piece(&old).is_none());
    assert_eq!(engine.stats().scans, 2);
}
