//! A node whose store fails (a write error, injected) leaves the group, and the other node takes
//! its partitions and stores what it had not. Its own test binary: the fault plan is
//! process-wide.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use common::{
    check_owners, cluster, feed, per_partition, produce, reference, wait_for, Running, PARTITIONS,
};
use imbtrack_store::fault::{self, Fault, FaultOp};

#[test]
fn a_node_whose_store_fails_hands_its_partitions_over() {
    let (_cluster, brokers) = cluster();
    let dir = tempfile::tempdir().unwrap();
    let first = feed(400, 5);
    produce(&brokers, &first);
    let counts = per_partition(&first);

    let a = Running::start(&dir.path().join("a"), &brokers, 1000);
    let b = Running::start(&dir.path().join("b"), &brokers, 1000);
    wait_for("the partitions to split and both to catch up", || {
        !a.node.assigned().is_empty()
            && !b.node.assigned().is_empty()
            && counts
                .iter()
                .all(|(&p, &n)| a.caught_up(p, n) || b.caught_up(p, n))
    });

    // The next store write anywhere fails; more scans arrive.
    fault::arm(Fault {
        op: FaultOp::Write,
        after: 0,
        errno: 5,
        short_write: 0,
    });
    let second = feed(400, 6);
    produce(&brokers, &second);
    wait_for("the fault to fire", || {
        a.engine.failure().is_some() || b.engine.failure().is_some()
    });
    assert_eq!(fault::disarm(), 1);
    let (failed, healthy) = if a.engine.failure().is_some() {
        (a, b)
    } else {
        (b, a)
    };
    // The failed node left; the healthy one holds everything and has stored both feeds.
    let mut totals = per_partition(&first);
    for (partition, n) in per_partition(&second) {
        *totals.entry(partition).or_default() += n;
    }
    wait_for("the healthy node to take over and catch up", || {
        healthy.node.assigned().len() == PARTITIONS as usize
            && totals.iter().all(|(&p, &n)| healthy.caught_up(p, n))
    });
    assert!(failed.node.assigned().is_empty());
    let reference = reference(&dir.path().join("reference"), &first);
    check_owners(&[&healthy], &reference, &first);
    healthy.stop();
    failed.stop();
}
