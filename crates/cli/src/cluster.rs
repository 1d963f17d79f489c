//! The Kafka half of `imbtrack serve` (cargo feature `kafka`): joining the consumer group and
//! answering for the partitions it assigns, with the other nodes as the server's peers.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::Engine;
use imbtrack_kafka::{Directory, Member, Node, NodeConfig, Owner};
use imbtrack_server::Peers;

/// `serve`'s Kafka options: all three or none.
#[derive(Args, Clone, Default)]
pub(crate) struct NodeArgs {
    /// Kafka bootstrap brokers: join the consumer group and ingest the assigned partitions.
    #[arg(long, requires_all = ["kafka_topic", "kafka_group"])]
    kafka_brokers: Option<String>,
    /// The scans topic.
    #[arg(long, requires = "kafka_brokers")]
    kafka_topic: Option<String>,
    /// The consumer group all nodes share.
    #[arg(long, requires = "kafka_brokers")]
    kafka_group: Option<String>,
    /// The HTTP base address other nodes reach this one at (default: http:// and the listening
    /// address).
    #[arg(long, requires = "kafka_brokers")]
    kafka_advertise: Option<String>,
}

/// Peers from the members topic: a piece's owner, or here.
struct KafkaPeers {
    directory: Directory,
    me: String,
    /// The partitions this node holds and has caught up on ([`Node::ready`]).
    here: Arc<Mutex<Vec<i32>>>,
    partition_count: i32,
}

impl KafkaPeers {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        self.here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Peers for KafkaPeers {
    fn owner_of(&self, key: BarcodeKey) -> Result<Option<String>, String> {
        match self
            .directory
            // Asked for every piece of a ZIP page: the held set is read in place, not copied.
            .owner(key, self.partition_count, &self.held())
        {
            Owner::Here => Ok(None),
            Owner::Node(base) if base == self.me => Ok(None),
            Owner::Node(base) => Ok(Some(base)),
            Owner::Unknown { partition } => Err(format!(
                "no node answers for partition {partition} right now (a rebalance, or a node \
                 replaying or down); try again"
            )),
        }
    }

    /// The other live members claiming a partition this node does not hold (a dead member's
    /// last entry claims only partitions its successors now hold, so it is not asked).
    fn others(&self) -> Result<Vec<String>, String> {
        let here = self.held().clone();
        let others: Vec<Member> = self
            .directory
            .members()
            .into_iter()
            .filter(|m| m.http != self.me && m.partitions.iter().any(|p| !here.contains(p)))
            .collect();
        let covered = |p: &i32| here.contains(p) || others.iter().any(|m| m.partitions.contains(p));
        if let Some(partition) = (0..self.partition_count).find(|p| !covered(p)) {
            return Err(format!(
                "no node answers for partition {partition} right now; the answer would be short"
            ));
        }
        Ok(others.into_iter().map(|m| m.http).collect())
    }
}

/// When the Kafka options are given: joins the group with a node on its own thread (stopped
/// when `stop` is set), and returns the peers to route lookups through. `listening` is this
/// server's own base address.
pub(crate) fn join(
    args: &NodeArgs,
    engine: &Arc<Engine>,
    stop: &Arc<AtomicBool>,
    listening: &str,
) -> anyhow::Result<Option<Arc<dyn Peers>>> {
    let (Some(brokers), Some(topic), Some(group)) =
        (&args.kafka_brokers, &args.kafka_topic, &args.kafka_group)
    else {
        return Ok(None);
    };
    let me = args
        .kafka_advertise
        .clone()
        .unwrap_or_else(|| listening.to_string());
    let mut config = NodeConfig::new(brokers, topic, group);
    config.advertise = Some(me.clone());
    let node = Node::join(engine.clone(), config)
        .with_context(|| format!("joining group {group} on {brokers}"))?;
    let directory = Directory::follow(brokers, topic)
        .with_context(|| format!("following {}", imbtrack_kafka::members_topic(topic)))?;
    eprintln!("imbtrack: ingesting topic {topic} from {brokers} as {me}, a member of {group}");
    let (here, partition_count) = (node.ready(), node.partition_count());
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("imbtrack-kafka".into())
        .spawn(move || node.run(&stop))
        .context("starting the Kafka node")?;
    Ok(Some(Arc::new(KafkaPeers {
        directory,
        me,
        here,
        partition_count,
    })))
}
