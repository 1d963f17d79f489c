//! `/v1/subscriptions`: mailers' status-change webhooks ([`crate::webhooks`]). A mailer token
//! subscribes only its own Mailer IDs and sees only its own subscriptions; an admin any.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{internal, ApiError};
use super::params::parse_json;
use super::{json_response, noted, require_lookups, AuditNote, Shared};
use crate::auth::{parse_mailer_id, Caller};
use crate::webhooks::{check_destination, Subscription, SubscriptionView, Webhooks};

/// Shortest secret taken: deliveries are signed with it.
const SECRET_MIN_LEN: usize = 16;

/// Most subscriptions one token may hold, and most Mailer IDs one may name: each subscription
/// is a task, files and a queue, so a token must not make them without bound.
const SUBSCRIPTIONS_PER_OWNER: usize = 100;
const MAILER_IDS_PER_SUBSCRIPTION: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    url: String,
    secret: String,
    mailer_ids: Vec<serde_json::Value>,
}

/// A Mailer ID given as text or a number.
fn mailer_id(value: &serde_json::Value) -> Result<u32, String> {
    match value {
        serde_json::Value::String(text) => parse_mailer_id(text),
        serde_json::Value::Number(n) => parse_mailer_id(&n.to_string()),
        other => Err(format!("{other} is not a Mailer ID")),
    }
}

/// Whether `caller` may see and manage `subscription`: its owner, or an admin (one who sees
/// every Mailer ID).
fn manages(caller: &Caller, subscription: &Subscription) -> bool {
    caller.id == subscription.owner || caller.sees(None)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no subscription {id:?}"))
}

/// Runs `change` (it writes and fsyncs files) on the blocking pool, not on an async worker.
async fn off_the_async_threads<T: Send + 'static>(
    state: &super::AppState,
    change: impl FnOnce(&Arc<Webhooks>) -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let webhooks = state.webhooks.clone();
    tokio::task::spawn_blocking(move || change(&webhooks))
        .await
        .map_err(internal)?
        .map_err(internal)
}

fn noted_key(response: Response, key: String) -> Response {
    noted(
        response,
        AuditNote {
            key: Some(key),
            ..AuditNote::default()
        },
    )
}

pub(super) async fn create_subscription(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let wanted: NewSubscription = parse_json(&body?)?;
    check_destination(&wanted.url, state.webhooks.allowed())
        .map_err(|e| ApiError::bad_request("destination_not_allowed", e.to_string()))?;
    if wanted.secret.len() < SECRET_MIN_LEN {
        return Err(ApiError::bad_request(
            "bad_secret",
            format!("the secret must be at least {SECRET_MIN_LEN} characters"),
        ));
    }
    if wanted.mailer_ids.is_empty() || wanted.mailer_ids.len() > MAILER_IDS_PER_SUBSCRIPTION {
        return Err(ApiError::bad_request(
            "bad_mailer_id",
            format!("mailer_ids must name 1 to {MAILER_IDS_PER_SUBSCRIPTION} Mailer IDs"),
        ));
    }
    let held = state
        .webhooks
        .list()
        .iter()
        .filter(|(subscription, _)| subscription.owner == caller.id)
        .count();
    if held >= SUBSCRIPTIONS_PER_OWNER {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_subscriptions",
            format!("this token holds {held} subscriptions, the most it may; delete one first"),
        ));
    }
    let mut mids = Vec::new();
    for value in &wanted.mailer_ids {
        let mid = mailer_id(value).map_err(|e| ApiError::bad_request("bad_mailer_id", e))?;
        if !caller.sees(Some(mid)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token may not subscribe to Mailer ID {value}"),
            ));
        }
        if !mids.contains(&mid) {
            mids.push(mid);
        }
    }
    let owner = caller.id.clone();
    let made = off_the_async_threads(&state, move |webhooks| {
        webhooks.subscribe(&wanted.url, &wanted.secret, mids, &owner)
    })
    .await?;
    let view = state.webhooks.get(&made.id).map(|(_, view)| view);
    let key = format!("subscription {} created", made.id);
    let response = (StatusCode::CREATED, json_response(&view)).into_response();
    Ok(noted_key(response, key))
}

pub(super) async fn list_subscriptions(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let listed: Vec<SubscriptionView> = state
        .webhooks
        .list()
        .into_iter()
        .filter(|(subscription, _)| manages(&caller, subscription))
        .map(|(_, view)| view)
        .collect();
    Ok(json_response(&json!({ "subscriptions": listed })))
}

/// The subscription `id` if `caller` manages it (404 alike whether it does not exist or is
/// another's).
fn managed(
    state: &super::AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Subscription, SubscriptionView), ApiError> {
    state
        .webhooks
        .get(id)
        .filter(|(subscription, _)| manages(caller, subscription))
        .ok_or_else(|| not_found(id))
}

pub(super) async fn delete_subscription(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(id) = path?;
    managed(&state, &caller, &id)?;
    let gone = id.clone();
    off_the_async_threads(&state, move |webhooks| webhooks.unsubscribe(&gone)).await?;
    Ok(noted_key(
        StatusCode::NO_CONTENT.into_response(),
        format!("subscription {id} deleted"),
    ))
}

/// `POST /v1/subscriptions/{id}:test`: queues a test delivery.
pub(super) async fn test_subscription(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(target) = path?;
    let Some(id) = target.strip_suffix(":test") else {
        return Err(ApiError::not_found(format!(
            "POST /v1/subscriptions/{target}: only /v1/subscriptions/{{id}}:test is posted to"
        )));
    };
    managed(&state, &caller, id)?;
    let tested = id.to_string();
    let delivery_id = off_the_async_threads(&state, move |webhooks| webhooks.test(&tested))
        .await?
        .ok_or_else(|| not_found(id))?;
    let response = (
        StatusCode::ACCEPTED,
        json_response(&json!({ "delivery_id": delivery_id })),
    )
        .into_response();
    Ok(noted_key(response, format!("subscription {id} test")))
}

pub(super) async fn subscription_failures(
    State(state): Shared,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_lookups(&caller)?;
    let Path(id) = path?;
    managed(&state, &caller, &id)?;
    let failures = state.webhooks.failures(&id).map_err(internal)?;
    let barcodes = failures
        .iter()
        .filter_map(|f| imbtrack_barcode::Barcode::parse(f.body["barcode"].as_str()?).ok())
        .map(|b| b.key())
        .collect();
    let note = AuditNote {
        key: Some(format!("subscription {id} failures")),
        barcodes,
        results: failures.len() as u64,
    };
    Ok(noted(json_response(&json!({ "failures": failures })), note))
}
