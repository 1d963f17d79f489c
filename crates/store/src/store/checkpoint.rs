//! Head checkpoints: the open buckets written to one file, so that opening a store reads that
//! file and replays only the WAL written after it instead of the whole open day.
//!
//! ```text
//! file:    "IMBTCKP1" | body | body length u64 | CRC-32 of body u32
//! body:    shards u32 | through: segment u64, record u64
//!          | symbols: count u32, then (length u32, UTF-8)... for ids 1..=count
//!          | positions: count u32, then (length u32, UTF-8 name, position i64)...
//!          | segments: count u32, then (segment u64, count u32, then (class u8, day i64)...)...
//!          | buckets: count u32, then (class u8, day i64, then per shard: length u64, shard)...
//! shard:   see `HeadShard::encode_prefix`
//! ```
//!
//! `through` is the WAL position the checkpoint stands at: it holds exactly the head that
//! replaying every record before it gives, the writer's symbol table (whose ids the WAL records
//! after it use), the source positions and which segments hold which open buckets' scans. It
//! is written only after the WAL is durable through `through`, so a WAL cut by a crash never
//! ends before a checkpoint on disk. A checkpoint is taken under the maintenance lock (no seal
//! is half-way) with the writer lock held only to note `through` and each shard's scan count;
//! the shards are then copied one at a time under their read locks (scans appended since are
//! left out), so neither readers nor appenders wait for it.
//!
//! The WAL is kept as before (segments go once their buckets are sealed), so a checkpoint that
//! fails its checks is reported and ignored, and the whole WAL is replayed. A WAL that ends
//! before `through` (damaged after the checkpoint was written) loses nothing the checkpoint
//! holds, and the segment opened next is numbered after `through`'s, so no later record is
//! ever mistaken for one the checkpoint covers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use imbtrack_feed::{MailClass, SymbolTable};
use rayon::prelude::*;

use super::codec::{put_u32, put_u64, take, take_u32, take_u64};
use super::head::{HeadBucket, HeadShard, SiteTable, HEAD_SHARDS};
use super::layout::{bucket_name, BucketId, Manifest};
use super::Store;
use crate::fsutil::sync_dir;
use crate::{fault, StoreError};

/// The checkpoint's file name in the store's directory.
pub(crate) const CHECKPOINT: &str = "head.ckpt";
const MAGIC: &[u8; 8] = b"IMBTCKP1";
const TRAILER: usize = 12;

/// What a checkpoint wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointReport {
    /// Open buckets written.
    pub buckets: u64,
    /// Scans written.
    pub scans: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// A checkpoint read back, before it is checked against the manifest.
pub(crate) struct LoadedCheckpoint {
    pub(crate) through: (u64, u64),
    pub(crate) symbols: SymbolTable,
    pub(crate) positions: BTreeMap<String, i64>,
    pub(crate) segments: BTreeMap<u64, BTreeSet<BucketId>>,
    pub(crate) buckets: Vec<(BucketId, HeadBucket)>,
}

impl Store {
    /// Writes the open buckets to the checkpoint file (see the module docs); returns what it
    /// wrote.
    pub(super) fn checkpoint_now(&self) -> Result<CheckpointReport, StoreError> {
        let (through, written, symbols, positions, segments, heads) = {
            let mut writer = self.writer();
            let view = self.view.load();
            if !view.sealing.is_empty() {
                return Err(StoreError::Invariant(
                    "a checkpoint found a seal half-way".to_string(),
                ));
            }
            let heads: Vec<(BucketId, Arc<HeadBucket>, Vec<u32>)> = view
                .head
                .iter()
                .map(|(&id, head)| (id, head.clone(), head.shard_scan_counts()))
                .collect();
            writer.scans_since_checkpoint = 0;
            (
                writer.wal.position(),
                writer.wal.written(),
                writer.symbols.clone(),
                writer.positions.clone(),
                writer.segment_buckets.clone(),
                heads,
            )
        };
        self.group.wait(written)?;

        let path = self.dir.join(CHECKPOINT);
        let tmp = self.dir.join(format!(".{CHECKPOINT}.tmp"));
        let mut report = CheckpointReport::default();
        let mut out = Body::create(&tmp)?;
        let mut part = Vec::new();
        put_u32(&mut part, HEAD_SHARDS as u32);
        put_u64(&mut part, through.0);
        put_u64(&mut part, through.1);
        put_u32(&mut part, symbols.len() as u32 - 1);
        for id in 1..symbols.len() as u32 {
            put_text(&mut part, symbols.get(id));
        }
        put_u32(&mut part, positions.len() as u32);
        for (name, position) in &positions {
            put_text(&mut part, name);
            part.extend_from_slice(&position.to_le_bytes());
        }
        put_u32(&mut part, segments.len() as u32);
        for (seq, ids) in &segments {
            put_u64(&mut part, *seq);
            put_u32(&mut part, ids.len() as u32);
            for id in ids {
                put_id(&mut part, *id);
            }
        }
        put_u32(&mut part, heads.len() as u32);
        out.write(&mut part)?;
        for (id, head, counts) in &heads {
            put_id(&mut part, *id);
            out.write(&mut part)?;
            // Each shard is copied under its read lock and written after it is released.
            let mut shard = Vec::new();
            for (index, &count) in counts.iter().enumerate() {
                shard.clear();
                head.encode_shard_prefix(index, count, &mut shard);
                put_u64(&mut part, shard.len() as u64);
                part.extend_from_slice(&shard);
                out.write(&mut part)?;
            }
            report.scans += counts.iter().map(|&c| u64::from(c)).sum::<u64>();
            report.buckets += 1;
        }
        report.bytes = out.finish(&path)?;
        Ok(report)
    }
}

/// The checkpoint file being written: a buffered temporary file and the CRC of what went in.
struct Body {
    file: BufWriter<File>,
    tmp: std::path::PathBuf,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Body {
    fn create(tmp: &Path) -> Result<Body, StoreError> {
        let file = File::create(tmp).map_err(|e| StoreError::io(tmp, e))?;
        let mut body = Body {
            file: BufWriter::with_capacity(1 << 20, file),
            tmp: tmp.to_path_buf(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        fault::write_all(&mut body.file, MAGIC).map_err(|e| StoreError::io(tmp, e))?;
        Ok(body)
    }

    /// Writes and empties `part`.
    fn write(&mut self, part: &mut Vec<u8>) -> Result<(), StoreError> {
        self.crc.update(part);
        self.len += part.len() as u64;
        fault::write_all(&mut self.file, part).map_err(|e| StoreError::io(&self.tmp, e))?;
        part.clear();
        Ok(())
    }

    /// Writes the trailer, makes the file durable and renames it to `path`; returns its size.
    fn finish(mut self, path: &Path) -> Result<u64, StoreError> {
        let mut trailer = Vec::with_capacity(TRAILER);
        put_u64(&mut trailer, self.len);
        put_u32(&mut trailer, self.crc.clone().finalize());
        let tmp = self.tmp.clone();
        let io = |e| StoreError::io(&tmp, e);
        fault::write_all(&mut self.file, &trailer).map_err(io)?;
        let file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        fault::sync(&file, false).map_err(io)?;
        fault::rename(&tmp, path).map_err(io)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        Ok(MAGIC.len() as u64 + self.len + TRAILER as u64)
    }
}

/// Reads the checkpoint in `dir`, its head's scans to take site numbers from `numbered`:
/// `Ok(None)` when there is none, `Err(why)` when it fails its checks (then it is ignored and
/// the whole WAL replayed).
pub(crate) fn read_checkpoint(
    dir: &Path,
    numbered: &Arc<SiteTable>,
) -> Result<Option<LoadedCheckpoint>, String> {
    let path = dir.join(CHECKPOINT);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    // Mapped rather than read: its pages are the page cache's, not the process's heap, and go
    // when it is dropped (a freed buffer of that size would stay in the allocator's hands).
    // SAFETY: the checkpoint is replaced only by renaming a new file over it, by this process,
    // which holds the store's lock, after this function returns; nothing writes the file in
    // place. Its bytes are checked (length, CRC) before anything is decoded from them. As for
    // sealed buckets, a process that truncates it behind the store's back may cause SIGBUS.
    #[allow(unsafe_code)]
    let bytes = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let body = bytes
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.split_at_checked(rest.len().checked_sub(TRAILER)?))
        .filter(|(body, trailer)| {
            trailer[..8] == (body.len() as u64).to_le_bytes()
                && trailer[8..] == crc32fast::hash(body).to_le_bytes()
        })
        .map(|(body, _)| body)
        .ok_or_else(|| format!("{}: bad magic, length or checksum", path.display()))?;
    decode(body, numbered).map(Some).ok_or_else(|| {
        format!(
            "{}: checksum good but contents inconsistent",
            path.display()
        )
    })
}

fn decode(mut body: &[u8], numbered: &Arc<SiteTable>) -> Option<LoadedCheckpoint> {
    let bytes = &mut body;
    if take_u32(bytes)? as usize != HEAD_SHARDS {
        return None;
    }
    let through = (take_u64(bytes)?, take_u64(bytes)?);
    let mut symbols = SymbolTable::new();
    for id in 1..=take_u32(bytes)? {
        if symbols.intern(take_text(bytes)?) != id {
            return None;
        }
    }
    let mut positions = BTreeMap::new();
    for _ in 0..take_u32(bytes)? {
        let name = take_text(bytes)?.to_string();
        positions.insert(name, take_u64(bytes)? as i64);
    }
    let mut segments = BTreeMap::new();
    for _ in 0..take_u32(bytes)? {
        let seq = take_u64(bytes)?;
        let ids = (0..take_u32(bytes)?)
            .map(|_| take_id(bytes))
            .collect::<Option<BTreeSet<_>>>()?;
        segments.insert(seq, ids);
    }
    // Frame every shard first, then decode them all in parallel.
    let mut framed: Vec<(BucketId, Vec<&[u8]>)> = Vec::new();
    for _ in 0..take_u32(bytes)? {
        let id = take_id(bytes)?;
        let shards = (0..HEAD_SHARDS)
            .map(|_| {
                let len = usize::try_from(take_u64(bytes)?).ok()?;
                take(bytes, len)
            })
            .collect::<Option<Vec<_>>>()?;
        framed.push((id, shards));
    }
    if !bytes.is_empty() {
        return None;
    }
    let buckets = framed
        .into_par_iter()
        .map(|(id, shards)| {
            let shards = shards
                .into_par_iter()
                .enumerate()
                .map(|(index, mut shard)| {
                    let decoded = HeadShard::decode(id, index, &mut shard, numbered)?;
                    shard.is_empty().then_some(decoded)
                })
                .collect::<Option<Vec<_>>>()?;
            Some((id, HeadBucket::from_shards(shards)?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(LoadedCheckpoint {
        through,
        symbols,
        positions,
        segments,
        buckets,
    })
}

impl LoadedCheckpoint {
    /// Whether a checkpoint's copy of bucket `id`, taken at `through`, is still wanted: not
    /// sealed since (a seal after `through` took every scan it holds) and not expired.
    pub(crate) fn keeps(through: &(u64, u64), manifest: &Manifest, id: BucketId) -> bool {
        let sealed_since = manifest
            .sealed_through
            .get(&bucket_name(id))
            .is_some_and(|at| at >= through);
        let expired = manifest
            .expired_through
            .get(id.0.as_str())
            .is_some_and(|&through| id.1 <= through);
        !sealed_since && !expired
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_u32(out, text.len() as u32);
    out.extend_from_slice(text.as_bytes());
}

fn put_id(out: &mut Vec<u8>, (class, day): BucketId) {
    out.push(class as u8);
    out.extend_from_slice(&day.to_le_bytes());
}

fn take_text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let len = take_u32(bytes)? as usize;
    std::str::from_utf8(take(bytes, len)?).ok()
}

fn take_id(bytes: &mut &[u8]) -> Option<BucketId> {
    let class = MailClass::from_byte(take(bytes, 1)?[0])?;
    Some((class, take_u64(bytes)? as i64))
}
