//! What several commands use: "now", opening the store, reading feeds from files or stdin
//! with their options and rejects file, progress bars and dates.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use imbtrack_engine::{Clock, Engine, EngineOptions};
use imbtrack_feed::time::parse_timestamp;
use imbtrack_feed::{Format, Reject, RejectFile, RejectSink};
use indicatif::{ProgressBar, ProgressStyle};

/// "Now": `--now` (RFC 3339) or the system clock, in ms since the epoch.
pub(crate) fn now_ms(now: Option<&str>) -> anyhow::Result<i64> {
    match now {
        Some(text) => parse_timestamp(text.as_bytes(), None).map_err(|e| {
            anyhow::anyhow!("--now {text:?} is not an RFC 3339 time with an offset ({e:?})")
        }),
        None => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)),
    }
}

pub(crate) fn open_engine(
    data: &Path,
    clock: Clock,
    feed_format: Option<Format>,
    default_offset: Option<i32>,
) -> anyhow::Result<Engine> {
    let mut options = EngineOptions::with_clock(clock);
    options.feed.format = feed_format;
    options.feed.default_offset_minutes = default_offset;
    if let Some(codes) = OP_CODES.get() {
        options.codes = codes.clone();
    }
    let (engine, report) = Engine::open(data, options)
        .with_context(|| format!("opening the store in {}", data.display()))?;
    for (path, why) in &report.quarantined {
        eprintln!(
            "imbtrack: quarantined corrupt bucket {} ({why})",
            path.display()
        );
    }
    if let Some(why) = &report.checkpoint_rejected {
        eprintln!("imbtrack: ignored the head checkpoint ({why}); replayed the whole WAL");
    }
    for repair in &report.wal_repairs {
        eprintln!(
            "imbtrack: cut {} torn bytes off {}",
            repair.dropped_bytes,
            repair.segment.display()
        );
    }
    Ok(engine)
}

/// The code tables `--op-codes` gave, loaded and checked once at start ([`load_op_codes`]);
/// every engine the run opens reads codes by them.
static OP_CODES: std::sync::OnceLock<imbtrack_feed::CodeTables> = std::sync::OnceLock::new();

/// Loads the mail op-code list of `--op-codes` (failing the run at start, naming the bad row,
/// when it is not a valid list) for every engine this run opens.
pub(crate) fn load_op_codes(path: &Path) -> anyhow::Result<()> {
    let codes = imbtrack_feed::CodeTables::with_mail_list(path)
        .with_context(|| format!("reading the op-code list {}", path.display()))?;
    eprintln!(
        "imbtrack: mail op codes from {} (version {}, {} codes)",
        path.display(),
        codes.mail_version,
        codes.len().0
    );
    let _ = OP_CODES.set(codes);
    Ok(())
}

/// All of standard input (a feed given as `-`).
pub(crate) fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    Ok(input)
}

/// How feed files are read: by `ingest` and by `produce`.
#[derive(Args)]
pub(crate) struct FeedArgs {
    /// Feed files, or - for stdin; gzip is detected.
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// Feed format (psv, csv, json, legacy); detected from the first bytes by default.
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// UTC offset for times that carry none (legacy records), e.g. -05:00; without it such
    /// records are rejected.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) default_offset: Option<String>,
    /// Rejects file (JSON lines); default <data>/rejects/<time>.jsonl, created on the first reject.
    #[arg(long)]
    pub(crate) rejects: Option<PathBuf>,
}

impl FeedArgs {
    /// The format and default offset asked for.
    pub(crate) fn parsing(&self) -> anyhow::Result<(Option<Format>, Option<i32>)> {
        let format = self
            .format
            .as_deref()
            .map(str::parse::<Format>)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?;
        let offset = self
            .default_offset
            .as_deref()
            .map(parse_offset)
            .transpose()?;
        Ok((format, offset))
    }

    /// Where this run's rejects go (the file is created on the first one).
    pub(crate) fn rejects(&self, data: &Path, now_ms: i64) -> LazyRejectFile {
        let path = self.rejects.clone().unwrap_or_else(|| {
            data.join(imbtrack_engine::REJECTS_DIR)
                .join(format!("{now_ms}-{}.jsonl", std::process::id()))
        });
        LazyRejectFile {
            path,
            file: None,
            count: 0,
            now_ms,
        }
    }
}

/// Parses `±HH:MM` into minutes east of UTC.
fn parse_offset(text: &str) -> anyhow::Result<i32> {
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => bail!("offset {text:?} must start with + or -"),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i32, i32) = (
        h.parse().context("offset hours")?,
        m.parse().context("offset minutes")?,
    );
    if h > 18 || m > 59 {
        bail!("offset {text:?} is out of range");
    }
    Ok(sign * (h * 60 + m))
}

/// A rejects file opened on the first reject, so clean ingests leave none behind.
pub(crate) struct LazyRejectFile {
    path: PathBuf,
    file: Option<RejectFile<io::BufWriter<File>>>,
    count: u64,
    /// "Now": the file is dated so, since its expiry goes by the same clock.
    now_ms: i64,
}

impl RejectSink for LazyRejectFile {
    fn reject(&mut self, source: &str, reject: &Reject<'_>) -> io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.file = Some(RejectFile::new(io::BufWriter::new(file)));
        }
        self.count += 1;
        self.file
            .as_mut()
            .map_or(Ok(()), |f| f.reject(source, reject))
    }
}

impl LazyRejectFile {
    pub(crate) fn finish(self) -> io::Result<Option<PathBuf>> {
        match self.file {
            Some(file) => {
                let mut file = file.into_inner();
                file.flush()?;
                imbtrack_engine::date_copy(file.get_ref(), self.now_ms)?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

pub(crate) fn progress_bar(total: u64) -> Option<ProgressBar> {
    io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    })
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub(crate) fn parse_date(text: &str) -> anyhow::Result<i64> {
    imbtrack_feed::time::parse_date(text)
        .with_context(|| format!("date {text:?} is not an existing day as YYYY-MM-DD"))
}
