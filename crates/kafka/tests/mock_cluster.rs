//! Nodes against librdkafka's mock cluster (real Kafka protocol on localhost, in this process):
//! a generated feed is produced, two nodes with their own stores split its partitions, and
//! every piece is whole, once, on the node that owns its partition; a node stopped mid-ingest
//! resumes exactly where its store says; a node that joins takes partitions and replays them.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::sync::Arc;

use common::{
    check_owners, cluster, feed, now_ms, per_partition, produce, reference, wait_for, Running,
    PARTITIONS, TOPIC,
};
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_kafka::{Node, NodeConfig};

#[test]
fn nodes_split_partitions_resume_from_their_stores_and_take_over_on_join() {
    let (_cluster, brokers) = cluster();
    let dir = tempfile::tempdir().unwrap();
    let parsed = feed(1500, 21);
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

/// The mock broker keeps at most 100,000 messages a partition (librdkafka's mock log), as a real
/// one deletes past its retention: a node that comes late skips what is gone, says so, and
/// counts it; it never jumps to the newest message.
#[test]
fn messages_deleted_before_a_node_reads_them_are_counted_as_lost() {
    let (_cluster, brokers) = cluster();
    let dir = tempfile::tempdir().unwrap();
    let parsed = feed(100_000, 33);
    let counts = per_partition(&parsed);
    assert!(counts.values().any(|&n| n > 100_000), "{counts:?}");
    produce(&brokers, &parsed);
    let node = Running::start(&dir.path().join("late"), &brokers, 50_000);
    wait_for("the late node to reach every partition's end", || {
        counts.iter().all(|(&p, &n)| node.caught_up(p, n))
    });
    let (_, stats) = node.stop();
    assert!(stats.lost > 0, "{stats:?}");
    assert_eq!(
        stats.lost + stats.messages,
        parsed.events.len() as u64,
        "{stats:?}"
    );
}

/// Real-size frames: thousands of scans a message, all stored; a damaged frame in the middle of
/// a partition is counted and passed over, never stopping it.
#[test]
fn frames_carry_thousands_of_scans_and_a_damaged_one_stops_nothing() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    let (_cluster, brokers) = cluster();
    let dir = tempfile::tempdir().unwrap();
    let parsed = feed(4000, 33);
    let reference = reference(&dir.path().join("reference"), &parsed);
    let producer = imbtrack_kafka::ScanProducer::connect(&brokers, TOPIC).unwrap();
    // Half the feed, a damaged frame in partition 0, the other half.
    let half = parsed.events.len() / 2;
    producer
        .send(&parsed.events[..half], &parsed.symbols)
        .unwrap();
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut damaged = imbtrack_kafka::wire::encode_frame(&parsed.events[..10], &parsed.symbols);
    damaged[20] ^= 0xFF;
    raw.send(
        BaseRecord::<[u8], [u8]>::to(TOPIC)
            .payload(&damaged[..])
            .partition(0),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    raw.flush(std::time::Duration::from_secs(10)).unwrap();
    producer
        .send(&parsed.events[half..], &parsed.symbols)
        .unwrap();
    let (delivered, failed) = producer.flush(std::time::Duration::from_secs(30)).unwrap();
    assert_eq!((delivered, failed), (parsed.events.len() as u64, 0));

    let a = Running::start(&dir.path().join("a"), &brokers, 50_000);
    wait_for("every scan stored, the damaged frame passed over", || {
        a.engine.stats().scans == reference.stats().scans && a.node.stats().undecodable == 1
    });
    check_owners(&[&a], &reference, &parsed);
    let (engine, stats) = a.stop();
    assert_eq!(stats.undecodable, 1, "{stats:?}");
    // Recorded where rejects go, with where it is in Kafka.
    let recorded =
        std::fs::read_to_string(engine.rejects_dir().join(format!("kafka-{TOPIC}.jsonl"))).unwrap();
    let line: serde_json::Value = serde_json::from_str(recorded.trim()).unwrap();
    assert_eq!(line["partition"], 0);
    assert_eq!(line["source"], "kafka:scans/0");
    assert!(line["offset"].as_i64().is_some(), "{line}");
    assert!(
        line["reason"].as_str().unwrap().contains("checksum"),
        "{line}"
    );
    assert!(
        stats.messages < parsed.events.len() as u64 / 100,
        "{} messages for {} scans",
        stats.messages,
        parsed.events.len()
    );
}

#[test]
fn a_members_topic_that_cannot_be_made_stops_the_node_saying_how_to_make_it() {
    // librdkafka's mock cluster takes no CreateTopics request, as a broker that does not let
    // clients create topics: the node must not limp on without the topic.
    let (cluster, brokers) = cluster();
    let error = imbtrack_kafka::ensure_members_topic(&brokers, TOPIC)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"scans-members\" is missing")
            && error.contains(&imbtrack_kafka::members_topic_command(TOPIC)),
        "{error}"
    );
    // Made by the operator: nothing to do.
    cluster
        .create_topic(&imbtrack_kafka::members_topic(TOPIC), 1, 1)
        .unwrap();
    imbtrack_kafka::ensure_members_topic(&brokers, TOPIC).unwrap();
}
