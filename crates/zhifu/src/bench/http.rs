//! `zhifu bench http`: a real `zhifu serve` process on loopback, driven by
//! concurrent connections from this process: `GET /healthz` first (the HTTP
//! stack alone, the baseline), then `POST /v1/transfers` between users
//! (auth, JSON, a platform command, a durable group commit, the answer),
//! then merchant trades created and paid (two durable commands each).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
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
    if let Some(line) = metrics.lines().find(|l| l.starts_with("zhifu_journal_commands_per_fsync ")) {
        println!("\nserver: {line}");
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
    let health =
        run_phase(Phase::Health, args, client.clone(), base, Arc::clone(&users), Arc::clone(&merchants)).await?;
    let transfers =
        run_phase(Phase::Transfers, args, client.clone(), base, Arc::clone(&users), Arc::clone(&merchants)).await?;
    let trades = run_phase(Phase::Trades, args, client.clone(), base, users, merchants).await?;
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
    client: reqwest::Client,
    base: &str,
    users: Arc<Vec<(String, String)>>,
    merchants: Arc<Vec<String>>,
) -> anyhow::Result<PhaseReport> {
    let name = phase.name();
    let count = if phase == Phase::Trades { args.trades } else { args.requests };
    let remaining = Arc::new(AtomicU64::new(count));
    let errors = Arc::new(AtomicU64::new(0));
    let bar = super::progress_bar(count, name.split(' ').next().unwrap_or("phase"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let (client, users, merchants, remaining, errors, bar) = (
            client.clone(),
            Arc::clone(&users),
            Arc::clone(&merchants),
            Arc::clone(&remaining),
            Arc::clone(&errors),
            bar.clone(),
        );
        let base = base.to_string();
        let seed = args.seed.wrapping_add(connection as u64 * 7919);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut pay_latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut serial = 0u64;
            while remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                let sent = Instant::now();
                serial += 1;
                let ok = if phase == Phase::Trades {
                    let merchant = &merchants[rng.below(merchants.len() as u64) as usize];
                    let buyer = &users[rng.below(users.len() as u64) as usize].1;
                    let out_trade_no = format!("c{connection}-{serial}");
                    let body = requests::NewTradeBody {
                        out_trade_no,
                        amount: 1 + rng.below(100_000),
                        subject: "bench".to_string(),
                        mode: "instant".to_string(),
                        buyer: None,
                        auto_confirm_days: None,
                        expire_minutes: None,
                        campaign: None,
                    };
                    match client.post(format!("{base}/v1/trades")).bearer_auth(merchant).json(&body).send().await {
                        Ok(response) if response.status().as_u16() == 201 => {
                            let trade: Value = response.json().await.unwrap_or_default();
                            let trade_no = trade["trade_no"].as_str().unwrap_or_default().to_string();
                            let pay_sent = Instant::now();
                            let paid = client
                                .post(format!("{base}/v1/trades/{trade_no}/pay"))
                                .bearer_auth(buyer)
                                .json(&requests::PayBody { source: None, coupon: None })
                                .send()
                                .await;
                            pay_latency.saturating_record(pay_sent.elapsed().as_micros() as u64);
                            matches!(paid, Ok(r) if r.status().as_u16() == 200)
                        }
                        _ => false,
                    }
                } else if phase == Phase::Transfers {
                    let from = rng.below(users.len() as u64) as usize;
                    let to = (from + 1 + rng.below(users.len() as u64 - 1) as usize) % users.len();
                    let body =
                        requests::NewTransfer { to: users[to].0.clone(), amount: 1 + rng.below(100_000), memo: None };
                    let response = client
                        .post(format!("{base}/v1/transfers"))
                        .bearer_auth(&users[from].1)
                        .json(&body)
                        .send()
                        .await;
                    matches!(response, Ok(r) if r.status().as_u16() == 201)
                } else {
                    matches!(client.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
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
