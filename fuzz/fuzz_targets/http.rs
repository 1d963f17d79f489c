//! Any request to the server's routes: a method byte, a path line, header lines, a blank line,
//! then the body. The method byte also picks the server: one with tokens, or one without
//! (whose `Host` and `Origin` checks then see the fuzzed headers). Requests the `http` crate refuses to build are skipped (hyper would refuse
//! them on the wire). The server must answer every request without panicking and never with a
//! 500: bad input is a 4xx with a JSON error.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use imbtrack_engine::{Engine, EngineOptions};
use imbtrack_feed::RejectList;
use imbtrack_server::{token_hash_hex, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

// Seeds start with `A` (65 % 6 = 5: GET) or `B` (66 % 6 = 0: POST).
const METHODS: [&str; 6] = ["POST", "PUT", "DELETE", "HEAD", "OPTIONS", "GET"];
const NOW_MS: i64 = 1_737_331_200_000; // 2025-01-20T00:00:00Z

struct App {
    runtime: tokio::runtime::Runtime,
    with_tokens: axum::Router,
    without_tokens: axum::Router,
    _dir: tempfile::TempDir,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        // In memory where there is a tmpfs: pushes fsync, and a disk's fsync would make them
        // most of the run's time.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir");
        let (engine, _) =
            Engine::open(&dir.path().join("data"), EngineOptions::at(NOW_MS)).expect("store");
        let feed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/feeds/push_body.json"
        ))
        .expect("fixture");
        engine
            .ingest("seed", &feed, &mut RejectList::default(), &|_| {})
            .expect("seed ingest");
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens,
            format!(
                "[[tokens]]\nid = \"admin\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\n\
                 [[tokens]]\nid = \"mailer\"\nsha256 = \"{}\"\nscopes = [\"mailer:123456\"]\n",
                token_hash_hex("fuzz-admin"),
                token_hash_hex("fuzz-mailer")
            ),
        )
        .expect("tokens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            dir.path().join("audit.jsonl"),
        );
        config.limits.max_body_bytes = 1 << 20;
        config.limits.max_inflated_bytes = 4 << 20;
        let engine = Arc::new(engine);
        let open = runtime
            .block_on(Server::bind(config.clone(), engine.clone()))
            .expect("server without tokens");
        config.tokens = Some(tokens);
        let server = runtime
            .block_on(Server::bind(config, engine))
            .expect("server");
        App {
            with_tokens: server.router(),
            without_tokens: open.router(),
            runtime,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&method, rest)) = data.split_first() else {
        return;
    };
    let text_end = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(rest.len());
    let (head, body) = rest.split_at(text_end);
    let body = body.get(2..).unwrap_or_default();
    let mut lines = head.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or_default();
    let mut builder = axum::http::Request::builder()
        .method(METHODS[method as usize % METHODS.len()])
        .uri(path);
    for line in lines {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            builder = builder.header(&line[..colon], line[colon + 1..].trim_ascii());
        }
    }
    let Ok(request) = builder.body(Body::from(body.to_vec())) else {
        return;
    };
    // A HEAD answer has no body to check.
    let head = request.method() == axum::http::Method::HEAD;
    let app = app();
    let router = if (method / 6) % 2 == 0 {
        &app.with_tokens
    } else {
        &app.without_tokens
    };
    let response = app
        .runtime
        .block_on(router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    assert_ne!(status.as_u16(), 500, "a request was answered 500");
    let body = app
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("body");
    if status.is_client_error() && !head {
        let value: serde_json::Value = serde_json::from_slice(&body).expect("errors are JSON");
        assert!(value["error"]["code"].is_string(), "{value}");
    }
});
