//! Profit sharing (分账): a merchant binds receivers (Alipay's royalty
//! relations), then moves parts of what a settled trade paid it to them,
//! each request one linked chain of ledger transfers (merchant → receiver).
//!
//! A trade's splits never exceed what it left the merchant when they are
//! made: its amount less refunds, the merchant's fee and earlier splits.
//! A refund after a split is paid by the merchant alone: splits are not
//! taken back (Alipay's default, without `refund_royalty_parameters`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::PartyKind;
use crate::accounts::{self, Reference};
use crate::command::{Outcome, Rejection};
use crate::platform::Platform;
use crate::rejection::{Conflict, Invalid, Limit, Missing};
use crate::trades::{Split, TradeStatus};
use crate::units::{Fen, PartyNumber, Timestamp, TradeNumber};

/// Receivers one merchant may have bound at once.
pub const RELATIONS_PER_MERCHANT_MAX: u32 = 1_000;
/// Split requests on one trade.
pub const SPLITS_PER_TRADE_MAX: usize = 20;
/// Receivers in one split request.
pub const PARTS_PER_SPLIT_MAX: usize = 20;

/// Who may receive each merchant's splits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Royalties {
    relations: BTreeSet<(PartyNumber, PartyNumber)>,
    counts: BTreeMap<PartyNumber, u32>,
    /// Each split's trade, by the split's (settle) number.
    trade_of_split: BTreeMap<u64, TradeNumber>,
}

impl Royalties {
    fn is_bound(&self, merchant: PartyNumber, receiver: PartyNumber) -> bool {
        self.relations.contains(&(merchant, receiver))
    }
}

fn refused(rejection: Rejection) -> Outcome {
    Outcome::Rejected(rejection)
}

impl Platform {
    /// The trade a split (by its settle number) was made on.
    pub fn trade_of_split(&self, split: u64) -> Option<TradeNumber> {
        self.state.royalties.trade_of_split.get(&split).copied()
    }

    /// The receivers bound to `merchant`, in number order, after `after`.
    pub fn royalty_receivers(
        &self,
        merchant: PartyNumber,
        after: Option<PartyNumber>,
    ) -> impl Iterator<Item = PartyNumber> + '_ {
        let start = after.map_or(PartyNumber::new(0), |after| PartyNumber::new(after.get().saturating_add(1)));
        self.state
            .royalties
            .relations
            .range((merchant, start)..=(merchant, PartyNumber::new(u64::MAX)))
            .map(|(_, r)| *r)
    }

    pub(crate) fn bind_royalty(&mut self, merchant: PartyNumber, receiver: PartyNumber, bound: bool) -> Outcome {
        if !self.state.parties.is(merchant, PartyKind::Merchant) {
            return refused(Rejection::NotFound(Missing::Merchant));
        }
        if !self.state.parties.contains(receiver) || receiver == merchant {
            return refused(Rejection::NotFound(Missing::Recipient));
        }
        let royalties = &mut self.state.royalties;
        let count = royalties.counts.entry(merchant).or_insert(0);
        if bound {
            if !royalties.relations.contains(&(merchant, receiver)) {
                if *count >= RELATIONS_PER_MERCHANT_MAX {
                    return refused(Rejection::LimitExceeded(Limit::RoyaltyRelations));
                }
                royalties.relations.insert((merchant, receiver));
                *count += 1;
            }
        } else if royalties.relations.remove(&(merchant, receiver)) {
            *count -= 1;
        }
        if royalties.counts.get(&merchant) == Some(&0) {
            royalties.counts.remove(&merchant);
        }
        Outcome::RoyaltyChanged
    }

    pub(crate) fn split_trade(
        &mut self,
        now: Timestamp,
        number: TradeNumber,
        merchant: PartyNumber,
        out_request_no: &str,
        parts: &[(PartyNumber, Fen)],
    ) -> Outcome {
        let trade = match self.live_trade(number) {
            Ok(trade) if trade.merchant == merchant => trade,
            Ok(_) => return refused(Rejection::NotFound(Missing::Trade)),
            Err(outcome) => return outcome,
        };
        if let Some(existing) = trade.splits.iter().find(|split| split.out_request_no == out_request_no) {
            return if existing.parts == parts {
                Outcome::SplitCreated { trade: Arc::clone(&trade), split: existing.clone() }
            } else {
                refused(Rejection::Conflict(Conflict::SplitRequestNoUsed))
            };
        }
        if let Err(outcome) = self.check_split(&trade, out_request_no, parts) {
            return outcome;
        }
        let total: Fen = parts.iter().map(|(_, amount)| *amount).sum();
        // What the trade left the merchant: paid, less refunds, fee and earlier splits.
        let left = trade.amount.saturating_sub(trade.refunded).saturating_sub(trade.fee).saturating_sub(trade.split);
        if total > left {
            return refused(Rejection::LimitExceeded(Limit::Splittable { left }));
        }
        let reference = Reference::Trade(number);
        let from = accounts::wallet(merchant);
        let chain: Vec<_> = parts
            .iter()
            .map(|(receiver, amount)| {
                let to = accounts::wallet(*receiver);
                self.new_transfer(now, from, to, *amount, accounts::CODE_TRADE_SPLIT, reference)
            })
            .collect();
        if let Err(rejection) = self.apply_chain(now, &chain) {
            return refused(rejection);
        }
        self.book_merchant(merchant, -i128::from(total));
        for (receiver, amount) in parts {
            self.book_merchant(*receiver, i128::from(*amount));
        }
        let split = Split {
            number: self.take_number(),
            out_request_no: out_request_no.to_string(),
            parts: parts.to_vec(),
            created_at: now,
        };
        self.state.royalties.trade_of_split.insert(split.number, number);
        drop(trade);
        let updated = self.update_trade(number, |trade| {
            trade.split += total;
            trade.splits.push(split.clone());
        });
        Outcome::SplitCreated { trade: updated, split }
    }

    /// Why a split request cannot be made: its form, the trade's state, its receivers.
    fn check_split(
        &self,
        trade: &crate::Trade,
        out_request_no: &str,
        parts: &[(PartyNumber, Fen)],
    ) -> Result<(), Outcome> {
        if !crate::trade_actions::valid_reference(out_request_no) {
            return Err(refused(Rejection::Invalid(Invalid::SplitRequestNo)));
        }
        if parts.is_empty() || parts.len() > PARTS_PER_SPLIT_MAX {
            return Err(refused(Rejection::Invalid(Invalid::SplitParts)));
        }
        if parts.iter().any(|(_, amount)| amount.is_zero() || amount.get() > crate::AMOUNT_MAX) {
            return Err(refused(Rejection::Invalid(Invalid::Amount)));
        }
        if trade.splits.len() >= SPLITS_PER_TRADE_MAX {
            return Err(refused(Rejection::LimitExceeded(Limit::SplitsPerTrade)));
        }
        if trade.status != TradeStatus::TradeSuccess {
            return Err(refused(Rejection::Conflict(Conflict::TradeNotSettled)));
        }
        if parts.iter().any(|(receiver, _)| !self.state.royalties.is_bound(trade.merchant, *receiver)) {
            return Err(refused(Rejection::Conflict(Conflict::ReceiverNotBound)));
        }
        Ok(())
    }
}
