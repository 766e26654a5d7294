//! Pre-authorisation through the gateway: `alipay.fund.auth.order.freeze`
//! (by the buyer's payment code), `.unfreeze`,
//! `alipay.fund.auth.operation.detail.query`, and `alipay.trade.pay` with
//! `auth_no` — the same actions as REST (`routes::freezes`). `auth_no` is
//! the freeze's id (`frz_…`), `operation_id` its operation's (`fop_…`).

use std::sync::Arc;

use platform::freezes::{Freeze, FreezeOperation};
use platform::rejection::{Conflict, Limit, Missing};
use platform::{Action, Outcome, PartyNumber, Rejection};
use serde_json::{Map, Value, json};

use super::{Answer, Biz, Failure, fen_to_yuan, format_timestamp, new_trade, trade_fields, updated_trade};
use crate::app::AppState;
use crate::ids::IdKind;

/// A refusal in the words of Alipay's fund-authorisation API.
fn failure_of(rejection: &Rejection) -> Failure {
    let message = crate::error::describe(rejection);
    match rejection {
        Rejection::NotFound(Missing::Freeze) => Failure::business("AUTH_ORDER_NOT_EXIST", message),
        Rejection::Conflict(Conflict::FreezeNotOpen) => Failure::business("ORDER_ALREADY_CLOSED", message),
        Rejection::Conflict(Conflict::FreezeOrderNoUsed | Conflict::FreezeRequestNoUsed) => {
            Failure::business("REQUEST_PARAMS_NOT_MATCH", message)
        }
        Rejection::LimitExceeded(Limit::Frozen { .. }) => Failure::business("REQUEST_AMOUNT_EXCEED", message),
        other => Failure::from_rejection(other),
    }
}

async fn submit(state: &Arc<AppState>, action: Action) -> Result<Outcome, Failure> {
    let outcome = state.submit(None, action).await.map_err(|error| Failure::unavailable(error.message))?;
    match outcome {
        Outcome::Rejected(rejection) => Err(failure_of(&rejection)),
        other => Ok(other),
    }
}

fn freeze_of(outcome: Outcome) -> Result<Freeze, Failure> {
    match outcome {
        Outcome::FreezeUpdated(freeze) => Ok(*freeze),
        _ => Err(Failure::unavailable("unexpected answer from the platform")),
    }
}

fn auth_no(state: &AppState, biz: &Biz<'_>) -> Result<u64, Failure> {
    let text = biz.required("auth_no")?;
    state.ids.parse(IdKind::Freeze, &text).ok_or_else(|| Failure::business("AUTH_ORDER_NOT_EXIST", "no such auth_no"))
}

/// What every answer about one operation carries.
fn operation_fields(state: &AppState, freeze: &Freeze, operation: &FreezeOperation) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("auth_no".into(), json!(state.ids.format(IdKind::Freeze, freeze.number)));
    fields.insert("out_order_no".into(), json!(freeze.out_order_no));
    fields.insert("operation_id".into(), json!(state.ids.format(IdKind::FreezeOperation, operation.number)));
    fields.insert("out_request_no".into(), json!(operation.out_request_no));
    fields.insert("amount".into(), json!(fen_to_yuan(operation.amount.get())));
    fields.insert("status".into(), json!("SUCCESS"));
    fields.insert("gmt_trans".into(), json!(format_timestamp(operation.at)));
    fields.insert("payer_user_id".into(), json!(state.ids.format(IdKind::User, freeze.payer)));
    fields
}

fn operation_named<'a>(freeze: &'a Freeze, out_request_no: &str) -> Result<&'a FreezeOperation, Failure> {
    freeze
        .operations
        .iter()
        .find(|op| op.out_request_no == out_request_no)
        .ok_or_else(|| Failure::unavailable("the operation was not recorded"))
}

/// `alipay.fund.auth.order.freeze`: the buyer's payment code, scanned.
pub(super) async fn freeze(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let kind = biz.optional("auth_code_type")?.unwrap_or_else(|| "bar_code".to_string());
    if kind != "bar_code" {
        return Err(Failure::invalid("isv.invalid-parameter", "auth_code_type must be bar_code"));
    }
    let out_request_no = biz.required("out_request_no")?;
    let action = Action::CreateFreeze {
        merchant,
        code: biz.required("auth_code")?,
        out_order_no: biz.required("out_order_no")?,
        out_request_no: out_request_no.clone(),
        amount: biz.amount("amount")?,
        title: biz.required("order_title")?,
    };
    let freeze = freeze_of(submit(state, action).await?)?;
    Ok(operation_fields(state, &freeze, operation_named(&freeze, &out_request_no)?))
}

/// `alipay.fund.auth.order.unfreeze`: part or all of what is left.
pub(super) async fn unfreeze(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let freeze = auth_no(state, biz)?;
    let out_request_no = biz.required("out_request_no")?;
    let amount = biz.amount("amount")?;
    let action = Action::Unfreeze { freeze, merchant, out_request_no: out_request_no.clone(), amount };
    let freeze = freeze_of(submit(state, action).await?)?;
    Ok(operation_fields(state, &freeze, operation_named(&freeze, &out_request_no)?))
}

/// `alipay.fund.auth.operation.detail.query`: the freeze (by `auth_no` or
/// `out_order_no`) and one of its operations (by `operation_id` or
/// `out_request_no`; the latest if neither).
pub(super) fn detail_query(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let found = match biz.optional("auth_no")? {
        Some(_) => {
            let number = auth_no(state, biz)?;
            state.store.read(|p| p.freeze(number).cloned())
        }
        None => {
            let out_order_no = biz.required("out_order_no")?;
            state.store.read(|p| p.freeze_by_order(merchant, &out_order_no).cloned())
        }
    };
    let freeze = found
        .filter(|freeze| freeze.merchant == merchant)
        .ok_or_else(|| Failure::business("AUTH_ORDER_NOT_EXIST", "no such freeze"))?;
    let by_id = biz.optional("operation_id")?.map(|id| state.ids.parse(IdKind::FreezeOperation, &id));
    let by_request = biz.optional("out_request_no")?;
    let operation = match (by_id, by_request) {
        (Some(number), _) => freeze.operations.iter().find(|op| Some(op.number) == number),
        (None, Some(no)) => freeze.operations.iter().find(|op| op.out_request_no == no),
        (None, None) => freeze.operations.last(),
    }
    .ok_or_else(|| Failure::business("AUTH_OPERATION_NOT_EXIST", "no such operation"))?;
    let mut fields = operation_fields(state, &freeze, operation);
    fields.insert("operation_type".into(), json!(operation.kind.name()));
    fields.insert("order_status".into(), json!(freeze.status.name()));
    fields.insert("order_title".into(), json!(freeze.title));
    fields.insert("total_freeze_amount".into(), json!(fen_to_yuan(freeze.frozen.get())));
    fields.insert("rest_amount".into(), json!(fen_to_yuan(freeze.rest.get())));
    fields.insert("total_pay_amount".into(), json!(fen_to_yuan(freeze.paid.get())));
    fields.insert("gmt_create".into(), json!(format_timestamp(freeze.created_at)));
    Ok(fields)
}

/// `alipay.trade.pay` with `auth_no` (`product_code` `PRE_AUTH`): a new
/// trade paid from the frozen money; `auth_confirm_mode` `COMPLETE`
/// releases the rest.
pub(super) async fn trade_pay(
    state: &Arc<AppState>,
    merchant: PartyNumber,
    biz: &Biz<'_>,
    notify_url: Option<String>,
) -> Answer {
    let freeze = auth_no(state, biz)?;
    let complete = match biz.optional("auth_confirm_mode")?.as_deref() {
        None | Some("NOT_COMPLETE") => false,
        Some("COMPLETE") => true,
        Some(_) => {
            return Err(Failure::invalid(
                "isv.invalid-parameter",
                "auth_confirm_mode must be COMPLETE or NOT_COMPLETE",
            ));
        }
    };
    let trade = new_trade(merchant, biz, None, notify_url, state.clock.now())?;
    let outcome = submit(state, Action::PayFromFreeze { freeze, merchant, trade, complete }).await?;
    let trade = updated_trade(outcome)?;
    if trade.paid_at.is_none() {
        return Err(Failure::business("ACQ.TRADE_STATUS_ERROR", "the trade was not paid"));
    }
    let mut fields = trade_fields(&state.ids, &trade);
    fields.remove("trade_status");
    fields.insert("gmt_payment".to_string(), json!(trade.paid_at.map(format_timestamp)));
    fields.insert("auth_no".to_string(), json!(state.ids.format(IdKind::Freeze, freeze)));
    Ok(fields)
}
