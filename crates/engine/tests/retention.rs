//! Scans already past their retention window when they arrive are never stored.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use imbtrack_barcode::Barcode;
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::time::parse_timestamp;
use imbtrack_feed::{parse_feed, FeedOptions, RejectList};

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

/// Appends of a batch whose expired scans lie between live ones keep the live ones, each
/// once, whether watched or not (`append_at`) or a standby's copy (`append_unwatched`).
#[test]
fn appends_leave_out_the_expired_scans_among_live_ones() {
    let now = parse_timestamp(b"2025-03-01T00:00:00Z", None).unwrap();
    let feed = b"imb|scanDatetime|scanEventCode|scanFacilityZip|machineName\n\
        0027012345678912345712345678901|2025-02-28T10:00:00Z|918|94110|DBCS\n\
        0027012345678912345612345678901|2025-01-20T10:00:00Z|918|94110|AFCS\n\
        0027012345678912345812345678901|2025-02-27T10:00:00Z|919|94110|CIOSS\n\
        0027012345678912345912345678901|2025-01-21T10:00:00Z|918|94110|DBCS\n\
        9405803699300124287899|2025-01-20T10:00:00Z|03|94110|APPS\n";
    let parsed = parse_feed(
        "f.psv",
        feed,
        &FeedOptions::at(now),
        &mut RejectList::default(),
    )
    .unwrap();
    assert_eq!(parsed.events.len(), 5);
    let kept = [
        "0027012345678912345712345678901",
        "0027012345678912345812345678901",
        "9405803699300124287899",
    ];
    let gone = [
        "0027012345678912345612345678901",
        "0027012345678912345912345678901",
    ];
    for unwatched in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = Engine::open(dir.path(), EngineOptions::at(now)).unwrap();
        let append = |engine: &Engine| {
            if unwatched {
                engine.append_unwatched(&parsed.events, &parsed.symbols, &[])
            } else {
                engine.append_at(&parsed.events, &parsed.symbols, &[])
            }
            .unwrap()
        };
        let report = append(&engine);
        assert_eq!(
            (report.accepted, report.duplicates, report.expired),
            (3, 0, 2)
        );
        let again = append(&engine);
        assert_eq!((again.accepted, again.duplicates, again.expired), (0, 3, 2));
        assert_eq!(engine.stats().scans, 3);
        for barcode in kept {
            let piece = engine.piece(&Barcode::parse(barcode).unwrap()).unwrap();
            assert_eq!(piece.events.len(), 1, "{barcode}");
        }
        for barcode in gone {
            assert!(
                engine.piece(&Barcode::parse(barcode).unwrap()).is_none(),
                "{barcode}"
            );
        }
    }
}
