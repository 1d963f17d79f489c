//! `imbtrack bench`: one run, one feed, several systems side by side. imbtrack ingests the feed
//! file (parsing included) into a fresh store; SQLite gets the same scans already parsed and
//! bulk-inserts them in one transaction into a table with an index on the barcode (its time
//! therefore leaves parsing out, which flatters it). Both then answer the same point lookups.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::{
    generate, parse_feed_parallel, DiscardRejects, FeedOptions, GenOptions, ParsedFeed,
};
use imbtrack_store::{RetentionPolicy, DAY_MS};
use serde_json::{json, Value};

use crate::Outcome;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Pieces to generate (3-8 scans each), when no --feed is given.
    #[arg(long, default_value_t = 200_000)]
    pieces: u64,
    /// Days the generated scans spread over.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// A feed file to use instead of a generated one.
    #[arg(long)]
    feed: Option<PathBuf>,
    /// Point lookups per system.
    #[arg(long, default_value_t = 100_000)]
    lookups: usize,
    /// Working directory (kept afterwards); default a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PostgreSQL connection string (e.g. "host=127.0.0.1 user=postgres"); the bench creates and
    /// drops a table `imbtrack_bench_scans` there. Without it PostgreSQL is left out.
    #[arg(long)]
    postgres: Option<String>,
}

/// Latency percentiles in microseconds.
fn percentiles(mut nanos: Vec<u128>) -> (f64, f64) {
    nanos.sort_unstable();
    let at = |p: f64| {
        nanos
            .get(((nanos.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    (at(0.5), at(0.99))
}

fn time_lookups(
    keys: &[BarcodeKey],
    mut lookup: impl FnMut(BarcodeKey) -> anyhow::Result<usize>,
) -> anyhow::Result<(f64, f64)> {
    let mut nanos = Vec::with_capacity(keys.len());
    for &key in keys {
        let start = Instant::now();
        let found = lookup(key)?;
        nanos.push(start.elapsed().as_nanos());
        anyhow::ensure!(
            found > 0,
            "a lookup of a stored piece found nothing: the benchmark is measuring the wrong thing"
        );
    }
    Ok(percentiles(nanos))
}

fn sqlite(dir: &Path, parsed: &ParsedFeed, keys: &[BarcodeKey]) -> anyhow::Result<Value> {
    let path = dir.join("sqlite.db");
    let _ = std::fs::remove_file(&path);
    let mut db = rusqlite::Connection::open(&path)?;
    let started = Instant::now();
    db.execute_batch(
        "CREATE TABLE scans (barcode BLOB NOT NULL, time_ms INTEGER NOT NULL, code TEXT NOT NULL, facility_zip INTEGER NOT NULL,
                             routing INTEGER NOT NULL, class INTEGER NOT NULL, handling INTEGER NOT NULL, facility TEXT, machine TEXT);
         CREATE INDEX scans_barcode ON scans (barcode);",
    )?;
    let tx = db.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT INTO scans VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?;
        for e in &parsed.events {
            insert.execute(rusqlite::params![
                &e.barcode.as_u128().to_be_bytes()[..],
                e.time_ms,
                e.code.as_str(),
                e.facility_zip.to_bits() as i64,
                e.routing.to_bits() as i64,
                e.class as i64,
                e.handling as i64,
                parsed.symbols.get(e.facility),
                parsed.symbols.get(e.machine),
            ])?;
        }
    }
    tx.commit()?;
    let ingest_s = started.elapsed().as_secs_f64();
    let mut select = db.prepare(
        "SELECT time_ms, code, facility_zip, facility, machine FROM scans WHERE barcode = ?1",
    )?;
    let (median, p99) = time_lookups(keys, |key| {
        let rows = select.query_map([&key.as_u128().to_be_bytes()[..]], |row| {
            row.get::<_, i64>(0)
        })?;
        Ok(rows.count())
    })?;
    let rows = parsed.events.len() as f64;
    Ok(json!({
        "system": "sqlite",
        "rows": parsed.events.len(),
        "ingest_s": ingest_s,
        "rows_per_s": rows / ingest_s,
        "lookup_median_us": median,
        "lookup_p99_us": p99,
        "bytes_per_row": std::fs::metadata(&path)?.len() as f64 / rows,
        "note": "rows inserted already parsed; parse time not counted",
    }))
}

fn postgres(connection: &str, parsed: &ParsedFeed, keys: &[BarcodeKey]) -> anyhow::Result<Value> {
    let mut client = postgres::Client::connect(connection, postgres::NoTls)
        .context("connecting to PostgreSQL")?;
    client.batch_execute("DROP TABLE IF EXISTS imbtrack_bench_scans")?;
    let started = Instant::now();
    client.batch_execute(
        "CREATE TABLE imbtrack_bench_scans (barcode BYTEA NOT NULL, time_ms BIGINT NOT NULL, code TEXT NOT NULL,
                                            facility_zip BIGINT NOT NULL, routing BIGINT NOT NULL, class SMALLINT NOT NULL,
                                            handling SMALLINT NOT NULL, facility TEXT, machine TEXT);
         CREATE INDEX imbtrack_bench_scans_barcode ON imbtrack_bench_scans (barcode);",
    )?;
    {
        let mut copy = client.copy_in("COPY imbtrack_bench_scans FROM STDIN")?;
        let mut line = String::with_capacity(256);
        for e in &parsed.events {
            use std::fmt::Write as _;
            line.clear();
            // COPY text format: tabs between fields; facility names carry no tabs, newlines or
            // backslashes (the parser keeps them as given, and the generator writes none).
            let escape = |s: &str| {
                s.replace('\\', "\\\\")
                    .replace('\t', "\\t")
                    .replace('\n', "\\n")
            };
            let _ = writeln!(
                line,
                "\\\\x{:032x}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                e.barcode.as_u128(),
                e.time_ms,
                e.code.as_str(),
                e.facility_zip.to_bits(),
                e.routing.to_bits(),
                e.class as i16,
                e.handling as i16,
                escape(parsed.symbols.get(e.facility)),
                escape(parsed.symbols.get(e.machine)),
            );
            copy.write_all(line.as_bytes())?;
        }
        copy.finish()?;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let select = client.prepare("SELECT time_ms, code, facility_zip, facility, machine FROM imbtrack_bench_scans WHERE barcode = $1")?;
    let (median, p99) = time_lookups(keys, |key| {
        Ok(client
            .query(&select, &[&&key.as_u128().to_be_bytes()[..]])?
            .len())
    })?;
    let size: i64 = client
        .query_one("SELECT pg_total_relation_size('imbtrack_bench_scans')", &[])?
        .get(0);
    client.batch_execute("DROP TABLE imbtrack_bench_scans")?;
    let rows = parsed.events.len() as f64;
    Ok(json!({
        "system": "postgresql",
        "rows": parsed.events.len(),
        "ingest_s": ingest_s,
        "rows_per_s": rows / ingest_s,
        "lookup_median_us": median,
        "lookup_p99_us": p99,
        "bytes_per_row": size as f64 / rows,
        "note": "rows sent already parsed through COPY over a local socket; parse time not counted",
    }))
}

pub(crate) fn run(now_ms: i64, args: BenchArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    // The bench's clock: a day after the generated feed ends, so every day can be sealed.
    let start_day = now_ms.div_euclid(DAY_MS) - i64::from(args.days);
    let bench_now = (start_day + i64::from(args.days) + 1) * DAY_MS;
    let feed_path = match &args.feed {
        Some(path) => path.clone(),
        None => {
            let path = dir.join("bench-feed.psv");
            let mut options = GenOptions::new(args.pieces, start_day);
            options.days = args.days;
            options.until_ms = Some(bench_now);
            let file = BufWriter::new(
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            );
            let summary = generate(&options, file, |_| {})?;
            // Flush the feed to disk now, so its write-back does not compete with the fsyncs
            // of the systems being timed.
            File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
            eprintln!(
                "bench: generated {} records for {} pieces ({} bytes)",
                summary.records, summary.pieces, summary.bytes
            );
            path
        }
    };

    // imbtrack: file to queryable (durable in the WAL, served from the head), then sealed.
    let store_dir = dir.join("imbtrack-store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let mut options = EngineOptions::at(bench_now);
    options.store.retention = RetentionPolicy::with_override(400 * DAY_MS, 400 * DAY_MS)?;
    options.store.seal_grace_ms = 0;
    let (engine, _) = Engine::open(&store_dir, options)?;
    let started = Instant::now();
    let summary = engine.ingest_file(&feed_path, &mut DiscardRejects, &|_| {})?;
    let ingest_s = started.elapsed().as_secs_f64();
    let sealing = Instant::now();
    engine.seal()?;
    let seal_s = sealing.elapsed().as_secs_f64();
    let stats = engine.stats();

    // The same scans, parsed, for the peers and to pick lookup keys (not timed).
    let bytes = std::fs::read(&feed_path)?;
    let parsed = parse_feed_parallel(
        "bench",
        &bytes,
        &FeedOptions::at(bench_now),
        &mut DiscardRejects,
        rayon::current_num_threads(),
    )?;
    let mut rng = 0x5EED_u64;
    let keys: Vec<BarcodeKey> = (0..args.lookups.min(parsed.events.len() * 10))
        .map(|_| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            parsed.events[(rng >> 33) as usize % parsed.events.len()].barcode
        })
        .collect();
    anyhow::ensure!(!keys.is_empty(), "the feed has no valid scans to look up");
    let (median, p99) = time_lookups(&keys, |key| Ok(engine.scans(key).len()))?;
    let ours = json!({
        "system": "imbtrack",
        "rows": summary.lines,
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "ingest_s": ingest_s,
        "rows_per_s": summary.lines as f64 / ingest_s,
        "seal_s": seal_s,
        "lookup_median_us": median,
        "lookup_p99_us": p99,
        "bytes_per_row": stats.bytes_per_scan,
        "wal_bytes_left": stats.bytes - stats.sealed_bytes,
        "ratio_ingest": 1.0,
        "ratio_lookup": 1.0,
    });
    writeln!(out, "{ours}")?;
    let mut peers = vec![sqlite(&dir, &parsed, &keys)?];
    if let Some(connection) = &args.postgres {
        peers.push(postgres(connection, &parsed, &keys)?);
    }
    for mut peer in peers {
        // How many times faster imbtrack is: its rows/s over the peer's, the peer's lookup
        // median over its own.
        peer["ratio_ingest"] = json!(
            ours["rows_per_s"].as_f64().unwrap_or(0.0)
                / peer["rows_per_s"].as_f64().unwrap_or(f64::NAN)
        );
        peer["ratio_lookup"] =
            json!(peer["lookup_median_us"].as_f64().unwrap_or(0.0) / median.max(1e-9));
        writeln!(out, "{peer}")?;
    }
    Ok(Outcome::AllGood)
}
