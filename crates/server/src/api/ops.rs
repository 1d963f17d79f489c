//! Health, metrics and the tracking page.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::{json_response, Shared};

/// Healthy unless the store failed a write (then it takes no more scans until restarted).
pub(super) async fn healthz(State(state): Shared) -> Response {
    let audit = || state.audit.failure().map(|why| format!("audit log: {why}"));
    match state.engine.failure().or_else(audit) {
        None => json_response(&json!({"status": "ok"})),
        Some(why) => {
            let mut response = json_response(&json!({"status": "failed", "error": why}));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

/// Prometheus text. With tokens, only for a token with scope `admin` or `metrics`: the counts
/// say how much is tracked and for whom the routes are busy.
pub(super) async fn metrics_text(State(state): Shared, headers: axum::http::HeaderMap) -> Response {
    if let Some(tokens) = &state.tokens {
        let caller = tokens.load().authenticate(
            headers
                .get(header::AUTHORIZATION)
                .map(axum::http::HeaderValue::as_bytes),
        );
        match caller {
            Ok(caller) if caller.may_read_metrics() => {}
            Ok(_) => return ApiError::forbidden("metrics").into_response(),
            Err(_) => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send a token with scope admin or metrics as Authorization: Bearer <token>",
                )
                .into_response()
            }
        }
    }
    let stats = state.engine.stats();
    metrics::gauge!("imbtrack_sealed_buckets").set(stats.buckets as f64);
    metrics::gauge!("imbtrack_head_buckets").set(stats.head_buckets as f64);
    metrics::gauge!("imbtrack_scans").set(stats.scans as f64);
    metrics::gauge!("imbtrack_store_bytes").set(stats.bytes as f64);
    metrics::gauge!("imbtrack_sealed_bytes").set(stats.sealed_bytes as f64);
    metrics::gauge!("imbtrack_head_scans").set(stats.head_scans as f64);
    metrics::gauge!("imbtrack_head_bytes").set(stats.head_bytes as f64);
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub(super) async fn page_html() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../page/index.html"),
    )
        .into_response()
}

pub(super) async fn page_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../page/app.js"),
    )
        .into_response()
}

pub(super) async fn page_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../page/app.css"),
    )
        .into_response()
}
