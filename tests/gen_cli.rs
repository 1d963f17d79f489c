//! End-to-end: `imbtrack gen` writes the feed the generator means, and parsing it accounts for
//! every record: good + duplicate + rejected = records, each bad record rejected for its reason.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::collections::{HashMap, HashSet};
use std::process::Command;

use imbtrack_feed::time::{days_from_civil, parse_timestamp};
use imbtrack_feed::{generate, parse_feed, FeedOptions, GenOptions, LineKind, RejectList};
use serde_json::Value;

fn gen(args: &[&str]) -> (Vec<u8>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.psv");
    let output = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("gen")
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    (std::fs::read(&out).unwrap(), summary)
}

#[test]
fn every_line_is_accounted_for() {
    let (bytes, summary) = gen(&[
        "--pieces",
        "100000",
        "--bad-share",
        "0.01",
        "--start",
        "2025-01-10",
        "--days",
        "3",
        "--seed",
        "7",
    ]);
    let records = summary["records"].as_u64().unwrap();
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, records + 1, "one header line");

    // The same options in-process give the same bytes, and say what each record is.
    let mut options = GenOptions::new(100_000, days_from_civil(2025, 1, 10));
    (options.days, options.seed, options.bad_share) = (3, 7, 0.01);
    let mut same = Vec::new();
    let mut bad = HashMap::new();
    generate(&options, &mut same, |line| {
        if let LineKind::Bad(reason) = line.kind {
            bad.insert(line.line, reason);
        }
    })
    .unwrap();
    assert!(
        same == bytes,
        "the CLI and the library generate different feeds for the same options"
    );

    let now = parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap();
    let mut rejects = RejectList::default();
    let parsed = parse_feed("f.psv", &bytes, &FeedOptions::at(now), &mut rejects).unwrap();
    let distinct: HashSet<_> = parsed.events.iter().map(|e| e.identity()).collect();
    let (good, duplicates, rejected) = (
        distinct.len() as u64,
        parsed.events.len() as u64 - distinct.len() as u64,
        parsed.report.rejected,
    );
    assert_eq!(good + duplicates + rejected, lines - 1);
    assert_eq!(good, summary["scans"].as_u64().unwrap());
    assert_eq!(duplicates, summary["duplicates"].as_u64().unwrap());
    assert_eq!(rejected, summary["bad"].as_u64().unwrap());
    assert!(rejected > 4_000, "{rejected}");
    assert_eq!(bad.len() as u64, rejected);
    for (line, _, reason, _) in &rejects.rejects {
        assert_eq!(bad.get(line), Some(&reason.code()), "line {line}");
    }
    for (reason, count) in summary["bad_by_reason"].as_object().unwrap() {
        assert_eq!(
            parsed.report.rejects_by_reason[reason.as_str()],
            count.as_u64().unwrap(),
            "{reason}"
        );
    }
}

#[test]
fn json_output_and_bad_arguments() {
    let (bytes, summary) = gen(&[
        "--pieces",
        "50",
        "--format",
        "json",
        "--start",
        "2025-01-10",
    ]);
    assert!(bytes.starts_with(b"{\"msgGrpId\""));
    assert_eq!(summary["pieces"], 50);

    let output = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .args(["gen", "--pieces", "5", "--start", "2025-02-30"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an existing day"));
    let output = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .args(["gen", "--pieces", "5", "--bad-share", "2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("--bad-share must be between 0 and 1"));
}
