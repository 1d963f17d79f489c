//! `GET /v1/mailers/{mid}/scans?date=…&format=csv|jsonl`: a mailer's raw scans of a day,
//! streamed as written ([`imbtrack_engine::Engine::export_day`]), scoped like the summary.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use imbtrack_engine::ExportFormat;

use super::error::{internal, ApiError};
use super::mailers::MailerDay;
use super::peers::{ask_others_raw, owned_here};
use super::{noted, require_lookups, AuditNote, Shared};
use crate::auth::Caller;

/// Writes into the response body as it goes: each write is a chunk sent to the client, and
/// a client that went away ends the export (the write fails).
struct BodyWriter(tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>);

impl Write for BodyWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(bytes)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) async fn mailer_scans(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let asked = MailerDay::parse(path, query.as_deref(), &["format"])?;
    let (mid, day) = (asked.mid, asked.day);
    let format_text = asked.params.get("format").map_or("csv", String::as_str);
    let format = ExportFormat::parse(format_text).ok_or_else(|| {
        ApiError::bad_request(
            "bad_query",
            format!("format {format_text:?} is not csv or jsonl"),
        )
    })?;
    let key = format!("mailer scans {} {}", asked.mid_text, asked.date);
    if let Some(refused) = asked.refused(&caller, &key) {
        return Ok(refused);
    }
    // The other nodes' shares first: a missing one fails the request before a byte is sent.
    let path = format!(
        "/v1/mailers/{}/scans?{}",
        asked.mid_text,
        query.as_deref().unwrap_or("")
    );
    let others = ask_others_raw(&state, &caller, &headers, &path).await?;
    let engine = state.engine.clone();
    let peers = state.peers.clone();
    let pieces = tokio::task::spawn_blocking(move || {
        engine
            .day_pieces_by_mailer(mid, day)
            .into_iter()
            .filter(|piece| owned_here(peers.as_ref(), piece.key))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(internal)?;
    let note = AuditNote {
        key: Some(key),
        barcodes: Vec::new(),
        results: pieces.len() as u64,
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut body = BodyWriter(sender);
        if let Err(e) = engine.export_day(&pieces, day, format, &mut body) {
            tracing::debug!("export of Mailer ID {mid} stopped: {e}");
            return;
        }
        for (_, share) in others {
            // Each node's CSV starts with the header row this one already wrote.
            let rows = match format {
                ExportFormat::Csv => share
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(Bytes::new(), |end| share.slice(end + 1..)),
                ExportFormat::Jsonl => share,
            };
            if body.0.blocking_send(Ok(rows)).is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let response = (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(stream),
    )
        .into_response();
    Ok(noted(response, note))
}
