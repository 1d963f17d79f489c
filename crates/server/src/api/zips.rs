//! `GET /v1/zips/{zip}/pieces`: a ZIP's pieces of a day, a page at a time.

use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::Response;
use imbtrack_barcode::{Barcode, BarcodeKey};
use imbtrack_feed::Zip;
use imbtrack_store::DayPiece;
use serde_json::json;

use super::error::{internal, ApiError};
use super::params::{parse_count, parse_cursor, parse_day, query_params};
use super::peers::{ask_others, owned_here};
use super::AuditNote;
use super::{json_response, noted, require_lookups, Shared};
use crate::auth::Caller;

pub(super) async fn zip_pieces(
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
    let asker = caller.clone();
    let (local, local_more) = tokio::task::spawn_blocking(move || {
        let found: Vec<DayPiece> = engine
            .day_pieces_by_zip(zip, day)
            .into_iter()
            .filter(|piece| after.is_none_or(|after| piece.key.as_u128() > after))
            .filter(|piece| asker.sees(piece.key.mailer_id()))
            .filter(|piece| owned_here(peers.as_ref(), piece.key))
            .take(limit + 1)
            .collect();
        let more = found.len() > limit;
        let page: Vec<DayPiece> = found.into_iter().take(limit).collect();
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
    for page in ask_others(&state, &caller, &headers, &path).await? {
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
    let barcodes = pieces
        .iter()
        .filter_map(|(key, _)| BarcodeKey::from_u128(*key).ok())
        .collect();
    let pieces: Vec<serde_json::Value> = pieces.into_iter().map(|(_, p)| p).collect();
    let count = pieces.len() as u64;
    let body =
        json!({"zip": zip.to_string(), "date": date, "pieces": pieces, "next_cursor": next_cursor});
    let note = AuditNote {
        key: Some(format!("zip {zip} {date}")),
        barcodes,
        results: count,
    };
    Ok(noted(json_response(&body), note))
}
