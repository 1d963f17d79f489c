//! `imbtrack produce` and the Kafka half of `imbtrack serve` (cargo feature `kafka`).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::Engine;
use imbtrack_feed::{parse_feed_parallel, FeedOptions, ParseReport};
use imbtrack_kafka::{Directory, Node, NodeConfig, Owner, ScanProducer};
use imbtrack_server::Peers;
use serde_json::json;

use crate::data::{read_stdin, FeedArgs};
use crate::Outcome;

#[derive(Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    feed: FeedArgs,
    /// Kafka bootstrap brokers, host:port,…
    #[arg(long)]
    brokers: String,
    /// The scans topic (it must exist, with the deployment's partition count).
    #[arg(long)]
    topic: String,
}

/// Parses feed files and publishes every valid scan to its piece's partition.
pub(crate) fn produce(
    data: &Path,
    now_ms: i64,
    args: ProduceArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (format, offset) = args.feed.parsing()?;
    let mut options = FeedOptions::at(now_ms);
    options.format = format;
    options.default_offset_minutes = offset;
    let producer = ScanProducer::connect(&args.brokers, &args.topic)
        .with_context(|| format!("connecting to {}", args.brokers))?;
    let mut rejects = args.feed.rejects(data, now_ms);
    let mut report = ParseReport::default();
    for file in &args.feed.files {
        let bytes = if file.as_os_str() == "-" {
            read_stdin()?
        } else {
            std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
        };
        let name = file.display().to_string();
        let parsed = parse_feed_parallel(
            &name,
            &bytes,
            &options,
            &mut rejects,
            rayon::current_num_threads(),
        )
        .with_context(|| format!("parsing {name}"))?;
        producer.send(&parsed.events, &parsed.symbols)?;
        eprintln!(
            "produce: {name}: {} records, {} sent, {} rejected",
            parsed.report.records, parsed.report.accepted, parsed.report.rejected
        );
        report.merge(&parsed.report);
    }
    let (delivered, failed) = producer.flush(Duration::from_secs(300))?;
    let rejects_file = rejects.finish().context("writing the rejects file")?;
    let elapsed = started.elapsed().as_secs_f64();
    let summary = json!({
        "files": args.feed.files.len(),
        "records": report.records,
        "sent": report.accepted,
        "rejected": report.rejected,
        "rejects_by_reason": report.rejects_by_reason,
        "delivered": delivered,
        "failed": failed,
        "partitions": producer.partitions(),
        "elapsed_s": elapsed,
        "scans_per_s": if elapsed > 0.0 { report.accepted as f64 / elapsed } else { 0.0 },
        "rejects_file": rejects_file.map(|p| p.display().to_string()),
    });
    writeln!(out, "{summary}")?;
    Ok(if failed > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::AllGood
    })
}

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
}

impl Peers for KafkaPeers {
    fn owner_of(&self, key: BarcodeKey) -> Result<Option<String>, String> {
        match self.directory.owner(key) {
            Owner::Node(base) if base == self.me => Ok(None),
            Owner::Node(base) => Ok(Some(base)),
            Owner::Unknown { partition } => Err(format!(
                "no node answers for partition {partition} right now (a rebalance, or a node \
                 replaying or down); try again"
            )),
        }
    }

    fn others(&self) -> Result<Vec<String>, String> {
        let members = self.directory.members();
        let count = members.iter().map(|m| m.partition_count).max().unwrap_or(0);
        if let Some(partition) =
            (0..count).find(|p| !members.iter().any(|m| m.partitions.contains(p)))
        {
            return Err(format!(
                "no node answers for partition {partition} right now; the answer would be short"
            ));
        }
        Ok(members
            .into_iter()
            .filter(|m| m.http != self.me && !m.partitions.is_empty())
            .map(|m| m.http)
            .collect())
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
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("imbtrack-kafka".into())
        .spawn(move || node.run(&stop))
        .context("starting the Kafka node")?;
    Ok(Some(Arc::new(KafkaPeers { directory, me })))
}
