//! Status-change subscriptions pushed to mailers' systems (signed webhooks).
//!
//! A [`Subscription`] names a destination URL, a secret and Mailer IDs. [`Webhooks`] watches
//! the engine ([`imbtrack_engine::StatusWatch`]): each status change of a subscribed piece
//! becomes a delivery in the subscription's outbox, written and fsynced before the append that
//! caused it is acknowledged, and one task per subscription POSTs the outbox in order, signed
//! (`X-Imbtrack-Signature: sha256=<hex HMAC-SHA-256 of the body with the secret>`), retrying
//! with exponential backoff on errors, timeouts and non-2xx answers for up to a day, then
//! setting the delivery aside as a failure. Deliveries are at least once: one that was sent
//! but not recorded as delivered before a crash is sent again, with its `delivery_id`.
//!
//! On disk, in the webhooks directory: `subscriptions.json`; per subscription
//! `<id>.outbox.jsonl` (one delivery a line, with its sequence number), `<id>.done` (the last
//! sequence number delivered or set aside) and `<id>.failures.jsonl`. A full outbox (a
//! receiver down for long) drops new deliveries and counts them: ingest never waits on a
//! receiver.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use hmac::{Hmac, Mac};
use imbtrack_barcode::format_mailer_id;
use imbtrack_engine::{format_date, Clock, StatusChange, StatusWatch};
use imbtrack_feed::time::format_utc;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::audit::{AuditEntry, AuditKey, AuditLog};
use crate::auth::{to_hex, Tokens};

/// How webhooks run.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where subscriptions and outboxes are kept.
    pub dir: PathBuf,
    /// Destinations allowed, `host` or `host:port` (`serve --webhook-allow`); none: no
    /// subscription can be made.
    pub allow: Vec<String>,
    /// Most deliveries waiting per subscription; more are dropped and counted.
    pub max_pending: usize,
    /// How long a delivery is retried before it is set aside as a failure.
    pub give_up_after: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// One attempt's time limit.
    pub attempt_timeout: Duration,
}

impl WebhookConfig {
    /// Defaults in `dir`: nothing allowed, 100,000 pending, retried for 24 h, backoff up to
    /// 5 minutes, 10 s an attempt.
    pub fn new(dir: PathBuf) -> WebhookConfig {
        WebhookConfig {
            dir,
            allow: Vec::new(),
            max_pending: 100_000,
            give_up_after: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(300),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// A mailer's subscription, as kept in `subscriptions.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (random, 16 hex digits).
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The HMAC key deliveries are signed with.
    pub secret: String,
    /// The Mailer IDs whose pieces' changes are delivered.
    pub mailer_ids: Vec<u32>,
    /// The token id that made it (its owner).
    pub owner: String,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Not an absolute `http://` or `https://` URL with a host (and no credentials).
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    Malformed(String),
    /// A host the operator did not allow.
    #[error("{0} is not an allowed webhook destination (serve --webhook-allow)")]
    NotAllowed(String),
}

/// Checks a destination against the allowed `host` / `host:port` entries: no server-side
/// request forgery to hosts the operator did not name.
pub fn check_destination(url: &str, allow: &[String]) -> Result<(), DestinationError> {
    let malformed = || DestinationError::Malformed(url.to_string());
    let uri: axum::http::Uri = url.parse().map_err(|_| malformed())?;
    let scheme = uri.scheme_str().ok_or_else(malformed)?;
    let authority = uri.authority().ok_or_else(malformed)?;
    if !matches!(scheme, "http" | "https") || authority.as_str().contains('@') {
        return Err(malformed());
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let allowed = allow.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                h == host && p.parse::<u16>() == Ok(port)
            }
            _ => entry == host,
        }
    });
    if allowed {
        Ok(())
    } else {
        Err(DestinationError::NotAllowed(format!("{host}:{port}")))
    }
}

/// One delivery waiting in an outbox.
#[derive(Debug, Clone)]
struct Delivery {
    seq: u64,
    delivery_id: String,
    enqueued_ms: i64,
    /// The JSON body, exactly as it is sent (and signed).
    body: String,
}

/// A delivery as a line of its outbox file: the body kept as the JSON it is (not escaped into
/// a string), so writing it costs a copy and reading it one parse.
#[derive(Deserialize)]
struct OutboxLine {
    seq: u64,
    delivery_id: String,
    enqueued_ms: i64,
    body: Box<serde_json::value::RawValue>,
}

impl Delivery {
    /// Its outbox line, newline included. The id is ours (hex and digits), the body JSON we
    /// wrote: neither needs escaping.
    fn line(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = writeln!(
            out,
            "{{\"seq\":{},\"delivery_id\":\"{}\",\"enqueued_ms\":{},\"body\":{}}}",
            self.seq, self.delivery_id, self.enqueued_ms, self.body
        );
    }
}

/// A delivery set aside after a day of failed attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// The delivery's id.
    pub delivery_id: String,
    /// Its body.
    pub body: serde_json::Value,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt got.
    pub last_error: String,
    /// When it was set aside, RFC 3339 UTC.
    pub failed_at: String,
}

/// A subscription's outbox: deliveries not yet made, in order, mirrored by its file.
struct Outbox {
    file: File,
    next_seq: u64,
    pending: VecDeque<Delivery>,
}

/// A subscription with its outbox and counters.
struct Active {
    subscription: Subscription,
    outbox: Mutex<Outbox>,
    wake: tokio::sync::Notify,
    deleted: AtomicBool,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// What a subscription's listing shows (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    /// Its id.
    pub id: String,
    /// Its destination.
    pub url: String,
    /// Its Mailer IDs, as text.
    pub mailer_ids: Vec<String>,
    /// Its owner's token id.
    pub owner: String,
    /// When it was made.
    pub created: String,
    /// Deliveries waiting.
    pub pending: usize,
    /// Deliveries made since the server started.
    pub delivered: u64,
    /// Deliveries set aside since the server started.
    pub failed: u64,
    /// Deliveries dropped because the outbox was full, since the server started.
    pub dropped: u64,
}

/// A random id: 16 hex digits.
fn random_id() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(to_hex(&bytes))
}

/// `sha256=<hex HMAC-SHA-256 of body with secret>`: the `X-Imbtrack-Signature` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", to_hex(&mac.finalize().into_bytes()))
}

/// Writes `bytes` to `path` durably: a temporary file, fsynced, renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The subscriptions and their outboxes; the engine's [`StatusWatch`].
pub struct Webhooks {
    config: WebhookConfig,
    active: RwLock<Vec<Arc<Active>>>,
    /// Every subscribed Mailer ID, asked for each scan appended.
    wanted: RwLock<HashSet<u32>>,
    audit: Arc<AuditLog>,
    audit_key: AuditKey,
    /// Drops pieces past their window from set-aside failures.
    longest_window_ms: i64,
    /// Delivery ids are this random prefix (one a process) and a count: unique without a
    /// system call each.
    id_prefix: String,
    next_delivery: AtomicU64,
    /// The server's tokens (`None` without tokens: every caller is trusted): a subscription
    /// delivers only the Mailer IDs its owner's token sees now, so a scope taken away by a
    /// tokens reload stops its deliveries at once.
    tokens: RwLock<Option<Arc<Tokens>>>,
}

type WebhookClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

impl Webhooks {
    /// Loads the subscriptions and their outboxes from `config.dir` (made if missing).
    pub fn open(
        config: WebhookConfig,
        audit: Arc<AuditLog>,
        audit_key: AuditKey,
        longest_window_ms: i64,
    ) -> io::Result<Webhooks> {
        fs::create_dir_all(&config.dir)?;
        let listed: Vec<Subscription> = match fs::read(config.dir.join("subscriptions.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", config.dir.join("subscriptions.json").display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let webhooks = Webhooks {
            config,
            active: RwLock::new(Vec::new()),
            wanted: RwLock::new(HashSet::new()),
            audit,
            audit_key,
            longest_window_ms,
            id_prefix: random_id()?,
            next_delivery: AtomicU64::new(1),
            tokens: RwLock::new(None),
        };
        let mut active = Vec::new();
        for subscription in listed {
            active.push(Arc::new(webhooks.load(subscription)?));
        }
        *webhooks.active.write().unwrap_or_else(|e| e.into_inner()) = active;
        webhooks.refresh_wanted();
        Ok(webhooks)
    }

    fn path(&self, id: &str, suffix: &str) -> PathBuf {
        self.config.dir.join(format!("{id}.{suffix}"))
    }

    /// A subscription with the deliveries its outbox still holds (after its `done` mark).
    fn load(&self, subscription: Subscription) -> io::Result<Active> {
        let id = &subscription.id;
        let done: u64 = match fs::read_to_string(self.path(id, "done")) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let outbox_path = self.path(id, "outbox.jsonl");
        let mut pending = VecDeque::new();
        let mut next_seq = done + 1;
        if let Ok(file) = File::open(&outbox_path) {
            for line in io::BufReader::new(file).lines() {
                // A line torn by a crash mid-write is the last one: it was never acknowledged.
                let Ok(stored) = serde_json::from_str::<OutboxLine>(&line?) else {
                    continue;
                };
                let delivery = Delivery {
                    seq: stored.seq,
                    delivery_id: stored.delivery_id,
                    enqueued_ms: stored.enqueued_ms,
                    body: stored.body.get().to_string(),
                };
                next_seq = next_seq.max(delivery.seq + 1);
                if delivery.seq > done {
                    pending.push_back(delivery);
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&outbox_path)?;
        Ok(Active {
            subscription,
            outbox: Mutex::new(Outbox {
                file,
                next_seq,
                pending,
            }),
            wake: tokio::sync::Notify::new(),
            deleted: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether `subscription`'s owner may see `mailer_id` now.
    fn owner_sees(&self, subscription: &Subscription, mailer_id: u32) -> bool {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.as_ref().is_none_or(|tokens| {
            tokens
                .caller(&subscription.owner)
                .is_some_and(|caller| caller.sees(Some(mailer_id)))
        })
    }

    /// Takes the server's tokens as they are now (at start, and at each reload).
    pub fn set_tokens(&self, tokens: Option<Arc<Tokens>>) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
        self.refresh_wanted();
    }

    fn refresh_wanted(&self) {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        let wanted = active
            .iter()
            .flat_map(|a| {
                let subscription = &a.subscription;
                subscription
                    .mailer_ids
                    .iter()
                    .copied()
                    .filter(|&mid| self.owner_sees(subscription, mid))
            })
            .collect();
        *self.wanted.write().unwrap_or_else(|e| e.into_inner()) = wanted;
    }

    fn save_list(&self) -> io::Result<()> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        let list: Vec<&Subscription> = active.iter().map(|a| &a.subscription).collect();
        let json = serde_json::to_vec_pretty(&list).map_err(io::Error::other)?;
        write_atomically(&self.config.dir.join("subscriptions.json"), &json)
    }

    /// The destinations allowed.
    pub fn allowed(&self) -> &[String] {
        &self.config.allow
    }

    /// Makes a subscription (the caller checked the Mailer IDs are the owner's to see) and
    /// starts delivering for it.
    pub fn subscribe(
        self: &Arc<Self>,
        url: &str,
        secret: &str,
        mailer_ids: Vec<u32>,
        owner: &str,
    ) -> io::Result<Subscription> {
        let subscription = Subscription {
            id: random_id()?,
            url: url.to_string(),
            secret: secret.to_string(),
            mailer_ids,
            owner: owner.to_string(),
            created: format_utc(Clock::System.now_ms()),
        };
        let active = Arc::new(self.load(subscription.clone())?);
        self.active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(active.clone());
        self.save_list()?;
        self.refresh_wanted();
        self.start(active);
        Ok(subscription)
    }

    /// Ends a subscription: its deliveries stop and its files go.
    pub fn unsubscribe(&self, id: &str) -> io::Result<bool> {
        let removed = {
            let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
            let at = active.iter().position(|a| a.subscription.id == id);
            at.map(|at| active.remove(at))
        };
        let Some(removed) = removed else {
            return Ok(false);
        };
        {
            // Under the outbox's lock: a delivery finishing now either wrote its mark before
            // the files go, or sees the subscription deleted and writes nothing.
            let _outbox = removed.outbox.lock().unwrap_or_else(|e| e.into_inner());
            removed.deleted.store(true, Ordering::SeqCst);
        }
        removed.wake.notify_one();
        self.save_list()?;
        self.refresh_wanted();
        for suffix in ["outbox.jsonl", "done", "failures.jsonl"] {
            match fs::remove_file(self.path(id, suffix)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(true)
    }

    /// The subscription `id` and its counters, if it exists.
    pub fn get(&self, id: &str) -> Option<(Subscription, SubscriptionView)> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active
            .iter()
            .find(|a| a.subscription.id == id)
            .map(|a| (a.subscription.clone(), view(a)))
    }

    /// Every subscription with its counters.
    pub fn list(&self) -> Vec<(Subscription, SubscriptionView)> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active
            .iter()
            .map(|a| (a.subscription.clone(), view(a)))
            .collect()
    }

    /// Queues a test delivery for subscription `id`; its delivery id.
    pub fn test(&self, id: &str) -> io::Result<Option<String>> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        let Some(target) = active.iter().find(|a| a.subscription.id == id) else {
            return Ok(None);
        };
        let delivery_id = self.delivery_id();
        let body = serde_json::json!({
            "delivery_id": delivery_id,
            "test": true,
            "subscription_id": id,
            "message": "a test delivery from imbtrack",
        });
        self.enqueue(target, vec![(delivery_id.clone(), body.to_string())])?;
        Ok(Some(delivery_id))
    }

    /// A new delivery id.
    fn delivery_id(&self) -> String {
        let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }

    /// The deliveries of `id` set aside.
    pub fn failures(&self, id: &str) -> io::Result<Vec<Failure>> {
        read_failures(&self.path(id, "failures.jsonl"))
    }

    /// Appends deliveries to an outbox, durably, and wakes its task; past the outbox's limit
    /// they are dropped and counted.
    fn enqueue(&self, target: &Active, bodies: Vec<(String, String)>) -> io::Result<()> {
        let mut outbox = target.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.config.max_pending.saturating_sub(outbox.pending.len());
        let full = bodies.len().saturating_sub(room);
        let mut lines = Vec::new();
        let mut made = Vec::with_capacity(bodies.len().min(room));
        let now = Clock::System.now_ms();
        for (delivery_id, body) in bodies.into_iter().take(room) {
            let delivery = Delivery {
                seq: outbox.next_seq,
                delivery_id,
                body,
                enqueued_ms: now,
            };
            outbox.next_seq += 1;
            delivery.line(&mut lines);
            made.push(delivery);
        }
        // Only what is durable is queued: an outbox that cannot be written (a full disk) loses
        // these deliveries, counted and logged like a full one's.
        let written = outbox
            .file
            .write_all(&lines)
            .and_then(|()| outbox.file.sync_data());
        let unwritten = if written.is_ok() { 0 } else { made.len() };
        if written.is_ok() {
            outbox.pending.extend(made);
        }
        let id = target.subscription.id.clone();
        metrics::gauge!("imbtrack_webhook_outbox_depth", "subscription" => id.clone())
            .set(outbox.pending.len() as f64);
        let dropped = full + unwritten;
        if dropped > 0 {
            target.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            metrics::counter!("imbtrack_webhook_dropped_total", "subscription" => id.clone())
                .increment(dropped as u64);
            tracing::error!(
                "webhooks: subscription {id}: {dropped} deliveries dropped ({full} for a full \
                 outbox, {} waiting; {unwritten} for an outbox that could not be written)",
                outbox.pending.len()
            );
        }
        drop(outbox);
        target.wake.notify_one();
        written
    }

    /// Starts the delivery tasks of every subscription (on the current tokio runtime).
    pub fn start_all(self: &Arc<Self>) {
        let active = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for target in active {
            self.start(target);
        }
    }

    fn start(self: &Arc<Self>, target: Arc<Active>) {
        let webhooks = self.clone();
        tokio::spawn(async move { webhooks.deliver(target).await });
    }

    /// Delivers a subscription's outbox in order until it is deleted.
    async fn deliver(self: Arc<Self>, target: Arc<Active>) {
        let client: WebhookClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(
                    hyper_rustls::HttpsConnectorBuilder::new()
                        .with_webpki_roots()
                        .https_or_http()
                        .enable_http1()
                        .build(),
                );
        let id = target.subscription.id.clone();
        let mut attempts = 0u32;
        while !target.deleted.load(Ordering::SeqCst) {
            let next = target
                .outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .front()
                .cloned();
            let Some(delivery) = next else {
                target.wake.notified().await;
                continue;
            };
            attempts += 1;
            let outcome = self.attempt(&client, &target.subscription, &delivery).await;
            self.audit_delivery(&target.subscription, &delivery, &outcome);
            let give_up = Clock::System.now_ms() - delivery.enqueued_ms
                >= self.config.give_up_after.as_millis() as i64;
            match outcome {
                Ok(_) => {
                    target.delivered.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("imbtrack_webhook_deliveries_total", "subscription" => id.clone())
                        .increment(1);
                }
                Err(why) if give_up => {
                    target.failed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("imbtrack_webhook_failures_total", "subscription" => id.clone())
                        .increment(1);
                    tracing::warn!(
                        "webhooks: delivery {} of subscription {id} set aside after {attempts} \
                         attempts: {why}",
                        delivery.delivery_id
                    );
                    if let Err(e) = self.set_aside(&target, &delivery, attempts, &why) {
                        tracing::error!("webhooks: recording a failed delivery: {e}");
                    }
                }
                Err(why) => {
                    metrics::counter!("imbtrack_webhook_retries_total", "subscription" => id.clone())
                        .increment(1);
                    tracing::debug!("webhooks: {id} attempt {attempts}: {why}");
                    let backoff =
                        Duration::from_millis(500u64.saturating_mul(1 << attempts.min(20)))
                            .min(self.config.max_backoff);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = target.wake.notified() => {}
                    }
                    continue;
                }
            }
            attempts = 0;
            if let Err(e) = self.mark_done(&target, delivery.seq) {
                tracing::error!("webhooks: recording delivery {}: {e}", delivery.delivery_id);
            }
        }
    }

    /// One POST of a delivery; `Ok(status)` for a 2xx answer.
    async fn attempt(
        &self,
        client: &WebhookClient,
        subscription: &Subscription,
        delivery: &Delivery,
    ) -> Result<u16, String> {
        check_destination(&subscription.url, &self.config.allow).map_err(|e| e.to_string())?;
        let request = axum::http::Request::post(&subscription.url)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .header("x-imbtrack-delivery", &delivery.delivery_id)
            .header(
                "x-imbtrack-signature",
                signature(&subscription.secret, delivery.body.as_bytes()),
            )
            .body(http_body_util::Full::new(Bytes::from(
                delivery.body.clone(),
            )))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(self.config.attempt_timeout, client.request(request))
            .await
            .map_err(|_| format!("no answer in {} s", self.config.attempt_timeout.as_secs()))?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("answered {status}"))
        }
    }

    /// One audit line per attempt: the destination, the owner, the piece's keyed hash and
    /// what the receiver answered (0 when it did not).
    fn audit_delivery(
        &self,
        subscription: &Subscription,
        delivery: &Delivery,
        outcome: &Result<u16, String>,
    ) {
        let barcode = serde_json::from_str::<serde_json::Value>(&delivery.body)
            .ok()
            .and_then(|body| {
                imbtrack_barcode::Barcode::parse(body["barcode"].as_str()?)
                    .ok()
                    .map(|b| self.audit_key.hash(b.key()))
            });
        let host = subscription
            .url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        self.audit.record(&AuditEntry {
            time: format_utc(Clock::System.now_ms()),
            client: host,
            token: subscription.owner.clone(),
            method: "POST".into(),
            route: "(webhook delivery)".into(),
            key: Some(format!(
                "subscription {} delivery {}",
                subscription.id, delivery.delivery_id
            )),
            barcodes: barcode.into_iter().collect(),
            results: 1,
            status: *outcome.as_ref().unwrap_or(&0),
        });
    }

    /// Records a delivery as made (or set aside): it leaves the outbox, and the outbox file
    /// is emptied once nothing waits in it.
    fn mark_done(&self, target: &Active, seq: u64) -> io::Result<()> {
        let id = &target.subscription.id;
        let mut outbox = target.outbox.lock().unwrap_or_else(|e| e.into_inner());
        // Deleted while this delivery was under way: its files are gone and stay gone.
        if target.deleted.load(Ordering::SeqCst) {
            return Ok(());
        }
        if outbox.pending.front().is_some_and(|d| d.seq == seq) {
            outbox.pending.pop_front();
        }
        write_atomically(&self.path(id, "done"), seq.to_string().as_bytes())?;
        if outbox.pending.is_empty() {
            outbox.file.set_len(0)?;
        }
        metrics::gauge!("imbtrack_webhook_outbox_depth", "subscription" => id.clone())
            .set(outbox.pending.len() as f64);
        Ok(())
    }

    /// Keeps a delivery set aside (at most the newest 1,000 a subscription, none of them about
    /// a piece past its retention window).
    fn set_aside(
        &self,
        target: &Active,
        delivery: &Delivery,
        attempts: u32,
        why: &str,
    ) -> io::Result<()> {
        // As in `mark_done`: nothing is written for a subscription deleted meanwhile.
        let _outbox = target.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if target.deleted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let path = self.path(&target.subscription.id, "failures.jsonl");
        let mut failures = read_failures(&path)?;
        let oldest = format_utc(Clock::System.now_ms() - self.longest_window_ms);
        failures.retain(|f| f.failed_at >= oldest);
        failures.push(Failure {
            delivery_id: delivery.delivery_id.clone(),
            body: serde_json::from_str(&delivery.body).unwrap_or(serde_json::Value::Null),
            attempts,
            last_error: why.to_string(),
            failed_at: format_utc(Clock::System.now_ms()),
        });
        let keep_from = failures.len().saturating_sub(1_000);
        let mut text = Vec::new();
        for failure in &failures[keep_from..] {
            serde_json::to_writer(&mut text, failure).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        write_atomically(&path, &text)
    }

    /// The delivery body of a status change (see `docs/http-api.md`).
    fn body(delivery_id: &str, mailer_id: u32, change: &StatusChange) -> String {
        let piece = &change.piece;
        let body = ChangeBody {
            delivery_id,
            barcode: piece.barcode.to_barcode().to_string(),
            mailer_id: format_mailer_id(mailer_id),
            class: piece.class.as_str(),
            status: piece.status.as_str(),
            logical: piece.logical,
            previous_status: change.previous.map(|s| s.as_str()),
            status_time: format_utc(piece.status_time_ms),
            expected_delivery: piece.expected_delivery.map(format_date),
            event: piece.events.first(),
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// What a status change's delivery says, written straight to JSON.
#[derive(Serialize)]
struct ChangeBody<'a> {
    delivery_id: &'a str,
    barcode: String,
    mailer_id: String,
    class: &'static str,
    status: &'static str,
    logical: bool,
    previous_status: Option<&'static str>,
    status_time: String,
    expected_delivery: Option<String>,
    event: Option<&'a imbtrack_engine::EventView>,
}

fn view(active: &Active) -> SubscriptionView {
    let subscription = &active.subscription;
    SubscriptionView {
        id: subscription.id.clone(),
        url: subscription.url.clone(),
        mailer_ids: subscription
            .mailer_ids
            .iter()
            .map(|&m| format_mailer_id(m))
            .collect(),
        owner: subscription.owner.clone(),
        created: subscription.created.clone(),
        pending: active
            .outbox
            .lock()
            .map(|o| o.pending.len())
            .unwrap_or_default(),
        delivered: active.delivered.load(Ordering::Relaxed),
        failed: active.failed.load(Ordering::Relaxed),
        dropped: active.dropped.load(Ordering::Relaxed),
    }
}

fn read_failures(path: &Path) -> io::Result<Vec<Failure>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl StatusWatch for Webhooks {
    fn wants_any(&self) -> bool {
        self.wanted.read().map(|w| !w.is_empty()).unwrap_or(false)
    }

    fn wants(&self, mailer_id: u32) -> bool {
        self.wanted
            .read()
            .map(|w| w.contains(&mailer_id))
            .unwrap_or(false)
    }

    fn changed(&self, changes: Vec<StatusChange>) {
        let active = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for target in &active {
            let mut bodies = Vec::new();
            for change in &changes {
                let Some(mid) = change.piece.barcode.mailer_id() else {
                    continue;
                };
                if !target.subscription.mailer_ids.contains(&mid)
                    || !self.owner_sees(&target.subscription, mid)
                {
                    continue;
                }
                let delivery_id = self.delivery_id();
                let body = Webhooks::body(&delivery_id, mid, change);
                bodies.push((delivery_id, body));
            }
            if bodies.is_empty() {
                continue;
            }
            if let Err(e) = self.enqueue(target, bodies) {
                tracing::error!(
                    "webhooks: writing subscription {}'s outbox: {e}",
                    target.subscription.id
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_hosts_and_ports_are_destinations() {
        let allow = vec![
            "hooks.acme.example".to_string(),
            "127.0.0.1:9000".to_string(),
        ];
        for ok in [
            "https://hooks.acme.example/imbtrack",
            "http://HOOKS.acme.example:8080/x",
            "http://127.0.0.1:9000/hook",
        ] {
            assert_eq!(check_destination(ok, &allow), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("http://127.0.0.1:9001/hook", "not an allowed"),
            ("http://169.254.169.254/latest/meta-data", "not an allowed"),
            ("http://hooks.acme.example.evil.example/", "not an allowed"),
            ("ftp://hooks.acme.example/", "is not an http"),
            ("http://user:pw@hooks.acme.example/", "is not an http"),
            ("/relative", "is not an http"),
            ("not a url", "is not an http"),
        ] {
            let error = check_destination(bad, &allow).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(check_destination("http://127.0.0.1:9000/", &[]).is_err());
    }

    #[test]
    fn an_outbox_line_reads_back_to_its_delivery_byte_for_byte() {
        let delivery = Delivery {
            seq: 42,
            delivery_id: "9c1e4b7a02d35f86-7".into(),
            enqueued_ms: 1_700_000_000_000,
            body: r#"{"barcode":"0027","event":{"facility_name":"A \"B\" \\ C"},"n":null}"#.into(),
        };
        let mut line = Vec::new();
        delivery.line(&mut line);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let stored: OutboxLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (stored.seq, stored.delivery_id.as_str(), stored.enqueued_ms),
            (42, "9c1e4b7a02d35f86-7", 1_700_000_000_000)
        );
        assert_eq!(stored.body.get(), delivery.body);
    }

    /// A full disk refuses the outbox's write: the deliveries are counted dropped, and none
    /// waits in memory as if it were durable.
    #[test]
    fn an_outbox_that_cannot_be_written_counts_its_deliveries_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl"), 30).unwrap());
        let key = AuditKey::load_or_create(&dir.path().join("audit.key")).unwrap();
        let config = WebhookConfig::new(dir.path().join("webhooks"));
        let webhooks = Webhooks::open(config, audit, key, 30 * 86_400_000).unwrap();
        let mut active = webhooks
            .load(Subscription {
                id: "s".into(),
                url: "http://127.0.0.1:9/".into(),
                secret: "0123456789abcdef".into(),
                mailer_ids: vec![123456],
                owner: "ops".into(),
                created: String::new(),
            })
            .unwrap();
        // A handle that refuses writes stands for the full disk.
        active.outbox.get_mut().unwrap().file =
            File::open(webhooks.path("s", "outbox.jsonl")).unwrap();
        let bodies = vec![("d-1".to_string(), "{}".to_string()); 3];
        assert!(webhooks.enqueue(&active, bodies).is_err());
        assert_eq!(active.dropped.load(Ordering::Relaxed), 3);
        assert!(active.outbox.lock().unwrap().pending.is_empty());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
