//! What every request goes through: security headers, the deadline, and authentication,
//! scopes and the audit log.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use imbtrack_engine::Clock;
use imbtrack_feed::time::format_utc;

use super::error::ApiError;
use super::{AuditNote, Shared};
use crate::audit::AuditEntry;
use crate::auth::{AuthFailure, Caller};
/// Every response gets headers that keep a browser from sniffing types, framing the page or
/// loading anything but our own files.
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request that takes longer than the limit (a client trickling its body, a lookup stuck
/// behind a long seal) is answered 503 instead of holding the connection.
pub(super) async fn deadline(State(state): Shared, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s",
                state.limits.request_timeout.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// Authenticates API requests, then writes the audit entry and the latency metrics.
pub(super) async fn guard(State(state): Shared, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let caller = match &state.tokens {
        None => Ok(Caller::local()),
        Some(tokens) => tokens.authenticate(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        ),
    };
    let (token, response) = match caller {
        Ok(caller) => {
            let id = caller.id.clone();
            request.extensions_mut().insert(caller);
            (id, next.run(request).await)
        }
        Err(failure) => {
            let message = match failure {
                AuthFailure::Missing => "send a token as Authorization: Bearer <token>",
                AuthFailure::Unknown => "the token is not known",
            };
            let error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
            ("-".to_string(), error.into_response())
        }
    };
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let status = response.status().as_u16();
    state.audit.record(&AuditEntry {
        // The wall clock, even when the engine's "now" is fixed for a replay.
        time: format_utc(Clock::System.now_ms()),
        token,
        method,
        route: route.clone(),
        // What the handler understood was asked, or the request as sent when it got no further.
        key: note.key.or(Some(target)),
        results: note.results,
        status,
    });
    metrics::histogram!("imbtrack_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("imbtrack_http_requests_total", "route" => route, "status" => status.to_string())
        .increment(1);
    response
}
