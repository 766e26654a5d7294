//! Edge cases of the ledger, each named for the behaviour it guards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use ledger::{
    AMOUNT_PENDING_WHOLE, AccountFlags, BATCH_EVENTS_MAX, BatchError, CreateAccountResult as AR,
    CreateTransferResult as TR, Ledger, NewAccount, PendingStatus, Transfer, TransferFlags,
};

const SECOND: u64 = 1_000_000_000;
const BANK: u128 = 1;
const ALICE: u128 = 2;
const BOB: u128 = 3;
const FUND: u128 = 4; // on ledger 2

fn account(id: u128, ledger: u32, flags: AccountFlags) -> NewAccount {
    NewAccount { id, user_data: 0, ledger, code: 1, flags }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

fn with(flags: TransferFlags, t: Transfer) -> Transfer {
    Transfer { flags, ..t }
}

fn resolve(id: u128, pending_id: u128, flags: TransferFlags, amount: u128) -> Transfer {
    Transfer { id, pending_id, flags, amount, ..Transfer::default() }
}

/// A bank (unlimited), Alice and Bob (wallets), and an account on another ledger.
fn ledger() -> Ledger {
    let mut ledger = Ledger::new();
    let wallet = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let results = ledger
        .create_accounts(
            SECOND,
            &[
                account(BANK, 1, AccountFlags::empty()),
                account(ALICE, 1, wallet),
                account(BOB, 1, wallet),
                account(FUND, 2, AccountFlags::empty()),
            ],
        )
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    ledger
}

fn apply(ledger: &mut Ledger, timestamp: u64, events: &[Transfer]) -> Vec<TR> {
    let results = ledger.create_transfers(timestamp, events).unwrap();
    ledger.check_conservation().expect("debits equal credits after every batch");
    results
}

fn fund_alice(ledger: &mut Ledger, amount: u128) {
    assert_eq!(apply(ledger, 2 * SECOND, &[transfer(1000, BANK, ALICE, amount)]), [TR::Ok]);
}

#[test]
fn zero_amount_is_refused_but_a_balancing_transfer_may_move_nothing() {
    let mut ledger = ledger();
    assert_eq!(apply(&mut ledger, 2 * SECOND, &[transfer(1, BANK, ALICE, 0)]), [TR::AmountMustNotBeZero]);
    let results = apply(&mut ledger, 3 * SECOND, &[with(TransferFlags::BALANCING_DEBIT, transfer(2, ALICE, BOB, 500))]);
    assert_eq!(results, [TR::Ok]);
    assert_eq!(ledger.transfer(2).unwrap().amount, 0, "Alice had nothing to move");
}

#[test]
fn balancing_transfer_is_clamped_to_what_is_available() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 300);
    let results = apply(&mut ledger, 3 * SECOND, &[with(TransferFlags::BALANCING_DEBIT, transfer(2, ALICE, BOB, 500))]);
    assert_eq!(results, [TR::Ok]);
    assert_eq!(ledger.transfer(2).unwrap().amount, 300);
    assert_eq!(ledger.account(ALICE).unwrap().debit_headroom(), 0);
    // A retry asking for the same maximum is the same transfer.
    let retry = apply(&mut ledger, 4 * SECOND, &[with(TransferFlags::BALANCING_DEBIT, transfer(2, ALICE, BOB, 500))]);
    assert_eq!(retry, [TR::Exists]);
}

#[test]
fn amounts_near_the_u128_limit_overflow_cleanly() {
    let mut ledger = ledger();
    let huge = u128::MAX - 10;
    assert_eq!(apply(&mut ledger, 2 * SECOND, &[transfer(1, BANK, ALICE, huge)]), [TR::Ok]);
    // Bob receiving from the bank is fine; the bank's debits would overflow.
    assert_eq!(apply(&mut ledger, 3 * SECOND, &[transfer(2, BANK, BOB, 11)]), [TR::OverflowsDebitsPosted]);
    assert_eq!(apply(&mut ledger, 3 * SECOND, &[transfer(3, BANK, BOB, 10)]), [TR::Ok]);
    // Alice's credits are at the edge: a pending hold for her would overflow the total.
    let hold = with(TransferFlags::PENDING, transfer(4, BOB, ALICE, 11));
    assert_eq!(apply(&mut ledger, 4 * SECOND, &[hold]), [TR::OverflowsCredits]);
    let bank = ledger.account(BANK).unwrap();
    assert_eq!(bank.debits_posted, u128::MAX);
    // Amounts past u64 are ordinary.
    let mut ledger = self::ledger();
    let beyond_u64 = u128::from(u64::MAX) + 1;
    assert_eq!(apply(&mut ledger, 2 * SECOND, &[transfer(1, BANK, ALICE, beyond_u64)]), [TR::Ok]);
    assert_eq!(ledger.account(ALICE).unwrap().credits_posted, beyond_u64);
}

#[test]
fn a_pending_transfer_holds_money_until_posted_in_part() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 1_000);
    let hold = with(TransferFlags::PENDING, transfer(1, ALICE, BOB, 600));
    assert_eq!(apply(&mut ledger, 3 * SECOND, &[hold]), [TR::Ok]);
    let alice = ledger.account(ALICE).unwrap();
    assert_eq!((alice.debits_pending, alice.debit_headroom()), (600, 400));
    // Nobody can spend the held money.
    assert_eq!(apply(&mut ledger, 4 * SECOND, &[transfer(2, ALICE, BOB, 401)]), [TR::ExceedsCredits]);
    // Posting more than is pending is refused; posting part releases the rest.
    let too_much = resolve(3, 1, TransferFlags::POST_PENDING, 601);
    assert_eq!(apply(&mut ledger, 5 * SECOND, &[too_much]), [TR::ExceedsPendingTransferAmount]);
    assert_eq!(apply(&mut ledger, 5 * SECOND, &[resolve(3, 1, TransferFlags::POST_PENDING, 250)]), [TR::Ok]);
    let alice = ledger.account(ALICE).unwrap();
    assert_eq!((alice.debits_pending, alice.debits_posted, alice.debit_headroom()), (0, 250, 750));
    assert_eq!(ledger.account(BOB).unwrap().credits_posted, 250);
    assert_eq!(ledger.pending_status(1), Some(PendingStatus::Posted));
}

#[test]
fn a_pending_transfer_is_resolved_exactly_once() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 1_000);
    let hold = with(TransferFlags::PENDING, transfer(1, ALICE, BOB, 600));
    apply(&mut ledger, 3 * SECOND, &[hold]);
    let results = apply(
        &mut ledger,
        4 * SECOND,
        &[
            resolve(2, 1, TransferFlags::POST_PENDING, AMOUNT_PENDING_WHOLE),
            resolve(3, 1, TransferFlags::POST_PENDING, AMOUNT_PENDING_WHOLE),
            resolve(4, 1, TransferFlags::VOID_PENDING, 0),
            resolve(2, 1, TransferFlags::POST_PENDING, AMOUNT_PENDING_WHOLE),
        ],
    );
    assert_eq!(results, [TR::Ok, TR::PendingTransferAlreadyPosted, TR::PendingTransferAlreadyPosted, TR::Exists]);
    assert_eq!(ledger.account(BOB).unwrap().credits_posted, 600);

    let hold = with(TransferFlags::PENDING, transfer(5, ALICE, BOB, 100));
    apply(&mut ledger, 5 * SECOND, &[hold]);
    let results = apply(
        &mut ledger,
        6 * SECOND,
        &[
            resolve(6, 5, TransferFlags::VOID_PENDING, 0),
            resolve(7, 5, TransferFlags::VOID_PENDING, 0),
            resolve(8, 5, TransferFlags::POST_PENDING, 100),
        ],
    );
    assert_eq!(results, [TR::Ok, TR::PendingTransferAlreadyVoided, TR::PendingTransferAlreadyVoided]);
    assert_eq!(ledger.account(ALICE).unwrap().debit_headroom(), 400);
}

#[test]
fn an_expired_pending_transfer_releases_its_hold_and_cannot_be_posted() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 1_000);
    let hold = Transfer { timeout_seconds: 60, ..with(TransferFlags::PENDING, transfer(1, ALICE, BOB, 600)) };
    apply(&mut ledger, 10 * SECOND, &[hold]);
    // One second before the timeout the hold stands.
    assert!(ledger.expire_pending_transfers(69 * SECOND).is_empty());
    assert_eq!(ledger.account(ALICE).unwrap().debits_pending, 600);
    let post = resolve(2, 1, TransferFlags::POST_PENDING, AMOUNT_PENDING_WHOLE);
    assert_eq!(apply(&mut ledger, 71 * SECOND, &[post]), [TR::PendingTransferExpired]);
    assert_eq!(ledger.pending_status(1), Some(PendingStatus::Expired));
    assert_eq!(ledger.account(ALICE).unwrap().debits_pending, 0);
    assert_eq!(ledger.account(BOB).unwrap().credits_pending, 0);
}

#[test]
fn a_rolled_back_post_keeps_the_pending_transfers_timeout() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 1_000);
    let hold = Transfer { timeout_seconds: 60, ..with(TransferFlags::PENDING, transfer(1, ALICE, BOB, 600)) };
    apply(&mut ledger, 10 * SECOND, &[hold]);
    let post = resolve(2, 1, TransferFlags::POST_PENDING | TransferFlags::LINKED, AMOUNT_PENDING_WHOLE);
    let fails = transfer(3, ALICE, BOB, 5_000);
    assert_eq!(apply(&mut ledger, 20 * SECOND, &[post, fails]), [TR::LinkedEventFailed, TR::ExceedsCredits]);
    assert_eq!(ledger.pending_status(1), Some(PendingStatus::Pending));
    assert_eq!(ledger.expire_pending_transfers(70 * SECOND), [1]);
    assert_eq!(ledger.account(ALICE).unwrap().debits_pending, 0);
}

#[test]
fn transfers_between_one_account_unknown_accounts_and_ledgers_are_refused() {
    let mut ledger = ledger();
    let results = apply(
        &mut ledger,
        2 * SECOND,
        &[
            transfer(1, BANK, BANK, 1),
            transfer(2, 99, ALICE, 1),
            transfer(3, BANK, 99, 1),
            transfer(4, BANK, FUND, 1),
            Transfer { ledger: 2, ..transfer(5, BANK, ALICE, 1) },
            transfer(6, 0, ALICE, 1),
            Transfer { timestamp: 5, ..transfer(7, BANK, ALICE, 1) },
            Transfer { timeout_seconds: 5, ..transfer(8, BANK, ALICE, 1) },
            transfer(0, BANK, ALICE, 1),
            transfer(u128::MAX, BANK, ALICE, 1),
        ],
    );
    assert_eq!(
        results,
        [
            TR::AccountsMustBeDifferent,
            TR::DebitAccountNotFound,
            TR::CreditAccountNotFound,
            TR::AccountsMustHaveTheSameLedger,
            TR::TransferMustHaveTheSameLedgerAsAccounts,
            TR::DebitAccountIdMustNotBeZero,
            TR::TimestampMustBeZero,
            TR::TimeoutReservedForPendingTransfer,
            TR::IdMustNotBeZero,
            TR::IdMustNotBeIntMax,
        ]
    );
    assert_eq!(ledger.stats().transfers, 0);
}

#[test]
fn a_closing_transfer_closes_the_account_until_voided() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 1_000);
    let close = with(TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT, transfer(1, ALICE, BANK, 1));
    assert_eq!(apply(&mut ledger, 3 * SECOND, &[close]), [TR::Ok]);
    assert!(ledger.account(ALICE).unwrap().is_closed());
    assert_eq!(apply(&mut ledger, 4 * SECOND, &[transfer(2, ALICE, BOB, 1)]), [TR::DebitAccountAlreadyClosed]);
    assert_eq!(apply(&mut ledger, 4 * SECOND, &[transfer(3, BOB, ALICE, 1)]), [TR::CreditAccountAlreadyClosed]);
    assert_eq!(apply(&mut ledger, 5 * SECOND, &[resolve(4, 1, TransferFlags::VOID_PENDING, 0)]), [TR::Ok]);
    assert!(!ledger.account(ALICE).unwrap().is_closed());
    assert_eq!(apply(&mut ledger, 6 * SECOND, &[transfer(2, ALICE, BOB, 1)]), [TR::Ok]);
    // A closing transfer must be pending, so that it can be undone.
    let not_pending = with(TransferFlags::CLOSING_CREDIT, transfer(5, ALICE, BOB, 1));
    assert_eq!(apply(&mut ledger, 7 * SECOND, &[not_pending]), [TR::ClosingTransferMustBePending]);
}

#[test]
fn the_same_id_is_exists_with_the_same_fields_and_names_the_field_that_differs() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 1_000);
    let original = Transfer { user_data: 42, ..transfer(1, ALICE, BOB, 100) };
    assert_eq!(apply(&mut ledger, 3 * SECOND, &[original]), [TR::Ok]);
    let results = apply(
        &mut ledger,
        4 * SECOND,
        &[
            original,
            Transfer { amount: 101, ..original },
            Transfer { credit_account_id: BANK, ..original },
            Transfer { user_data: 43, ..original },
            Transfer { code: 2, ..original },
            with(TransferFlags::PENDING, original),
        ],
    );
    assert_eq!(
        results,
        [
            TR::Exists,
            TR::ExistsWithDifferentAmount,
            TR::ExistsWithDifferentCreditAccountId,
            TR::ExistsWithDifferentUserData,
            TR::ExistsWithDifferentCode,
            TR::ExistsWithDifferentFlags,
        ]
    );
    assert_eq!(ledger.account(BOB).unwrap().credits_posted, 100, "moved once");
}

#[test]
fn a_linked_chain_applies_all_or_nothing_and_blames_the_event_that_failed() {
    let mut ledger = ledger();
    fund_alice(&mut ledger, 100);
    let linked = |t| with(TransferFlags::LINKED, t);
    let results = apply(
        &mut ledger,
        3 * SECOND,
        &[
            linked(transfer(1, ALICE, BOB, 60)),
            linked(transfer(2, ALICE, BOB, 60)),
            transfer(3, BANK, BOB, 1),
            transfer(4, BANK, BOB, 7),
        ],
    );
    assert_eq!(results, [TR::LinkedEventFailed, TR::ExceedsCredits, TR::LinkedEventFailed, TR::Ok]);
    assert_eq!(ledger.account(ALICE).unwrap().debits_posted, 0);
    assert_eq!(ledger.account(BOB).unwrap().credits_posted, 7);
    assert!(ledger.transfer(1).is_none(), "a rolled-back transfer leaves no trace");
    assert!(ledger.account_transfers(BOB, 0, 10).iter().all(|t| t.id == 4));

    // A chain left open at the end of the batch never applies.
    let results =
        apply(&mut ledger, 4 * SECOND, &[linked(transfer(5, BANK, BOB, 1)), linked(transfer(6, BANK, BOB, 1))]);
    assert_eq!(results, [TR::LinkedEventFailed, TR::LinkedEventChainOpen]);
    assert_eq!(ledger.account(BOB).unwrap().credits_posted, 7);
}

#[test]
fn linked_account_creation_is_all_or_nothing() {
    let mut ledger = Ledger::new();
    let results = ledger
        .create_accounts(
            1,
            &[
                account(1, 1, AccountFlags::LINKED),
                account(2, 0, AccountFlags::empty()),
                account(3, 1, AccountFlags::empty()),
            ],
        )
        .unwrap();
    assert_eq!(results, [AR::LinkedEventFailed, AR::LedgerMustNotBeZero, AR::Ok]);
    assert!(ledger.account(1).is_none());
    assert_eq!(ledger.accounts().len(), 1);
    let both_limits = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    let results = ledger
        .create_accounts(
            2,
            &[account(4, 1, both_limits), account(3, 1, AccountFlags::empty()), account(3, 2, AccountFlags::empty())],
        )
        .unwrap();
    assert_eq!(results, [AR::FlagsAreMutuallyExclusive, AR::Exists, AR::ExistsWithDifferentLedger]);
}

#[test]
fn a_batch_over_the_maximum_is_refused_whole() {
    let mut ledger = ledger();
    let events = vec![transfer(1, BANK, ALICE, 1); BATCH_EVENTS_MAX + 1];
    assert_eq!(
        ledger.create_transfers(2 * SECOND, &events),
        Err(BatchError::TooManyEvents { count: BATCH_EVENTS_MAX + 1 })
    );
    assert_eq!(ledger.stats().transfers, 0);
    let events: Vec<Transfer> = (1..=BATCH_EVENTS_MAX as u128).map(|id| transfer(id, BANK, ALICE, 1)).collect();
    let results = ledger.create_transfers(2 * SECOND, &events).unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
}

#[test]
fn event_timestamps_grow_even_when_the_clock_goes_back() {
    let mut ledger = ledger();
    apply(&mut ledger, 100 * SECOND, &[transfer(1, BANK, ALICE, 1), transfer(2, BANK, ALICE, 1)]);
    apply(&mut ledger, 50 * SECOND, &[transfer(3, BANK, ALICE, 1)]);
    let stamps: Vec<u64> = ledger.account_transfers(ALICE, 0, 10).iter().map(|t| t.timestamp).collect();
    assert_eq!(stamps, [100 * SECOND, 100 * SECOND + 1, 100 * SECOND + 2]);
}

#[test]
fn an_accounts_transfers_are_listed_in_order_and_paged() {
    let mut ledger = ledger();
    let events: Vec<Transfer> = (1..=5).map(|id| transfer(id, BANK, ALICE, id)).collect();
    apply(&mut ledger, 2 * SECOND, &events);
    apply(&mut ledger, 3 * SECOND, &[transfer(6, ALICE, BOB, 2)]);
    let first = ledger.account_transfers(ALICE, 0, 4);
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let rest = ledger.account_transfers(ALICE, first[3].timestamp, 4);
    assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), [5, 6]);
    assert!(ledger.account_transfers(99, 0, 4).is_empty());
    assert_eq!(ledger.account_transfers(BOB, 0, 10).len(), 1);
}

#[test]
fn a_statement_pages_newest_first_from_a_cursor() {
    let mut ledger = ledger();
    let events: Vec<Transfer> = (1..=5).map(|id| transfer(id, BANK, ALICE, id)).collect();
    apply(&mut ledger, 2 * SECOND, &events);
    let ids = |page: Vec<Transfer>| page.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(ledger.account_transfers_newest_first(ALICE, None, 2)), [5, 4]);
    assert_eq!(ids(ledger.account_transfers_newest_first(ALICE, Some(4), 2)), [3, 2]);
    assert_eq!(ids(ledger.account_transfers_newest_first(ALICE, Some(1), 2)), Vec::<u128>::new());
    // A cursor that is not one of the account's transfers yields nothing.
    assert!(ledger.account_transfers_newest_first(BOB, Some(3), 2).is_empty());
    assert!(ledger.account_transfers_newest_first(ALICE, Some(99), 2).is_empty());
}

#[test]
fn a_batch_whose_timestamps_would_overflow_is_refused_whole() {
    let mut ledger = ledger();
    let events = [transfer(1, BANK, ALICE, 1), transfer(2, BANK, ALICE, 1)];
    let refused = ledger.create_transfers(u64::MAX, &events);
    assert_eq!(refused, Err(BatchError::TimestampOverflow { timestamp: u64::MAX }));
    assert_eq!(ledger.stats().transfers, 0);
    // The last representable timestamp still takes a batch of one.
    assert_eq!(ledger.create_transfers(u64::MAX, &events[..1]).unwrap(), [TR::Ok]);
    let after = ledger.create_accounts(5, &[account(9, 1, AccountFlags::empty())]);
    assert_eq!(after, Err(BatchError::TimestampOverflow { timestamp: 5 }));
}

#[test]
fn an_image_with_an_impossible_id_is_refused_not_a_panic() {
    let mut good = ledger();
    apply(&mut good, 2 * SECOND, &[transfer(1, BANK, ALICE, 1)]);
    let mut image = good.image();
    image.accounts[0].0.id = 0;
    assert_eq!(Ledger::restore(image).err(), Some(ledger::ImageError::InvalidId { id: 0 }));
    let mut image = good.image();
    image.transfers[0].transfer.id = u128::MAX;
    assert_eq!(Ledger::restore(image).err(), Some(ledger::ImageError::InvalidId { id: u128::MAX }));
}

#[test]
fn looking_up_the_reserved_ids_finds_nothing() {
    let mut ledger = ledger();
    apply(&mut ledger, 2 * SECOND, &[transfer(1, BANK, ALICE, 1)]);
    for id in [0, u128::MAX] {
        assert!(ledger.transfer(id).is_none());
        assert!(ledger.account_transfers_newest_first(ALICE, Some(id), 5).is_empty());
    }
}

mod with_an_id_horizon {
    use super::*;
    use ledger::LedgerConfig;

    const HORIZON: u64 = 60 * SECOND;
    /// Transfers per eviction unit (the store's chunk size).
    const CHUNK: u128 = 1 << 14;

    /// An id created at `time` (the high 64 bits), distinguished by `serial`.
    fn id_at(time: u64, serial: u128) -> u128 {
        (u128::from(time) << 64) | serial
    }

    fn horizon_ledger() -> Ledger {
        let mut ledger = Ledger::with_config(LedgerConfig { id_horizon_ns: Some(HORIZON) }, 4, 0);
        let base = self::ledger();
        let accounts: Vec<NewAccount> = base
            .accounts()
            .iter()
            .map(|a| NewAccount { id: a.id, user_data: 0, ledger: a.ledger, code: a.code, flags: a.flags })
            .collect();
        assert!(ledger.create_accounts(SECOND, &accounts).unwrap().iter().all(|r| r.is_ok()));
        ledger
    }

    #[test]
    fn ids_must_be_younger_than_the_horizon_and_not_from_the_future() {
        let mut ledger = horizon_ledger();
        let now = 100 * SECOND;
        let results = apply(
            &mut ledger,
            now,
            &[
                transfer(id_at(now - HORIZON - 1, 1), BANK, ALICE, 1),
                transfer(id_at(now + 5 * SECOND, 2), BANK, ALICE, 1),
                transfer(id_at(now - HORIZON + 10, 3), BANK, ALICE, 1),
            ],
        );
        assert_eq!(results, [TR::IdExpired, TR::IdTimeInTheFuture, TR::Ok]);
    }

    #[test]
    fn old_transfers_leave_memory_and_their_retries_are_refused_not_applied_twice() {
        let mut ledger = horizon_ledger();
        let t0 = 10 * SECOND;
        let hold = with(TransferFlags::PENDING, transfer(id_at(t0, 0), BANK, ALICE, 5));
        let posted_hold = with(TransferFlags::PENDING, transfer(id_at(t0, 1), BANK, ALICE, 7));
        let mut first: Vec<Transfer> = vec![hold, posted_hold];
        first.extend((2..CHUNK + 100).map(|serial| transfer(id_at(t0, serial), BANK, ALICE, 1)));
        for batch in first.chunks(BATCH_EVENTS_MAX) {
            assert!(apply(&mut ledger, t0, batch).iter().all(|r| r.is_ok()));
        }
        let post = resolve(id_at(t0, CHUNK + 200), id_at(t0, 1), TransferFlags::POST_PENDING, AMOUNT_PENDING_WHOLE);
        assert_eq!(apply(&mut ledger, t0, &[post]), [TR::Ok]);
        let credited = ledger.account(ALICE).unwrap().credits_posted;
        assert_eq!(ledger.first_position_in_memory(), 0);

        // Past the horizon, the first full chunk is evicted.
        let later = t0 + HORIZON + SECOND;
        let fresh = transfer(id_at(later, 1), BANK, BOB, 1);
        assert_eq!(apply(&mut ledger, later, &[fresh]), [TR::Ok]);
        assert_eq!(ledger.first_position_in_memory(), CHUNK as u64);
        assert!(ledger.transfer(id_at(t0, 2)).is_none(), "evicted from memory");
        assert!(ledger.transfer(id_at(t0, CHUNK + 50)).is_some(), "the newer chunk stays");
        assert_eq!(ledger.transfer_count(), CHUNK as u64 + 102);

        // A retry of an evicted transfer is refused, never applied again.
        assert_eq!(apply(&mut ledger, later, &[transfer(id_at(t0, 2), BANK, ALICE, 1)]), [TR::IdExpired]);
        assert_eq!(ledger.account(ALICE).unwrap().credits_posted, credited);

        // The open hold survives eviction and can still be voided.
        assert_eq!(ledger.pending_status(id_at(t0, 0)), Some(PendingStatus::Pending));
        assert_eq!(ledger.pending_status(id_at(t0, 1)), None, "a resolved, evicted hold is forgotten");
        let void = resolve(id_at(later, 2), id_at(t0, 0), TransferFlags::VOID_PENDING, 0);
        assert_eq!(apply(&mut ledger, later, &[void]), [TR::Ok]);
        assert_eq!(ledger.account(ALICE).unwrap().credits_pending, 0);

        // The newest-first history stops at the edge of memory.
        let history = ledger.account_transfers_newest_first(ALICE, None, usize::MAX);
        assert!(history.iter().all(|t| ledger.transfer(t.id).is_some()));

        // An image of the windowed ledger rebuilds it exactly.
        let restored = Ledger::restore(ledger.image()).unwrap();
        assert_eq!(restored.image(), ledger.image());
        assert_eq!(restored.first_position_in_memory(), CHUNK as u64);
    }

    /// A window that held a peak's transfers gives the memory back once
    /// they leave it: the chunks beyond a few spare ones and the index's
    /// empty slots are freed, not kept for a peak that has passed.
    #[test]
    fn a_window_that_shrinks_gives_its_memory_back() {
        let mut ledger = horizon_ledger();
        let t0 = 10 * SECOND;
        let peak = 12 * CHUNK;
        let transfers: Vec<Transfer> = (0..peak).map(|serial| transfer(id_at(t0, serial), BANK, ALICE, 1)).collect();
        for batch in transfers.chunks(BATCH_EVENTS_MAX) {
            assert!(apply(&mut ledger, t0, batch).iter().all(|r| r.is_ok()));
        }
        let at_peak = ledger.memory_bytes();

        let later = t0 + HORIZON + SECOND;
        assert_eq!(apply(&mut ledger, later, &[transfer(id_at(later, 1), BANK, BOB, 1)]), [TR::Ok]);
        assert_eq!(ledger.first_position_in_memory(), peak as u64, "every chunk of the peak left");
        let after = ledger.memory_bytes();
        assert!(after * 2 < at_peak, "{after} bytes after the peak, {at_peak} at it");
        assert!(ledger.transfer(id_at(t0, peak - 1)).is_none());
        assert!(ledger.transfer(id_at(later, 1)).is_some());
        assert_eq!(apply(&mut ledger, later, &[transfer(id_at(later, 1), BANK, BOB, 1)]), [TR::Exists]);
    }
}
