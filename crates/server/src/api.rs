//! The routes: lookups, push ingest, metrics, health and the tracking page.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use imbtrack_barcode::{Barcode, BarcodeKey};
use imbtrack_engine::{Clock, Engine, EngineError, EventView, PieceStatus};
use imbtrack_feed::time::{format_utc, parse_date, DAY_MS};
use imbtrack_feed::{RejectList, Zip};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;

use crate::audit::{AuditEntry, AuditLog};
use crate::auth::{parse_mailer_id, AuthFailure, Caller, Tokens};
use crate::Limits;

/// Where pieces live when this store is one of many (nodes on Kafka).
pub trait Peers: Send + Sync {
    /// `Ok(None)`: here; `Ok(Some(base))`: the node at HTTP base address `base`; `Err(why)`: no
    /// node answers for the piece right now.
    fn owner_of(&self, key: BarcodeKey) -> Result<Option<String>, String>;

    /// The other nodes a query over all pieces (a ZIP's) must also ask; `Err(why)` when some
    /// partition has no node, so the answer would be short.
    fn others(&self) -> Result<Vec<String>, String>;
}

/// Whether `key` is answered here: no peers, or this node owns its partition.
fn owned_here(peers: Option<&Arc<dyn Peers>>, key: BarcodeKey) -> bool {
    peers.is_none_or(|p| p.owner_of(key) == Ok(None))
}

type PeerClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

/// The client lookups are forwarded with.
pub(crate) fn peer_client() -> PeerClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Marks a forwarded request, so it is answered where it lands and never forwarded again.
const FORWARDED: &str = "x-imbtrack-forwarded";

/// What the handlers share.
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub tokens: Option<Tokens>,
    pub audit: Arc<AuditLog>,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    pub peers: Option<Arc<dyn Peers>>,
    pub client: PeerClient,
}

type Shared = State<Arc<AppState>>;

/// An error answered as `{"error": {"code", "message"}}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn forbidden(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token's scopes do not allow {what}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = json_response(&body);
        *response.status_mut() = self.status;
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"imbtrack\""),
            );
        }
        response
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

/// A JSON answer, serialised into a buffer sized for a piece with its scans at once (axum's
/// `Json` starts small and copies as it grows, a measurable share of a lookup's time).
fn json_response<T: Serialize>(value: &T) -> Response {
    let mut body = Vec::with_capacity(4096);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request("bad_path", rejection.body_text())
    }
}

/// What a handler tells the audit log about its answer (put in the response's extensions).
#[derive(Debug, Clone, Default)]
struct AuditNote {
    key: Option<String>,
    results: u64,
}

fn noted(mut response: Response, key: String, results: u64) -> Response {
    response.extensions_mut().insert(AuditNote {
        key: Some(key),
        results,
    });
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
        .route("/v1/scans", post(push_scans))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
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
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Every response gets headers that keep a browser from sniffing types, framing the page or
/// loading anything but our own files.
async fn security_headers(request: Request, next: Next) -> Response {
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
async fn deadline(State(state): Shared, request: Request, next: Next) -> Response {
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
async fn guard(State(state): Shared, mut request: Request, next: Next) -> Response {
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

fn require_lookups(caller: &Caller) -> Result<(), ApiError> {
    if caller.may_look_up() {
        Ok(())
    } else {
        Err(ApiError::forbidden("lookups"))
    }
}

fn parse_barcode(text: &str) -> Result<Barcode, ApiError> {
    Barcode::parse(text).map_err(|e| {
        ApiError::bad_request("bad_barcode", format!("{text:?} is not a barcode: {e}"))
    })
}

/// A piece found for a caller: from this store, or from the node that owns it.
#[derive(Serialize)]
#[serde(untagged)]
enum Found {
    Here(PieceStatus),
    Forwarded(serde_json::Value),
}

/// The piece, if it exists and the caller may see its Mailer ID; from its owner when this store
/// is one of many. Foreign pieces are not looked up at all, so neither the answer nor its timing
/// tells whether they exist.
async fn find_piece(
    state: &AppState,
    caller: &Caller,
    headers: &axum::http::HeaderMap,
    barcode: &Barcode,
) -> Result<Option<Found>, ApiError> {
    if !caller.sees(barcode.mailer_id()) {
        return Ok(None);
    }
    if let Some(peers) = state
        .peers
        .as_ref()
        .filter(|_| !headers.contains_key(FORWARDED))
    {
        let unavailable =
            |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "owner_unavailable", why);
        match peers.owner_of(barcode.key()) {
            Ok(None) => {}
            Ok(Some(base)) => {
                let response =
                    forward(state, &base, &format!("/v1/pieces/{barcode}"), headers).await?;
                return match response.status() {
                    StatusCode::OK => {
                        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                            .await
                            .map_err(|e| unavailable(format!("{base}: {e}")))?;
                        let piece = serde_json::from_slice(&body)
                            .map_err(|e| unavailable(format!("{base}: {e}")))?;
                        Ok(Some(Found::Forwarded(piece)))
                    }
                    StatusCode::NOT_FOUND => Ok(None),
                    other => Err(unavailable(format!("{base} answered {other}"))),
                };
            }
            Err(why) => return Err(unavailable(why)),
        }
    }
    // A lookup that would wait (an append is inserting into the piece's head shard) goes to
    // the blocking pool, so no wait holds an async worker that other connections need; the
    // rest, nearly all, answer here without the hand-off.
    let piece = match state.engine.try_piece(barcode) {
        Some(piece) => piece,
        None => {
            metrics::counter!("imbtrack_lookups_deferred_total").increment(1);
            let engine = state.engine.clone();
            let barcode = *barcode;
            tokio::task::spawn_blocking(move || engine.piece(&barcode))
                .await
                .map_err(internal)?
        }
    };
    Ok(piece.map(Found::Here))
}

fn not_found_piece(barcode: &Barcode) -> ApiError {
    ApiError::not_found(format!("no scans of {barcode} within the retention window"))
}

async fn get_piece(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(text) = path?;
    let barcode = parse_barcode(&text)?;
    let key = barcode.to_string();
    Ok(
        match find_piece(&state, &caller, &headers, &barcode).await {
            Ok(Some(piece)) => noted(json_response(&piece), key, 1),
            Ok(None) => noted(not_found_piece(&barcode).into_response(), key, 0),
            Err(error) => noted(error.into_response(), key, 0),
        },
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    barcodes: Vec<String>,
}

#[derive(Serialize)]
struct BatchItem {
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    piece: Option<Found>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

async fn batch_pieces(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let request: BatchRequest = parse_json(&body?)?;
    let limit = state.limits.batch_max;
    if request.barcodes.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} barcodes asked; at most {limit} a request",
                request.barcodes.len()
            ),
        ));
    }
    let mut found = 0;
    let mut items = Vec::with_capacity(request.barcodes.len());
    for text in &request.barcodes {
        let outcome = match parse_barcode(text) {
            Err(e) => Err(e),
            Ok(barcode) => find_piece(&state, &caller, &headers, &barcode)
                .await
                .and_then(|piece| piece.ok_or_else(|| not_found_piece(&barcode))),
        };
        let (piece, error) = match outcome {
            Ok(piece) => (Some(piece), None),
            Err(e) => (None, Some(json!({"code": e.code, "message": e.message}))),
        };
        found += u64::from(piece.is_some());
        items.push(BatchItem {
            query: text.clone(),
            piece,
            error,
        });
    }
    let key = format!("{} barcodes", request.barcodes.len());
    Ok(noted(json_response(&json!({"results": items})), key, found))
}

/// The query string's parameters; unknown ones are refused so a typo is not silently ignored.
fn query_params(query: Option<&str>, known: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&name) {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("unknown parameter {name:?}; known: {}", known.join(", ")),
            ));
        }
        params.insert(name.to_string(), value.to_string());
    }
    Ok(params)
}

/// The `date` parameter (`YYYY-MM-DD`) as days since the epoch, with its text.
fn parse_day(params: &BTreeMap<String, String>) -> Result<(i64, String), ApiError> {
    let text = params
        .get("date")
        .ok_or_else(|| ApiError::bad_request("bad_query", "date=YYYY-MM-DD is required"))?;
    let day = parse_date(text).ok_or_else(|| {
        ApiError::bad_request(
            "bad_query",
            format!("date {text:?} is not an existing day as YYYY-MM-DD"),
        )
    })?;
    Ok((day, text.clone()))
}

fn parse_count(
    params: &BTreeMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "bad_query",
                format!("{name} {text:?} must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// Cursor of a page: the last key returned, as hex.
fn parse_cursor(params: &BTreeMap<String, String>) -> Result<Option<u128>, ApiError> {
    params
        .get("cursor")
        .map(|text| {
            u128::from_str_radix(text, 16).map_err(|_| {
                ApiError::bad_request(
                    "bad_query",
                    format!("cursor {text:?} is not one this server gave"),
                )
            })
        })
        .transpose()
}

async fn zip_pieces(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(zip_text) = path?;
    let params = query_params(query.as_deref(), &["date", "limit", "cursor"])?;
    let zip = Zip::parse(zip_text.as_bytes()).ok_or_else(|| {
        ApiError::bad_request(
            "bad_zip",
            format!("{zip_text:?} is not a 5, 9 or 11-digit ZIP"),
        )
    })?;
    let (day, date) = parse_day(&params)?;
    let limit = parse_count(&params, "limit", 100, state.limits.page_max)?;
    let after = parse_cursor(&params)?;
    let engine = state.engine.clone();
    let peers = state.peers.clone();
    let (local, local_more) = tokio::task::spawn_blocking(move || {
        let keys: Vec<BarcodeKey> = engine
            .piece_keys_by_zip(zip, day)
            .into_iter()
            .filter(|key| after.is_none_or(|after| key.as_u128() > after))
            .filter(|key| caller.sees(key.to_barcode().mailer_id()))
            .filter(|key| owned_here(peers.as_ref(), *key))
            .take(limit + 1)
            .collect();
        let more = keys.len() > limit;
        let page: Vec<BarcodeKey> = keys.into_iter().take(limit).collect();
        (engine.statuses(page), more)
    })
    .await
    .map_err(internal)?;
    let mut pieces: Vec<(u128, serde_json::Value)> = Vec::with_capacity(local.len());
    for piece in local {
        let key = piece.barcode.as_u128();
        pieces.push((key, serde_json::to_value(piece).map_err(internal)?));
    }
    // One store of many: the other nodes' pages (same cursor and limit) are merged in key order.
    let mut more = local_more;
    let path = format!(
        "/v1/zips/{zip_text}/pieces?{}",
        query.as_deref().unwrap_or("")
    );
    for page in ask_others(&state, &headers, &path).await? {
        more |= !page["next_cursor"].is_null();
        for piece in page["pieces"].as_array().into_iter().flatten() {
            let key = piece["barcode"]
                .as_str()
                .and_then(|b| Barcode::parse(b).ok())
                .map_or(0, |b| b.key().as_u128());
            pieces.push((key, piece.clone()));
        }
    }
    pieces.sort_by_key(|(key, _)| *key);
    pieces.dedup_by_key(|(key, _)| *key);
    more |= pieces.len() > limit;
    pieces.truncate(limit);
    let next_cursor = more
        .then(|| pieces.last().map(|(k, _)| format!("{k:x}")))
        .flatten();
    let pieces: Vec<serde_json::Value> = pieces.into_iter().map(|(_, p)| p).collect();
    let count = pieces.len() as u64;
    let body =
        json!({"zip": zip.to_string(), "date": date, "pieces": pieces, "next_cursor": next_cursor});
    Ok(noted(
        json_response(&body),
        format!("zip {zip} {date}"),
        count,
    ))
}

/// When this store is one of many (and the request was not forwarded here), the answers of
/// every other node to `path`: their shares of a query over all pieces. Refused with 503
/// `partial_result` when a partition has no node or a node does not answer, never short.
async fn ask_others(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    path: &str,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let partial =
        |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "partial_result", why);
    let Some(peers) = state
        .peers
        .as_ref()
        .filter(|_| !headers.contains_key(FORWARDED))
    else {
        return Ok(Vec::new());
    };
    let mut answers = Vec::new();
    for base in peers.others().map_err(partial)? {
        let response = forward(state, &base, path, headers).await?;
        if response.status() != StatusCode::OK {
            return Err(partial(format!(
                "{base} answered {} for its share",
                response.status()
            )));
        }
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| partial(format!("{base}: {e}")))?;
        answers.push(serde_json::from_slice(&body).map_err(|e| partial(format!("{base}: {e}")))?);
    }
    Ok(answers)
}

/// Asks the node at `base` for `path` with the caller's credentials; its answer is ours.
async fn forward(
    state: &AppState,
    base: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let unavailable =
        |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "owner_unavailable", why);
    let mut request = axum::http::Request::get(format!("{base}{path}")).header(FORWARDED, "1");
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let request = request
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| unavailable(format!("the owner {base} is not a usable address: {e}")))?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.client.request(request),
    )
    .await
    .map_err(|_| unavailable(format!("the owner {base} did not answer in 5 s")))?
    .map_err(|e| unavailable(format!("the owner {base} did not answer: {e}")))?;
    metrics::counter!("imbtrack_forwarded_lookups_total").increment(1);
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, axum::body::Body::new(body)))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// A piece that has not moved for a while.
#[derive(Serialize)]
struct StalePiece {
    barcode: String,
    status: &'static str,
    last_scan_time: String,
    last_facility_zip: String,
    last_facility_name: String,
}

#[derive(Serialize, Default)]
struct FacilityCount {
    facility_zip: String,
    facility_name: String,
    scans: u64,
    pieces: u64,
}

/// Facilities by scans, most first (then by ZIP and name, so every node orders them alike).
fn busiest_first(facilities: &mut [FacilityCount]) {
    facilities.sort_by(|a, b| {
        b.scans
            .cmp(&a.scans)
            .then_with(|| a.facility_zip.cmp(&b.facility_zip))
            .then_with(|| a.facility_name.cmp(&b.facility_name))
    });
}

/// Most stale pieces listed in a summary (all are counted).
const STALE_LISTED: usize = 100;

/// A mailer's day: pieces by status, scans and pieces by facility that `day` (days since the
/// epoch), and the pieces not delivered whose newest scan is before `stale_before_ms`.
fn summarize(pieces: &[PieceStatus], day: i64, stale_before_ms: i64) -> serde_json::Value {
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_facility: BTreeMap<(Zip, &str), FacilityCount> = BTreeMap::new();
    let mut stale = Vec::new();
    let mut stale_count = 0u64;
    for piece in pieces {
        *by_status.entry(piece.status.as_str()).or_default() += 1;
        let mut seen_at = std::collections::BTreeSet::new();
        let that_day = |e: &&EventView| e.scan.time_ms.div_euclid(DAY_MS) == day;
        for event in piece.events.iter().filter(that_day) {
            let key = (event.scan.facility_zip, event.scan.facility().name);
            let entry = by_facility.entry(key).or_insert_with(|| FacilityCount {
                facility_zip: key.0.to_string(),
                facility_name: key.1.to_string(),
                ..FacilityCount::default()
            });
            entry.scans += 1;
            if seen_at.insert(key) {
                entry.pieces += 1;
            }
        }
        let Some(newest) = piece.events.first() else {
            continue;
        };
        if !piece.status.is_delivered() && newest.scan.time_ms < stale_before_ms {
            stale_count += 1;
            if stale.len() < STALE_LISTED {
                stale.push(StalePiece {
                    barcode: piece.barcode.to_barcode().to_string(),
                    status: piece.status.as_str(),
                    last_scan_time: format_utc(newest.scan.time_ms),
                    last_facility_zip: newest.scan.facility_zip.to_string(),
                    last_facility_name: newest.scan.facility().name.to_string(),
                });
            }
        }
    }
    let mut facilities: Vec<FacilityCount> = by_facility.into_values().collect();
    busiest_first(&mut facilities);
    json!({
        "pieces": pieces.len(),
        "by_status": by_status,
        "by_facility": facilities,
        "stale": {"count": stale_count, "listed": stale},
    })
}

/// Adds another node's summary of the same Mailer ID and day into `into`.
fn merge_summary(into: &mut serde_json::Value, other: &serde_json::Value) {
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    into["pieces"] = json!(count(&into["pieces"]) + count(&other["pieces"]));
    if let (Some(mine), Some(theirs)) = (
        into["by_status"].as_object_mut(),
        other["by_status"].as_object(),
    ) {
        for (status, n) in theirs {
            let sum = mine.get(status).map_or(0, count) + count(n);
            mine.insert(status.clone(), json!(sum));
        }
    }
    let mut facilities: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for side in [&*into, other] {
        for f in side["by_facility"].as_array().into_iter().flatten() {
            let key = (
                f["facility_zip"].as_str().unwrap_or("").to_string(),
                f["facility_name"].as_str().unwrap_or("").to_string(),
            );
            let entry = facilities.entry(key).or_default();
            entry.0 += count(&f["scans"]);
            entry.1 += count(&f["pieces"]);
        }
    }
    let mut merged: Vec<FacilityCount> = facilities
        .into_iter()
        .map(
            |((facility_zip, facility_name), (scans, pieces))| FacilityCount {
                facility_zip,
                facility_name,
                scans,
                pieces,
            },
        )
        .collect();
    busiest_first(&mut merged);
    into["by_facility"] = json!(merged);
    into["stale"]["count"] =
        json!(count(&into["stale"]["count"]) + count(&other["stale"]["count"]));
    let mut listed: Vec<serde_json::Value> = into["stale"]["listed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    listed.extend(
        other["stale"]["listed"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    listed.truncate(STALE_LISTED);
    into["stale"]["listed"] = json!(listed);
}

async fn mailer_summary(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(mid_text) = path?;
    let params = query_params(query.as_deref(), &["date", "stale_hours"])?;
    let mid = parse_mailer_id(&mid_text).map_err(|e| ApiError::bad_request("bad_mailer_id", e))?;
    let (day, date) = parse_day(&params)?;
    let stale_hours = parse_count(&params, "stale_hours", 24, 24 * 90)?;
    let key = format!("mailer {mid_text} {date}");
    if !caller.sees(Some(mid)) {
        let error = ApiError::not_found(format!("no pieces of Mailer ID {mid_text} on {date}"));
        return Ok(noted(error.into_response(), key, 0));
    }
    let engine = state.engine.clone();
    let peers = state.peers.clone();
    let mut summary = tokio::task::spawn_blocking(move || {
        let keys = engine
            .piece_keys_by_mailer(mid, day)
            .into_iter()
            .filter(|key| owned_here(peers.as_ref(), *key))
            .collect();
        let pieces = engine.statuses(keys);
        let stale_before = engine.now_ms() - stale_hours as i64 * 3_600_000;
        summarize(&pieces, day, stale_before)
    })
    .await
    .map_err(internal)?;
    let path = format!(
        "/v1/mailers/{mid_text}/summary?{}",
        query.as_deref().unwrap_or("")
    );
    for share in ask_others(&state, &headers, &path).await? {
        merge_summary(&mut summary, &share);
    }
    let count = summary["pieces"].as_u64().unwrap_or(0);
    summary["mailer_id"] = json!(mid_text);
    summary["date"] = json!(date);
    summary["stale_hours"] = json!(stale_hours);
    Ok(noted(json_response(&summary), key, count))
}

/// A push body, inflated if it is gzip (by its magic bytes, whatever the headers say), never
/// past `max` bytes.
fn inflate(body: Bytes, max: usize) -> Result<Bytes, ApiError> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(body);
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    flate2::read::MultiGzDecoder::new(&body[..])
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request("bad_gzip", format!("the gzip body does not inflate: {e}"))
        })?;
    if out.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body inflates past {max} bytes"),
        ));
    }
    Ok(Bytes::from(out))
}

/// Rejects listed in a push's answer (all are counted).
const REJECTS_LISTED: usize = 100;

async fn push_scans(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !caller.may_ingest() {
        return Err(ApiError::forbidden("pushing scans"));
    }
    let body = inflate(body?, state.limits.max_inflated_bytes)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("bad_body", "the body is empty"));
    }
    let engine = state.engine.clone();
    let source = format!("push:{}", caller.id);
    let (result, rejects) = tokio::task::spawn_blocking(move || {
        let mut rejects = RejectList::default();
        let result = engine.ingest(&source, &body, &mut rejects, &|_| {});
        (result, rejects)
    })
    .await
    .map_err(internal)?;
    let summary = match result {
        Ok(summary) => summary,
        Err(EngineError::Feed { error, .. }) => {
            return Err(ApiError::bad_request("bad_feed", error.to_string()))
        }
        // The store could not make the scans durable: the sender should retry.
        Err(e) => {
            tracing::error!("push from {}: {e}", caller.id);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the scans were not stored ({e}); send them again"),
            ));
        }
    };
    let listed: Vec<serde_json::Value> = rejects
        .rejects
        .iter()
        .take(REJECTS_LISTED)
        .map(|(line, index, reason, raw)| {
            json!({"line": line, "index": index, "reason": reason.code(),
                   "message": reason.to_string(), "record": String::from_utf8_lossy(raw)})
        })
        .collect();
    let body = json!({
        "records": summary.lines,
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "rejected": summary.rejected,
        "expired": summary.expired,
        "rejects_by_reason": summary.rejects_by_reason,
        "rejects": listed,
    });
    let key = format!("push {} records", summary.lines);
    Ok(noted(json_response(&body), key, summary.accepted))
}

/// Healthy unless the store failed a write (then it takes no more scans until restarted).
async fn healthz(State(state): Shared) -> Response {
    match state.engine.failure() {
        None => json_response(&json!({"status": "ok"})),
        Some(why) => {
            let mut response = json_response(&json!({"status": "failed", "error": why}));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
    }
}

async fn metrics_text(State(state): Shared) -> Response {
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

async fn page_html() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page/index.html"),
    )
        .into_response()
}

async fn page_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("page/app.js"),
    )
        .into_response()
}

async fn page_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("page/app.css"),
    )
        .into_response()
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use imbtrack_feed::time::parse_timestamp;
    use imbtrack_feed::Status;

    fn event(time: &str, zip: &str, status: &str) -> EventView {
        EventView {
            scan: imbtrack_store::StoredScan {
                barcode: BarcodeKey::from_u128(1 << 120).unwrap(),
                class: imbtrack_feed::MailClass::Mail,
                time_ms: parse_timestamp(time.as_bytes(), None).unwrap(),
                routing: Zip::parse(b"94110").unwrap(),
                facility_zip: Zip::parse(zip.as_bytes()).unwrap(),
                code: imbtrack_feed::EventCode::parse(b"919").unwrap(),
                handling: imbtrack_feed::HandlingEventType::Physical,
                facility_text: Arc::from(format!("P&DC {zip}")),
                machine: Arc::from(""),
            },
            description: String::new(),
            status: Status::parse(status).unwrap(),
            phase: None,
            stop_the_clock: None,
        }
    }

    fn piece(serial: u64, status: &str, events: Vec<EventView>) -> PieceStatus {
        let barcode = Barcode::parse(&format!("00270123456{serial:09}")).unwrap();
        PieceStatus {
            barcode: barcode.key(),
            class: imbtrack_feed::MailClass::Mail,
            routing: Zip::parse(b"94110").unwrap(),
            status: Status::parse(status).unwrap(),
            status_time_ms: events[0].scan.time_ms,
            events,
        }
    }

    #[test]
    fn summaries_count_the_days_scans_and_stale_undelivered_pieces() {
        let pieces = vec![
            // Scanned twice that day at one facility, once the day before: stale.
            piece(
                1,
                "IN_TRANSIT",
                vec![
                    event("2025-01-11T09:00:00Z", "94110", "IN_TRANSIT"),
                    event("2025-01-11T08:00:00Z", "94110", "ACCEPTED"),
                    event("2025-01-10T08:00:00Z", "60607", "ACCEPTED"),
                ],
            ),
            // Delivered long ago: never stale.
            piece(
                2,
                "DELIVERED_ESTIMATED",
                vec![event(
                    "2025-01-11T10:00:00Z",
                    "60607",
                    "DELIVERED_ESTIMATED",
                )],
            ),
            // Recent: not stale.
            piece(
                3,
                "IN_TRANSIT",
                vec![event("2025-01-11T23:00:00Z", "94110", "IN_TRANSIT")],
            ),
        ];
        let cutoff = parse_timestamp(b"2025-01-11T12:00:00Z", None).unwrap();
        let day = parse_date("2025-01-11").unwrap();
        let summary = summarize(&pieces, day, cutoff);
        assert_eq!(summary["pieces"], 3);
        assert_eq!(
            summary["by_status"],
            json!({"IN_TRANSIT": 2, "DELIVERED_ESTIMATED": 1})
        );
        assert_eq!(
            summary["by_facility"],
            json!([
                {"facility_zip": "94110", "facility_name": "P&DC 94110", "scans": 3, "pieces": 2},
                {"facility_zip": "60607", "facility_name": "P&DC 60607", "scans": 1, "pieces": 1},
            ])
        );
        assert_eq!(summary["stale"]["count"], 1);
        assert_eq!(
            summary["stale"]["listed"][0]["barcode"],
            "00270123456000000001"
        );
        assert_eq!(
            summary["stale"]["listed"][0]["last_scan_time"],
            "2025-01-11T09:00:00Z"
        );
    }

    #[test]
    fn query_strings_are_checked() {
        let params = query_params(
            Some("date=2025-01-11&limit=5&cursor=ff"),
            &["date", "limit", "cursor"],
        )
        .unwrap();
        assert_eq!(parse_day(&params).unwrap().1, "2025-01-11");
        assert_eq!(parse_count(&params, "limit", 100, 1000).unwrap(), 5);
        assert_eq!(parse_cursor(&params).unwrap(), Some(255));
        assert!(query_params(Some("dat=1"), &["date"]).is_err());
        let bad = |q: &str| query_params(Some(q), &["date", "limit", "cursor"]).unwrap();
        assert!(parse_day(&bad("")).is_err());
        assert!(parse_day(&bad("date=2025-02-30")).is_err());
        assert!(parse_count(&bad("limit=0"), "limit", 100, 1000).is_err());
        assert!(parse_count(&bad("limit=1001"), "limit", 100, 1000).is_err());
        assert!(parse_cursor(&bad("cursor=xyz")).is_err());
    }

    #[test]
    fn gzip_bodies_inflate_within_the_limit() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[b'x'; 1000]).unwrap();
        let gz = Bytes::from(encoder.finish().unwrap());
        assert_eq!(inflate(gz.clone(), 1000).unwrap().len(), 1000);
        assert_eq!(
            inflate(gz, 999).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let plain = Bytes::from_static(b"{}");
        assert_eq!(inflate(plain.clone(), 1).unwrap(), plain);
        assert_eq!(
            inflate(Bytes::from_static(&[0x1f, 0x8b, 9]), 100)
                .unwrap_err()
                .code,
            "bad_gzip"
        );
    }
}
