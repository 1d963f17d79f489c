//! End-to-end: the real binary generates, ingests and queries a store in a temp directory:
//! by IMb digits, by 65 bars and by ZIP; rejects with reasons; retention through --now and
//! expire; re-ingest adds nothing; an ingest killed with SIGKILL and re-run leaves every scan once.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use imbtrack_barcode::{Barcode, BarcodeKey};
use imbtrack_feed::time::{days_from_civil, parse_timestamp};
use imbtrack_feed::{
    generate, parse_feed, FeedOptions, GenOptions, GeneratedLine, LineKind, RejectList,
};
use serde_json::Value;

const NOW: &str = "2025-01-20T00:00:00Z";

fn imbtrack(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A feed of `pieces` pieces from 2025-01-10 over 3 days, written to `path`, with its lines.
fn feed(path: &Path, pieces: u64, bad_share: f64) -> Vec<GeneratedLine> {
    let mut options = GenOptions::new(pieces, days_from_civil(2025, 1, 10));
    (options.days, options.bad_share, options.seed) = (3, bad_share, 11);
    let mut lines = Vec::new();
    let file = std::fs::File::create(path).unwrap();
    generate(&options, file, |l| lines.push(l.clone())).unwrap();
    lines
}

fn first_good(lines: &[GeneratedLine], package: bool) -> BarcodeKey {
    lines
        .iter()
        .find(|l| {
            l.kind == LineKind::Good
                && matches!(l.barcode.to_barcode(), Barcode::Impb(_)) == package
        })
        .unwrap()
        .barcode
}

/// Every file and directory under `dir` whose mode lets anyone but its owner in.
fn open_to_others(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            found.push((path.clone(), mode & 0o777));
        }
        if path.is_dir() {
            found.extend(open_to_others(&path));
        }
    }
    found
}

#[test]
fn ingest_then_query_every_way() {
    let dir = tempfile::tempdir().unwrap();
    let (data, feed_path) = (dir.path().join("data"), dir.path().join("f.psv"));
    let lines = feed(&feed_path, 2_000, 0.01);
    let summary = json(&imbtrack(
        &data,
        &["--now", NOW, "ingest", feed_path.to_str().unwrap()],
    ));
    let records = lines.len() as u64;
    assert_eq!(summary["lines"], records);
    let (accepted, duplicates, rejected) = (
        summary["accepted"].as_u64().unwrap(),
        summary["duplicates"].as_u64().unwrap(),
        summary["rejected"].as_u64().unwrap(),
    );
    assert_eq!(accepted + duplicates + rejected, records);
    assert_eq!(
        rejected,
        lines
            .iter()
            .filter(|l| matches!(l.kind, LineKind::Bad(_)))
            .count() as u64
    );
    assert_eq!(
        duplicates,
        lines
            .iter()
            .filter(|l| l.kind == LineKind::Duplicate)
            .count() as u64
    );

    // The rejects file holds each bad record with its reason.
    let rejects_path = summary["rejects_file"].as_str().unwrap();
    let rejects: Vec<Value> = std::fs::read_to_string(rejects_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len() as u64, rejected);
    // Store, WAL, checkpoint and rejects hold personal data: the owner's only.
    assert!(data.join("head.ckpt").exists() || summary["checkpoint_scans"] == 0);
    assert_eq!(open_to_others(&data), vec![]);
    for reject in &rejects {
        let line = lines
            .iter()
            .find(|l| l.line == reject["line"].as_u64().unwrap())
            .unwrap();
        assert!(
            matches!(line.kind, LineKind::Bad(reason) if reject["reason"] == reason),
            "{reject}"
        );
        assert!(!reject["raw"].as_str().unwrap().is_empty());
    }

    // By IMb digits, by 65 bars, dashed: the same piece and history, newest first.
    let key = first_good(&lines, false);
    let Barcode::Imb(imb) = key.to_barcode() else {
        unreachable!()
    };
    let by_digits = json(&imbtrack(
        &data,
        &[
            "--now",
            NOW,
            "query",
            &format!("{}{}", imb.tracking(), imb.routing()),
        ],
    ));
    let by_bars = json(&imbtrack(
        &data,
        &["--now", NOW, "query", imb.encode().as_str()],
    ));
    assert_eq!(by_digits, by_bars);
    let expected: Vec<&GeneratedLine> = lines
        .iter()
        .filter(|l| l.barcode == key && l.kind == LineKind::Good)
        .collect();
    let events = by_digits["events"].as_array().unwrap();
    assert_eq!(events.len(), expected.len());
    let times: Vec<i64> = events
        .iter()
        .map(|e| parse_timestamp(e["time"].as_str().unwrap().as_bytes(), None).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(by_digits["class"], "mail");
    assert!(by_digits["status"].is_string() && by_digits["status_time"].is_string());

    // A package by its tracking number.
    let package = first_good(&lines, true);
    let Barcode::Impb(impb) = package.to_barcode() else {
        unreachable!()
    };
    let piece = json(&imbtrack(&data, &["--now", NOW, "query", impb.tracking()]));
    assert_eq!(piece["class"], "package");

    // Not found: exit 3.
    let missing = imbtrack(&data, &["--now", NOW, "query", "00270999999999999999"]);
    assert_eq!(missing.status.code(), Some(3));
    assert_eq!(
        serde_json::from_slice::<Value>(&missing.stdout).unwrap()["error"]["code"],
        "not_found"
    );

    // By ZIP and day: every piece listed is routed there and scanned that day.
    let routed = lines
        .iter()
        .find(|l| l.kind == LineKind::Good && l.routing.len() == 11)
        .unwrap();
    let day = imbtrack_feed::time::format_utc(routed.time_ms)[..10].to_string();
    for digits in [5, 9, 11] {
        let zip = routed.routing.prefix(digits).unwrap().to_string();
        let output = imbtrack(
            &data,
            &["--now", NOW, "query", "--zip", &zip, "--date", &day],
        );
        assert!(output.status.success());
        let pieces: Vec<Value> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            pieces
                .iter()
                .any(|p| p["barcode"] == routed.barcode.to_barcode().to_string()),
            "zip {zip}"
        );
        assert!(pieces
            .iter()
            .all(|p| p["routing_zip"].as_str().unwrap().starts_with(&zip)));
    }

    // Re-ingesting the same file adds nothing.
    let again = json(&imbtrack(
        &data,
        &["--now", NOW, "ingest", feed_path.to_str().unwrap()],
    ));
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"].as_u64().unwrap(), accepted + duplicates);
}

#[test]
fn retention_through_now_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (data, feed_path) = (dir.path().join("data"), dir.path().join("f.psv"));
    let lines = feed(&feed_path, 500, 0.02);
    let ingested = json(&imbtrack(
        &data,
        &["--now", NOW, "ingest", feed_path.to_str().unwrap()],
    ));
    // The rejects file holds raw records, barcodes in clear among them.
    assert!(ingested["rejects_file"].is_string(), "{ingested}");
    let trackings: std::collections::BTreeSet<Vec<u8>> = lines
        .iter()
        .map(|l| l.barcode.to_barcode().to_string().as_bytes()[..20].to_vec())
        .collect();
    let in_clear = |data: &Path| common::found_under(data, &trackings);
    assert!(
        in_clear(&data) > 0,
        "the search must be able to find a barcode"
    );
    let (mail, package) = (
        first_good(&lines, false).to_barcode().to_string(),
        first_good(&lines, true).to_barcode().to_string(),
    );
    let query = |now: &str, barcode: &str| {
        imbtrack(&data, &["--now", now, "query", barcode])
            .status
            .code()
    };
    assert_eq!(
        (query(NOW, &mail), query(NOW, &package)),
        (Some(0), Some(0))
    );

    // 40 days on: mail gone, packages still there; sealing happened on that ingest's clock.
    let later = "2025-02-25T00:00:00Z";
    json(&imbtrack(&data, &["--now", later, "stats"]));
    assert_eq!(
        (query(later, &mail), query(later, &package)),
        (Some(3), Some(0))
    );
    let expired = json(&imbtrack(&data, &["--now", later, "expire"]));
    assert!(
        expired["dropped_buckets"].as_u64().unwrap()
            + expired["dropped_head_buckets"].as_u64().unwrap()
            > 0
    );

    // 100 days on: both gone, and their bucket directories removed.
    let much_later = "2025-04-25T00:00:00Z";
    assert_eq!(
        (query(much_later, &mail), query(much_later, &package)),
        (Some(3), Some(3))
    );
    let expired = json(&imbtrack(&data, &["--now", much_later, "expire"]));
    assert_eq!(expired["rejects_files_removed"], 1, "{expired}");
    assert_eq!(std::fs::read_dir(data.join("buckets")).unwrap().count(), 0);
    let stats = json(&imbtrack(&data, &["--now", much_later, "stats"]));
    assert_eq!(stats["scans"], 0);
    // No copy of any barcode is left in clear anywhere in the data directory.
    assert_eq!(in_clear(&data), 0);
}

#[test]
fn an_ingest_killed_and_rerun_leaves_every_scan_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, feed_path) = (dir.path().join("data"), dir.path().join("f.psv"));
    feed(&feed_path, 60_000, 0.0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(&data)
        .args(["--now", NOW, "ingest", feed_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();
    json(&imbtrack(
        &data,
        &["--now", NOW, "ingest", feed_path.to_str().unwrap()],
    ));

    let bytes = std::fs::read(&feed_path).unwrap();
    let parsed = parse_feed(
        "f",
        &bytes,
        &FeedOptions::at(parse_timestamp(NOW.as_bytes(), None).unwrap()),
        &mut RejectList::default(),
    )
    .unwrap();
    let distinct: HashSet<_> = parsed.events.iter().map(|e| e.identity()).collect();
    let stats = json(&imbtrack(&data, &["--now", NOW, "stats"]));
    assert_eq!(stats["scans"].as_u64().unwrap(), distinct.len() as u64);
}

#[test]
fn bench_prints_one_line_per_system() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .args(["bench", "--pieces", "400", "--lookups", "300", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let systems: Vec<&str> = lines
        .iter()
        .map(|l| l["system"].as_str().unwrap())
        .collect();
    assert_eq!(systems, ["imbtrack", "sqlite"]);
    for line in &lines {
        for field in [
            "rows_per_s",
            "lookup_median_us",
            "lookup_p99_us",
            "bytes_per_row",
            "ratio_ingest",
            "ratio_lookup",
        ] {
            assert!(line[field].as_f64().unwrap() > 0.0, "{field} in {line}");
        }
    }
    // Both systems were given the same scans: SQLite every parsed record (repeats included).
    assert_eq!(lines[0]["rows"], lines[1]["rows"]);
}

#[test]
fn stdin_gzip_json_and_legacy_with_a_default_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/feeds");

    // A gzipped JSON push body on stdin.
    let gz = std::fs::read(fixtures.join("push_body.json.gz")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(&data)
        .args(["--now", NOW, "ingest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &gz).unwrap();
    let summary = json(&child.wait_with_output().unwrap());
    assert_eq!(
        (summary["accepted"].as_u64(), summary["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(summary["rejects_by_reason"]["missing_event_code"], 1);
    let piece = json(&imbtrack(
        &data,
        &["--now", NOW, "query", "00270123456789123456-12345678901"],
    ));
    assert_eq!(piece["events"].as_array().unwrap().len(), 2);
    assert_eq!(piece["status"], "SORTED_FOR_DELIVERY");

    // Legacy records have no offset: rejected without --default-offset, taken with it.
    let legacy = fixtures.join("legacy.txt");
    let legacy_now = "2012-03-01T00:00:00Z";
    let without = json(&imbtrack(
        &data,
        &["--now", legacy_now, "ingest", legacy.to_str().unwrap()],
    ));
    assert_eq!(without["rejects_by_reason"]["time_without_offset"], 2);
    let with = json(&imbtrack(
        &data,
        &[
            "--now",
            legacy_now,
            "ingest",
            "--default-offset",
            "-08:00",
            legacy.to_str().unwrap(),
        ],
    ));
    assert_eq!(with["accepted"], 2);
    let piece = json(&imbtrack(
        &data,
        &[
            "--now",
            legacy_now,
            "query",
            "20270106848527962002-95630864806",
        ],
    ));
    assert_eq!(piece["events"][0]["time"], "2012-02-17T12:29:00Z");
    assert_eq!(piece["events"][0]["code"], "919");
}

/// `--op-codes FILE`: the operator's op-code list (the USPS list's columns, any order, extra
/// columns ignored) decides what mail codes mean; a bad list stops the run at start, naming
/// its row.
#[test]
fn an_operator_op_code_list_replaces_the_shipped_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let feed_path = dir.path().join("feed.psv");
    std::fs::write(
        &feed_path,
        "imb|scanDatetime|scanEventCode|scanFacilityZip|handlingEventType\n\
         0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110|A\n\
         0027012345678912345612345678901|2025-01-15T12:00:00-05:00|271|94110|AA\n",
    )
    .unwrap();
    json(&imbtrack(
        &data,
        &["--now", NOW, "ingest", feed_path.to_str().unwrap()],
    ));
    let query = |extra: &[&str]| {
        let mut args = vec!["--now", NOW];
        args.extend_from_slice(extra);
        args.extend(["query", "0027012345678912345612345678901"]);
        imbtrack(&data, &args)
    };
    // The shipped table: 918 sorts, 271 is not known.
    let shipped = json(&query(&[]));
    assert_eq!(shipped["status"], "SORTED_FOR_DELIVERY");
    assert_eq!(shipped["events"][0]["status"], "UNKNOWN");
    assert_eq!(shipped["events"][0]["scan_type"], "AA");

    let list = dir.path().join("opcodes.csv");
    std::fs::write(
        &list,
        "# version: PostalPro 2026-11\n\
         Sort Order,Machine Type,OPERATION CODE,Equipment Description,Stop the Clock Scan,Mail Level,Mail Phase,Process Description\n\
         1,DBCS,918,DBCS,Y,DPS 1st Pass,Phase 3c - Destination Sequenced Carrier Sortation,DPS first pass\n\
         2,DBCS,271,DBCS,N,Incoming Secondary,Phase 3a - Destination Secondary,Incoming secondary\n",
    )
    .unwrap();
    let own = json(&query(&["--op-codes", list.to_str().unwrap()]));
    assert_eq!(own["status"], "SORTED_FOR_DELIVERY");
    assert_eq!(own["events"][0]["status"], "DESTINATION_PROCESSED");
    assert_eq!(own["events"][0]["description"], "Incoming secondary");
    assert_eq!(own["events"][1]["stop_the_clock"], true);
    // 918 at 10:00 New York time... at a facility whose state the feed did not give: UTC,
    // 15:00, after 10:00: the next day.
    assert_eq!(own["expected_delivery"], "2025-01-16");

    std::fs::write(
        &list,
        "# version: x\nOperation Code,Mail Phase\n918,Phase 3c - Destination Sequenced Carrier Sortation\n271,Phase 7\n",
    )
    .unwrap();
    let refused = query(&["--op-codes", list.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("mail_opcodes line 4: mail phase \"Phase 7\" is not one of USPS's 16"),
        "{stderr}"
    );
}
