//! The store on real files in temp directories: append, dedupe, seal, late scans, queries,
//! retention edges, corruption and recovery.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::fs;

use common::{at, mail_key, package_key, scan};
use imbtrack_feed::{Facility, SymbolTable, Zip};
use imbtrack_store::{RetentionPolicy, Store, StoreOptions, DAY_MS};

const DAY: i64 = 20_100; // 2025-01-12

fn options() -> StoreOptions {
    StoreOptions {
        seal_grace_ms: 0,
        ..StoreOptions::default()
    }
}

#[test]
fn a_store_is_open_in_one_place_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = Store::open(dir.path(), options()).unwrap();
    match Store::open(dir.path(), options()) {
        Err(imbtrack_store::StoreError::InUse { dir: in_use }) => assert_eq!(in_use, dir.path()),
        other => panic!("a second open must be refused, got {:?}", other.err()),
    }
    drop(first);
    Store::open(dir.path(), options()).unwrap();
}

#[test]
fn source_positions_survive_reopen_seal_and_wal_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let day = 20_000;
    let events: Vec<_> = (0..10)
        .map(|i| {
            scan(
                &mut symbols,
                mail_key(i, "94110"),
                at(day, i as i64 * 1000),
                "918",
            )
        })
        .collect();
    let p = |name: &str, at: i64| (name.to_string(), at);
    {
        let (store, _) = Store::open(dir.path(), options()).unwrap();
        store
            .append_at(&events[..5], &symbols, &[p("feed-0", 5)])
            .unwrap();
        store
            .append_at(&events[5..], &symbols, &[p("feed-0", 10), p("feed-1", 3)])
            .unwrap();
        // All duplicates: the position still moves.
        let report = store
            .append_at(&events, &symbols, &[p("feed-1", 7)])
            .unwrap();
        assert_eq!(report.accepted, 0);
        assert_eq!(store.positions().get("feed-1"), Some(&7));
    }
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let expected: Vec<(String, i64)> = vec![p("feed-0", 10), p("feed-1", 7)];
    assert_eq!(
        store.positions().clone().into_iter().collect::<Vec<_>>(),
        expected
    );
    // Sealing empties the head, and the WAL segments that held the positions go: the manifest
    // keeps them.
    let segments = || {
        let mut names: Vec<String> = fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = segments();
    store.seal(at(day + 3, 0)).unwrap();
    drop(store);
    let after = segments();
    assert!(
        !after.contains(&before[0]),
        "the positions' segment must be gone: {before:?} {after:?}"
    );
    let wal_files = after.len();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        store.positions().clone().into_iter().collect::<Vec<_>>(),
        expected,
        "{wal_files} WAL files"
    );
    assert_eq!(store.lookup(mail_key(3, "94110"), at(day + 3, 0)).len(), 1);
}

#[test]
fn append_seal_reopen_and_dedupe_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let key = mail_key(1, "94110123456");
    let events = vec![
        scan(&mut symbols, key, at(DAY, 3_600_000), "918"),
        scan(&mut symbols, key, at(DAY + 1, 60_000), "919"),
    ];
    let now = at(DAY + 2, 0);

    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let report = store.append(&events, &symbols).unwrap();
    assert_eq!((report.accepted, report.duplicates), (2, 0));
    assert_eq!(store.lookup(key, now).len(), 2);
    drop(store);

    // Replayed from the WAL, then sealed.
    let (store, recovery) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(recovery.replayed_scans, 2);
    assert_eq!(store.append(&events, &symbols).unwrap().duplicates, 2);
    let sealed = store.seal(now).unwrap();
    assert_eq!((sealed.sealed_buckets, sealed.sealed_scans), (2, 2));
    drop(store);

    let (store, recovery) = Store::open(dir.path(), options()).unwrap();
    assert_eq!((recovery.buckets_opened, recovery.replayed_scans), (2, 0));
    let scans = store.lookup(key, now);
    assert_eq!(
        scans.iter().map(|s| s.code.as_str()).collect::<Vec<_>>(),
        ["918", "919"]
    );
    assert_eq!(scans[0].facility().city, "SAN FRANCISCO");
    assert_eq!(&*scans[0].machine, "DBCS");
    assert_eq!(store.append(&events, &symbols).unwrap().duplicates, 2);
    let stats = store.stats();
    assert_eq!((stats.buckets, stats.scans), (2, 2));
    assert_eq!(
        stats.days["mail"],
        ("2025-01-12".to_string(), "2025-01-13".to_string())
    );
}

#[test]
fn late_scans_go_to_a_delta_and_compact_into_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(
        dir.path(),
        StoreOptions {
            max_deltas: 2,
            ..options()
        },
    )
    .unwrap();
    let now = at(DAY + 3, 0);
    let key = mail_key(7, "");
    store
        .append(&[scan(&mut symbols, key, at(DAY, 1000), "873")], &symbols)
        .unwrap();
    store.seal(now).unwrap();
    for (i, code) in ["874", "893", "918"].iter().enumerate() {
        let late = scan(&mut symbols, key, at(DAY, 2000 + i as i64), code);
        assert_eq!(store.append(&[late], &symbols).unwrap().accepted, 1);
        // The sealed day's own scan is a duplicate, not a late scan.
        assert_eq!(
            store
                .append(&[scan(&mut symbols, key, at(DAY, 1000), "873")], &symbols)
                .unwrap()
                .duplicates,
            1
        );
        let report = store.seal(now).unwrap();
        assert_eq!(report.compacted_days, u64::from(i == 2));
        assert_eq!(store.lookup(key, now).len(), 2 + i);
    }
    // One base left after compaction: the deltas were merged and removed.
    assert_eq!(store.stats().buckets, 1);
    let names: Vec<String> = fs::read_dir(dir.path().join("buckets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    drop(store);
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.lookup(key, now).len(), 4);
    // Late scans never widen another day.
    assert!(store
        .pieces_by_zip(Zip::parse(b"94110").unwrap(), DAY + 1, now)
        .is_empty());
}

#[test]
fn zip_and_mailer_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let routings = ["94110123456", "941101234", "94110", "94111000000", ""];
    let events: Vec<_> = routings
        .iter()
        .enumerate()
        .map(|(i, r)| scan(&mut symbols, mail_key(i as u64, r), at(DAY, 1000), "918"))
        .collect();
    store.append(&events, &symbols).unwrap();
    let now = at(DAY + 1, 0);
    let zip = |text: &str| Zip::parse(text.as_bytes()).unwrap();
    let check = |store: &Store| {
        let keys = |z: &str| store.pieces_by_zip(zip(z), DAY, now).len();
        assert_eq!(keys("94110"), 3);
        assert_eq!(keys("941101234"), 2);
        assert_eq!(keys("94110123456"), 1);
        assert_eq!(keys("94111"), 1);
        assert_eq!(keys("94112"), 0);
        assert_eq!(store.pieces_by_zip(zip("94110"), DAY + 1, now).len(), 0);
        assert_eq!(store.pieces_by_mailer(123456, DAY, now).len(), 5);
        assert_eq!(store.pieces_by_mailer(123457, DAY, now).len(), 0);
    };
    check(&store);
    store.seal(at(DAY + 2, 0)).unwrap();
    assert_eq!(store.stats().head_buckets, 0);
    check(&store);
}

#[test]
fn retention_edges() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let (mail, package) = (mail_key(1, ""), package_key(1));
    let t = at(DAY, 12 * 3_600_000);
    store
        .append(
            &[
                scan(&mut symbols, mail, t, "918"),
                scan(&mut symbols, package, t, "01"),
            ],
            &symbols,
        )
        .unwrap();
    let window = 30 * DAY_MS;
    for sealed in [false, true] {
        if sealed {
            store.seal(at(DAY + 1, 0)).unwrap();
        }
        assert_eq!(
            store.lookup(mail, t + window - 1000).len(),
            1,
            "sealed {sealed}"
        );
        assert_eq!(
            store.lookup(mail, t + window + 1000).len(),
            0,
            "sealed {sealed}"
        );
        assert_eq!(
            store.lookup(package, t + window + 1000).len(),
            1,
            "sealed {sealed}"
        );
        assert_eq!(
            store.lookup(package, t + 90 * DAY_MS + 1000).len(),
            0,
            "sealed {sealed}"
        );
    }
    let day_end = at(DAY + 1, 0);
    // A second younger than one window past the day's end: kept.
    assert_eq!(
        store
            .expire(day_end + window - 1000)
            .unwrap()
            .dropped_buckets,
        0
    );
    let report = store.expire(day_end + window).unwrap();
    assert_eq!(report.dropped_buckets, 1);
    assert!(report.freed_bytes > 512);
    assert_eq!(store.lookup(package, day_end + window).len(), 1);
    let report = store.expire(day_end + 90 * DAY_MS).unwrap();
    assert_eq!(report.dropped_buckets, 1);
    assert_eq!(fs::read_dir(dir.path().join("buckets")).unwrap().count(), 0);
    assert_eq!(store.stats().buckets, 0);
}

#[test]
fn shorter_retention_applies_to_queries_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let retention = RetentionPolicy::new(2 * DAY_MS, 5 * DAY_MS).unwrap();
    let (store, _) = Store::open(
        dir.path(),
        StoreOptions {
            retention,
            ..options()
        },
    )
    .unwrap();
    let key = mail_key(3, "");
    store
        .append(&[scan(&mut symbols, key, at(DAY, 0), "918")], &symbols)
        .unwrap();
    assert_eq!(store.lookup(key, at(DAY + 2, 0)).len(), 1);
    assert_eq!(store.lookup(key, at(DAY + 2, 1)).len(), 0);
    // An open (unsealed) bucket past its window is dropped too.
    assert_eq!(
        store.expire(at(DAY + 3, 0)).unwrap().dropped_head_buckets,
        1
    );
}

#[test]
fn a_corrupt_bucket_is_quarantined_and_the_rest_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let (a, b) = (mail_key(1, ""), mail_key(2, ""));
    store
        .append(
            &[
                scan(&mut symbols, a, at(DAY, 0), "918"),
                scan(&mut symbols, b, at(DAY + 1, 0), "918"),
            ],
            &symbols,
        )
        .unwrap();
    store.seal(at(DAY + 3, 0)).unwrap();
    drop(store);
    let victim = fs::read_dir(dir.path().join("buckets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let file = victim.join("scans.bin");
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xFF;
    fs::write(&file, &bytes).unwrap();

    let (store, report) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(report.quarantined.len(), 1);
    assert!(
        report.quarantined[0].1.contains("checksum"),
        "{:?}",
        report.quarantined
    );
    assert!(report.quarantined[0]
        .0
        .starts_with(dir.path().join("quarantine")));
    let now = at(DAY + 3, 0);
    assert_eq!(store.lookup(a, now).len(), 0);
    assert_eq!(store.lookup(b, now).len(), 1);
    drop(store);
    // Reported once: the manifest no longer names it.
    let (store, report) = Store::open(dir.path(), options()).unwrap();
    assert!(report.quarantined.is_empty());
    // It holds scans too: it goes when its day is past the window, like the others.
    let expired = store.expire(at(DAY + 40, 0)).unwrap();
    assert_eq!(expired.dropped_quarantined, 1);
    assert_eq!(
        fs::read_dir(dir.path().join("quarantine")).unwrap().count(),
        0
    );
}

#[test]
fn a_truncated_bucket_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    store
        .append(
            &[scan(&mut symbols, mail_key(1, ""), at(DAY, 0), "918")],
            &symbols,
        )
        .unwrap();
    store.seal(at(DAY + 3, 0)).unwrap();
    drop(store);
    let bucket = fs::read_dir(dir.path().join("buckets"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = bucket.join("scans.bin");
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (store, report) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(store.stats().buckets, 0);
}

#[test]
fn a_torn_wal_tail_is_cut_and_earlier_appends_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let (a, b) = (mail_key(1, ""), mail_key(2, ""));
    store
        .append(&[scan(&mut symbols, a, at(DAY, 0), "918")], &symbols)
        .unwrap();
    store
        .append(&[scan(&mut symbols, b, at(DAY, 0), "918")], &symbols)
        .unwrap();
    drop(store);
    let wal = fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let len = fs::metadata(&wal).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (store, report) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(report.wal_repairs.len(), 1);
    let now = at(DAY + 1, 0);
    assert_eq!(store.lookup(a, now).len(), 1);
    assert_eq!(store.lookup(b, now).len(), 0);
}

#[test]
fn leftovers_of_an_interrupted_seal_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let (store, _) = Store::open(dir.path(), options()).unwrap();
    let key = mail_key(1, "");
    store
        .append(&[scan(&mut symbols, key, at(DAY, 0), "918")], &symbols)
        .unwrap();
    drop(store);
    fs::create_dir_all(dir.path().join("buckets/.tmp-mail-2025-01-12-base-000009")).unwrap();
    fs::create_dir_all(dir.path().join("buckets/mail-2025-01-12-base-000010")).unwrap();
    let (store, report) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(report.cleaned_dirs, 2);
    assert_eq!(store.lookup(key, at(DAY + 1, 0)).len(), 1);
}

#[test]
fn a_facility_first_seen_in_an_all_duplicate_append_survives_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let key = mail_key(1, "94110");
    let first = scan(&mut symbols, key, at(DAY, 1_000), "918");
    {
        let (store, _) = Store::open(dir.path(), options()).unwrap();
        store.append(&[first], &symbols).unwrap();
        // The same scan under another facility name (same facility ZIP, so the same scan):
        // all duplicates, so the new name is interned but no event needs it yet ...
        let mut renamed = first;
        renamed.facility = symbols.intern_facility(Facility {
            name: "SAN FRANCISCO NDC",
            city: "SAN FRANCISCO",
            state: "CA",
        });
        assert_eq!(store.append(&[renamed], &symbols).unwrap().duplicates, 1);
        // ... and the next append's event uses it without it being new to the store.
        let mut later = scan(&mut symbols, key, at(DAY, 2_000), "918");
        later.facility = renamed.facility;
        assert_eq!(store.append(&[later], &symbols).unwrap().accepted, 1);
    }
    let (store, recovery) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(recovery.replayed_scans, 2);
    let scans = store.lookup(key, at(DAY + 3, 0));
    let names: Vec<&str> = scans.iter().map(|s| s.facility().name).collect();
    assert_eq!(names, ["SAN FRANCISCO CA P&DC", "SAN FRANCISCO NDC"]);
}

/// Scans of pieces `from..to` on `day`, two per piece, with facilities and machines that vary.
fn day_of_scans(
    symbols: &mut SymbolTable,
    day: i64,
    from: u64,
    to: u64,
) -> Vec<imbtrack_feed::ScanEvent> {
    (from..to)
        .flat_map(|i| {
            let key = mail_key(i, "94110");
            let mut first = scan(symbols, key, at(day, i as i64 * 10), "918");
            first.machine = symbols.intern(&format!("AFCS-{}", i % 5));
            let mut second = scan(symbols, key, at(day, i as i64 * 10 + 5), "919");
            second.facility_zip = Zip::parse(b"10001").unwrap();
            [first, second]
        })
        .collect()
}

fn looked_up(store: &Store, events: &[imbtrack_feed::ScanEvent], now: i64) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| store.lookup(e.barcode, now))
        .map(|s| {
            format!(
                "{:?} {} {} {} {}",
                s.barcode,
                s.time_ms,
                s.code.as_str(),
                s.machine,
                s.facility_text
            )
        })
        .collect()
}

#[test]
fn a_checkpoint_opens_the_head_without_replaying_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let early = day_of_scans(&mut symbols, DAY, 0, 300);
    let late = day_of_scans(&mut symbols, DAY, 300, 400);
    let now = at(DAY, 0) + DAY_MS / 2;
    let p = |at: i64| vec![("feed".to_string(), at)];
    let expected = {
        let (store, _) = Store::open(dir.path(), options()).unwrap();
        store.append_at(&early, &symbols, &p(1)).unwrap();
        assert!(store.checkpoint_due(true));
        let report = store.checkpoint().unwrap();
        assert_eq!((report.buckets, report.scans), (1, 600));
        assert!(!store.checkpoint_due(true));
        store.append_at(&late, &symbols, &p(2)).unwrap();
        looked_up(&store, &[early.clone(), late.clone()].concat(), now)
    };
    let (store, recovery) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(recovery.checkpoint_rejected, None);
    assert_eq!(
        (recovery.checkpoint_scans, recovery.replayed_scans),
        (600, 200)
    );
    assert_eq!(store.positions().get("feed"), Some(&2));
    let all = [early.clone(), late.clone()].concat();
    assert_eq!(looked_up(&store, &all, now), expected);
    assert_eq!(store.append(&all, &symbols).unwrap().duplicates, 800);

    // A damaged checkpoint is ignored: the whole WAL is replayed and nothing is lost.
    drop(store);
    let path = dir.path().join("head.ckpt");
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let (store, recovery) = Store::open(dir.path(), options()).unwrap();
    assert!(recovery.checkpoint_rejected.is_some());
    assert_eq!(
        (recovery.checkpoint_scans, recovery.replayed_scans),
        (0, 800)
    );
    assert_eq!(looked_up(&store, &all, now), expected);
}

#[test]
fn a_checkpoint_older_than_a_seal_or_an_expiry_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let first = day_of_scans(&mut symbols, DAY, 0, 50);
    let next = day_of_scans(&mut symbols, DAY + 1, 50, 80);
    let retention = RetentionPolicy::new(3 * DAY_MS, 5 * DAY_MS).unwrap();
    let options = StoreOptions {
        retention,
        ..options()
    };
    {
        let (store, _) = Store::open(dir.path(), options.clone()).unwrap();
        store.append(&first, &symbols).unwrap();
        store.append(&next, &symbols).unwrap();
        store.checkpoint().unwrap();
        // The first day seals after the checkpoint: its copy in the checkpoint is stale.
        store.seal(at(DAY + 1, 1)).unwrap();
    }
    let now = at(DAY + 2, 0);
    let (store, recovery) = Store::open(dir.path(), options.clone()).unwrap();
    assert_eq!(
        recovery.checkpoint_scans, 60,
        "only the open day comes from the checkpoint"
    );
    assert_eq!(store.stats().scans, 160);
    assert_eq!(store.lookup(first[0].barcode, now).len(), 2);
    // Expiring the open day rewrites the checkpoint, which must not keep its scans.
    store.expire(at(DAY + 6, 0)).unwrap();
    drop(store);
    let (store, recovery) = Store::open(dir.path(), options).unwrap();
    assert_eq!((recovery.checkpoint_scans, recovery.replayed_scans), (0, 0));
    assert_eq!(store.stats().scans, 0);
    let bytes = fs::read(dir.path().join("head.ckpt")).unwrap();
    let key = next[0].barcode.as_u128().to_le_bytes();
    assert!(
        !bytes.windows(16).any(|w| w == key),
        "an expired piece is still in the checkpoint"
    );
}

#[test]
fn scans_appended_after_a_checkpoint_whose_wal_is_gone_survive_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let first = day_of_scans(&mut symbols, DAY, 0, 40);
    let second = day_of_scans(&mut symbols, DAY, 40, 60);
    let now = at(DAY, 0) + DAY_MS / 2;
    {
        let (store, _) = Store::open(dir.path(), options()).unwrap();
        store.append(&first, &symbols).unwrap();
        store.checkpoint().unwrap();
    }
    // The WAL is lost (a damaged disk, an operator's mistake): the checkpoint still has it all.
    for entry in fs::read_dir(dir.path().join("wal")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    {
        let (store, recovery) = Store::open(dir.path(), options()).unwrap();
        assert_eq!(recovery.checkpoint_scans, 80);
        store.append(&second, &symbols).unwrap();
    }
    // The new segments come after the checkpoint's position, so they are replayed.
    let (store, recovery) = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        (recovery.checkpoint_scans, recovery.replayed_scans),
        (80, 40)
    );
    for e in first.iter().chain(&second) {
        assert!(store
            .lookup(e.barcode, now)
            .iter()
            .any(|s| s.time_ms == e.time_ms));
    }
}

#[test]
fn a_day_query_s_pieces_read_where_it_found_them_even_after_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut symbols = SymbolTable::new();
    let options = StoreOptions {
        max_deltas: 0,
        ..options()
    };
    let (store, _) = Store::open(dir.path(), options).unwrap();
    let first = day_of_scans(&mut symbols, DAY, 0, 30);
    let other_day = day_of_scans(&mut symbols, DAY + 1, 0, 30);
    store.append(&first, &symbols).unwrap();
    store.append(&other_day, &symbols).unwrap();
    store.seal(at(DAY + 3, 0)).unwrap();
    let now = at(DAY + 3, 0);
    let zip = Zip::parse(b"94110").unwrap();
    let found = store.pieces_by_zip(zip, DAY, now);
    assert_eq!(found.len(), 30);
    let same = |store: &Store| {
        for piece in &found {
            let scans = store.lookup_day_piece(piece, now);
            assert_eq!(scans.len(), 4, "two scans on each of two days");
            assert_eq!(scans, store.lookup(piece.key, now));
        }
    };
    same(&store);
    // A late scan becomes a delta and, with no deltas allowed, the day is compacted: the
    // buckets the query found are gone, the pieces are read from the new base.
    let late = vec![scan(
        &mut symbols,
        first[0].barcode,
        at(DAY, 999_000),
        "919",
    )];
    store.append(&late, &symbols).unwrap();
    store.seal(at(DAY + 3, 0)).unwrap();
    let piece = &found[0];
    assert_eq!(store.lookup_day_piece(piece, now).len(), 5);
    assert_eq!(
        store.lookup_day_piece(piece, now),
        store.lookup(piece.key, now)
    );
}
