//! `Platform`: the products as one deterministic state machine over a
//! ledger. Every movement of money is a ledger transfer or a linked chain of
//! them; the products' own records (parties, withdrawals, quotas,
//! idempotency records) change in the same command, so a command's money and
//! its records commit together.

use std::collections::{BTreeMap, BTreeSet};

use journal::{ArchiveSource, DecodeError, JournalError, StateMachine};
use ledger::{AccountFlags, CreateTransferResult, Ledger, LedgerConfig, NewAccount, Transfer, TransferFlags};
use serde::{Deserialize, Serialize};

use crate::accounts::{self, BANK_CLEARING, LEDGER_CNY, REVENUE, Reference};
use crate::calendar::Date;
use crate::command::{Action, Command, IdempotencyTag, Outcome, PartyKind, PlatformConfig, Rejection};
use crate::fees::{FeeSchedule, Product, QuotaPeriod};
use crate::rejection::{Conflict, Invalid, Missing, invalid};
use crate::trades::{Delivery, Trade};

/// The largest amount of one movement: 10^15 fen (10 trillion yuan).
pub const AMOUNT_MAX: u64 = 1_000_000_000_000_000;
/// How long an idempotency key is remembered (at least the 24 h promised).
pub const IDEMPOTENCY_RETENTION_NANOS: u64 = ledger::NANOS_PER_DAY;
/// Refusals remembered under idempotency keys per caller at once (over the
/// 24 h retention). A refusal moved nothing, so past this one is simply not
/// remembered (a retry asks again): a caller sending refused requests
/// without end cannot grow the state without end.
pub const REMEMBERED_REFUSALS_PER_CALLER_MAX: u32 = 1_000;
/// The gateway's key, as PEM, is at most this long (RSA 2048 takes 1.7 KB).
const GATEWAY_KEY_BYTES_MAX: usize = 8 * 1024;
/// Party names are at most this many characters.
pub const NAME_CHARS_MAX: usize = 200;
use ledger::NANOS_PER_SECOND;
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
/// 9: red packets split by PCG.)
const STATE_FORMAT: u32 = 9;

/// Due items one tick does at most (trades closed or settled, withdrawals
/// answered, codes, red packets and campaigns expired, idempotency keys
/// forgotten): settling a trade parked in the archive takes a few
/// microseconds, so a tick holds the writer for tens of milliseconds at most.
pub const TICK_ITEMS_MAX: u32 = 4_096;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    pub number: u64,
    pub kind: PartyKind,
    pub name: String,
    pub fee_rate_bps: u32,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    /// For the Alipay-compatible gateway: the merchant's RSA public key (PEM).
    pub app_public_key: Option<String>,
    pub created_at: u64,
    /// The party's newest trade (a merchant's newest made, a buyer's newest
    /// paid or made for it): the head of its chain of trades.
    pub last_trade: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    Pending,
    Succeeded,
    Failed,
}

impl WithdrawalStatus {
    pub fn name(self) -> &'static str {
        match self {
            WithdrawalStatus::Pending => "pending",
            WithdrawalStatus::Succeeded => "succeeded",
            WithdrawalStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Withdrawal {
    pub number: u64,
    pub party: u64,
    pub amount: u64,
    pub fee: u64,
    pub status: WithdrawalStatus,
    pub created_at: u64,
    pub settle_at: u64,
    /// The pending transfers holding the amount and the fee.
    pub hold_amount_id: u128,
    pub hold_fee_id: Option<u128>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BankEntryKind {
    TopUp,
    Withdrawal,
}

/// One line of the simulated bank channel's own statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BankEntry {
    pub date: Date,
    pub kind: BankEntryKind,
    /// The top-up or withdrawal number.
    pub reference: u64,
    pub amount: u64,
    /// The bank's view: paid (`true`) or refused/returned (`false`).
    pub succeeded: bool,
    /// The ledger transfer that moved the money through the clearing account
    /// (the top-up, or the posting of a withdrawal), when there is one, and
    /// its position (where to find it once it has left memory).
    pub ledger_transfer_id: Option<u128>,
    pub ledger_position: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct IdempotencyRecord {
    request_hash: [u8; 32],
    outcome: Outcome,
    created_at: u64,
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
    /// By number (see `Numbered`: a full day's 8 million buyers, looked up
    /// for nearly every command).
    pub(crate) parties: crate::numbered::Numbered<Party>,
    pub(crate) keys: BTreeMap<[u8; 32], u64>,
    pub(crate) fee_schedules: BTreeMap<Product, FeeSchedule>,
    /// Free quota used, by (party, product, period: month index or 0 for life).
    pub(crate) quota_used: BTreeMap<(u64, Product, u32), u64>,
    pub(crate) withdrawals: BTreeMap<u64, Withdrawal>,
    pub(crate) withdrawals_due: BTreeSet<(u64, u64)>,
    /// The bank's statement: where each day's lines are in the archive (a
    /// Double Eleven's setup alone is millions of top-ups).
    pub(crate) bank_statement: BTreeMap<Date, Vec<u64>>,
    pub(crate) idempotency: BTreeMap<(u64, String), IdempotencyRecord>,
    pub(crate) idempotency_expiry: BTreeSet<(u64, u64, String)>,
    /// Live trades: unpaid ones, and others only within the
    /// command that brought them back or changed them (then they go to the
    /// archive, see `TradeStatus::rests_in_archive`).
    pub(crate) trades: BTreeMap<u64, std::sync::Arc<Trade>>,
    /// Every trade, and where those that rest in the archive are (see
    /// `TradeStatus::rests_in_archive`).
    pub(crate) trade_directory: crate::trade_directory::TradeDirectory,
    /// The `out_trade_no` index: the merchant's reference hashed (see
    /// `reference_key`) → trade numbers; a lookup compares the trades it
    /// finds with the reference.
    pub(crate) trade_numbers: crate::reference_index::ReferenceIndex,
    /// (when, trade) of live trades: expiry of unpaid ones, auto-confirmation
    /// of shipped ones (entries of trades no longer live are stale).
    pub(crate) trades_due: BTreeSet<(u64, u64)>,
    /// (when, trade): auto-confirmation of shipped trades parked in the
    /// archive; a tick brings those due back (`Platform::bring_back_trades`).
    pub(crate) parked_due: crate::due_queue::DueQueue,
    /// Events live in the archive; each party's newest one is here and
    /// each archived event points to the party's one before it.
    pub(crate) last_event_of: BTreeMap<u64, u64>,
    pub(crate) archive: crate::archive::Outbox,
    /// Events not yet delivered (nor given up on), by event number.
    pub(crate) deliveries: BTreeMap<u64, Delivery>,
    pub(crate) fund: crate::fund::FundState,
    pub(crate) red_packets: BTreeMap<u64, crate::marketing::RedPacket>,
    /// What each sender's red packets still hold (its `held` money).
    pub(crate) red_packets_unclaimed: BTreeMap<u64, u64>,
    pub(crate) campaigns: BTreeMap<u64, crate::marketing::Campaign>,
    pub(crate) coupons: BTreeMap<u64, crate::marketing::Coupon>,
    pub(crate) loans: crate::loans::LoanBook,
    /// (when, red packet or campaign number): expiries and ends.
    pub(crate) marketing_due: BTreeSet<(u64, u64)>,
    /// Payment codes not yet used: code → (user, expires_at).
    pub(crate) payment_codes: BTreeMap<String, (u64, u64)>,
    pub(crate) payment_codes_due: BTreeSet<(u64, String)>,
    /// The operator's secret, from which the server derives what must come
    /// out the same on every node and after every replay (public ids,
    /// retried keys): made once, by a command, so the log carries it.
    pub(crate) secret: Option<[u8; 32]>,
    /// Refusals remembered under idempotency keys, by caller.
    pub(crate) refusals_remembered: BTreeMap<u64, u32>,
    /// The gateway's signing key (PKCS#8 PEM), once made.
    pub(crate) gateway_key: Option<String>,
    /// What the products say their accounts hold (see `books`).
    pub(crate) books: crate::books::Books,
}

pub struct Platform {
    pub(crate) ledger: Ledger,
    pub(crate) state: State,
    /// What the command being applied did to trades (empty between commands).
    pub(crate) touched: crate::trade_actions::Touched,
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
    pub fn party(&self, number: u64) -> Option<&Party> {
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

    /// The party an API key (by its SHA-256) belongs to.
    pub fn party_by_key_hash(&self, key_hash: &[u8; 32]) -> Option<&Party> {
        let number = self.state.keys.get(key_hash)?;
        self.state.parties.get(*number)
    }

    pub fn balance(&self, number: u64) -> Option<Balance> {
        let account = self.ledger.account(accounts::wallet(number))?;
        let red_packets = self.state.red_packets_unclaimed.get(&number).copied().unwrap_or(0);
        Some(Balance { available: account.debit_headroom(), held: account.debits_pending + u128::from(red_packets) })
    }

    /// Every withdrawal, oldest first.
    pub fn withdrawals(&self) -> impl Iterator<Item = &Withdrawal> {
        self.state.withdrawals.values()
    }

    pub fn withdrawal(&self, number: u64) -> Option<&Withdrawal> {
        self.state.withdrawals.get(&number)
    }

    pub fn config(&self) -> &PlatformConfig {
        &self.state.config
    }

    pub fn fee_schedule(&self, product: Product) -> FeeSchedule {
        self.state.fee_schedules.get(&product).copied().unwrap_or(FeeSchedule::FREE)
    }

    /// Where the bank's statement lines of one business day are in the
    /// archive, in the order they were made (read each with
    /// [`crate::read_archived_bank_entry`], with no lock on the state).
    pub fn bank_statement_at(&self, date: Date) -> Vec<u64> {
        self.state.bank_statement.get(&date).cloned().unwrap_or_default()
    }

    /// The bank's statement lines of one business day.
    pub fn bank_statement(&self, archive: &dyn ArchiveSource, date: Date) -> Result<Vec<BankEntry>, JournalError> {
        let offsets = self.state.bank_statement.get(&date).map_or(&[][..], Vec::as_slice);
        offsets
            .iter()
            .map(|&offset| {
                self.state.archive.read::<crate::at_rest::ArchiveRecord>(archive, offset)?.into_bank_entry(offset)
            })
            .collect()
    }

    fn record_bank_entry(&mut self, entry: BankEntry) {
        let offset =
            self.state.archive.append(&crate::at_rest::ArchiveRecord::BankEntry(std::borrow::Cow::Borrowed(&entry)));
        self.state.bank_statement.entry(entry.date).or_default().push(offset);
    }

    /// When the next withdrawal falls due, if any (for a clock that skips ahead).
    pub fn next_due(&self) -> Option<u64> {
        let withdrawal = self.state.withdrawals_due.first().map(|&(at, _)| at);
        let trade = self.state.trades_due.first().map(|&(at, _)| at);
        let parked = self.state.parked_due.first_due();
        let marketing = self.state.marketing_due.first().map(|&(at, _)| at);
        withdrawal.into_iter().chain(trade).chain(parked).chain(marketing).min()
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
        state.fee_schedules.insert(Product::Transfer, FeeSchedule::TRANSFER_2013);
        state.fee_schedules.insert(Product::Withdrawal, FeeSchedule::WITHDRAWAL_2016);
        Platform { ledger, state, touched: Default::default() }
    }

    fn execute(&mut self, now: u64, action: &Action) -> Outcome {
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
                self.state.fee_schedules.insert(*product, *schedule);
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
            Action::RecordDelivery { event, delivered } => self.record_delivery(now, *event, *delivered),
        }
    }

    fn create_party(
        &mut self,
        now: u64,
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
        if self.state.keys.contains_key(key_hash) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::KeyInUse));
        }
        let number = self.take_number();
        let code = match kind {
            PartyKind::User => accounts::CODE_USER_WALLET,
            PartyKind::Merchant => accounts::CODE_MERCHANT_WALLET,
        };
        let wallet = NewAccount {
            id: accounts::wallet(number),
            user_data: number,
            ledger: LEDGER_CNY,
            code,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        };
        let created = self.ledger.create_accounts(now, &[wallet]);
        if !created.is_ok_and(|results| results.iter().all(|r| r.is_ok())) {
            return Outcome::Rejected(Rejection::Conflict(Conflict::WalletNotCreated));
        }
        let party = Party {
            number,
            kind,
            name: name.to_string(),
            // Alipay's common rate for merchants: 0.6%.
            fee_rate_bps: fee_rate_bps.unwrap_or(if kind == PartyKind::Merchant { 60 } else { 0 }),
            webhook_url: webhook_url.clone(),
            webhook_secret: webhook_secret.to_string(),
            app_public_key: app_public_key.clone(),
            created_at: now,
            last_trade: None,
        };
        self.state.parties.push(number, party);
        self.state.keys.insert(*key_hash, number);
        Outcome::PartyCreated { number, kind }
    }

    fn top_up(&mut self, now: u64, party: u64, amount: u64, bank: &str) -> Outcome {
        if let Err(rejection) = self.check_party_and_amount(party, amount) {
            return Outcome::Rejected(rejection);
        }
        if crate::text::check_display_text(bank, 32).is_err() {
            return invalid(Invalid::Bank);
        }
        let number = self.take_number();
        let transfer = self.new_transfer(
            now,
            BANK_CLEARING,
            accounts::wallet(party),
            amount,
            accounts::CODE_TOPUP,
            Reference::TopUp(number),
        );
        match self.apply_chain(now, &[transfer]) {
            Ok(()) => {
                self.book_merchant(party, i128::from(amount));
                let date = Date::of_nanos(now);
                let ledger_position = self.ledger.transfer_position(transfer.id);
                self.record_bank_entry(BankEntry {
                    date,
                    kind: BankEntryKind::TopUp,
                    reference: number,
                    amount,
                    succeeded: true,
                    ledger_transfer_id: Some(transfer.id),
                    ledger_position,
                });
                Outcome::ToppedUp { number, amount }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    fn transfer(&mut self, now: u64, from: u64, to: u64, amount: u64) -> Outcome {
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
        if fee > 0 {
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
                *self.state.quota_used.entry(quota_key).or_default() += quota_used;
                self.record_money_sent_back(now, from, amount);
                self.book_merchant(from, -i128::from(amount + fee));
                self.book_merchant(to, i128::from(amount));
                Outcome::Transferred { number, amount, fee }
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    }

    fn withdraw(&mut self, now: u64, party: u64, amount: u64) -> Outcome {
        if let Err(rejection) = self.check_party_and_amount(party, amount) {
            return Outcome::Rejected(rejection);
        }
        let (fee, quota_key, quota_used) = self.charge(now, party, Product::Withdrawal, amount);
        let number = self.take_number();
        let reference = Reference::Withdrawal(number);
        let mut hold_amount = self.new_transfer(
            now,
            accounts::wallet(party),
            BANK_CLEARING,
            amount,
            accounts::CODE_WITHDRAWAL,
            reference,
        );
        hold_amount.flags = TransferFlags::PENDING;
        let mut chain = vec![hold_amount];
        if fee > 0 {
            let mut hold_fee =
                self.new_transfer(now, accounts::wallet(party), REVENUE, fee, accounts::CODE_WITHDRAWAL_FEE, reference);
            hold_fee.flags = TransferFlags::PENDING;
            chain.push(hold_fee);
        }
        if let Err(rejection) = self.apply_chain(now, &chain) {
            return Outcome::Rejected(rejection);
        }
        *self.state.quota_used.entry(quota_key).or_default() += quota_used;
        self.book_merchant(party, -i128::from(amount + fee));
        let settle_at =
            now.saturating_add(self.state.config.withdrawal_settle_seconds.saturating_mul(NANOS_PER_SECOND));
        self.state.withdrawals.insert(
            number,
            Withdrawal {
                number,
                party,
                amount,
                fee,
                status: WithdrawalStatus::Pending,
                created_at: now,
                settle_at,
                hold_amount_id: chain[0].id,
                hold_fee_id: chain.get(1).map(|t| t.id),
            },
        );
        self.state.withdrawals_due.insert((settle_at, number));
        Outcome::WithdrawalRequested { number, amount, fee }
    }

    /// Does what fell due by `now`, each queue in its own time order, at
    /// most [`TICK_ITEMS_MAX`] items: a clock that jumps days (a restart
    /// after downtime, the day after a Double Eleven) would otherwise settle
    /// millions of trades in one command while every request waits. What is
    /// left (`more_due`) the next ticks do, in the same order.
    fn tick(&mut self, now: u64) -> Outcome {
        let mut budget = TICK_ITEMS_MAX;
        let (settled, failed) = self.run_withdrawals_due(now, &mut budget);
        let (trades_closed, trades_settled) = self.run_trades_due(now, &mut budget);
        while let Some((expires_at, code)) = self.state.payment_codes_due.first().cloned() {
            if expires_at > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.state.payment_codes_due.pop_first();
            self.state.payment_codes.remove(&code);
        }
        self.run_marketing_due(now, &mut budget);
        self.accrue_loans(now);
        self.expire_idempotency(now, &mut budget);
        Outcome::Ticked {
            withdrawals_settled: settled,
            withdrawals_failed: failed,
            trades_closed,
            trades_settled,
            more_due: self.anything_due(now),
        }
    }

    /// Whether anything that falls due by `now` is still waiting for a tick.
    pub fn anything_due(&self, now: u64) -> bool {
        let code = self.state.payment_codes_due.first().is_some_and(|(at, _)| *at <= now);
        let horizon = now.saturating_sub(IDEMPOTENCY_RETENTION_NANOS);
        let key = self.state.idempotency_expiry.first().is_some_and(|(created_at, _, _)| *created_at < horizon);
        self.next_due().is_some_and(|due| due <= now) || code || key
    }

    /// Settles the withdrawals the bank has answered by `now`.
    fn run_withdrawals_due(&mut self, now: u64, budget: &mut u32) -> (u32, u32) {
        let (mut settled, mut failed) = (0, 0);
        while let Some(&(settle_at, number)) = self.state.withdrawals_due.first() {
            if settle_at > now || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.state.withdrawals_due.pop_first();
            if self.settle_withdrawal(now, number) {
                settled += 1;
            } else {
                failed += 1;
            }
        }
        (settled, failed)
    }

    /// The bank's answer to a withdrawal: posts the holds if it paid, voids
    /// them (money and fee back to the party) if it refused. Which ones fail
    /// is a deterministic function of the number, so replay agrees.
    fn settle_withdrawal(&mut self, now: u64, number: u64) -> bool {
        let Some(withdrawal) = self.state.withdrawals.get(&number).cloned() else { return false };
        let bank_pays = !self.bank_refuses(number);
        let flags = if bank_pays { TransferFlags::POST_PENDING } else { TransferFlags::VOID_PENDING };
        let amount = if bank_pays { ledger::AMOUNT_PENDING_WHOLE } else { 0 };
        let holds = [Some(withdrawal.hold_amount_id), withdrawal.hold_fee_id];
        let mut chain = Vec::new();
        for hold in holds.into_iter().flatten() {
            let id = self.next_transfer_id(now);
            let user_data = Reference::Withdrawal(number).encode();
            chain.push(Transfer { id, pending_id: hold, amount, flags, user_data, ..Transfer::default() });
        }
        let posted_id = chain[0].id;
        // Its own holds, open until now: posting or voiding them cannot be
        // refused, and a refusal would leave the money neither paid nor back.
        if let Err(refused) = self.apply_chain(now, &chain) {
            crate::invariant::broken(format_args!("withdrawal {number}'s holds did not settle: {refused:?}"));
        }
        let status = if bank_pays { WithdrawalStatus::Succeeded } else { WithdrawalStatus::Failed };
        if !bank_pays {
            self.book_merchant(withdrawal.party, i128::from(withdrawal.amount + withdrawal.fee));
        }
        if let Some(record) = self.state.withdrawals.get_mut(&number) {
            record.status = status;
            let record = record.clone();
            let kind = if status == WithdrawalStatus::Succeeded { "withdrawal.succeeded" } else { "withdrawal.failed" };
            self.emit(now, record.party, kind, None, crate::trades::EventData::Withdrawal(record));
        }
        let succeeded = status == WithdrawalStatus::Succeeded;
        let ledger_position = succeeded.then(|| self.ledger.transfer_position(posted_id)).flatten();
        self.record_bank_entry(BankEntry {
            date: Date::of_nanos(now),
            kind: BankEntryKind::Withdrawal,
            reference: number,
            amount: withdrawal.amount,
            succeeded,
            ledger_transfer_id: succeeded.then_some(posted_id),
            ledger_position,
        });
        succeeded
    }

    fn bank_refuses(&self, number: u64) -> bool {
        (hash_of(&[self.state.config.bank_seed, number]) % 10_000) < u64::from(self.state.config.bank_failure_bps)
    }

    /// The fee for `amount` of `product` by `party` now, the quota counter it
    /// uses, and how much of the free quota it consumes.
    pub(crate) fn charge(
        &self,
        now: u64,
        party: u64,
        product: Product,
        amount: u64,
    ) -> (u64, (u64, Product, u32), u64) {
        let schedule = self.fee_schedule(product);
        let period = match schedule.free_quota.map(|quota| quota.period) {
            Some(QuotaPeriod::Month) => Date::of_nanos(now).month_index(),
            _ => 0,
        };
        let key = (party, product, period);
        let used = self.state.quota_used.get(&key).copied().unwrap_or(0);
        let charge = schedule.fee(amount, used);
        (charge.fee, key, charge.quota_used)
    }

    pub(crate) fn check_party_and_amount(&self, party: u64, amount: u64) -> Result<(), Rejection> {
        if !self.state.parties.contains(party) {
            return Err(Rejection::NotFound(Missing::Party));
        }
        if amount == 0 || amount > AMOUNT_MAX {
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
    pub(crate) fn next_transfer_id(&mut self, now: u64) -> u128 {
        let serial = self.state.next_transfer_serial;
        self.state.next_transfer_serial += 1;
        (u128::from(now) << 64) | u128::from(serial)
    }

    pub(crate) fn new_transfer(
        &mut self,
        now: u64,
        debit: u128,
        credit: u128,
        amount: u64,
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
    pub(crate) fn apply_chain(&mut self, now: u64, chain: &[Transfer]) -> Result<(), Rejection> {
        let mut linked = chain.to_vec();
        let last = linked.len().saturating_sub(1);
        for transfer in &mut linked[..last] {
            transfer.flags |= TransferFlags::LINKED;
        }
        let results =
            self.ledger.create_transfers(now, &linked).map_err(|_| Rejection::Invalid(Invalid::LedgerBatch))?;
        match results.iter().find(|result| !result.is_ok() && **result != CreateTransferResult::LinkedEventFailed) {
            None => Ok(()),
            Some(CreateTransferResult::ExceedsCredits) => Err(Rejection::InsufficientFunds),
            Some(other) => Err(Rejection::Conflict(Conflict::LedgerRefused(other.code().to_string()))),
        }
    }

    fn remember(&mut self, tag: &IdempotencyTag, outcome: &Outcome, now: u64) {
        if matches!(outcome, Outcome::Rejected(_)) {
            let remembered = self.state.refusals_remembered.entry(tag.caller).or_default();
            if *remembered >= REMEMBERED_REFUSALS_PER_CALLER_MAX {
                return;
            }
            *remembered += 1;
        }
        let record = IdempotencyRecord { request_hash: tag.request_hash, outcome: outcome.clone(), created_at: now };
        self.state.idempotency.insert((tag.caller, tag.key.clone()), record);
        self.state.idempotency_expiry.insert((now, tag.caller, tag.key.clone()));
    }

    /// Forgets idempotency records older than the retention.
    fn expire_idempotency(&mut self, now: u64, budget: &mut u32) {
        let horizon = now.saturating_sub(IDEMPOTENCY_RETENTION_NANOS);
        while let Some((created_at, caller, key)) = self.state.idempotency_expiry.first().cloned() {
            if created_at >= horizon || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.state.idempotency_expiry.pop_first();
            let forgotten = self.state.idempotency.remove(&(caller, key));
            if forgotten.is_some_and(|record| matches!(record.outcome, Outcome::Rejected(_)))
                && let Some(remembered) = self.state.refusals_remembered.get_mut(&caller)
            {
                *remembered -= 1;
                if *remembered == 0 {
                    self.state.refusals_remembered.remove(&caller);
                }
            }
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
        if let Ok(extended) = postcard::to_extend(command, std::mem::take(out)) {
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
            && let Some(record) = self.state.idempotency.get(&(tag.caller, tag.key.clone()))
        {
            return Ok(if record.request_hash == tag.request_hash {
                record.outcome.clone()
            } else {
                Outcome::IdempotencyMismatch
            });
        }
        // The trades it names come back from the archive before anything changes.
        if let Err(error) = self.bring_back_trades(command.now, &command.action, archive) {
            self.archive_touched_trades();
            return Err(error);
        }
        let outcome = self.execute(command.now, &command.action);
        self.archive_touched_trades();
        if let Some(tag) = &command.idempotency {
            self.remember(tag, &outcome, command.now);
        }
        Ok(outcome)
    }

    fn encode_state(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        postcard::to_io(&(STATE_FORMAT, &self.state), out).map(|_| ()).map_err(std::io::Error::other)
    }

    fn restore(ledger: Ledger, state: &mut dyn std::io::Read) -> Result<Platform, DecodeError> {
        // Room for the longest string or byte run the state holds (texts
        // are bounded well below it); everything else streams through.
        let mut scratch = vec![0u8; 1 << 16];
        let (format, (state, scratch)) = postcard::from_io::<u32, _>((state, scratch.as_mut_slice()))
            .map_err(|_| DecodeError { what: "platform state" })?;
        if format != STATE_FORMAT {
            return Err(DecodeError { what: "platform state of another format (written by another version)" });
        }
        let (state, _) =
            postcard::from_io::<State, _>((state, scratch)).map_err(|_| DecodeError { what: "platform state" })?;
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
    use super::hash_of;

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
