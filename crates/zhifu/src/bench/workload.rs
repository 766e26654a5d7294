//! Deterministic transfer workloads for the ledger benchmarks.

use ledger::{AccountFlags, NewAccount, Transfer};

/// Ledger (currency) of the benchmark's accounts: CNY.
pub const LEDGER_CNY: u32 = 1;
/// Account code of the benchmark's customer wallets.
const CODE_WALLET: u16 = 1;
/// Account code of the bank clearing account that funds the wallets.
const CODE_BANK: u16 = 2;
/// Transfer codes.
const CODE_TOPUP: u16 = 1;
const CODE_PAYMENT: u16 = 2;
/// The id of the bank clearing account; wallets are 1..=accounts.
pub const BANK_ACCOUNT_ID: u128 = 1 << 64;
/// Enough for every wallet to pay its share of the run without running dry.
const OPENING_BALANCE_FEN: u128 = 1 << 40;
/// Payments are between 0.01 and 1,000 yuan.
const PAYMENT_FEN_MAX: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Debit and credit accounts drawn uniformly.
    Uniform,
    /// 90% of transfers credit one of 10 hot merchant accounts.
    Hot,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Uniform => "uniform",
            Shape::Hot => "hot (90% to 10 accounts)",
        }
    }
}

/// Hot merchants take this share (in percent) of the transfers in `Shape::Hot`.
const HOT_SHARE_PERCENT: u64 = 90;
const HOT_ACCOUNTS: u64 = 10;

/// The benchmarks' generator: reproducible from a seed, as the simulators'.
pub struct Rng(rand_pcg::Pcg64Mcg);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        use rand::SeedableRng as _;
        Rng(rand_pcg::Pcg64Mcg::seed_from_u64(seed))
    }

    /// Uniform in `0..bound` (0 if `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        use rand::Rng as _;
        if bound == 0 { 0 } else { self.0.random_range(0..bound) }
    }
}

/// The accounts of a run: the bank first, then `count` wallets.
pub fn accounts(count: u64) -> Vec<NewAccount> {
    let bank = NewAccount {
        id: BANK_ACCOUNT_ID,
        user_data: 0,
        ledger: LEDGER_CNY,
        code: CODE_BANK,
        flags: AccountFlags::empty(),
    };
    let wallets = (1..=count).map(|id| NewAccount {
        id: u128::from(id),
        user_data: id,
        ledger: LEDGER_CNY,
        code: CODE_WALLET,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    });
    std::iter::once(bank).chain(wallets).collect()
}

/// The opening top-ups' ids start above this, above every payment's that
/// counts up from 1.
pub const TOPUP_IDS_ABOVE: u128 = 1 << 96;

/// One top-up per wallet from the bank, with ids above every payment's.
pub fn opening_topups(count: u64) -> Vec<Transfer> {
    (1..=count)
        .map(|id| Transfer {
            id: TOPUP_IDS_ABOVE + u128::from(id),
            debit_account_id: BANK_ACCOUNT_ID,
            credit_account_id: u128::from(id),
            amount: OPENING_BALANCE_FEN,
            ledger: LEDGER_CNY,
            code: CODE_TOPUP,
            ..Transfer::default()
        })
        .collect()
}

/// Generates payments between wallets; transfer ids count up from 1.
pub struct Payments {
    rng: Rng,
    shape: Shape,
    accounts: u64,
    next_id: u128,
}

impl Payments {
    pub fn new(seed: u64, shape: Shape, accounts: u64) -> Payments {
        Payments::starting_at(seed, shape, accounts, 1)
    }

    /// A generator whose ids count up from `first_id` (for several generators
    /// feeding one ledger).
    pub fn starting_at(seed: u64, shape: Shape, accounts: u64, first_id: u128) -> Payments {
        assert!(accounts > HOT_ACCOUNTS, "the hot set must be a strict subset of the accounts");
        Payments { rng: Rng::new(seed), shape, accounts, next_id: first_id }
    }

    pub fn next_transfer(&mut self) -> Transfer {
        let credit = match self.shape {
            Shape::Hot if self.rng.below(100) < HOT_SHARE_PERCENT => 1 + self.rng.below(HOT_ACCOUNTS),
            _ => 1 + self.rng.below(self.accounts),
        };
        let mut debit = 1 + self.rng.below(self.accounts);
        if debit == credit {
            debit = debit % self.accounts + 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        Transfer {
            id,
            debit_account_id: u128::from(debit),
            credit_account_id: u128::from(credit),
            amount: u128::from(1 + self.rng.below(PAYMENT_FEN_MAX)),
            ledger: LEDGER_CNY,
            code: CODE_PAYMENT,
            ..Transfer::default()
        }
    }

    pub fn fill(&mut self, batch: &mut Vec<Transfer>, count: usize) {
        batch.clear();
        batch.extend((0..count).map(|_| self.next_transfer()));
    }
}
