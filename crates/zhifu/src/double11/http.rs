//! Driving a running `zhifu serve` over HTTP: the same day, as requests from
//! many concurrent clients (merchants creating trades, buyers paying them).
//!
//! Operations are dispatched in the day's order; those of one trade (its
//! payment, shipping, confirmation, refunds) or one red packet run one after
//! another, everything else concurrently up to `--connections`. The server's
//! own clock runs its due work, so the simulation's ticks are not sent; the
//! report's checks come from the server's ledger check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use server::requests;
use sim::{Mode, Op, RefundShare, TimedOp, Workload};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, Semaphore};

use super::RunOutput;
use super::engine::out_trade_no;
use super::progress::Progress;
use super::tally::Tally;

pub struct HttpOptions<'a> {
    pub url: &'a str,
    pub admin_key: &'a str,
    pub connections: usize,
}

/// A paid trade as its follow-ups need it (`None`: the payment failed).
type TradeSlot = Arc<AsyncMutex<Option<PaidTrade>>>;

#[derive(Clone)]
struct PaidTrade {
    trade_no: String,
    paid_by_buyer: u64,
    refunded: u64,
}

struct Shared {
    client: Client,
    base: String,
    admin_key: String,
    merchants: Vec<String>,
    buyers: Vec<(String, String)>,
    campaign: Option<String>,
    tally: Mutex<Tally>,
}

impl Shared {
    async fn post(&self, path: &str, key: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        // (A `Value` so that the arms of a match can send different requests.)
        let response = self.client.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body).send().await?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    fn record(&self, what: &str, status: StatusCode, body: &Value) {
        let code = body["error"]["code"].as_str().unwrap_or("no code");
        let why = if status.is_server_error() { format!("server error {status}") } else { format!("{status} {code}") };
        self.tally.lock().unwrap_or_else(PoisonError::into_inner).reject(what, &why);
    }

    fn answered(&self, minute: Option<usize>, submitted: Instant, payment: Option<u64>) {
        let now = Instant::now();
        self.tally.lock().unwrap_or_else(PoisonError::into_inner).answered(minute, submitted, now, payment);
    }
}

pub fn run(workload: Workload, options: &HttpOptions<'_>, progress: &Progress) -> anyhow::Result<RunOutput> {
    if options.connections == 0 || options.connections > 4_096 {
        bail!("--connections must be between 1 and 4096");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(workload, options, progress))
}

async fn drive(workload: Workload, options: &HttpOptions<'_>, progress: &Progress) -> anyhow::Result<RunOutput> {
    let started = Instant::now();
    let client =
        Client::builder().pool_max_idle_per_host(options.connections).timeout(Duration::from_secs(30)).build()?;
    let shared = Shared {
        client,
        base: options.url.trim_end_matches('/').to_string(),
        admin_key: options.admin_key.to_string(),
        merchants: Vec::new(),
        buyers: Vec::new(),
        campaign: None,
        tally: Mutex::new(Tally::new()),
    };
    let health = shared.client.get(format!("{}/healthz", shared.base)).send().await;
    if !health.is_ok_and(|response| response.status().is_success()) {
        bail!("no zhifu server answers at {}", shared.base);
    }
    let limit = Arc::new(Semaphore::new(options.connections));
    let mut workload = workload.peekable();
    let mut setup = Vec::new();
    while let Some(timed) = workload.next_if(|timed| timed.setup) {
        setup.push(timed);
    }
    let shared = set_up(shared, &setup, &limit).await?;
    progress.setup_done(started.elapsed());
    shared.tally.lock().unwrap_or_else(PoisonError::into_inner).day_started = Some(Instant::now());
    run_day(&shared, workload, &limit, progress).await?;
    let shared = Arc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("requests still running after the day"))?;
    let mut tally = shared.tally.into_inner().unwrap_or_else(PoisonError::into_inner);
    tally.day_finished = Some(Instant::now());
    progress.finish();
    let check = shared
        .client
        .get(format!("{}/v1/admin/ledger/check", shared.base))
        .bearer_auth(&shared.admin_key)
        .send()
        .await?
        .json::<Value>()
        .await?;
    Ok(RunOutput {
        tally,
        figures: None,
        digest: None,
        resumed_after_commands: 0,
        resume_skipped_operations: 0,
        writer: journal::WriterStats::default(),
        wall: started.elapsed(),
        server_check: Some((
            check["balanced"].as_bool() == Some(true),
            format!("debits {} and credits {}", check["debits_total"], check["credits_total"]),
        )),
    })
}

/// The setup: parties first (their keys are needed by everything else),
/// then top-ups before subscriptions (a buyer subscribes from the money
/// topped up), then the campaign.
async fn set_up(mut shared: Shared, setup: &[TimedOp], limit: &Arc<Semaphore>) -> anyhow::Result<Arc<Shared>> {
    create_parties(&mut shared, setup, limit).await?;
    let shared = Arc::new(shared);
    let mut tasks = tokio::task::JoinSet::new();
    for wave in [true, false] {
        for timed in setup.iter().filter(|t| matches!(t.op, Op::TopUp { .. }) == wave) {
            if !matches!(timed.op, Op::TopUp { .. } | Op::FundSubscribe { .. }) {
                continue;
            }
            let permit = Arc::clone(limit).acquire_owned().await?;
            let (shared, timed) = (Arc::clone(&shared), *timed);
            tasks.spawn(async move {
                let result = simple(&shared, &timed).await;
                drop(permit);
                result
            });
        }
        while let Some(result) = tasks.join_next().await {
            result??;
        }
    }
    match Arc::try_unwrap(shared) {
        Ok(mut shared) => {
            shared.campaign = find_campaign(&shared, setup).await?;
            Ok(Arc::new(shared))
        }
        Err(_) => bail!("setup requests still running"),
    }
}

/// The day's operations, as many at once as the connections allow; each
/// trade's (and red packet's) own in order.
async fn run_day(
    shared: &Arc<Shared>,
    workload: impl Iterator<Item = TimedOp>,
    limit: &Arc<Semaphore>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut trades: HashMap<u64, TradeSlot> = HashMap::new();
    let mut packets: HashMap<u64, Arc<AsyncMutex<Option<String>>>> = HashMap::new();
    for timed in workload {
        if progress.advance(&timed, matches!(timed.op, Op::Pay(_))) {
            progress.show(&timed, &shared.tally.lock().unwrap_or_else(PoisonError::into_inner));
        }
        // One trade's (or packet's) operations in order: take its lock here,
        // in the day's order, and hand it to the task.
        let guard: Option<OwnedMutexGuard<Option<PaidTrade>>> = match timed.op {
            Op::Pay(payment) => {
                let slot = trades.entry(payment.trade).or_default();
                Some(Arc::clone(slot).lock_owned().await)
            }
            Op::Ship { trade, .. } | Op::Confirm { trade, .. } | Op::Refund { trade, .. } => match trades.get(&trade) {
                Some(slot) => Some(Arc::clone(slot).lock_owned().await),
                None => continue,
            },
            _ => None,
        };
        let packet_guard = match timed.op {
            Op::SendRedPacket { packet, .. } | Op::ClaimRedPacket { packet, .. } => {
                let slot = packets.entry(packet).or_default();
                Some(Arc::clone(slot).lock_owned().await)
            }
            _ => None,
        };
        if matches!(timed.op, Op::Tick | Op::FundYield { .. }) {
            continue;
        }
        let permit = Arc::clone(limit).acquire_owned().await?;
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let result = match (guard, packet_guard) {
                (Some(guard), _) => trade_op(&shared, &timed, guard).await,
                (_, Some(guard)) => packet_op(&shared, &timed, guard).await,
                _ => simple(&shared, &timed).await,
            };
            drop(permit);
            result
        });
        while let Some(result) = tasks.try_join_next() {
            result??;
        }
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

async fn create_parties(shared: &mut Shared, setup: &[TimedOp], limit: &Arc<Semaphore>) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for timed in setup {
        let (path, name, index) = match timed.op {
            Op::CreateMerchant { merchant } => ("/v1/merchants", format!("shop {merchant}"), merchant),
            Op::CreateBuyer { buyer } => ("/v1/users", format!("buyer {buyer}"), buyer),
            _ => continue,
        };
        let permit = Arc::clone(limit).acquire_owned().await?;
        let (client, url, admin_key) =
            (shared.client.clone(), format!("{}{path}", shared.base), shared.admin_key.clone());
        tasks.spawn(async move {
            let body = if path == "/v1/merchants" {
                request(&requests::NewMerchant {
                    name,
                    fee_rate_bps: None,
                    webhook_url: None,
                    app_public_key: None,
                    login: None,
                    password: None,
                })
            } else {
                request(&requests::NewUser { name, login: None, password: None })
            };
            let response = client.post(url).bearer_auth(admin_key).json(&body).send().await?;
            let status = response.status();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            drop(permit);
            if status != StatusCode::CREATED {
                bail!("{path} answered {status}: {body}");
            }
            let id = body["id"].as_str().context("no id")?.to_string();
            let key = body["api_key"].as_str().context("no api_key")?.to_string();
            Ok::<_, anyhow::Error>((path, index, id, key))
        });
    }
    let mut merchants = HashMap::new();
    let mut buyers = HashMap::new();
    while let Some(result) = tasks.join_next().await {
        let (path, index, id, key) = result??;
        if path == "/v1/merchants" {
            merchants.insert(index, key);
        } else {
            buyers.insert(index, (id, key));
        }
    }
    shared.merchants = (0..merchants.len() as u32).filter_map(|i| merchants.remove(&i)).collect();
    shared.buyers = (0..buyers.len() as u32).filter_map(|i| buyers.remove(&i)).collect();
    Ok(())
}

async fn find_campaign(shared: &Shared, setup: &[TimedOp]) -> anyhow::Result<Option<String>> {
    let Some(Op::CreateCampaign { budget, discount, min_spend, per_user_limit }) =
        setup.iter().map(|t| t.op).find(|op| matches!(op, Op::CreateCampaign { .. }))
    else {
        return Ok(None);
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let body = request(&requests::NewCampaignBody {
        name: "Double Eleven".to_string(),
        budget,
        discount,
        min_spend,
        per_user_limit,
        starts_at: server::clock::rfc3339(platform::Timestamp::from_nanos(now)),
        ends_at: server::clock::rfc3339(platform::Timestamp::from_nanos(now + 86_400 * 1_000_000_000)),
    });
    let (status, created) = shared.post("/v1/campaigns", &shared.admin_key, body).await?;
    if status != StatusCode::CREATED {
        shared.record("campaign", status, &created);
        return Ok(None);
    }
    Ok(created["id"].as_str().map(str::to_string))
}

/// A request's body as JSON (plain data: it always encodes).
fn request(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

fn minute_of(timed: &TimedOp) -> Option<usize> {
    (timed.at < sim::DAY_NANOS).then_some((timed.at / 60_000_000_000) as usize)
}

/// Operations that stand alone: top-ups, subscriptions, transfers, withdrawals.
async fn simple(shared: &Shared, timed: &TimedOp) -> anyhow::Result<()> {
    let submitted = Instant::now();
    let buyer_key = |index: u32| shared.buyers[index as usize].1.as_str();
    let (what, path, key, body) = match timed.op {
        Op::TopUp { buyer, amount } => {
            ("top-up", "/v1/topups", buyer_key(buyer), request(&requests::NewTopUp { amount, bank: "ICBC".into() }))
        }
        Op::FundSubscribe { buyer, amount } => {
            let body = request(&requests::SubscriptionAmount { amount });
            ("fund subscription", "/v1/fund/subscriptions", buyer_key(buyer), body)
        }
        Op::Transfer { from, to, amount } => (
            "transfer",
            "/v1/transfers",
            buyer_key(from),
            request(&requests::NewTransfer { to: shared.buyers[to as usize].0.clone(), amount, memo: None }),
        ),
        Op::Withdraw { merchant, amount } => {
            let body = request(&requests::NewWithdrawal { amount });
            ("withdrawal", "/v1/withdrawals", shared.merchants[merchant as usize].as_str(), body)
        }
        _ => return Ok(()),
    };
    let (status, answer) = shared.post(path, key, body).await?;
    if status.is_success() {
        let mut tally = shared.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let acknowledged = &mut tally.acknowledged;
        match timed.op {
            Op::TopUp { amount, .. } => {
                acknowledged.top_ups += 1;
                acknowledged.topped_up += amount;
            }
            Op::FundSubscribe { .. } => acknowledged.fund_subscriptions += 1,
            Op::Transfer { .. } => {
                acknowledged.transfers += 1;
                acknowledged.transfer_fees += answer["fee"].as_u64().unwrap_or(0);
            }
            Op::Withdraw { amount, .. } => {
                acknowledged.withdrawals += 1;
                acknowledged.withdrawn += amount;
                acknowledged.withdrawal_fees += answer["fee"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    } else {
        shared.record(what, status, &answer);
    }
    if !timed.setup {
        shared.answered(minute_of(timed), submitted, None);
    }
    Ok(())
}

async fn trade_op(
    shared: &Shared,
    timed: &TimedOp,
    mut slot: OwnedMutexGuard<Option<PaidTrade>>,
) -> anyhow::Result<()> {
    let submitted = Instant::now();
    match timed.op {
        Op::Pay(payment) => {
            let merchant_key = &shared.merchants[payment.merchant as usize];
            let body = request(&requests::NewTradeBody {
                out_trade_no: out_trade_no(payment.trade),
                amount: payment.amount,
                subject: "Double Eleven order".to_string(),
                mode: if payment.mode == Mode::Escrow { "escrow" } else { "instant" }.to_string(),
                buyer: None,
                auto_confirm_days: None,
                expire_minutes: None,
                campaign: shared.campaign.clone().filter(|_| payment.campaign),
            });
            let (status, created) = shared.post("/v1/trades", merchant_key, body).await?;
            let Some(trade_no) = created["trade_no"].as_str().filter(|_| status.is_success()) else {
                shared.record("create trade", status, &created);
                return Ok(());
            };
            let buyer_key = &shared.buyers[payment.buyer as usize].1;
            let source = if payment.from_fund { "fund" } else { "balance" };
            let path = format!("/v1/trades/{trade_no}/pay");
            let pay = requests::PayBody { source: Some(source.to_string()), coupon: None };
            let (status, paid) = shared.post(&path, buyer_key, request(&pay)).await?;
            if status.is_success() {
                let discount = paid["discount"].as_u64().unwrap_or(0);
                {
                    let mut tally = shared.tally.lock().unwrap_or_else(PoisonError::into_inner);
                    tally.acknowledged.payments += 1;
                    tally.acknowledged.gmv += payment.amount;
                    tally.acknowledged.discounts += discount;
                }
                *slot = Some(PaidTrade {
                    trade_no: trade_no.to_string(),
                    paid_by_buyer: payment.amount - discount,
                    refunded: 0,
                });
                shared.answered(minute_of(timed), submitted, Some(payment.amount));
            } else {
                if created["error"]["code"].as_str().is_none() && paid["error"]["code"] == "insufficient_funds" {
                    shared.tally.lock().unwrap_or_else(PoisonError::into_inner).acknowledged.declined += 1;
                } else {
                    shared.record("payment", status, &paid);
                }
                shared.answered(minute_of(timed), submitted, None);
            }
        }
        Op::Ship { merchant, .. } => {
            let Some(trade) = slot.as_ref() else { return Ok(()) };
            let path = format!("/v1/trades/{}/ship", trade.trade_no);
            let (status, body) =
                shared.post(&path, &shared.merchants[merchant as usize], request(&requests::EmptyBody {})).await?;
            if !status.is_success() {
                shared.record("ship", status, &body);
            }
            shared.answered(minute_of(timed), submitted, None);
        }
        Op::Confirm { buyer, .. } => {
            let Some(trade) = slot.as_ref() else { return Ok(()) };
            let path = format!("/v1/trades/{}/confirm", trade.trade_no);
            let (status, body) =
                shared.post(&path, &shared.buyers[buyer as usize].1, request(&requests::EmptyBody {})).await?;
            if !status.is_success() {
                shared.record("confirm", status, &body);
            }
            shared.answered(minute_of(timed), submitted, None);
        }
        Op::Refund { merchant, trade, refund, share } => {
            let Some(paid) = slot.as_mut() else { return Ok(()) };
            let amount = match share {
                RefundShare::Full => paid.paid_by_buyer - paid.refunded,
                RefundShare::Half => (paid.paid_by_buyer / 2).max(1),
            };
            let path = format!("/v1/trades/{}/refunds", paid.trade_no);
            let out_request_no = format!("d11-{trade}-refund-{refund}");
            let body = request(&requests::RefundBody { out_request_no, amount, reason: None });
            let (status, answer) = shared.post(&path, &shared.merchants[merchant as usize], body).await?;
            if status.is_success() {
                paid.refunded += amount;
                let mut tally = shared.tally.lock().unwrap_or_else(PoisonError::into_inner);
                tally.acknowledged.refunds += 1;
                tally.acknowledged.refunded += amount;
            } else {
                shared.record("refund", status, &answer);
            }
            shared.answered(minute_of(timed), submitted, None);
        }
        _ => {}
    }
    Ok(())
}

async fn packet_op(shared: &Shared, timed: &TimedOp, mut slot: OwnedMutexGuard<Option<String>>) -> anyhow::Result<()> {
    let submitted = Instant::now();
    match timed.op {
        Op::SendRedPacket { sender, total, count, .. } => {
            let body = request(&requests::NewRedPacket { total, count, mode: "random".to_string(), greeting: None });
            let (status, answer) = shared.post("/v1/red-packets", &shared.buyers[sender as usize].1, body).await?;
            match answer["id"].as_str().filter(|_| status.is_success()) {
                Some(id) => {
                    *slot = Some(id.to_string());
                    shared.tally.lock().unwrap_or_else(PoisonError::into_inner).acknowledged.red_packets += 1;
                }
                None => shared.record("red packet", status, &answer),
            }
        }
        Op::ClaimRedPacket { claimer, .. } => {
            let Some(id) = slot.as_ref() else { return Ok(()) };
            let path = format!("/v1/red-packets/{id}/claims");
            let (status, answer) =
                shared.post(&path, &shared.buyers[claimer as usize].1, request(&requests::EmptyBody {})).await?;
            if status.is_success() {
                shared.tally.lock().unwrap_or_else(PoisonError::into_inner).acknowledged.red_packet_claims += 1;
            } else {
                shared.record("red packet claim", status, &answer);
            }
        }
        _ => return Ok(()),
    }
    shared.answered(minute_of(timed), submitted, None);
    Ok(())
}
