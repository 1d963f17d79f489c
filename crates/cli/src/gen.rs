//! `imbtrack gen`: a realistic synthetic feed, deterministic for a seed and start date.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use imbtrack_feed::time::DAY_MS;
use imbtrack_feed::{generate, GenFormat, GenOptions};

use crate::shared::parse_date;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    Psv,
    Json,
}

#[derive(Args)]
pub(crate) struct GenArgs {
    /// Pieces to generate; each gets 3-8 scans.
    #[arg(long)]
    pieces: u64,
    /// Days the pieces' first scans spread over.
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// First day (YYYY-MM-DD, UTC); default: today minus --days plus one, so the feed ends today.
    /// Give it to make the output reproducible across days.
    #[arg(long)]
    start: Option<String>,
    /// Leave out scans at or after this time (RFC 3339): the feed as it stands then. Default: now
    /// when --start is not given (no scans from the future), none otherwise.
    #[arg(long)]
    until: Option<String>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of pieces that are packages (0-1).
    #[arg(long, default_value_t = 0.2)]
    package_share: f64,
    /// Share of extra bad records (0-1), cycling through the reject reasons.
    #[arg(long, default_value_t = 0.0)]
    bad_share: f64,
    /// Share of scans repeated later in the feed (0-1).
    #[arg(long, default_value_t = 0.02)]
    duplicate_share: f64,
    /// Share of scans written late, after later pieces (0-1).
    #[arg(long, default_value_t = 0.03)]
    late_share: f64,
    /// Output format.
    #[arg(long, value_enum, default_value = "psv")]
    format: FormatArg,
    /// Output file; without it the feed goes to stdout and the summary to stderr.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: GenArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    for (name, share) in [
        ("--package-share", args.package_share),
        ("--bad-share", args.bad_share),
        ("--duplicate-share", args.duplicate_share),
        ("--late-share", args.late_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("{name} must be between 0 and 1, got {share}");
        }
    }
    let days = args.days.max(1);
    let (start_day, default_until) = match &args.start {
        Some(date) => (parse_date(date)?, None),
        None => {
            let now = crate::shared::now_ms(None)?;
            (now.div_euclid(DAY_MS) - i64::from(days) + 1, Some(now))
        }
    };
    let until_ms = match &args.until {
        Some(text) => Some(crate::shared::now_ms(Some(text)).context("--until")?),
        None => default_until,
    };
    let options = GenOptions {
        pieces: args.pieces,
        days,
        start_day,
        seed: args.seed,
        package_share: args.package_share,
        bad_share: args.bad_share,
        duplicate_share: args.duplicate_share,
        late_share: args.late_share,
        format: match args.format {
            FormatArg::Psv => GenFormat::Psv,
            FormatArg::Json => GenFormat::Json,
        },
        until_ms,
    };
    let started = std::time::Instant::now();
    let summary = match &args.out {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            generate(&options, file, |_| {})
                .with_context(|| format!("writing {}", path.display()))?
        }
        None => generate(&options, io::stdout().lock(), |_| {})?,
    };
    let mut report = serde_json::to_value(&summary)?;
    report["elapsed_s"] = serde_json::json!(started.elapsed().as_secs_f64());
    if let Some(path) = &args.out {
        report["out"] = serde_json::json!(path.display().to_string());
        writeln!(out, "{report}")?;
    } else {
        eprintln!("{report}");
    }
    Ok(())
}
