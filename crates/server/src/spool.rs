//! The spool directory: plants drop feed files there (written under a temp name, then renamed);
//! each is ingested, then moved to `done/` once durable, or to `failed/` with a reason file.
//!
//! Restarts neither lose nor double a file: a file stays in the spool until its scans are
//! durable, so a crash before the move ingests it again on the next start, and the store keeps
//! each scan once (the second pass counts them as duplicates).
//!
//! The spool is written by other processes, so nothing in it is trusted:
//! - a file is taken only when two passes in a row saw it with the same size and modification
//!   time, so one still being written under its final name waits (temp names — dot files,
//!   `.tmp`, `.part` — are never taken);
//! - it is opened without following symbolic links (`O_NOFOLLOW`) and must be, once open, the
//!   regular file that was listed (same device, inode, size and modification time) with no
//!   other name (a hard link to a file elsewhere is not a feed), so a name swapped for a link
//!   or another file between listing and opening is left alone;
//! - it is read into memory before parsing, never mapped, so a writer that truncates it
//!   meanwhile cannot fault the server;
//! - one file's trouble (unreadable, swapped, a `done` that is not a directory) is logged and
//!   counted, and the pass goes on with the others.
//!
//! Files in `done/` and `failed/` are raw feed data, so they are kept no longer than the scans:
//! a moved file's modification time is set to the ingest ("now"), and files older than the
//! keep period (by default the longest retention window) are deleted; with a keep period of
//! zero, nothing is kept at all.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// The store could not take it, or the file could not be read or moved; left in the spool
    /// for the next pass.
    Retry {
        /// What went wrong.
        error: String,
    },
    /// The name no longer leads to the file that was listed (replaced by a link or another
    /// file); left where it is, never read.
    Replaced,
    /// Its scans are durable but it could not be moved to `done/`; later passes retry the move
    /// only, never the ingest, while the file stays as it is.
    NotMoved {
        /// What went wrong.
        error: String,
    },
    /// A file ingested on an earlier pass, moved to `done/` now.
    Moved {
        /// Its new path.
        path: PathBuf,
    },
}

/// Whether a name is a file still being written: dot files and `.tmp`/`.part` suffixes.
fn is_in_progress(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part")
}

/// A regular file as a pass listed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    dev: u64,
    ino: u64,
    len: u64,
    modified_ns: i128,
}

impl Listed {
    fn of(meta: &fs::Metadata) -> Listed {
        Listed {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// What the previous pass saw, so a file is taken only once it has stopped changing, and the
/// files already ingested that could not be moved (so they are not ingested again).
#[derive(Debug, Default)]
pub struct SpoolState {
    seen: HashMap<PathBuf, Listed>,
    not_moved: HashMap<PathBuf, Listed>,
}

impl SpoolState {
    /// Regular files in the spool, oldest name first (plants name files by time), that the
    /// previous pass saw exactly as they are now; remembers what it saw for the next pass.
    pub fn ready_files(&mut self, spool: &Path) -> io::Result<Vec<(PathBuf, Listed)>> {
        let mut now = HashMap::new();
        for entry in fs::read_dir(spool)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_in_progress(&name) || name == DONE_DIR || name == FAILED_DIR {
                continue;
            }
            // `symlink_metadata` does not follow links: a link is not a regular file.
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_file() {
                now.insert(entry.path(), Listed::of(&meta));
            }
        }
        let mut ready: Vec<(PathBuf, Listed)> = now
            .iter()
            .filter(|(path, listed)| self.seen.get(*path) == Some(listed))
            .map(|(path, listed)| (path.clone(), *listed))
            .collect();
        ready.sort_by(|a, b| a.0.cmp(&b.0));
        self.seen = now;
        Ok(ready)
    }
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
    while candidate.symlink_metadata().is_ok() {
        n += 1;
        candidate = dir.join(format!("{name}.{n}"));
    }
    candidate
}

/// How long finished files are kept in `done/` and `failed/`.
#[derive(Debug, Clone, Copy)]
pub struct KeepDone {
    /// Milliseconds after their ingest; 0 keeps nothing.
    pub ms: i64,
}

/// Moves `file` into `dir`, dated as of `now_ms` (what [`Engine::expire_copies`] goes by).
fn move_into(file: &Path, dir: &Path, now_ms: i64) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let target = free_name(dir, file);
    fs::rename(file, &target)?;
    // The move must survive a crash, or the file would be ingested (harmlessly) again.
    fs::File::open(dir)?.sync_all()?;
    date(&target, now_ms)?;
    Ok(target)
}

/// Sets `path`'s modification time to `now_ms`: finished files and their rejects and reasons
/// are dated by the engine's clock, which their expiry goes by.
fn date(path: &Path, now_ms: i64) -> io::Result<()> {
    imbtrack_engine::date_copy(&fs::File::options().write(true).open(path)?, now_ms)
}

/// The listed file's bytes: `None` if the name now leads elsewhere (a link, another file).
fn read_listed(file: &Path, listed: Listed) -> io::Result<Option<Vec<u8>>> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file);
    let mut opened = match opened {
        Ok(opened) => opened,
        // ELOOP: the name is a symbolic link now.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = opened.metadata()?;
    // Same inode, size and modification time as listed (an inode number alone can be reused
    // by a file put in the removed one's place), and no other name: a hard link to a file
    // outside the spool is not a feed.
    if !meta.is_file() || Listed::of(&meta) != listed || meta.nlink() != 1 {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    opened.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Ingests one spooled file (as listed) and moves it where it belongs (or, keeping nothing,
/// deletes it once its scans are durable).
pub fn process_file(
    engine: &Engine,
    spool: &Path,
    file: &Path,
    listed: Listed,
    keep: KeepDone,
) -> io::Result<SpoolOutcome> {
    let Some(bytes) = read_listed(file, listed)? else {
        return Ok(SpoolOutcome::Replaced);
    };
    let mut rejects = RejectList::default();
    let source = file.display().to_string();
    match engine.ingest(&source, &bytes, &mut rejects, &|_| {}) {
        Ok(summary) => {
            let done = spool.join(DONE_DIR);
            let path = match move_into(file, &done, engine.now_ms()) {
                Ok(path) => path,
                Err(e) => {
                    return Ok(SpoolOutcome::NotMoved {
                        error: e.to_string(),
                    })
                }
            };
            if keep.ms == 0 {
                fs::remove_file(&path)?;
            } else if !rejects.rejects.is_empty() {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".rejects.jsonl");
                let mut sink =
                    RejectFile::new(io::BufWriter::new(fs::File::create(done.join(&name))?));
                rejects.replay(&source, &mut sink)?;
                io::Write::flush(&mut sink.into_inner())?;
                date(&done.join(&name), engine.now_ms())?;
            }
            Ok(SpoolOutcome::Done { path, summary })
        }
        Err(EngineError::Feed { error, .. }) => {
            let reason = error.to_string();
            let path = move_into(file, &spool.join(FAILED_DIR), engine.now_ms())?;
            if keep.ms == 0 {
                fs::remove_file(&path)?;
            } else {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".reason");
                let reason_path = spool.join(FAILED_DIR).join(name);
                fs::write(&reason_path, format!("{reason}\n"))?;
                date(&reason_path, engine.now_ms())?;
            }
            Ok(SpoolOutcome::Failed { path, reason })
        }
        Err(e) => Ok(SpoolOutcome::Retry {
            error: e.to_string(),
        }),
    }
}

/// Ingests every ready file once, in name order; what happened to each. A file whose handling
/// fails is a [`SpoolOutcome::Retry`]; the others still go.
pub fn drain(
    engine: &Engine,
    spool: &Path,
    state: &mut SpoolState,
    keep: KeepDone,
) -> io::Result<Vec<(PathBuf, SpoolOutcome)>> {
    let mut outcomes = Vec::new();
    let ready = state.ready_files(spool)?;
    state
        .not_moved
        .retain(|file, _| ready.iter().any(|(f, _)| f == file));
    for (file, listed) in ready {
        let outcome = if state.not_moved.get(&file) == Some(&listed) {
            // Already durable: only the move is tried again.
            match move_into(&file, &spool.join(DONE_DIR), engine.now_ms()) {
                Ok(path) => SpoolOutcome::Moved { path },
                Err(e) => SpoolOutcome::NotMoved {
                    error: e.to_string(),
                },
            }
        } else {
            process_file(engine, spool, &file, listed, keep).unwrap_or_else(|e| {
                SpoolOutcome::Retry {
                    error: e.to_string(),
                }
            })
        };
        match &outcome {
            SpoolOutcome::NotMoved { .. } => {
                state.not_moved.insert(file.clone(), listed);
            }
            _ => {
                state.not_moved.remove(&file);
            }
        }
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
            SpoolOutcome::NotMoved { error } => {
                tracing::error!(
                    "spool: {} is stored but stays in the spool (moving it to done/: {error}); \
                     only the move is retried",
                    file.display()
                );
                metrics::counter!("imbtrack_spool_files_total", "outcome" => "not_moved")
                    .increment(1);
            }
            SpoolOutcome::Moved { path } => {
                tracing::info!(
                    "spool: {} -> {} (moved late)",
                    file.display(),
                    path.display()
                );
                metrics::counter!("imbtrack_spool_files_total", "outcome" => "done").increment(1);
            }
            SpoolOutcome::Replaced => {
                tracing::warn!(
                    "spool: {} changed between listing and opening (a link or another file now); left alone",
                    file.display()
                );
                metrics::counter!("imbtrack_spool_files_total", "outcome" => "replaced")
                    .increment(1);
            }
        }
        outcomes.push((file, outcome));
    }
    Ok(outcomes)
}

/// Deletes the files in `done/` and `failed/` kept longer than `keep`; how many went.
pub fn expire_finished(engine: &Engine, spool: &Path, keep: KeepDone) -> io::Result<u64> {
    let done = engine.expire_copies(&spool.join(DONE_DIR), keep.ms)?;
    Ok(done + engine.expire_copies(&spool.join(FAILED_DIR), keep.ms)?)
}

/// How often finished files are looked at for expiry.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Watches `spool` until `stop` is set, draining it every `every` (polling: it works on every
/// filesystem, network mounts included, and a plant's files come minutes apart). A file is
/// taken on the pass after the one that first saw it unchanged, so within two intervals.
/// Finished files past `keep` are deleted at the first pass and every minute after.
pub fn watch(
    engine: Arc<Engine>,
    spool: PathBuf,
    every: Duration,
    keep: KeepDone,
    stop: Arc<AtomicBool>,
) {
    let mut state = SpoolState::default();
    let mut expired_at: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = drain(&engine, &spool, &mut state, keep) {
            tracing::error!("spool {}: {e}", spool.display());
        }
        if expired_at.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            match expire_finished(&engine, &spool, keep) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("spool: deleted {n} finished files past their keep period");
                    metrics::counter!("imbtrack_spool_expired_files_total").increment(n);
                }
                Err(e) => {
                    tracing::error!("spool {}: expiring finished files: {e}", spool.display())
                }
            }
            expired_at = Some(std::time::Instant::now());
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

    const KEEP: KeepDone = KeepDone {
        ms: 90 * 86_400_000,
    };

    fn engine(dir: &Path) -> Engine {
        let now = parse_timestamp(b"2025-01-16T00:00:00Z", None).unwrap();
        Engine::open(&dir.join("data"), EngineOptions::at(now))
            .unwrap()
            .0
    }

    #[test]
    fn files_move_to_done_or_failed_and_a_replay_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let engine = engine(dir.path());
        let mut state = SpoolState::default();
        fs::write(spool.join("a.psv"), FEED).unwrap();
        fs::write(spool.join("b.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
        fs::write(spool.join("c.psv.tmp"), FEED).unwrap();
        fs::write(spool.join(".d.psv"), FEED).unwrap();

        // The first pass only notes the files; the second, finding them unchanged, takes them.
        assert!(drain(&engine, &spool, &mut state, KEEP).unwrap().is_empty());
        let outcomes = drain(&engine, &spool, &mut state, KEEP).unwrap();
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
        drain(&engine, &spool, &mut state, KEEP).unwrap();
        let outcomes = drain(&engine, &spool, &mut state, KEEP).unwrap();
        match &outcomes[0].1 {
            SpoolOutcome::Done { path, summary } => {
                assert_eq!(path, &spool.join("done/a.psv.1"));
                assert_eq!((summary.accepted, summary.duplicates), (0, 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_still_growing_waits_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let engine = engine(dir.path());
        let mut state = SpoolState::default();
        let (head, tail) = FEED.split_at(60);
        fs::write(spool.join("a.psv"), head).unwrap();
        assert!(drain(&engine, &spool, &mut state, KEEP).unwrap().is_empty());
        // Written on under its final name between the passes: not taken half-written.
        fs::OpenOptions::new()
            .append(true)
            .open(spool.join("a.psv"))
            .and_then(|mut f| io::Write::write_all(&mut f, tail.as_bytes()))
            .unwrap();
        assert!(drain(&engine, &spool, &mut state, KEEP).unwrap().is_empty());
        let outcomes = drain(&engine, &spool, &mut state, KEEP).unwrap();
        assert!(matches!(
            &outcomes[0].1,
            SpoolOutcome::Done { summary, .. } if (summary.accepted, summary.rejected) == (1, 1)
        ));
    }

    #[test]
    fn a_name_swapped_for_a_link_or_another_file_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let engine = engine(dir.path());
        let secret = dir.path().join("secret.txt");
        fs::write(&secret, "token = hunter2\n").unwrap();
        fs::write(spool.join("a.psv"), FEED).unwrap();
        let listed = Listed::of(&fs::symlink_metadata(spool.join("a.psv")).unwrap());
        // Between the listing and the open, the name becomes a link to a secret...
        fs::remove_file(spool.join("a.psv")).unwrap();
        std::os::unix::fs::symlink(&secret, spool.join("a.psv")).unwrap();
        let outcome = process_file(&engine, &spool, &spool.join("a.psv"), listed, KEEP).unwrap();
        assert!(matches!(outcome, SpoolOutcome::Replaced), "{outcome:?}");
        // ... or another regular file.
        fs::remove_file(spool.join("a.psv")).unwrap();
        fs::copy(&secret, spool.join("a.psv")).unwrap();
        let outcome = process_file(&engine, &spool, &spool.join("a.psv"), listed, KEEP).unwrap();
        assert!(matches!(outcome, SpoolOutcome::Replaced), "{outcome:?}");
        // ... or a hard link to it.
        fs::remove_file(spool.join("a.psv")).unwrap();
        fs::write(spool.join("a.psv"), FEED).unwrap();
        let listed = Listed::of(&fs::symlink_metadata(spool.join("a.psv")).unwrap());
        fs::hard_link(spool.join("a.psv"), dir.path().join("elsewhere")).unwrap();
        let outcome = process_file(&engine, &spool, &spool.join("a.psv"), listed, KEEP).unwrap();
        assert!(matches!(outcome, SpoolOutcome::Replaced), "{outcome:?}");
        assert!(!spool.join(DONE_DIR).exists() && !spool.join(FAILED_DIR).exists());
        // A symbolic link is never listed at all.
        fs::remove_file(spool.join("a.psv")).unwrap();
        std::os::unix::fs::symlink(&secret, spool.join("b.psv")).unwrap();
        let mut state = SpoolState::default();
        assert!(state.ready_files(&spool).unwrap().is_empty());
        assert!(state.ready_files(&spool).unwrap().is_empty());
    }

    #[test]
    fn a_done_that_is_not_a_directory_stops_no_other_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let engine = engine(dir.path());
        let mut state = SpoolState::default();
        fs::write(spool.join(DONE_DIR), "not a directory").unwrap();
        fs::write(spool.join("a.psv"), FEED).unwrap();
        fs::write(spool.join("b.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
        drain(&engine, &spool, &mut state, KEEP).unwrap();
        let outcomes = drain(&engine, &spool, &mut state, KEEP).unwrap();
        // `done` itself is never taken for a feed; a.psv is stored but cannot move there and
        // waits; b.gz still goes to failed/.
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert!(matches!(&outcomes[0].1, SpoolOutcome::NotMoved { .. }));
        assert!(matches!(&outcomes[1].1, SpoolOutcome::Failed { .. }));
        // Later passes retry the move only (`Moved` comes from that path alone, never from
        // an ingest), and once done/ can be made, the file moves.
        let outcomes = drain(&engine, &spool, &mut state, KEEP).unwrap();
        assert!(matches!(&outcomes[0].1, SpoolOutcome::NotMoved { .. }));
        fs::remove_file(spool.join(DONE_DIR)).unwrap();
        let outcomes = drain(&engine, &spool, &mut state, KEEP).unwrap();
        assert!(
            matches!(&outcomes[0].1, SpoolOutcome::Moved { .. }),
            "{outcomes:?}"
        );
        assert!(spool.join("done/a.psv").exists());
    }

    #[test]
    fn finished_files_go_after_their_keep_period_or_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        fs::write(spool.join("a.psv"), FEED).unwrap();
        fs::write(spool.join("b.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
        {
            let engine = engine(dir.path());
            let mut state = SpoolState::default();
            drain(&engine, &spool, &mut state, KEEP).unwrap();
            assert_eq!(drain(&engine, &spool, &mut state, KEEP).unwrap().len(), 2);
            assert_eq!(expire_finished(&engine, &spool, KEEP).unwrap(), 0);
        }
        assert!(spool.join("done/a.psv").exists() && spool.join("failed/b.gz").exists());
        // 91 days on, the keep period is over: feeds, rejects and reasons all go.
        let later = parse_timestamp(b"2025-04-17T00:00:00Z", None).unwrap();
        let (engine, _) = Engine::open(&dir.path().join("data"), EngineOptions::at(later)).unwrap();
        assert_eq!(expire_finished(&engine, &spool, KEEP).unwrap(), 4);
        assert_eq!(fs::read_dir(spool.join(DONE_DIR)).unwrap().count(), 0);
        assert_eq!(fs::read_dir(spool.join(FAILED_DIR)).unwrap().count(), 0);
        // Keeping nothing: a file is gone once its scans are durable.
        fs::write(spool.join("c.psv"), FEED).unwrap();
        let mut state = SpoolState::default();
        let none = KeepDone { ms: 0 };
        drain(&engine, &spool, &mut state, none).unwrap();
        let outcomes = drain(&engine, &spool, &mut state, none).unwrap();
        assert!(matches!(&outcomes[0].1, SpoolOutcome::Done { .. }));
        assert_eq!(fs::read_dir(spool.join(DONE_DIR)).unwrap().count(), 0);
        assert!(!spool.join("c.psv").exists());
    }
}
