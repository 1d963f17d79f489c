//! Every format and variant, read from the fixture files in `data/feeds/`.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use imbtrack_barcode::Barcode;
use imbtrack_feed::time::{format_utc, parse_timestamp};
use imbtrack_feed::{
    parse_feed, FeedOptions, Format, HandlingEventType, MailClass, ParsedFeed, RejectList,
    ScanEvent,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../data/feeds/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn options() -> FeedOptions {
    FeedOptions::at(parse_timestamp(b"2025-01-20T00:00:00Z", None).unwrap())
}

fn parse_with(name: &str, options: &FeedOptions) -> (ParsedFeed, RejectList) {
    let mut rejects = RejectList::default();
    let parsed = parse_feed(name, &fixture(name), options, &mut rejects).unwrap();
    assert_eq!(
        parsed.report.records,
        parsed.report.accepted + parsed.report.rejected
    );
    assert_eq!(parsed.report.rejected as usize, rejects.rejects.len());
    (parsed, rejects)
}

fn parse(name: &str) -> (ParsedFeed, RejectList) {
    parse_with(name, &options())
}

fn barcode(event: &ScanEvent) -> String {
    event.barcode.to_barcode().to_string()
}

/// (barcode, UTC time, code, facility ZIP) of each event.
fn summary(parsed: &ParsedFeed) -> Vec<(String, String, String, String)> {
    parsed
        .events
        .iter()
        .map(|e| {
            (
                barcode(e),
                format_utc(e.time_ms),
                e.code.to_string(),
                e.facility_zip.to_string(),
            )
        })
        .collect()
}

fn reasons(rejects: &RejectList) -> Vec<(u64, Option<u64>, &'static str)> {
    rejects
        .rejects
        .iter()
        .map(|(line, index, reason, _)| (*line, *index, reason.code()))
        .collect()
}

const PIECE: &str = "00270123456789123456-12345678901";

#[test]
fn pipe_delimited_camel_case_alphabetical_columns() {
    let (parsed, rejects) = parse("ivmtr_pipe_camel.psv");
    assert!(rejects.rejects.is_empty(), "{:?}", reasons(&rejects));
    assert_eq!(
        summary(&parsed),
        [
            (
                PIECE.into(),
                "2025-01-15T15:00:00Z".into(),
                "918".into(),
                "94110".into()
            ),
            (
                PIECE.into(),
                "2025-01-16T09:29:00.250Z".into(),
                "919".into(),
                "941101234".into()
            ),
            (
                "01234567094987654321".into(),
                "2025-01-14T22:56:00Z".into(),
                "873".into(),
                "60607".into()
            ),
        ]
    );
    let first = &parsed.events[0];
    assert_eq!(first.class, MailClass::Mail);
    assert_eq!(first.routing.to_string(), "12345678901");
    assert_eq!(first.handling, HandlingEventType::Physical);
    assert_eq!(parsed.symbols.get(first.machine), "DBCS");
    let facility = parsed.symbols.facility(first.facility);
    assert_eq!(
        (facility.name, facility.city, facility.state),
        ("SAN FRANCISCO CA P&DC", "SAN FRANCISCO", "CA")
    );
    assert_eq!(parsed.events[2].handling, HandlingEventType::Assumed);
    assert_eq!(parsed.events[2].machine, 0);
}

#[test]
fn comma_delimited_snake_case_crlf_bom_quotes_split_imb() {
    let (parsed, rejects) = parse("ivmtr_comma_snake_crlf_bom.csv");
    assert!(rejects.rejects.is_empty(), "{:?}", reasons(&rejects));
    assert_eq!(
        summary(&parsed),
        [
            (
                PIECE.into(),
                "2025-01-15T15:00:00Z".into(),
                "918".into(),
                "94110".into()
            ),
            (
                "01234567094987654321-01234".into(),
                "2025-01-14T22:56:00Z".into(),
                "893".into(),
                "60607".into()
            ),
        ]
    );
    assert_eq!(
        parsed.symbols.facility(parsed.events[0].facility).name,
        "SAN FRANCISCO, CA P&DC"
    );
    assert_eq!(
        parsed.symbols.facility(parsed.events[1].facility).name,
        "CHICAGO \"MAIN\" P&DC"
    );
}

#[test]
fn package_barcodes_with_and_without_420() {
    let (parsed, rejects) = parse("packages.psv");
    assert!(rejects.rejects.is_empty(), "{:?}", reasons(&rejects));
    assert!(parsed.events.iter().all(|e| e.class == MailClass::Package));
    let routing: Vec<String> = parsed
        .events
        .iter()
        .map(|e| e.routing.to_string())
        .collect();
    assert_eq!(routing, ["22153", "100233424", "100233424"]);
    let trackings: Vec<String> = parsed
        .events
        .iter()
        .map(|e| match e.barcode.to_barcode() {
            Barcode::Impb(impb) => impb.tracking().to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        trackings,
        [
            "9101026837331000039521",
            "9361289878700317633795",
            "9200190132607600833457"
        ]
    );
    assert_eq!(parsed.events[1].code.as_str(), "OF");
}

#[test]
fn push_body_envelope_pretty_printed() {
    let (parsed, rejects) = parse("push_body.json");
    assert_eq!(parsed.events.len(), 2);
    assert_eq!(parsed.symbols.get(parsed.events[0].machine), "DBCS");
    assert_eq!(format_utc(parsed.events[1].time_ms), "2025-01-16T09:29:00Z");
    // The third event has no event code; it starts on line 28, index 2.
    assert_eq!(reasons(&rejects), [(28, Some(2), "missing_event_code")]);
}

#[test]
fn gzip_is_detected_by_magic_bytes() {
    let (plain, _) = parse("push_body.json");
    let (gzipped, rejects) = parse("push_body.json.gz");
    assert_eq!(gzipped.events, plain.events);
    assert_eq!(reasons(&rejects), [(28, Some(2), "missing_event_code")]);
}

#[test]
fn data_envelope_snake_case_and_numbers() {
    let (parsed, rejects) = parse("push_data_snake.json");
    assert_eq!(
        summary(&parsed),
        [(
            "01234567094987654321-01234567891".into(),
            "2025-01-15T06:00:00Z".into(),
            "893".into(),
            "60607".into()
        )]
    );
    // 02205 sent as a number lost its leading zero: a 4-digit ZIP is rejected, not guessed.
    assert_eq!(reasons(&rejects), [(3, Some(1), "bad_zip")]);
}

#[test]
fn pull_api_shape_scans_inherit_the_imb() {
    let (parsed, rejects) = parse("pull_api.json");
    assert!(rejects.rejects.is_empty(), "{:?}", reasons(&rejects));
    assert_eq!(parsed.events.len(), 2);
    assert!(parsed.events.iter().all(|e| barcode(e) == PIECE));
    assert_eq!(parsed.events[0].handling, HandlingEventType::Assumed);
    assert_eq!(
        parsed.symbols.facility(parsed.events[0].facility).state,
        "CA"
    );
}

#[test]
fn json_lines_with_an_envelope_and_a_broken_line() {
    let (parsed, rejects) = parse("events.jsonl");
    assert_eq!(parsed.events.len(), 3);
    assert_eq!(parsed.events[1].class, MailClass::Package);
    assert_eq!(
        reasons(&rejects),
        [(3, None, "malformed_json"), (5, Some(1), "bad_zip")]
    );
}

#[test]
fn bare_array_with_a_bar_string() {
    let (parsed, rejects) = parse("scans_array.json");
    assert!(rejects.rejects.is_empty(), "{:?}", reasons(&rejects));
    assert_eq!(
        barcode(&parsed.events[1]),
        "01234567094987654321-01234567891"
    );
}

#[test]
fn legacy_records_need_a_default_offset() {
    let (parsed, rejects) = parse("legacy.txt");
    assert!(parsed.events.is_empty());
    assert_eq!(
        reasons(&rejects),
        [
            (1, None, "time_without_offset"),
            (2, None, "time_without_offset")
        ]
    );

    let mut pacific = FeedOptions::at(parse_timestamp(b"2012-03-01T00:00:00Z", None).unwrap());
    pacific.default_offset_minutes = Some(-480);
    for name in ["legacy.txt", "legacy_header.csv"] {
        let (parsed, rejects) = parse_with(name, &pacific);
        assert!(
            rejects.rejects.is_empty(),
            "{name}: {:?}",
            reasons(&rejects)
        );
        assert_eq!(
            summary(&parsed),
            [
                (
                    "20270106848527962002-95630864806".into(),
                    "2012-02-17T06:56:00Z".into(),
                    "918".into(),
                    "95799".into()
                ),
                (
                    "20270106848527962002-95630864806".into(),
                    "2012-02-17T12:29:00Z".into(),
                    "919".into(),
                    "95799".into()
                ),
            ],
            "{name}"
        );
    }
    let mut forced = pacific.clone();
    forced.format = Some(Format::Legacy);
    assert_eq!(parse_with("legacy.txt", &forced).0.events.len(), 2);
}

#[test]
fn every_reject_reason_with_its_line() {
    let (parsed, rejects) = parse("rejects.psv");
    assert_eq!(parsed.events.len(), 1, "{:?}", reasons(&rejects));
    assert_eq!(
        reasons(&rejects),
        [
            (3, None, "bad_barcode"),
            (4, None, "missing_barcode"),
            (5, None, "missing_time"),
            (6, None, "bad_time"),
            (7, None, "time_without_offset"),
            (8, None, "time_out_of_range"),
            (9, None, "missing_event_code"),
            (10, None, "bad_event_code"),
            (11, None, "bad_zip"),
            (12, None, "missing_zip"),
            (13, None, "column_count"),
            (14, None, "unterminated_quote"),
            (15, None, "invalid_utf8"),
        ]
    );
    let counts = &parsed.report.rejects_by_reason;
    assert_eq!(counts.values().sum::<u64>(), 13);
    assert_eq!(parsed.report.records, 14);
    // The raw record travels with the reject.
    assert!(rejects.rejects[0].3.starts_with(b"0727012345"));
}

#[test]
fn oversized_records_are_rejected() {
    let mut options = options();
    options.max_record_len = 80;
    let mut rejects = RejectList::default();
    let parsed = parse_feed(
        "x",
        &fixture("ivmtr_pipe_camel.psv"),
        &options,
        &mut rejects,
    )
    .unwrap();
    assert_eq!(parsed.report.rejected, 3);
    assert!(reasons(&rejects).iter().all(|r| r.2 == "too_long"));
}

#[test]
fn a_header_without_required_columns_fails_the_feed() {
    let mut rejects = RejectList::default();
    let err = parse_feed(
        "x",
        b"imb|scanDatetime|scanFacilityZip\n1|2|3\n",
        &options(),
        &mut rejects,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "bad header row: no scanEventCode column");
}

/// A facility's name, city and state read the same whether its columns are adjacent (read
/// from the line as one span), apart, padded or quoted, and names that differ in one part
/// stay apart.
#[test]
fn facility_columns_read_alike_in_any_layout() {
    let rows = [
        ("CHICAGO P&DC", "CHICAGO", "IL", "DBCS"),
        ("CHICAGO P&DC", "CHICAGO", "IN", "DBCS"),
        ("CHICAGO P&DC", "CHICAG", "OIL", "DBCS"),
        ("CHICAGO P&DC", "CHICAGO", "IL", "AFCS"),
    ];
    let feeds = [
        ("adjacent", "imb|scanDatetime|scanEventCode|scanFacilityZip|scanFacilityName|scanFacilityCity|scanFacilityState|machineName", "{imb}|{time}|918|60607|{name}|{city}|{state}|{machine}"),
        ("apart", "scanFacilityName|imb|scanFacilityCity|scanDatetime|scanFacilityState|scanEventCode|scanFacilityZip|machineName", "{name}|{imb}|{city}|{time}|{state}|918|60607|{machine}"),
        ("padded", "imb|scanDatetime|scanEventCode|scanFacilityZip|scanFacilityName|scanFacilityCity|scanFacilityState|machineName", "{imb}|{time}|918|60607| {name} |{city} | {state}| {machine}"),
        ("quoted", "imb,scanDatetime,scanEventCode,scanFacilityZip,scanFacilityName,scanFacilityCity,scanFacilityState,machineName", "{imb},{time},918,60607,\"{name}\",{city},{state},{machine}"),
    ];
    let imb = "0027012345678912345612345678901";
    for (layout, header, row) in feeds {
        let mut feed = format!("{header}\n");
        for (n, (name, city, state, machine)) in rows.iter().chain(&rows).enumerate() {
            let line = row
                .replace("{imb}", imb)
                .replace("{time}", &format!("2025-01-15T10:00:{n:02}Z"))
                .replace("{name}", name)
                .replace("{city}", city)
                .replace("{state}", state)
                .replace("{machine}", machine);
            feed.push_str(&line);
            feed.push('\n');
        }
        let mut rejects = RejectList::default();
        let parsed = parse_feed(layout, feed.as_bytes(), &options(), &mut rejects).unwrap();
        assert!(
            rejects.rejects.is_empty(),
            "{layout}: {:?}",
            reasons(&rejects)
        );
        let read: Vec<(String, String, String, String)> = parsed
            .events
            .iter()
            .map(|e| {
                let facility = parsed.symbols.facility(e.facility);
                (
                    facility.name.to_string(),
                    facility.city.to_string(),
                    facility.state.to_string(),
                    parsed.symbols.get(e.machine).to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String, String, String)> = rows
            .iter()
            .chain(&rows)
            .map(|&(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
            .collect();
        assert_eq!(read, expected, "{layout}");
    }
}

/// Each row reads the same after any other rows as alone under the header: no value of an
/// earlier row (longer, shorter, quoted or rejected) is left for a later one to pick up.
#[test]
fn each_row_reads_as_if_alone() {
    let feed = fixture("rejects.psv");
    let mut lines = feed.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header = lines.next().unwrap();
    let rows: Vec<Vec<u8>> = lines.map(<[u8]>::to_vec).collect();
    let read = |rows: &[Vec<u8>]| {
        let mut feed = header.to_vec();
        for row in rows {
            feed.push(b'\n');
            feed.extend_from_slice(row);
        }
        let mut rejects = RejectList::default();
        let parsed = parse_feed("x", &feed, &options(), &mut rejects).unwrap();
        let codes: Vec<&str> = rejects.rejects.iter().map(|r| r.2.code()).collect();
        (summary(&parsed), codes)
    };
    let good = rows
        .iter()
        .find(|row| read(std::slice::from_ref(row)).0.len() == 1)
        .unwrap();
    let fields: Vec<&[u8]> = good.split(|&b| b == b'|').collect();
    // The good row with its last value missing, with one value too many, and quoted.
    let short = fields[..fields.len() - 1].join(&b'|');
    let long = [good.as_slice(), b"|extra"].concat();
    let quoted = fields
        .iter()
        .map(|f| [b"\"", *f, b"\""].concat())
        .collect::<Vec<_>>()
        .join(&b'|');
    let mut all = rows.clone();
    all.extend([short, good.clone(), long, good.clone(), quoted]);
    all.extend(rows.iter().rev().cloned());
    let together = read(&all);
    let mut alone = (Vec::new(), Vec::new());
    for row in &all {
        let (events, codes) = read(std::slice::from_ref(row));
        alone.0.extend(events);
        alone.1.extend(codes);
    }
    assert_eq!(together, alone);
    assert!(
        together.0.len() >= 5 && together.1.len() >= 28,
        "{together:?}"
    );
}
