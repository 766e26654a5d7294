//! A party's money over time, read from the ledger's history (each
//! account's transfers are a chain, newest first, in the history file):
//! balance transactions — every posted change of the wallet, a fee beside
//! the movement it was taken on, with the balance after — and the balance
//! at a past time. Nothing is copied: the history already keeps it all.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
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
}

/// What a transfer did to `wallet`'s posted balance.
fn change_of(transfer: &Transfer, wallet: u128) -> i128 {
    if transfer.flags.contains(TransferFlags::PENDING) || transfer.flags.contains(TransferFlags::VOID_PENDING) {
        return 0;
    }
    let amount = i128::try_from(transfer.amount).unwrap_or(i128::MAX);
    if transfer.credit_account_id == wallet { amount } else { -amount }
}

fn is_fee(code: u16) -> bool {
    matches!(
        code,
        accounts::CODE_TRANSFER_FEE
            | accounts::CODE_WITHDRAWAL_FEE
            | accounts::CODE_TRADE_FEE
            | accounts::CODE_TRADE_FEE_RETURN
    )
}

/// The command time of a transfer (its id's high half).
fn command_time(transfer: &Transfer) -> u64 {
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
}

impl Gathering {
    fn takes(&self, transfer: &Transfer) -> bool {
        let fee = is_fee(transfer.code);
        self.user_data == transfer.user_data && self.time == command_time(transfer) && (fee || !self.has_main)
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
    ApiError::invalid(format!(
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
                    gathering.fee += change;
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
                });
            }
        }
        balance = balance.saturating_add_signed(-change);
    }
    Err(too_far())
}

#[utoipa::path(get, path = "/v1/balance-transactions", tag = "parties", params(BalanceTransactionParams),
    responses((status = 200, body = BalanceTransactionPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn balance_transactions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<BalanceTransactionParams>,
) -> Result<Json<BalanceTransactionPage>, ApiError> {
    let party = caller.require_party(&[PartyKind::User, PartyKind::Merchant])?;
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
