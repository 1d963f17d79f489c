//! Format detection, framing and chunking: from a feed's bytes to [`ScanEvent`]s, on one
//! thread or several.

use std::borrow::Cow;
use std::io::{self, Read};
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use memchr::{memchr, memchr_iter};
use rayon::prelude::*;
use serde_json::value::RawValue;

use crate::delimited::Header;
use crate::event::{ScanEvent, SymbolTable};
use crate::json::{JsonObject, JsonRecord};
use crate::record::{build_event, FeedOptions, RawRecord};
use crate::reject::{ParseReport, RejectList, RejectReason, RejectSink};
use crate::time::RecentDays;

/// A feed format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// IV-MTR delimited file with a header row (`|` or `,`).
    Delimited,
    /// IV-MTR JSON push body, array of events, or JSON lines.
    Json,
    /// Legacy IMb Tracing records, headerless or with their own header names.
    Legacy,
}

impl FromStr for Format {
    type Err = String;

    /// `psv`, `csv` (or `delimited`), `json`, `legacy`.
    fn from_str(name: &str) -> Result<Format, String> {
        match name.to_ascii_lowercase().as_str() {
            "psv" | "csv" | "delimited" => Ok(Format::Delimited),
            "json" | "jsonl" | "ndjson" => Ok(Format::Json),
            "legacy" => Ok(Format::Legacy),
            other => Err(format!("unknown format {other:?} (psv, csv, json, legacy)")),
        }
    }
}

/// A fault of a whole feed, as opposed to one of its records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The header row of a delimited feed lacks a required column or cannot be read.
    #[error("bad header row: {0}")]
    Header(String),
    /// The input starts like gzip but does not decompress.
    #[error("gzip input does not decompress: {0}")]
    Gzip(io::Error),
    /// Writing to the rejects sink failed.
    #[error("cannot write rejects: {0}")]
    Rejects(io::Error),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How the body of a feed is framed.
#[derive(Debug, Clone)]
enum Body {
    /// One record a line from `start`: delimited rows (with their header) or JSON lines (none).
    Lines {
        header: Option<Header>,
        start: usize,
        first_line: u64,
    },
    /// One JSON document: an envelope, an array of events, or a single event.
    Document,
}

/// A feed decompressed, its format detected and its header read, ready to be cut into chunks
/// that parse independently.
#[derive(Debug)]
pub struct PreparedFeed<'a> {
    data: Cow<'a, [u8]>,
    body: Body,
    format: Format,
}

/// A run of whole records of a [`PreparedFeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    start: usize,
    end: usize,
}

impl Chunk {
    /// Bytes in the chunk.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What parsing one chunk produced. Symbols are the chunk's own until merged.
#[derive(Debug, Default)]
pub struct ChunkOutput {
    /// Accepted events, in input order.
    pub events: Vec<ScanEvent>,
    /// The symbols the events' facility and machine ids refer to.
    pub symbols: SymbolTable,
    /// Rejected records, in input order, their lines counted from the chunk's first line as 0
    /// until [`LineNumbers::place`] numbers them in the feed.
    pub rejects: RejectList,
    /// Lines the chunk spans.
    pub lines: u64,
    /// Counts.
    pub report: ParseReport,
}

/// Numbers chunks' rejects in their feed, chunk after chunk in feed order: a chunk knows its
/// lines only once parsed, so cutting a feed into chunks needs no pass counting them.
#[derive(Debug, Clone, Copy)]
pub struct LineNumbers {
    next: u64,
}

impl LineNumbers {
    /// Gives `output`'s rejects their line numbers in the feed; `output` is the chunk after
    /// the one placed before (the feed's first, at first).
    pub fn place(&mut self, output: &mut ChunkOutput) {
        for reject in &mut output.rejects.rejects {
            reject.0 += self.next;
        }
        self.next += output.lines;
    }
}

/// A whole parsed feed.
#[derive(Debug, Default)]
pub struct ParsedFeed {
    /// Accepted events, in input order.
    pub events: Vec<ScanEvent>,
    /// The symbols of the events' facility and machine ids.
    pub symbols: SymbolTable,
    /// Counts.
    pub report: ParseReport,
}

fn first_line(data: &[u8]) -> &[u8] {
    let end = memchr(b'\n', data).unwrap_or(data.len());
    data[..end].strip_suffix(b"\r").unwrap_or(&data[..end])
}

impl<'a> PreparedFeed<'a> {
    /// Decompresses gzip (by its magic bytes), skips a UTF-8 BOM, detects the format unless
    /// `format` names it, and reads the header row of a delimited feed.
    pub fn prepare(input: &'a [u8], format: Option<Format>) -> Result<PreparedFeed<'a>, FeedError> {
        let data: Cow<'a, [u8]> = if input.starts_with(&GZIP_MAGIC) {
            let mut out = Vec::with_capacity(input.len() * 4);
            MultiGzDecoder::new(input)
                .read_to_end(&mut out)
                .map_err(FeedError::Gzip)?;
            Cow::Owned(out)
        } else {
            Cow::Borrowed(input)
        };
        let start = if data.starts_with(UTF8_BOM) {
            UTF8_BOM.len()
        } else {
            0
        };
        let text = &data[start..];
        let first_byte = text.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let format = format.unwrap_or(match first_byte {
            Some(b'{' | b'[') => Format::Json,
            _ if Header::is_legacy_record(first_line(text)) => Format::Legacy,
            _ => Format::Delimited,
        });
        let body = match format {
            // Nothing but whitespace: an empty feed, whatever its format.
            _ if first_byte.is_none() => Body::Lines {
                header: None,
                start,
                first_line: 1,
            },
            Format::Json => {
                if serde_json::from_slice::<&RawValue>(text).is_ok() {
                    Body::Document
                } else {
                    Body::Lines {
                        header: None,
                        start,
                        first_line: 1,
                    }
                }
            }
            Format::Legacy if Header::is_legacy_record(first_line(text)) => Body::Lines {
                header: Some(Header::legacy()),
                start,
                first_line: 1,
            },
            Format::Legacy | Format::Delimited => {
                let line = first_line(text);
                let after = memchr(b'\n', text).map_or(text.len(), |i| i + 1);
                Body::Lines {
                    header: Some(Header::parse(line)?),
                    start: start + after,
                    first_line: 2,
                }
            }
        };
        Ok(PreparedFeed { data, body, format })
    }

    /// This feed read the general way only, without the plain rows' reader (its twin in the
    /// tests).
    #[cfg(test)]
    pub(crate) fn general_only(mut self) -> PreparedFeed<'a> {
        if let Body::Lines {
            header: Some(header),
            ..
        } = &mut self.body
        {
            *header = header.general_only();
        }
        self
    }

    /// This feed with its plain rows' blocks scanned sixteen bytes at a time, whatever the
    /// processor: the twin the tests compare the whole-block scan with.
    #[cfg(test)]
    pub(crate) fn narrow_scan_only(mut self) -> PreparedFeed<'a> {
        if let Body::Lines {
            header: Some(header),
            ..
        } = &mut self.body
        {
            *header = header.narrow_scan_only();
        }
        self
    }

    /// The header of a delimited feed.
    #[cfg(test)]
    pub(crate) fn header(&self) -> Option<&Header> {
        match &self.body {
            Body::Lines { header, .. } => header.as_ref(),
            Body::Document => None,
        }
    }

    /// The format found (or given).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Size of the (decompressed) feed in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the feed is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Cuts the body into chunks of whole records, each starting at or after the given cut
    /// offsets moved forward to the next line start. A JSON document is one chunk.
    pub fn chunks_at(&self, cuts: &[usize]) -> Vec<Chunk> {
        let start = match self.body {
            Body::Document => {
                return vec![Chunk {
                    start: 0,
                    end: self.data.len(),
                }]
            }
            Body::Lines { start, .. } => start,
        };
        let end = self.data.len();
        let mut bounds = vec![start];
        for &cut in cuts {
            let cut = cut.clamp(start, end);
            let next = if cut == start {
                start
            } else {
                memchr(b'\n', &self.data[cut - 1..]).map_or(end, |i| cut + i)
            };
            if next > *bounds.last().unwrap_or(&start) && next < end {
                bounds.push(next);
            }
        }
        bounds.push(end);
        bounds
            .windows(2)
            .map(|w| Chunk {
                start: w[0],
                end: w[1],
            })
            .collect()
    }

    /// Numbers its chunks' rejects from the feed's first record on (see [`LineNumbers`]).
    pub fn line_numbers(&self) -> LineNumbers {
        LineNumbers {
            next: match self.body {
                Body::Document => 1,
                Body::Lines { first_line, .. } => first_line,
            },
        }
    }

    /// About `count` chunks of similar size.
    pub fn chunks(&self, count: usize) -> Vec<Chunk> {
        let count = count.max(1);
        let step = self.data.len() / count + 1;
        let cuts: Vec<usize> = (1..count).map(|i| i * step).collect();
        self.chunks_at(&cuts)
    }

    /// Parses one chunk.
    pub fn parse_chunk(&self, chunk: Chunk, options: &FeedOptions) -> ChunkOutput {
        self.parse_chunk_into(chunk, options, Vec::new())
    }

    /// [`PreparedFeed::parse_chunk`] into `events` (emptied first): a caller that parses chunk
    /// after chunk hands back an earlier chunk's buffer, whose pages are already in memory,
    /// instead of faulting in a fresh one each time.
    pub fn parse_chunk_into(
        &self,
        chunk: Chunk,
        options: &FeedOptions,
        mut events: Vec<ScanEvent>,
    ) -> ChunkOutput {
        events.clear();
        let mut out = ChunkOutput {
            events,
            ..ChunkOutput::default()
        };
        let bytes = &self.data[chunk.start..chunk.end];
        match &self.body {
            Body::Document => parse_document(bytes, options, &mut out),
            Body::Lines { header, .. } => parse_lines(bytes, header.as_ref(), options, &mut out),
        }
        out
    }
}

/// Accepts or rejects one record into `out`.
fn take(
    out: &mut ChunkOutput,
    line: u64,
    index: Option<u64>,
    raw: &[u8],
    result: Result<ScanEvent, RejectReason>,
) {
    match result {
        Ok(event) => {
            out.report.records += 1;
            out.report.accepted += 1;
            out.events.push(event);
        }
        Err(reason) => {
            out.report.count_reject(&reason);
            out.rejects
                .rejects
                .push((line, index, reason, raw.to_vec()));
        }
    }
}

/// Fewest bytes a record takes in practice, to size the event buffer once: reserving more than
/// is used costs nothing (pages never touched are never faulted in), while a guess too high
/// made the buffer double, copy and fault in fresh pages (IV-MTR delimited records run
/// 100–130 bytes, JSON ones more).
const BYTES_PER_RECORD_GUESS: usize = 64;

/// Rows in a row the plain rows' reader leaves to the general one before a chunk's rows are
/// no longer offered to it (a row of a feed of good plain rows is left only when it is bad).
const GIVE_UP_PLAIN_ROWS_AFTER: u32 = 32;

fn parse_lines(
    bytes: &[u8],
    header: Option<&Header>,
    options: &FeedOptions,
    out: &mut ChunkOutput,
) {
    out.events.reserve(bytes.len() / BYTES_PER_RECORD_GUESS);
    let mut fields = Vec::new();
    // One record for every row without quotes: each sets all its columns (`read_unquoted`), so
    // the record is not emptied (15 slices) a row.
    let mut row = RawRecord::default();
    let mut line_no = 0;
    let mut start = 0;
    let mut plain_rows = header.and_then(Header::plain_rows);
    let mut rows_not_plain = 0;
    let mut recent_days = RecentDays::default();
    while start < bytes.len() {
        if let Some(reader) = plain_rows {
            let (rows, after) = reader.read_rows(
                bytes,
                start,
                options,
                &mut out.symbols,
                &mut recent_days,
                &mut out.events,
            );
            if rows > 0 {
                out.report.records += rows;
                out.report.accepted += rows;
                line_no += rows;
                start = after;
                rows_not_plain = 0;
                continue;
            }
            // A feed whose values have another form (fractions of a second, say) is read the
            // general way without a try at each row first.
            rows_not_plain += 1;
            if rows_not_plain == GIVE_UP_PLAIN_ROWS_AFTER {
                plain_rows = None;
            }
        }
        let end = memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let raw = &bytes[start..end];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let this_line = line_no;
        line_no += 1;
        start = end + 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        if line.len() > options.max_record_len {
            take(
                out,
                this_line,
                None,
                line,
                Err(RejectReason::TooLong { len: line.len() }),
            );
            continue;
        }
        // UTF-8 is checked field by field where text is used (`RawRecord::text`), and by
        // serde_json for JSON: a second pass over every line would cost a tenth of the parse.
        match header {
            Some(header) => {
                let result = match header.read_unquoted(line, &mut row) {
                    Some(read) => read.and_then(|()| build_event(&row, options, &mut out.symbols)),
                    None => {
                        let mut record = RawRecord::default();
                        header
                            .read_quoted(line, &mut fields, &mut record)
                            .and_then(|()| build_event(&record, options, &mut out.symbols))
                    }
                };
                take(out, this_line, None, line, result);
            }
            None => match serde_json::from_slice::<JsonObject<'_>>(line) {
                Err(e) => take(
                    out,
                    this_line,
                    None,
                    line,
                    Err(RejectReason::MalformedJson(e.to_string())),
                ),
                Ok(object) if object.is_envelope() => {
                    let (events, inherited) = object.event_list();
                    for (index, event) in events.into_iter().enumerate() {
                        let result = json_event(event, &inherited, options, &mut out.symbols);
                        take(
                            out,
                            this_line,
                            Some(index as u64),
                            event.get().as_bytes(),
                            result,
                        );
                    }
                }
                Ok(object) => {
                    let result = build_event(&object.fields.raw(), options, &mut out.symbols);
                    take(out, this_line, None, line, result);
                }
            },
        }
    }
    out.lines = line_no;
}

fn json_event(
    event: &RawValue,
    inherited: &JsonRecord<'_>,
    options: &FeedOptions,
    symbols: &mut SymbolTable,
) -> Result<ScanEvent, RejectReason> {
    let text = event.get();
    if text.len() > options.max_record_len {
        return Err(RejectReason::TooLong { len: text.len() });
    }
    let object: JsonObject<'_> =
        serde_json::from_str(text).map_err(|e| RejectReason::MalformedJson(e.to_string()))?;
    let record = object.fields.inherit(inherited);
    build_event(&record.raw(), options, symbols)
}

/// A whole JSON document: envelope, array of events, or one event. Each event is located by
/// its line (counted up to where it starts) and its index in the array.
fn parse_document(bytes: &[u8], options: &FeedOptions, out: &mut ChunkOutput) {
    let base = bytes.as_ptr() as usize;
    /// What the document holds.
    enum Document<'a> {
        Events(Vec<&'a RawValue>, JsonRecord<'a>),
        Event(JsonObject<'a>),
    }
    let document = serde_json::from_slice::<&RawValue>(bytes).and_then(|raw| {
        if raw.get().starts_with('[') {
            serde_json::from_str(raw.get())
                .map(|events| Document::Events(events, JsonRecord::default()))
        } else {
            let object: JsonObject<'_> = serde_json::from_str(raw.get())?;
            Ok(if object.is_envelope() {
                let (events, inherited) = object.event_list();
                Document::Events(events, inherited)
            } else {
                Document::Event(object)
            })
        }
    });
    let (events, inherited) = match document {
        Ok(Document::Events(events, inherited)) => (events, inherited),
        Ok(Document::Event(object)) => {
            let result = build_event(&object.fields.raw(), options, &mut out.symbols);
            return take(out, 0, None, bytes, result);
        }
        Err(e) => {
            return take(
                out,
                0,
                None,
                bytes,
                Err(RejectReason::MalformedJson(e.to_string())),
            )
        }
    };
    let (mut line, mut counted_to) = (0u64, 0usize);
    for (index, event) in events.into_iter().enumerate() {
        let offset = (event.get().as_ptr() as usize)
            .saturating_sub(base)
            .min(bytes.len());
        line += memchr_iter(b'\n', &bytes[counted_to..offset]).count() as u64;
        counted_to = offset;
        let result = json_event(event, &inherited, options, &mut out.symbols);
        take(
            out,
            line,
            Some(index as u64),
            event.get().as_bytes(),
            result,
        );
    }
}

/// Replays a chunk's rejects into the sink and folds its events and symbols into `feed`.
fn merge(
    feed: &mut ParsedFeed,
    chunk: ChunkOutput,
    source: &str,
    rejects: &mut dyn RejectSink,
) -> Result<(), FeedError> {
    chunk
        .rejects
        .replay(source, rejects)
        .map_err(FeedError::Rejects)?;
    feed.report.merge(&chunk.report);
    if feed.events.is_empty() && feed.symbols.is_empty() {
        feed.symbols = chunk.symbols;
        feed.events = chunk.events;
        return Ok(());
    }
    let remap = feed.symbols.absorb(&chunk.symbols);
    feed.events
        .extend(chunk.events.into_iter().map(|mut event| {
            event.facility = remap[event.facility as usize];
            event.machine = remap[event.machine as usize];
            event
        }));
    Ok(())
}

/// Parses a whole feed on the calling thread.
pub fn parse_feed(
    source: &str,
    input: &[u8],
    options: &FeedOptions,
    rejects: &mut dyn RejectSink,
) -> Result<ParsedFeed, FeedError> {
    parse_feed_at(source, input, options, rejects, &[])
}

/// Parses a whole feed cut at (about) the given offsets, the chunks in parallel on rayon's
/// pool; the result is the same as [`parse_feed`]'s wherever the cuts fall.
pub fn parse_feed_at(
    source: &str,
    input: &[u8],
    options: &FeedOptions,
    rejects: &mut dyn RejectSink,
    cuts: &[usize],
) -> Result<ParsedFeed, FeedError> {
    let feed = PreparedFeed::prepare(input, options.format)?;
    let chunks = feed.chunks_at(cuts);
    merge_outputs(&feed, chunks, source, options, rejects)
}

/// Parses a whole feed in about `threads × 4` chunks on rayon's pool.
pub fn parse_feed_parallel(
    source: &str,
    input: &[u8],
    options: &FeedOptions,
    rejects: &mut dyn RejectSink,
    threads: usize,
) -> Result<ParsedFeed, FeedError> {
    let feed = PreparedFeed::prepare(input, options.format)?;
    let chunks = feed.chunks(threads.max(1) * 4);
    merge_outputs(&feed, chunks, source, options, rejects)
}

fn merge_outputs(
    feed: &PreparedFeed<'_>,
    chunks: Vec<Chunk>,
    source: &str,
    options: &FeedOptions,
    rejects: &mut dyn RejectSink,
) -> Result<ParsedFeed, FeedError> {
    let outputs: Vec<ChunkOutput> = chunks
        .into_par_iter()
        .map(|chunk| feed.parse_chunk(chunk, options))
        .collect();
    let mut parsed = ParsedFeed::default();
    // Room for every chunk's events once the first is in: growing by doubling copied the
    // events several times over, each time into freshly faulted pages.
    let total: usize = outputs.iter().map(|output| output.events.len()).sum();
    let mut lines = feed.line_numbers();
    for mut output in outputs {
        lines.place(&mut output);
        merge(&mut parsed, output, source, rejects)?;
        parsed.events.reserve_exact(total - parsed.events.len());
    }
    Ok(parsed)
}
