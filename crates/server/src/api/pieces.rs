//! `GET /v1/pieces/{barcode}` and `POST /v1/pieces:batch`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use imbtrack_barcode::Barcode;
use imbtrack_engine::PieceStatus;
use serde::Serialize;
use serde_json::json;

use super::error::{internal, ApiError};
use super::params::{parse_barcode, parse_json};
use super::peers::{forward, FORWARDED};
use super::AuditNote;
use super::{json_response, noted, require_lookups, AppState, Shared};
use crate::auth::Caller;

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
                    forward(state, &base, &format!("/v1/pieces/{barcode}"), caller).await?;
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

pub(super) async fn get_piece(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(text) = path?;
    let barcode = parse_barcode(&text)?;
    let (response, results) = match find_piece(&state, &caller, &headers, &barcode).await {
        Ok(Some(piece)) => (json_response(&piece), 1),
        Ok(None) => (not_found_piece(&barcode).into_response(), 0),
        Err(error) => (error.into_response(), 0),
    };
    let note = AuditNote {
        key: None,
        barcodes: vec![barcode.key()],
        results,
    };
    Ok(noted(response, note))
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

pub(super) async fn batch_pieces(
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
    let mut asked = Vec::with_capacity(request.barcodes.len());
    for text in &request.barcodes {
        let outcome = match parse_barcode(text) {
            Err(e) => Err(e),
            Ok(barcode) => {
                asked.push(barcode.key());
                find_piece(&state, &caller, &headers, &barcode)
                    .await
                    .and_then(|piece| piece.ok_or_else(|| not_found_piece(&barcode)))
            }
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
    let note = AuditNote {
        key: Some(format!("{} barcodes", request.barcodes.len())),
        barcodes: asked,
        results: found,
    };
    Ok(noted(json_response(&json!({"results": items})), note))
}
