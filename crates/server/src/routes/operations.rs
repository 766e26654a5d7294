//! Operations: health, metrics, the OpenAPI document, the dashboard, the
//! ledger check, the simulated clock, reconciliation, fee schedules.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use journal::StateMachine;
use platform::accounts::{BANK_CLEARING, ESCROW, LEDGER_CNY};
use platform::calendar::Date;
use platform::{Action, BankEntryKind, FeeSchedule, Fen, FreeQuota, Outcome, Product, QuotaPeriod, WithdrawalStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{ApiDoc, ChangeErrors, ReadErrors, outcome_or_error};
use crate::app::AppState;
use crate::auth::{Caller, Duty, RequestTag, audited};
use crate::body::{ApiQuery, JsonBody};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::IdKind;
use crate::metrics::Gauges;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`; `unavailable` (the store cannot be reached now); `failed` (the
    /// node stopped applying for good: restart it once the cause is gone).
    pub status: String,
    /// `leader` or `follower` (with the embedded store always `leader`).
    pub role: String,
    /// The last command applied here.
    pub sequence: u64,
    /// Why the node is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The leader's `--public-url`, on a follower that knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// On the leader of a PostgreSQL store: its standbys and their lag, as
    /// the primary reports them (`pg_stat_replication`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaView>,
    /// On the leader of a PostgreSQL store: the nodes following the log,
    /// how far each has applied (as it said in the last minute).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerView>,
}

#[derive(Serialize, ToSchema)]
pub struct FollowerView {
    /// Its `--public-url`.
    pub node: String,
    pub sequence: u64,
    /// Commands the leader has applied that it had not, when it said.
    pub behind: u64,
    pub seen_ms_ago: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReplicaView {
    pub name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `sync`, `async`, `quorum`, `potential`.
    pub sync_state: String,
    pub replay_lag_ms: Option<u64>,
    /// WAL written on the primary and not yet replayed there, in bytes.
    pub behind_bytes: Option<u64>,
}

fn health_of(state: &AppState) -> (StatusCode, Health) {
    let health = state.store.health();
    let (role, leader) = match &health.role {
        journal::Lead::Leader => ("leader", None),
        journal::Lead::Follower { leader } => ("follower", leader.clone()),
    };
    let (status, code, reason) = match (&health.failure, &health.store_problem) {
        (Some(reason), _) => ("failed", StatusCode::SERVICE_UNAVAILABLE, Some(reason.clone())),
        (None, Some(problem)) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE, Some(problem.clone())),
        (None, None) => ("ok", StatusCode::OK, None),
    };
    let replicas = health
        .replicas
        .iter()
        .map(|replica| ReplicaView {
            name: replica.name.clone(),
            state: replica.state.clone(),
            sync_state: replica.sync_state.clone(),
            replay_lag_ms: replica.replay_lag_ms,
            behind_bytes: replica.behind_bytes,
        })
        .collect();
    let followers = health
        .followers
        .iter()
        .map(|follower| FollowerView {
            node: follower.node.clone(),
            sequence: follower.applied,
            behind: health.last_applied.saturating_sub(follower.applied),
            seen_ms_ago: follower.seen_ms_ago,
        })
        .collect();
    let view = Health {
        status: status.to_string(),
        role: role.to_string(),
        sequence: health.last_applied,
        reason,
        leader,
        replicas,
        followers,
    };
    (code, view)
}

/// Whether the node can serve: `200` on a healthy leader or follower,
/// `503` once its journal failed or while its store is out of reach — it
/// never says `ok` when writes cannot succeed on a leader.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let (code, view) = health_of(&state);
    (code, Json(view)).into_response()
}

/// Whether the node takes writes now (what a load balancer routes by):
/// `200` only on a healthy leader whose store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (code, mut view) = health_of(&state);
    if code == StatusCode::OK && view.role != "leader" {
        view.status = "not_leader".to_string();
        return (StatusCode::SERVICE_UNAVAILABLE, Json(view)).into_response();
    }
    (code, Json(view)).into_response()
}

/// Prometheus text, for scrapers on this machine only.
pub async fn metrics(State(state): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return ApiError::forbidden().into_response();
    }
    let (transfers, accounts, (trades_in_memory, trades_archived)) =
        state.store.read(|p| (p.ledger().transfer_count(), p.ledger().accounts().len() as u64, p.trade_counts()));
    let refused = |count: &std::sync::atomic::AtomicU64| count.load(std::sync::atomic::Ordering::Relaxed);
    let now = state.clock.now();
    let delivery_queues = state
        .store
        .read(|p| p.delivery_queues())
        .into_iter()
        .map(|queue| crate::metrics::QueueGauge {
            endpoint: crate::webhooks::endpoint_label(&state, queue.endpoint),
            undelivered: queue.undelivered,
            oldest_age_seconds: now.nanos_since(queue.oldest_queued_at) / 1_000_000_000,
        })
        .collect();
    let gauges = Gauges {
        journal: state.store.stats(),
        transfers,
        accounts,
        trades_in_memory,
        trades_archived,
        connections_refused_over_total: refused(&state.refusals.over_total),
        connections_refused_over_address: refused(&state.refusals.over_address),
        delivery_queues,
    };
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render(&gauges)).into_response()
}

pub async fn openapi() -> Response {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(document) => ([(header::CONTENT_TYPE, "application/json")], document).into_response(),
        Err(error) => ApiError::internal(format!("cannot render the OpenAPI document: {error}")).into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

/// One of the platform's books checked against the ledger.
#[derive(Serialize, ToSchema)]
pub struct InvariantView {
    /// `ledger`, `escrow`, `fund`, `loans`, `campaigns`, `red_packets`, `withdrawals`, `merchant_balances`.
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct LedgerCheck {
    /// Debits equal credits and every invariant holds.
    pub balanced: bool,
    /// Sum of posted debits over all CNY accounts, in fen.
    pub debits_total: u128,
    pub credits_total: u128,
    /// What the escrow account holds: the sum of open escrow trades' `escrow_amount`.
    pub escrow_total: u128,
    pub accounts: u64,
    pub transfers: u64,
    /// The platform's own books, each against the ledger.
    pub invariants: Vec<InvariantView>,
}

#[utoipa::path(get, path = "/v1/admin/ledger/check", tag = "operations",
    responses((status = 200, body = LedgerCheck), ReadErrors),
    security(("api_key" = [])))]
pub async fn ledger_check(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<LedgerCheck>, ApiError> {
    caller.require(Duty::Read)?;
    // Off the async workers: the books of a big platform take a while to add up.
    let reader = Arc::clone(&state);
    let check = tokio::task::spawn_blocking(move || {
        reader.store.read(|p| {
            let ledger = p.ledger();
            let invariants: Vec<InvariantView> = p
                .check_invariants()
                .into_iter()
                .map(|check| InvariantView { name: check.name.to_string(), ok: check.ok, detail: check.detail })
                .collect();
            let totals = ledger.totals().get(&LEDGER_CNY).copied().unwrap_or_default();
            LedgerCheck {
                balanced: invariants.iter().all(|check| check.ok),
                debits_total: totals.debits_posted.to_u128().unwrap_or(u128::MAX),
                credits_total: totals.credits_posted.to_u128().unwrap_or(u128::MAX),
                escrow_total: ledger.account(ESCROW).map_or(0, |escrow| escrow.debit_headroom()),
                accounts: ledger.accounts().len() as u64,
                transfers: ledger.transfer_count(),
                invariants,
            }
        })
    })
    .await
    .map_err(|_| ApiError::internal("the ledger check was dropped"))?;
    Ok(Json(check))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockAdvance {
    /// 0 to 315,360,000 (ten years).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 315_360_000)]
    pub advance_seconds: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ClockView {
    pub now: String,
    pub withdrawals_settled: u32,
    pub withdrawals_failed: u32,
    /// Unpaid trades closed at their expiry.
    pub trades_closed: u32,
    /// Escrow trades confirmed automatically.
    pub trades_settled: u32,
}

/// The most one call may move the clock: ten years.
const CLOCK_ADVANCE_SECONDS_MAX: u64 = 10 * 365 * 86_400;

#[utoipa::path(post, path = "/v1/admin/clock", tag = "operations", request_body = ClockAdvance,
    responses((status = 200, body = ClockView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn advance_clock(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<ClockAdvance>,
) -> Result<Json<ClockView>, ApiError> {
    caller.require_admin()?;
    if !state.clock.is_simulated() {
        return Err(ApiError::conflict("the clock is real; start the server with --clock simulated"));
    }
    if body.value.advance_seconds > CLOCK_ADVANCE_SECONDS_MAX {
        return Err(ApiError::invalid("advance_seconds must be at most 315360000"));
    }
    let target = state.clock.now().plus_nanos(body.value.advance_seconds.saturating_mul(1_000_000_000));
    let mut view = ClockView {
        now: String::new(),
        withdrawals_settled: 0,
        withdrawals_failed: 0,
        trades_closed: 0,
        trades_settled: 0,
    };
    // What falls due runs at its own time, in order, before the answer;
    // a tick does a bounded share of it, so the clock waits until all is done.
    // The first tick carries the audit line.
    let what = platform::Target::Named(format!("+{}s", body.value.advance_seconds));
    let mut tick = Some(audited(caller, &request, "clock.advance", what, Action::Tick));
    loop {
        let next_due = state.store.read(|p| p.next_due()).filter(|&due| due <= target);
        state.clock.set(next_due.unwrap_or(target));
        let outcome = state.submit(None, tick.take().unwrap_or(Action::Tick)).await?;
        let (counts, more_due) = outcome_or_error!(outcome, Outcome::Ticked { withdrawals_settled, withdrawals_failed, trades_closed, trades_settled, more_due } => ([withdrawals_settled, withdrawals_failed, trades_closed, trades_settled], more_due))?;
        view.withdrawals_settled += counts[0];
        view.withdrawals_failed += counts[1];
        view.trades_closed += counts[2];
        view.trades_settled += counts[3];
        if next_due.is_none() && !more_due {
            break;
        }
    }
    view.now = rfc3339(state.clock.now());
    Ok(Json(view))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReconciliationParams {
    /// A business day (China Standard Time), `YYYY-MM-DD`.
    #[param(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")]
    pub date: String,
}

#[derive(Serialize, ToSchema)]
pub struct Reconciliation {
    pub date: String,
    /// Lines on the bank's statement that day.
    pub bank_entries: u64,
    pub matched: u64,
    /// Bank lines whose ledger movement is not there.
    pub missing: Vec<String>,
    /// Bank lines whose ledger movement differs (amount or accounts).
    pub mismatched: Vec<String>,
    /// Ledger movements through the bank channel that the bank does not show.
    pub unmatched_ledger: Vec<String>,
    pub balanced: bool,
}

/// How many clearing-account transfers one reconciliation reads at most.
const RECONCILIATION_SCAN_MAX: usize = 1_000_000;

#[utoipa::path(get, path = "/v1/admin/reconciliation", tag = "operations", params(ReconciliationParams),
    responses((status = 200, body = Reconciliation), ReadErrors),
    security(("api_key" = [])))]
pub async fn reconciliation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ReconciliationParams>,
) -> Result<Json<Reconciliation>, ApiError> {
    caller.require(Duty::Finance)?;
    let date = Date::parse(&params.date).ok_or_else(|| ApiError::invalid("date must be a day like 2013-11-11"))?;
    let state = Arc::clone(&state);
    tokio::task::spawn_blocking(move || reconcile(&state, date))
        .await
        .map_err(|_| ApiError::internal("the request was dropped"))?
        .map(Json)
}

fn reconcile(state: &AppState, date: Date) -> Result<Reconciliation, ApiError> {
    // The lines are read from the archive with the state's lock let go.
    let entries = state
        .store
        .read(|p| p.bank_statement_at(date))
        .into_iter()
        .map(|offset| platform::read_archived_bank_entry(state.store.archive(), offset))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::internal(format!("cannot read the bank statement: {error}")))?;
    let mut report = Reconciliation {
        date: date.to_string(),
        bank_entries: entries.len() as u64,
        matched: 0,
        missing: Vec::new(),
        mismatched: Vec::new(),
        unmatched_ledger: Vec::new(),
        balanced: false,
    };
    let mut expected_ids = BTreeSet::new();
    for entry in &entries {
        let reference = match entry.kind {
            BankEntryKind::TopUp => state.ids.format(IdKind::TopUp, entry.reference),
            BankEntryKind::Withdrawal => state.ids.format(IdKind::Withdrawal, entry.reference),
        };
        if !entry.succeeded {
            // The bank refused: the ledger must have given the money back.
            let returned =
                state.store.read(|p| p.withdrawal(entry.reference).map(|w| w.status)) == Some(WithdrawalStatus::Failed);
            if returned {
                report.matched += 1
            } else {
                report.mismatched.push(reference)
            }
            continue;
        }
        let found = match entry.ledger_position {
            Some(position) => state.store.stored_transfer(position).map_err(|e| ApiError::internal(e.to_string()))?,
            None => None,
        };
        match found {
            Some(stored) if Some(stored.transfer.id) == entry.ledger_transfer_id => {
                expected_ids.insert(stored.transfer.id);
                let through_bank = stored.transfer.debit_account_id == BANK_CLEARING
                    || stored.transfer.credit_account_id == BANK_CLEARING;
                if through_bank && stored.transfer.amount == u128::from(entry.amount) {
                    report.matched += 1;
                } else {
                    report.mismatched.push(reference);
                }
            }
            _ => report.missing.push(reference),
        }
    }
    let mut before = None;
    let mut scanned = 0;
    'scan: loop {
        let page =
            state.store.account_history(BANK_CLEARING, before, 1_000).map_err(|e| ApiError::internal(e.to_string()))?;
        if page.is_empty() {
            break;
        }
        for (position, transfer) in &page {
            scanned += 1;
            let day = Date::of_nanos(transfer.timestamp);
            if day < date || scanned > RECONCILIATION_SCAN_MAX {
                break 'scan;
            }
            let moves_money =
                !transfer.flags.intersects(ledger::TransferFlags::PENDING | ledger::TransferFlags::VOID_PENDING);
            if day == date && moves_money && !expected_ids.contains(&transfer.id) {
                report.unmatched_ledger.push(state.ids.format(IdKind::Entry, *position));
            }
            before = Some(*position);
        }
    }
    report.balanced = report.missing.is_empty() && report.mismatched.is_empty() && report.unmatched_ledger.is_empty();
    Ok(report)
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeScheduleBody {
    /// Basis points of the amount above the free quota (0 to 10,000).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub rate_bps: u32,
    /// In fen.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub minimum: u64,
    /// In fen; absent: no cap. The cap applies after the minimum, so a
    /// maximum below the minimum caps every fee at the maximum.
    #[serde(default, deserialize_with = "crate::body::whole_option")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_quota: Option<FreeQuotaBody>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreeQuotaBody {
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    /// `month` (calendar month, China Standard Time) or `lifetime`.
    #[schema(pattern = "^(month|lifetime)$")]
    pub period: String,
}

#[derive(Serialize, ToSchema)]
pub struct FeeScheduleView {
    /// `transfer`, `withdrawal` or `merchant_trade`.
    pub product: String,
    pub schedule: FeeScheduleBody,
}

fn view(product: Product, schedule: FeeSchedule) -> FeeScheduleView {
    FeeScheduleView {
        product: product.name().to_string(),
        schedule: FeeScheduleBody {
            rate_bps: schedule.rate_bps,
            minimum: schedule.minimum.get(),
            maximum: schedule.maximum.map(Fen::get),
            free_quota: schedule.free_quota.map(|quota| FreeQuotaBody {
                amount: quota.amount.get(),
                period: match quota.period {
                    QuotaPeriod::Month => "month",
                    QuotaPeriod::Lifetime => "lifetime",
                }
                .to_string(),
            }),
        },
    }
}

#[utoipa::path(get, path = "/v1/admin/fee-schedules", tag = "operations",
    responses((status = 200, body = Vec<FeeScheduleView>), ReadErrors),
    security(("api_key" = [])))]
pub async fn fee_schedules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<FeeScheduleView>>, ApiError> {
    caller.require(Duty::Read)?;
    let products = [Product::Transfer, Product::Withdrawal, Product::MerchantTrade];
    Ok(Json(state.store.read(|p| products.into_iter().map(|product| view(product, p.fee_schedule(product))).collect())))
}

#[utoipa::path(put, path = "/v1/admin/fee-schedules/{product}", tag = "operations", request_body = FeeScheduleBody,
    params(("product" = String, Path, description = "transfer, withdrawal or merchant_trade")),
    responses((status = 200, body = FeeScheduleView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn set_fee_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(product): Path<String>,
    body: JsonBody<FeeScheduleBody>,
) -> Result<(StatusCode, Json<FeeScheduleView>), ApiError> {
    caller.require_admin()?;
    let product = Product::parse(&product).ok_or_else(|| ApiError::not_found("product"))?;
    let value = &body.value;
    let free_quota = match &value.free_quota {
        None => None,
        Some(quota) => {
            let period = match quota.period.as_str() {
                "month" => QuotaPeriod::Month,
                "lifetime" => QuotaPeriod::Lifetime,
                _ => return Err(ApiError::invalid("free_quota.period must be month or lifetime")),
            };
            Some(FreeQuota { amount: Fen::new(quota.amount), period })
        }
    };
    let schedule = FeeSchedule {
        rate_bps: value.rate_bps,
        minimum: Fen::new(value.minimum),
        maximum: value.maximum.map(Fen::new),
        free_quota,
    };
    let what = platform::Target::Named(format!("fee_schedule:{}", product.name()));
    let action = audited(caller, &request, "fee_schedule.set", what, Action::SetFeeSchedule { product, schedule });
    let outcome = state.submit(body.idempotency(caller), action).await?;
    outcome_or_error!(outcome, Outcome::FeeScheduleSet => ())?;
    Ok((StatusCode::OK, Json(view(product, schedule))))
}
