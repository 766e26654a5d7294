//! The server's shared state, the router with its layers, and `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use journal::{Durable, Options, StateMachine};
use ledger::LedgerConfig;
use platform::{Action, Command, Outcome, Platform, PlatformConfig, Timestamp};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};

use crate::auth::{hash_key, new_key};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::limits::{Limiters, RateLimits};
use crate::listener::{ConnectionLimits, Refusals};
use crate::metrics::Metrics;

/// Where the journal's log is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// Segment files in the data directory.
    Embedded,
    /// A PostgreSQL database (libpq's URI) that several nodes may share.
    Postgres { url: String },
}

/// How the server is set up; every limit is named here.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// The base of URLs this node hands out, and its name as a leader
    /// (`None`: `http://<listen address>`).
    pub public_url: Option<String>,
    /// The admin key; `None`: the one in `<data-dir>/admin.key`, made on first start.
    pub admin_key: Option<String>,
    /// `None`: real time; `Some(start)`: simulated time from `start` (ns since the epoch).
    pub simulated_clock_start: Option<u64>,
    /// Requests a second per API key and per client address (bursts of twice that; 0: none).
    pub rate_limits: RateLimits,
    /// Open connections, and how long a client may take to send headers.
    pub connections: ConnectionLimits,
    /// The largest request body accepted.
    pub body_limit_bytes: usize,
    /// A body not received in full within this is answered `408`.
    pub body_read_timeout: Duration,
    /// A request still unanswered after this is answered `503 overloaded`
    /// if it had not submitted a command, else `504 outcome_unknown`.
    pub request_timeout: Duration,
    /// Deliver webhooks and notifications to loopback and private addresses
    /// even when listening on a public one (see `webhooks::Destinations`).
    pub webhook_allow_private: bool,
    pub platform: PlatformConfig,
    /// Transfers older than this (clock time) leave memory for the history file.
    pub memory_horizon_seconds: u64,
    /// A snapshot after this many journal records, and once the log since
    /// the last one is this percent of its size, or once applying the
    /// commands since took this multiple of writing it (see `journal::Options`).
    pub snapshot_every_records: u64,
    pub snapshot_log_percent: u64,
    pub snapshot_apply_multiple: u32,
    /// Fault injection (tests of fail-stop): see `journal::Options::panic_before_applying`.
    pub fault_panic_at_sequence: Option<u64>,
    /// With a shared store: how long this node's lead lasts past each renewal.
    pub store_lease: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./zhifu-data"),
            store: StoreConfig::Embedded,
            public_url: None,
            admin_key: None,
            simulated_clock_start: None,
            rate_limits: RateLimits { per_key: 10_000, per_address: 20_000 },
            connections: ConnectionLimits {
                connections_max: 10_000,
                per_address_max: 512,
                header_read_timeout: Duration::from_secs(10),
                shutdown_grace: Duration::from_secs(10),
            },
            body_limit_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            webhook_allow_private: false,
            platform: PlatformConfig::default(),
            memory_horizon_seconds: 3_600,
            snapshot_every_records: 100_000,
            snapshot_log_percent: 50,
            snapshot_apply_multiple: 10,
            fault_panic_at_sequence: None,
            store_lease: journal::postgres_lease_default(),
        }
    }
}

pub struct AppState {
    pub store: Durable<Platform>,
    pub clock: Clock,
    pub admin_key_hash: [u8; 32],
    /// The platform's secret (journaled, so the same on every node): derives
    /// keys that must come out the same on a retried request, and public ids.
    secret: [u8; 32],
    pub ids: crate::ids::PublicIds,
    pub limiters: Limiters,
    pub metrics: Metrics,
    /// Connections turned away at the listener's bounds.
    pub refusals: Arc<Refusals>,
    /// Where webhooks and notifications may be sent.
    pub destinations: crate::webhooks::Destinations,
    /// Signs the Alipay-compatible gateway's answers: the key in the
    /// platform's state, made on first use (see `AppState::gateway_key`).
    gateway_key: std::sync::OnceLock<crate::gateway::SigningKeyPair>,
    /// Signatures of the gateway's fixed answers to unverified requests.
    pub gateway_signatures: crate::gateway::SignatureCache,
    /// Staff sessions signed out on this node.
    pub sessions: crate::auth::Sessions,
    /// Argon2 hashings at once (each takes 19 MiB and tens of milliseconds):
    /// a flood of sign-ins waits here instead of exhausting memory.
    pub password_work: tokio::sync::Semaphore,
    /// Webhook hosts left alone for a while after failing.
    pub delivery_pauses: crate::webhooks::Pauses,
    /// The base of the URLs zhifu hands out (`--public-url`; QR codes, redirects).
    pub public_url: String,
    /// Payments per second for the console's live view.
    pub pulse: crate::pulse::Pulse,
}

impl AppState {
    /// HMAC-SHA256 under the server's secret of a purpose and two parts.
    pub fn derive(&self, purpose: &[u8], first: &[u8], second: &[u8]) -> Result<[u8; 32], ApiError> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.secret)
            .map_err(|_| ApiError::internal("the platform's secret is unusable"))?;
        for part in [purpose, b"\0", first, b"\0", second] {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }

    /// Whether this node leads its store (and so takes writes).
    pub fn leads(&self) -> bool {
        self.store.health().role == journal::Lead::Leader
    }

    /// The platform's signing key for the gateway: from the platform's
    /// state, or made now and journaled (blocking: key generation and a
    /// durable command; call it off the async workers).
    pub fn gateway_key(&self) -> anyhow::Result<&crate::gateway::SigningKeyPair> {
        if let Some(key) = self.gateway_key.get() {
            return Ok(key);
        }
        let pem = match self.store.read(|p| p.gateway_key().map(str::to_string)) {
            Some(pem) => pem,
            None => {
                let (_, pem) = crate::gateway::SigningKeyPair::generate()?;
                let action = Action::InitializeGatewayKey { private_key_pem: pem };
                self.store.submit(Command { now: self.clock.now(), idempotency: None, action })?;
                // Whichever node's key was journaled first is the platform's.
                self.store.read(|p| p.gateway_key().map(str::to_string)).context("the gateway key was not kept")?
            }
        };
        let key = crate::gateway::SigningKeyPair::from_pem(&pem)?;
        Ok(self.gateway_key.get_or_init(|| key))
    }

    /// Submits an action with the clock's time and waits (without holding a
    /// thread) until it is durable and applied.
    pub async fn submit(
        self: &Arc<AppState>,
        idempotency: Option<platform::IdempotencyTag>,
        action: Action,
    ) -> Result<platform::Outcome, ApiError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let pays =
            matches!(action, Action::PayTrade { .. } | Action::CreateAndPayTrade { .. } | Action::PayWithCode { .. });
        let (now, started) = (self.clock.now(), std::time::Instant::now());
        let command = Command { now, idempotency, action };
        self.store
            .submit_with(command, move |outcome| {
                let _ = sender.send(outcome);
            })
            .map_err(ApiError::from_journal)?;
        // From here on the command may be applied: a request that stops
        // waiting must say the outcome is unknown, never that nothing was done.
        let _ = SUBMITTED.try_with(|submitted| submitted.store(true, Ordering::Release));
        match receiver.await {
            Ok(Ok(outcome)) => {
                if pays
                    && let platform::Outcome::TradeUpdated(trade) = &outcome
                    && trade.paid_at == Some(now)
                {
                    self.pulse.record(trade.amount.get(), started.elapsed());
                }
                Ok(outcome)
            }
            // Refused, or the log failed before it held the command: never done.
            Ok(Err(error)) => Err(ApiError::from_journal(error)),
            Err(_) => Err(ApiError::unavailable("the journal's writer stopped before answering")),
        }
    }
}

/// Starts the server and runs until SIGINT or SIGTERM; in-flight requests
/// and their commands finish before it returns.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let (state, listener) = start(&config).await?;
    let address = listener.local_addr()?;
    // The command's output (scripts read it), not a log line.
    println!("zhifu listening on http://{address}");
    tracing::info!(%address, "listening");
    let ticker = spawn_ticker(Arc::clone(&state));
    let dispatcher = crate::webhooks::spawn_dispatcher(Arc::clone(&state));
    let forgetter = spawn_limit_forgetter(Arc::clone(&state));
    let router = router(Arc::clone(&state), &config);
    crate::listener::serve(listener, router, config.connections, Arc::clone(&state.refusals), shutdown_signal()).await;
    for task in [ticker, dispatcher, forgetter] {
        task.abort();
        let _ = task.await;
    }
    // The last reference: dropping the store finishes its queued commands.
    if let Ok(state) = Arc::try_unwrap(state) {
        tokio::task::spawn_blocking(move || state.store.shutdown()).await?;
    }
    tracing::info!("stopped: every command taken is applied and durable");
    Ok(())
}

async fn start(config: &ServerConfig) -> anyhow::Result<(Arc<AppState>, tokio::net::TcpListener)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    let admin_key = admin_key(config)?;
    let options = Options {
        snapshot_every_records: config.snapshot_every_records.max(1),
        snapshot_log_percent: config.snapshot_log_percent,
        snapshot_apply_multiple: config.snapshot_apply_multiple,
        ledger: LedgerConfig {
            id_horizon_ns: Some(config.memory_horizon_seconds.max(1).saturating_mul(1_000_000_000)),
        },
        // A shared store takes a round trip a group: bigger groups carry more.
        group_batches_max: if config.store == StoreConfig::Embedded { 64 } else { 1_024 },
        panic_before_applying: config.fault_panic_at_sequence,
        ..Options::default()
    };
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    let bound = listener.local_addr().unwrap_or(config.listen);
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{bound}"));
    let asked = options.ledger;
    let (store, report) = open_store(config, options, &public_url).await?;
    if report.ledger != asked {
        tracing::warn!(
            memory_horizon_ns = ?report.ledger.id_horizon_ns,
            asked_ns = ?asked.id_horizon_ns,
            "the data directory keeps the memory horizon it was created with, not --memory-horizon-seconds"
        );
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        records = report.last_sequence,
        snapshot = ?report.snapshot_sequence,
        "recovered"
    );
    let clock = match config.simulated_clock_start {
        Some(start) => {
            Clock::simulated(start.max(store.read(|p| p.ledger().last_timestamp().max(p.last_command_at().nanos()))))
        }
        None => Clock::Real,
    };
    let (store, secret) = platform_secret(store, clock.now()).await?;
    let state = Arc::new(AppState {
        store,
        clock,
        admin_key_hash: hash_key(&admin_key),
        ids: crate::ids::PublicIds::new(&secret),
        secret,
        limiters: Limiters::new(config.rate_limits),
        metrics: Metrics::default(),
        refusals: Arc::default(),
        destinations: crate::webhooks::Destinations::for_listener(config.listen, config.webhook_allow_private),
        gateway_key: std::sync::OnceLock::new(),
        gateway_signatures: crate::gateway::SignatureCache::default(),
        sessions: crate::auth::Sessions::default(),
        password_work: tokio::sync::Semaphore::new(crate::auth::PASSWORD_WORK_MAX),
        delivery_pauses: crate::webhooks::Pauses::default(),
        public_url: public_url.trim_end_matches('/').to_string(),
        pulse: crate::pulse::Pulse::default(),
    });
    configure(&state, &config.platform).await?;
    Ok((state, listener))
}

/// The admin key: given, or kept in `<data-dir>/admin.key` (mode 0600),
/// made and printed once on the first start.
fn admin_key(config: &ServerConfig) -> anyhow::Result<String> {
    if let Some(key) = &config.admin_key {
        tracing::info!("the admin key is the one given (--admin-key / ZHIFU_ADMIN_KEY)");
        return Ok(key.clone());
    }
    let path = config.data_dir.join("admin.key");
    if path.exists() {
        let key = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        tracing::info!(path = %path.display(), "the admin key is the one in this file");
        return Ok(key.trim().to_string());
    }
    let key = new_key("zk_admin_").map_err(|e| anyhow::anyhow!(e.message))?;
    write_private(&path, &key)?;
    // Shown once, on the command's output: a key never goes into a log.
    println!("zhifu: new admin key (also written to {}): {key}", path.display());
    Ok(key)
}

/// How long a node waits between attempts to reach its store at start.
const STORE_RETRY_AT_START: Duration = Duration::from_secs(1);

/// The journal on the configured store. A PostgreSQL store that cannot be
/// reached yet is tried again every second (saying so), as a node that
/// starts before its database would be.
async fn open_store(
    config: &ServerConfig,
    options: Options,
    public_url: &str,
) -> anyhow::Result<(Durable<Platform>, journal::RecoveryReport)> {
    let data_dir = config.data_dir.clone();
    let url = match &config.store {
        StoreConfig::Embedded => {
            return tokio::task::spawn_blocking(move || Durable::<Platform>::open(&data_dir, options))
                .await?
                .with_context(|| format!("open the data directory {}", config.data_dir.display()));
        }
        StoreConfig::Postgres { url } => url.clone(),
    };
    loop {
        let (url, node, data_dir, options) = (url.clone(), public_url.to_string(), data_dir.clone(), options.clone());
        let lease = config.store_lease;
        let opened = tokio::task::spawn_blocking(move || {
            let log = journal::PostgresLog::connect(&url, &node, lease)?;
            Durable::<Platform>::open_with(&data_dir, Box::new(log), options)
        })
        .await?;
        match opened {
            Ok(opened) => return Ok(opened),
            Err(journal::JournalError::Unavailable(problem)) => {
                tracing::warn!(%problem, "the store cannot be reached yet; trying again");
                tokio::time::sleep(STORE_RETRY_AT_START).await;
            }
            Err(error) => return Err(error).context("open the store"),
        }
    }
}

/// Journals the platform's settings when they differ from the configured
/// ones; a follower leaves that to the leader.
async fn configure(state: &Arc<AppState>, platform: &PlatformConfig) -> anyhow::Result<()> {
    if state.store.read(|p| p.config() == platform) {
        return Ok(());
    }
    match state.submit(None, Action::Configure(platform.clone())).await {
        Ok(_) => Ok(()),
        Err(error) if error.code == "not_leader" => Ok(()),
        Err(error) => Err(anyhow::anyhow!(error.message)),
    }
}

/// The platform's secret: made at random on the very first start and
/// journaled (`Action::InitializeSecret`), so that every later start, every
/// replay and every node of a replicated store has the same. A node that
/// follows waits until the leader has made it.
async fn platform_secret(
    mut store: Durable<Platform>,
    now: Timestamp,
) -> anyhow::Result<(Durable<Platform>, [u8; 32])> {
    loop {
        if let Some(secret) = store.read(|p| p.secret().copied()) {
            return Ok((store, secret));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|error| anyhow::anyhow!("no randomness for the platform's secret: {error}"))?;
        let command = Command { now, idempotency: None, action: Action::InitializeSecret { secret } };
        let (back, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = store.submit(command);
            (store, outcome)
        })
        .await?;
        store = back;
        match outcome {
            // Made here, or by another node first: read it back either way.
            Ok(_) => {}
            Err(journal::JournalError::NotLeader { .. }) | Err(journal::JournalError::Unavailable(_)) => {
                tokio::time::sleep(SECRET_WAIT).await;
            }
            Err(error) => return Err(error).context("journal the platform's secret"),
        }
    }
}

/// How often a node without the platform's secret looks for it again.
const SECRET_WAIT: Duration = Duration::from_millis(200);

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

/// With the real clock, what falls due (bank settlements, expiries,
/// auto-confirmations) runs every second; a tick does a bounded share, and
/// while more is due the next one follows at once (requests go between).
fn spawn_ticker(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if state.clock.is_simulated() {
            return;
        }
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            while state.leads() {
                match state.submit(None, Action::Tick).await {
                    Ok(Outcome::Ticked { more_due: true, .. }) => {}
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(error = %error.message, "tick failed");
                        break;
                    }
                }
            }
        }
    })
}

/// How often idle rate-limit buckets are dropped.
const LIMIT_BUCKETS_FORGET_INTERVAL: Duration = Duration::from_secs(60);

fn spawn_limit_forgetter(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(LIMIT_BUCKETS_FORGET_INTERVAL);
        loop {
            interval.tick().await;
            state.limiters.forget_idle();
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
    // Outermost first: request ids, then observe (so every answer is
    // counted and logged, a timed-out one too), the per-address limit, the
    // timeout, the body's limits.
    let api = crate::routes::routes().with_state(Arc::clone(&state));
    let web = Arc::new(crate::web::Web { state: Arc::clone(&state), api: crate::web::Api::new(api.clone()) });
    let pages = Router::new()
        .route("/", axum::routing::get(crate::console::start))
        .route("/desk/style.css", axum::routing::get(crate::desk::stylesheet))
        .route("/docs/api", axum::routing::get(crate::reference::page))
        .merge(crate::console::routes())
        .merge(crate::portal::routes())
        .with_state(web);
    api.merge(pages)
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(config.body_read_timeout))
        .layer(middleware::from_fn(move |request: Request, next: Next| with_timeout(timeout, request, next)))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), only_on_leader))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), limit_address))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(CountingRequestId::default()))
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

tokio::task_local! {
    /// Set by `AppState::submit` once the request's command is in the
    /// journal's hands (so a timeout must not say nothing was done).
    static SUBMITTED: Arc<AtomicBool>;
}

/// A request still unanswered after `timeout`: `503 overloaded` if it had
/// submitted nothing, `504 outcome_unknown` if its command may be applied.
async fn with_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    let submitted = Arc::new(AtomicBool::new(false));
    match tokio::time::timeout(timeout, SUBMITTED.scope(Arc::clone(&submitted), next.run(request))).await {
        Ok(response) => response,
        Err(_) if submitted.load(Ordering::Acquire) => ApiError::outcome_unknown().into_response(),
        Err(_) => ApiError::overloaded().into_response(),
    }
}

/// On a follower, the API and the gateway answer `503 not_leader` (with
/// the leader's URL when known): only the leader changes or reads state.
async fn only_on_leader(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let served_by_leader = path.starts_with("/v1/") || path == "/gateway.do";
    if served_by_leader && let journal::Lead::Follower { leader } = state.store.health().role {
        return ApiError::not_leader(leader).into_response();
    }
    next.run(request).await
}

/// Requests from one address beyond its rate: `429`.
async fn limit_address(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let address = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    if address.is_some_and(|address| !state.limiters.allow_address(address)) {
        return crate::auth::rate_limited("too many requests from this address").into_response();
    }
    next.run(request).await
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
    let latency_us = elapsed.as_micros() as u64;
    match response.extensions().get::<crate::error::InternalDetail>() {
        Some(detail) => {
            tracing::error!(request_id, method = %method, route, status, latency_us, detail = %detail.0, "request failed")
        }
        None => tracing::info!(request_id, method = %method, route, status, latency_us, "request"),
    }
    response
}
