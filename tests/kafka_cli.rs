//! End-to-end on Kafka (cargo feature `kafka`): librdkafka's mock cluster runs in this test
//! process and listens on 127.0.0.1; the real binary produces a generated feed to it, and two
//! `imbtrack serve` nodes with their own stores join one consumer group. Every piece must then be
//! served, whole, through either node (lookups of the other's pieces are forwarded); then one
//! node is killed with SIGKILL, and the other must serve every piece alone.
//!
//! `cargo test -p imbtrack --features kafka --test kafka_cli`

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{get, wait_for, Served, NOW};
use imbtrack_barcode::BarcodeKey;
use imbtrack_feed::time::{days_from_civil, parse_timestamp};
use imbtrack_feed::{generate, parse_feed, FeedOptions, GenOptions, RejectList};
use rdkafka::mocking::MockCluster;
use serde_json::Value;

#[test]
fn two_nodes_share_a_produced_feed() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("scans", 4, 1).unwrap();
    cluster.create_topic("scans-members", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();

    let feed_path = dir.path().join("feed.psv");
    let mut options = GenOptions::new(800, days_from_civil(2025, 1, 10));
    (options.days, options.seed, options.bad_share) = (3, 9, 0.01);
    let mut bytes = Vec::new();
    generate(&options, &mut bytes, |_| {}).unwrap();
    std::fs::write(&feed_path, &bytes).unwrap();
    let now = parse_timestamp(NOW.as_bytes(), None).unwrap();
    let parsed = parse_feed(
        "f",
        &bytes,
        &FeedOptions::at(now),
        &mut RejectList::default(),
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(dir.path().join("producer"))
        .args([
            "--now",
            NOW,
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            "scans",
        ])
        .arg(&feed_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["sent"].as_u64(), Some(parsed.events.len() as u64));
    assert_eq!(summary["delivered"], summary["sent"]);
    assert!(summary["rejected"].as_u64().unwrap() > 0, "{summary}");

    let node_args = [
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        "scans",
        "--kafka-group",
        "g",
    ];
    let a = Served::start(&dir.path().join("a"), &node_args);
    let b = Served::start(&dir.path().join("b"), &node_args);

    // Expected scans per piece (the feed's repeats count once).
    let mut expected: BTreeMap<BarcodeKey, std::collections::BTreeSet<(i64, String)>> =
        BTreeMap::new();
    for event in &parsed.events {
        expected
            .entry(event.barcode)
            .or_default()
            .insert((event.time_ms, event.code.to_string()));
    }
    let served = |node: &Served, key: BarcodeKey| -> std::collections::BTreeSet<(i64, String)> {
        let (status, body) = get(&node.url(&format!("/v1/pieces/{}", key.to_barcode())), None);
        if status != 200 {
            return Default::default();
        }
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    parse_timestamp(e["time"].as_str().unwrap().as_bytes(), None).unwrap(),
                    e["code"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    wait_for("every piece on a node", || {
        expected
            .iter()
            .step_by(7)
            .all(|(key, scans)| served(&a, *key) == *scans || served(&b, *key) == *scans)
    });
    // Through either node, every piece is whole: lookups of pieces the other node holds are
    // forwarded to it (once both have announced their partitions).
    wait_for("both nodes to route every sampled piece", || {
        expected
            .iter()
            .step_by(11)
            .all(|(key, scans)| served(&a, *key) == *scans && served(&b, *key) == *scans)
    });
    for (key, scans) in &expected {
        assert_eq!(served(&a, *key), *scans, "piece {key:?} through node a");
        assert_eq!(served(&b, *key), *scans, "piece {key:?} through node b");
    }
    // Both took part: each holds some pieces.
    let on_a = expected
        .keys()
        .filter(|k| !served(&a, **k).is_empty())
        .count();
    let on_b = expected
        .keys()
        .filter(|k| !served(&b, **k).is_empty())
        .count();
    assert!(on_a > 0 && on_b > 0, "a {on_a}, b {on_b}");
    let metrics = get(&a.url("/metrics"), None).1;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("imbtrack_kafka_messages_total"));

    // Node a dies without a word (SIGKILL): b takes its partitions once the group notices, and
    // answers for every piece itself, though a's last membership entry still claims them.
    let killed = std::time::Instant::now();
    drop(a);
    wait_for("b to answer every sampled piece alone", || {
        expected
            .iter()
            .step_by(5)
            .all(|(key, scans)| served(&b, *key) == *scans)
    });
    eprintln!(
        "b answered every sampled piece {:?} after a was killed",
        killed.elapsed()
    );
    for (key, scans) in &expected {
        assert_eq!(
            served(&b, *key),
            *scans,
            "piece {key:?} through node b alone"
        );
    }
}
