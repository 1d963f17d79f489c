//! What every request goes through: security headers, the deadline, and authentication,
//! scopes and the audit log.

use std::time::Instant;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use imbtrack_engine::Clock;
use imbtrack_feed::time::format_utc;

use super::error::ApiError;
use super::peers::FORWARDED;
use super::{AppState, AuditNote, Shared};
use crate::audit::AuditEntry;
use crate::auth::{AuthFailure, Caller};

/// Every response gets headers that keep a browser from sniffing types, framing the page or
/// loading anything but our own files; over HTTPS, one that keeps it on HTTPS.
pub(super) async fn security_headers(
    State(state): Shared,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if state.tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
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

/// Without tokens every caller is trusted, so only this machine's own callers are served: a
/// request whose `Host` is not a loopback name or address (a page on another site that rebound
/// its DNS name to 127.0.0.1) or that carries an `Origin` other than the server's own (another
/// site's page posting scans) is refused with 403. With tokens, a browser never sends one by
/// itself, so neither check is needed.
pub(super) async fn local_only(State(state): Shared, request: Request, next: Next) -> Response {
    if state.tokens.is_none() {
        if let Err(why) = from_this_machine(request.headers()) {
            return ApiError::new(StatusCode::FORBIDDEN, "not_local", why).into_response();
        }
    }
    next.run(request).await
}

/// Whether a `Host` value (name or address, maybe with a port) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Err(why)` unless the request's `Host` is loopback and its `Origin`, if any, is the
/// server's own (`http://` or `https://` and that `Host`).
fn from_this_machine(headers: &axum::http::HeaderMap) -> Result<(), String> {
    let text = |name| {
        headers
            .get(name)
            .map(|v: &HeaderValue| v.to_str().unwrap_or("\u{fffd}"))
    };
    let host = text(header::HOST);
    if let Some(host) = host {
        if !is_loopback_host(host) {
            return Err(format!(
                "Host {host:?} is not this machine; without tokens only loopback names are served"
            ));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let own = host.is_some_and(|host| {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        });
        if !own {
            return Err(format!(
                "Origin {origin:?} is not this server; without tokens only its own page may call it"
            ));
        }
    }
    Ok(())
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

/// Where [`name_route`] puts the matched route's pattern for [`audited`], which runs outside
/// the router and so never sees it. Filled as the request is routed, before the handler runs,
/// so a request the deadline cuts off still has its route.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Names the matched route (a route layer: only matched routes get one).
pub(super) async fn name_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(route)) = (
        request.extensions().get::<RouteSlot>(),
        request.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(route.as_str().to_string());
    }
    next.run(request).await
}

/// Who sent `request`: the caller another node of the cluster vouches for (a forwarded
/// request), or the caller its bearer token stands for (anyone, without tokens); `Err(why)`
/// otherwise.
fn authenticate(state: &AppState, request: &Request) -> Result<Caller, String> {
    let headers = request.headers();
    if let Some(voucher) = headers.get(FORWARDED) {
        let Some(key) = &state.cluster else {
            return Err(
                "this server is no node of a cluster: it takes no forwarded requests".into(),
            );
        };
        let target = request.uri().path_and_query().map_or("/", |t| t.as_str());
        return key
            .check(
                voucher.as_bytes(),
                request.method().as_str(),
                target,
                Clock::System.now_ms(),
            )
            .map_err(|e| e.to_string());
    }
    let Some(tokens) = &state.tokens else {
        return Ok(Caller::local());
    };
    tokens
        .load()
        .authenticate(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .map_err(|failure| {
            match failure {
                AuthFailure::Missing => "send a token as Authorization: Bearer <token>",
                AuthFailure::Unknown => "the token is not known",
            }
            .to_string()
        })
}

/// Every request under `/v1`, whatever its route, method or fate (refused, timed out,
/// unmatched), is authenticated here and gets one audit line, written after the answer: time,
/// client address, token id, method, route, status, what was asked and the keyed hashes of the
/// barcodes asked for or returned. The raw target is never logged (a query string may carry a
/// token). A request that cannot be audited (the log is failing) is refused with 503.
pub(super) async fn audited(State(state): Shared, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(request).await;
    }
    let started = Instant::now();
    let slot = RouteSlot::default();
    let method = request.method().to_string();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |info| info.0.ip().to_string());
    let caller = authenticate(&state, &request);
    let (token, response) = match caller {
        Ok(caller) => {
            let id = caller.id.clone();
            match state.audit.failure() {
                // Fail closed: what cannot be audited is not answered.
                Some(why) => {
                    metrics::counter!("imbtrack_audit_refused_total").increment(1);
                    let error = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "audit_unavailable",
                        format!("the audit log cannot be written ({why}); try again later"),
                    );
                    (id, error.into_response())
                }
                None => {
                    request.extensions_mut().insert(caller);
                    request.extensions_mut().insert(slot.clone());
                    (id, next.run(request).await)
                }
            }
        }
        Err(why) => {
            let error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
            ("-".to_string(), error.into_response())
        }
    };
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let route = slot
        .0
        .get()
        .cloned()
        .unwrap_or_else(|| "(unmatched)".to_string());
    let status = response.status().as_u16();
    state.audit.record(&AuditEntry {
        // The wall clock, even when the engine's "now" is fixed for a replay.
        time: format_utc(Clock::System.now_ms()),
        client,
        token,
        method,
        route: route.clone(),
        key: note.key,
        barcodes: note
            .barcodes
            .iter()
            .map(|&barcode| state.audit_key.hash(barcode))
            .collect(),
        results: note.results,
        status,
    });
    metrics::histogram!("imbtrack_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("imbtrack_http_requests_total", "route" => route, "status" => status.to_string())
        .increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> axum::http::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    #[test]
    fn only_loopback_hosts_and_the_server_s_own_origin_pass() {
        for host in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "127.9.9.9",
            "a.localhost:3",
        ] {
            assert!(
                from_this_machine(&headers(&[(header::HOST, host)])).is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(
                from_this_machine(&headers(&[(header::HOST, host)])).is_err(),
                "{host}"
            );
        }
        let with_origin = |origin: &str| {
            from_this_machine(&headers(&[
                (header::HOST, "127.0.0.1:8080"),
                (header::ORIGIN, origin),
            ]))
        };
        assert!(with_origin("http://127.0.0.1:8080").is_ok());
        assert!(with_origin("https://127.0.0.1:8080").is_ok());
        for origin in [
            "https://evil.example",
            "null",
            "http://127.0.0.1:9999",
            "http://localhost:8080",
        ] {
            assert!(with_origin(origin).is_err(), "{origin}");
        }
        assert!(from_this_machine(&headers(&[])).is_ok());
    }
}
