//! End-to-end: the real `imbtrack` binary encodes, decodes, repairs and rejects barcodes.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PAYLOAD: &str = "01234567094987654321-01234567891";
const BARS: &str = "AADTFFDFTDADTAADAATFDTDDAAADDTDTTDAFADADDDTFFFDDTTTADFAAADFTDAADA";

fn imbtrack(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("imbtrack starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn flip(bars: &str) -> String {
    bars.chars()
        .rev()
        .map(|c| match c {
            'A' => 'D',
            'D' => 'A',
            c => c,
        })
        .collect()
}

#[test]
fn encode_prints_the_spec_bars() {
    let output = imbtrack(&["barcode", "encode", PAYLOAD], "");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{BARS}\n")
    );
}

#[test]
fn encode_reads_stdin_and_reports_bad_payloads() {
    let output = imbtrack(
        &["barcode", "encode"],
        &format!("{PAYLOAD}\n\n05234567094987654321\n"),
    );
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], BARS);
    let error: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(error["error"]["code"], "barcode_id_second_digit");
    assert_eq!(error["input"], "05234567094987654321");
    assert_eq!(lines.len(), 2);
}

#[test]
fn decode_normal_upside_down_and_repaired() {
    let flipped = flip(BARS);
    let mut damaged = BARS.to_string();
    damaged.replace_range(9..10, "A"); // bar 10 was D
    let output = imbtrack(
        &[
            "barcode",
            "decode",
            "--repair",
            BARS,
            &flipped.to_lowercase(),
            &damaged,
        ],
        "",
    );
    assert!(output.status.success(), "{output:?}");
    let lines = json_lines(&output);
    for line in &lines {
        assert_eq!(line["tracking"], "01234567094987654321");
        assert_eq!(line["routing"], "01234567891");
        assert_eq!(line["barcode_id"], "01");
        assert_eq!(line["service_type"], "234");
        assert_eq!(line["mailer_id"], "567094");
        assert_eq!(line["serial"], "987654321");
    }
    assert_eq!(
        (
            lines[0]["orientation"].as_str(),
            lines[0]["repaired"].as_bool()
        ),
        (Some("normal"), Some(false))
    );
    assert_eq!(
        (
            lines[1]["orientation"].as_str(),
            lines[1]["repaired"].as_bool()
        ),
        (Some("upside_down"), Some(false))
    );
    assert_eq!(lines[2]["repaired"], true);
    assert_eq!(lines[2]["bars"], BARS);
    assert_eq!(lines[2]["repaired_bar"]["position"], 10);
    assert_eq!(lines[2]["repaired_bar"]["was"], "A");
}

#[test]
fn damaged_bars_without_repair_fail_with_a_named_fault() {
    let mut damaged = BARS.to_string();
    damaged.replace_range(9..10, "A");
    let output = imbtrack(&["barcode", "decode", &damaged], "");
    assert_eq!(output.status.code(), Some(1));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["error"]["code"], "invalid_characters");
    assert!(lines[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid N-of-13"));

    let output = imbtrack(&["barcode", "decode", "AADTQ"], "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json_lines(&output)[0]["error"]["code"], "bar_state");
}

#[test]
fn parse_recognises_each_form() {
    let output = imbtrack(
        &[
            "barcode",
            "parse",
            BARS,
            "9400 1112 0108 0805 4830 16",
            "99M901234567XYZ000001",
            "123",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["kind"], "imb");
    assert_eq!(lines[1]["kind"], "impb");
    assert_eq!(lines[1]["channel"], "94");
    assert_eq!(lines[2]["kind"], "imcb");
    assert_eq!(lines[2]["mailer_id"], "901234567");
    assert_eq!(lines[3]["error"]["code"], "package_length");
}
