//! End-to-end: status-change subscriptions over HTTP on 127.0.0.1. A test receiver records
//! what `imbtrack serve` POSTs to it; a mailer subscribes its Mailer ID; a generated feed is
//! pushed in three parts, so pieces change status several times; the receiver then answers 500
//! for a while, the server is killed with SIGKILL in the middle and restarted, and the receiver
//! recovers. Every delivery must verify, belong to the subscribed Mailer ID, follow the piece's
//! previous one, and the last per piece must equal `GET /v1/pieces/{barcode}`.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use common::{generated_feed, get, post, tokens_file, wait_for, Served};
use imbtrack_feed::time::{days_from_civil, format_utc};
use imbtrack_feed::{GenOptions, ScanEvent};
use serde_json::{json, Value};

const SECRET: &str = "a-secret-of-the-mailers-own";

/// One POST the receiver took: its headers that matter and its body.
#[derive(Clone, Debug)]
struct Received {
    delivery_id: String,
    signature: String,
    body: Vec<u8>,
}

/// An HTTP receiver on 127.0.0.1 answering every POST with `status` (and closing the
/// connection), recording what it was sent.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (answer, record) = (status.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else {
                        break;
                    };
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
                }
                let length: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = answer.load(Ordering::SeqCst);
                if status == 200 {
                    record.lock().unwrap().push(Received {
                        delivery_id: headers["x-imbtrack-delivery"].clone(),
                        signature: headers["x-imbtrack-signature"].clone(),
                        body,
                    });
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            port,
            status,
            received,
        }
    }

    /// `imbtrack serve` on `data` with the tokens file and this receiver's address allowed as
    /// a webhook destination, and `extra` options.
    fn serve(&self, data: &std::path::Path, tokens: &std::path::Path, extra: &[&str]) -> Served {
        let allow = format!("127.0.0.1:{}", self.port);
        let mut args = vec![
            "--tokens",
            tokens.to_str().unwrap(),
            "--webhook-allow",
            &allow,
        ];
        args.extend_from_slice(extra);
        Served::start(data, &args)
    }

    /// What it accepted, each delivery once (a delivery may come again: at least once).
    fn deliveries(&self) -> Vec<Received> {
        let mut seen = std::collections::HashSet::new();
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| seen.insert(r.delivery_id.clone()))
            .cloned()
            .collect()
    }
}

/// A feed's scans as a delimited body.
fn body_of(events: &[&ScanEvent]) -> Vec<u8> {
    let mut text = String::from("imb|impb|scanDatetime|scanEventCode|scanFacilityZip\n");
    for event in events {
        let barcode = event.barcode.to_barcode().to_string();
        let (imb, impb) = match event.class {
            imbtrack_feed::MailClass::Mail => (barcode, String::new()),
            imbtrack_feed::MailClass::Package => (String::new(), barcode),
        };
        text.push_str(&format!(
            "{imb}|{impb}|{}|{}|{}\n",
            format_utc(event.time_ms),
            event.code,
            event.facility_zip
        ));
    }
    text.into_bytes()
}

#[test]
fn status_changes_reach_the_subscriber_signed_in_order_across_an_outage_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start();

    // A feed, its pieces' scans split in three parts by time.
    let mut options = GenOptions::new(300, days_from_civil(2025, 1, 14));
    (options.days, options.seed) = (3, 5);
    let (_, parsed) = generated_feed(&options);
    let mut events: Vec<&ScanEvent> = parsed.events.iter().collect();
    events.sort_by_key(|e| e.time_ms);
    let thirds: Vec<Vec<u8>> = events
        .chunks(events.len().div_ceil(3))
        .map(body_of)
        .collect();
    // The Mailer ID with the most mail pieces, and another.
    let mut by_mid = BTreeMap::<u32, usize>::new();
    for event in &events {
        if let Some(mid) = event.barcode.to_barcode().mailer_id() {
            *by_mid.entry(mid).or_default() += 1;
        }
    }
    let ours = *by_mid.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let theirs = *by_mid.keys().find(|m| **m != ours).unwrap();
    let text = imbtrack_barcode::format_mailer_id;

    let (tokens_path, tokens) = tokens_file(
        dir.path(),
        &[
            ("ops", "admin"),
            ("plant", "ingest"),
            ("acme", &format!("mailer:{}", text(ours))),
        ],
    );
    let (admin, plant, acme) = (
        Some(tokens[0].as_str()),
        Some(tokens[1].as_str()),
        Some(tokens[2].as_str()),
    );
    let serve = || receiver.serve(&data, &tokens_path, &["--webhook-max-backoff", "1"]);
    let server = serve();
    let hook = format!("http://127.0.0.1:{}/imbtrack", receiver.port);
    let subscribe = |server: &Served, token, url: &str, mid: u32| {
        let request = json!({"url": url, "secret": SECRET, "mailer_ids": [text(mid)]});
        post(
            &server.url("/v1/subscriptions"),
            token,
            request.to_string().as_bytes(),
            false,
        )
    };
    // Not another mailer's pieces, not a host the operator did not allow.
    assert_eq!(subscribe(&server, acme, &hook, theirs).0, 403);
    let elsewhere = format!("http://127.0.0.1:{}/x", receiver.port + 1);
    let refused = subscribe(&server, acme, &elsewhere, ours);
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (400, Some("destination_not_allowed"))
    );
    let metadata = "http://169.254.169.254/latest/meta-data";
    assert_eq!(subscribe(&server, admin, metadata, ours).0, 400);
    let (status, made) = subscribe(&server, acme, &hook, ours);
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    assert!(made.get("secret").is_none());
    // The mailer lists its own; the test trigger reaches the receiver.
    let (_, listed) = get(&server.url("/v1/subscriptions"), acme);
    assert_eq!(listed["subscriptions"][0]["id"], id.as_str());
    let (status, test) = post(
        &server.url(&format!("/v1/subscriptions/{id}:test")),
        acme,
        b"",
        false,
    );
    assert_eq!(status, 202, "{test}");
    wait_for("the test delivery", || {
        receiver
            .deliveries()
            .iter()
            .any(|r| r.delivery_id == test["delivery_id"].as_str().unwrap())
    });

    // Two parts pushed; then the receiver fails, the third part is pushed, and the server is
    // killed while its deliveries wait.
    for part in &thirds[..2] {
        assert_eq!(post(&server.url("/v1/scans"), plant, part, false).0, 200);
    }
    wait_for("the first parts' deliveries", || {
        let (_, listed) = get(&server.url("/v1/subscriptions"), acme);
        listed["subscriptions"][0]["pending"] == 0
    });
    receiver.status.store(500, Ordering::SeqCst);
    assert_eq!(
        post(&server.url("/v1/scans"), plant, &thirds[2], false).0,
        200
    );
    let (_, listed) = get(&server.url("/v1/subscriptions"), acme);
    assert!(
        listed["subscriptions"][0]["pending"].as_u64().unwrap() > 0,
        "{listed}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(server); // SIGKILL
    let server = serve();
    receiver.status.store(200, Ordering::SeqCst);
    wait_for("every delivery after the outage and the kill", || {
        let (_, listed) = get(&server.url("/v1/subscriptions"), acme);
        listed["subscriptions"][0]["pending"] == 0
    });

    // Every delivery is signed, about our Mailer ID, and follows the piece's previous one.
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let deliveries = receiver.deliveries();
    let changes: Vec<(Received, Value)> = deliveries
        .into_iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (r, body)
        })
        .filter(|(_, body)| body.get("test").is_none())
        .collect();
    assert!(changes.len() > 10, "{} deliveries", changes.len());
    for (received, body) in &changes {
        assert_eq!(
            received.signature,
            imbtrack_server::webhooks::signature(SECRET, &received.body)
        );
        assert_eq!(body["delivery_id"], received.delivery_id.as_str());
        assert_eq!(body["mailer_id"], text(ours).as_str());
        let barcode = body["barcode"].as_str().unwrap().to_string();
        let previous = last.get(&barcode).map(|b| b["status"].clone());
        assert_eq!(
            body["previous_status"],
            previous.unwrap_or(Value::Null),
            "{barcode}: {body}"
        );
        assert_ne!(body["previous_status"], body["status"]);
        last.insert(barcode, body.clone());
    }
    // The last delivery per piece is the piece's status now, for every piece of that Mailer
    // ID, and no other's.
    let mut pieces: Vec<String> = events
        .iter()
        .filter(|e| e.barcode.to_barcode().mailer_id() == Some(ours))
        .map(|e| e.barcode.to_barcode().to_string())
        .collect();
    pieces.sort();
    pieces.dedup();
    assert_eq!(last.keys().cloned().collect::<Vec<_>>(), pieces);
    for (barcode, body) in &last {
        let (status, piece) = get(&server.url(&format!("/v1/pieces/{barcode}")), admin);
        assert_eq!(status, 200);
        assert_eq!(body["status"], piece["status"], "{barcode}");
    }
    // Nothing was set aside; the receiver's refusals were retried.
    let (status, failures) = get(
        &server.url(&format!("/v1/subscriptions/{id}/failures")),
        acme,
    );
    assert_eq!((status, failures), (200, json!({"failures": []})));
    // Another mailer's token sees neither the subscription nor its failures.
    assert_eq!(
        get(
            &server.url(&format!("/v1/subscriptions/{id}/failures")),
            plant
        )
        .0,
        403
    );
    let stopped = server.stop();
    assert!(stopped.success());
    let audit = std::fs::read_to_string(data.join("audit").join("audit.jsonl")).unwrap();
    assert!(audit.contains("(webhook delivery)"));
}

/// A receiver that never answers well: after the give-up time each delivery is set aside and
/// listed as a failure, and the outbox empties; ingest never waited on it.
#[test]
fn deliveries_that_keep_failing_are_set_aside_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start();
    receiver.status.store(503, Ordering::SeqCst);
    let (tokens_path, tokens) = tokens_file(dir.path(), &[("ops", "admin"), ("plant", "ingest")]);
    let (admin, plant) = (Some(tokens[0].as_str()), Some(tokens[1].as_str()));
    let server = receiver.serve(
        &data,
        &tokens_path,
        &["--webhook-give-up", "1", "--webhook-max-backoff", "1"],
    );
    let request = json!({
        "url": format!("http://127.0.0.1:{}/hook", receiver.port),
        "secret": SECRET,
        "mailer_ids": ["123456"],
    });
    let (status, made) = post(
        &server.url("/v1/subscriptions"),
        admin,
        request.to_string().as_bytes(),
        false,
    );
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    // A token holds at most 100 subscriptions.
    for made in 1..=100 {
        let (status, body) = post(
            &server.url("/v1/subscriptions"),
            admin,
            request.to_string().as_bytes(),
            false,
        );
        let expected = if made < 100 { 201 } else { 429 };
        assert_eq!(status, expected, "{made}: {body}");
    }
    let too_many =
        json!({"url": request["url"], "secret": SECRET, "mailer_ids": vec![123456; 1001]});
    let refused = post(
        &server.url("/v1/subscriptions"),
        admin,
        too_many.to_string().as_bytes(),
        false,
    );
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (400, Some("bad_mailer_id"))
    );
    let feed = b"imb|scanDatetime|scanEventCode|scanFacilityZip\n\
        0027012345678912345612345678901|2025-01-15T10:00:00-05:00|918|94110\n\
        0027012345678912345712345678901|2025-01-15T10:00:00-05:00|517|94110\n";
    assert_eq!(post(&server.url("/v1/scans"), plant, feed, false).0, 200);
    wait_for("both deliveries set aside", || {
        let (_, failures) = get(
            &server.url(&format!("/v1/subscriptions/{id}/failures")),
            admin,
        );
        failures["failures"].as_array().unwrap().len() == 2
    });
    let (_, failures) = get(
        &server.url(&format!("/v1/subscriptions/{id}/failures")),
        admin,
    );
    let statuses: Vec<&str> = failures["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["body"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["SORTED_FOR_DELIVERY", "DELIVERED"]);
    assert!(failures["failures"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("503"));
    let (_, listed) = get(&server.url("/v1/subscriptions"), admin);
    assert_eq!(listed["subscriptions"][0]["pending"], 0);
    assert_eq!(listed["subscriptions"][0]["failed"], 2);
    // Deleting it removes its files.
    let deleted = common::agent()
        .delete(server.url(&format!("/v1/subscriptions/{id}")))
        .header("Authorization", &format!("Bearer {}", tokens[0]))
        .call()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let left: Vec<_> = std::fs::read_dir(data.join("webhooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(id))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(receiver.deliveries().is_empty());
}

/// A subscription delivers only what its owner's token sees now: when a tokens reload
/// (SIGHUP) takes the Mailer ID away, its deliveries stop.
#[test]
fn a_scope_taken_away_stops_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start();
    let (tokens_path, tokens) = tokens_file(
        dir.path(),
        &[("plant", "ingest"), ("acme", "mailer:123456")],
    );
    let (plant, acme) = (Some(tokens[0].as_str()), Some(tokens[1].as_str()));
    let server = receiver.serve(&data, &tokens_path, &[]);
    let request = json!({
        "url": format!("http://127.0.0.1:{}/hook", receiver.port),
        "secret": SECRET,
        "mailer_ids": [123456],
    });
    let (status, made) = post(
        &server.url("/v1/subscriptions"),
        acme,
        request.to_string().as_bytes(),
        false,
    );
    assert_eq!(status, 201, "{made}");
    let scan = |code: &str, hour: u32| {
        format!(
            "imb|scanDatetime|scanEventCode|scanFacilityZip\n\
             0027012345678912345612345678901|2025-01-15T{hour:02}:00:00Z|{code}|94110\n"
        )
    };
    assert_eq!(
        post(
            &server.url("/v1/scans"),
            plant,
            scan("893", 8).as_bytes(),
            false
        )
        .0,
        200
    );
    wait_for("the first change", || receiver.deliveries().len() == 1);
    // acme now sees another Mailer ID only.
    let text = std::fs::read_to_string(&tokens_path)
        .unwrap()
        .replace("mailer:123456", "mailer:654321");
    std::fs::write(&tokens_path, text).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the reload", || {
        get(
            &server.url("/v1/pieces/0027012345678912345612345678901"),
            acme,
        )
        .0 == 404
    });
    assert_eq!(
        post(
            &server.url("/v1/scans"),
            plant,
            scan("918", 9).as_bytes(),
            false
        )
        .0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(receiver.deliveries().len(), 1);
}
