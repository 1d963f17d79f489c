//! End-to-end: the real binary serves a real store on 127.0.0.1, and a real HTTP client asks
//! every route: lookups equal the CLI's answers, mailer tokens see only their Mailer IDs, pushes
//! are durable and idempotent, the spool survives a kill, TLS works, limits hold, the demo
//! serves.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{
    answer, found_under, get, imb_pieces, imbtrack, post, store_with, tokens_file, wait_for,
    Served, DAY,
};
use imbtrack_barcode::Barcode;
use imbtrack_feed::time::parse_timestamp;
use serde_json::{json, Value};

/// The audit log's entries (complete once the server has stopped).
fn audit_lines(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("audit").join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_route_answers_as_the_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 3000);
    // The CLI's answers first: the server holds the store's lock while it runs.
    let piece = imb_pieces(&lines)[0];
    let cli = imbtrack(&data, &["query", &piece.to_string()]);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    // The busiest 5-digit routing ZIP among the feed's IMbs.
    let mut zips = std::collections::BTreeMap::<String, usize>::new();
    for barcode in imb_pieces(&lines) {
        if let Barcode::Imb(imb) = barcode {
            if imb.routing().len() >= 5 {
                *zips.entry(imb.routing()[..5].to_string()).or_default() += 1;
            }
        }
    }
    let zip = zips.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let from_cli = imbtrack(&data, &["query", "--zip", &zip, "--date", DAY]);
    let mid_text = format!("{:06}", piece.mailer_id().unwrap());
    let exported_by_cli = ["csv", "jsonl"].map(|format| {
        let out = imbtrack(
            &data,
            &[
                "export", "--mailer", &mid_text, "--date", DAY, "--format", format,
            ],
        );
        assert!(out.status.success(), "{out:?}");
        out.stdout
    });
    let wall_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let started_ms = wall_ms();
    let server = Served::start(&data, &[]);
    let in_use = imbtrack(&data, &["query", &piece.to_string()]);
    assert_eq!(in_use.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&in_use.stderr).contains("open in another process"));

    // One piece: the same JSON as `imbtrack query`, by digits and by 65 bars.
    let (status, body) = get(&server.url(&format!("/v1/pieces/{piece}")), None);
    assert_eq!((status, &body), (200, &cli));
    let Barcode::Imb(imb) = &piece else { panic!() };
    let bars = imb.encode().to_string();
    assert_eq!(get(&server.url(&format!("/v1/pieces/{bars}")), None).1, cli);

    // Errors are JSON with the right status.
    let (status, body) = get(&server.url("/v1/pieces/12345"), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_barcode"))
    );
    let absent = "00270999999000000001-94110";
    let (status, body) = get(&server.url(&format!("/v1/pieces/{absent}")), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = get(&server.url("/v2/nothing"), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = post(&server.url("/v1/pieces/x"), None, b"", false);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // Batch: in order, found or not.
    let batch = json!({"barcodes": [piece.to_string(), absent, "nonsense"]}).to_string();
    let (status, body) = post(
        &server.url("/v1/pieces:batch"),
        None,
        batch.as_bytes(),
        false,
    );
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["piece"], cli);
    assert_eq!(results[1]["error"]["code"], "not_found");
    assert_eq!(results[2]["error"]["code"], "bad_barcode");
    let too_many = json!({"barcodes": vec![piece.to_string(); 1001]}).to_string();
    let (status, body) = post(
        &server.url("/v1/pieces:batch"),
        None,
        too_many.as_bytes(),
        false,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("batch_too_large"))
    );
    let (status, _) = post(
        &server.url("/v1/pieces:batch"),
        None,
        b"{\"barcode\":1}",
        false,
    );
    assert_eq!(status, 400);

    // A ZIP's pieces, paged with the cursor, are exactly the CLI's list.
    let expected: Vec<Value> = String::from_utf8(from_cli.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(expected.len() > 1, "{} pieces for {zip}", expected.len());
    let mut paged = Vec::new();
    let mut url = server.url(&format!("/v1/zips/{zip}/pieces?date={DAY}&limit=1"));
    loop {
        let (status, body) = get(&url, None);
        assert_eq!(status, 200, "{body}");
        paged.extend(body["pieces"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                url = server.url(&format!(
                    "/v1/zips/{zip}/pieces?date={DAY}&limit=1&cursor={cursor}"
                ))
            }
            None => break,
        }
    }
    assert_eq!(paged, expected);
    for bad in [
        "?date=2025-02-30",
        "",
        "?date=2025-01-11&limit=0",
        "?date=2025-01-11&colour=red",
    ] {
        let (status, body) = get(&server.url(&format!("/v1/zips/{zip}/pieces{bad}")), None);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_query")),
            "{bad}"
        );
    }

    // A mailer's summary counts its pieces of the day.
    let mid = piece.mailer_id().unwrap();
    let (status, summary) = get(
        &server.url(&format!(
            "/v1/mailers/{mid_text}/summary?date={DAY}&stale_hours=1"
        )),
        None,
    );
    assert_eq!(status, 200, "{summary}");
    let by_status: u64 = summary["by_status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_status, summary["pieces"].as_u64().unwrap());
    assert!(summary["pieces"].as_u64().unwrap() >= 1);
    assert!(!summary["by_facility"].as_array().unwrap().is_empty());
    // Every piece is days old at NOW: the undelivered ones are all stale.
    let undelivered = summary["by_status"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(status, _)| !status.starts_with("DELIVERED"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(summary["stale"]["count"].as_u64().unwrap(), undelivered);

    // The mailer's raw scans of the day: what the CLI exports, byte for byte; a feed holding
    // exactly the feed's scans of that Mailer ID on that day.
    for (format, cli_bytes) in ["csv", "jsonl"].iter().zip(&exported_by_cli) {
        let response = common::agent()
            .get(server.url(&format!(
                "/v1/mailers/{mid_text}/scans?date={DAY}&format={format}"
            )))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body = response.into_body().read_to_vec().unwrap();
        assert_eq!(&body, cli_bytes, "{format}");
    }
    let day_ms = imbtrack_feed::time::parse_date(DAY).unwrap() * 86_400_000;
    let mut expected_scans: Vec<(String, i64, String)> = lines
        .iter()
        .filter(|l| l.kind == imbtrack_feed::LineKind::Good)
        .filter(|l| l.barcode.to_barcode().mailer_id() == Some(mid))
        .filter(|l| (day_ms..day_ms + 86_400_000).contains(&l.time_ms))
        .map(|l| {
            (
                l.barcode.to_barcode().to_string(),
                l.time_ms,
                l.code.to_string(),
            )
        })
        .collect();
    expected_scans.sort();
    expected_scans.dedup();
    let now_ms = parse_timestamp(common::NOW.as_bytes(), None).unwrap();
    let exported = imbtrack_feed::parse_feed(
        "export",
        &exported_by_cli[0],
        &imbtrack_feed::FeedOptions::at(now_ms),
        &mut imbtrack_feed::RejectList::default(),
    )
    .unwrap();
    let mut exported_scans: Vec<(String, i64, String)> = exported
        .events
        .iter()
        .map(|e| {
            (
                e.barcode.to_barcode().to_string(),
                e.time_ms,
                e.code.to_string(),
            )
        })
        .collect();
    exported_scans.sort();
    assert!(!expected_scans.is_empty());
    assert_eq!(exported_scans, expected_scans);
    let bad = get(
        &server.url(&format!(
            "/v1/mailers/{mid_text}/scans?date={DAY}&format=xml"
        )),
        None,
    );
    assert_eq!(
        (bad.0, bad.1["error"]["code"].as_str()),
        (400, Some("bad_query"))
    );

    // Health, metrics, the page.
    assert_eq!(
        get(&server.url("/healthz"), None),
        (200, json!({"status": "ok"}))
    );
    let (status, metrics) = get(&server.url("/metrics"), None);
    let metrics = metrics.as_str().unwrap().to_string();
    assert_eq!(status, 200);
    for name in [
        "imbtrack_http_request_duration_seconds_bucket{route=\"/v1/pieces/{barcode}\"",
        "imbtrack_http_requests_total{route=\"/v1/pieces/{barcode}\",status=\"404\"}",
        "imbtrack_sealed_buckets ",
        "imbtrack_sealed_bytes ",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    let (status, page) = get(&server.url("/"), None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<form id=\"track\""));

    // Unmatched routes and wrong methods are audited too, and a query string is never logged.
    assert_eq!(
        get(&server.url("/v1/nothing?token=imbt_in_the_query"), None).0,
        404
    );
    let wrong = common::agent()
        .delete(&server.url(&format!("/v1/pieces/{piece}")))
        .call()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 405);

    // Every API request was audited, with what it asked and what it got; barcodes only as
    // keyed hashes.
    assert!(server.stop().success());
    let audit = audit_lines(&data);
    let first = &audit[0];
    assert_eq!(first["token"], "local");
    assert_eq!(first["client"], "127.0.0.1");
    // Audit times are the wall clock, not the replay clock of --now.
    let audited_ms = parse_timestamp(first["time"].as_str().unwrap().as_bytes(), None).unwrap();
    assert!(
        (started_ms - 1000..=wall_ms() + 1000).contains(&audited_ms),
        "{first}"
    );
    assert_eq!(first["route"], "/v1/pieces/{barcode}");
    assert_eq!(first["key"], Value::Null);
    assert_eq!(first["barcodes"], json!([audit_hash(&data, &piece)]));
    assert_eq!(
        (first["results"].as_u64(), first["status"].as_u64()),
        (Some(1), Some(200))
    );
    assert!(audit
        .iter()
        .any(|e| e["route"] == "/v1/mailers/{mid}/summary"
            && e["key"] == format!("mailer {mid_text} {DAY}")));
    assert!(audit.iter().all(|e| e["route"] != "/metrics"));
    assert!(audit
        .iter()
        .any(|e| e["route"] == "(unmatched)" && e["status"] == 404));
    assert!(audit
        .iter()
        .any(|e| e["method"] == "DELETE" && e["status"] == 405));
    let text = std::fs::read_to_string(data.join("audit").join("audit.jsonl")).unwrap();
    assert!(!text.contains("imbt_in_the_query"));
    let tracking = piece.to_string()[..20].to_string();
    assert!(
        !text.contains(&tracking),
        "a barcode in clear in the audit log"
    );
}

/// The hash the audit log records `barcode` under (`imbtrack audit hash`).
fn audit_hash(data: &Path, barcode: &Barcode) -> String {
    let out = imbtrack(data, &["audit", "hash", &barcode.to_string()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn mailer_tokens_see_only_their_own_mailer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 3000);
    let pieces = imb_pieces(&lines);
    let ours = pieces[0];
    let our_mid = ours.mailer_id().unwrap();
    let theirs = pieces
        .iter()
        .find(|p| p.mailer_id() != Some(our_mid))
        .copied()
        .unwrap();
    let their_mid = theirs.mailer_id().unwrap();
    let (tokens_path, tokens) = tokens_file(
        dir.path(),
        &[
            ("ops", "admin"),
            ("plant", "ingest"),
            ("acme", &format!("mailer:{our_mid:06}")),
        ],
    );
    let [admin, plant, acme] = [&tokens[0], &tokens[1], &tokens[2]].map(|t| Some(t.as_str()));
    let server = Served::start(&data, &["--tokens", tokens_path.to_str().unwrap()]);
    let piece_url = |p: &Barcode| server.url(&format!("/v1/pieces/{p}"));

    // No token, a wrong one: 401 with a Bearer challenge.
    for token in [None, Some("imbt_wrong")] {
        let (status, body) = get(&piece_url(&ours), token);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
    }
    // With tokens, /metrics is for admin (or a metrics token) only.
    let metrics = server.url("/metrics");
    assert_eq!(get(&metrics, None).0, 401);
    assert_eq!(get(&metrics, acme).0, 403);
    assert_eq!(get(&metrics, plant).0, 403);
    assert_eq!(get(&metrics, admin).0, 200);
    // The admin sees everything.
    assert_eq!(get(&piece_url(&ours), admin).0, 200);
    assert_eq!(get(&piece_url(&theirs), admin).0, 200);
    // The mailer sees its own piece; another mailer's piece is exactly as absent as a piece
    // that does not exist.
    assert_eq!(get(&piece_url(&ours), acme).0, 200);
    let foreign = get(&piece_url(&theirs), acme);
    assert_eq!(foreign.0, 404);
    let Barcode::Imb(their_imb) = &theirs else {
        panic!()
    };
    // The same Mailer ID (digits 5 to 14 at most), a serial never generated.
    let invented = Barcode::parse(&format!("{}999999", &their_imb.tracking()[..14])).unwrap();
    let absent = get(&piece_url(&invented), admin);
    assert_eq!(absent.0, 404);
    assert_eq!(
        foreign.1["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&theirs.to_string(), "X"),
        absent.1["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&invented.to_string(), "X"),
    );
    // A mailer exports its own Mailer ID's scans, never another's.
    let export = |mid: u32, token| {
        get(
            &server.url(&format!(
                "/v1/mailers/{mid:06}/scans?date={DAY}&format=jsonl"
            )),
            token,
        )
        .0
    };
    assert_eq!(export(our_mid, acme), 200);
    assert_eq!(export(their_mid, acme), 404);
    assert_eq!(export(their_mid, admin), 200);
    assert_eq!(export(our_mid, plant), 403);
    // Batch and ZIP listings leave foreign pieces out.
    let batch = json!({"barcodes": [ours.to_string(), theirs.to_string()]}).to_string();
    let (_, body) = post(
        &server.url("/v1/pieces:batch"),
        acme,
        batch.as_bytes(),
        false,
    );
    assert!(body["results"][0]["piece"].is_object());
    assert_eq!(body["results"][1]["error"]["code"], "not_found");
    let zip = get(&piece_url(&theirs), admin).1["routing_zip"]
        .as_str()
        .unwrap()[..5]
        .to_string();
    let listing = |token| {
        let (status, body) = get(
            &server.url(&format!("/v1/zips/{zip}/pieces?date={DAY}&limit=1000")),
            token,
        );
        assert_eq!(status, 200);
        body["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                Barcode::parse(p["barcode"].as_str().unwrap())
                    .unwrap()
                    .mailer_id()
            })
            .collect::<Vec<_>>()
    };
    let everyone = listing(admin);
    assert!(everyone.contains(&Some(their_mid)));
    let mine = listing(acme);
    assert!(mine.iter().all(|m| *m == Some(our_mid)), "{mine:?}");
    assert_eq!(
        mine.len(),
        everyone.iter().filter(|m| **m == Some(our_mid)).count()
    );
    // Summaries: its own only.
    let summary = |mid: u32, token| {
        get(
            &server.url(&format!("/v1/mailers/{mid:06}/summary?date={DAY}")),
            token,
        )
        .0
    };
    assert_eq!(summary(our_mid, acme), 200);
    assert_eq!(summary(their_mid, acme), 404);
    assert_eq!(summary(their_mid, admin), 200);
    // Ingest needs the ingest scope; an ingest token looks nothing up.
    let push = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/feeds/push_body.json"
    ))
    .unwrap();
    assert_eq!(post(&server.url("/v1/scans"), acme, &push, false).0, 403);
    assert_eq!(post(&server.url("/v1/scans"), plant, &push, false).0, 200);
    assert_eq!(get(&piece_url(&ours), plant).0, 403);

    assert!(server.stop().success());
    let audit = audit_lines(&data);
    assert!(audit.iter().any(|e| e["token"] == "acme"
        && e["status"] == 404
        && e["barcodes"] == json!([audit_hash(&data, &theirs)])));
    assert!(audit
        .iter()
        .any(|e| e["token"] == "-" && e["status"] == 401));
    assert!(audit
        .iter()
        .all(|e| !e.to_string().contains(tokens[2].as_str())));

    // Without tokens, only loopback.
    let out = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    // With tokens, plain HTTP on an address others reach only when asked for by name.
    let public = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imbtrack"))
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "0.0.0.0:0", "--tokens"])
            .arg(&tokens_path)
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = public(&[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-http"));
    let mut insecure = public(&["--insecure-http"]);
    let mut stderr = BufReader::new(insecure.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("imbtrack: serving") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stopped: {said}");
        said.push_str(&line);
    }
    assert!(said.contains("in clear"), "{said}");
    insecure.kill().unwrap();
    insecure.wait().unwrap();
}

/// A raw HTTP/1.1 request with the given extra header lines; the status and body.
fn raw_request(base: &str, request_line: &str, headers: &[String], body: &str) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    let mut request = format!("{request_line}\r\n");
    for header in headers {
        request.push_str(&format!("{header}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn without_tokens_only_this_machine_and_its_own_page_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 50);
    let piece = imb_pieces(&lines)[0].to_string();
    let server = Served::start(&data, &[]);
    let host = server.base.trim_start_matches("http://").to_string();
    let lookup = format!("GET /v1/pieces/{piece} HTTP/1.1");
    let (status, _) = raw_request(&server.base, &lookup, &[format!("Host: {host}")], "");
    assert_eq!(status, 200);
    // A page whose DNS name was rebound to 127.0.0.1 sends its own name as Host.
    let rebound = format!(
        "Host: tracker.evil.example:{}",
        host.rsplit(':').next().unwrap()
    );
    let (status, body) = raw_request(&server.base, &lookup, &[rebound], "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not_local"), "{body}");
    // Another site's page posting scans as text/plain (no preflight) sends its Origin.
    let feed = "imb|scanDatetime|scanEventCode|scanFacilityZip\n\
                0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110\n";
    let push = "POST /v1/scans HTTP/1.1";
    let (status, body) = raw_request(
        &server.base,
        push,
        &[
            format!("Host: {host}"),
            "Origin: https://evil.example".to_string(),
            "Content-Type: text/plain".to_string(),
        ],
        feed,
    );
    assert_eq!(status, 403, "{body}");
    let (_, stats) = get(&server.url("/metrics"), None);
    assert!(
        !stats.to_string().contains("imbtrack_ingested_scans_total"),
        "{stats}"
    );
    // The server's own page may.
    let (status, body) = raw_request(
        &server.base,
        push,
        &[format!("Host: {host}"), format!("Origin: http://{host}")],
        feed,
    );
    assert_eq!(status, 200, "{body}");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn pushes_are_durable_and_a_retry_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Served::start(&data, &["--max-body", "1000000"]);
    let feeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/feeds/");
    let push = std::fs::read(format!("{feeds}push_body.json")).unwrap();
    let url = server.url("/v1/scans");

    let (status, first) = post(&url, None, &push, false);
    assert_eq!(status, 200, "{first}");
    let accepted = first["accepted"].as_u64().unwrap();
    assert!(accepted >= 2, "{first}");
    // The sender retries (it saw a timeout, say): nothing new, nothing doubled.
    let (status, again) = post(&url, None, &push, false);
    assert_eq!(status, 200);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(accepted))
    );
    // Gzip, with and without the header, is the same body.
    for header in [true, false] {
        let (status, body) = post(&url, None, &gzip(&push), header);
        assert_eq!(
            (status, body["duplicates"].as_u64()),
            (200, Some(accepted)),
            "{body}"
        );
    }
    let (status, body) = post(
        &url,
        None,
        &std::fs::read(format!("{feeds}push_body.json.gz")).unwrap(),
        true,
    );
    assert_eq!(status, 200, "{body}");

    // Bad records are rejected with reasons, good ones around them kept.
    let mixed = json!({"events": [
        {"imb": "0027012345678912345612345678901", "scanDatetime": "2025-01-17T10:00:00-05:00",
         "scanEventCode": "919", "scanFacilityZip": "94110"},
        {"imb": "not a barcode", "scanDatetime": "2025-01-17T10:00:00-05:00",
         "scanEventCode": "919", "scanFacilityZip": "94110"}
    ]})
    .to_string();
    let (status, body) = post(&url, None, mixed.as_bytes(), false);
    assert_eq!(status, 200);
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(body["rejects"][0]["reason"], "bad_barcode");
    assert_eq!(body["rejects"][0]["index"], 1);

    // Limits: an oversized body, a gzip bomb, an empty body, bytes that are no feed.
    let (status, body) = post(&url, None, &vec![b' '; 1_100_000], false);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let bomb = gzip(&vec![b' '; 300 << 20]);
    assert!(bomb.len() < 1_000_000);
    let (status, body) = post(&url, None, &bomb, true);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let (status, _) = post(&url, None, b"", false);
    assert_eq!(status, 400);
    let (status, body) = post(&url, None, &[0x1f, 0x8b, 0, 1, 2], false);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_gzip"))
    );

    // Acknowledged scans survive a kill -9 and a restart.
    let piece = "00270123456789123456-12345678901";
    let before = get(&server.url(&format!("/v1/pieces/{piece}")), None).1;
    drop(server);
    let server = Served::start(&data, &[]);
    let after = get(&server.url(&format!("/v1/pieces/{piece}")), None).1;
    assert_eq!(before, after);
    assert_eq!(
        after["events"].as_array().unwrap().len() as u64,
        accepted + 1
    );
}

#[test]
fn spooled_files_are_ingested_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/feeds/ivmtr_pipe_camel.psv"
    );
    let feed = std::fs::read(source).unwrap();
    // Plants write under a temp name, then rename.
    let drop_file = |name: &str, bytes: &[u8]| {
        let tmp = spool.join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, spool.join(name)).unwrap();
    };
    let spool_arg = spool.to_str().unwrap();
    let server = Served::start(&data, &["--spool", spool_arg]);
    drop_file("0001.psv", &feed);
    drop_file("0002.psv", b"this is no feed at all\n");
    wait_for("0001.psv in done/", || spool.join("done/0001.psv").exists());
    wait_for("0002.psv in failed/", || {
        spool.join("failed/0002.psv.reason").exists()
    });
    let reason = std::fs::read_to_string(spool.join("failed/0002.psv.reason")).unwrap();
    assert!(!reason.trim().is_empty());

    let piece = "00270123456789123456-12345678901";
    let (status, before) = get(&server.url(&format!("/v1/pieces/{piece}")), None);
    assert_eq!(status, 200, "{before}");

    // Killed; the same file comes back (as after a crash between its ingest and its move).
    drop(server);
    drop_file("0001.psv", &feed);
    let server = Served::start(&data, &["--spool", spool_arg]);
    wait_for("the second 0001.psv in done/", || {
        spool.join("done/0001.psv.1").exists()
    });
    let (_, after) = get(&server.url(&format!("/v1/pieces/{piece}")), None);
    assert_eq!(before, after, "a replayed file must not double scans");
    assert!(!spool.join("0001.psv").exists());
    // The spool logs a file's counts after moving it: the line may trail the move.
    wait_for("the replayed file's log line", || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("0001.psv.1") && l.contains(" 0 new"))
    });
}

#[test]
fn maintenance_expires_buckets_past_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 500);
    let mail = imb_pieces(&lines)[0];
    let mail_buckets = || {
        std::fs::read_dir(data.join("buckets"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("mail-")
            })
            .count()
    };
    assert!(mail_buckets() > 0);
    // 40 days on: mail (30 days) is past its window, packages (90) are not.
    let server = Served::start_at(
        &data,
        "2025-03-01T00:00:00Z",
        "serve",
        &["--maintenance-every", "1"],
    );
    wait_for("the mail buckets to go", || mail_buckets() == 0);
    assert_eq!(get(&server.url(&format!("/v1/pieces/{mail}")), None).0, 404);
    let (_, metrics) = get(&server.url("/metrics"), None);
    let expired: f64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("imbtrack_expired_buckets_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(expired >= 1.0, "{metrics}");
    assert!(std::fs::read_dir(data.join("buckets")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("package-")));
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("maintenance: sealed"), "{log}");
}

#[test]
fn tls_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let server = Served::start(
        &data,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);

    let root = ureq::tls::Certificate::from_der(cert.der()).to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent.get(&server.url("/healthz")).call().unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let (status, body) = answer(response);
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // Plain HTTP to the TLS port gets no answer; an agent that does not trust the certificate
    // refuses it.
    let plain = server.base.replace("https://", "http://");
    assert!(agent.get(&format!("{plain}/healthz")).call().is_err());
    assert!(agent_default_get(&server.url("/healthz")).is_err());

    // A key that does not match the certificate stops the server at start.
    drop(server);
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key_path, other.serialize_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imbtrack"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS"), "{stderr}");
}

fn agent_default_get(url: &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    ureq::get(url).call()
}

#[test]
fn slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Served::start(
        &data,
        &["--header-timeout", "0.5", "--request-timeout", "0.5"],
    );
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection (perhaps after a 408) instead of waiting for the rest;
    // had it waited, the read would have failed on its own 20 s timeout.
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "the connection stayed open: {read:?}");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // The server still serves others.
    assert_eq!(get(&server.url("/healthz"), None).0, 200);
    // A body that never finishes: cut by the request timeout, and audited all the same.
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"POST /v1/scans HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nimb|")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"));
    assert!(server.stop().success());
    assert!(audit_lines(&data)
        .iter()
        .any(|e| e["route"] == "/v1/scans" && e["status"] == 503));
}

#[test]
fn demo_generates_ingests_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // At 06:00 the first sample piece has a 9-digit Mailer ID (962515611), which a summary
    // link cut at six digits got wrong.
    let demo = Served::start_at(&data, "2025-01-20T06:00:00Z", "demo", &["--pieces", "500"]);
    wait_for("the demo's sample lines", || {
        demo.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Ctrl-C"))
    });
    let log = demo.log.lock().unwrap().join("\n");
    // Every request the demo suggests answers.
    let suggested: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("curl -s ").nth(1))
        .map(|url| url.trim_matches('\''))
        .collect();
    assert!(
        suggested.iter().any(|url| url.contains("/v1/pieces/")),
        "{log}"
    );
    // If the generator changes, pick another time whose first sample has a 9-digit Mailer ID.
    assert!(
        suggested.iter().any(|url| url.contains("/v1/mailers/9")),
        "no 9-digit Mailer ID among the demo's links: {log}"
    );
    for url in suggested {
        let (status, body) = get(url, None);
        assert_eq!(status, 200, "{url}: {body}");
    }
}

#[test]
fn requests_that_cannot_be_audited_are_refused() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 50);
    let piece = server_piece_url(&imb_pieces(&lines)[0]);
    let server = Served::start(&data, &["--audit", "/dev/full"]);
    // The first line written fails; from then on the server says it is unhealthy and answers
    // no request it cannot audit.
    get(&server.url(&piece), None);
    wait_for("/healthz to turn unhealthy", || {
        get(&server.url("/healthz"), None).0 == 503
    });
    let (_, health) = get(&server.url("/healthz"), None);
    assert!(
        health["error"].as_str().unwrap().contains("audit log"),
        "{health}"
    );
    let (status, body) = get(&server.url(&piece), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("audit_unavailable"))
    );
}

fn server_piece_url(barcode: &Barcode) -> String {
    format!("/v1/pieces/{barcode}")
}

#[test]
fn sighup_reloads_the_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    store_with(&data, 20);
    let (path, old) = tokens_file(dir.path(), &[("ops", "admin")]);
    let server = Served::start(&data, &["--tokens", path.to_str().unwrap()]);
    let health = server.url("/v1/nothing");
    let status = |token: &str| get(&health, Some(token)).0;
    assert_eq!(status(&old[0]), 404);
    // A new file: the old token revoked, a new one added; it counts from the SIGHUP on.
    let next_dir = dir.path().join("next");
    std::fs::create_dir_all(&next_dir).unwrap();
    let (next_path, new) = tokens_file(&next_dir, &[("ops-2", "admin")]);
    std::fs::copy(&next_path, &path).unwrap();
    assert_eq!(status(&new[0]), 401);
    let hup = |pid: u32| {
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    hup(server.child.id());
    wait_for("the new token to count", || status(&new[0]) == 404);
    assert_eq!(status(&old[0]), 401);
    // A file that does not load leaves the tokens as they were.
    std::fs::write(&path, "tokens = 3").unwrap();
    hup(server.child.id());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&new[0]), 404);
}

/// Every run of 20 or more digits in `bytes`, cut to its first 20: the tracking codes (and
/// package numbers) a feed holds.
fn trackings(bytes: &[u8]) -> std::collections::BTreeSet<Vec<u8>> {
    bytes
        .split(|b| !b.is_ascii_digit())
        .filter(|run| run.len() >= 20)
        .map(|run| run[..20].to_vec())
        .collect()
}

#[test]
fn a_hundred_days_on_no_barcode_is_left_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let feed = dir.path().join(".feed.psv");
    let made = imbtrack(
        &data,
        &[
            "gen",
            "--pieces",
            "300",
            "--start",
            "2025-01-12",
            "--days",
            "3",
            "--bad-share",
            "0.02",
            "--out",
            feed.to_str().unwrap(),
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let needles = trackings(&std::fs::read(&feed).unwrap());
    assert!(needles.len() > 300);
    let spool_arg = spool.to_str().unwrap();
    let server = Served::start(&data, &["--spool", spool_arg]);
    std::fs::rename(&feed, spool.join("feed.psv")).unwrap();
    wait_for("the feed in done/", || spool.join("done/feed.psv").exists());
    // Lookups, so the audit log has lines about these pieces.
    for needle in needles.iter().take(20) {
        get(
            &server.url(&format!("/v1/pieces/{}", String::from_utf8_lossy(needle))),
            None,
        );
    }
    assert!(server.stop().success());
    let both = |needles| found_under(&data, needles) + found_under(&spool, needles);
    assert!(
        both(&needles) > 0,
        "the search must find the feed's barcodes at first"
    );

    // 100 days on, maintenance and the spool watcher expire everything.
    let later = Served::start_at(
        &data,
        "2025-04-30T00:00:00Z",
        "serve",
        &["--spool", spool_arg, "--maintenance-every", "1"],
    );
    wait_for("done/ to empty", || {
        std::fs::read_dir(spool.join("done")).unwrap().count() == 0
    });
    wait_for("the store to empty", || {
        std::fs::read_dir(data.join("buckets")).unwrap().count() == 0
    });
    assert!(later.stop().success());
    assert_eq!(both(&needles), 0, "a barcode is still in clear somewhere");
}

#[test]
fn a_hostile_spool_gets_nothing_out_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // A secret outside the spool, a link to it, and a regular file named done/ should be.
    let secret = dir.path().join("secret.psv");
    std::fs::write(
        &secret,
        "imb|scanDatetime|scanEventCode|scanFacilityZip\nSECRET-TOKEN|x|y|z\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, spool.join("0000-link.psv")).unwrap();
    std::fs::write(spool.join("done"), "not a directory").unwrap();
    let feed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/feeds/ivmtr_pipe_camel.psv"
    ))
    .unwrap();
    std::fs::write(spool.join("0001.psv"), &feed).unwrap();
    let server = Served::start(&data, &["--spool", spool.to_str().unwrap()]);
    // The feed is ingested though it cannot be moved to done/ (it waits there, logged).
    let piece = "/v1/pieces/00270123456789123456-12345678901";
    wait_for("the feed's piece", || {
        get(&server.url(piece), None).0 == 200
    });
    // The link was never read: nothing of the secret anywhere in the spool or the store.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(server.stop().success());
    let secret_found = |dir: &Path| {
        let needles = std::iter::once(b"SECRET-TOKEN".to_vec()).collect();
        found_under(dir, &needles)
    };
    assert_eq!(secret_found(&spool) + secret_found(&data), 0);
    assert!(spool.join("0000-link.psv").is_symlink());
}
