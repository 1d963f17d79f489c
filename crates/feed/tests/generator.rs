//! The generator's output parses back to exactly the events it meant, every bad record is
//! rejected for the reason it was spoiled for, and chunked parsing equals one-thread parsing.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::collections::{HashMap, HashSet};

use imbtrack_barcode::{Barcode, BarcodeKind};
use imbtrack_feed::time::{days_from_civil, parse_timestamp};
use imbtrack_feed::{
    generate, parse_feed, parse_feed_at, FeedOptions, GenFormat, GenOptions, GeneratedLine,
    LineKind, ParsedFeed, RejectList,
};
use proptest::prelude::*;

fn gen_options(pieces: u64, format: GenFormat, bad_share: f64) -> GenOptions {
    let mut options = GenOptions::new(pieces, days_from_civil(2025, 1, 10));
    options.days = 3;
    options.seed = 42;
    options.bad_share = bad_share;
    options.format = format;
    options
}

fn feed_options() -> FeedOptions {
    FeedOptions::at(parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap())
}

fn generated(options: &GenOptions) -> (Vec<u8>, Vec<GeneratedLine>, imbtrack_feed::GenSummary) {
    let mut bytes = Vec::new();
    let mut lines = Vec::new();
    let summary = generate(options, &mut bytes, |line| lines.push(line.clone())).unwrap();
    (bytes, lines, summary)
}

fn round_trip(format: GenFormat) {
    let options = gen_options(3_000, format, 0.02);
    let (bytes, lines, summary) = generated(&options);
    assert_eq!(summary.bytes as usize, bytes.len());
    assert_eq!(summary.records as usize, lines.len());
    assert_eq!(
        summary.scans + summary.duplicates + summary.bad,
        summary.records
    );
    assert!(
        summary.bad > 50 && summary.duplicates > 50 && summary.late > 50,
        "{summary:?}"
    );

    let mut rejects = RejectList::default();
    let parsed = parse_feed("gen", &bytes, &feed_options(), &mut rejects).unwrap();
    let report = &parsed.report;
    assert_eq!(report.records, summary.records);
    assert_eq!(report.accepted, summary.scans + summary.duplicates);
    assert_eq!(report.rejected, summary.bad);
    for (reason, count) in &summary.bad_by_reason {
        assert_eq!(
            report.rejects_by_reason.get(reason),
            Some(count),
            "{reason}"
        );
    }

    // Each reject is the bad record the generator wrote at that place, for that reason.
    let bad: HashMap<(u64, Option<u64>), &str> = lines
        .iter()
        .filter_map(|l| match l.kind {
            LineKind::Bad(reason) => Some(((l.line, l.index), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), rejects.rejects.len());
    for (line, index, reason, _) in &rejects.rejects {
        assert_eq!(
            bad.get(&(*line, *index)),
            Some(&reason.code()),
            "line {line} index {index:?}"
        );
    }

    // Accepted events are the good and duplicate records, in order, field for field.
    let meant: Vec<&GeneratedLine> = lines
        .iter()
        .filter(|l| !matches!(l.kind, LineKind::Bad(_)))
        .collect();
    assert_eq!(meant.len(), parsed.events.len());
    for (event, line) in parsed.events.iter().zip(&meant) {
        assert_eq!(event.barcode, line.barcode);
        assert_eq!(event.time_ms, line.time_ms);
        assert_eq!(event.code, line.code);
        assert_eq!(event.facility_zip, line.facility_zip);
        assert_eq!(event.routing, line.routing);
        assert_eq!(event.class, line.class);
        assert_eq!(event.handling, line.handling);
        assert_eq!(parsed.symbols.facility(event.facility), line.facility);
        assert_eq!(parsed.symbols.get(event.machine), line.machine);
    }
    let distinct: HashSet<_> = parsed.events.iter().map(|e| e.identity()).collect();
    assert_eq!(distinct.len() as u64, summary.scans);
}

#[test]
fn psv_round_trip() {
    round_trip(GenFormat::Psv);
}

#[test]
fn json_round_trip() {
    round_trip(GenFormat::Json);
}

#[test]
fn deterministic_for_a_seed() {
    let options = gen_options(500, GenFormat::Psv, 0.01);
    let (a, _, _) = generated(&options);
    let (b, _, _) = generated(&options);
    assert_eq!(a, b);
    let mut other = options.clone();
    other.seed = 43;
    assert_ne!(generated(&other).0, a);
}

#[test]
fn realistic_mix() {
    let (_, lines, summary) = generated(&gen_options(4_000, GenFormat::Psv, 0.0));
    let good: Vec<&GeneratedLine> = lines.iter().filter(|l| l.kind == LineKind::Good).collect();
    let mut scans_per_piece: HashMap<_, usize> = HashMap::new();
    let (mut mid_lengths, mut routing_lengths) = (HashSet::new(), HashSet::new());
    let mut packages = HashSet::new();
    for line in &good {
        *scans_per_piece.entry(line.barcode).or_default() += 1;
        match line.barcode.to_barcode() {
            Barcode::Imb(imb) => {
                mid_lengths.insert(imb.mailer_id().len());
                routing_lengths.insert(imb.routing().len());
            }
            Barcode::Impb(impb) => {
                packages.insert(line.barcode);
                mid_lengths.insert(100 + impb.mailer_id().unwrap().len());
            }
            Barcode::Imcb(_) => panic!("no containers"),
        }
    }
    assert_eq!(scans_per_piece.len() as u64, summary.pieces);
    assert!(scans_per_piece.values().all(|n| (3..=8).contains(n)));
    assert_eq!(mid_lengths, HashSet::from([6, 9, 106, 109]));
    assert_eq!(routing_lengths, HashSet::from([0, 5, 9, 11]));
    let share = packages.len() as f64 / summary.pieces as f64;
    assert!((0.15..0.25).contains(&share), "{share}");
    assert!(good.iter().all(|l| l.barcode.kind() != BarcodeKind::Imcb));
}

fn resolved(parsed: &ParsedFeed) -> Vec<(u128, i64, String, String, String)> {
    parsed
        .events
        .iter()
        .map(|e| {
            let facility = parsed.symbols.facility(e.facility);
            (
                e.barcode.as_u128(),
                e.time_ms,
                e.code.to_string(),
                facility.name.to_string(),
                parsed.symbols.get(e.machine).to_string(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Cutting the feed anywhere (cuts move to the next record) gives the same events, symbols
    /// and rejects as parsing it whole.
    #[test]
    fn chunked_equals_whole(json in any::<bool>(), cuts in proptest::collection::vec(0usize..200_000, 0..12)) {
        let format = if json { GenFormat::Json } else { GenFormat::Psv };
        let (bytes, _, _) = generated(&gen_options(400, format, 0.05));
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 10)).collect();
        let (mut whole_rejects, mut chunked_rejects) = (RejectList::default(), RejectList::default());
        let whole = parse_feed("g", &bytes, &feed_options(), &mut whole_rejects).unwrap();
        let chunked = parse_feed_at("g", &bytes, &feed_options(), &mut chunked_rejects, &cuts).unwrap();
        prop_assert_eq!(resolved(&whole), resolved(&chunked));
        prop_assert_eq!(&whole.report, &chunked.report);
        prop_assert_eq!(whole_rejects.rejects, chunked_rejects.rejects);
    }
}

/// Cuts at the edges: empty input, a cut at every line start of a small feed, and a cut past
/// the end.
#[test]
fn chunk_boundary_seeds() {
    let (bytes, _, _) = generated(&gen_options(30, GenFormat::Psv, 0.1));
    let mut rejects = RejectList::default();
    let whole = parse_feed("g", &bytes, &feed_options(), &mut rejects).unwrap();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    for cuts in [
        vec![],
        line_starts.clone(),
        line_starts.iter().map(|c| c + 1).collect(),
        vec![bytes.len() + 5],
    ] {
        let chunked = parse_feed_at(
            "g",
            &bytes,
            &feed_options(),
            &mut RejectList::default(),
            &cuts,
        )
        .unwrap();
        assert_eq!(resolved(&whole), resolved(&chunked));
    }
    for empty in [&b""[..], b"\n\r\n  \n"] {
        let parsed = parse_feed("e", empty, &feed_options(), &mut rejects).unwrap();
        assert_eq!(parsed.report.records, 0);
    }
}
