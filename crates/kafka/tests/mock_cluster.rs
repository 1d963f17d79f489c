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
