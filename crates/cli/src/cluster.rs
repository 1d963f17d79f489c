//! The Kafka half of `imbtrack serve` (cargo feature `kafka`): joining the consumer group and
//! answering for the partitions it assigns, with the other nodes as the server's peers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::Engine;
use imbtrack_kafka::{Directory, Node, NodeConfig, Owner};
use imbtrack_server::ClusterKey;
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
    /// File holding the secret all nodes share (at least 32 bytes, e.g. `openssl rand -hex
    /// 32`): nodes sign their members entries and vouch for forwarded callers with it.
    #[arg(long, requires = "kafka_brokers")]
    cluster_secret: Option<PathBuf>,
    /// Standby copies kept of each partition: every node also follows the partitions of the N
    /// nodes before it (by address), so one that takes over a dead node's partition resumes
    /// near its end instead of replaying it. Costs N times more disk and ingest per node.
    #[arg(long, default_value_t = 0, requires = "kafka_brokers")]
    standby_replicas: usize,
}

/// Peers from the members topic: a piece's owner, or here.
struct KafkaPeers {
    directory: Arc<Directory>,
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

    /// The members answering for the partitions this node does not hold (a dead member's last
    /// entry stops counting once its partitions' new owners say they have them).
    fn others(&self) -> Result<Vec<String>, String> {
        let here = self.held().clone();
        let owners = self
            .directory
            .owners_besides(self.partition_count, &here)
            .map_err(|partition| {
                format!(
                    "no node answers for partition {partition} right now; the answer would be \
                     short"
                )
            })?;
        Ok(owners.into_iter().filter(|m| *m != self.me).collect())
    }
}

/// When the Kafka options are given: joins the group with a node on its own thread (stopped
/// when `stop` is set), and returns the peers to route lookups through with the cluster key
/// they vouch for callers with. `listening` is this server's own base address.
pub(crate) fn join(
    args: &NodeArgs,
    engine: &Arc<Engine>,
    stop: &Arc<AtomicBool>,
    listening: &str,
) -> anyhow::Result<Option<(Arc<dyn Peers>, ClusterKey)>> {
    let (Some(brokers), Some(topic), Some(group)) =
        (&args.kafka_brokers, &args.kafka_topic, &args.kafka_group)
    else {
        return Ok(None);
    };
    let Some(secret_file) = &args.cluster_secret else {
        anyhow::bail!(
            "a Kafka node needs --cluster-secret FILE (the secret all nodes share, at least 32 \
             bytes: `openssl rand -hex 32 > FILE`, then the same file on every node)"
        );
    };
    let key = ClusterKey::load(secret_file)?;
    let me = args
        .kafka_advertise
        .clone()
        .unwrap_or_else(|| listening.to_string());
    imbtrack_kafka::ensure_members_topic(brokers, topic)?;
    let mut config = NodeConfig::new(brokers, topic, group);
    config.advertise = Some(me.clone());
    config.secret = key.secret().to_vec();
    let directory = Arc::new(
        Directory::follow(brokers, topic, key.secret())
            .with_context(|| format!("following {}", imbtrack_kafka::members_topic(topic)))?,
    );
    let node = Node::join(engine.clone(), config)
        .and_then(|node| node.keep_standbys(directory.clone(), args.standby_replicas))
        .with_context(|| format!("joining group {group} on {brokers}"))?;
    eprintln!(
        "imbtrack: ingesting topic {topic} from {brokers} as {me}, a member of {group}, \
         {} standby copies a partition",
        args.standby_replicas
    );
    let (here, partition_count) = (node.ready(), node.partition_count());
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("imbtrack-kafka".into())
        .spawn(move || node.run(&stop))
        .context("starting the Kafka node")?;
    let peers: Arc<dyn Peers> = Arc::new(KafkaPeers {
        directory,
        me,
        here,
        partition_count,
    });
    Ok(Some((peers, key)))
}
