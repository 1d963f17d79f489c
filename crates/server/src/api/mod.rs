//! The routes: lookups ([`pieces`], [`zips`], [`mailers`], [`export`]), push ingest
//! ([`push`]), health, metrics and the tracking page ([`ops`]); with the errors they answer ([`error`]), the
//! checks every request goes through ([`middleware`]), query-string parsing ([`params`]) and
//! the other nodes of a scaled-out deployment ([`peers`]).

mod error;
mod export;
mod mailers;
mod middleware;
mod ops;
mod params;
mod peers;
mod pieces;
mod push;
mod subscriptions;
mod zips;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use self::error::{no_route, wrong_method, ApiError};
use self::export::mailer_scans;
use self::mailers::mailer_summary;
use self::middleware::{audited, deadline, local_only, name_route, security_headers};
use self::ops::{healthz, metrics_text, page_css, page_html, page_js};
use self::peers::PeerClient;
use self::pieces::{batch_pieces, get_piece};
use self::push::push_scans;
use self::subscriptions::{
    create_subscription, delete_subscription, list_subscriptions, subscription_failures,
    test_subscription,
};
use self::zips::zip_pieces;
use crate::audit::{AuditKey, AuditLog};
use crate::auth::{Caller, Tokens};
use crate::cluster::ClusterKey;
use crate::Limits;

pub(crate) use peers::peer_client;
pub use peers::Peers;

/// What the handlers share.
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    /// The tokens file's entries (replaced whole on SIGHUP), or none: every caller trusted.
    pub tokens: Option<arc_swap::ArcSwap<Tokens>>,
    pub audit: Arc<AuditLog>,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    pub peers: Option<Arc<dyn Peers>>,
    /// The secret nodes vouch for forwarded callers with (set with `peers`).
    pub cluster: Option<ClusterKey>,
    pub client: PeerClient,
    /// Whether it serves HTTPS (then responses carry HSTS).
    pub tls: bool,
    /// Pushes inflated and parsed at once ([`crate::Limits::concurrent_pushes`]).
    pub pushes: tokio::sync::Semaphore,
    /// The key barcodes are hashed with in the audit log.
    pub audit_key: AuditKey,
    /// Status-change subscriptions.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

type Shared = State<Arc<AppState>>;

/// A JSON answer, serialised into a buffer sized for a piece with its scans at once (axum's
/// `Json` starts small and copies as it grows, a measurable share of a lookup's time).
fn json_response<T: Serialize>(value: &T) -> Response {
    let mut body = Vec::with_capacity(4096);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// What a handler tells the audit log about its answer (put in the response's extensions).
#[derive(Debug, Clone, Default)]
struct AuditNote {
    /// What was asked besides barcodes (a ZIP and day, a Mailer ID and day, a count).
    key: Option<String>,
    /// Every barcode asked for or returned (hashed when written).
    barcodes: Vec<BarcodeKey>,
    /// Pieces returned (scans taken, for a push).
    results: u64,
}

fn noted(mut response: Response, note: AuditNote) -> Response {
    response.extensions_mut().insert(note);
    response
}

/// The API's router over `state`.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let max_body = state.limits.max_body_bytes;
    let api = Router::new()
        .route("/v1/pieces/{barcode}", get(get_piece))
        .route("/v1/pieces:batch", post(batch_pieces))
        .route("/v1/zips/{zip}/pieces", get(zip_pieces))
        .route("/v1/mailers/{mid}/summary", get(mailer_summary))
        .route("/v1/mailers/{mid}/scans", get(mailer_scans))
        .route("/v1/scans", post(push_scans))
        .route(
            "/v1/subscriptions",
            post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/v1/subscriptions/{id}",
            delete(delete_subscription).post(test_subscription),
        )
        .route(
            "/v1/subscriptions/{id}/failures",
            get(subscription_failures),
        )
        .route_layer(from_fn(name_route));
    Router::new()
        .merge(api)
        .route("/", get(page_html))
        .route("/app.js", get(page_js))
        .route("/app.css", get(page_css))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(from_fn_with_state(state.clone(), deadline))
        .layer(from_fn_with_state(state.clone(), local_only))
        .layer(from_fn_with_state(state.clone(), audited))
        .layer(from_fn_with_state(state.clone(), security_headers))
        .with_state(state)
}

fn require_lookups(caller: &Caller) -> Result<(), ApiError> {
    if caller.may_look_up() {
        Ok(())
    } else {
        Err(ApiError::forbidden("lookups"))
    }
}
