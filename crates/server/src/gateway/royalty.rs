//! Profit sharing through the gateway: royalty relations
//! (`alipay.trade.royalty.relation.bind` / `unbind` / `batchquery`) and
//! `alipay.trade.order.settle` / `.settle.query`, onto the same actions as
//! REST (`routes::splits`). A party is named by its zhifu id (`usr_…`,
//! `mch_…`) where Alipay names a user (`type` `userId`).

use std::sync::Arc;

use platform::{Action, Outcome, PartyNumber};
use serde_json::{Map, Value, json};

use super::{Answer, Biz, Failure, find_trade, format_timestamp, submit};
use crate::app::AppState;
use crate::ids::IdKind;
use crate::routes::splits::{id_of_party, party_of_id};

/// A receiver named as Alipay names one: `type` `userId` and its id.
fn receiver_of(
    state: &AppState,
    entry: &Biz<'_>,
    kind_field: &str,
    account_field: &str,
) -> Result<PartyNumber, Failure> {
    let kind = entry.optional(kind_field)?.unwrap_or_else(|| "userId".to_string());
    if kind != "userId" {
        return Err(Failure::invalid("isv.invalid-parameter", format!("{kind_field} must be userId (a zhifu id)")));
    }
    let account = entry.required(account_field)?;
    party_of_id(state, &account).map_err(|_| {
        Failure::invalid("isv.invalid-parameter", format!("{account_field} must be a zhifu id (usr_… or mch_…)"))
    })
}

fn success() -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("result_code".to_string(), json!("SUCCESS"));
    fields
}

/// `relation.bind` / `relation.unbind`: every receiver of `receiver_list`.
pub(super) async fn bind(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>, bound: bool) -> Answer {
    biz.required("out_request_no")?;
    let receivers = biz.objects("receiver_list")?;
    if receivers.is_empty() || receivers.len() > 20 {
        return Err(Failure::invalid("isv.invalid-parameter", "receiver_list must name 1 to 20 receivers"));
    }
    for entry in &receivers {
        let receiver = receiver_of(state, entry, "type", "account")?;
        submit(state, Action::BindRoyalty { merchant, receiver, bound }).await?;
    }
    Ok(success())
}

/// `relation.batchquery`: the merchant's receivers, a page at a time.
pub(super) fn batch_query(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let number =
        |name: &str, default: usize| -> Result<usize, Failure> {
            match biz.optional(name)? {
                None => Ok(default),
                Some(text) => text.parse::<usize>().ok().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| {
                    Failure::invalid("isv.invalid-parameter", format!("{name} must be a positive number"))
                }),
            }
        };
    let (page, size) = (number("page_num", 1)?, number("page_size", 20)?.min(100));
    let receivers: Vec<PartyNumber> = state.store.read(|p| p.royalty_receivers(merchant, None).collect());
    let list: Vec<Value> = receivers
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|receiver| json!({ "type": "userId", "account": id_of_party(state, *receiver) }))
        .collect();
    let mut fields = success();
    fields.insert("receiver_list".to_string(), json!(list));
    fields.insert("total_record_num".to_string(), json!(receivers.len()));
    fields.insert("total_page_num".to_string(), json!(receivers.len().div_ceil(size)));
    fields.insert("current_page_num".to_string(), json!(page));
    fields.insert("current_page_size".to_string(), json!(list.len()));
    Ok(fields)
}

/// `order.settle`: a split of a settled trade to bound receivers.
pub(super) async fn settle(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let out_request_no = biz.required("out_request_no")?;
    let trade = find_trade(state, merchant, biz)?;
    let parameters = biz.objects("royalty_parameters")?;
    let mut parts = Vec::with_capacity(parameters.len());
    for entry in &parameters {
        if let Some(kind) = entry.optional("royalty_type")?
            && kind != "transfer"
        {
            return Err(Failure::invalid("isv.invalid-parameter", "royalty_type must be transfer"));
        }
        parts.push((receiver_of(state, entry, "trans_in_type", "trans_in")?, entry.amount("amount")?));
    }
    let action = Action::SplitTrade { trade: trade.number, merchant, out_request_no, parts };
    let Outcome::SplitCreated { trade, split } = submit(state, action).await? else {
        return Err(Failure::unavailable("unexpected answer from the platform"));
    };
    let mut fields = Map::new();
    fields.insert("trade_no".to_string(), json!(state.ids.format(IdKind::Trade, trade.number)));
    fields.insert("settle_no".to_string(), json!(state.ids.format(IdKind::Split, split.number)));
    Ok(fields)
}

/// `order.settle.query`: a split by `settle_no`, or by `out_request_no` and the trade.
pub(super) fn settle_query(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let not_found = || Failure::business("ACQ.TRADE_SETTLE_NOT_EXIST", "no such settle");
    let (trade, split) = match biz.optional("settle_no")? {
        Some(settle_no) => {
            let number = state.ids.parse(IdKind::Split, &settle_no).ok_or_else(not_found)?;
            let trade_no = state.store.read(|p| p.trade_of_split(number)).ok_or_else(not_found)?;
            let trade = state
                .store
                .read_with_archive(|p, archive| p.trade(archive, trade_no))
                .map_err(|error| Failure::unavailable(format!("cannot read the trade: {error}")))?
                .filter(|trade| trade.merchant == merchant)
                .ok_or_else(not_found)?;
            let split = trade.splits.iter().find(|split| split.number == number).cloned().ok_or_else(not_found)?;
            (trade, split)
        }
        None => {
            let out_request_no = biz.required("out_request_no")?;
            let trade = find_trade(state, merchant, biz)?;
            let split =
                trade.splits.iter().find(|s| s.out_request_no == out_request_no).cloned().ok_or_else(not_found)?;
            (trade, split)
        }
    };
    let when = format_timestamp(split.created_at);
    let details: Vec<Value> = split
        .parts
        .iter()
        .map(|(receiver, amount)| {
            json!({
                "operation_type": "transfer",
                "execute_dt": when,
                "trans_out": state.ids.format(IdKind::Merchant, trade.merchant),
                "trans_out_type": "userId",
                "trans_in": id_of_party(state, *receiver),
                "trans_in_type": "userId",
                "amount": super::fen_to_yuan(amount.get()),
                "state": "SUCCESS",
            })
        })
        .collect();
    let mut fields = Map::new();
    fields.insert("out_request_no".to_string(), json!(split.out_request_no));
    fields.insert("operation_dt".to_string(), json!(when));
    fields.insert("royalty_detail_list".to_string(), json!(details));
    Ok(fields)
}
