//! The tracking page in a real browser: headless Chromium, driven through chromedriver
//! (Debian's `chromium` and `chromium-driver`), types barcodes into the page served by the real
//! binary and reads the status and timeline it draws.
//!
//! Without chromedriver on the PATH the test says so and passes, except under CI (`CI` set),
//! where `.ci/run` installs it and its absence is a failure.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, imb_pieces, store_with, Served};
use fantoccini::{ClientBuilder, Locator};
use imbtrack_barcode::Barcode;
use serde_json::{json, Value};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromedriver() -> Option<(Driver, u16)> {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => Some((Driver(child), port)),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the browser test: chromedriver did not start ({e}); apt-get install chromium chromium-driver");
            None
        }
        Err(e) => panic!("chromedriver is required under CI: {e}"),
    }
}

/// Waits until `element`'s text satisfies `done`, and returns it.
async fn text_when(client: &fantoccini::Client, id: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "#{id} still shows {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Types `barcode` into the page's field, as a person would, and presses Track.
async fn track(client: &fantoccini::Client, barcode: &str) {
    let input = client.find(Locator::Id("barcode")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(barcode).await.unwrap();
    let button = client.find(Locator::Id("go")).await.unwrap();
    button.click().await.unwrap();
}

fn words(status: &str) -> String {
    let lower = status.to_lowercase().replace('_', " ");
    let mut chars = lower.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_a_barcode_shows_its_status_and_scans() {
    let Some((_driver, port)) = chromedriver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 2000);
    let server = Served::start(&data, &[]);
    let pieces = imb_pieces(&lines);

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=412,915"]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut client = None;
    // chromedriver takes a moment to listen.
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let client = client.expect("no WebDriver session from chromedriver");
    client.goto(&server.url("/")).await.unwrap();

    // Digits for one piece, 65 bars for another: each shows its status and every scan.
    let Barcode::Imb(second) = pieces[1] else {
        panic!()
    };
    for (typed, piece) in [
        (pieces[0].to_string(), pieces[0]),
        (second.encode().to_string(), pieces[1]),
    ] {
        let (status, expected) = get(&server.url(&format!("/v1/pieces/{piece}")), None);
        assert_eq!(status, 200);
        track(&client, &typed).await;
        let shown = text_when(&client, "piece-barcode", |t| t == piece.to_string()).await;
        assert_eq!(shown, piece.to_string());
        let status = text_when(&client, "status", |t| !t.is_empty()).await;
        assert_eq!(status, words(expected["status"].as_str().unwrap()));
        let events = client
            .find_all(Locator::Css("#events li.event strong"))
            .await
            .unwrap();
        let expected_events = expected["events"].as_array().unwrap();
        assert_eq!(events.len(), expected_events.len());
        for (element, event) in events.iter().zip(expected_events) {
            let description = event["description"].as_str().unwrap();
            let want = if description.is_empty() {
                format!("Event {}", event["code"].as_str().unwrap())
            } else {
                description.to_string()
            };
            assert_eq!(element.text().await.unwrap(), want);
        }
        let times: Vec<Value> = expected_events.iter().map(|e| e["time"].clone()).collect();
        let first_time = client
            .find(Locator::Css("#events li.event time"))
            .await
            .unwrap()
            .attr("datetime")
            .await
            .unwrap();
        assert_eq!(first_time.as_deref(), times[0].as_str());
        // Assumed and logical scans are marked as such; the expected delivery day is shown.
        let marked = client
            .find_all(Locator::Css("#events li.event .scan-type"))
            .await
            .unwrap()
            .len();
        let not_actual = expected_events
            .iter()
            .filter(|e| matches!(e["scan_type"].as_str(), Some("AA" | "L")))
            .count();
        assert_eq!(marked, not_actual);
        let day = text_when(&client, "expected", |t| !t.is_empty()).await;
        match expected["expected_delivery"].as_str() {
            Some(expected_day) => assert!(day.starts_with(expected_day), "{day}"),
            None => assert_eq!(day, "—"),
        }
    }

    // A barcode with no scans says so.
    track(&client, "00270999999000000001").await;
    let message = text_when(&client, "message", |t| t.contains("no scans")).await;
    assert!(message.contains("retention window"), "{message}");
    assert!(!client
        .find(Locator::Id("result"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());

    if let Some(path) = std::env::var_os("IMBTRACK_SCREENSHOT") {
        client
            .goto(&server.url(&format!("/?barcode={}", pieces[0])))
            .await
            .unwrap();
        text_when(&client, "status", |t| !t.is_empty()).await;
        std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
    }
    client.close().await.unwrap();
}
