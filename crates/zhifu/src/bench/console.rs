//! `zhifu bench console`: the console's and the portal's pages timed with
//! many trades in the store. A `zhifu serve` process gets `--trades` trades
//! created and paid over the API (spread over `--merchants`, the first of
//! which — the "hot" one — takes `--hot-share` of them), then each page is
//! requested one at a time and its time to the last byte recorded (on
//! loopback, the server's time plus well under a millisecond). Then the hot
//! merchant's bill of the day is downloaded (the clock is simulated: every
//! trade is on 2013-11-11, and the clock moves a day on first), with its
//! time and the server's memory while it is made.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, ensure};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

const ADMIN_KEY: &str = super::http::ADMIN_KEY;
const PASSWORD: &str = "a long bench passphrase";

#[derive(clap::Args)]
pub struct ConsoleBenchArgs {
    /// Trades created and paid before the pages are timed.
    #[arg(long, default_value_t = 1_000_000)]
    trades: u64,
    #[arg(long, default_value_t = 100)]
    merchants: usize,
    /// Of the trades, the share (percent) the first merchant takes.
    #[arg(long, default_value_t = 50)]
    hot_share: u64,
    /// Requests per page timed.
    #[arg(long, default_value_t = 50)]
    requests: u32,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value = "./zhifu-bench-data")]
    data_dir: PathBuf,
}

struct Setup {
    client: reqwest::Client,
    base: String,
    staff_cookie: String,
    portal_cookie: String,
    hot_merchant: String,
    hot_key: String,
    /// The hot merchant's gateway app: its id and key.
    hot_app: (String, server::gateway::PlatformKey),
    small_merchant: String,
    /// (trade_no, out_trade_no) of the hot merchant's newest and oldest trades.
    newest: (String, String),
    oldest: (String, String),
}

pub fn run(args: &ConsoleBenchArgs) -> anyhow::Result<()> {
    ensure!(args.merchants >= 1 && args.trades >= 2, "--merchants must be at least 1 and --trades at least 2");
    let directory = args.data_dir.join("bench-console");
    if directory.exists() {
        std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
    }
    let (server, base) = super::http::start_server_with(&directory, "embedded", &["--clock", "simulated"])?;
    println!("zhifu bench console: page times with many trades in the store");
    println!("machine: {}", super::machine_line());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let setup = runtime.block_on(set_up(args, base, &directory))?;
    println!(
        "{} trades over {} merchants, {}% at the hot one; {} requests per page, one at a time\n",
        args.trades, args.merchants, args.hot_share, args.requests
    );
    println!("{:<58} {:>9} {:>9} {:>9}", "page", "p50", "p99", "max");
    for (name, path, cookie) in pages(&setup) {
        let histogram = runtime.block_on(time_page(&setup, &path, &cookie, args.requests))?;
        println!(
            "{name:<58} {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.max() as f64 / 1000.0
        );
    }
    runtime.block_on(time_bill(&setup, &server))?;
    drop(server);
    std::fs::remove_dir_all(&directory).with_context(|| format!("remove {}", directory.display()))?;
    Ok(())
}

/// The hot merchant's bills of the day, the REST CSV and the Alipay-format
/// zip: lines (or zip bytes), time, and the server's resident memory before
/// and at most while each is made.
async fn time_bill(setup: &Setup, server: &super::http::ServerProcess) -> anyhow::Result<()> {
    let advance = setup
        .client
        .post(format!("{}/v1/admin/clock", setup.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"advance_seconds": 86_400}))
        .send()
        .await?;
    ensure!(advance.status().is_success(), "advance the clock: {}", advance.status());
    let status = format!("/proc/{}/status", server.pid());
    let (before, peak, elapsed, (bytes, lines)) = with_peak_rss(&status, async {
        let url = format!("{}/v1/bills?date=2013-11-11", setup.base);
        let response = setup.client.get(url).bearer_auth(&setup.hot_key).send().await?;
        ensure!(response.status().is_success(), "bill: {}", response.status());
        count_bytes(response).await
    })
    .await?;
    println!(
        "\nbill of the hot merchant's day (CSV): {lines} lines, {:.1} MB in {:.2} s ({:.0} lines/s); server RSS {before:.0} MiB before, at most {peak:.0} MiB while it streamed",
        bytes as f64 / 1e6,
        elapsed,
        lines as f64 / elapsed.max(f64::MIN_POSITIVE),
    );
    let (before, peak, elapsed, (bytes, _)) = with_peak_rss(&status, async {
        let answer = setup
            .gateway(
                "alipay.data.dataservice.bill.downloadurl.query",
                json!({"bill_type": "trade", "bill_date": "2013-11-11"}),
            )
            .await?;
        let url = answer["bill_download_url"].as_str().with_context(|| format!("no URL: {answer}"))?;
        let response = setup.client.get(url).send().await?;
        ensure!(response.status().is_success(), "zip: {}", response.status());
        count_bytes(response).await
    })
    .await?;
    println!(
        "Alipay-format bill (trade, zip of GBK CSV): {:.1} MB zipped in {elapsed:.2} s; server RSS {before:.0} MiB before, at most {peak:.0} MiB while it was made and sent",
        bytes as f64 / 1e6,
    );
    Ok(())
}

/// Bytes and lines of an answer, read as they come.
async fn count_bytes(mut response: reqwest::Response) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
    }
    Ok((bytes, lines))
}

/// Runs `work`, sampling the server's resident memory every 20 ms: MiB
/// before, MiB at most, seconds taken, and what `work` answered.
async fn with_peak_rss<T>(
    status: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(f64, f64, f64, T)> {
    let before = rss_of(status).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, status) = (Arc::clone(&peak), Arc::clone(&sampling), status.to_string());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(bytes) = rss_of(&status) {
                    peak.fetch_max(bytes, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let answered = work.await;
    let elapsed = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    Ok((mib(before), mib(peak.load(Ordering::Relaxed)), elapsed, answered?))
}

impl Setup {
    /// A signed gateway request of the hot merchant's app; the answer's object.
    async fn gateway(&self, method: &str, biz: Value) -> anyhow::Result<Value> {
        let mut params = std::collections::BTreeMap::new();
        let (app_id, key) = &self.hot_app;
        for (name, value) in [
            ("app_id", app_id.as_str()),
            ("method", method),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("version", "1.0"),
        ] {
            params.insert(name.to_string(), value.to_string());
        }
        let now = self
            .client
            .post(format!("{}/v1/admin/clock", self.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"advance_seconds": 0}))
            .send()
            .await?
            .json::<Value>()
            .await?;
        let now = server::clock::parse_rfc3339(now["now"].as_str().context("now")?).context("the clock's time")?;
        params.insert("timestamp".to_string(), server::gateway::format_cst(now));
        params.insert("biz_content".to_string(), biz.to_string());
        params.insert("sign".to_string(), key.sign(&server::gateway::sign_content(&params, &["sign"]))?);
        let answer: Value =
            self.client.post(format!("{}/gateway.do", self.base)).form(&params).send().await?.json().await?;
        Ok(answer[format!("{}_response", method.replace('.', "_"))].clone())
    }
}

fn rss_of(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn pages(setup: &Setup) -> Vec<(String, String, String)> {
    let (staff, portal) = (setup.staff_cookie.clone(), setup.portal_cookie.clone());
    let search = |q: &str| format!("/console/search?q={}", url_encode(q));
    vec![
        ("console: operations (books checked)".into(), "/console".into(), staff.clone()),
        (
            "console: search mch_… + out_trade_no (oldest)".into(),
            search(&format!("{} {}", setup.hot_merchant, setup.oldest.1)),
            staff.clone(),
        ),
        ("console: search out_trade_no alone (newest)".into(), search(&setup.newest.1), staff.clone()),
        (
            "console: trade page, hot merchant's newest".into(),
            format!("/console/trades/{}", setup.newest.0),
            staff.clone(),
        ),
        (
            "console: trade page, hot merchant's oldest".into(),
            format!("/console/trades/{}", setup.oldest.0),
            staff.clone(),
        ),
        ("console: party page, hot merchant".into(), format!("/console/parties/{}", setup.hot_merchant), staff.clone()),
        (
            "console: party page, a small merchant".into(),
            format!("/console/parties/{}", setup.small_merchant),
            staff.clone(),
        ),
        ("console: audit log".into(), "/console/audit".into(), staff.clone()),
        ("console: settings".into(), "/console/settings".into(), staff),
        ("portal: home (balance, today's takings, trades)".into(), "/portal".into(), portal.clone()),
        ("portal: trades of one status".into(), "/portal?status=TRADE_SUCCESS".into(), portal.clone()),
        ("portal: trade page, newest".into(), format!("/portal/trades/{}", setup.newest.0), portal.clone()),
        ("portal: trade page, oldest".into(), format!("/portal/trades/{}", setup.oldest.0), portal.clone()),
        ("portal: webhooks".into(), "/portal/webhooks".into(), portal),
    ]
}

/// The bench's queries are ids, `bench-N` and one space.
fn url_encode(text: &str) -> String {
    text.replace(' ', "+")
}

async fn time_page(setup: &Setup, path: &str, cookie: &str, requests: u32) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for round in 0..requests + 3 {
        let sent = Instant::now();
        let response = setup.client.get(format!("{}{path}", setup.base)).header("cookie", cookie).send().await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status.is_success() || status.is_redirection(), "{path}: {status} {body}");
        ensure!(!body.contains("name=\"password\""), "{path}: answered the sign-in page");
        if round >= 3 {
            histogram.saturating_record(sent.elapsed().as_micros() as u64);
        }
    }
    Ok(histogram)
}

async fn set_up(args: &ConsoleBenchArgs, base: String, directory: &std::path::Path) -> anyhow::Result<Setup> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let post = |path: &str, key: &str, body: Value| {
        let request = client.post(format!("{base}{path}")).bearer_auth(key).json(&body);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let value: Value = response.json().await?;
            ensure!(status.is_success(), "{status} {value}");
            anyhow::Ok(value)
        }
    };
    post("/v1/admin/staff", ADMIN_KEY, json!({"login": "bench-admin", "password": PASSWORD, "role": "admin"})).await?;
    let session = post("/v1/staff/sessions", "", json!({"login": "bench-admin", "password": PASSWORD})).await?;
    let staff_cookie = format!("zhifu_staff={}", session["token"].as_str().context("token")?);
    let buyer = post("/v1/users", ADMIN_KEY, json!({"name": "bench buyer"})).await?;
    let buyer_key = buyer["api_key"].as_str().context("api_key")?.to_string();
    post("/v1/topups", &buyer_key, json!({"amount": 100_000_000_000_000u64, "bank": "ICBC"})).await?;
    let app_directory = directory.join("hot-app");
    std::fs::create_dir_all(&app_directory).with_context(|| format!("create {}", app_directory.display()))?;
    let app_key = server::gateway::PlatformKey::in_directory(&app_directory);
    let mut merchants = Vec::new();
    let mut hot_app_id = String::new();
    for index in 0..args.merchants {
        let mut body = json!({"name": format!("shop {index}")});
        if index == 0 {
            let app_public_key = app_key.public_pem()?;
            body = json!({"name": "hot shop", "login": "hot-shop", "password": PASSWORD, "app_public_key": app_public_key});
        }
        let made = post("/v1/merchants", ADMIN_KEY, body).await?;
        if index == 0 {
            hot_app_id = made["app_id"].as_str().context("app_id")?.to_string();
        }
        merchants.push((
            made["id"].as_str().context("id")?.to_string(),
            made["api_key"].as_str().context("key")?.to_string(),
        ));
    }
    let made = make_trades(args, &client, &base, &merchants, &buyer_key).await?;
    let portal_cookie = portal_sign_in(&client, &base).await?;
    Ok(Setup {
        client,
        base,
        staff_cookie,
        portal_cookie,
        hot_merchant: merchants[0].0.clone(),
        hot_key: merchants[0].1.clone(),
        hot_app: (hot_app_id, app_key),
        small_merchant: merchants[merchants.len() - 1].0.clone(),
        newest: made.1,
        oldest: made.0,
    })
}

/// Creates and pays the trades; answers the hot merchant's first and last.
async fn make_trades(
    args: &ConsoleBenchArgs,
    client: &reqwest::Client,
    base: &str,
    merchants: &[(String, String)],
    buyer_key: &str,
) -> anyhow::Result<((String, String), (String, String))> {
    let next = Arc::new(AtomicU64::new(0));
    let bar = super::progress_bar(args.trades, "trades");
    let merchants = Arc::new(merchants.to_vec());
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, next, merchants, bar) = (client.clone(), Arc::clone(&next), Arc::clone(&merchants), bar.clone());
        let (base, buyer_key, trades, hot_share) =
            (base.to_string(), buyer_key.to_string(), args.trades, args.hot_share);
        tasks.push(tokio::spawn(async move {
            let mut hot = Vec::new();
            loop {
                let serial = next.fetch_add(1, Ordering::Relaxed);
                if serial >= trades {
                    return anyhow::Ok(hot);
                }
                // The hot merchant takes `hot_share` of every hundred; the rest go round the others.
                let merchant = if serial % 100 < hot_share || merchants.len() == 1 {
                    0
                } else {
                    1 + (serial as usize) % (merchants.len() - 1)
                };
                let out_trade_no = format!("bench-{serial}");
                let body = json!({"out_trade_no": out_trade_no, "amount": 100 + serial % 10_000, "subject": "bench", "mode": "instant"});
                let response =
                    client.post(format!("{base}/v1/trades")).bearer_auth(&merchants[merchant].1).json(&body).send().await?;
                ensure!(response.status().as_u16() == 201, "create: {}", response.status());
                let trade: Value = response.json().await?;
                let trade_no = trade["trade_no"].as_str().context("trade_no")?.to_string();
                let paid = client
                    .post(format!("{base}/v1/trades/{trade_no}/pay"))
                    .bearer_auth(&buyer_key)
                    .json(&json!({}))
                    .send()
                    .await?;
                ensure!(paid.status().as_u16() == 200, "pay: {}", paid.status());
                if merchant == 0 {
                    hot.push((serial, trade_no, out_trade_no));
                }
                bar.inc(1);
            }
        }));
    }
    let mut hot = Vec::new();
    for task in tasks {
        hot.extend(task.await??);
    }
    bar.finish_and_clear();
    hot.sort();
    let first = hot.first().context("the hot merchant has no trades")?;
    let last = hot.last().context("the hot merchant has no trades")?;
    Ok(((first.1.clone(), first.2.clone()), (last.1.clone(), last.2.clone())))
}

/// Signs the hot merchant in through the portal's form; answers its cookie.
async fn portal_sign_in(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let page = client.get(format!("{base}/portal")).send().await?;
    let visit = set_cookie(&page, "zhifu_visit").context("no visit cookie")?;
    let html = page.text().await?;
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|rest| rest.split('"').next()).context("csrf")?;
    let form = [("csrf", csrf), ("login", "hot-shop"), ("password", PASSWORD)];
    let answer = client.post(format!("{base}/portal/sign-in")).header("cookie", visit).form(&form).send().await?;
    set_cookie(&answer, "zhifu_merchant").context("the portal did not sign the merchant in")
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .and_then(|value| value.split(';').next())
        .map(str::to_string)
}
