//! The server's shared state, the router with its layers, and `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use journal::{Durable, Options, StateMachine};
use ledger::LedgerConfig;
use platform::{Action, Command, Platform, PlatformConfig};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::auth::{RateLimiter, hash_key, new_key};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How the server is set up; every limit is named here.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The admin key; `None`: the one in `<data-dir>/admin.key`, made on first start.
    pub admin_key: Option<String>,
    /// `None`: real time; `Some(start)`: simulated time from `start` (ns since the epoch).
    pub simulated_clock_start: Option<u64>,
    /// Requests a second per API key (bursts of twice that).
    pub rate_limit_per_second: u32,
    /// The largest request body accepted.
    pub body_limit_bytes: usize,
    /// A request still unanswered after this is answered `503 overloaded`.
    pub request_timeout: Duration,
    pub platform: PlatformConfig,
    /// Transfers older than this (clock time) leave memory for the history file.
    pub memory_horizon_seconds: u64,
    /// A snapshot after this many journal records, and once the log since
    /// the last one is this percent of its size (see `journal::Options`).
    pub snapshot_every_records: u64,
    pub snapshot_log_percent: u64,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./zhifu-data"),
            admin_key: None,
            simulated_clock_start: None,
            rate_limit_per_second: 10_000,
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            platform: PlatformConfig::default(),
            memory_horizon_seconds: 3_600,
            snapshot_every_records: 100_000,
            snapshot_log_percent: 50,
        }
    }
}

pub struct AppState {
    pub store: Durable<Platform>,
    pub clock: Clock,
    pub admin_key_hash: [u8; 32],
    /// `<data-dir>/server.secret`: derives keys that must come out the same
    /// on a retried request; never leaves the server.
    pub server_secret: [u8; 32],
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    /// Signs the Alipay-compatible gateway's answers (made on first use).
    pub gateway_key: crate::gateway::PlatformKey,
}

impl AppState {
    /// HMAC-SHA256 under the server's secret of a purpose and two parts.
    pub fn derive(&self, purpose: &[u8], first: &[u8], second: &[u8]) -> Result<[u8; 32], ApiError> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.server_secret)
            .map_err(|_| ApiError::unavailable("the server secret is unusable"))?;
        for part in [purpose, b"\0", first, b"\0", second] {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }

    /// Submits an action with the clock's time and waits (without holding a
    /// thread) until it is durable and applied.
    pub async fn submit(
        self: &Arc<AppState>,
        idempotency: Option<platform::IdempotencyTag>,
        action: Action,
    ) -> Result<platform::Outcome, ApiError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let command = Command { now: self.clock.now(), idempotency, action };
        self.store
            .submit_with(command, move |outcome| {
                let _ = sender.send(outcome);
            })
            .map_err(|error| match error {
                journal::JournalError::Busy => ApiError::unavailable("the server is busy; try again"),
                other => ApiError::unavailable(format!("could not make the change durable: {other}")),
            })?;
        receiver
            .await
            .map_err(|_| ApiError::unavailable("the journal stopped"))?
            .map_err(|error| ApiError::unavailable(format!("could not make the change durable: {error}")))
    }
}

/// Starts the server and runs until SIGINT or SIGTERM; in-flight requests
/// and their commands finish before it returns.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let (state, listener) = start(&config).await?;
    let address = listener.local_addr()?;
    println!("zhifu listening on http://{address}");
    let ticker = spawn_ticker(Arc::clone(&state));
    let dispatcher = crate::webhooks::spawn_dispatcher(Arc::clone(&state));
    let router = router(Arc::clone(&state), &config);
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serve HTTP")?;
    ticker.abort();
    dispatcher.abort();
    let _ = ticker.await;
    let _ = dispatcher.await;
    // The last reference: dropping the store finishes its queued commands.
    if let Ok(state) = Arc::try_unwrap(state) {
        tokio::task::spawn_blocking(move || state.store.shutdown()).await?;
    }
    println!("zhifu stopped");
    Ok(())
}

async fn start(config: &ServerConfig) -> anyhow::Result<(Arc<AppState>, tokio::net::TcpListener)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    let admin_key = admin_key(config)?;
    let server_secret = server_secret(&config.data_dir)?;
    let options = Options {
        snapshot_every_records: config.snapshot_every_records.max(1),
        snapshot_log_percent: config.snapshot_log_percent,
        ledger: LedgerConfig {
            id_horizon_ns: Some(config.memory_horizon_seconds.max(1).saturating_mul(1_000_000_000)),
        },
        ..Options::default()
    };
    let data_dir = config.data_dir.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Durable::<Platform>::open(&data_dir, options))
        .await?
        .with_context(|| format!("open the data directory {}", config.data_dir.display()))?;
    println!(
        "zhifu: data in {} (recovered {} journal records{})",
        config.data_dir.display(),
        report.last_sequence,
        report.snapshot_sequence.map(|s| format!(", snapshot at {s}")).unwrap_or_default()
    );
    let clock = match config.simulated_clock_start {
        Some(start) => Clock::simulated(start.max(store.read(|p| p.ledger().last_timestamp()))),
        None => Clock::Real,
    };
    let state = Arc::new(AppState {
        store,
        clock,
        admin_key_hash: hash_key(&admin_key),
        server_secret,
        limiter: RateLimiter::new(config.rate_limit_per_second),
        metrics: Metrics::default(),
        gateway_key: crate::gateway::PlatformKey::in_directory(&config.data_dir),
    });
    if state.store.read(|p| p.config() != &config.platform) {
        state.submit(None, Action::Configure(config.platform.clone())).await.map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    Ok((state, listener))
}

/// The admin key: given, or kept in `<data-dir>/admin.key` (mode 0600),
/// made and printed once on the first start.
fn admin_key(config: &ServerConfig) -> anyhow::Result<String> {
    if let Some(key) = &config.admin_key {
        println!("zhifu: admin key from --admin-key / ZHIFU_ADMIN_KEY");
        return Ok(key.clone());
    }
    let path = config.data_dir.join("admin.key");
    if path.exists() {
        let key = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        println!("zhifu: admin key in {}", path.display());
        return Ok(key.trim().to_string());
    }
    let key = new_key("zk_admin_").map_err(|e| anyhow::anyhow!(e.message))?;
    write_private(&path, &key)?;
    println!("zhifu: new admin key (also written to {}): {key}", path.display());
    Ok(key)
}

/// The server's secret, made on the first start (mode 0600).
fn server_secret(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join("server.secret");
    if !path.exists() {
        let secret = new_key("").map_err(|e| anyhow::anyhow!(e.message))?;
        write_private(&path, &secret)?;
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{} must hold 32 bytes of hex", path.display()))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

/// With the real clock, what falls due (bank settlements) runs every second.
fn spawn_ticker(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if state.clock.is_simulated() {
            return;
        }
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            if let Err(error) = state.submit(None, Action::Tick).await {
                eprintln!("zhifu: tick failed: {}", error.message);
            }
        }
    })
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

pub fn router(state: Arc<AppState>, config: &ServerConfig) -> Router {
    let timeout = config.request_timeout;
    crate::routes::routes()
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .layer(middleware::from_fn(move |request: Request, next: Next| with_timeout(timeout, request, next)))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(CountingRequestId::default()))
        .with_state(state)
}

/// Request ids: a counter per process, prefixed so they read as ids.
#[derive(Clone, Default)]
struct CountingRequestId(Arc<AtomicU64>);

impl MakeRequestId for CountingRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let number = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        HeaderValue::from_str(&format!("req_{number}")).ok().map(RequestId::new)
    }
}

async fn with_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request took too long").into_response(),
    }
}

/// Counts requests and their latency by route and status, and logs them.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let request_id = request.headers().get("x-request-id").cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    state.metrics.record(method.as_str(), route, status, elapsed);
    let request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(request_id, method = %method, route, status, latency_us = elapsed.as_micros() as u64, "request");
    response
}
