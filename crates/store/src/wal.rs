//! The write-ahead log: numbered segment files of checksummed records. An append is
//! acknowledged only after its records are written and the segment is fsynced. The writer
//! encodes records under the store's writer lock and queues them ([`Wal::write`]); each
//! appender then waits, outside it, for an fsync that covers them ([`GroupCommit::wait`]),
//! whose runner first writes everything queued, in order: one appender's fsync makes every
//! record queued before it durable, so appenders arriving together share fsyncs (group commit),
//! no lock is held across one, and the writer's turn does not include copying records into the
//! kernel.
//!
//! ```text
//! segment: "IMBTWAL1" | first record ...
//! record:  length u32 | CRC-32 of payload u32 | payload
//! payload: 1 = symbols: count u32, then (id u32, length u32, UTF-8)...
//!          2 = events:  count u32, then EVENT_LEN bytes each
//!          3 = positions: count u32, then (name length u32, UTF-8, position i64)...
//!          4 = scans:   count u32, then the compact body of [`scans`] (32 bytes a scan)
//! ```
//! Appends write kind 4; kind 2 is read (segments written before it) and written for scans
//! whose times span more than 49 days.
//! Every segment starts with the whole symbol table, so segments before it can be deleted.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use imbtrack_feed::{ScanEvent, Symbol, SCAN_RECORD_LEN};

use crate::fault;
use crate::fsutil::sync_dir;
use crate::StoreError;

mod scans;

pub(crate) use scans::{SiteNumber, NO_SITE_NUMBER};

const SEGMENT_MAGIC: &[u8; 8] = b"IMBTWAL1";
const RECORD_HEADER: usize = 8;
const KIND_SYMBOLS: u8 = 1;
const KIND_EVENTS: u8 = 2;
const KIND_POSITIONS: u8 = 3;
const KIND_SCANS: u8 = 4;
/// Written buffers kept for reuse: the one being filled and the one being written.
const SPARE_BUFFERS: usize = 2;
/// Bytes of one event in a record: the scan's own record ([`ScanEvent::encode_record`]).
pub(crate) const EVENT_LEN: usize = SCAN_RECORD_LEN;
/// Longest record a reader accepts; a larger length field is damage, not data.
const MAX_RECORD: usize = 256 << 20;

/// One record read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WalRecord {
    Symbols(Vec<(Symbol, String)>),
    Events(Vec<ScanEvent>),
    /// Positions reached in named sources (a Kafka partition's next offset), durable with the
    /// events of the same commit.
    Positions(Vec<(String, i64)>),
}

/// The WAL opened: the new segment appends go to, and what replay found wrong and repaired.
pub(crate) struct Opened {
    pub(crate) wal: Wal,
    pub(crate) repairs: Vec<WalRepair>,
}

/// Takes each record a replay reads, with its position (segment, record number in it), in
/// log order.
pub(crate) type OnRecord<'a> = dyn FnMut((u64, u64), WalRecord) + 'a;

/// What replay found wrong and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRepair {
    /// The segment cut.
    pub segment: PathBuf,
    /// Bytes kept (the end of its last good record).
    pub kept_bytes: u64,
    /// Bytes dropped after it.
    pub dropped_bytes: u64,
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:016}.wal")
}

fn decode_payload(payload: &[u8]) -> Option<WalRecord> {
    let (&kind, rest) = payload.split_first()?;
    let count = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let mut body = &rest[4..];
    match kind {
        KIND_SYMBOLS => {
            let mut symbols = Vec::with_capacity(count.min(body.len() / 8));
            for _ in 0..count {
                let id = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
                let len = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?) as usize;
                let text = std::str::from_utf8(body.get(8..8 + len)?).ok()?;
                symbols.push((id, text.to_string()));
                body = &body[8 + len..];
            }
            body.is_empty().then_some(WalRecord::Symbols(symbols))
        }
        KIND_POSITIONS => {
            let mut positions = Vec::with_capacity(count.min(body.len() / 12));
            for _ in 0..count {
                let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
                let name = std::str::from_utf8(body.get(4..4 + len)?).ok()?;
                let at = 4 + len;
                let position = i64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
                positions.push((name.to_string(), position));
                body = &body[at + 8..];
            }
            body.is_empty().then_some(WalRecord::Positions(positions))
        }
        KIND_EVENTS => {
            if body.len() != count.checked_mul(EVENT_LEN)? {
                return None;
            }
            body.chunks_exact(EVENT_LEN)
                .map(ScanEvent::decode_record)
                .collect::<Option<Vec<_>>>()
                .map(WalRecord::Events)
        }
        KIND_SCANS => scans::decode(count, body).map(WalRecord::Events),
        _ => None,
    }
}

/// Reads segment `seq`'s good records, the first `skip` only checked, not decoded, each
/// decoded one handed to `on_record` as soon as it is read; returns the offset where the last
/// good one ends.
fn read_segment(bytes: &[u8], seq: u64, skip: u64, on_record: &mut OnRecord<'_>) -> usize {
    let mut index = 0;
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return 0;
    }
    let mut at = SEGMENT_MAGIC.len();
    while bytes.len() - at >= RECORD_HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes
            .get(at + RECORD_HEADER..at + RECORD_HEADER + len)
            .filter(|_| len <= MAX_RECORD)
        else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        if index >= skip {
            let Some(record) = decode_payload(payload) else {
                break;
            };
            on_record((seq, index), record);
        }
        index += 1;
        at += RECORD_HEADER + len;
    }
    at
}

/// Where the log's written bytes end: (segment, bytes into it). An appender's records are
/// durable once the synced mark reaches the ticket [`Wal::write`] gave it.
pub(crate) type SyncTicket = (u64, u64);

/// What the group commit knows of the open segment.
struct SyncState {
    file: Arc<File>,
    path: PathBuf,
    /// Written so far (possibly not yet durable).
    written: SyncTicket,
    /// Durable so far.
    synced: SyncTicket,
    /// Records of the open segment handed over by [`Wal::write`] and not yet written, oldest
    /// first: whoever runs the next fsync writes them first. (A rotation commits the old
    /// segment, emptying this, before [`GroupCommit::reset`] switches files.)
    queued: Vec<Vec<u8>>,
    /// Buffers of written records, emptied, for [`Wal::write`] to fill again (fresh ones
    /// would fault their pages in on every append).
    spare: Vec<Vec<u8>>,
    /// An appender is fsyncing now; the others wait for it.
    syncing: bool,
    /// An fsync failed: nothing after the last good one can be trusted.
    failed: Option<String>,
}

/// The fsyncs appenders share: whoever needs one while none runs does it for everybody,
/// writing the records queued before it first.
pub(crate) struct GroupCommit {
    state: Mutex<SyncState>,
    done: Condvar,
}

impl GroupCommit {
    fn state(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once every byte written up to `ticket` is durable: at once when an fsync already
    /// covered it, after the running one when it covers it, else after an fsync this thread
    /// runs for itself and every appender that wrote before it.
    pub(crate) fn wait(&self, ticket: SyncTicket) -> Result<(), StoreError> {
        let mut state = self.state();
        loop {
            if let Some(why) = &state.failed {
                return Err(StoreError::Failed(why.clone()));
            }
            if state.synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let target = state.written;
            let queued = std::mem::take(&mut state.queued);
            let (file, path) = (state.file.clone(), state.path.clone());
            drop(state);
            let result = queued
                .iter()
                .try_for_each(|bytes| fault::write_all(&mut &*file, bytes))
                .and_then(|()| fault::sync(&file, true));
            state = self.state();
            state.syncing = false;
            self.done.notify_all();
            for mut bytes in queued {
                if state.spare.len() < SPARE_BUFFERS {
                    bytes.clear();
                    state.spare.push(bytes);
                }
            }
            match result {
                Ok(()) => state.synced = state.synced.max(target),
                Err(e) => {
                    // This thread reports the error itself; the others see the store failed.
                    // A failed or short write leaves a torn tail that replay cuts.
                    let error = StoreError::io(&path, e);
                    state.failed = Some(error.to_string());
                    return Err(error);
                }
            }
        }
    }

    /// Why an fsync failed, if one did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.state().failed.clone()
    }

    /// The open segment changed, and everything before `synced` is durable.
    fn reset(&self, file: Arc<File>, path: PathBuf, synced: SyncTicket) {
        let mut state = self.state();
        debug_assert!(
            state.queued.is_empty(),
            "a rotation commits the old segment before it switches"
        );
        state.file = file;
        state.path = path;
        state.written = state.written.max(synced);
        state.synced = state.synced.max(synced);
    }

    /// Queues `bytes` for the open segment, to be written by the next fsync's runner;
    /// `through` is where they end. Returns an empty buffer to queue the next records in.
    fn queue_write(&self, bytes: Vec<u8>, through: SyncTicket) -> Vec<u8> {
        let mut state = self.state();
        state.queued.push(bytes);
        state.written = state.written.max(through);
        state.spare.pop().unwrap_or_default()
    }
}

/// The log: the open segment and the numbers of the older ones still on disk.
pub(crate) struct Wal {
    dir: PathBuf,
    file: Arc<File>,
    seq: u64,
    bytes: u64,
    /// Records written to the open segment.
    records: u64,
    /// Records queued since the last write.
    pending_records: u64,
    older: Vec<u64>,
    pending: Vec<u8>,
    group: Arc<GroupCommit>,
    scans: scans::ScansEncoder,
}

impl Wal {
    /// Replays the segments in order from position `from` (segment, record; all of them
    /// without it), cutting each at its last good record (a torn tail after a crash; anything
    /// else is reported the same way), then opens a new segment, numbered after every segment
    /// and after `from`'s, so that nothing written from now on is ever taken for a record
    /// before `from`. Segments before `from` are not read.
    /// Each record read goes to `on_record` at once, so that replay never holds more than
    /// one decoded record.
    pub(crate) fn open(
        dir: &Path,
        from: Option<(u64, u64)>,
        on_record: &mut OnRecord<'_>,
    ) -> Result<Opened, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| StoreError::io(dir, e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut repairs = Vec::new();
        Self::replay(dir, &seqs, from, &mut repairs, on_record)?;
        let next = seqs
            .last()
            .copied()
            .max(from.map(|f| f.0))
            .map_or(1, |s| s + 1);
        let wal = Wal::create_segment(dir, next, seqs)?;
        Ok(Opened { wal, repairs })
    }

    /// Reads the segments `seqs` from `from` on (see [`Wal::open`]), cutting torn tails.
    fn replay(
        dir: &Path,
        seqs: &[u64],
        from: Option<(u64, u64)>,
        repairs: &mut Vec<WalRepair>,
        on_record: &mut OnRecord<'_>,
    ) -> Result<(), StoreError> {
        let (from_seq, from_record) = from.unwrap_or((0, 0));
        for &seq in seqs.iter().filter(|&&seq| seq >= from_seq) {
            let path = dir.join(segment_name(seq));
            let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
            // Mapped rather than read into a buffer: a segment is up to 64 MiB that would stay
            // in the allocator's hands after replay.
            // SAFETY: the store's lock is held, so no other process of ours writes the WAL,
            // and this one writes only the new segment it opens after replay. Every record is
            // checked (length, CRC) before it is decoded. A segment truncated behind the
            // store's back while mapped may cause SIGBUS, as for sealed buckets.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| StoreError::io(&path, e))?;
            let bytes: &[u8] = &map;
            let skip = if seq == from_seq { from_record } else { 0 };
            let good = read_segment(bytes, seq, skip, on_record);
            let total = bytes.len();
            drop(map);
            if good < total {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                file.set_len(good as u64)
                    .and_then(|()| fault::sync(&file, false))
                    .map_err(|e| StoreError::io(&path, e))?;
                repairs.push(WalRepair {
                    segment: path,
                    kept_bytes: good as u64,
                    dropped_bytes: (total - good) as u64,
                });
            }
        }
        Ok(())
    }

    fn create_segment(dir: &Path, seq: u64, older: Vec<u64>) -> Result<Wal, StoreError> {
        let path = dir.join(segment_name(seq));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        fault::write_all(&mut file, SEGMENT_MAGIC)
            .and_then(|()| fault::sync(&file, false))
            .map_err(|e| StoreError::io(&path, e))?;
        sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        let file = Arc::new(file);
        let start = (seq, SEGMENT_MAGIC.len() as u64);
        Ok(Wal {
            dir: dir.to_path_buf(),
            group: Arc::new(GroupCommit {
                state: Mutex::new(SyncState {
                    file: file.clone(),
                    path,
                    written: start,
                    synced: start,
                    queued: Vec::new(),
                    spare: Vec::new(),
                    syncing: false,
                    failed: None,
                }),
                done: Condvar::new(),
            }),
            file,
            seq,
            bytes: start.1,
            records: 0,
            pending_records: 0,
            older,
            pending: Vec::new(),
            scans: scans::ScansEncoder::default(),
        })
    }

    /// The fsyncs appenders share.
    pub(crate) fn group(&self) -> Arc<GroupCommit> {
        self.group.clone()
    }

    /// The open segment's number.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes in the open segment.
    pub(crate) fn segment_bytes(&self) -> u64 {
        self.bytes + self.pending.len() as u64
    }

    /// Where the next record will go: (segment, record number in it). Every record committed
    /// so far is before it.
    pub(crate) fn position(&self) -> (u64, u64) {
        (self.seq, self.records + self.pending_records)
    }

    fn push_record(&mut self, payload: &[u8]) {
        let start = self.open_record();
        self.pending.extend_from_slice(payload);
        self.close_record(start);
    }

    /// Starts a record in the pending bytes, its header left to [`Wal::close_record`]; the
    /// payload is then written in place (events are encoded straight into the pending bytes).
    fn open_record(&mut self) -> usize {
        let start = self.pending.len();
        self.pending.extend_from_slice(&[0; RECORD_HEADER]);
        start
    }

    /// Fills in the header of the record opened at `start`: its payload's length and CRC.
    fn close_record(&mut self, start: usize) {
        let (header, payload) = self.pending[start..].split_at_mut(RECORD_HEADER);
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.pending_records += 1;
    }

    /// Queues a symbols record.
    pub(crate) fn add_symbols<'s>(
        &mut self,
        symbols: impl ExactSizeIterator<Item = (Symbol, &'s str)>,
    ) {
        let mut payload = vec![KIND_SYMBOLS];
        payload.extend_from_slice(&(symbols.len() as u32).to_le_bytes());
        for (id, text) in symbols {
            payload.extend_from_slice(&id.to_le_bytes());
            payload.extend_from_slice(&(text.len() as u32).to_le_bytes());
            payload.extend_from_slice(text.as_bytes());
        }
        self.push_record(&payload);
    }

    /// Queues a positions record.
    pub(crate) fn add_positions(&mut self, positions: &[(String, i64)]) {
        let mut payload = vec![KIND_POSITIONS];
        payload.extend_from_slice(&(positions.len() as u32).to_le_bytes());
        for (name, position) in positions {
            payload.extend_from_slice(&(name.len() as u32).to_le_bytes());
            payload.extend_from_slice(name.as_bytes());
            payload.extend_from_slice(&position.to_le_bytes());
        }
        self.push_record(&payload);
    }

    /// Queues events, each with its site's number if the appender has one ([`SiteNumber`]), in
    /// records of at most 65,536: compact scans records, or 56-byte events records for those
    /// whose times span too far for them.
    pub(crate) fn add_events<'e, I>(&mut self, events: I)
    where
        I: IntoIterator<Item = (&'e ScanEvent, SiteNumber)>,
        I::IntoIter: Clone,
    {
        let mut events = events.into_iter();
        loop {
            let record = events.clone().take(scans::MAX_SCANS);
            let (count, base) = scans::count_and_base_ms(record.clone());
            if count == 0 {
                return;
            }
            // Room for the record's scans at once: grown 32 bytes at a time, a record of
            // 80,000 scans doubled its buffer a dozen times, copying it each time.
            let per_scan = if base.is_some() {
                scans::SCAN_LEN
            } else {
                EVENT_LEN
            };
            self.pending.reserve(RECORD_HEADER + 16 + count * per_scan);
            let start = self.open_record();
            self.pending.push(if base.is_some() {
                KIND_SCANS
            } else {
                KIND_EVENTS
            });
            self.pending
                .extend_from_slice(&(count as u32).to_le_bytes());
            match base {
                Some(base) => self.scans.encode(record, base, &mut self.pending),
                None => record.for_each(|(event, _)| event.encode_record(&mut self.pending)),
            }
            self.close_record(start);
            events.nth(count - 1);
        }
    }

    /// Hands what was queued to the group commit, which writes it (in order) before its next
    /// fsync, and returns the ticket to wait for with [`GroupCommit::wait`]: the appender does
    /// not spend its turn copying records into the kernel. A failed or short write, found by
    /// that wait, leaves a torn tail that replay cuts; the store takes no more changes after it.
    pub(crate) fn write(&mut self) -> SyncTicket {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            self.bytes += bytes.len() as u64;
            self.records += self.pending_records;
            self.pending_records = 0;
            self.pending = self.group.queue_write(bytes, (self.seq, self.bytes));
        }
        self.written()
    }

    /// Where the written bytes end: the ticket that covers every record written so far.
    pub(crate) fn written(&self) -> SyncTicket {
        (self.seq, self.bytes)
    }

    /// Writes what was queued and waits until it is durable.
    pub(crate) fn commit(&mut self) -> Result<(), StoreError> {
        let ticket = self.write();
        self.group.wait(ticket)
    }

    /// Closes the open segment (durable first) and starts the next; the caller then writes the
    /// symbol table. Appenders still waiting on the old segment's tickets are released by it.
    pub(crate) fn rotate(&mut self) -> Result<(), StoreError> {
        self.commit()?;
        let mut older = std::mem::take(&mut self.older);
        older.push(self.seq);
        let group = self.group.clone();
        let next = Wal::create_segment(&self.dir, self.seq + 1, older)?;
        let start = (next.seq, next.bytes);
        group.reset(
            next.file.clone(),
            self.dir.join(segment_name(next.seq)),
            start,
        );
        *self = Wal { group, ..next };
        Ok(())
    }

    /// Deletes older segments for which `deletable` says so.
    pub(crate) fn remove_older(
        &mut self,
        mut deletable: impl FnMut(u64) -> bool,
    ) -> Result<(), StoreError> {
        let mut kept = Vec::new();
        for seq in std::mem::take(&mut self.older) {
            if deletable(seq) {
                let path = self.dir.join(segment_name(seq));
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            } else {
                kept.push(seq);
            }
        }
        self.older = kept;
        sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbtrack_barcode::{Barcode, Imb};
    use imbtrack_feed::{EventCode, HandlingEventType, MailClass, Zip};

    fn event(n: i64) -> ScanEvent {
        ScanEvent {
            barcode: Barcode::Imb(Imb::new("00270123456789123456", "12345678901").unwrap()).key(),
            time_ms: 1_700_000_000_000 + n,
            routing: Zip::parse(b"12345678901").unwrap(),
            facility_zip: Zip::parse(b"94110").unwrap(),
            facility: 1,
            machine: 2,
            code: EventCode::parse(b"918").unwrap(),
            class: MailClass::Mail,
            handling: HandlingEventType::Assumed,
        }
    }

    /// Opens the WAL in `dir`, with the records replay read, in order.
    fn open_collecting(dir: &Path) -> (Opened, Vec<WalRecord>) {
        let mut records = Vec::new();
        let opened = Wal::open(dir, None, &mut |_, record| records.push(record)).unwrap();
        (opened, records)
    }

    /// Events without site numbers, as [`Wal::add_events`] takes them.
    fn unnumbered(events: &[ScanEvent]) -> impl Iterator<Item = (&ScanEvent, SiteNumber)> + Clone {
        events.iter().map(|event| (event, NO_SITE_NUMBER))
    }

    /// [`read_segment`]'s records with their numbers, and where the good ones end.
    fn read_all(bytes: &[u8], skip: u64) -> (Vec<(u64, WalRecord)>, usize) {
        let mut records = Vec::new();
        let good = read_segment(bytes, 1, skip, &mut |(_, index), record| {
            records.push((index, record))
        });
        (records, good)
    }

    /// [`read_all`]'s records alone.
    fn records_of(bytes: &[u8]) -> Vec<WalRecord> {
        read_all(bytes, 0).0.into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (Opened { mut wal, .. }, replayed) = open_collecting(dir.path());
        assert!(replayed.is_empty());
        wal.add_symbols([(1, "SF P&DC"), (2, "DBCS")].into_iter());
        wal.add_events(unnumbered(&[event(1), event(2)]));
        wal.commit().unwrap();
        wal.add_events(unnumbered(&[event(3)]));
        wal.commit().unwrap();
        let path = dir.path().join(segment_name(wal.seq()));
        drop(wal);
        // Tear the last record.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (Opened { repairs, .. }, records) = open_collecting(dir.path());
        assert_eq!(repairs.len(), 1);
        assert_eq!(
            repairs[0].dropped_bytes,
            (RECORD_HEADER + 5 + scans::body_len(1, 1) - 5) as u64
        );
        assert_eq!(
            records[0],
            WalRecord::Symbols(vec![(1, "SF P&DC".into()), (2, "DBCS".into())])
        );
        assert_eq!(records[1], WalRecord::Events(vec![event(1), event(2)]));
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn flipped_bytes_stop_replay_at_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open_collecting(dir.path()).0.wal;
        for n in 0..3 {
            wal.add_events(unnumbered(&[event(n)]));
            wal.commit().unwrap();
        }
        let path = dir.path().join(segment_name(wal.seq()));
        drop(wal);
        let mut bytes = fs::read(&path).unwrap();
        let second_record =
            SEGMENT_MAGIC.len() + RECORD_HEADER + 5 + scans::body_len(1, 1) + RECORD_HEADER + 20;
        bytes[second_record] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (Opened { repairs, .. }, records) = open_collecting(dir.path());
        assert_eq!(records, vec![WalRecord::Events(vec![event(0)])]);
        assert_eq!(
            repairs[0].kept_bytes as usize,
            SEGMENT_MAGIC.len() + RECORD_HEADER + 5 + scans::body_len(1, 1)
        );
    }

    #[test]
    fn every_truncation_of_the_last_record_keeps_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open_collecting(dir.path()).0.wal;
        wal.add_events(unnumbered(&[event(0)]));
        wal.commit().unwrap();
        wal.add_events(unnumbered(&[event(1), event(2)]));
        wal.commit().unwrap();
        let path = dir.path().join(segment_name(wal.seq()));
        drop(wal);
        let full = fs::read(&path).unwrap();
        let first_end = SEGMENT_MAGIC.len() + RECORD_HEADER + 5 + scans::body_len(1, 1);
        for cut in first_end..full.len() {
            let (records, good) = read_all(&full[..cut], 0);
            assert_eq!(good, first_end, "cut at {cut}");
            assert_eq!(records, vec![(0, WalRecord::Events(vec![event(0)]))]);
        }
        assert_eq!(records_of(&full).len(), 2);
        // Skipped records are checked, not handed over; the others keep their numbers.
        assert_eq!(
            read_all(&full, 1),
            (
                vec![(1, WalRecord::Events(vec![event(1), event(2)]))],
                full.len()
            )
        );
        assert_eq!(read_all(&full, 5), (vec![], full.len()));
    }

    #[test]
    fn scans_far_apart_in_time_are_logged_in_the_long_form() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open_collecting(dir.path()).0.wal;
        let far = [event(0), event(1 << 40)];
        wal.add_events(unnumbered(&far));
        wal.add_events(unnumbered(&[event(5), event(7)]));
        wal.commit().unwrap();
        let bytes = fs::read(dir.path().join(segment_name(wal.seq()))).unwrap();
        let long = SEGMENT_MAGIC.len() + RECORD_HEADER;
        assert_eq!(bytes[long], KIND_EVENTS);
        assert_eq!(bytes[long + 5 + 2 * EVENT_LEN + RECORD_HEADER], KIND_SCANS);
        assert_eq!(
            records_of(&bytes),
            vec![
                WalRecord::Events(far.to_vec()),
                WalRecord::Events(vec![event(5), event(7)])
            ]
        );
    }

    /// A segment written before the compact record (kind 2 events, committed from an older
    /// build) still reads, and its events logged again round-trip through the compact form.
    #[test]
    fn segments_of_56_byte_records_still_read() {
        let old = include_bytes!("../tests/data/segment-kind2.wal");
        let (records, good) = read_all(old, 0);
        assert_eq!(good, old.len());
        let Some((_, WalRecord::Events(events))) = records.last() else {
            panic!("no events record: {records:?}");
        };
        assert_eq!(events.len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open_collecting(dir.path()).0.wal;
        wal.add_events(unnumbered(events));
        wal.commit().unwrap();
        let bytes = fs::read(dir.path().join(segment_name(wal.seq()))).unwrap();
        assert_eq!(bytes[SEGMENT_MAGIC.len() + RECORD_HEADER], KIND_SCANS);
        assert_eq!(records_of(&bytes), vec![WalRecord::Events(events.clone())]);
    }

    #[test]
    fn an_empty_segment_left_by_a_crash_replays_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment_name(4)), b"").unwrap();
        let (Opened { wal, .. }, records) = open_collecting(dir.path());
        assert!(records.is_empty());
        assert_eq!(wal.seq(), 5);
    }
}
