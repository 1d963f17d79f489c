//! What the end-to-end tests of the server share: a store made by the real binary, a running
//! `imbtrack serve` that is killed when dropped, and a small HTTP client.

#![allow(dead_code)] // each test file uses its own part of this

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imbtrack_barcode::Barcode;
use imbtrack_feed::time::{days_from_civil, parse_timestamp};
use imbtrack_feed::{
    generate, parse_feed, FeedOptions, GenOptions, GeneratedLine, LineKind, ParsedFeed, RejectList,
};
use serde_json::Value;

pub const NOW: &str = "2025-01-20T00:00:00Z";
pub const DAY: &str = "2025-01-11";

pub fn imbtrack(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(data)
        .args(["--now", NOW])
        .args(args)
        .output()
        .unwrap()
}

/// A store of `pieces` generated pieces (2025-01-10 to 01-12, sealed) in `data`; the lines.
pub fn store_with(data: &Path, pieces: u64) -> Vec<GeneratedLine> {
    std::fs::create_dir_all(data).unwrap();
    let feed = data.join("feed.psv");
    let mut options = GenOptions::new(pieces, days_from_civil(2025, 1, 10));
    (options.days, options.seed) = (3, 5);
    let mut lines = Vec::new();
    generate(&options, std::fs::File::create(&feed).unwrap(), |l| {
        lines.push(l.clone())
    })
    .unwrap();
    let output = imbtrack(data, &["ingest", feed.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    lines
}

/// A running `imbtrack serve`, killed when dropped.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    pub fn start(data: &Path, args: &[&str]) -> Served {
        Served::start_command(data, "serve", args)
    }

    pub fn start_command(data: &Path, command: &str, args: &[&str]) -> Served {
        Served::start_at(data, NOW, command, args)
    }

    /// `imbtrack --now NOW COMMAND --listen 127.0.0.1:0 ARGS…`, once it says it is serving.
    pub fn start_at(data: &Path, now: &str, command: &str, args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
            .arg("--data")
            .arg(data)
            .args(["--now", now, command, "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap_or_default();
                if let Some(rest) = line.strip_prefix("imbtrack: serving ") {
                    let base = rest.split('/').take(3).collect::<Vec<_>>().join("/");
                    let _ = sender.send(base);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = receiver
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no serving line; stderr: {:?}", log.lock().unwrap()));
        Served { child, base, log }
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it: requests finish and
    /// the audit log is flushed. Returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and JSON body of a GET.
pub fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    answer(request.call().unwrap())
}

pub fn post(url: &str, token: Option<&str>, body: &[u8], gzip_header: bool) -> (u16, Value) {
    let mut request = agent().post(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    if gzip_header {
        request = request.header("Content-Encoding", "gzip");
    }
    answer(request.send(body).unwrap())
}

pub fn answer(response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub fn good_lines(lines: &[GeneratedLine]) -> impl Iterator<Item = &GeneratedLine> {
    lines.iter().filter(|l| l.kind == LineKind::Good)
}

/// Canonical barcodes of distinct good IMb pieces, in feed order.
pub fn imb_pieces(lines: &[GeneratedLine]) -> Vec<Barcode> {
    let mut seen = BTreeSet::new();
    good_lines(lines)
        .map(|l| l.barcode.to_barcode())
        .filter(|b| matches!(b, Barcode::Imb(_)) && seen.insert(b.to_string()))
        .collect()
}

/// A tokens file made by `imbtrack token new --append`, and the tokens (which the file must not
/// hold).
pub fn tokens_file(dir: &Path, entries: &[(&str, &str)]) -> (PathBuf, Vec<String>) {
    let path = dir.join("tokens.toml");
    let mut tokens = Vec::new();
    for (id, scope) in entries {
        let out = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
            .args(["token", "new", "--id", id, "--scope", scope, "--append"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let made: Value = serde_json::from_slice(&out.stdout).unwrap();
        tokens.push(made["token"].as_str().unwrap().to_string());
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        tokens.iter().all(|t| !text.contains(t.as_str())),
        "the file must not hold tokens"
    );
    (path, tokens)
}

/// A generated feed's bytes, and what they parse to at [`NOW`].
pub fn generated_feed(options: &GenOptions) -> (Vec<u8>, ParsedFeed) {
    let mut bytes = Vec::new();
    generate(options, &mut bytes, |_| {}).unwrap();
    let now = parse_timestamp(NOW.as_bytes(), None).unwrap();
    let parsed = parse_feed(
        "feed",
        &bytes,
        &FeedOptions::at(now),
        &mut RejectList::default(),
    )
    .unwrap();
    (bytes, parsed)
}

pub fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_within(what, Duration::from_secs(60), done);
}

/// Waits until `done`, failing the test after `limit`: for what must happen within a bound
/// the product promises (a failover's), not a speed.
pub fn wait_within(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many of `needles` appear in some file under `dir`.
pub fn found_under(dir: &Path, needles: &std::collections::BTreeSet<Vec<u8>>) -> usize {
    fn files(dir: &Path, out: &mut Vec<Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // Links are not followed: what they lead to is not under `dir`.
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_dir() {
                files(&path, out);
            } else if kind.is_file() {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }
    let mut contents = Vec::new();
    files(dir, &mut contents);
    needles
        .iter()
        .filter(|n| {
            contents
                .iter()
                .any(|c| c.windows(n.len()).any(|w| w == &n[..]))
        })
        .count()
}
