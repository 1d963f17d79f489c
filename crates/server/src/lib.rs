/*!
imbtrack as a long-running service: the HTTP JSON API tracking frontends and mailers query,
the tracking page, push (`POST /v1/scans`) and spool-directory ingest, scoped bearer tokens,
the audit log and Prometheus metrics.

# Brief overview

- [`Server::bind`] takes a [`ServerConfig`] and a shared [`Engine`]; [`Server::run`] serves until
  its shutdown future completes, with a spool watcher ([`spool`]) and a maintenance task that
  seals finished days and drops expired buckets on a schedule.
- Routes (see the crate's README section in the repository's `docs/http-api.md`):
  `GET /v1/pieces/{barcode}`, `POST /v1/pieces:batch`, `GET /v1/zips/{zip}/pieces?date=…`,
  `GET /v1/mailers/{mid}/summary?date=…`, `POST /v1/scans`, `GET /metrics`, `GET /healthz`,
  `GET /` (the page).
- [`Tokens`] holds SHA-256 hashes of bearer tokens and their [`Scope`]s; a mailer-scoped
  [`Caller`] sees only its Mailer IDs, and gets 404 for the others. [`AuditLog`] appends one
  JSON line per API request.
- Connections go through hyper directly (not `axum::serve`) so the server can bound headers'
  read time, connections in flight and TLS handshakes (rustls) itself.

# Example

```no_run
use std::sync::Arc;
use imbtrack_engine::{Clock, Engine, EngineOptions};
use imbtrack_server::{Server, ServerConfig};

# async fn run() -> Result<(), Box<dyn std::error::Error>> {
let (engine, _) = Engine::open("data".as_ref(), EngineOptions::with_clock(Clock::System))?;
let config = ServerConfig::new("127.0.0.1:8080".parse()?, "data/audit/audit.jsonl".into());
let server = Server::bind(config, Arc::new(engine)).await?;
println!("serving on {}", server.local_addr());
server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
# Ok(())
# }
```
*/
#![deny(missing_docs)]

mod api;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod spool;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use imbtrack_engine::Engine;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use crate::api::Peers;
pub use crate::audit::{AuditEntry, AuditKey, AuditLog};
pub use crate::auth::{token_hash_hex, Caller, Scope, Tokens, TokensError};
pub use crate::cluster::ClusterKey;

/// Sizes and times a server holds requests to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest push body once inflated (a gzip bomb stops here).
    pub max_inflated_bytes: usize,
    /// Most barcodes in one batch lookup.
    pub batch_max: usize,
    /// Most pieces in one page of a ZIP listing.
    pub page_max: usize,
    /// Longest a request may take, body upload included.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers (slow-loris clients).
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Pushes inflated and parsed at once; more wait their turn.
    pub concurrent_pushes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 16 << 20,
            max_inflated_bytes: 256 << 20,
            batch_max: 1000,
            page_max: 1000,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            concurrent_pushes: 2,
        }
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Tokens file; without one the server only binds to loopback and trusts every caller.
    pub tokens: Option<PathBuf>,
    /// Spool directory to watch.
    pub spool: Option<PathBuf>,
    /// How often the spool is looked at.
    pub spool_every: Duration,
    /// How long ingested (and failed) spool files are kept in `done/` (`failed/`); by default
    /// the longest retention window, since they hold raw scans. Zero keeps none.
    pub keep_done: Option<Duration>,
    /// How often finished days are sealed and expired buckets dropped.
    pub maintenance_every: Duration,
    /// The audit log (JSON lines, appended).
    pub audit: PathBuf,
    /// The key barcodes are hashed with in the audit log (made on first start); by default
    /// beside the audit log, `imbtrack serve` keeps it in the data directory.
    pub audit_key: PathBuf,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve plain HTTP with tokens on an address others can reach (tokens then cross the
    /// network in clear); refused unless set.
    pub insecure_http: bool,
    /// Limits.
    pub limits: Limits,
    /// Status-change subscriptions: where they are kept, which destinations are allowed.
    pub webhooks: webhooks::WebhookConfig,
}

impl ServerConfig {
    /// Defaults for `listen`, auditing to `audit`: no tokens, no spool, no TLS, maintenance
    /// every minute.
    pub fn new(listen: SocketAddr, audit: PathBuf) -> ServerConfig {
        let audit_dir = audit.parent().map(PathBuf::from).unwrap_or_default();
        ServerConfig {
            listen,
            tokens: None,
            spool: None,
            spool_every: Duration::from_millis(500),
            keep_done: None,
            maintenance_every: Duration::from_secs(60),
            audit_key: audit.with_file_name("audit.key"),
            audit,
            tls: None,
            insecure_http: false,
            limits: Limits::default(),
            webhooks: webhooks::WebhookConfig::new(audit_dir.join("webhooks")),
        }
    }
}

/// A server that could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Serving without tokens on an address others can reach.
    #[error("without --tokens the server binds to loopback only; {0} is not a loopback address")]
    OpenWithoutTokens(SocketAddr),
    /// Serving tokens over plain HTTP on an address others can reach.
    #[error("{0} is not a loopback address: serve HTTPS there (--tls-cert, --tls-key), or give --insecure-http to send tokens in clear")]
    PlainHttpInPublic(SocketAddr),
    /// The tokens file is unusable.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// A socket, file or directory failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        error: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |error| ServerError::Io { what, error }
}

/// The process's Prometheus recorder, installed on first use.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const LATENCY: [f64; 12] = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5,
                2.5,
            ];
            let builder = PrometheusBuilder::new();
            let recorder = builder
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &LATENCY)
                .map_or_else(
                    |_| PrometheusBuilder::new().build_recorder(),
                    |b| b.build_recorder(),
                );
            let handle = recorder.handle();
            // Another recorder installed first (an embedding program's) keeps the metrics;
            // this handle then renders what little it saw.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls("certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("certificate", cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| ServerError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<api::AppState>,
    config: ServerConfig,
}

impl Server {
    /// Checks the configuration, loads tokens and TLS material, opens the audit log and binds.
    pub async fn bind(config: ServerConfig, engine: Arc<Engine>) -> Result<Server, ServerError> {
        let tokens = match &config.tokens {
            Some(path) => Some(Tokens::load(path)?),
            None if !config.listen.ip().is_loopback() => {
                return Err(ServerError::OpenWithoutTokens(config.listen))
            }
            None => None,
        };
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        if tokens.is_some() && tls.is_none() && !config.listen.ip().is_loopback() {
            if !config.insecure_http {
                return Err(ServerError::PlainHttpInPublic(config.listen));
            }
            tracing::warn!(
                "serving plain HTTP on {} with --insecure-http: tokens cross the network in clear",
                config.listen
            );
        }
        // Who looked at whose pieces is kept as long as the pieces, no longer.
        let day_ms = imbtrack_feed::time::DAY_MS;
        let keep_days = (engine.longest_window_ms() + day_ms - 1) / day_ms;
        let audit = AuditLog::open(&config.audit, keep_days).map_err(io_error(format!(
            "opening the audit log {}",
            config.audit.display()
        )))?;
        let audit_key = AuditKey::load_or_create(&config.audit_key).map_err(io_error(format!(
            "reading or making the audit key {}",
            config.audit_key.display()
        )))?;
        let audit = Arc::new(audit);
        let webhooks = Arc::new(
            webhooks::Webhooks::open(
                config.webhooks.clone(),
                audit.clone(),
                audit_key.clone(),
                engine.longest_window_ms(),
            )
            .map_err(io_error(format!(
                "opening the webhook subscriptions in {}",
                config.webhooks.dir.display()
            )))?,
        );
        let tokens = tokens.map(Arc::new);
        webhooks.set_tokens(tokens.clone());
        engine.watch(webhooks.clone());
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io_error(format!("binding {}", config.listen)))?;
        let state = Arc::new(api::AppState {
            engine,
            tokens: tokens.map(arc_swap::ArcSwap::new),
            audit,
            webhooks,
            limits: config.limits.clone(),
            metrics: prometheus(),
            peers: None,
            cluster: None,
            client: api::peer_client(),
            tls: tls.is_some(),
            pushes: tokio::sync::Semaphore::new(config.limits.concurrent_pushes.max(1)),
            audit_key,
        });
        Ok(Server {
            listener,
            tls,
            state,
            config,
        })
    }

    /// The address it listens on (the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Routes piece lookups to the nodes `peers` names (one store of many, on Kafka): a lookup
    /// of a piece held elsewhere is forwarded there, the caller vouched for with `cluster`; and
    /// takes requests other nodes forward only when `cluster` vouches for their callers.
    pub fn route_through(mut self, peers: Arc<dyn Peers>, cluster: ClusterKey) -> Server {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.peers = Some(peers);
            state.cluster = Some(cluster);
        }
        self
    }

    /// The routes, to drive without a socket (`tower::ServiceExt::oneshot`): what the fuzz
    /// target of the HTTP paths calls.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Whether callers must present tokens.
    pub fn requires_tokens(&self) -> bool {
        self.state.tokens.is_some()
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` completes, then stops taking connections, lets requests in
    /// flight finish (up to 10 s) and flushes the audit log.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(spool) = &self.config.spool {
            std::fs::create_dir_all(spool)
                .map_err(io_error(format!("creating the spool {}", spool.display())))?;
            let (engine, spool, every, stop) = (
                self.state.engine.clone(),
                spool.clone(),
                self.config.spool_every,
                stop.clone(),
            );
            let keep = spool::KeepDone {
                ms: self
                    .config
                    .keep_done
                    .map_or_else(|| engine.longest_window_ms(), |d| d.as_millis() as i64),
            };
            std::thread::Builder::new()
                .name("imbtrack-spool".into())
                .spawn(move || spool::watch(engine, spool, every, keep, stop))
                .map_err(io_error("starting the spool watcher"))?;
        }
        self.state.webhooks.start_all();
        let maintenance = tokio::spawn(maintain(self.state.clone(), self.config.maintenance_every));
        let reloads = self
            .config
            .tokens
            .clone()
            .map(|path| tokio::spawn(reload_tokens_on_hangup(self.state.clone(), path)));

        let app = api::router(self.state.clone());
        let limits = &self.config.limits;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            // The client's address, for the audit log: put into each request, rather than a
            // layer added to a copy of the whole router for every connection.
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                app.clone(),
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            ));
            match &self.tls {
                None => {
                    let connection =
                        graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(finish(connection, permit));
                }
                Some(acceptor) => {
                    let (acceptor, http, watcher) =
                        (acceptor.clone(), http.clone(), graceful.watcher());
                    let handshake_limit = limits.header_timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_limit, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let connection = watcher
                                    .watch(http.serve_connection(TokioIo::new(tls), service));
                                finish(connection, permit).await;
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                            Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                        }
                    });
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        maintenance.abort();
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after 10 s; stopping anyway");
        }
        // A checkpoint of the head at a clean stop makes the next start fast.
        let engine = self.state.engine.clone();
        match tokio::task::spawn_blocking(move || engine.checkpoint(true)).await {
            Ok(Ok(Some(c))) => tracing::info!(
                "checkpoint of {} open buckets ({} scans) written at shutdown",
                c.buckets,
                c.scans
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!("checkpoint at shutdown: {e}"),
            Err(e) => tracing::error!("checkpoint at shutdown: {e}"),
        }
        self.state
            .audit
            .close()
            .map_err(io_error("writing the audit log"))
    }
}

/// Serves one connection to its end; the permit goes with it.
async fn finish<C, E>(connection: C, _permit: tokio::sync::OwnedSemaphorePermit)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(e) = connection.await {
        tracing::debug!("connection: {e}");
    }
}

/// Reloads the tokens file on SIGHUP, so a token can be added or revoked without a restart. A
/// file that does not load (bad entry, duplicate hash) leaves the tokens as they were.
async fn reload_tokens_on_hangup(state: Arc<api::AppState>, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!("no SIGHUP handler ({e}): tokens reload only on restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let Some(tokens) = &state.tokens else { return };
        match Tokens::load(&path) {
            Ok(loaded) => {
                let count = loaded.len();
                let loaded = Arc::new(loaded);
                state.webhooks.set_tokens(Some(loaded.clone()));
                tokens.store(loaded);
                metrics::counter!("imbtrack_token_reloads_total").increment(1);
                tracing::info!("tokens reloaded from {}: {count} tokens", path.display());
            }
            Err(e) => tracing::error!(
                "tokens not reloaded (the previous ones stay): {}: {e}",
                path.display()
            ),
        }
    }
}

/// Seals finished days and drops expired buckets every `every`, off the async threads.
async fn maintain(state: Arc<api::AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let engine = state.engine.clone();
        let done = tokio::task::spawn_blocking(move || {
            // Rejects files of `imbtrack ingest` hold raw records: kept no longer than scans.
            match engine.expire_copies(&engine.rejects_dir(), engine.longest_window_ms()) {
                Ok(0) => {}
                Ok(n) => tracing::info!("maintenance: deleted {n} rejects files past the window"),
                Err(e) => tracing::error!("maintenance: expiring rejects files: {e}"),
            }
            (engine.seal(), engine.expire(), engine.checkpoint(false))
        })
        .await;
        match done {
            Ok((Ok(sealed), Ok(expired), Ok(checkpoint))) => {
                if let Some(checkpoint) = checkpoint {
                    metrics::counter!("imbtrack_checkpoints_total").increment(1);
                    tracing::info!(
                        "maintenance: checkpoint of {} open buckets ({} scans, {} bytes)",
                        checkpoint.buckets,
                        checkpoint.scans,
                        checkpoint.bytes
                    );
                }
                metrics::counter!("imbtrack_sealed_buckets_total").increment(sealed.sealed_buckets);
                metrics::counter!("imbtrack_expired_buckets_total")
                    .increment(expired.dropped_buckets + expired.dropped_head_buckets);
                metrics::counter!("imbtrack_expired_bytes_total").increment(expired.freed_bytes);
                metrics::counter!("imbtrack_maintenance_runs_total").increment(1);
                if sealed.sealed_buckets > 0
                    || expired.dropped_buckets + expired.dropped_head_buckets > 0
                {
                    tracing::info!(
                        "maintenance: sealed {} buckets ({} scans); expired {} sealed and {} open buckets, {} bytes freed",
                        sealed.sealed_buckets,
                        sealed.sealed_scans,
                        expired.dropped_buckets,
                        expired.dropped_head_buckets,
                        expired.freed_bytes
                    );
                }
            }
            Ok((seal, expire, checkpoint)) => {
                metrics::counter!("imbtrack_maintenance_failures_total").increment(1);
                let errors = [seal.err(), expire.err(), checkpoint.err()];
                for e in errors.into_iter().flatten() {
                    tracing::error!("maintenance: {e}");
                }
            }
            Err(e) => tracing::error!("maintenance task: {e}"),
        }
        state.metrics.run_upkeep();
    }
}
