//! `zhifu serve`: the HTTP API on the embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use platform::PlatformConfig;
use server::{ConnectionLimits, RateLimits, ServerConfig, StoreConfig};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the journal, snapshots, history and keys live.
    #[arg(long, default_value = "./zhifu-data")]
    data_dir: PathBuf,
    /// `embedded` (the default: the log in the data directory), or a
    /// PostgreSQL URL (`postgresql://user@host1:port1,host2:port2/db?target_session_attrs=read-write`)
    /// that several nodes share, one leading.
    #[arg(long, default_value = "embedded")]
    store: String,
    /// The base of the URLs this node hands out, and its name as leader
    /// (default: http://<listen address>).
    #[arg(long)]
    public_url: Option<String>,
    /// The admin key; without it one is made on first start and kept in <data-dir>/admin.key.
    #[arg(long, env = "ZHIFU_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// `real`, or `simulated`: time moves only by POST /v1/admin/clock.
    #[arg(long, default_value = "real")]
    clock: String,
    /// Where simulated time starts (RFC 3339).
    #[arg(long, default_value = "2013-11-11T00:00:00+08:00")]
    clock_start: String,
    /// Requests a second per API key (bursts of twice that; 0: no limit).
    #[arg(long, default_value_t = 10_000)]
    rate_limit: u32,
    /// Requests a second per client address (bursts of twice that; 0: no limit).
    #[arg(long, default_value_t = 20_000)]
    rate_limit_per_address: u32,
    /// Open connections at once (also kept below the process's file limit).
    #[arg(long, default_value_t = 10_000)]
    connections_max: usize,
    /// Open connections at once from one client address (raise it behind a proxy).
    #[arg(long, default_value_t = 512)]
    connections_per_address_max: usize,
    /// A client has this long to send a request's headers (and an idle
    /// kept-alive connection this long to start the next), in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    header_read_timeout_ms: u64,
    /// A request body not received in full after this many milliseconds gets 408.
    #[arg(long, default_value_t = 10_000)]
    body_read_timeout_ms: u64,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    body_limit: usize,
    /// Requests unanswered after this many milliseconds get 503 overloaded if
    /// they had submitted nothing, else 504 outcome_unknown.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Deliver webhooks and notifications to loopback and private addresses
    /// although listening on a public address.
    #[arg(long)]
    webhook_allow_private: bool,
    /// Clock seconds between a withdrawal and the bank's answer.
    #[arg(long, default_value_t = 3_600)]
    withdrawal_settle_seconds: u64,
    /// Share of withdrawals the simulated bank fails, in basis points.
    #[arg(long, default_value_t = 0)]
    bank_failure_bps: u32,
    /// Yu'e Bao redemptions per user per business day, in fen (default 50,000 yuan).
    #[arg(long, default_value_t = 5_000_000)]
    fund_redeem_daily_limit: u64,
    /// Transfers older than this many clock seconds leave memory (they stay on
    /// disk). Fixed when the data directory (or shared log) is created: a
    /// later start keeps the first one, since it decides which retries expire.
    #[arg(long, default_value_t = 3_600)]
    memory_horizon_seconds: u64,
    /// A snapshot after this many journal records.
    #[arg(long, default_value_t = 100_000)]
    snapshot_every: u64,
    /// ...and once the log written since the last snapshot is this percent
    /// of its size, so that snapshots of a large state cost at most twice
    /// the log (0: by the record count alone).
    #[arg(long, default_value_t = 50)]
    snapshot_log_percent: u64,
    /// ...or once applying the commands since the last snapshot took this
    /// many times as long as writing it. A restart replays that work about
    /// twice as slowly as the run applied it, so its replay stays within
    /// about twice this many snapshot writes (0: no such rule).
    #[arg(long, default_value_t = 10)]
    snapshot_apply_multiple: u32,
    /// With a PostgreSQL store: how long this node's lead lasts past each
    /// renewal, in milliseconds (a follower takes over this long after the
    /// leader stops).
    #[arg(long, default_value_t = 10_000)]
    store_lease_ms: u64,
    /// Fault injection for tests of fail-stop: panic just before applying
    /// the journal record with this sequence.
    #[arg(long, hide = true)]
    fault_panic_at_sequence: Option<u64>,
}

/// `embedded`, or a PostgreSQL URL.
pub fn store_of(text: &str) -> anyhow::Result<StoreConfig> {
    if text == "embedded" {
        return Ok(StoreConfig::Embedded);
    }
    if text.starts_with("postgresql://") || text.starts_with("postgres://") {
        return Ok(StoreConfig::Postgres { url: text.to_string() });
    }
    bail!("--store {text}: use embedded, or a postgresql:// URL")
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let store = store_of(&args.store)?;
    let simulated_clock_start = match args.clock.as_str() {
        "real" => None,
        "simulated" => match server::clock::parse_rfc3339(&args.clock_start) {
            Some(start) => Some(start),
            None => bail!("--clock-start must be an RFC 3339 time, such as 2013-11-11T00:00:00+08:00"),
        },
        other => bail!("--clock {other}: use real or simulated"),
    };
    if args.bank_failure_bps > 10_000 {
        bail!("--bank-failure-bps must be at most 10000");
    }
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        store,
        public_url: args.public_url,
        fault_panic_at_sequence: args.fault_panic_at_sequence,
        store_lease: Duration::from_millis(args.store_lease_ms.max(3_000)),
        admin_key: args.admin_key.filter(|key| !key.is_empty()),
        simulated_clock_start,
        rate_limits: RateLimits { per_key: args.rate_limit, per_address: args.rate_limit_per_address },
        connections: ConnectionLimits {
            connections_max: crate::host::connections_the_file_limit_allows(args.connections_max.max(1)),
            per_address_max: args.connections_per_address_max.max(1),
            header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
            shutdown_grace: Duration::from_secs(10),
        },
        body_limit_bytes: args.body_limit,
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
        webhook_allow_private: args.webhook_allow_private,
        platform: PlatformConfig {
            withdrawal_settle_seconds: args.withdrawal_settle_seconds,
            bank_failure_bps: args.bank_failure_bps,
            bank_seed: 0,
            fund_redeem_daily_limit: platform::Fen::new(args.fund_redeem_daily_limit),
        },
        memory_horizon_seconds: args.memory_horizon_seconds,
        snapshot_every_records: args.snapshot_every,
        snapshot_log_percent: args.snapshot_log_percent,
        snapshot_apply_multiple: args.snapshot_apply_multiple,
    };
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        // A log that cannot be written (its disk full) must not stop the
        // server: the subscriber would report it with `eprint!`, which panics.
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // What zhifu writes (the journal with its secrets, keys) is the owner's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(server::serve(config))
}
