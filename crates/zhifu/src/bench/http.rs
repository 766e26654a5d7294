//! `zhifu bench http`: a real `zhifu serve` process on loopback, driven by
//! concurrent connections from this process: `GET /healthz` first (the HTTP
//! stack alone, the baseline), then `POST /v1/transfers` between users
//! (auth, JSON, a platform command, a durable group commit, the answer),
//! then merchant trades created and paid (two durable commands each).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use server::requests;

use super::workload::Rng;

#[derive(clap::Args)]
pub struct HttpBenchArgs {
    /// Requests per phase.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// Concurrent connections (each one request at a time).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Users the transfers move between.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Trades created and paid (instant) in the last phase.
    #[arg(long, default_value_t = 50_000)]
    trades: u64,
    /// Merchants the trades are spread over.
    #[arg(long, default_value_t = 100)]
    merchants: usize,
    /// Threads of the load generator (the server gets the rest of the machine).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    #[arg(long, default_value = "./zhifu-bench-data")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The server's store: `embedded`, or a PostgreSQL URL of an empty
    /// database (the server alone on it, so it leads at once).
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Webhook endpoints of every merchant, two each, for every event:
    /// `none`; `healthy` (they answer 200 at once); `slow-and-dead` (one
    /// answers after 10 seconds, the other's port refuses connections).
    #[arg(long, value_enum, default_value_t = Webhooks::None)]
    webhooks: Webhooks,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Webhooks {
    None,
    Healthy,
    SlowAndDead,
}

/// How long the slow endpoint takes to answer.
const SLOW_ENDPOINT_WAIT: Duration = Duration::from_secs(10);

pub(super) const ADMIN_KEY: &str = "bench-admin-key";

pub(super) struct ServerProcess(Child);

impl ServerProcess {
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct PhaseReport {
    name: &'static str,
    requests: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// Of the trades phase: `POST /v1/trades/{id}/pay` alone.
    pay_latency_us: Option<Histogram<u64>>,
    errors: u64,
}

pub fn run(args: &HttpBenchArgs) -> anyhow::Result<()> {
    ensure!(args.users >= 2 && args.connections >= 1, "--users must be at least 2 and --connections at least 1");
    let directory = args.data_dir.join("bench-http");
    if directory.exists() {
        std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
    }
    let (server, base) = start_server(&directory, &args.store)?;
    println!("zhifu bench http: a zhifu serve process on loopback, driven from this process");
    println!("machine: {}", super::machine_line());
    println!(
        "{} requests per phase, {} connections, {} users, {} load-generator thread(s), server at {base}\n",
        args.requests, args.connections, args.users, args.client_threads
    );
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads.max(1)).enable_all().build()?;
    let reports = runtime.block_on(drive(args, &base))?;
    println!(
        "{:<34} {:>10} {:>12} {:>9} {:>9} {:>9} {:>8}",
        "phase", "requests", "requests/s", "p50", "p99", "p999", "errors"
    );
    for report in &reports {
        let h = &report.latency_us;
        println!(
            "{:<34} {:>10} {:>12.0} {:>7}us {:>7}us {:>7}us {:>8}",
            report.name,
            report.requests,
            report.requests as f64 / report.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            report.errors
        );
        if let Some(pay) = &report.pay_latency_us {
            let (p50, p99, p999) =
                (pay.value_at_quantile(0.5), pay.value_at_quantile(0.99), pay.value_at_quantile(0.999));
            println!("{:<34} {:>10} {:>12} {p50:>7}us {p99:>7}us {p999:>7}us", "  of which POST …/pay", pay.len(), "");
        }
    }
    if args.webhooks != Webhooks::None {
        for line in metrics_lines(&runtime, &base)? {
            println!("server: {line}");
        }
    }
    let metrics = runtime.block_on(async { reqwest::get(format!("{base}/metrics")).await?.text().await })?;
    println!();
    // Group commits' size, and the snapshots that stall the writer (the p999).
    for prefix in ["zhifu_journal_commands_per_fsync ", "zhifu_journal_snapshots_total "] {
        if let Some(line) = metrics.lines().find(|l| l.starts_with(prefix)) {
            println!("server: {line}");
        }
    }
    drop(server);
    std::fs::remove_dir_all(&directory).with_context(|| format!("remove {}", directory.display()))?;
    Ok(())
}

/// The server's webhook figures: deliveries by outcome, queue depths.
fn metrics_lines(runtime: &tokio::runtime::Runtime, base: &str) -> anyhow::Result<Vec<String>> {
    let page = runtime.block_on(async { reqwest::get(format!("{base}/metrics")).await?.text().await })?;
    let webhooks = |line: &&str| {
        line.starts_with("zhifu_webhook_deliveries_total") || line.starts_with("zhifu_webhook_undelivered")
    };
    Ok(page.lines().filter(webhooks).map(str::to_string).collect())
}

/// A webhook receiver on loopback that reads each request and answers 200
/// after `wait`.
async fn receiver(wait: Duration) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buffer).await;
                tokio::time::sleep(wait).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    Ok(url)
}

/// The two endpoints each merchant gets.
async fn endpoints(webhooks: Webhooks) -> anyhow::Result<Vec<String>> {
    Ok(match webhooks {
        Webhooks::None => Vec::new(),
        Webhooks::Healthy => vec![receiver(Duration::ZERO).await?, receiver(Duration::ZERO).await?],
        Webhooks::SlowAndDead => {
            // A port bound and let go at once: connections to it are refused.
            let dead = std::net::TcpListener::bind("127.0.0.1:0")?;
            let dead_url = format!("http://{}/dead", dead.local_addr()?);
            drop(dead);
            vec![receiver(SLOW_ENDPOINT_WAIT).await?, dead_url]
        }
    })
}

pub(super) fn start_server(directory: &std::path::Path, store: &str) -> anyhow::Result<(ServerProcess, String)> {
    start_server_with(directory, store, &[])
}

/// The server, with `extra` arguments (`--clock simulated`, …).
pub(super) fn start_server_with(
    directory: &std::path::Path,
    store: &str,
    extra: &[&str],
) -> anyhow::Result<(ServerProcess, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-key",
            ADMIN_KEY,
            "--rate-limit",
            "0",
            "--rate-limit-per-address",
            "0",
            "--store",
            store,
            "--data-dir",
        ])
        .arg(directory)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start zhifu serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let server = ServerProcess(child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(address) = line.strip_prefix("zhifu listening on ") {
                    break address.to_string();
                }
            }
            _ => bail!("zhifu serve stopped before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((server, base))
}

async fn drive(args: &HttpBenchArgs, base: &str) -> anyhow::Result<Vec<PhaseReport>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let mut users = Vec::with_capacity(args.users);
    for index in 0..args.users {
        let user = requests::NewUser { name: format!("user {index}"), login: None, password: None };
        let created = post(&client, base, "/v1/users", ADMIN_KEY, &user).await?;
        let key = created["api_key"].as_str().context("api_key")?.to_string();
        let top_up = requests::NewTopUp { amount: 100_000_000_000, bank: "ICBC".to_string() };
        post(&client, base, "/v1/topups", &key, &top_up).await?;
        users.push((created["id"].as_str().context("id")?.to_string(), key));
    }
    let mut merchants = Vec::with_capacity(args.merchants.max(1));
    for index in 0..args.merchants.max(1) {
        let merchant = requests::NewMerchant {
            name: format!("shop {index}"),
            fee_rate_bps: None,
            webhook_url: None,
            app_public_key: None,
            login: None,
            password: None,
        };
        let created = post(&client, base, "/v1/merchants", ADMIN_KEY, &merchant).await?;
        merchants.push(created["api_key"].as_str().context("api_key")?.to_string());
    }
    let urls = endpoints(args.webhooks).await?;
    if !urls.is_empty() {
        for key in &merchants {
            for url in &urls {
                let endpoint = serde_json::json!({ "url": url, "events": ["*"] });
                post(&client, base, "/v1/webhook-endpoints", key, &endpoint).await?;
            }
        }
    }
    let users = Arc::new(users);
    let merchants = Arc::new(merchants);
    let health = run_phase(Phase::Health, args, base, Arc::clone(&users), Arc::clone(&merchants)).await?;
    let transfers = run_phase(Phase::Transfers, args, base, Arc::clone(&users), Arc::clone(&merchants)).await?;
    let trades = run_phase(Phase::Trades, args, base, users, merchants).await?;
    let check = get(&client, base, "/v1/admin/ledger/check", ADMIN_KEY).await?;
    ensure!(check["balanced"] == Value::Bool(true), "the ledger is not balanced after the run: {check}");
    Ok(vec![health, transfers, trades])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Health,
    Transfers,
    Trades,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Health => "GET /healthz (baseline)",
            Phase::Transfers => "POST /v1/transfers (durable)",
            Phase::Trades => "trade created + paid (2 durable)",
        }
    }
}

async fn run_phase(
    phase: Phase,
    args: &HttpBenchArgs,
    base: &str,
    users: Arc<Vec<(String, String)>>,
    merchants: Arc<Vec<String>>,
) -> anyhow::Result<PhaseReport> {
    let name = phase.name();
    let count = if phase == Phase::Trades { args.trades } else { args.requests };
    let address = server_address(base)?;
    let user_auths = Arc::new(users.iter().map(|(_, key)| bearer(key)).collect::<anyhow::Result<Vec<_>>>()?);
    let merchant_auths = Arc::new(merchants.iter().map(|key| bearer(key)).collect::<anyhow::Result<Vec<_>>>()?);
    let remaining = Arc::new(AtomicU64::new(count));
    let errors = Arc::new(AtomicU64::new(0));
    let bar = super::progress_bar(count, name.split(' ').next().unwrap_or("phase"));
    // Every connection open before the clock starts, as a pool would be.
    let mut lanes = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        lanes.push(Lane::open(address).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (connection, mut lane) in lanes.into_iter().enumerate() {
        let (users, user_auths, merchant_auths, remaining, errors, bar) = (
            Arc::clone(&users),
            Arc::clone(&user_auths),
            Arc::clone(&merchant_auths),
            Arc::clone(&remaining),
            Arc::clone(&errors),
            bar.clone(),
        );
        let seed = args.seed.wrapping_add(connection as u64 * 7919);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut pay_latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut serial = 0u64;
            while remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                let sent = Instant::now();
                serial += 1;
                let ok = match phase {
                    Phase::Trades => {
                        let merchant = &merchant_auths[rng.below(merchant_auths.len() as u64) as usize];
                        let buyer = &user_auths[rng.below(user_auths.len() as u64) as usize];
                        let body = requests::NewTradeBody {
                            out_trade_no: format!("c{connection}-{serial}"),
                            amount: 1 + rng.below(100_000),
                            subject: "bench".to_string(),
                            mode: "instant".to_string(),
                            buyer: None,
                            auto_confirm_days: None,
                            expire_minutes: None,
                            campaign: None,
                        };
                        match lane.post("/v1/trades", merchant, &body).await {
                            Ok((status, answer)) if status.as_u16() == 201 => {
                                let trade: Value = serde_json::from_slice(&answer).unwrap_or_default();
                                let trade_no = trade["trade_no"].as_str().unwrap_or_default();
                                let pay_sent = Instant::now();
                                let path = format!("/v1/trades/{trade_no}/pay");
                                let paid = lane.post(&path, buyer, &requests::PayBody { source: None, coupon: None }).await;
                                pay_latency.saturating_record(pay_sent.elapsed().as_micros() as u64);
                                matches!(paid, Ok((status, _)) if status.as_u16() == 200)
                            }
                            _ => false,
                        }
                    }
                    Phase::Transfers => {
                        let from = rng.below(users.len() as u64) as usize;
                        let to = (from + 1 + rng.below(users.len() as u64 - 1) as usize) % users.len();
                        let body = requests::NewTransfer {
                            to: users[to].0.clone(),
                            amount: 1 + rng.below(100_000),
                            memo: None,
                        };
                        matches!(lane.post("/v1/transfers", &user_auths[from], &body).await, Ok((status, _)) if status.as_u16() == 201)
                    }
                    Phase::Health => {
                        matches!(lane.send(Method::GET, "/healthz", None, Bytes::new()).await, Ok((status, _)) if status.is_success())
                    }
                };
                latency.saturating_record(sent.elapsed().as_micros() as u64);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                bar.inc(1);
            }
            anyhow::Ok((latency, pay_latency))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut pay_latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        let (latency, pay) = task.await??;
        latency_us.add(latency)?;
        pay_latency_us.add(pay)?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let pay_latency_us = (phase == Phase::Trades).then_some(pay_latency_us);
    let errors = errors.load(Ordering::Relaxed);
    Ok(PhaseReport { name, requests: count, elapsed, latency_us, pay_latency_us, errors })
}

/// The server's socket address from its base URL (`http://host:port`).
fn server_address(base: &str) -> anyhow::Result<SocketAddr> {
    let authority = base.strip_prefix("http://").with_context(|| format!("not an http:// URL: {base}"))?;
    authority.parse().with_context(|| format!("not an address and port: {authority}"))
}

fn bearer(key: &str) -> anyhow::Result<HeaderValue> {
    Ok(HeaderValue::from_str(&format!("Bearer {key}"))?)
}

/// One keep-alive HTTP/1 connection of the load generator, through hyper's
/// connection API: no pool to check out of, no URL parsed per request, the
/// authorization headers made once. (reqwest's per-request work took half
/// of one of the two cores, which the server under test then lacked.)
struct Lane {
    address: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

impl Lane {
    async fn open(address: SocketAddr) -> anyhow::Result<Lane> {
        let host = HeaderValue::from_str(&address.to_string())?;
        Ok(Lane { address, host, sender: Lane::connect(address).await? })
    }

    async fn connect(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // A connection's failure shows in the request it fails (an error counted).
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn post(
        &mut self,
        path: &str,
        auth: &HeaderValue,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(Method::POST, path, Some(auth), Bytes::from(serde_json::to_vec(body)?)).await
    }

    /// Sends one request and reads its whole answer; a connection the server
    /// closed is opened again for the next request.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        if self.sender.is_closed() {
            self.sender = Lane::connect(self.address).await?;
        }
        let mut request = Request::builder().method(method).uri(path).header(header::HOST, self.host.clone());
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<Value> {
    let response = client.post(format!("{base}{path}")).bearer_auth(key).json(body).send().await?;
    let status = response.status();
    let value: Value = response.json().await?;
    ensure!(status.is_success(), "{path}: {status} {value}");
    Ok(value)
}

async fn get(client: &reqwest::Client, base: &str, path: &str, key: &str) -> anyhow::Result<Value> {
    Ok(client.get(format!("{base}{path}")).bearer_auth(key).send().await?.json().await?)
}
