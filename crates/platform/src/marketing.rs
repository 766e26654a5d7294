//! Marketing: campaigns that pay part of a trade from a budget, and red
//! packets ("lucky money"). Both hold their money in a system account that
//! may never go below zero, so neither can pay out more than it holds,
//! whatever the concurrency: the ledger refuses the transfer first.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngCore as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, CAMPAIGNS, MARKETING, RED_PACKETS, Reference};
use crate::command::{NewCampaign, Outcome, PartyKind, Rejection};
use crate::platform::{AMOUNT_MAX, Platform};
use crate::rejection::{Conflict, Invalid, Limit, Missing, conflict, invalid};
use crate::units::{CampaignNumber, CouponNumber, Fen, PartyNumber, RedPacketNumber, Timestamp, TradeNumber};

/// A red packet is split into at most this many shares.
pub const RED_PACKET_SHARES_MAX: u32 = 1_000;
// A red packet's shares (at least a fen each) fit the largest amount.
const _: () = assert!((RED_PACKET_SHARES_MAX as u64) < AMOUNT_MAX);

/// Unclaimed money goes back to the sender after this long.
pub const RED_PACKET_LIFETIME_NANOS: u64 = ledger::NANOS_PER_DAY;
/// A greeting or campaign name is at most this long.
pub const TEXT_CHARS_MAX: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SplitMode {
    Equal,
    Random,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RedPacket {
    pub number: RedPacketNumber,
    pub sender: PartyNumber,
    pub total: Fen,
    pub mode: SplitMode,
    pub greeting: Option<String>,
    /// Every share, fixed when the packet is made; claims take them in order.
    pub shares: Vec<Fen>,
    /// (user, amount) in claim order.
    pub claims: Vec<(PartyNumber, Fen)>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// What went back to the sender at expiry.
    pub returned: Fen,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Campaign {
    pub number: CampaignNumber,
    /// The merchant paying for it, or `None` for the platform.
    pub sponsor: Option<PartyNumber>,
    pub name: String,
    pub budget: Fen,
    pub spent: Fen,
    pub discount: Fen,
    pub min_spend: Fen,
    pub per_user_limit: u32,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// Discounts given, per user.
    pub uses: BTreeMap<PartyNumber, u32>,
    /// Set at the end, when the unspent budget went back.
    pub returned: Option<Fen>,
    /// Paused by its sponsor: no discounts until resumed.
    pub paused: bool,
}

/// A coupon: one use of its campaign's discount, for one user, until it expires.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Coupon {
    pub number: CouponNumber,
    pub campaign: CampaignNumber,
    pub user: PartyNumber,
    pub expires_at: Timestamp,
    /// The trade it was used on.
    pub used_on: Option<TradeNumber>,
}

impl Campaign {
    pub fn remaining(&self) -> Fen {
        self.budget - self.spent - self.returned.unwrap_or_default()
    }
}

/// Campaigns, their coupons and red packets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marketing {
    red_packets: BTreeMap<RedPacketNumber, RedPacket>,
    /// What each sender's red packets still hold (its `held` money).
    unclaimed: BTreeMap<PartyNumber, Fen>,
    campaigns: BTreeMap<CampaignNumber, Campaign>,
    coupons: BTreeMap<CouponNumber, Coupon>,
    /// Each user's coupons, so a buyer's can be listed without a scan.
    coupons_of: BTreeSet<(PartyNumber, CouponNumber)>,
    /// (when, red packet or campaign number): expiries and ends.
    due: BTreeSet<(Timestamp, u64)>,
}

impl Marketing {
    pub(crate) fn campaign(&self, number: CampaignNumber) -> Option<&Campaign> {
        self.campaigns.get(&number)
    }

    pub(crate) fn campaign_mut(&mut self, number: CampaignNumber) -> Option<&mut Campaign> {
        self.campaigns.get_mut(&number)
    }

    pub(crate) fn coupon(&self, number: CouponNumber) -> Option<&Coupon> {
        self.coupons.get(&number)
    }

    pub(crate) fn coupon_mut(&mut self, number: CouponNumber) -> Option<&mut Coupon> {
        self.coupons.get_mut(&number)
    }

    /// The index of coupons by user names exactly the coupons there are.
    pub(crate) fn coupon_index_holds(&self) -> bool {
        self.coupons_of.len() == self.coupons.len()
            && self.coupons_of.iter().all(|(user, number)| self.coupons.get(number).is_some_and(|c| c.user == *user))
    }

    /// What the sender's open red packets hold.
    pub(crate) fn unclaimed_of(&self, sender: PartyNumber) -> Fen {
        self.unclaimed.get(&sender).copied().unwrap_or_default()
    }

    /// When the next red packet expires or campaign ends.
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        self.due.first().map(|&(at, _)| at)
    }

    /// The budgets campaigns have left: what the campaign pool must hold.
    pub(crate) fn budgets_left(&self) -> i128 {
        self.campaigns.values().map(|campaign| i128::from(campaign.remaining())).sum()
    }

    /// The shares red packets have left: what the red packet pool must hold.
    pub(crate) fn shares_left(&self) -> i128 {
        let left = |packet: &RedPacket| {
            let claimed: Fen = packet.claims.iter().map(|&(_, amount)| amount).sum();
            i128::from(packet.total - claimed - packet.returned)
        };
        self.red_packets.values().map(left).sum()
    }
}

/// Splits `total` into `count` shares of at least 1 fen that sum to `total`.
/// `Equal`: as even as fen allow (the first shares take the odd fen).
/// `Random`: the "double mean" rule of lucky money — each share is drawn
/// uniformly between 1 fen and twice the mean of what is left (leaving at
/// least 1 fen for every later share), and the last takes the rest — from a
/// generator seeded by the packet, so that replay draws the same shares.
pub fn split(total: u64, count: u32, mode: SplitMode, seed: u64) -> Vec<u64> {
    let count = u64::from(count);
    crate::invariant::check(count >= 1 && total >= count, format_args!("{total} fen cannot make {count} shares"));
    match mode {
        SplitMode::Equal => (0..count).map(|i| total / count + u64::from(i < total % count)).collect(),
        SplitMode::Random => {
            // PCG's raw output is specified (rand_pcg keeps it value-stable),
            // so a replay in any build draws the same shares.
            let mut generator = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
            let mut next = move || generator.next_u64();
            let mut left = total;
            let mut shares = Vec::with_capacity(count as usize);
            for remaining_shares in (2..=count).rev() {
                let upper = (2 * left / remaining_shares).min(left - (remaining_shares - 1)).max(1);
                let share = 1 + next() % upper;
                let share = share.min(left - (remaining_shares - 1));
                shares.push(share);
                left -= share;
            }
            shares.push(left);
            shares
        }
    }
}

impl Platform {
    /// Every red packet, oldest first.
    pub fn red_packets(&self) -> impl Iterator<Item = &RedPacket> {
        self.state.marketing.red_packets.values()
    }

    pub fn red_packet(&self, number: RedPacketNumber) -> Option<&RedPacket> {
        self.state.marketing.red_packets.get(&number)
    }

    /// Every campaign, oldest first.
    pub fn campaigns(&self) -> impl Iterator<Item = &Campaign> {
        self.state.marketing.campaigns.values()
    }

    pub fn campaign(&self, number: CampaignNumber) -> Option<&Campaign> {
        self.state.marketing.campaigns.get(&number)
    }

    /// The campaigns numbered below `before`, newest first.
    pub fn campaigns_before(&self, before: CampaignNumber) -> impl Iterator<Item = &Campaign> {
        self.state.marketing.campaigns.range(..before).rev().map(|(_, campaign)| campaign)
    }

    pub(crate) fn create_red_packet(
        &mut self,
        now: Timestamp,
        sender: PartyNumber,
        total: Fen,
        count: u32,
        mode: SplitMode,
        greeting: &Option<String>,
    ) -> Outcome {
        if !self.state.parties.is(sender, PartyKind::User) {
            return Outcome::Rejected(Rejection::NotFound(Missing::Sender));
        }
        if count == 0 || count > RED_PACKET_SHARES_MAX {
            return invalid(Invalid::RedPacketCount);
        }
        // What the sender's open packets hold is counted in fen: a wallet the
        // ledger lets grow past that (it counts in u128) cannot send more.
        let held = self.state.marketing.unclaimed_of(sender);
        if total.get() < u64::from(count) || total.get() > AMOUNT_MAX || held.checked_add(total).is_none() {
            return invalid(Invalid::RedPacketTotal);
        }
        if greeting.as_ref().is_some_and(|g| crate::text::check_optional_text(g, TEXT_CHARS_MAX).is_err()) {
            return invalid(Invalid::Greeting);
        }
        let number = RedPacketNumber::new(self.take_number());
        let transfer = self.new_transfer(
            now,
            accounts::wallet(sender),
            RED_PACKETS,
            total,
            accounts::CODE_RED_PACKET,
            Reference::RedPacket(number),
        );
        if let Err(rejection) = self.apply_chain(now, &[transfer]) {
            return Outcome::Rejected(rejection);
        }
        let seed = crate::platform::hash_of(&[number.get(), sender.get(), total.get(), u64::from(count), now.nanos()]);
        let shares = split(total.get(), count, mode, seed).into_iter().map(Fen::new).collect();
        let expires_at = now.plus_nanos(RED_PACKET_LIFETIME_NANOS);
        let packet = RedPacket {
            number,
            sender,
            total,
            mode,
            greeting: greeting.clone(),
            shares,
            claims: Vec::new(),
            created_at: now,
            expires_at,
            returned: Fen::ZERO,
        };
        self.state.marketing.red_packets.insert(number, packet);
        *self.state.marketing.unclaimed.entry(sender).or_default() += total;
        self.state.marketing.due.insert((expires_at, number.get()));
        Outcome::RedPacketCreated { number, total, count }
    }

    pub(crate) fn claim_red_packet(&mut self, now: Timestamp, number: RedPacketNumber, user: PartyNumber) -> Outcome {
        if !self.state.parties.is(user, PartyKind::User) {
            return Outcome::Rejected(Rejection::NotFound(Missing::User));
        }
        let Some(packet) = self.state.marketing.red_packets.get(&number) else {
            return Outcome::Rejected(Rejection::NotFound(Missing::RedPacket));
        };
        if packet.claims.iter().any(|(claimer, _)| *claimer == user) {
            return conflict(Conflict::RedPacketClaimedAlready);
        }
        if packet.expires_at <= now || !packet.returned.is_zero() {
            return conflict(Conflict::RedPacketExpired);
        }
        let Some(&amount) = packet.shares.get(packet.claims.len()) else {
            return conflict(Conflict::RedPacketEmpty);
        };
        let sender = packet.sender;
        let transfer = self.new_transfer(
            now,
            RED_PACKETS,
            accounts::wallet(user),
            amount,
            accounts::CODE_RED_PACKET_CLAIM,
            Reference::RedPacket(number),
        );
        if let Err(rejection) = self.apply_chain(now, &[transfer]) {
            return Outcome::Rejected(rejection);
        }
        if let Some(packet) = self.state.marketing.red_packets.get_mut(&number) {
            packet.claims.push((user, amount));
        }
        self.release_unclaimed(sender, amount);
        Outcome::RedPacketClaimed { number, amount }
    }

    pub(crate) fn create_campaign(&mut self, now: Timestamp, new: &NewCampaign) -> Outcome {
        let NewCampaign { sponsor, ref name, budget, discount, min_spend, per_user_limit, starts_at, ends_at } = *new;
        if let Some(merchant) = sponsor
            && !self.state.parties.is(merchant, PartyKind::Merchant)
        {
            return Outcome::Rejected(Rejection::NotFound(Missing::Sponsor));
        }
        if crate::text::check_display_text(name, TEXT_CHARS_MAX).is_err() {
            return invalid(Invalid::CampaignName);
        }
        if budget.is_zero() || budget.get() > AMOUNT_MAX || discount.is_zero() {
            return invalid(Invalid::BudgetOrDiscount);
        }
        if discount > budget {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::DiscountOverBudget));
        }
        if min_spend.get() > AMOUNT_MAX || per_user_limit == 0 {
            return invalid(Invalid::MinSpendOrPerUserLimit);
        }
        if ends_at <= starts_at || ends_at <= now {
            return conflict(Conflict::CampaignDates);
        }
        let number = CampaignNumber::new(self.take_number());
        let source = sponsor.map_or(MARKETING, accounts::wallet);
        let transfer = self.new_transfer(
            now,
            source,
            CAMPAIGNS,
            budget,
            accounts::CODE_CAMPAIGN_BUDGET,
            Reference::Campaign(number),
        );
        if let Err(rejection) = self.apply_chain(now, &[transfer]) {
            return Outcome::Rejected(rejection);
        }
        if let Some(merchant) = sponsor {
            self.book_merchant(merchant, -i128::from(budget));
        }
        let campaign = Campaign {
            number,
            sponsor,
            name: name.to_string(),
            budget,
            spent: Fen::ZERO,
            discount,
            min_spend,
            per_user_limit,
            starts_at,
            ends_at,
            uses: BTreeMap::new(),
            returned: None,
            paused: false,
        };
        self.state.marketing.campaigns.insert(number, campaign.clone());
        self.state.marketing.due.insert((ends_at, number.get()));
        Outcome::CampaignCreated(Box::new(campaign))
    }

    /// A red packet's share was claimed or its rest returned: no longer its sender's held money.
    fn release_unclaimed(&mut self, sender: PartyNumber, amount: Fen) {
        if let Some(held) = self.state.marketing.unclaimed.get_mut(&sender) {
            *held -= amount;
            if held.is_zero() {
                self.state.marketing.unclaimed.remove(&sender);
            }
        }
    }

    /// Pauses or resumes a campaign of `sponsor`'s (an ended one stays ended).
    pub(crate) fn pause_campaign(
        &mut self,
        number: CampaignNumber,
        sponsor: Option<PartyNumber>,
        paused: bool,
    ) -> Outcome {
        let Some(campaign) = self.state.marketing.campaign_mut(number).filter(|c| c.sponsor == sponsor) else {
            return Outcome::Rejected(Rejection::NotFound(Missing::Campaign));
        };
        if campaign.returned.is_some() {
            return conflict(Conflict::CampaignEnded);
        }
        campaign.paused = paused;
        Outcome::CampaignCreated(Box::new(campaign.clone()))
    }

    pub fn coupon(&self, number: CouponNumber) -> Option<&Coupon> {
        self.state.marketing.coupons.get(&number)
    }

    /// A user's coupons, newest first, from just before `before` (every
    /// one when `None`).
    pub fn coupons_of(&self, user: PartyNumber, before: Option<CouponNumber>) -> impl Iterator<Item = &Coupon> {
        let end = before.unwrap_or(CouponNumber::new(u64::MAX));
        let marketing = &self.state.marketing;
        marketing
            .coupons_of
            .range((user, CouponNumber::new(0))..(user, end))
            .rev()
            .filter_map(|(_, number)| marketing.coupons.get(number))
    }

    pub(crate) fn issue_coupon(
        &mut self,
        now: Timestamp,
        campaign: CampaignNumber,
        issuer: Option<PartyNumber>,
        user: PartyNumber,
        expires_at: Option<Timestamp>,
    ) -> Outcome {
        let Some(found) = self.state.marketing.campaigns.get(&campaign).filter(|c| c.sponsor == issuer) else {
            return Outcome::Rejected(Rejection::NotFound(Missing::Campaign));
        };
        if !self.state.parties.is(user, PartyKind::User) {
            return Outcome::Rejected(Rejection::NotFound(Missing::User));
        }
        let expires_at = expires_at.unwrap_or(found.ends_at).min(found.ends_at);
        if expires_at <= now || found.returned.is_some() {
            return conflict(Conflict::CouponWouldExpireFirst);
        }
        let number = CouponNumber::new(self.take_number());
        let coupon = Coupon { number, campaign, user, expires_at, used_on: None };
        self.state.marketing.coupons.insert(number, coupon.clone());
        self.state.marketing.coupons_of.insert((user, number));
        Outcome::CouponIssued(coupon)
    }

    /// Returns what expired red packets and ended campaigns still hold.
    /// Done at the tick's time, not the due time: the ledger refuses
    /// transfer ids older than its horizon, and a tick after an outage comes
    /// long after the due time.
    pub(crate) fn run_marketing_due(&mut self, now: Timestamp, budget: &mut u32) {
        while let Some(&(due_at, number)) = self.state.marketing.due.first() {
            if due_at > now || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.state.marketing.due.pop_first();
            // Packets and campaigns share the number sequence and this queue.
            let (packet, campaign) = (RedPacketNumber::new(number), CampaignNumber::new(number));
            if self.state.marketing.red_packets.contains_key(&packet) {
                self.return_red_packet(now, packet);
            } else if self.state.marketing.campaigns.contains_key(&campaign) {
                self.return_campaign(now, campaign);
            }
        }
    }

    /// An expired red packet's unclaimed shares go back to its sender.
    fn return_red_packet(&mut self, now: Timestamp, number: RedPacketNumber) {
        let Some(packet) = self.state.marketing.red_packets.get(&number) else { return };
        let left: Fen = packet.shares[packet.claims.len()..].iter().copied().sum();
        if left.is_zero() || !packet.returned.is_zero() {
            return;
        }
        let sender = packet.sender;
        let back = self.new_transfer(
            now,
            RED_PACKETS,
            accounts::wallet(sender),
            left,
            accounts::CODE_RED_PACKET_RETURN,
            Reference::RedPacket(number),
        );
        // The pool holds every unclaimed share and wallets take any credit.
        if let Err(refused) = self.apply_chain(now, &[back]) {
            crate::invariant::broken(format_args!("red packet {number}'s return was refused: {refused:?}"));
        }
        if let Some(packet) = self.state.marketing.red_packets.get_mut(&number) {
            packet.returned = left;
        }
        self.release_unclaimed(sender, left);
    }

    /// An ended campaign's unspent budget goes back to its sponsor (or the platform's marketing).
    fn return_campaign(&mut self, now: Timestamp, number: CampaignNumber) {
        let Some(campaign) = self.state.marketing.campaigns.get(&number) else { return };
        if campaign.returned.is_some() {
            return;
        }
        let (left, sponsor) = (campaign.remaining(), campaign.sponsor);
        if !left.is_zero() {
            let target = sponsor.map_or(MARKETING, accounts::wallet);
            let back = self.new_transfer(
                now,
                CAMPAIGNS,
                target,
                left,
                accounts::CODE_CAMPAIGN_RETURN,
                Reference::Campaign(number),
            );
            // The pool holds every unspent budget and the target takes any credit.
            if let Err(refused) = self.apply_chain(now, &[back]) {
                crate::invariant::broken(format_args!("campaign {number}'s return was refused: {refused:?}"));
            }
            if let Some(merchant) = sponsor {
                self.book_merchant(merchant, i128::from(left));
            }
        }
        if let Some(campaign) = self.state.marketing.campaigns.get_mut(&number) {
            campaign.returned = Some(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_split_sums_exactly_with_every_share_at_least_one_fen() {
        for (total, count) in [(1, 1), (10, 10), (1_000, 7), (100, 3), (1_000_000, 1_000), (1_001, 1_000)] {
            for mode in [SplitMode::Equal, SplitMode::Random] {
                for seed in 0..20 {
                    let shares = split(total, count, mode, seed);
                    assert_eq!(shares.len(), count as usize);
                    assert_eq!(shares.iter().sum::<u64>(), total, "{total} in {count} ({mode:?}, seed {seed})");
                    assert!(shares.iter().all(|&s| s >= 1));
                }
            }
        }
        assert_eq!(split(10, 3, SplitMode::Equal, 0), vec![4, 3, 3]);
    }

    #[test]
    fn random_splits_vary_but_replay_the_same() {
        assert_eq!(split(10_000, 10, SplitMode::Random, 42), split(10_000, 10, SplitMode::Random, 42));
        assert_ne!(split(10_000, 10, SplitMode::Random, 42), split(10_000, 10, SplitMode::Random, 43));
        // No share is above twice the mean of what was left when it was drawn.
        let shares = split(10_000, 10, SplitMode::Random, 7);
        let mut left = 10_000;
        for (i, &share) in shares.iter().enumerate().take(9) {
            assert!(share <= 2 * left / (10 - i as u64), "{shares:?}");
            left -= share;
        }
    }
}
