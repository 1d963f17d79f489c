//! The spool directory: plants drop feed files there (written under a temp name, then renamed);
//! each is ingested, then moved to `done/` once durable, or to `failed/` with a reason file.
//!
//! Restarts neither lose nor double a file: a file stays in the spool until its scans are
//! durable, so a crash before the move ingests it again on the next start, and the store keeps
//! each scan once (the second pass counts them as duplicates).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imbtrack_engine::{Engine, EngineError, IngestSummary};
use imbtrack_feed::{RejectFile, RejectList};

/// Where finished files go, under the spool directory.
pub const DONE_DIR: &str = "done";
/// Where files that could not be read as feeds go, each with a `.reason` file.
pub const FAILED_DIR: &str = "failed";

/// What happened to one spooled file.
#[derive(Debug)]
pub enum SpoolOutcome {
    /// Ingested and moved to `done/`.
    Done {
        /// Its new path.
        path: PathBuf,
        /// What the ingest did.
        summary: IngestSummary,
    },
    /// Not a feed; moved to `failed/` beside a reason file.
    Failed {
        /// Its new path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store could not take it; left in the spool for the next pass.
    Retry {
        /// What went wrong.
        error: String,
    },
}

/// Whether a name is a file still being written: dot files and `.tmp`/`.part` suffixes.
fn is_in_progress(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

/// Files ready in the spool, oldest name first (plants name files by time).
pub fn ready_files(spool: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(spool)? {
        let entry = entry?;
        let name = entry.file_name();
        if !entry.file_type()?.is_file() || is_in_progress(&name.to_string_lossy()) {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// A path in `dir` named like `file`, with `.1`, `.2`… added if that name is taken.
fn free_name(dir: &Path, file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let mut candidate = dir.join(&name);
    let mut n = 0;
    while candidate.exists() {
        n += 1;
        candidate = dir.join(format!("{name}.{n}"));
    }
    candidate
}

fn move_into(file: &Path, dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let target = free_name(dir, file);
    fs::rename(file, &target)?;
    // The move must survive a crash, or the file would be ingested (harmlessly) again.
    fs::File::open(dir)?.sync_all()?;
    Ok(target)
}

/// Ingests one spooled file and moves it where it belongs.
pub fn process_file(engine: &Engine, spool: &Path, file: &Path) -> io::Result<SpoolOutcome> {
    let mut rejects = RejectList::default();
    let source = file.display().to_string();
    match engine.ingest_file(file, &mut rejects, &|_| {}) {
        Ok(summary) => {
            let done = spool.join(DONE_DIR);
            let path = move_into(file, &done)?;
            if !rejects.rejects.is_empty() {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".rejects.jsonl");
                let mut sink =
                    RejectFile::new(io::BufWriter::new(fs::File::create(done.join(name))?));
                rejects.replay(&source, &mut sink)?;
                io::Write::flush(&mut sink.into_inner())?;
            }
            Ok(SpoolOutcome::Done { path, summary })
        }
        Err(EngineError::Feed { error, .. }) => {
            let reason = error.to_string();
            let path = move_into(file, &spool.join(FAILED_DIR))?;
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".reason");
            fs::write(spool.join(FAILED_DIR).join(name), format!("{reason}\n"))?;
            Ok(SpoolOutcome::Failed { path, reason })
        }
        Err(e) => Ok(SpoolOutcome::Retry {
            error: e.to_string(),
        }),
    }
}

/// Ingests every ready file once, in name order; what happened to each.
pub fn drain(engine: &Engine, spool: &Path) -> io::Result<Vec<(PathBuf, SpoolOutcome)>> {
    let mut outcomes = Vec::new();
    for file in ready_files(spool)? {
        let outcome = process_file(engine, spool, &file)?;
        match &outcome {
            SpoolOutcome::Done { path, summary } => {
                tracing::info!(
                    "spool: {} -> {} ({} records, {} new, {} duplicates, {} rejected)",
                    file.display(),
                    path.display(),
                    summary.lines,
                    summary.accepted,
                    summary.duplicates,
                    summary.rejected
                );
                metrics::counter!("imbtrack_spool_files_total", "outcome" => "done").increment(1);
            }
            SpoolOutcome::Failed { path, reason } => {
                tracing::warn!("spool: {} -> {}: {reason}", file.display(), path.display());
                metrics::counter!("imbtrack_spool_files_total", "outcome" => "failed").increment(1);
            }
            SpoolOutcome::Retry { error } => {
                tracing::error!("spool: {} left for a retry: {error}", file.display());
                metrics::counter!("imbtrack_spool_files_total", "outcome" => "retry").increment(1);
            }
        }
        outcomes.push((file, outcome));
    }
    Ok(outcomes)
}

/// Watches `spool` until `stop` is set, draining it every `every` (polling: it works on every
/// filesystem, network mounts included, and a plant's files come minutes apart).
pub fn watch(engine: Arc<Engine>, spool: PathBuf, every: Duration, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = drain(&engine, &spool) {
            tracing::error!("spool {}: {e}", spool.display());
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbtrack_engine::EngineOptions;
    use imbtrack_feed::time::parse_timestamp;

    const FEED: &str = "imb|scanDatetime|scanEventCode|scanFacilityZip\n\
        0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110\n\
        not-a-barcode|2025-01-15T10:00:00-05:00|918|94110\n";

    #[test]
    fn files_move_to_done_or_failed_and_a_replay_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let now = parse_timestamp(b"2025-01-16T00:00:00Z", None).unwrap();
        let (engine, _) = Engine::open(&dir.path().join("data"), EngineOptions::at(now)).unwrap();
        fs::write(spool.join("a.psv"), FEED).unwrap();
        fs::write(spool.join("b.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
        fs::write(spool.join("c.psv.tmp"), FEED).unwrap();
        fs::write(spool.join(".d.psv"), FEED).unwrap();

        let outcomes = drain(&engine, &spool).unwrap();
        assert_eq!(outcomes.len(), 2);
        match &outcomes[0].1 {
            SpoolOutcome::Done { path, summary } => {
                assert_eq!(path, &spool.join("done/a.psv"));
                assert_eq!((summary.accepted, summary.rejected), (1, 1));
            }
            other => panic!("{other:?}"),
        }
        let rejects = fs::read_to_string(spool.join("done/a.psv.rejects.jsonl")).unwrap();
        assert!(rejects.contains("not-a-barcode"), "{rejects}");
        assert!(matches!(&outcomes[1].1, SpoolOutcome::Failed { .. }));
        let reason = fs::read_to_string(spool.join("failed/b.gz.reason")).unwrap();
        assert!(reason.contains("gzip"), "{reason}");
        assert!(spool.join("c.psv.tmp").exists() && spool.join(".d.psv").exists());

        // A crash between the ingest and the move leaves the file in the spool: it comes back,
        // and only as duplicates; the same name in done/ gets a suffix.
        fs::write(spool.join("a.psv"), FEED).unwrap();
        let outcomes = drain(&engine, &spool).unwrap();
        match &outcomes[0].1 {
            SpoolOutcome::Done { path, summary } => {
                assert_eq!(path, &spool.join("done/a.psv.1"));
                assert_eq!((summary.accepted, summary.duplicates), (0, 1));
            }
            other => panic!("{other:?}"),
        }
    }
}
