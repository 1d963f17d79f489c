//! The `imbtrack` binary: argument parsing and output, with the work done by the library crates.
//!
//! Exit codes: 0 success, 1 some input failed (each failure is reported on its own output line),
//! 2 usage error.

mod barcode;
mod gen;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// imbtrack: ingest USPS tracking scans and answer status lookups.
///
/// Exit codes: 0 success; 1 some input failed (reported as {"error":…} on its line); 2 usage error.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
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
}

/// Whether every input succeeded.
pub(crate) enum Outcome {
    AllGood,
    SomeFailed,
}

fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Barcode(command) => barcode::run(command, out),
        Command::Gen(args) => gen::run(args, out).map(|()| Outcome::AllGood),
    }
}

fn main() -> ExitCode {
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
