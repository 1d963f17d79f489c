//! Cross-check against Debian's `zint`, an independent IMb encoder: a few hundred random
//! payloads must give the same bars. Skips with a message when zint is not installed, except
//! under CI (`CI` set), where `.ci/run` installs it and a missing zint is a failure.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::process::Command;

use imbtrack_barcode::Imb;

/// Converts `zint --dump` output (ascender, tracker and descender rows as hex, one module per
/// bit, bars on even modules) into A/D/F/T letters.
fn zint_bars(payload: &str) -> String {
    let output = Command::new("zint")
        .args(["-b", "USPS_IMAIL", "--dump", "-d", payload])
        .output()
        .expect("zint runs");
    assert!(
        output.status.success(),
        "zint failed on {payload}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("zint prints ASCII");
    let rows: Vec<Vec<bool>> = text
        .lines()
        .map(|line| {
            line.split_whitespace()
                .flat_map(|group| {
                    let bits = group.len() * 4;
                    let value = u64::from_str_radix(group, 16).expect("hex");
                    (0..bits).rev().map(move |bit| value >> bit & 1 == 1)
                })
                .collect()
        })
        .collect();
    assert_eq!(
        rows.len(),
        3,
        "zint dump has ascender, tracker and descender rows: {text}"
    );
    (0..65)
        .map(|bar| match (rows[0][2 * bar], rows[2][2 * bar]) {
            (true, true) => 'F',
            (true, false) => 'A',
            (false, true) => 'D',
            (false, false) => 'T',
        })
        .collect()
}

/// splitmix64: deterministic payloads without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.next() % 10) as u8))
            .collect()
    }
}

#[test]
fn random_payloads_match_zint() {
    if Command::new("zint").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "zint must be installed in CI (.ci/run installs it)"
        );
        eprintln!("zint is not installed (apt-get install zint): cross-check skipped");
        return;
    }
    let mut rng = Rng(0x1AB_2026);
    for i in 0..300 {
        let mut tracking = rng.digits(20);
        tracking.replace_range(1..2, &(rng.next() % 5).to_string());
        if i % 3 == 0 {
            tracking.replace_range(5..6, "9"); // a 9-digit Mailer ID
        }
        let routing = rng.digits([0, 5, 9, 11][i % 4]);
        let ours = Imb::new(&tracking, &routing).unwrap().encode();
        let payload = if routing.is_empty() {
            tracking.clone()
        } else {
            format!("{tracking}-{routing}")
        };
        assert_eq!(ours.as_str(), zint_bars(&payload), "payload {payload}");
    }
}
