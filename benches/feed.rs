//! Feed parsing throughput against plain line splitting of the same bytes, on a clean generated
//! IV-MTR delimited feed (its columns as the generator writes them, and as IV-MTR files list
//! them: alphabetically, with columns imbtrack does not read) and its JSON form. Run: `cargo
//! bench -p imbtrack-feed --bench feed`.

#![allow(clippy::unwrap_used)] // a panic is how a bench reports a wrong setup

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imbtrack_feed::time::{days_from_civil, parse_timestamp};
use imbtrack_feed::{
    generate, parse_feed_parallel, DiscardRejects, FeedOptions, GenFormat, GenOptions, PreparedFeed,
};
use memchr::memchr_iter;

const PIECES: u64 = 200_000;

fn feed(format: GenFormat) -> (Vec<u8>, u64) {
    let mut options = GenOptions::new(PIECES, days_from_civil(2025, 1, 10));
    options.days = 3;
    options.format = format;
    let mut bytes = Vec::new();
    let summary = generate(&options, &mut bytes, |_| {}).unwrap();
    (bytes, summary.records)
}

/// The baseline: every line found and touched, nothing parsed.
fn split_lines(bytes: &[u8]) -> usize {
    let mut start = 0;
    let mut total = 0;
    for end in memchr_iter(b'\n', bytes) {
        total += black_box(&bytes[start..end]).len();
        start = end + 1;
    }
    total
}

/// The delimited feed with its columns in alphabetical order, as IV-MTR files list them, and
/// three more that imbtrack does not read, as real files carry (values of typical widths).
fn alphabetical(psv: &[u8]) -> Vec<u8> {
    let mut lines = psv.split(|&b| b == b'\n').filter(|line| !line.is_empty());
    let header: Vec<&[u8]> = lines.next().unwrap().split(|&b| b == b'|').collect();
    let unread: [(&[u8], &[u8]); 3] = [
        (b"edocJobId", b"A1B2C3D4E5"),
        (b"mailPhase", b"Phase 2 - Processing"),
        (b"scannerType", b"MPE"),
    ];
    let mut names: Vec<&[u8]> = header.iter().copied().chain(unread.map(|u| u.0)).collect();
    names.sort_by_key(|name| name.to_ascii_lowercase());
    // Each output column: the generator's column it comes from, or an unread column's value.
    let sources: Vec<Result<usize, &[u8]>> = names
        .iter()
        .map(|name| match header.iter().position(|h| h == name) {
            Some(column) => Ok(column),
            None => Err(unread.iter().find(|u| u.0 == *name).unwrap().1),
        })
        .collect();
    let mut out = names.join(&b'|');
    for line in lines {
        let values: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
        out.push(b'\n');
        let row: Vec<&[u8]> = sources
            .iter()
            .map(|source| match source {
                Ok(column) => values[*column],
                Err(value) => value,
            })
            .collect();
        out.extend_from_slice(&row.join(&b'|'));
    }
    out.push(b'\n');
    out
}

fn bench_feed(c: &mut Criterion, name: &str, bytes: Vec<u8>, records: u64) {
    let options = FeedOptions::at(parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap());
    // Check the work before timing it: every record accepted.
    let prepared = PreparedFeed::prepare(&bytes, None).unwrap();
    let out = prepared.parse_chunk(prepared.chunks(1)[0], &options);
    assert_eq!((out.report.accepted, out.report.rejected), (records, 0));
    let setup = || (&bytes, &records);
    let mut group = c.benchmark_group(format!("feed_{name}"));
    group.throughput(Throughput::Elements(records));
    group.sample_size(10);
    group.bench_function("split_lines", |b| {
        let (bytes, _) = setup();
        b.iter(|| split_lines(black_box(bytes)))
    });
    group.bench_function("parse_one_thread", |b| {
        let (bytes, _) = setup();
        let prepared = PreparedFeed::prepare(bytes, None).unwrap();
        let whole = prepared.chunks(1)[0];
        // As the engine parses chunk after chunk: into the last chunk's event buffer.
        let mut events = Vec::new();
        b.iter(|| {
            let out =
                prepared.parse_chunk_into(whole, black_box(&options), std::mem::take(&mut events));
            events = out.events;
            events.len()
        })
    });
    group.bench_function("parse_parallel", |b| {
        let (bytes, records) = setup();
        b.iter(|| {
            let parsed =
                parse_feed_parallel("bench", black_box(bytes), &options, &mut DiscardRejects, 2)
                    .unwrap();
            assert_eq!(parsed.report.accepted, *records);
        })
    });
    group.finish();
}

fn psv(c: &mut Criterion) {
    let (bytes, records) = feed(GenFormat::Psv);
    bench_feed(c, "psv", bytes, records);
}

fn psv_alphabetical(c: &mut Criterion) {
    let (bytes, records) = feed(GenFormat::Psv);
    bench_feed(c, "psv_alphabetical", alphabetical(&bytes), records);
}

fn json(c: &mut Criterion) {
    let (bytes, records) = feed(GenFormat::Json);
    bench_feed(c, "json", bytes, records);
}

criterion_group!(benches, psv, psv_alphabetical, json);
criterion_main!(benches);
