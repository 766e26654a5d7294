//! `Platform`: the products as one deterministic state machine over a
//! ledger. Every movement of money is a ledger transfer or a linked chain of
//! them; the products' own records (parties, withdrawals, quotas,
//! idempotency records) change in the same command, so a command's money and
//! its records commit together.

use journal::{ArchiveSource, DecodeError, JournalError, StateMachine};
use ledger::{AccountFlags, CreateTransferResult, Ledger, LedgerConfig, NewAccount, Transfer, TransferFlags};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, BANK_CLEARING, LEDGER_CNY, REVENUE, Reference};
use crate::at_rest::ArchiveRecord;
use crate::calendar::Date;
use crate::command::{Action, Command, Outcome, PartyKind, PlatformConfig, Rejection};
use crate::fees::{FeeSchedule, Product, QuotaPeriod};
use crate::rejection::{Conflict, Invalid, Missing, invalid};
use crate::units::{Fen, PartyNumber, Timestamp, TradeNumber};

/// The largest amount of one movement: 10^15 fen (10 trillion yuan).
pub const AMOUNT_MAX: u64 = 1_000_000_000_000_000;
/// The gateway's key, as PEM, is at most this long (RSA 2048 takes 1.7 KB).
const GATEWAY_KEY_BYTES_MAX: usize = 8 * 1024;
/// Party names are at most this many characters.
pub const NAME_CHARS_MAX: usize = 200;
/// The platform's format (`StateMachine::FORMAT`): a change to what a
/// command does or to `State`'s fields or their encoding takes the next
/// number, so that a data directory or snapshot of another version is
/// reported as such rather than replayed wrongly or taken for damage.
/// (3: the archive's records relative, `at_rest`, and its offsets are
/// state; 4: parties in a `Numbered`; 5: choices by `hash_of`;
/// 6: trades chained by party, refunds return fees and discounts, the
/// platform's secret, unclaimed red packets by sender, credit net of money
/// sent back, remembered rejections counted by caller; 7: the gateway's key,
/// the products' books, bounded ticks; 8: rejections as codes, without text;
/// 9: red packets split by PCG; 10: the state grouped by product; 11: a
/// merchant's trade fee at most the amount; 12: keys, staff, webhook
/// endpoints and the audit log in `access`, deliveries per endpoint; 13:
/// profit sharing; 14: disputes, pre-authorisation; 15: takings by day,
/// refunds in the trades' index; 16: the due queue's chunks span at most
/// 2^27 ns, which older chunks may not.)
const STATE_FORMAT: u32 = 16;
/// A merchant's gateway key, as PEM, is at most this long.
pub const APP_KEY_BYTES_MAX: usize = 8 * 1024;

/// Due items one tick does at most (trades closed or settled, withdrawals
/// answered, codes, red packets and campaigns expired, idempotency keys
/// forgotten): settling a trade parked in the archive takes a few
/// microseconds, so a tick holds the writer for tens of milliseconds at most.
pub const TICK_ITEMS_MAX: u32 = 4_096;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    pub number: PartyNumber,
    pub kind: PartyKind,
    pub name: String,
    pub fee_rate_bps: u32,
    /// For the Alipay-compatible gateway: the merchant's RSA public key (PEM).
    pub app_public_key: Option<String>,
    pub created_at: Timestamp,
    /// The party's newest trade (a merchant's newest made, a buyer's newest
    /// paid or made for it): the head of its chain of trades.
    pub last_trade: Option<TradeNumber>,
}

/// Everything but the ledger; ordered maps only, so that its encoding (and
/// so the digest, `journal::digest`) is the same for equal states.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) config: PlatformConfig,
    /// Public numbers of parties, top-ups, transfers and withdrawals.
    pub(crate) next_number: u64,
    /// Serial part of ledger transfer ids.
    pub(crate) next_transfer_serial: u64,
    pub(crate) parties: Parties,
    pub(crate) fees: crate::fees::Fees,
    pub(crate) bank: crate::bank::Bank,
    pub(crate) idempotency: crate::idempotency::Idempotency,
    pub(crate) trades: crate::trade_actions::TradeBook,
    pub(crate) events: crate::deliveries::EventBook,
    /// Records moved out of memory, not yet taken by the journal.
    pub(crate) archive: crate::archive::Outbox,
    pub(crate) fund: crate::fund::FundState,
    pub(crate) loans: crate::loans::LoanBook,
    pub(crate) marketing: crate::marketing::Marketing,
    /// The operator's secret, from which the server derives what must come
    /// out the same on every node and after every replay (public ids,
    /// retried keys): made once, by a command, so the log carries it.
    pub(crate) secret: Option<[u8; 32]>,
    /// The gateway's signing key (PKCS#8 PEM), once made.
    pub(crate) gateway_key: Option<String>,
    /// What the products say their accounts hold (see `books`).
    pub(crate) books: crate::books::Books,
    /// Keys, staff, webhook endpoints, the audit log.
    pub(crate) access: crate::access::Access,
    /// Who may receive each merchant's profit sharing.
    pub(crate) royalties: crate::splits::Royalties,
    /// Disputes on escrow trades.
    pub(crate) disputes: crate::disputes::Disputes,
    /// Pre-authorisations.
    pub(crate) freezes: crate::freezes::Freezes,
    /// The time of the last command applied: a simulated clock restarts
    /// from here, never before what the platform has already seen.
    pub(crate) last_command_at: Timestamp,
    /// Merchants' takings of the last days.
    pub(crate) takings: crate::takings::Takings,
}

pub struct Platform {
    pub(crate) ledger: Ledger,
    pub(crate) state: State,
    /// What the command being applied did to trades (empty between commands).
    pub(crate) touched: crate::trade_actions::Touched,
}

/// The parties, by number (their keys are in `access`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Parties {
    /// By number (see `Numbered`: a full day's 8 million buyers, looked up
    /// for nearly every command).
    by_number: crate::numbered::Numbered<Party>,
    /// The merchants, oldest first (few beside the users: a search by a
    /// merchant's reference across all of them asks each one's index).
    merchants: Vec<PartyNumber>,
}

impl Parties {
    pub(crate) fn get(&self, number: PartyNumber) -> Option<&Party> {
        self.by_number.get(number.get())
    }

    pub(crate) fn get_mut(&mut self, number: PartyNumber) -> Option<&mut Party> {
        self.by_number.get_mut(number.get())
    }

    pub(crate) fn contains(&self, number: PartyNumber) -> bool {
        self.by_number.contains(number.get())
    }

    /// Whether `number` is a party of this kind.
    pub(crate) fn is(&self, number: PartyNumber, kind: PartyKind) -> bool {
        self.get(number).is_some_and(|party| party.kind == kind)
    }

    /// Adds a party, numbered above every party before it.
    pub(crate) fn push(&mut self, party: Party) {
        if party.kind == PartyKind::Merchant {
            self.merchants.push(party.number);
        }
        self.by_number.push(party.number.get(), party);
    }

    pub(crate) fn merchants(&self) -> &[PartyNumber] {
        &self.merchants
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Party> + '_ {
        self.by_number.values()
    }
}

/// The secrets a new party comes with.
struct PartyKeys<'a> {
    key_hash: &'a [u8; 32],
    webhook_secret: &'a str,
    app_public_key: &'a Option<String>,
}

/// What a party's wallet holds, exactly (a ledger balance is 128 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    /// What the party can spend now.
    pub available: u128,
    /// The party's money that is on its way but not yet gone: pending
    /// transfers (withdrawals under way) and its red packets' unclaimed
    /// shares. Escrow payments have left the buyer's wallet and wait in the
    /// escrow account.
    pub held: u128,
}

impl Platform {
    pub fn party(&self, number: PartyNumber) -> Option<&Party> {
        self.state.parties.get(number)
    }

    /// The operator's secret (see `Action::InitializeSecret`), once made.
    pub fn secret(&self) -> Option<&[u8; 32]> {
        self.state.secret.as_ref()
    }

    /// The gateway's signing key (PKCS#8 PEM), once made.
    pub fn gateway_key(&self) -> Option<&str> {
        self.state.gateway_key.as_deref()
    }

    /// The party an API key (by its SHA-256) belongs to, expired or not
    /// (`key_grant` says what it may do now).
    pub fn party_by_key_hash(&self, key_hash: &[u8; 32]) -> Option<&Party> {
        self.state.parties.get(self.state.access.grant(key_hash)?.party)
    }

    pub fn balance(&self, number: PartyNumber) -> Option<Balance> {
        let account = self.ledger.account(accounts::wallet(number))?;
        let red_packets = self.state.marketing.unclaimed_of(number);
        Some(Balance { available: account.debit_headroom(), held: account.debits_pending + u128::from(red_packets) })
    }

    pub fn config(&self) -> &PlatformConfig {
        &self.state.config
    }

    pub fn fee_schedule(&self, product: Product) -> FeeSchedule {
        self.state.fees.schedule(product)
    }

    /// The time of the newest command applied.
    pub fn last_command_at(&self) -> Timestamp {
        self.state.last_command_at
    }

    /// When the next withdrawal, trade, campaign, key, dispute or freeze
    /// falls due, if any (for a clock that skips ahead).
    pub fn next_due(&self) -> Option<Timestamp> {
        let withdrawal = self.state.bank.first_due();
        let trade = self.state.trades.first_due();
        let marketing = self.state.marketing.first_due();
        let keys = self.state.access.first_due();
        let disputes = self.state.disputes.first_due();
        let freezes = self.state.freezes.first_due();
        withdrawal.into_iter().chain(trade).chain(marketing).chain(keys).chain(disputes).chain(freezes).min()
    }

    fn genesis(config: LedgerConfig) -> Platform {
        let mut ledger = Ledger::with_config(config, 0, 0);
        let system = [
            NewAccount {
                id: BANK_CLEARING,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_BANK_CLEARING,
                flags: AccountFlags::empty(),
            },
            NewAccount {
                id: accounts::FUND_INCOME,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_FUND_INCOME,
                flags: AccountFlags::empty(),
            },
            NewAccount {
                id: accounts::MARKETING,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_MARKETING,
                flags: AccountFlags::empty(),
            },
            NewAccount {
                id: accounts::CAMPAIGNS,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_CAMPAIGNS,
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            },
            NewAccount {
                id: accounts::RED_PACKETS,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_RED_PACKETS,
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            },
            NewAccount {
                id: accounts::LOAN_INCOME,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_LOAN_INCOME,
                flags: AccountFlags::empty(),
            },
            NewAccount {
                id: accounts::ESCROW,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_ESCROW,
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            },
            NewAccount {
                id: accounts::FROZEN,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_FROZEN,
                flags: AccountFlags::empty(),
            },
            NewAccount {
                id: REVENUE,
                user_data: 0,
                ledger: LEDGER_CNY,
                code: accounts::CODE_REVENUE,
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            },
        ];
        let created = ledger.create_accounts(1, &system);
        assert!(created.is_ok_and(|results| results.iter().all(|r| r.is_ok())), "the system accounts are created once");
        let mut state = State { next_number: 1, next_transfer_serial: 1, ..State::default() };
        state.fees.set_schedule(Product::Transfer, FeeSchedule::TRANSFER_2013);
        state.fees.set_schedule(Product::Withdrawal, FeeSchedule::WITHDRAWAL_2016);
        Platform { ledger, state, touched: Default::default() }
    }

    pub(crate) fn execute(&mut self, now: Timestamp, action: &Action) -> Outcome {
        match action {
            Action::Configure(config) => {
                self.state.config = config.clone();
                Outcome::Configured
            }
            Action::InitializeSecret { secret } => {
                if self.state.secret.is_some() {
                    return Outcome::Rejected(Rejection::Conflict(Conflict::SecretMadeOnce));
                }
                self.state.secret = Some(*secret);
                Outcome::Configured
            }
            Action::InitializeGatewayKey { private_key_pem } => {
                if self.state.gateway_key.is_some() {
                    return Outcome::Rejected(Rejection::Conflict(Conflict::GatewayKeyMadeOnce));
                }
                if private_key_pem.len() > GATEWAY_KEY_BYTES_MAX {
                    return invalid(Invalid::GatewayKey);
                }
                self.state.gateway_key = Some(private_key_pem.clone());
                Outcome::Configured
            }
            Action::CreateParty { kind, name, key_hash, fee_rate_bps, webhook_url, webhook_secret, app_public_key } => {
                let keys = PartyKeys { key_hash, webhook_secret, app_public_key };
                self.create_party(now, *kind, name, *fee_rate_bps, webhook_url, keys)
            }
            Action::IssuePaymentCode { user, code, expires_at } => {
                self.issue_payment_code(now, *user, code, *expires_at)
            }
            Action::PayWithCode { trade, code } => self.pay_with_code(now, trade, code),
            Action::TopUp { party, amount, bank } => self.top_up(now, *party, *amount, bank),
            Action::Transfer { from, to, amount, memo: _ } => self.transfer(now, *from, *to, *amount),
            Action::Withdraw { party, amount } => self.withdraw(now, *party, *amount),
            Action::SetFeeSchedule { product, schedule } => {
                if schedule.rate_bps > 10_000 {
                    return invalid(Invalid::FeeRate);
                }
                let amounts = [Some(schedule.minimum), schedule.maximum, schedule.free_quota.map(|quota| quota.amount)];
                if amounts.into_iter().flatten().any(|fen| fen.get() > AMOUNT_MAX) {
                    return invalid(Invalid::FeeAmount);
                }
                self.state.fees.set_schedule(*product, *schedule);
                Outcome::FeeScheduleSet
            }
            Action::Tick => self.tick(now),
            Action::CreateTrade(new) => self.create_trade(now, new),
            Action::PayTrade { trade, buyer, source, coupon } => self.pay_trade(now, *trade, *buyer, *source, *coupon),
            Action::CreateAndPayTrade { trade, buyer, source, coupon } => {
                self.create_and_pay_trade(now, trade, *buyer, *source, *coupon)
            }
            Action::IssueCoupon { campaign, issuer, user, expires_at } => {
                self.issue_coupon(now, *campaign, *issuer, *user, *expires_at)
            }
            Action::FundSubscribe { party, amount } => self.fund_subscribe(now, *party, *amount),
            Action::FundRedeem { party, amount } => self.fund_redeem(now, *party, *amount),
            Action::FundYield { date, annual_rate_bps } => self.fund_yield(now, *date, *annual_rate_bps),
            Action::CreateRedPacket { sender, total, count, mode, greeting } => {
                self.create_red_packet(now, *sender, *total, *count, *mode, greeting)
            }
            Action::ClaimRedPacket { packet, user } => self.claim_red_packet(now, *packet, *user),
            Action::ImportFundHolders { count, seed } => self.import_fund_holders(now, *count, *seed),
            Action::TakeLoan { merchant, amount, term_days, out_request_no } => {
                self.take_loan(now, *merchant, *amount, *term_days, out_request_no)
            }
            Action::RepayLoan { loan, merchant, amount } => self.repay_loan(now, *loan, *merchant, *amount),
            Action::TakeOrderLoan { merchant, trade, amount, out_request_no } => {
                self.take_order_loan(now, *merchant, *trade, *amount, out_request_no)
            }
            Action::CreateCampaign(new) => self.create_campaign(now, new),
            Action::ShipTrade { trade, merchant } => self.ship_trade(now, *trade, *merchant),
            Action::ConfirmTrade { trade, buyer } => self.confirm_trade(now, *trade, *buyer),
            Action::CloseTrade { trade, merchant } => self.close_trade(now, *trade, *merchant),
            Action::RefundTrade { trade, merchant, out_request_no, amount, reason } => {
                self.refund_trade(now, *trade, *merchant, out_request_no, *amount, reason)
            }
            Action::RecordAttempt(attempt) => self.record_attempt(now, attempt),
            Action::ResendEvent { event, offset, merchant, kind, trade, to_notify_url } => {
                let event = crate::deliveries::ResentEvent {
                    number: *event,
                    offset: *offset,
                    merchant: *merchant,
                    kind,
                    trade: *trade,
                    to_notify_url: *to_notify_url,
                };
                self.resend_event(now, &event)
            }
            Action::Audited { note, action } => self.audited(now, note, action),
            Action::WithLogin { login, password_hash, action } => self.with_login(now, login, password_hash, action),
            Action::CreateStaff { login, password_hash, role } => self.create_staff(now, login, password_hash, *role),
            Action::AddKey { party, key_hash, read_only } => self.add_key(*party, *key_hash, *read_only),
            Action::RollKey { party, old_key_hash, new_key_hash, old_expires_at } => {
                self.roll_key(now, *party, *old_key_hash, *new_key_hash, *old_expires_at)
            }
            Action::RevokeKeys { party, new_key_hash } => self.revoke_keys(*party, *new_key_hash),
            Action::SetAppPublicKey { merchant, app_public_key } => self.set_app_public_key(*merchant, app_public_key),
            Action::CreateEndpoint { merchant, url, events, secret } => {
                self.create_endpoint(now, *merchant, url, events, secret)
            }
            Action::DeleteEndpoint { merchant, endpoint } => self.delete_endpoint(*merchant, *endpoint),
            Action::RollEndpointSecret { merchant, endpoint, secret, old_expires_at } => {
                self.roll_endpoint_secret(now, *merchant, *endpoint, secret, *old_expires_at)
            }
            Action::PauseCampaign { campaign, sponsor, paused } => self.pause_campaign(*campaign, *sponsor, *paused),
            Action::BindRoyalty { merchant, receiver, bound } => self.bind_royalty(*merchant, *receiver, *bound),
            Action::SetLoanTerms(terms) => self.set_loan_terms(*terms),
            Action::SplitTrade { trade, merchant, out_request_no, parts } => {
                self.split_trade(now, *trade, *merchant, out_request_no, parts)
            }
            Action::OpenDispute { trade, buyer, amount, reason } => {
                self.open_dispute(now, *trade, *buyer, *amount, reason)
            }
            Action::StepDispute { dispute, actor, step, note } => self.step_dispute(now, *dispute, *actor, *step, note),
            Action::CreateFreeze { merchant, code, out_order_no, out_request_no, amount, title } => {
                self.create_freeze(now, *merchant, code, (out_order_no, out_request_no), *amount, title)
            }
            Action::Unfreeze { freeze, merchant, out_request_no, amount } => {
                self.unfreeze(now, *freeze, *merchant, out_request_no, *amount)
            }
            Action::PayFromFreeze { freeze, merchant, trade, complete } => {
                let payment =
                    crate::freezes::FreezePayment { freeze: *freeze, merchant: *merchant, trade, complete: *complete };
                self.pay_from_freeze(now, &payment)
            }
        }
    }

    fn create_party(
        &mut self,
        now: Timestamp,
        kind: PartyKind,
        name: &str,
        fee_rate_bps: Option<u32>,
        webhook_url: &Option<String>,
        keys: PartyKeys<'_>,
    ) -> Outcome {
        let PartyKeys { key_hash, webhook_secret, app_public_key } = keys;
        if crate::text::check_display_text(name, NAME_CHARS_MAX).is_err() {
            return invalid(Invalid::PartyName);
        }
        if fee_rate_bps.is_some_and(|rate| rate > 10_000) {
            return invalid(Invalid::PartyFeeRate);
        }
        if webhook_url.as_ref().is_some_and(|url| !crate::text::is_web_url(url, crate::trade_actions::URL_CHARS_MAX)) {
            return invalid(Invalid::WebhookUrl);
        }
        if webhook_url.is_some()
            && (webhook_secret.is_empty() || webhook_secret.len() > crate::access::SECRET_CHARS_MAX)
        {
            return invalid(Invalid::WebhookSecret);
        }
        if app_public_key.as_ref().is_some_and(|pem| pem.is_empty() || pem.len() > APP_KEY_BYTES_MAX) {
            return invalid(Invalid::AppPublicKey);
        }
        if self.state.access.key_in_use(key_hash) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::KeyInUse));
        }
        let number = PartyNumber::new(self.take_number());
        let code = match kind {
            PartyKind::User => accounts::CODE_USER_WALLET,
            PartyKind::Merchant => accounts::CODE_MERCHANT_WALLET,
        };
        let wallet = NewAccount {
            id: accounts::wallet(number),
            user_data: number.get(),
            ledger: LEDGER_CNY,
            code,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        };
        let created = self.ledger.create_accounts(now.nanos(), &[wallet]);
        if !created.is_ok_and(|results| results.iter().all(|r| r.is_ok())) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::WalletNotCreated));
        }
        let party = Party {
            number,
            kind,
            name: name.to_string(),
            // Alipay's common rate for merchants: 0.6%.
            fee_rate_bps: fee_rate_bps.unwrap_or(if kind == PartyKind::Merchant { 60 } else { 0 }),
            app_public_key: app_public_key.clone(),
            created_at: now,
            last_trade: None,
        };
        self.state.parties.push(party);
        self.state.access.add_first_key(number, *key_hash);
        // The webhook given at creation is a merchant's first endpoint, for every event.
        if let (Some(url), PartyKind::Merchant) = (webhook_url, kind) {
            let outcome = self.create_endpoint(now, number, url, &["*".to_string()], webhook_secret);
            crate::invariant::check(
                matches!(outcome, Outcome::EndpointUpdated(_)),
                format_args!("a new merchant's first endpoint was refused: {outcome:?}"),
            );
        }
        Outcome::PartyCreated { number, kind }
    }

    fn transfer(&mut self, now: Timestamp, from: PartyNumber, to: PartyNumber, amount: Fen) -> Outcome {
        if let Err(rejection) = self.check_party_and_amount(from, amount) {
            return Outcome::Rejected(rejection);
        }
        if !self.state.parties.contains(to) {
            return Outcome::Rejected(Rejection::NotFound(Missing::Recipient));
        }
        if from == to {
            return Outcome::Rejected(Rejection::Conflict(Conflict::TransferToSelf));
        }
        let (fee, quota_key, quota_used) = self.charge(now, from, Product::Transfer, amount);
        let number = self.take_number();
        let reference = Reference::Transfer(number);
        let mut chain = vec![self.new_transfer(
            now,
            accounts::wallet(from),
            accounts::wallet(to),
            amount,
            accounts::CODE_TRANSFER,
            reference,
        )];
        if !fee.is_zero() {
            chain.push(self.new_transfer(
                now,
                accounts::wallet(from),
                REVENUE,
                fee,
                accounts::CODE_TRANSFER_FEE,
                reference,
            ));
        }
        match self.apply_chain(now, &chain) {
            Ok(()) => {
                self.state.fees.use_quota(quota_key, quota_used);
                self.record_money_sent_back(now, from, amount);
                self.book_merchant(from, -i128::from(amount + fee));
                self.book_merchant(to, i128::from(amount));
                Outcome::Transferred { number, amount, fee }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    /// Does what fell due by `now`, each queue in its own time order, at
    /// most [`TICK_ITEMS_MAX`] items: a clock that jumps days (a restart
    /// after downtime, the day after a Double Eleven) would otherwise settle
    /// millions of trades in one command while every request waits. What is
    /// left (`more_due`) the next ticks do, in the same order.
    fn tick(&mut self, now: Timestamp) -> Outcome {
        let mut budget = TICK_ITEMS_MAX;
        let (settled, failed) = self.run_withdrawals_due(now, &mut budget);
        let (trades_closed, trades_settled) = self.run_trades_due(now, &mut budget);
        self.run_disputes_due(now, &mut budget);
        self.run_freezes_due(now, &mut budget);
        self.state.trades.forget_expired_codes(now, &mut budget);
        self.run_marketing_due(now, &mut budget);
        self.accrue_loans(now);
        self.state.idempotency.forget_expired(now, &mut budget);
        self.state.access.forget_expired_keys(now, &mut budget);
        self.state.takings.forget_old_days(now, &mut budget);
        Outcome::Ticked {
            withdrawals_settled: settled,
            withdrawals_failed: failed,
            trades_closed,
            trades_settled,
            more_due: self.anything_due(now),
        }
    }

    /// How many ticks at `now` are certainly needed before nothing is due
    /// (at most `limit`), if only ticks apply meanwhile: each parked trade
    /// due and each expired idempotency key takes one of a tick's
    /// [`TICK_ITEMS_MAX`] items, and only another command (a buyer's
    /// confirmation) removes them otherwise. A lower bound (other items
    /// count too), so that a caller may send that many ticks without
    /// waiting for each one's answer and still send exactly the ticks it
    /// would one at a time.
    pub fn ticks_needed_at_least(&self, now: Timestamp, limit: u32) -> u32 {
        let items_max = TICK_ITEMS_MAX as usize * limit as usize;
        let parked = self.state.trades.parked_due_count(now, items_max);
        let keys = self.state.idempotency.expired_count(now, items_max);
        let ticks = (parked + keys).div_ceil(TICK_ITEMS_MAX as usize);
        u32::try_from(ticks).unwrap_or(limit).min(limit)
    }

    /// Whether anything that falls due by `now` is still waiting for a tick.
    pub fn anything_due(&self, now: Timestamp) -> bool {
        self.first_due_of_anything().is_some_and(|due| due <= now)
    }

    /// The first moment anything is due ([`Platform::anything_due`]), with
    /// expired payment codes and idempotency keys too. A tick before it
    /// finds nothing due (it may accrue loans and forget old days' takings,
    /// which make nothing due), so a caller may send ticks before it
    /// without waiting to see what each left.
    pub fn first_due_of_anything(&self) -> Option<Timestamp> {
        let codes = self.state.trades.first_code_due();
        let keys = self.state.idempotency.first_due();
        self.next_due().into_iter().chain(codes).chain(keys).min()
    }

    /// The fee for `amount` of `product` by `party` now, the quota counter it
    /// uses, and how much of the free quota it consumes.
    pub(crate) fn charge(
        &self,
        now: Timestamp,
        party: PartyNumber,
        product: Product,
        amount: Fen,
    ) -> (Fen, (PartyNumber, Product, u32), Fen) {
        let schedule = self.fee_schedule(product);
        let period = match schedule.free_quota.map(|quota| quota.period) {
            Some(QuotaPeriod::Month) => Date::of(now).month_index(),
            _ => 0,
        };
        let key = (party, product, period);
        let used = self.state.fees.quota_used(&key);
        let charge = schedule.fee(amount, used);
        (charge.fee, key, charge.quota_used)
    }

    pub(crate) fn check_party_and_amount(&self, party: PartyNumber, amount: Fen) -> Result<(), Rejection> {
        if !self.state.parties.contains(party) {
            return Err(Rejection::NotFound(Missing::Party));
        }
        if amount.is_zero() || amount.get() > AMOUNT_MAX {
            return Err(Rejection::Invalid(Invalid::Amount));
        }
        Ok(())
    }

    pub(crate) fn take_number(&mut self) -> u64 {
        let number = self.state.next_number;
        self.state.next_number += 1;
        number
    }

    /// Ledger transfer ids carry the command's time in their high bits (the
    /// ledger's id horizon relies on it) and a serial in the low bits.
    pub(crate) fn next_transfer_id(&mut self, now: Timestamp) -> u128 {
        let serial = self.state.next_transfer_serial;
        self.state.next_transfer_serial += 1;
        (u128::from(now.nanos()) << 64) | u128::from(serial)
    }

    pub(crate) fn new_transfer(
        &mut self,
        now: Timestamp,
        debit: u128,
        credit: u128,
        amount: Fen,
        code: u16,
        reference: Reference,
    ) -> Transfer {
        Transfer {
            id: self.next_transfer_id(now),
            debit_account_id: debit,
            credit_account_id: credit,
            amount: u128::from(amount),
            user_data: reference.encode(),
            ledger: LEDGER_CNY,
            code,
            ..Transfer::default()
        }
    }

    /// Applies transfers as one linked chain: all or nothing.
    pub(crate) fn apply_chain(&mut self, now: Timestamp, chain: &[Transfer]) -> Result<(), Rejection> {
        let mut linked = chain.to_vec();
        let last = linked.len().saturating_sub(1);
        for transfer in &mut linked[..last] {
            transfer.flags |= TransferFlags::LINKED;
        }
        let results =
            self.ledger.create_transfers(now.nanos(), &linked).map_err(|_| Rejection::Invalid(Invalid::LedgerBatch))?;
        match results.iter().find(|result| !result.is_ok() && **result != CreateTransferResult::LinkedEventFailed) {
            None => Ok(()),
            Some(CreateTransferResult::ExceedsCredits) => Err(Rejection::InsufficientFunds),
            Some(other) => Err(Rejection::Conflict(Conflict::LedgerRefused(other.code().to_string()))),
        }
    }
}

impl StateMachine for Platform {
    type Command = Command;
    type Outcome = Outcome;
    const FORMAT: u32 = STATE_FORMAT;
    const NAME: &'static str = "platform";

    fn create(config: LedgerConfig) -> Platform {
        Platform::genesis(config)
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    fn encode_command(command: &Command, out: &mut Vec<u8>) {
        // Encoding a plain data type into a Vec cannot fail.
        if let Ok(extended) = crate::state_io::encode_into(command, std::mem::take(out)) {
            *out = extended;
        }
    }

    fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
        postcard::from_bytes(bytes).map_err(|_| DecodeError { what: "platform command" })
    }

    fn refuse(_command: &Command) -> Option<Outcome> {
        None
    }

    fn apply(&mut self, command: &Command, archive: &dyn ArchiveSource) -> Result<Outcome, JournalError> {
        if let Some(tag) = &command.idempotency
            && let Some(first) = self.state.idempotency.repeated(tag)
        {
            return Ok(first);
        }
        // The trades it names come back from the archive before anything changes.
        if let Err(error) = self.bring_back_trades(command.now, &command.action, archive) {
            self.archive_touched_trades();
            return Err(error);
        }
        let outcome = self.execute(command.now, &command.action);
        self.archive_touched_trades();
        self.state.last_command_at = self.state.last_command_at.max(command.now);
        if let Some(tag) = &command.idempotency {
            self.state.idempotency.remember(tag, &outcome, command.now);
        }
        Ok(outcome)
    }

    fn warm(&self, command: &Command) {
        self.warm_lookups(&command.action);
    }

    /// In a Double Eleven's profile the trades took about half of the
    /// state's encoding time, the fields before and after them the rest
    /// between them: three parts, the trades one of them.
    const STATE_PARTS: usize = 3;

    /// `(STATE_FORMAT, &self.state)` encoded, in three parts: a struct's
    /// encoding is its fields' one after another.
    fn encode_state(&self, part: usize, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        use crate::state_io::encode_to;
        // Every field named, in the struct's order (a test holds the parts
        // to the whole), so that a field added is not left out.
        let State {
            config,
            next_number,
            next_transfer_serial,
            parties,
            fees,
            bank,
            idempotency,
            trades,
            events,
            archive,
            fund,
            loans,
            marketing,
            secret,
            gateway_key,
            books,
            access,
            royalties,
            disputes,
            freezes,
            last_command_at,
            takings,
        } = &self.state;
        match part {
            0 => encode_to(
                &(STATE_FORMAT, config, next_number, next_transfer_serial, parties, fees, bank, idempotency),
                out,
            ),
            1 => encode_to(trades, out),
            2 => encode_to(
                &(
                    (events, archive, fund, loans, marketing, secret, gateway_key),
                    (books, access, royalties, disputes, freezes, last_command_at, takings),
                ),
                out,
            ),
            _ => Err(std::io::Error::other(format!("the platform's state has no part {part}"))),
        }
    }

    fn restore(ledger: Ledger, state: &mut dyn std::io::Read) -> Result<Platform, DecodeError> {
        let mut decoder = crate::state_io::Decoder::new(state);
        let format: u32 = decoder.decode().map_err(|_| DecodeError { what: "platform state" })?;
        if format != STATE_FORMAT {
            return Err(DecodeError { what: "platform state of another format (written by another version)" });
        }
        let state: State = decoder.decode().map_err(|_| DecodeError { what: "platform state" })?;
        Ok(Platform { ledger, state, touched: Default::default() })
    }

    fn archive_len(&self) -> u64 {
        self.state.archive.length()
    }

    fn take_archive(&mut self, out: &mut Vec<u8>) {
        self.state.archive.take(out);
    }

    fn archive_records_needed(&self, commands: &[&Command], out: &mut Vec<u64>) {
        for command in commands {
            self.archived_trades_named(&command.action, out);
        }
    }

    /// The records read ahead are the trades commands name by number
    /// (`archive_records_needed`): decoded into the trade `bring_back_trade`
    /// would make of them (shared: a `Trade` is some 300 bytes to move).
    fn decode_read_ahead(offset: u64, record: &[u8]) -> Option<journal::archive::Decoded> {
        let trade = ArchiveRecord::decode(record, offset).ok()?.into_trade(offset).ok()?;
        Some(Box::new(std::sync::Arc::new(trade)))
    }
}

/// A hash of `parts` for choices the machine makes (which bank request
/// fails, how a red packet splits): specified (XXH3-64 of the parts in
/// little-endian), so a log replays to the same choices in any later build
/// and on any machine.
pub(crate) fn hash_of(parts: &[u64]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    for part in parts {
        hasher.update(&part.to_le_bytes());
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot encodes the state's parts, perhaps at once: one after
    /// another they must be the state's whole encoding, field for field.
    #[test]
    fn the_states_parts_one_after_another_are_its_encoding() {
        let mut platform = Platform::create(LedgerConfig::default());
        let mut now = 1_700_000_000_000_000_000u64;
        let mut run = |platform: &mut Platform, action: Action| {
            now += 1_000_000_000;
            platform.apply(&Command { now: Timestamp::from_nanos(now), idempotency: None, action }, &journal::NoArchive)
        };
        let mut parties = Vec::new();
        for (key, kind) in [(1u8, PartyKind::User), (2, PartyKind::Merchant)] {
            let action = Action::CreateParty {
                kind,
                name: format!("party {key}"),
                key_hash: [key; 32],
                fee_rate_bps: None,
                webhook_url: None,
                webhook_secret: String::new(),
                app_public_key: None,
            };
            match run(&mut platform, action) {
                Ok(Outcome::PartyCreated { number, .. }) => parties.push(number),
                other => panic!("{other:?}"),
            }
        }
        let (buyer, shop) = (parties[0], parties[1]);
        run(&mut platform, Action::TopUp { party: buyer, amount: Fen::new(10_000), bank: "ICBC".into() }).unwrap();
        let transfer = Action::Transfer { from: buyer, to: shop, amount: Fen::new(2_500), memo: Some("tea".into()) };
        run(&mut platform, transfer).unwrap();
        // A trade, and an escrow one left open: the trade book's indexes and
        // due queue, the events, the takings.
        for (number, mode) in [(1, crate::trades::TradeMode::Instant), (2, crate::trades::TradeMode::Escrow)] {
            let trade = crate::command::NewTrade {
                mode,
                ..crate::command::NewTrade::instant(shop, format!("order-{number}"), Fen::new(300), "tea".into())
            };
            let pay =
                Action::CreateAndPayTrade { trade, buyer, source: crate::command::PaySource::Balance, coupon: None };
            let paid = run(&mut platform, pay);
            assert!(matches!(paid, Ok(Outcome::TradeUpdated(_))), "{paid:?}");
        }
        // Fields no command here sets, each its own value.
        platform.state.secret = Some([7; 32]);
        platform.state.gateway_key = Some("a key".into());

        let whole = postcard::to_allocvec(&(STATE_FORMAT, &platform.state)).unwrap();
        let mut parts = Vec::new();
        for part in 0..Platform::STATE_PARTS {
            let before = parts.len();
            platform.encode_state(part, &mut parts).unwrap();
            assert!(parts.len() > before, "part {part} is not empty");
        }
        assert_eq!(parts, whole);
        assert!(platform.encode_state(Platform::STATE_PARTS, &mut Vec::new()).is_err());
    }

    /// The machine's choices are part of what its log means: they come from
    /// XXH3-64 as specified (the reference value for no input; the parts in
    /// little-endian), and a bank refusing a quarter refuses about a quarter.
    #[test]
    fn choices_come_from_the_specified_hash() {
        assert_eq!(hash_of(&[]), 0x2d06_8005_38d3_94c2);
        assert_eq!(hash_of(&[1, 2]), xxhash_rust::xxh3::xxh3_64(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]));
        let refused = (0..10_000u64).filter(|&number| hash_of(&[7, number]) % 10_000 < 2_500).count();
        assert!((2_300..2_700).contains(&refused), "{refused} of 10,000");
    }
}
