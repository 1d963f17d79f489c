//! The append-only audit log: one JSON line per API request (who, from where, what, when, how
//! many results). Barcodes are written as keyed hashes ([`AuditKey`]): an investigator with the
//! key (in the data directory) finds a barcode's accesses by hashing it (`imbtrack audit hash`),
//! while the log itself holds no barcode in clear.
//!
//! It fails closed: while the writer cannot write or fsync (a full disk, an I/O error),
//! [`AuditLog::failure`] says why, the server refuses requests it cannot audit (503) and reports
//! itself unhealthy, and the writer keeps the unwritten lines and retries until the disk takes
//! them again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::Clock;
use imbtrack_feed::time::{civil_from_days, DAY_MS};
use serde::Serialize;
use sha2::Sha256;

use crate::auth::{bytes32_from_hex, to_hex};

/// One audited request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// When it was answered, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The client's IP address (`-` when not known).
    pub client: String,
    /// The token's id (`local` without tokens, `-` when the credentials were refused).
    pub token: String,
    /// HTTP method.
    pub method: String,
    /// The route's pattern, e.g. `/v1/pieces/{barcode}`, or `(unmatched)`.
    pub route: String,
    /// What was asked besides barcodes: a ZIP and day, a Mailer ID and day, a count.
    pub key: Option<String>,
    /// Keyed hashes ([`AuditKey::hash`]) of every barcode asked for or returned.
    pub barcodes: Vec<String>,
    /// Pieces (or scans, for a push) returned or taken.
    pub results: u64,
    /// HTTP status answered.
    pub status: u16,
}

/// The secret barcodes are hashed with in the audit log: 32 random bytes in a file of their
/// own (hex), made on first use and readable by its owner only.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    /// Reads the key at `path`, or makes one there.
    pub fn load_or_create(path: &Path) -> io::Result<AuditKey> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        match std::fs::read_to_string(path) {
            Ok(text) => bytes32_from_hex(text.trim())
                .map(AuditKey)
                .ok_or_else(|| bad("not 64 hex digits")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut file = std::os::unix::fs::OpenOptionsExt::mode(
                    OpenOptions::new().write(true).create_new(true),
                    0o600,
                )
                .open(path)?;
                file.write_all(format!("{}\n", to_hex(&key)).as_bytes())?;
                file.sync_all()?;
                Ok(AuditKey(key))
            }
            Err(e) => Err(e),
        }
    }

    /// The barcode's keyed hash: HMAC-SHA-256 of its canonical text (IMb `TRACKING-ROUTING`,
    /// IMpb tracking number), the first 16 bytes in hex.
    pub fn hash(&self, barcode: BarcodeKey) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(barcode.to_barcode().to_string().as_bytes());
        to_hex(&mac.finalize().into_bytes()[..16])
    }
}

/// Where the writer puts lines: a file, or in tests one that fails on demand.
pub(crate) trait AuditSink: Write + Send + 'static {
    /// Makes what was written durable.
    fn sync(&mut self) -> io::Result<()>;
}

impl AuditSink for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// The log file, rotated daily: when the first line of a new UTC day comes, `audit.jsonl` is
/// renamed `audit-YYYY-MM-DD.jsonl` (the day its lines were written) and a new one started,
/// and rotated files older than the keep period are deleted. The audit log records who looked
/// at whose pieces, so it is kept no longer than the pieces themselves.
pub(crate) struct DailyFile {
    path: PathBuf,
    file: File,
    /// The UTC day (days since the epoch) the open file's lines are from.
    day: i64,
    keep_days: i64,
    /// Wall-clock milliseconds (a parameter, so tests can move it).
    clock: Box<dyn Fn() -> i64 + Send>,
}

impl DailyFile {
    pub(crate) fn open(
        path: &Path,
        keep_days: i64,
        clock: Box<dyn Fn() -> i64 + Send>,
    ) -> io::Result<DailyFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        // An existing log is from the day it was last written.
        let modified_ms = file
            .metadata()?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let day = modified_ms.min(clock()).div_euclid(DAY_MS);
        let mut log = DailyFile {
            path: path.to_path_buf(),
            file,
            day,
            keep_days,
            clock,
        };
        log.rotate_if_new_day()?;
        Ok(log)
    }

    fn rotated_name(&self, day: i64) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map_or_else(|| "audit".into(), |s| s.to_string_lossy().into_owned());
        let (y, m, d) = civil_from_days(day);
        self.path
            .with_file_name(format!("{stem}-{y:04}-{m:02}-{d:02}.jsonl"))
    }

    fn rotate_if_new_day(&mut self) -> io::Result<()> {
        let today = (self.clock)().div_euclid(DAY_MS);
        if today <= self.day {
            return Ok(());
        }
        self.file.sync_data()?;
        std::fs::rename(&self.path, self.rotated_name(self.day))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.day = today;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
            let oldest_kept = self.rotated_name(today - self.keep_days);
            let prefix = self.rotated_name(0);
            let prefix = prefix
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let prefix = &prefix[..prefix.len() - "1970-01-01.jsonl".len()];
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                // Dated names sort by date.
                let old = name.is_some_and(|n| {
                    n.starts_with(prefix)
                        && n.len() == prefix.len() + "1970-01-01.jsonl".len()
                        && Some(n.as_str()) < oldest_kept.file_name().and_then(|o| o.to_str())
                });
                if old {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(())
    }
}

impl Write for DailyFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.rotate_if_new_day()?;
        self.file.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl AuditSink for DailyFile {
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The writer thread's side: it wakes every [`WRITE_EVERY`], takes every queued line and writes
/// them in one call (into the page cache, where they survive the process being killed), and
/// fsyncs at most every [`SYNC_EVERY`]. Requests only push onto the queue: the writer is never
/// blocked waiting on it, so a request never pays for waking a thread, and none waits on the
/// disk.
pub struct AuditLog {
    path: PathBuf,
    sender: Mutex<Option<mpsc::Sender<String>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<Mutex<Option<String>>>,
}

/// How often queued audit lines are written.
pub const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Longest a written audit line waits for its fsync.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// Most bytes of lines kept for a retry while the disk refuses them; past it lines are dropped
/// (counted in `imbtrack_audit_dropped_total`). Requests are refused meanwhile, so only the
/// refusals' own lines accumulate.
const MAX_PENDING: usize = 64 << 20;

fn set_failure(failure: &Mutex<Option<String>>, why: Option<String>) {
    let mut failure = failure.lock().unwrap_or_else(PoisonError::into_inner);
    if failure.is_some() != why.is_some() {
        metrics::gauge!("imbtrack_audit_failing").set(if why.is_some() { 1.0 } else { 0.0 });
        match &why {
            Some(why) => tracing::error!("audit log: {why}; refusing requests until it recovers"),
            None => tracing::info!("audit log: writing again"),
        }
    }
    *failure = why;
}

fn write_batches(
    mut sink: impl AuditSink,
    receiver: mpsc::Receiver<String>,
    failure: Arc<Mutex<Option<String>>>,
) {
    // Bytes taken from the queue and not yet written; a write that fails part-way leaves the
    // rest here, so a retry neither loses nor repeats a byte of a line.
    let mut pending: Vec<u8> = Vec::new();
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut open = true;
    // When the server asked the writer to stop: it gives up on a failing disk a second later.
    let mut closing_since: Option<Instant> = None;
    loop {
        std::thread::sleep(WRITE_EVERY);
        let mut taken = false;
        loop {
            match receiver.try_recv() {
                Ok(line) if pending.len() + line.len() <= MAX_PENDING => {
                    pending.extend_from_slice(line.as_bytes());
                    taken = true;
                }
                Ok(_) => metrics::counter!("imbtrack_audit_dropped_total").increment(1),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut written = 0;
        let mut error = None;
        while written < pending.len() {
            match sink.write(&pending[written..]) {
                Ok(0) => {
                    error = Some("writing: the audit log takes no more bytes".to_string());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("writing: {e}"));
                    break;
                }
            }
        }
        pending.drain(..written);
        unsynced |= written > 0;
        if error.is_none() && unsynced && (!taken || !open || last_sync.elapsed() >= SYNC_EVERY) {
            match sink.sync() {
                Ok(()) => {
                    unsynced = false;
                    last_sync = Instant::now();
                }
                Err(e) => error = Some(format!("fsync: {e}")),
            }
        }
        set_failure(&failure, error);
        if !open {
            let since = *closing_since.get_or_insert_with(Instant::now);
            let done = pending.is_empty() && !unsynced;
            if done || since.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
    }
}

impl AuditLog {
    /// Opens (creating) the log at `path` for appending. A regular file is rotated daily and
    /// its rotated files deleted after `keep_days` ([`DailyFile`]); anything else (a pipe, a
    /// device) is written as it is.
    pub fn open(path: &Path, keep_days: i64) -> io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.is_file() {
            drop(file);
            let wall_clock = Box::new(|| Clock::System.now_ms());
            AuditLog::with_sink(path, DailyFile::open(path, keep_days, wall_clock)?)
        } else {
            AuditLog::with_sink(path, file)
        }
    }

    fn with_sink(path: &Path, sink: impl AuditSink) -> io::Result<AuditLog> {
        let (sender, receiver) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let shared = failure.clone();
        let writer = std::thread::Builder::new()
            .name("imbtrack-audit".into())
            .spawn(move || write_batches(sink, receiver, shared))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            failure,
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the log cannot be written right now, if it cannot: then requests must be refused.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Queues an entry; the writer writes it, retrying while the disk refuses.
    pub fn record(&self, entry: &AuditEntry) {
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        let sent = self
            .sender
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.send(line).is_ok()));
        if sent != Some(true) {
            metrics::counter!("imbtrack_audit_dropped_total").increment(1);
        }
    }

    /// Writes what is queued and stops the writer; an error if the log was failing when it
    /// stopped (lines were lost).
    pub fn close(&self) -> io::Result<()> {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            writer
                .join()
                .map_err(|_| io::Error::other("the audit writer panicked"))?;
        }
        match self.failure() {
            Some(why) => Err(io::Error::other(why)),
            None => Ok(()),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            time: "2026-11-29T06:00:00.000Z".into(),
            client: "127.0.0.1".into(),
            token: "acme".into(),
            method: "GET".into(),
            route: "/v1/pieces/{barcode}".into(),
            key: None,
            barcodes: vec!["0123456789abcdef0123456789abcdef".into()],
            results: 1,
            status: 200,
        }
    }

    #[test]
    fn the_key_is_made_once_and_hashes_stably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let imb = imbtrack_barcode::Imb::new("00270123456789123456", "").unwrap();
        let barcode = imbtrack_barcode::Barcode::Imb(imb).key();
        let first = AuditKey::load_or_create(&path).unwrap().hash(barcode);
        let again = AuditKey::load_or_create(&path).unwrap().hash(barcode);
        assert_eq!(first, again);
        assert_eq!(first.len(), 32);
        assert!(!first.contains("0027012345"));
        let other = AuditKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(other.hash(barcode), first, "another key, another hash");
        std::fs::write(&path, "zz").unwrap();
        assert!(AuditKey::load_or_create(&path).is_err());
        // 64 bytes but not ASCII: refused, not a panic slicing inside a character.
        std::fs::write(&path, format!("a{}", "€".repeat(21))).unwrap();
        assert!(AuditKey::load_or_create(&path).is_err());
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("audit.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let log = AuditLog::open(&path, 90).unwrap();
        for _ in 0..3 {
            log.record(&entry());
        }
        log.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "{\"earlier\":true}");
        let read: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(read["token"], "acme");
        assert_eq!(read["results"], 1);
        assert_eq!(read["route"], "/v1/pieces/{barcode}");
    }

    /// A disk that refuses writes and fsyncs while `failing` is set, and takes a few bytes
    /// at a time otherwise (short writes).
    struct FlakyDisk {
        written: Arc<Mutex<Vec<u8>>>,
        failing: Arc<AtomicBool>,
    }

    impl Write for FlakyDisk {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = bytes.len().min(7);
            self.written.lock().unwrap().extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl AuditSink for FlakyDisk {
        fn sync(&mut self) -> io::Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            Ok(())
        }
    }

    #[test]
    fn a_failing_disk_is_reported_and_every_line_is_written_once_it_recovers() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(true));
        let disk = FlakyDisk {
            written: written.clone(),
            failing: failing.clone(),
        };
        let log = AuditLog::with_sink(Path::new("flaky"), disk).unwrap();
        for _ in 0..3 {
            log.record(&entry());
        }
        wait_until("the failure to show", || log.failure().is_some());
        assert!(log.failure().unwrap().contains("writing"));
        log.record(&entry());
        failing.store(false, Ordering::SeqCst);
        wait_until("the recovery to show", || log.failure().is_none());
        log.close().unwrap();
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn a_full_device_fails_the_log_and_close_says_so() {
        let Ok(log) = AuditLog::open(Path::new("/dev/full"), 90) else {
            return; // no /dev/full here
        };
        log.record(&entry());
        wait_until("the failure to show", || log.failure().is_some());
        assert!(log.close().is_err());
    }

    #[test]
    fn the_log_rotates_daily_and_rotated_files_past_the_keep_period_go() {
        use std::sync::atomic::AtomicI64;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let now = Arc::new(AtomicI64::new(20_000 * DAY_MS + 1000));
        let clock = now.clone();
        let mut file =
            DailyFile::open(&path, 3, Box::new(move || clock.load(Ordering::SeqCst))).unwrap();
        let name = |day: i64| {
            let (y, m, d) = civil_from_days(day);
            dir.path().join(format!("audit-{y:04}-{m:02}-{d:02}.jsonl"))
        };
        // An old rotated file from long ago, and a file of another name that is not ours.
        std::fs::write(name(19_000), "old\n").unwrap();
        std::fs::write(dir.path().join("audit-notes.jsonl"), "keep\n").unwrap();
        for day in 20_000..20_006 {
            now.store(day * DAY_MS + 5000, Ordering::SeqCst);
            file.write_all(format!("line of day {day}\n").as_bytes())
                .unwrap();
        }
        // The open file has the last day; rotated ones the days before, the last 3 of them.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "line of day 20005\n"
        );
        for day in 20_002..20_005 {
            assert_eq!(
                std::fs::read_to_string(name(day)).unwrap(),
                format!("line of day {day}\n")
            );
        }
        for day in [19_000, 20_000, 20_001] {
            assert!(!name(day).exists(), "day {day} kept");
        }
        assert!(dir.path().join("audit-notes.jsonl").exists());
    }
}
