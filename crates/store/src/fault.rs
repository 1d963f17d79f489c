//! Fault injection for tests: every write, fsync and rename the store's durability rests on goes
//! through this module, which can be armed to fail the Nth one (a write can also be cut short,
//! as a full disk does). Unarmed, each call costs one relaxed atomic load beside its syscall.
//!
//! The plan is process-wide: a test that arms it must not share its process with other store
//! tests running at the same time (give it its own test binary, or hold a lock).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The kind of operation a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Writing bytes to a file (WAL records, bucket files, the manifest).
    Write,
    /// fsync of a file or directory.
    Sync,
    /// Renaming into place (a sealed bucket, the manifest, a bucket on its way out).
    Rename,
}

/// What the armed fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which operations it counts.
    pub op: FaultOp,
    /// How many of them succeed first.
    pub after: u64,
    /// The OS error number returned (`28`, ENOSPC, for a full disk; `5`, EIO).
    pub errno: i32,
    /// For writes: how many bytes land before the error (a short write), capped at the length.
    pub short_write: usize,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static SEEN: AtomicU64 = AtomicU64::new(0);
static FIRED: AtomicU64 = AtomicU64::new(0);
static PLAN: Mutex<Option<Fault>> = Mutex::new(None);

/// Arms `fault`; it fires once, on the `after + 1`-th matching operation.
pub fn arm(fault: Fault) {
    if let Ok(mut plan) = PLAN.lock() {
        *plan = Some(fault);
    }
    SEEN.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
}

/// Disarms; returns how many faults fired since the last [`arm`].
pub fn disarm() -> u64 {
    ARMED.store(false, Ordering::SeqCst);
    if let Ok(mut plan) = PLAN.lock() {
        *plan = None;
    }
    FIRED.swap(0, Ordering::SeqCst)
}

/// The fault to raise for this operation, if the plan says this is the one.
fn due(op: FaultOp) -> Option<Fault> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    let plan = PLAN.lock().ok()?;
    let fault = (*plan)?;
    if fault.op != op {
        return None;
    }
    if SEEN.fetch_add(1, Ordering::SeqCst) != fault.after {
        return None;
    }
    FIRED.fetch_add(1, Ordering::SeqCst);
    Some(fault)
}

/// `file.write_all(bytes)`, or the planned fault (after writing a prefix, for a short write).
pub(crate) fn write_all(file: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    if let Some(fault) = due(FaultOp::Write) {
        file.write_all(&bytes[..fault.short_write.min(bytes.len())])?;
        return Err(io::Error::from_raw_os_error(fault.errno));
    }
    file.write_all(bytes)
}

/// `file.sync_all()` (or `sync_data()`), or the planned fault.
pub(crate) fn sync(file: &File, data_only: bool) -> io::Result<()> {
    if let Some(fault) = due(FaultOp::Sync) {
        return Err(io::Error::from_raw_os_error(fault.errno));
    }
    if data_only {
        file.sync_data()
    } else {
        file.sync_all()
    }
}

/// `fs::rename(from, to)`, or the planned fault (nothing renamed).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(fault) = due(FaultOp::Rename) {
        return Err(io::Error::from_raw_os_error(fault.errno));
    }
    std::fs::rename(from, to)
}
