//! Running the server: `imbtrack serve`, and the serving half of `imbtrack demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use imbtrack_engine::Clock;
use imbtrack_server::{Server, ServerConfig};

use crate::shared::open_engine;
use crate::Outcome;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Days ingested (and failed) spool files stay in done/ (failed/); default: the longest
    /// retention window (they hold raw scans). 0 keeps none.
    #[arg(long)]
    keep_done: Option<u64>,
    /// Address to listen on; without --tokens it must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Spool directory: feed files dropped there (under a temp name, then renamed) are
    /// ingested, then moved to done/ or failed/.
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Tokens file (TOML; `imbtrack token new` makes entries). Without it every caller is
    /// trusted and the server binds to loopback only.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP with --tokens on a non-loopback address (tokens cross the network in
    /// clear); without it the server refuses to start there without TLS.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_http: bool,
    /// Audit log (JSON lines, appended); default <data>/audit/audit.jsonl.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Largest request body in bytes, as sent.
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
    /// Seconds between sealing finished days and dropping expired buckets.
    #[arg(long, default_value_t = 60)]
    maintenance_every: u64,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a request may take, its body's upload included.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// A host (or host:port) webhook subscriptions may deliver to; repeat for more. Without
    /// one no subscription can be made (no request to hosts the operator did not name).
    #[arg(long = "webhook-allow", value_name = "HOST[:PORT]")]
    webhook_allow: Vec<String>,
    /// Seconds a webhook delivery is retried before it is set aside as a failure.
    #[arg(long, default_value_t = 86_400)]
    webhook_give_up: u64,
    /// Longest wait, in seconds, between two attempts of a webhook delivery.
    #[arg(long, default_value_t = 300)]
    webhook_max_backoff: u64,
    #[cfg(feature = "kafka")]
    #[command(flatten)]
    kafka: crate::cluster::NodeArgs,
}

impl ServeArgs {
    fn config(&self, data: &Path) -> ServerConfig {
        let audit = self
            .audit
            .clone()
            .unwrap_or_else(|| data.join("audit").join("audit.jsonl"));
        let mut config = ServerConfig::new(self.listen, audit);
        config.tokens = self.tokens.clone();
        config.spool = self.spool.clone();
        config.tls = self.tls_cert.clone().zip(self.tls_key.clone());
        config.insecure_http = self.insecure_http;
        config.keep_done = self
            .keep_done
            .map(|days| Duration::from_secs(days * 86_400));
        config.audit_key = data.join("audit.key");
        config.limits.max_body_bytes = self.max_body;
        config.maintenance_every = Duration::from_secs(self.maintenance_every.max(1));
        config.limits.header_timeout = seconds(self.header_timeout);
        config.limits.request_timeout = seconds(self.request_timeout);
        config.webhooks.dir = data.join("webhooks");
        config.webhooks.allow.clone_from(&self.webhook_allow);
        config.webhooks.give_up_after = Duration::from_secs(self.webhook_give_up);
        config.webhooks.max_backoff = Duration::from_secs(self.webhook_max_backoff.max(1));
        config
    }

    /// The defaults, listening on `listen`: what `demo` serves with.
    pub(crate) fn on(listen: SocketAddr) -> ServeArgs {
        ServeArgs {
            listen,
            spool: None,
            tokens: None,
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
            keep_done: None,
            audit: None,
            max_body: 16 << 20,
            maintenance_every: 60,
            header_timeout: 10.0,
            request_timeout: 30.0,
            webhook_allow: Vec::new(),
            webhook_give_up: 86_400,
            webhook_max_backoff: 300,
            #[cfg(feature = "kafka")]
            kafka: crate::cluster::NodeArgs::default(),
        }
    }
}

/// A duration from seconds, at least a millisecond (a zero or negative limit would refuse
/// everything).
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.001)).unwrap_or(Duration::MAX)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMBTRACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves the store in `data` until Ctrl-C or SIGTERM. `clock` is fixed by `--now`, the system
/// clock otherwise; `before_serving` runs once the address is known (the demo prints its
/// sample lines there).
pub(crate) fn serve(
    data: &Path,
    clock: Clock,
    args: ServeArgs,
    before_serving: impl FnOnce(&str),
) -> anyhow::Result<Outcome> {
    init_logging();
    let engine = open_engine(data, clock, None, None)?;
    let config = args.config(data);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engine = Arc::new(engine);
    #[cfg(feature = "kafka")]
    let stop_node = Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[cfg(feature = "kafka")]
    let node_stop = stop_node.clone();
    runtime.block_on(async move {
        #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
        let mut server = Server::bind(config.clone(), engine.clone())
            .await
            .context("starting the server")?;
        let scheme = if server.is_tls() { "https" } else { "http" };
        let base = format!("{scheme}://{}", server.local_addr());
        #[cfg(feature = "kafka")]
        if let Some((peers, key)) = crate::cluster::join(&args.kafka, &engine, &node_stop, &base)? {
            server = server.route_through(peers, key);
        }
        eprintln!("imbtrack: serving {base}/ from {}", data.display());
        if !server.requires_tokens() {
            eprintln!("imbtrack: no --tokens: loopback only, every caller trusted");
        }
        if let Some(spool) = &config.spool {
            eprintln!("imbtrack: watching the spool {}", spool.display());
        }
        eprintln!("imbtrack: audit log {}", config.audit.display());
        before_serving(&base);
        server.run(shutdown_signal()).await?;
        eprintln!("imbtrack: stopped");
        anyhow::Ok(())
    })?;
    #[cfg(feature = "kafka")]
    stop_node.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Outcome::AllGood)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
