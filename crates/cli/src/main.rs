//! The `imbtrack` binary: argument parsing and output, with the work done by the library crates.

mod audit;
mod barcode;
mod bench;
#[cfg(feature = "kafka")]
mod cluster;
mod data;
mod gen;
#[cfg(feature = "kafka")]
mod kafka;
mod server;
mod shared;
mod token;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Answers build many small strings (a piece's scans) on two threads; mimalloc's per-thread
/// free lists make that markedly cheaper than glibc's malloc (measured with wrk, see
/// benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// imbtrack: ingest USPS tracking scans and answer status lookups.
///
/// Output is JSON on stdout; progress and errors go to stderr.
///
/// Exit codes: 0 success; 1 some input failed (each reported as {"error":…} on its line);
/// 2 error (bad arguments, unreadable file, store failure); 3 not found (query).
#[derive(Parser)]
#[command(version, about, long_about)]
pub(crate) struct Cli {
    /// Data directory of the store.
    #[arg(
        long,
        global = true,
        env = "IMBTRACK_DATA",
        default_value = "./imbtrack-data"
    )]
    data: PathBuf,
    /// "Now" for retention and sealing (RFC 3339, e.g. 2026-11-29T12:00:00Z), for tests and
    /// replays; default: the system clock.
    #[arg(long, global = true)]
    now: Option<String>,
    /// The USPS Operation Code List (CSV with the list's own column names and a `# version:`
    /// first line) to read mail op codes by, instead of the shipped table.
    #[arg(long, global = true)]
    op_codes: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode, decode and parse barcodes.
    #[command(subcommand)]
    Barcode(barcode::BarcodeCommand),
    /// Write a realistic synthetic scan feed (mail and packages, late and duplicate scans,
    /// bad records on request) and print a JSON summary of what it holds.
    Gen(gen::GenArgs),
    /// Ingest feed files (or - for stdin) into the store and print a JSON summary.
    Ingest(data::IngestArgs),
    /// Status and scan history of one piece (any IMb form, 65 bars, IMpb), or with --zip and
    /// --date the pieces routed to a ZIP on a day, one JSON line each. Exit 3 when not found.
    Query(data::QueryArgs),
    /// A Mailer ID's raw scans of a day, as CSV (an IV-MTR delimited feed) or JSON lines.
    Export(data::ExportArgs),
    /// Remove buckets whose whole day is past its retention window.
    Expire,
    /// Merge each sealed day's late-scan buckets into one; with --upgrade, also rewrite
    /// buckets written in an older format. Print a JSON summary.
    Compact(data::CompactArgs),
    /// Buckets, scans, pieces, bytes and bytes per scan of the store.
    Stats,
    /// Generate a day of scans, ingest them, print sample lookups, then serve the page and API
    /// on 127.0.0.1:8080.
    Demo(data::DemoArgs),
    /// Serve the HTTP API and tracking page, ingesting pushes and the spool directory.
    Serve(Box<server::ServeArgs>),
    /// Parse feed files and publish every valid scan to Kafka, keyed and partitioned by piece
    /// (cargo feature `kafka`).
    #[cfg(feature = "kafka")]
    Produce(kafka::ProduceArgs),
    /// Make bearer tokens for the tokens file.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Work with the audit log: the keyed hash a barcode is recorded under.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// End-to-end benchmark against SQLite (and PostgreSQL when given), same data, one run.
    Bench(bench::BenchArgs),
}

/// Whether every input succeeded.
pub(crate) enum Outcome {
    AllGood,
    SomeFailed,
    NotFound,
}

fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let now_ms = shared::now_ms(cli.now.as_deref())?;
    if let Some(path) = &cli.op_codes {
        shared::load_op_codes(path)?;
    }
    // A fixed --now holds for the whole run; otherwise a server follows the system clock.
    let clock = if cli.now.is_some() {
        imbtrack_engine::Clock::Fixed(now_ms)
    } else {
        imbtrack_engine::Clock::System
    };
    match cli.command {
        Command::Barcode(command) => barcode::run(command, out),
        Command::Gen(args) => gen::run(args, out).map(|()| Outcome::AllGood),
        Command::Ingest(args) => data::ingest(&cli.data, now_ms, args, out),
        Command::Query(args) => data::query(&cli.data, now_ms, args, out),
        Command::Export(args) => data::export(&cli.data, now_ms, args, out),
        Command::Expire => data::expire(&cli.data, now_ms, out),
        Command::Compact(args) => data::compact(&cli.data, now_ms, &args, out),
        Command::Stats => data::stats(&cli.data, now_ms, out),
        Command::Demo(args) => data::demo(&cli.data, now_ms, clock, args, out),
        Command::Serve(args) => server::serve(&cli.data, clock, *args, |_| {}),
        Command::Token(command) => token::run(command, out),
        Command::Audit(command) => audit::run(&cli.data, command, out),
        #[cfg(feature = "kafka")]
        Command::Produce(args) => kafka::produce(&cli.data, now_ms, args, out),
        Command::Bench(args) => bench::run(now_ms, args, out),
    }
}

/// Everything imbtrack writes (store, WAL, checkpoint, rejects, audit log, spool's done/ and
/// failed/) holds personal data: readable by its owner only.
fn owner_only_files() {
    // SAFETY: umask(2) only sets the process's file-mode creation mask and cannot fail; it runs
    // first thing in main, before any thread that creates files exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(0o077);
    }
}

/// Transparent huge pages off for this process (unless `MIMALLOC_ALLOW_THP` is set, the
/// allocator's own switch): with THP on, as kernels ship it, every first touch of heap faults in
/// and zeroes 2 MiB, and the allocator's returns of memory split and refault them. Ingest of a
/// 10 M-line feed spent 2.4 s of system time so against 0.65 s without (benches/README.md).
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and only sets this process's
    // page policy; on failure THP simply stays as it was.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    owner_only_files();
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = run(cli, &mut out).and_then(|outcome| {
        out.flush()?;
        Ok(outcome)
    });
    match result {
        Ok(Outcome::AllGood) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(1),
        Ok(Outcome::NotFound) => ExitCode::from(3),
        // A reader that stopped early (`| head`) is not a failure.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imbtrack: {e:#}");
            ExitCode::from(2)
        }
    }
}
