//! The whole USPS "Intelligent Mail barcode Encoder Test Case Reference Set" (10,000 rows), every
//! row flipped upside down, single- and double-bar damage, and the published vectors of
//! imb-symbology.md §5.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use imbtrack_barcode::{decode, decode_exact, Bars, ErrorKind, Imb, Orientation};

const TEST_SET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/imb/uspsIMbEncoderTestCases.csv"
);

struct Row {
    id: u32,
    tracking: String,
    routing: String,
    bars: String,
    code: u8,
}

fn rows() -> Vec<Row> {
    let bytes =
        std::fs::read(TEST_SET).expect("data/imb/uspsIMbEncoderTestCases.csv is in the repository");
    assert_eq!(
        bytes.len(),
        1_152_820,
        "the test set was altered (line ends must stay \\r\\r\\n)"
    );
    let text = String::from_utf8(bytes).unwrap();
    // Lines end in \r\r\n: split on \n and drop the carriage returns and the empty records.
    let rows: Vec<Row> = text
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.splitn(6, ',').collect();
            Row {
                id: fields[0].parse().unwrap(),
                tracking: fields[1].to_string(),
                routing: fields[2].to_string(),
                bars: fields[3].to_string(),
                code: fields[4].parse().unwrap(),
            }
        })
        .collect();
    assert_eq!(rows.len(), 10_000);
    rows
}

fn good_rows() -> Vec<(Row, Imb, Bars)> {
    rows()
        .into_iter()
        .filter(|row| row.code == 0)
        .map(|row| {
            let imb = Imb::new(&row.tracking, &row.routing).unwrap();
            let bars = Bars::parse(&row.bars).unwrap();
            (row, imb, bars)
        })
        .collect()
}

#[test]
fn all_8128_encodings_match_and_decode_back() {
    let good = good_rows();
    assert_eq!(good.len(), 8_128);
    for (row, imb, bars) in &good {
        assert_eq!(imb.encode(), *bars, "row {}", row.id);
        assert_eq!(decode_exact(bars).unwrap(), *imb, "row {}", row.id);
        assert_eq!(
            (imb.tracking(), imb.routing()),
            (row.tracking.as_str(), row.routing.as_str())
        );
    }
}

#[test]
fn all_1872_error_rows_are_rejected_with_the_usps_error_kind() {
    let error_rows: Vec<Row> = rows().into_iter().filter(|row| row.code != 0).collect();
    assert_eq!(error_rows.len(), 1_872);
    for row in &error_rows {
        let err =
            Imb::new(&row.tracking, &row.routing).expect_err(&format!("row {} must fail", row.id));
        assert_eq!(
            err.usps_return_code(),
            Some(row.code),
            "row {}: {err}",
            row.id
        );
        // The payload forms give the same verdict where they can say the same thing: they
        // split at '-' and ignore all whitespace.
        if format!("{}{}", row.tracking, row.routing)
            .contains(|c: char| c == '-' || c.is_whitespace())
        {
            continue;
        }
        let dashed = Imb::from_payload(&format!("{}-{}", row.tracking, row.routing)).unwrap_err();
        assert_eq!(
            dashed.usps_return_code(),
            Some(row.code),
            "row {} dashed: {dashed}",
            row.id
        );
    }
}

#[test]
fn every_row_flipped_decodes_only_as_upside_down() {
    for (row, imb, bars) in good_rows() {
        let flipped = bars.flipped();
        assert!(
            decode_exact(&flipped).is_err(),
            "row {}: flipped bars decoded as printed",
            row.id
        );
        let read = decode(&flipped, false).unwrap();
        assert_eq!(
            (read.imb, read.orientation, read.repair),
            (imb, Orientation::UpsideDown, None),
            "row {}",
            row.id
        );
    }
}

/// Every other bar state at `position`.
fn mutations(bars: &Bars, position: usize) -> impl Iterator<Item = Bars> + '_ {
    "ADFT".chars().filter_map(move |letter| {
        let mut text: Vec<char> = bars.as_str().chars().collect();
        (text[position] != letter).then(|| {
            text[position] = letter;
            Bars::parse(&text.into_iter().collect::<String>()).unwrap()
        })
    })
}

/// A repair either finds the original or, when two valid IMbs lie one bar from the damaged read
/// (about 1% of damage, imb-symbology.md §4.4), refuses as ambiguous; it never picks one.
#[test]
fn every_single_bar_damage_is_detected_and_repaired() {
    let good = good_rows();
    let (mut repaired, mut ambiguous) = (0, 0);
    for (row, imb, bars) in good.iter().step_by(80) {
        for position in 0..65 {
            for damaged in mutations(bars, position) {
                for (read, orientation) in [
                    (damaged, Orientation::Normal),
                    (damaged.flipped(), Orientation::UpsideDown),
                ] {
                    assert!(
                        decode(&read, false).is_err(),
                        "row {} bar {}: damage not detected",
                        row.id,
                        position + 1
                    );
                    let fixed = match decode(&read, true) {
                        Ok(fixed) => fixed,
                        Err(e) => {
                            assert!(
                                matches!(e.kind(), ErrorKind::Repair { candidates: 2.. }),
                                "row {} bar {}: {e}",
                                row.id,
                                position + 1
                            );
                            ambiguous += 1;
                            continue;
                        }
                    };
                    assert_eq!(fixed.imb, *imb, "row {} bar {}", row.id, position + 1);
                    assert_eq!(fixed.orientation, orientation);
                    let repair = fixed.repair.expect("repair is reported");
                    let expected_bars = if orientation == Orientation::Normal {
                        *bars
                    } else {
                        bars.flipped()
                    };
                    assert_eq!(repair.bars, expected_bars);
                    let expected_position = if orientation == Orientation::Normal {
                        position + 1
                    } else {
                        65 - position
                    };
                    assert_eq!(repair.position, expected_position);
                    repaired += 1;
                }
            }
        }
    }
    eprintln!("single-bar damage: {repaired} repaired, {ambiguous} ambiguous");
    assert_eq!(
        repaired + ambiguous,
        102 * 65 * 3 * 2,
        "every damaged read was tried"
    );
    assert!(
        ambiguous * 50 < repaired,
        "more than 2% of single-bar damage ambiguous"
    );
}

/// Two damaged bars are never read as the original, and repair never returns the original
/// silently: it is either an error or, rarely, a different valid IMb one bar away, which is
/// why repair is opt-in and always reported.
#[test]
fn double_bar_damage_is_never_accepted_as_is() {
    let good = good_rows();
    let (mut refused, mut wrong) = (0, 0);
    for (n, (row, imb, bars)) in good.iter().step_by(40).enumerate() {
        let first = n % 65;
        let second = (n * 7 + 13) % 65;
        if first == second {
            continue;
        }
        for once in mutations(bars, first) {
            for twice in mutations(&once, second) {
                assert!(
                    decode(&twice, false).is_err(),
                    "row {}: two damaged bars read as valid",
                    row.id
                );
                match decode(&twice, true) {
                    Err(e) => {
                        assert!(matches!(e.kind(), ErrorKind::Repair { .. }), "{e}");
                        refused += 1;
                    }
                    Ok(read) => {
                        assert_ne!(
                            read.imb, *imb,
                            "row {}: two damaged bars repaired as if one",
                            row.id
                        );
                        wrong += 1;
                    }
                }
            }
        }
    }
    eprintln!("double-bar damage: {refused} refused, {wrong} repaired to another valid IMb");
    assert!(refused > 1_500);
    assert!(
        wrong * 100 <= refused,
        "more than 1% of double damage produced a valid IMb"
    );
}

#[test]
fn published_vectors() {
    let cases = [
        // USPS-B-3200 examples (§5.1).
        (
            "01234567094987654321",
            "",
            "ATTFATTDTTADTAATTDTDTATTDAFDDFADFDFTFFFFFTATFAAAATDFFTDAADFTFDTDT",
        ),
        (
            "01234567094987654321",
            "01234",
            "DTTAFADDTTFTDTFTFDTDDADADAFADFATDDFTAAAFDTTADFAAATDFDTDFADDDTDFFT",
        ),
        (
            "01234567094987654321",
            "012345678",
            "ADFTTAFDTTTTFATTADTAAATFTFTATDAAAFDDADATATDTDTTDFDTDATADADTDFFTFA",
        ),
        (
            "01234567094987654321",
            "01234567891",
            "AADTFFDFTDADTAADAATFDTDDAAADDTDTTDAFADADDDTFFFDDTTTADFAAADFTDAADA",
        ),
        // USPS online encoder, npm imb README, pyimb samples (§5.3).
        (
            "23270592831482031240",
            "96713024817",
            "DDADATADTAATDTTTDFDTTFTFFADTFTDFTATAAFTTFATDAATATDATATFADAADDTFDT",
        ),
        (
            "12234567094987654321",
            "",
            "ATTFAATTFTADFDATDDADAATTTTTTTTADFFFFFDFAFATTDAADATDDDTADAFFDFDTFT",
        ),
        (
            "00708901019658000000",
            "631469772",
            "FDDAATADTTTFDDADAFFADAFAATFFDDFADFATTAAFDDDDFTTFADFFFDAFFDDFFDDTD",
        ),
        (
            "00000000000000000000",
            "22082841203",
            "FAFFATDATTATFFFFTFTFFDTFFDAFDADTTDFAFDAADFTTDATDTATTDFDDTFFFFFTFD",
        ),
        // Range edges (§5.4).
        (
            "01234567094987654321",
            "99999",
            "TFTFDFADTDTFTDFFDTDDDTAAAFAFDADATTADDTTFTDAFAADFDAFFFADFDDFFDADTT",
        ),
        (
            "01234567094987654321",
            "999999999",
            "DDTFDTTAAADDFFDAFDDAFTADTAFDATTFTFADFDADADTDAFTTADFDTTAAFDDDATFDF",
        ),
    ];
    for (tracking, routing, bars) in cases {
        let imb = Imb::new(tracking, routing).unwrap();
        assert_eq!(imb.encode().as_str(), bars, "{tracking}-{routing}");
        assert_eq!(
            decode_exact(&Bars::parse(bars).unwrap()).unwrap(),
            imb,
            "{tracking}-{routing}"
        );
    }
}
