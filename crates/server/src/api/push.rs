//! `POST /v1/scans`: feeds pushed over HTTP.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use imbtrack_engine::EngineError;
use imbtrack_feed::RejectList;
use serde_json::json;

use super::error::{internal, ApiError};
use super::AuditNote;
use super::{json_response, noted, Shared};
use crate::auth::Caller;

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

pub(super) async fn push_scans(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !caller.may_ingest() {
        return Err(ApiError::forbidden("pushing scans"));
    }
    let body = body?;
    // Inflating and parsing run on the blocking pool, a bounded number at a time: a few gzip
    // bombs at once neither hold the async workers nor inflate side by side without limit.
    let _permit = state.pushes.acquire().await.map_err(internal)?;
    let engine = state.engine.clone();
    let source = format!("push:{}", caller.id);
    let max_inflated = state.limits.max_inflated_bytes;
    let (result, rejects) = tokio::task::spawn_blocking(move || {
        let body = inflate(body, max_inflated)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("bad_body", "the body is empty"));
        }
        let mut rejects = RejectList::default();
        let result = engine.ingest(&source, &body, &mut rejects, &|_| {});
        Ok((result, rejects))
    })
    .await
    .map_err(internal)??;
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
    let note = AuditNote {
        key: Some(format!("push {} records", summary.lines)),
        barcodes: Vec::new(),
        results: summary.accepted,
    };
    Ok(noted(json_response(&body), note))
}

#[cfg(test)]
mod tests {
    use super::*;

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
