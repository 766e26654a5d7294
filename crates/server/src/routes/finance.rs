//! A party's money over time, read from the ledger's history (each
//! account's transfers are a chain, newest first, in the history file):
//! balance transactions — every posted change of the wallet, a fee beside
//! the movement it was taken on, with the balance after — and the balance
//! at a past time. Nothing is copied: the history already keeps it all.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use journal::StateMachine;
use ledger::{NO_TRANSFER, Transfer, TransferFlags};
use platform::accounts::{self, Reference};
use platform::{PartyKind, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Page, ReadErrors};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::ApiQuery;
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

/// Transfers of one wallet read at most by one request (a page far back,
/// or a balance long ago): beyond, the request is refused.
const HISTORY_STEPS_MAX: usize = 2_000_000;

#[derive(Serialize, ToSchema)]
pub struct BalanceTransaction {
    /// `ent_…`: the position of its movement in the ledger's history.
    pub id: String,
    /// `trade_payment`, `trade_settlement`, `trade_refund`, `transfer`, `topup`, `withdrawal`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The trade, transfer, top-up, withdrawal, loan … it belongs to.
    pub source: String,
    /// The movement, in fen: positive in, negative out.
    pub amount: i64,
    /// The fee taken with it (negative: a fee given back).
    pub fee: i64,
    /// `amount - fee`: what the balance changed by.
    pub net: i64,
    /// The wallet's posted balance just after it, in fen.
    #[schema(value_type = u64)]
    pub balance_after: u128,
    pub created: String,
}

#[derive(Serialize, ToSchema)]
pub struct BalanceTransactionPage {
    pub data: Vec<BalanceTransaction>,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceTransactionParams {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(pattern = "^ent_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
    /// Operators: whose (`usr_…` or `mch_…`).
    #[param(pattern = "^(usr|mch)_[0-9a-f]{32}$")]
    pub party: Option<String>,
}

/// A request the schema allows that cannot be served as it is (the
/// schema cannot say that operators must name the party, or that a month
/// must exist).
fn unprocessable(message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

/// The party a request reads the money of: the caller, or for operators
/// (any role) the one named.
fn party_of(state: &AppState, caller: Caller, named: Option<&str>) -> Result<platform::PartyNumber, ApiError> {
    match (caller, named) {
        (Caller::Party { number, kind: PartyKind::User | PartyKind::Merchant }, None) => Ok(number),
        (Caller::Party { .. }, Some(_)) => Err(ApiError::forbidden()),
        (_, named) => {
            caller.require(crate::auth::Duty::Read)?;
            let id = named.ok_or_else(|| unprocessable("operators name the party (party=usr_… or mch_…)"))?;
            let number = super::splits::party_of_id(state, id)?;
            state.store.read(|p| p.party(number).map(|_| number)).ok_or_else(|| ApiError::not_found("party"))
        }
    }
}

/// What a transfer did to `wallet`'s posted balance.
pub(crate) fn change_of(transfer: &Transfer, wallet: u128) -> i128 {
    if transfer.flags.contains(TransferFlags::PENDING) || transfer.flags.contains(TransferFlags::VOID_PENDING) {
        return 0;
    }
    let amount = i128::try_from(transfer.amount).unwrap_or(i128::MAX);
    if transfer.credit_account_id == wallet { amount } else { -amount }
}

/// The movements a fee is taken on (or, a fee's return, given back with).
fn fee_of(code: u16) -> Option<&'static [u16]> {
    match code {
        accounts::CODE_TRANSFER_FEE => Some(&[accounts::CODE_TRANSFER]),
        accounts::CODE_WITHDRAWAL_FEE => Some(&[accounts::CODE_WITHDRAWAL]),
        accounts::CODE_TRADE_FEE => Some(&[accounts::CODE_TRADE_PAYMENT, accounts::CODE_TRADE_SETTLEMENT]),
        accounts::CODE_TRADE_FEE_RETURN => Some(&[accounts::CODE_TRADE_REFUND]),
        _ => None,
    }
}

fn is_fee(code: u16) -> bool {
    fee_of(code).is_some()
}

/// The command time of a transfer (its id's high half).
pub(crate) fn command_time(transfer: &Transfer) -> u64 {
    (transfer.id >> 64) as u64
}

/// A balance transaction being gathered, newest transfer first.
struct Gathering {
    position: u64,
    code: u16,
    user_data: u128,
    time: u64,
    amount: i128,
    fee: i128,
    balance_after: u128,
    has_main: bool,
    /// The fee's code, once one is in.
    fee_code: Option<u16>,
}

impl Gathering {
    /// Whether `transfer` (older than what was gathered) belongs here: the
    /// same source in the same command, at most one movement and one fee,
    /// and the fee of that kind of movement (a payment and a refund of one
    /// trade in the same instant stay apart, each with its own fee).
    fn takes(&self, transfer: &Transfer) -> bool {
        if self.user_data != transfer.user_data || self.time != command_time(transfer) {
            return false;
        }
        match fee_of(transfer.code) {
            Some(movements) => self.fee_code.is_none() && self.has_main && movements.contains(&self.code),
            None => {
                !self.has_main
                    && self.fee_code.and_then(fee_of).is_some_and(|movements| movements.contains(&transfer.code))
            }
        }
    }

    fn view(&self, ids: &PublicIds) -> BalanceTransaction {
        let clamp = |value: i128| i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX });
        BalanceTransaction {
            id: ids.format(IdKind::Entry, self.position),
            kind: accounts::transfer_code_name(self.code).to_string(),
            source: Reference::decode(self.user_data)
                .map_or_else(String::new, |reference| super::parties::reference_id(ids, reference)),
            amount: clamp(self.amount),
            fee: clamp(-self.fee),
            net: clamp(self.amount + self.fee),
            balance_after: self.balance_after,
            created: rfc3339(Timestamp::from_nanos(self.time)),
        }
    }
}

/// The wallet's posted balance and its newest transfer's position, at one instant.
fn head_of(state: &AppState, wallet: u128) -> (u128, u64) {
    state.store.read(|p| {
        let ledger = p.ledger();
        let balance = ledger.account(wallet).map_or(0, |a| a.credits_posted.saturating_sub(a.debits_posted));
        (balance, ledger.last_transfer_of(wallet))
    })
}

fn too_far() -> ApiError {
    unprocessable(&format!(
        "that is more than {HISTORY_STEPS_MAX} movements back: page from nearer, or ask for the balance at a later time"
    ))
}

/// Walks `wallet`'s history newest first, handing each gathered balance
/// transaction to `visit` until it answers `false`.
fn walk(state: &AppState, wallet: u128, mut visit: impl FnMut(&Gathering) -> bool) -> Result<(), ApiError> {
    let (mut balance, mut next) = head_of(state, wallet);
    let failed = |error: journal::JournalError| ApiError::internal(format!("cannot read the history: {error}"));
    let mut open: Option<Gathering> = None;
    for _ in 0..HISTORY_STEPS_MAX {
        if next == NO_TRANSFER {
            if let Some(last) = &open {
                visit(last);
            }
            return Ok(());
        }
        let Some(stored) = state.store.stored_transfer(next).map_err(failed)? else { return Ok(()) };
        let transfer = stored.transfer;
        let change = change_of(&transfer, wallet);
        let position = next;
        next = stored.previous_of(wallet);
        if change == 0 {
            continue;
        }
        let fee = is_fee(transfer.code);
        match &mut open {
            Some(gathering) if gathering.takes(&transfer) => {
                if fee {
                    (gathering.fee, gathering.fee_code) = (change, Some(transfer.code));
                } else {
                    (gathering.amount, gathering.code, gathering.has_main) = (change, transfer.code, true);
                    gathering.position = position;
                }
            }
            _ => {
                if let Some(done) = open.take()
                    && !visit(&done)
                {
                    return Ok(());
                }
                open = Some(Gathering {
                    position,
                    code: transfer.code,
                    user_data: transfer.user_data,
                    time: command_time(&transfer),
                    amount: if fee { 0 } else { change },
                    fee: if fee { change } else { 0 },
                    balance_after: balance,
                    has_main: !fee,
                    fee_code: fee.then_some(transfer.code),
                });
            }
        }
        balance = balance.saturating_add_signed(-change);
    }
    Err(too_far())
}

#[utoipa::path(get, path = "/v1/balance-transactions", tag = "parties", params(BalanceTransactionParams),
    responses((status = 200, body = BalanceTransactionPage),
        (status = 422, description = "`invalid_request`: an operator did not name the party, or the page is too far back", body = crate::error::ErrorBody),
        ReadErrors),
    security(("api_key" = [])))]
pub async fn balance_transactions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<BalanceTransactionParams>,
) -> Result<Json<BalanceTransactionPage>, ApiError> {
    let party = party_of(&state, caller, params.party.as_deref())?;
    let page = Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Entry)?;
    let reader = Arc::clone(&state);
    let (data, has_more) = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let mut started = page.after.is_none();
        let mut has_more = false;
        walk(&reader, accounts::wallet(party), |gathering| {
            if !started {
                started = page.after == Some(gathering.position);
                return true;
            }
            if found.len() == page.limit {
                has_more = true;
                return false;
            }
            found.push(gathering.view(&reader.ids));
            true
        })?;
        Ok::<_, ApiError>((found, has_more))
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))??;
    Ok(Json(BalanceTransactionPage { data, has_more }))
}

/// The wallet's posted balance at `at`: today's, less every change after.
pub fn balance_at(state: &AppState, wallet: u128, at: Timestamp) -> Result<u128, ApiError> {
    let mut balance_then = None;
    walk(state, wallet, |gathering| {
        if gathering.time <= at.nanos() {
            balance_then = Some(gathering.balance_after);
            return false;
        }
        true
    })?;
    Ok(balance_then.unwrap_or(0))
}

#[derive(Serialize, ToSchema)]
pub struct DayTakingsView {
    /// The business day (CST), `YYYY-MM-DD`.
    pub date: String,
    /// Trades paid that day and their amounts (in fen, discounts included).
    pub paid_count: u32,
    pub paid_amount: u64,
    /// Refunds made that day (of trades paid any day) and their amounts.
    pub refund_count: u32,
    pub refunded_amount: u64,
    /// Paid less refunded.
    pub net_amount: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TakingsPage {
    /// Today first, then the six days before.
    pub data: Vec<DayTakingsView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TakingsParams {
    /// Operators: whose takings (`mch_…`).
    #[param(pattern = "^mch_[0-9a-f]{32}$")]
    pub merchant: Option<String>,
}

#[utoipa::path(get, path = "/v1/takings", tag = "parties", params(TakingsParams),
    responses((status = 200, body = TakingsPage),
        (status = 422, description = "`invalid_request`: an operator did not name the merchant", body = crate::error::ErrorBody),
        ReadErrors),
    security(("api_key" = [])))]
pub async fn takings(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<TakingsParams>,
) -> Result<Json<TakingsPage>, ApiError> {
    if let Caller::Party { kind: PartyKind::User, .. } = caller {
        return Err(ApiError::forbidden());
    }
    let merchant = party_of(&state, caller, params.merchant.as_deref())?;
    let now = state.clock.now();
    let (kind, days) = state.store.read(|p| (p.party(merchant).map(|party| party.kind), p.takings(now, merchant)));
    if kind != Some(PartyKind::Merchant) {
        return Err(ApiError::not_found("merchant"));
    }
    let data = days
        .into_iter()
        .map(|(day, takings)| DayTakingsView {
            date: platform::calendar::Date::of(platform::takings::day_start(day)).to_string(),
            paid_count: takings.paid_count,
            paid_amount: takings.paid.get(),
            refund_count: takings.refund_count,
            refunded_amount: takings.refunded.get(),
            net_amount: i64::try_from(i128::from(takings.paid.get()) - i128::from(takings.refunded.get()))
                .unwrap_or(i64::MIN),
        })
        .collect();
    Ok(Json(TakingsPage { data }))
}

/// Movements one bill reads at most, back from now through the period (the
/// period's positions are kept, 8 bytes each: at most 800 MB).
const BILL_STEPS_MAX: usize = 100_000_000;
/// Bytes of a bill gathered before they are sent.
const BILL_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BillParams {
    /// A business day (CST) that has ended, `YYYY-MM-DD`.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub date: Option<String>,
    /// A month that has ended, `YYYY-MM`.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$")]
    pub month: Option<String>,
    /// Operators (finance, admin): whose bill (`mch_…`).
    #[param(pattern = "^mch_[0-9a-f]{32}$")]
    pub merchant: Option<String>,
}

/// A bill's period: `[start, end)` in nanoseconds, and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Period {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub(crate) label: String,
}

fn period_of(params: &BillParams) -> Result<Period, ApiError> {
    period_named(params.date.as_deref(), params.month.as_deref())
}

/// The business day (CST) `date` or the month `month`, exactly one given.
pub(crate) fn period_named(date: Option<&str>, month: Option<&str>) -> Result<Period, ApiError> {
    use platform::calendar::Date;
    let (first, after, label) = match (date, month) {
        (Some(date), None) => {
            let day = Date::parse(date).ok_or_else(|| unprocessable("date must be a day like 2013-11-11"))?;
            (day, day.next_day(), date.to_string())
        }
        (None, Some(month)) => {
            let day = Date::parse(&format!("{month}-01"))
                .filter(|_| month.len() == 7)
                .ok_or_else(|| unprocessable("month must be like 2013-11"))?;
            (day, Some(day.next_month()), month.to_string())
        }
        _ => return Err(unprocessable("give either date or month")),
    };
    let start = first.start_nanos().ok_or_else(|| unprocessable("the period is before 1970"))?;
    let end = after.and_then(Date::start_nanos).ok_or_else(|| unprocessable("the period is out of range"))?;
    Ok(Period { start, end, label })
}

#[utoipa::path(get, path = "/v1/bills", tag = "parties", params(BillParams),
    responses((status = 200, description = "text/csv: one line per movement of the merchant's balance in the period, then its totals", content_type = "text/csv"),
        (status = 422, description = "`invalid_request`: no such day or month, neither or both given, or an operator did not name the merchant", body = crate::error::ErrorBody),
        ReadErrors),
    security(("api_key" = [])))]
pub async fn bill(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<BillParams>,
) -> Result<axum::response::Response, ApiError> {
    let merchant = match (caller, &params.merchant) {
        (Caller::Party { number, kind: PartyKind::Merchant }, None) => number,
        (Caller::Party { .. }, _) => return Err(ApiError::forbidden()),
        (_, merchant) => {
            caller.require(crate::auth::Duty::Finance)?;
            let id =
                merchant.as_deref().ok_or_else(|| unprocessable("operators name the merchant (merchant=mch_…)"))?;
            let number = platform::PartyNumber::new(super::id_of(&state.ids, IdKind::Merchant, id, "merchant")?);
            if !state.store.read(|p| p.party(number).is_some_and(|party| party.kind == PartyKind::Merchant)) {
                return Err(ApiError::not_found("merchant"));
            }
            number
        }
    };
    let period = period_of(&params)?;
    if period.end > state.clock.now().nanos() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "period_not_ended",
            "bills are made for days and months that have ended (CST)",
        ));
    }
    let name = format!("zhifu-bill-{}-{}.csv", state.ids.format(IdKind::Merchant, merchant), period.label);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let writer = Arc::clone(&state);
    tokio::task::spawn_blocking(move || {
        let mut out = BillOut { sender, buffer: Vec::with_capacity(BILL_CHUNK_BYTES) };
        if let Err(error) = write_bill(&writer, merchant, &period, &mut out) {
            // The totals never come: the reader knows the bill is incomplete.
            out.line(format_args!("# error: {}", error.message));
        }
        out.flush();
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), receiver))
    });
    let mut response = axum::response::Response::new(axum::body::Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(axum::http::header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A bill on its way out, in chunks.
struct BillOut {
    sender: tokio::sync::mpsc::Sender<Vec<u8>>,
    buffer: Vec<u8>,
}

impl BillOut {
    /// Adds a line; `false` once the reader has gone.
    fn line(&mut self, line: std::fmt::Arguments<'_>) -> bool {
        use std::io::Write;
        let _ = writeln!(self.buffer, "{line}");
        if self.buffer.len() < BILL_CHUNK_BYTES {
            return true;
        }
        self.flush()
    }

    fn flush(&mut self) -> bool {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(BILL_CHUNK_BYTES));
        chunk.is_empty() || self.sender.blocking_send(chunk).is_ok()
    }
}

/// Signed fen as yuan: `-12.34`.
pub(crate) fn signed_yuan(fen: i128) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

pub(crate) fn history_failed(error: journal::JournalError) -> ApiError {
    ApiError::internal(format!("cannot read the history: {error}"))
}

/// A wallet's movements in a period: the balance before and after it, and
/// the movements' positions in the ledger's history, newest first.
pub(crate) struct PeriodMovements {
    pub(crate) opening: u128,
    pub(crate) closing: u128,
    pub(crate) positions: Vec<u64>,
}

/// Walks the wallet's chain back from now to the period's start (8 bytes
/// kept per movement in the period; at most `BILL_STEPS_MAX` read).
pub(crate) fn period_movements(state: &AppState, wallet: u128, period: &Period) -> Result<PeriodMovements, ApiError> {
    let (mut balance, mut next) = head_of(state, wallet);
    let mut positions = Vec::new();
    let mut closing = None;
    for step in 0..=BILL_STEPS_MAX {
        if next == NO_TRANSFER {
            break;
        }
        if step == BILL_STEPS_MAX {
            return Err(too_far());
        }
        let Some(stored) = state.store.stored_transfer(next).map_err(history_failed)? else { break };
        let time = command_time(&stored.transfer);
        if time < period.start {
            break;
        }
        if time < period.end {
            closing.get_or_insert(balance);
            positions.push(next);
        }
        balance = balance.saturating_add_signed(-change_of(&stored.transfer, wallet));
        next = stored.previous_of(wallet);
    }
    Ok(PeriodMovements { opening: balance, closing: closing.unwrap_or(balance), positions })
}

/// The bill: the positions of the period's movements (found walking the
/// wallet's chain back from now: 8 bytes each), then each read again
/// oldest first and written out, with the balance after it; then the
/// totals, which equal the wallet's change over the period.
fn write_bill(
    state: &AppState,
    merchant: platform::PartyNumber,
    period: &Period,
    out: &mut BillOut,
) -> Result<(), ApiError> {
    let wallet = accounts::wallet(merchant);
    let PeriodMovements { opening, closing, positions } = period_movements(state, wallet, period)?;
    out.line(format_args!("# zhifu bill of {} for {}", state.ids.format(IdKind::Merchant, merchant), period.label));
    out.line(format_args!(
        "# from {} to {} (CST days); amounts in yuan",
        rfc3339(Timestamp::from_nanos(period.start)),
        rfc3339(Timestamp::from_nanos(period.end))
    ));
    out.line(format_args!("created,type,source,out_trade_no,amount,balance_after"));
    let mut running = opening;
    let mut totals: std::collections::BTreeMap<&'static str, (u64, i128)> = std::collections::BTreeMap::new();
    let mut last_trade: Option<(u64, String)> = None;
    for &position in positions.iter().rev() {
        let Some(stored) = state.store.stored_transfer(position).map_err(history_failed)? else { continue };
        let transfer = stored.transfer;
        let change = change_of(&transfer, wallet);
        if change == 0 {
            continue;
        }
        running = running.saturating_add_signed(change);
        let kind = accounts::transfer_code_name(transfer.code);
        let total = totals.entry(kind).or_insert((0, 0));
        (total.0, total.1) = (total.0 + 1, total.1 + change);
        let reference = Reference::decode(transfer.user_data);
        let out_trade_no = match reference {
            Some(Reference::Trade(number)) => out_trade_no_of(state, number, &mut last_trade),
            _ => String::new(),
        };
        let source = reference.map_or_else(String::new, |r| super::parties::reference_id(&state.ids, r));
        let written = out.line(format_args!(
            "{},{kind},{source},{},{},{}",
            rfc3339(Timestamp::from_nanos(command_time(&transfer))),
            csv_field(&out_trade_no),
            signed_yuan(change),
            signed_yuan(i128::try_from(running).unwrap_or(i128::MAX)),
        ));
        if !written {
            return Ok(());
        }
    }
    out.line(format_args!("# totals"));
    out.line(format_args!("# opening_balance,{}", signed_yuan(i128::try_from(opening).unwrap_or(i128::MAX))));
    let mut net = 0i128;
    for (kind, (count, sum)) in &totals {
        net += sum;
        out.line(format_args!("# {kind},{count},{}", signed_yuan(*sum)));
    }
    out.line(format_args!("# net,{},{}", positions.len(), signed_yuan(net)));
    out.line(format_args!("# closing_balance,{}", signed_yuan(i128::try_from(closing).unwrap_or(i128::MAX))));
    Ok(())
}

/// A trade's `out_trade_no` (the last one read is kept: a trade's
/// settlement and fee come one after the other).
fn out_trade_no_of(state: &AppState, number: platform::TradeNumber, last: &mut Option<(u64, String)>) -> String {
    if let Some((cached, out_trade_no)) = last
        && *cached == number.get()
    {
        return out_trade_no.clone();
    }
    let found = state.store.read_with_archive(|p, archive| p.trade(archive, number)).ok().flatten();
    let out_trade_no = found.map(|trade| trade.out_trade_no).unwrap_or_default();
    *last = Some((number.get(), out_trade_no.clone()));
    out_trade_no
}

/// A CSV field, quoted when it must be.
pub(crate) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

/// Transfers read at most around each moment of a trade (its payment,
/// settlement, refunds and splits) to find its own.
const TRADE_TRANSFERS_SCANNED_MAX: u64 = 20_000;

#[derive(Serialize, ToSchema)]
pub struct TradeTransfer {
    /// `ent_…`: its place in the ledger's history.
    pub id: String,
    /// What it is (`trade_payment`, `trade_fee`, `trade_refund`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The accounts it moved money between: a party (`usr_…`, `mch_…`,
    /// `…:fund`) or the platform's (`zhifu:escrow`, `zhifu:revenue`, …).
    pub from: String,
    pub to: String,
    pub amount: u64,
    pub created: String,
}

#[derive(Serialize, ToSchema)]
pub struct TradeTransfers {
    /// Oldest first.
    pub data: Vec<TradeTransfer>,
    /// A moment had more transfers than were read around it: some may be missing.
    pub truncated: bool,
}

/// `GET /v1/trades/{trade_no}/transfers`: the ledger transfers of a trade
/// (its merchant's, operators'), found in the ledger's history at the
/// moments the trade records (transfers are stored in time order): no index
/// of transfers by trade is kept.
#[utoipa::path(get, path = "/v1/trades/{trade_no}/transfers", tag = "trades",
    params(("trade_no" = String, Path, description = "trd_…")),
    responses((status = 200, body = TradeTransfers), ReadErrors),
    security(("api_key" = [])))]
pub async fn trade_transfers(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
) -> Result<Json<TradeTransfers>, ApiError> {
    if matches!(caller, Caller::Party { kind: PartyKind::User, .. }) {
        return Err(ApiError::forbidden());
    }
    let trade = super::trades::visible_trade(&state, caller, &trade_no)?;
    let reader = Arc::clone(&state);
    let (found, truncated) = tokio::task::spawn_blocking(move || transfers_of_trade(&reader, &trade))
        .await
        .map_err(|_| ApiError::internal("the request was dropped"))??;
    let data = found
        .into_iter()
        .map(|(position, transfer)| TradeTransfer {
            id: state.ids.format(IdKind::Entry, position),
            kind: accounts::transfer_code_name(transfer.code).to_string(),
            from: account_label(&state, transfer.debit_account_id),
            to: account_label(&state, transfer.credit_account_id),
            amount: u64::try_from(transfer.amount).unwrap_or(u64::MAX),
            created: rfc3339(Timestamp::from_nanos(command_time(&transfer))),
        })
        .collect();
    Ok(Json(TradeTransfers { data, truncated }))
}

fn transfers_of_trade(state: &AppState, trade: &platform::Trade) -> Result<(Vec<(u64, Transfer)>, bool), ApiError> {
    let mut moments: Vec<u64> = [trade.paid_at, trade.settled_at].into_iter().flatten().map(Timestamp::nanos).collect();
    moments.extend(trade.refunds.iter().map(|refund| refund.created_at.nanos()));
    moments.extend(trade.splits.iter().map(|split| split.created_at.nanos()));
    moments.sort_unstable();
    moments.dedup();
    let reference = Reference::Trade(trade.number).encode();
    let count = state.store.read(|p| p.ledger().transfer_count());
    let (mut found, mut truncated) = (Vec::new(), false);
    for moment in moments {
        let mut position = first_at_or_after(state, moment, count)?;
        let end = position.saturating_add(TRADE_TRANSFERS_SCANNED_MAX).min(count);
        // A command's transfers carry its time in their ids; the ledger's
        // own timestamps are at or just after it.
        while position < end {
            let Some(stored) = state.store.stored_transfer(position).map_err(history_failed)? else { break };
            let transfer = stored.transfer;
            if transfer.timestamp > moment.saturating_add(ledger::NANOS_PER_SECOND) {
                break;
            }
            if transfer.user_data == reference && command_time(&transfer) == moment {
                found.push((position, transfer));
            }
            position += 1;
        }
        truncated |= position == end && end < count;
    }
    found.sort_unstable_by_key(|(position, _)| *position);
    found.dedup_by_key(|(position, _)| *position);
    Ok((found, truncated))
}

/// The first position whose ledger timestamp is at or after `moment`
/// (positions are in timestamp order): a binary search of the history.
fn first_at_or_after(state: &AppState, moment: u64, count: u64) -> Result<u64, ApiError> {
    let (mut low, mut high) = (0u64, count);
    while low < high {
        let middle = low + (high - low) / 2;
        let timestamp =
            state.store.stored_transfer(middle).map_err(history_failed)?.map_or(u64::MAX, |s| s.transfer.timestamp);
        if timestamp < moment {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// A ledger account as a person reads it: a party's id, or the platform's account by name.
pub(crate) fn account_label(state: &AppState, account: u128) -> String {
    let number = platform::PartyNumber::new(account as u64);
    if account == accounts::wallet(number) {
        return super::splits::id_of_party(state, number);
    }
    if account == accounts::fund(number) {
        return format!("{}:fund", super::splits::id_of_party(state, number));
    }
    match account {
        accounts::BANK_CLEARING => "zhifu:bank",
        accounts::REVENUE => "zhifu:revenue",
        accounts::ESCROW => "zhifu:escrow",
        accounts::FROZEN => "zhifu:frozen",
        accounts::CAMPAIGNS => "zhifu:campaigns",
        accounts::MARKETING => "zhifu:marketing",
        accounts::RED_PACKETS => "zhifu:red_packets",
        accounts::LOAN_INCOME => "zhifu:loan_income",
        accounts::FUND_INCOME => "zhifu:fund_income",
        _ => "zhifu",
    }
    .to_string()
}
