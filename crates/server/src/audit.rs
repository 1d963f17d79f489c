//! The append-only audit log: one JSON line per API request (who, what, when, how many results).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One audited request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// When it was answered, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The token's id (`local` without tokens, `-` when the credentials were refused).
    pub token: String,
    /// HTTP method.
    pub method: String,
    /// The route's pattern, e.g. `/v1/pieces/{barcode}`.
    pub route: String,
    /// What was asked: the barcode, ZIP and day, or Mailer ID and day.
    pub key: Option<String>,
    /// Pieces (or scans, for a push) returned or taken.
    pub results: u64,
    /// HTTP status answered.
    pub status: u16,
}

/// The writer thread's side: it wakes every [`WRITE_EVERY`], takes every queued line and writes
/// them in one call (into the page cache, where they survive the process being killed), and
/// fsyncs at most every [`SYNC_EVERY`]. Requests only push onto the queue: the writer is never
/// blocked waiting on it, so a request never pays for waking a thread, and none waits on the
/// disk.
pub struct AuditLog {
    path: PathBuf,
    sender: Mutex<Option<mpsc::Sender<String>>>,
    writer: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

/// How often queued audit lines are written.
pub const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Longest a written audit line waits for its fsync.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

fn write_batches(mut file: File, receiver: mpsc::Receiver<String>) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut open = true;
    while open {
        std::thread::sleep(WRITE_EVERY);
        batch.clear();
        loop {
            match receiver.try_recv() {
                Ok(line) => batch.extend_from_slice(line.as_bytes()),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            file.write_all(&batch)?;
            unsynced = true;
        }
        if unsynced && (batch.is_empty() || !open || last_sync.elapsed() >= SYNC_EVERY) {
            file.sync_data()?;
            unsynced = false;
            last_sync = Instant::now();
        }
    }
    Ok(())
}

impl AuditLog {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (sender, receiver) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("imbtrack-audit".into())
            .spawn(move || write_batches(file, receiver))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an entry. A log whose writer failed drops entries; [`AuditLog::close`] reports
    /// that failure, and the server logs it.
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

    /// Writes what is queued and stops the writer.
    pub fn close(&self) -> io::Result<()> {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        match writer.map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the audit writer panicked")),
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
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit").join("audit.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let log = AuditLog::open(&path).unwrap();
        let entry = AuditEntry {
            time: "2026-11-29T06:00:00.000Z".into(),
            token: "acme".into(),
            method: "GET".into(),
            route: "/v1/pieces/{barcode}".into(),
            key: Some("00270123456789123456-12345678901".into()),
            results: 1,
            status: 200,
        };
        for _ in 0..3 {
            log.record(&entry);
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
}
