//! `imbtrack produce` (cargo feature `kafka`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use imbtrack_feed::{parse_feed_parallel, FeedOptions, ParseReport};
use imbtrack_kafka::ScanProducer;
use serde_json::json;

use crate::shared::{read_stdin, FeedArgs};
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
