//! The server under abuse, on 127.0.0.1 and bounded in count: garbage on the socket, malformed
//! request lines, huge headers, bad paths and bodies, oversized and trickled bodies, and many
//! clients at once mixing good and bad requests. It must answer each with the right error, stay
//! up, and keep its memory bounded.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{get, imb_pieces, post, store_with, Served};
use serde_json::Value;

/// Sends raw bytes on a fresh connection and returns what the server answered before closing
/// (or before 20 s passed).
fn raw(address: &str, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may close before reading everything (a refused header): that is an answer too.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn malformed_oversized_slow_and_concurrent_requests_are_answered_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = store_with(&data, 2000);
    let pieces: Vec<String> = imb_pieces(&lines).iter().map(|b| b.to_string()).collect();
    let server = Served::start(
        &data,
        &[
            "--max-body",
            "65536",
            "--request-timeout",
            "1",
            "--header-timeout",
            "2",
        ],
    );
    let address = server.base.trim_start_matches("http://").to_string();
    let pid = server.child.id();

    // Garbage and malformed request lines: a 400, or the connection closed; never a hang.
    for bytes in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
    ] {
        let answer = raw(&address, bytes);
        assert!(
            answer.is_empty() || status_of(&answer).is_some_and(|s| (400..500).contains(&s)),
            "{bytes:?} -> {answer:?}"
        );
    }
    // Both lengths (a smuggling attempt): chunked wins, the body never comes, the request times
    // out and the connection is closed rather than reused.
    let answer = raw(
        &address,
        b"POST /v1/scans HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(
        answer.is_empty()
            || status_of(&answer) == Some(400)
            || (status_of(&answer) == Some(503) && answer.contains("connection: close")),
        "{answer}"
    );
    // A header section past hyper's limit: refused, not buffered without end.
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(b"\r\n\r\n");
    let answer = raw(&address, &huge);
    assert!(
        answer.is_empty() || status_of(&answer).is_some_and(|s| s == 431 || s == 400),
        "{answer:.80}"
    );

    // Bad paths and parameters: JSON errors with 4xx.
    for (path, code) in [
        ("/v1/pieces/%FF%FE", 400),
        (&*format!("/v1/pieces/{}", "9".repeat(10_000)), 400),
        ("/v1/pieces/..%2F..%2Fetc%2Fpasswd", 400),
        (
            "/v1/zips/94110/pieces?date=2025-01-11&limit=99999999999999999999",
            400,
        ),
        ("/v1/zips/9411O/pieces?date=2025-01-11", 400),
        ("/v1/mailers/12345/summary?date=2025-01-11", 400),
        (
            "/v1/mailers/123456/summary?date=2025-01-11&stale_hours=-1",
            400,
        ),
        ("/v1//pieces", 404),
    ] {
        let (status, body) = get(&server.url(path), None);
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    // Bad and oversized bodies.
    let url = server.url("/v1/pieces:batch");
    for body in [
        &b"not json"[..],
        b"{\"barcodes\": 7}",
        b"[]",
        b"{\"barcodes\": [\"x\"], \"more\": 1}",
    ] {
        let (status, answer) = post(&url, None, body, false);
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("bad_body"))
        );
    }
    let (status, _) = post(&url, None, &vec![b'x'; 70_000], false);
    assert_eq!(status, 413);
    // A body that declares more than it sends, then trickles: cut off at the request timeout.
    let answer = raw(
        &address,
        b"POST /v1/scans HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"events\": [",
    );
    assert_eq!(status_of(&answer), Some(503), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");

    // Many clients at once, good and bad requests mixed: every answer is the expected one.
    let before = rss_kib(pid);
    let push = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/feeds/push_body.json"
    ))
    .unwrap();
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let (pieces, push, server) = (&pieces, &push, &server);
            scope.spawn(move || {
                for i in 0..300 {
                    let n = worker * 300 + i;
                    match n % 5 {
                        0 | 1 => {
                            let piece = &pieces[n % pieces.len()];
                            let (status, body) =
                                get(&server.url(&format!("/v1/pieces/{piece}")), None);
                            assert_eq!(status, 200, "{body}");
                            assert_eq!(body["barcode"].as_str(), Some(piece.as_str()));
                        }
                        2 => {
                            let (status, _) =
                                get(&server.url("/v1/pieces/00270999999000000001"), None);
                            assert_eq!(status, 404);
                        }
                        3 => {
                            let (status, body) = post(&server.url("/v1/scans"), None, push, false);
                            assert_eq!(status, 200, "{body}");
                        }
                        _ => {
                            let (status, body): (u16, Value) =
                                get(&server.url("/v1/zips/1234/pieces?date=2025-01-11"), None);
                            assert_eq!(status, 400, "{body}");
                        }
                    }
                }
            });
        }
    });
    let after = rss_kib(pid);
    // 2,400 requests must not grow the server by more than a few tens of MB (allocator caches
    // and the pushed scans' head entries; nothing per request is kept).
    assert!(
        after < before + 64 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(get(&server.url("/healthz"), None).0, 200);
    assert!(server.stop().success());
}
