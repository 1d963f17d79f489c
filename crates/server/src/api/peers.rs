//! The other nodes of a scaled-out deployment: who owns a piece, and asking them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use imbtrack_barcode::BarcodeKey;
use imbtrack_engine::Clock;

use super::error::ApiError;
use super::AppState;
use crate::auth::Caller;

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
pub(super) fn owned_here(peers: Option<&Arc<dyn Peers>>, key: BarcodeKey) -> bool {
    peers.is_none_or(|p| p.owner_of(key) == Ok(None))
}

pub(super) type PeerClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

/// The client lookups are forwarded with.
pub(crate) fn peer_client() -> PeerClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Carries a forwarded request's voucher ([`crate::cluster`]); a request with one is answered
/// where it lands and never forwarded again.
pub(super) const FORWARDED: &str = "x-imbtrack-forwarded";

/// When this store is one of many (and the request was not forwarded here), the answers of
/// every other node to `path`: their shares of a query over all pieces, as JSON. Refused with
/// 503 `partial_result` when a partition has no node or a node does not answer, never short.
pub(super) async fn ask_others(
    state: &AppState,
    caller: &Caller,
    headers: &axum::http::HeaderMap,
    path: &str,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut answers = Vec::new();
    for (base, body) in ask_others_raw(state, caller, headers, path).await? {
        answers.push(serde_json::from_slice(&body).map_err(|e| partial(format!("{base}: {e}")))?);
    }
    Ok(answers)
}

fn partial(why: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "partial_result", why)
}

/// [`ask_others`]'s answers as each node sent them (its base address, the body).
pub(super) async fn ask_others_raw(
    state: &AppState,
    caller: &Caller,
    headers: &axum::http::HeaderMap,
    path: &str,
) -> Result<Vec<(String, Bytes)>, ApiError> {
    let Some(peers) = state
        .peers
        .as_ref()
        .filter(|_| !headers.contains_key(FORWARDED))
    else {
        return Ok(Vec::new());
    };
    let mut answers = Vec::new();
    for base in peers.others().map_err(partial)? {
        let response = forward(state, &base, path, caller).await?;
        if response.status() != StatusCode::OK {
            return Err(partial(format!(
                "{base} answered {} for its share",
                response.status()
            )));
        }
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| partial(format!("{base}: {e}")))?;
        answers.push((base, body));
    }
    Ok(answers)
}

/// Asks the node at `base` for `path` (path and query) on behalf of `caller`, vouched for with
/// the cluster secret (never the caller's own token); its answer is ours.
pub(super) async fn forward(
    state: &AppState,
    base: &str,
    path: &str,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let unavailable =
        |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "owner_unavailable", why);
    let key = state.cluster.as_ref().ok_or_else(|| {
        unavailable("this node has no cluster secret to vouch for the caller with".into())
    })?;
    let voucher = key.vouch("GET", path, caller, Clock::System.now_ms());
    let request = axum::http::Request::get(format!("{base}{path}"))
        .header(FORWARDED, voucher)
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
