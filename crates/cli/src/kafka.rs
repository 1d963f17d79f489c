//! `imbtrack produce` and the Kafka half of `imbtrack serve` (cargo feature `kafka`).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use imbtrack_engine::Engine;
use imbtrack_feed::{parse_feed_parallel, FeedOptions, ParseReport};
use imbtrack_kafka::{Node, NodeConfig, ScanProducer};
use serde_json::json;

use crate::data::FeedArgs;
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
            let mut input = Vec::new();
            io::stdin()
                .lock()
                .read_to_end(&mut input)
                .context("reading stdin")?;
            input
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
}

/// Starts a node on its own thread when the Kafka options are given; it stops when `stop` is
/// set.
pub(crate) fn start_node(
    args: &NodeArgs,
    engine: &Arc<Engine>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (Some(brokers), Some(topic), Some(group)) =
        (&args.kafka_brokers, &args.kafka_topic, &args.kafka_group)
    else {
        return Ok(());
    };
    let node = Node::join(engine.clone(), NodeConfig::new(brokers, topic, group))
        .with_context(|| format!("joining group {group} on {brokers}"))?;
    eprintln!("imbtrack: ingesting topic {topic} from {brokers} as a member of {group}");
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("imbtrack-kafka".into())
        .spawn(move || node.run(&stop))
        .context("starting the Kafka node")?;
    Ok(())
}
