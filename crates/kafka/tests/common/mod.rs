//! What the mock-cluster tests share: a generated feed, a reference store, a running node.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::time::days_from_civil;
use imbtrack_feed::{generate, parse_feed, FeedOptions, GenOptions, ParsedFeed, RejectList};
use imbtrack_kafka::{partition_for, source_name, Node, NodeConfig, NodeStats, ScanProducer};
use imbtrack_store::{Store, StoreOptions};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A one-broker mock cluster with the scans topic, and its bootstrap address.
pub fn cluster() -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

pub const TOPIC: &str = "scans";
pub const PARTITIONS: i32 = 4;

pub fn now_ms() -> i64 {
    (days_from_civil(2025, 1, 14)) * 86_400_000
}

/// A generated feed (3 days from 2025-01-10), parsed.
pub fn feed(pieces: u64, seed: u64) -> ParsedFeed {
    let mut options = GenOptions::new(pieces, days_from_civil(2025, 1, 10));
    (options.days, options.seed) = (3, seed);
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
pub fn reference(dir: &Path, parsed: &ParsedFeed) -> Store {
    let (store, _) = Store::open(dir, StoreOptions::default()).unwrap();
    store.append(&parsed.events, &parsed.symbols).unwrap();
    store
}

/// Messages per partition.
pub fn per_partition(parsed: &ParsedFeed) -> BTreeMap<i32, i64> {
    let mut counts = BTreeMap::new();
    for event in &parsed.events {
        *counts
            .entry(partition_for(event.barcode, PARTITIONS))
            .or_default() += 1;
    }
    counts
}

/// Produces the feed one scan a frame, so that messages and scans count alike (the tests count
/// offsets); `frames_carry_thousands_of_scans` produces real-size frames.
pub fn produce(brokers: &str, parsed: &ParsedFeed) {
    let producer = ScanProducer::connect(brokers, TOPIC)
        .unwrap()
        .with_frame_scans(1);
    assert_eq!(producer.partitions(), PARTITIONS);
    producer.send(&parsed.events, &parsed.symbols).unwrap();
    let (delivered, failed) = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!((delivered, failed), (parsed.events.len() as u64, 0));
}

pub struct Running {
    pub node: Arc<Node>,
    pub engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(dir: &Path, brokers: &str, batch_max: usize) -> Running {
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
    pub fn caught_up(&self, partition: i32, count: i64) -> bool {
        self.node.assigned().contains(&partition)
            && self.engine.positions().get(&source_name(TOPIC, partition)) == Some(&count)
    }

    pub fn stop(mut self) -> (Arc<Engine>, NodeStats) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let stats = self.node.stats();
        drop(self.node);
        (self.engine, stats)
    }
}

pub fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every piece of the feed answered by the node owning its partition exactly as the reference.
pub fn check_owners(nodes: &[&Running], reference: &Store, parsed: &ParsedFeed) {
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
            .scans(key)
            .iter()
            .map(|s| (s.time_ms, s.code.to_string()))
            .collect();
        assert_eq!(found, expected, "piece {key:?} on partition {partition}");
    }
}
