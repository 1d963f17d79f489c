//! Nodes against librdkafka's mock cluster (real Kafka protocol on localhost, in this process):
//! a generated feed is produced, two nodes with their own stores split its partitions, and
//! every piece is whole, once, on the node that owns its partition; a node stopped mid-ingest
//! resumes exactly where its store says; a node that joins takes partitions and replays them.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::time::days_from_civil;
use imbtrack_feed::{generate, parse_feed, FeedOptions, GenOptions, ParsedFeed, RejectList};
use imbtrack_kafka::{partition_for, source_name, Node, NodeConfig, ScanProducer};
use imbtrack_store::{Store, StoreOptions};
use rdkafka::mocking::MockCluster;

const TOPIC: &str = "scans";
const PARTITIONS: i32 = 4;

fn now_ms() -> i64 {
    (days_from_civil(2025, 1, 14)) * 86_400_000
}

/// A generated feed (3 days from 2025-01-10), parsed.
fn feed(pieces: u64) -> ParsedFeed {
    let mut options = GenOptions::new(pieces, days_from_civil(2025, 1, 10));
    (options.days, options.seed) = (3, 21);
    let mut bytes = Vec::new();
    generate(&options, &mut bytes, |_| {}).unwrap();
    parse_feed(
        "gen",
        &bytes,
        &FeedOptions::at(now_ms()),
        &mut RejectList::default(),
    )
    .unwrap()
}

/// The same scans appended straight into a store: what every owner must answer.
fn reference(dir: &Path, parsed: &ParsedFeed) -> Store {
    let (mut store, _) = Store::open(dir, StoreOptions::default()).unwrap();
    store.append(&parsed.events, &parsed.symbols).unwrap();
    store
}

/// Messages per partition.
fn per_partition(parsed: &ParsedFeed) -> BTreeMap<i32, i64> {
    let mut counts = BTreeMap::new();
    for event in &parsed.events {
        *counts
            .entry(partition_for(event.barcode, PARTITIONS))
            .or_default() += 1;
    }
    counts
}

fn produce(brokers: &str, parsed: &ParsedFeed) {
    let producer = ScanProducer::connect(brokers, TOPIC).unwrap();
    assert_eq!(producer.partitions(), PARTITIONS);
    producer.send(&parsed.events, &parsed.symbols).unwrap();
    let (delivered, failed) = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((delivered, failed), (parsed.events.len() as u64, 0));
}

struct Running {
    node: Arc<Node>,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(dir: &Path, brokers: &str, batch_max: usize) -> Running {
        let (engine, _) = Engine::open(dir, EngineOptions::at(now_ms())).unwrap();
        let engine = Arc::new(engine);
        let mut config = NodeConfig::new(brokers, TOPIC, "imbtrack-test");
        config.batch_max = batch_max;
        let node = Arc::new(Node::join(engine.clone(), config).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (node.clone(), stop.clone());
        let thread = std::thread::spawn(move || n.run(&s));
        Running {
            node,
            engine,
            stop,
            thread: Some(thread),
        }
    }

    /// Whether this node holds `partition` and has read all `count` of its messages.
    fn caught_up(&self, partition: i32, count: i64) -> bool {
        self.node.assigned().contains(&partition)
            && self
                .engine
                .read_store()
                .positions()
                .get(&source_name(TOPIC, partition))
                == Some(&count)
    }

    fn stop(mut self) -> (Arc<Engine>, imbtrack_kafka::NodeStats) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let stats = self.node.stats();
        drop(self.node);
        (self.engine, stats)
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every piece of the feed answered by the node owning its partition exactly as the reference.
fn check_owners(nodes: &[&Running], reference: &Store, parsed: &ParsedFeed) {
    let now = now_ms();
    let mut pieces: Vec<BarcodeKey> = parsed.events.iter().map(|e| e.barcode).collect();
    pieces.sort();
    pieces.dedup();
    for key in pieces {
        let partition = partition_for(key, PARTITIONS);
        let owners: Vec<&&Running> = nodes
            .iter()
            .filter(|n| n.node.assigned().contains(&partition))
            .collect();
        assert_eq!(owners.len(), 1, "partition {partition} must have one owner");
        let expected: Vec<(i64, String)> = reference
            .lookup(key, now)
            .iter()
            .map(|s| (s.time_ms, s.code.to_string()))
            .collect();
        let found: Vec<(i64, String)> = owners[0]
            .engine
            .read_store()
            .lookup(key, now)
            .iter()
            .map(|s| (s.time_ms, s.code.to_string()))
            .collect();
        assert_eq!(found, expected, "piece {key:?} on partition {partition}");
    }
}

#[test]
fn nodes_split_partitions_resume_from_their_stores_and_take_over_on_join() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let parsed = feed(1500);
    let reference = reference(&dir.path().join("reference"), &parsed);
    let counts = per_partition(&parsed);
    produce(&brokers, &parsed);

    // Node A alone, in small batches, stopped partway: it resumes from its store.
    let a_dir = dir.path().join("a");
    let first = {
        let (engine, _) = Engine::open(&a_dir, EngineOptions::at(now_ms())).unwrap();
        let mut config = NodeConfig::new(&brokers, TOPIC, "imbtrack-test");
        config.batch_max = 500;
        let node = Node::join(Arc::new(engine), config).unwrap();
        while node.stats().batches < 3 {
            node.step().unwrap();
        }
        node.stats()
    };
    assert!(
        first.messages < parsed.events.len() as u64,
        "stopped too late to test a resume"
    );
    let a = Running::start(&a_dir, &brokers, 500);
    wait_for("node A to read every partition", || {
        counts.iter().all(|(&p, &n)| a.caught_up(p, n))
    });
    let second = a.node.stats();
    // Exactly where it stopped: nothing read twice, nothing skipped.
    assert_eq!(first.messages + second.messages, parsed.events.len() as u64);
    check_owners(&[&a], &reference, &parsed);

    // Node B joins: the partitions split, B replays its share from the start into its own
    // store, and every piece is whole on its owner.
    let b = Running::start(&dir.path().join("b"), &brokers, 5_000);
    wait_for("the partitions to split and B to catch up", || {
        let (held_a, held_b) = (a.node.assigned(), b.node.assigned());
        !held_a.is_empty()
            && !held_b.is_empty()
            && held_a.len() + held_b.len() == PARTITIONS as usize
            && counts
                .iter()
                .all(|(&p, &n)| a.caught_up(p, n) || b.caught_up(p, n))
    });
    check_owners(&[&a, &b], &reference, &parsed);
    let (_, b_stats) = b.stop();
    assert!(b_stats.accepted > 0);

    // B leaves: A takes every partition back, already holding them.
    wait_for("A to hold every partition again", || {
        a.node.assigned().len() == PARTITIONS as usize
    });
    check_owners(&[&a], &reference, &parsed);
    a.stop();
}
