//! The few file-system moves the store's crash safety rests on.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::fault;

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fault::sync(&File::open(dir)?, false)
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a mix:
/// write a temp file beside it, fsync, rename over, fsync the directory.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut file = File::create(&tmp)?;
        fault::write_all(&mut file, bytes)?;
        fault::sync(&file, false)?;
    }
    fault::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Bytes used by the files under `path` (a file or a directory tree).
pub(crate) fn disk_bytes(path: &Path) -> u64 {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| disk_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}
