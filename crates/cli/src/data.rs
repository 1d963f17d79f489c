//! The commands over the store: ingest, query, expire, stats, demo.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use clap::Args;
use imbtrack_barcode::{format_mailer_id, Barcode};
use imbtrack_engine::{Clock, ExportFormat, IngestProgress, IngestSummary, PieceStatus};
use imbtrack_feed::time::DAY_MS;
use imbtrack_feed::{generate, GenFormat, GenOptions, Zip};
use serde_json::json;

use crate::shared::{open_engine, parse_date, progress_bar, read_stdin, FeedArgs};
use crate::Outcome;

#[derive(Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    feed: FeedArgs,
}

pub(crate) fn ingest(
    data: &Path,
    now_ms: i64,
    args: IngestArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let (format, offset) = args.feed.parsing()?;
    let engine = open_engine(data, Clock::Fixed(now_ms), format, offset)?;
    let mut rejects = args.feed.rejects(data, now_ms);
    let mut summary = IngestSummary::default();
    for file in &args.feed.files {
        let bar = progress_bar(if file.as_os_str() == "-" {
            0
        } else {
            fs::metadata(file).map_or(0, |m| m.len())
        });
        let progress = |p: IngestProgress| {
            if let Some(bar) = &bar {
                bar.set_length(p.bytes_total);
                bar.set_position(p.bytes_done);
                bar.set_message(format!("{} records, {} rejected", p.records, p.rejected));
            }
        };
        let one = if file.as_os_str() == "-" {
            engine.ingest("-", &read_stdin()?, &mut rejects, &progress)
        } else {
            engine.ingest_file(file, &mut rejects, &progress)
        }
        .with_context(|| format!("ingesting {}", file.display()))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        summary.merge(&one);
    }
    let sealed = engine.seal().context("sealing finished days")?;
    let checkpoint = engine
        .checkpoint(true)
        .context("writing the head checkpoint")?;
    let rejects_file = rejects.finish().context("writing the rejects file")?;
    let mut report = serde_json::to_value(&summary)?;
    report["sealed_buckets"] = json!(sealed.sealed_buckets);
    report["checkpoint_scans"] = json!(checkpoint.map_or(0, |c| c.scans));
    report["rejects_file"] = json!(rejects_file.map(|p| p.display().to_string()));
    writeln!(out, "{report}")?;
    Ok(Outcome::AllGood)
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The Mailer ID (6 digits, or 9 starting with 9).
    #[arg(long)]
    mailer: String,
    /// The day (YYYY-MM-DD, UTC).
    #[arg(long)]
    date: String,
    /// `csv` (a header row, the columns of an IV-MTR delimited feed) or `jsonl`.
    #[arg(long, default_value = "csv")]
    format: String,
}

/// Writes a Mailer ID's scans of a day to `out`, as `GET /v1/mailers/{mid}/scans` does.
pub(crate) fn export(
    data: &Path,
    now_ms: i64,
    args: ExportArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let mid = imbtrack_barcode::parse_mailer_id(&args.mailer).with_context(|| {
        format!(
            "--mailer {:?} is not a Mailer ID (6 digits, or 9 starting with 9)",
            args.mailer
        )
    })?;
    let day = parse_date(&args.date)?;
    let format = ExportFormat::parse(&args.format)
        .with_context(|| format!("--format {:?} is not csv or jsonl", args.format))?;
    let engine = open_engine(data, Clock::Fixed(now_ms), None, None)?;
    let pieces = engine.day_pieces_by_mailer(mid, day);
    let scans = engine.export_day(&pieces, day, format, out)?;
    eprintln!(
        "export: {scans} scans of {} pieces of Mailer ID {} on {}",
        pieces.len(),
        args.mailer,
        args.date
    );
    Ok(Outcome::AllGood)
}

#[derive(Args)]
pub(crate) struct QueryArgs {
    /// The barcode: IMb digits (20/25/29/31, or TRACKING-ROUTING), 65 bars, or IMpb.
    #[arg(required_unless_present = "zip", conflicts_with = "zip")]
    barcode: Option<String>,
    /// Routing ZIP of 5, 9 or 11 digits (with --date).
    #[arg(long, requires = "date")]
    zip: Option<String>,
    /// Day (YYYY-MM-DD, UTC) of the scans (with --zip).
    #[arg(long, requires = "zip")]
    date: Option<String>,
}

pub(crate) fn query(
    data: &Path,
    now_ms: i64,
    args: QueryArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let engine = open_engine(data, Clock::Fixed(now_ms), None, None)?;
    if let (Some(zip), Some(date)) = (&args.zip, &args.date) {
        let zip = Zip::parse(zip.as_bytes())
            .with_context(|| format!("--zip {zip:?} is not a 5, 9 or 11-digit ZIP"))?;
        for piece in engine.pieces_by_zip(zip, parse_date(date)?) {
            writeln!(out, "{}", serde_json::to_string(&piece)?)?;
        }
        return Ok(Outcome::AllGood);
    }
    let text = args.barcode.unwrap_or_default();
    let barcode =
        Barcode::parse(&text).map_err(|e| anyhow::anyhow!("{text:?} is not a barcode: {e}"))?;
    match engine.piece(&barcode) {
        Some(piece) => {
            writeln!(out, "{}", serde_json::to_string(&piece)?)?;
            Ok(Outcome::AllGood)
        }
        None => {
            let error = json!({"error": {"code": "not_found", "message": format!("no scans of {barcode} within the retention window")}});
            writeln!(out, "{error}")?;
            Ok(Outcome::NotFound)
        }
    }
}

pub(crate) fn expire(data: &Path, now_ms: i64, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let engine = open_engine(data, Clock::Fixed(now_ms), None, None)?;
    let report = engine.expire().context("expiring buckets")?;
    // Rejects files hold raw records: gone once everything they could hold has expired.
    let rejects = engine
        .expire_copies(&engine.rejects_dir(), engine.longest_window_ms())
        .context("expiring rejects files")?;
    let mut report = serde_json::to_value(&report)?;
    report["rejects_files_removed"] = json!(rejects);
    writeln!(out, "{report}")?;
    Ok(Outcome::AllGood)
}

#[derive(Args)]
pub(crate) struct CompactArgs {
    /// Also rewrite every day that has a bucket in an older format (v1) in the current one.
    #[arg(long)]
    upgrade: bool,
}

pub(crate) fn compact(
    data: &Path,
    now_ms: i64,
    args: &CompactArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let engine = open_engine(data, Clock::Fixed(now_ms), None, None)?;
    let report = engine.compact(args.upgrade).context("compacting buckets")?;
    writeln!(out, "{}", serde_json::to_string(&report)?)?;
    Ok(Outcome::AllGood)
}

pub(crate) fn stats(data: &Path, now_ms: i64, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let engine = open_engine(data, Clock::Fixed(now_ms), None, None)?;
    let stats = engine.stats();
    writeln!(out, "{}", serde_json::to_string(&stats)?)?;
    Ok(Outcome::AllGood)
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Pieces in the demo feed.
    #[arg(long, default_value_t = 20_000)]
    pieces: u64,
    /// Address to serve the page and API on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
}

/// Generates yesterday's and today's scans, ingests them, prints sample pieces, then serves.
pub(crate) fn demo(
    data: &Path,
    now_ms: i64,
    clock: Clock,
    args: DemoArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let feed_path = data.join("demo").join("feed.psv");
    fs::create_dir_all(feed_path.parent().unwrap_or(data))
        .with_context(|| format!("creating {}", data.display()))?;
    // Yesterday's and today's scans, so some days seal and some stay open.
    let mut options = GenOptions::new(args.pieces, now_ms.div_euclid(DAY_MS) - 1);
    options.days = 1;
    options.bad_share = 0.002;
    options.format = GenFormat::Psv;
    options.until_ms = Some(now_ms);
    let mut samples = Vec::new();
    let file =
        File::create(&feed_path).with_context(|| format!("creating {}", feed_path.display()))?;
    let generated = generate(&options, io::BufWriter::new(file), |line| {
        if samples.len() < 3 && line.line % 997 == 0 && line.time_ms <= now_ms {
            samples.push(line.barcode);
        }
    })?;
    eprintln!(
        "demo: wrote {} records for {} pieces to {}",
        generated.records,
        generated.pieces,
        feed_path.display()
    );
    ingest(
        data,
        now_ms,
        IngestArgs {
            feed: FeedArgs {
                files: vec![feed_path],
                format: None,
                default_offset: None,
                rejects: None,
            },
        },
        out,
    )?;
    let engine = open_engine(data, Clock::Fixed(now_ms), None, None)?;
    let mut shown = Vec::new();
    for key in samples {
        if let Some(piece) = engine.piece(&key.to_barcode()) {
            writeln!(out, "{}", serde_json::to_string(&piece)?)?;
            shown.push(piece);
        }
    }
    drop(engine);
    out.flush()?;
    let day = imbtrack_store::day_name(now_ms.div_euclid(DAY_MS) - 1);
    crate::server::serve(
        data,
        clock,
        crate::server::ServeArgs::on(args.listen),
        |base| {
            eprintln!("demo: open {base}/ and enter a barcode, or try:");
            let barcode = |piece: &PieceStatus| piece.barcode.to_barcode().to_string();
            for piece in shown.iter().take(2) {
                eprintln!("demo:   curl -s {base}/v1/pieces/{}", barcode(piece));
            }
            if let Some(zip) = shown.iter().find_map(|p| p.routing.prefix(5)) {
                eprintln!("demo:   curl -s '{base}/v1/zips/{zip}/pieces?date={day}&limit=5'");
            }
            if let Some(piece) = shown.first() {
                // From the key: a Mailer ID is 6 digits or, from a leading 9, 9.
                if let Some(mid) = piece.barcode.mailer_id().map(format_mailer_id) {
                    eprintln!("demo:   curl -s '{base}/v1/mailers/{mid}/summary?date={day}'");
                }
                eprintln!("demo:   {base}/?barcode={}", barcode(piece));
            }
            eprintln!("demo:   curl -s {base}/metrics");
            eprintln!("demo: Ctrl-C stops the server.");
        },
    )
}
