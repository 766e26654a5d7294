//! One result per event: `Ok`, or the reason the event was not applied.

/// Why a batch as a whole was refused (no event was applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// More events than [`crate::BATCH_EVENTS_MAX`].
    TooManyEvents { count: usize },
    /// The batch's event timestamps would pass `u64::MAX` nanoseconds.
    TimestampOverflow { timestamp: u64 },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::TooManyEvents { count } => {
                write!(f, "batch has {count} events, more than the maximum of {}", crate::BATCH_EVENTS_MAX)
            }
            BatchError::TimestampOverflow { timestamp } => {
                write!(f, "batch timestamp {timestamp} leaves no room for its events' timestamps")
            }
        }
    }
}

impl std::error::Error for BatchError {}

macro_rules! result_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $code:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// The machine-readable code of this result (snake case).
            pub fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            pub fn is_ok(self) -> bool {
                matches!(self, $name::Ok)
            }

            /// Applied now, or applied before with the same fields: the event's
            /// effect is in the ledger exactly once.
            pub fn is_ok_or_exists(self) -> bool {
                matches!(self, $name::Ok | $name::Exists)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}

result_enum! {
    /// The result of one account creation.
    CreateAccountResult {
        Ok => "ok",
        LinkedEventFailed => "linked_event_failed",
        LinkedEventChainOpen => "linked_event_chain_open",
        IdMustNotBeZero => "id_must_not_be_zero",
        IdMustNotBeIntMax => "id_must_not_be_int_max",
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        ClosedFlagIsSetByTransfers => "closed_flag_is_set_by_transfers",
        LedgerMustNotBeZero => "ledger_must_not_be_zero",
        CodeMustNotBeZero => "code_must_not_be_zero",
        ExistsWithDifferentFlags => "exists_with_different_flags",
        ExistsWithDifferentUserData => "exists_with_different_user_data",
        ExistsWithDifferentLedger => "exists_with_different_ledger",
        ExistsWithDifferentCode => "exists_with_different_code",
        Exists => "exists",
    }
}

result_enum! {
    /// The result of one transfer.
    CreateTransferResult {
        Ok => "ok",
        LinkedEventFailed => "linked_event_failed",
        LinkedEventChainOpen => "linked_event_chain_open",
        TimestampMustBeZero => "timestamp_must_be_zero",
        IdMustNotBeZero => "id_must_not_be_zero",
        IdMustNotBeIntMax => "id_must_not_be_int_max",
        IdExpired => "id_expired",
        IdTimeInTheFuture => "id_time_in_the_future",
        FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
        DebitAccountIdMustNotBeZero => "debit_account_id_must_not_be_zero",
        CreditAccountIdMustNotBeZero => "credit_account_id_must_not_be_zero",
        AccountsMustBeDifferent => "accounts_must_be_different",
        PendingIdMustBeZero => "pending_id_must_be_zero",
        PendingIdMustNotBeZero => "pending_id_must_not_be_zero",
        PendingIdMustNotBeIntMax => "pending_id_must_not_be_int_max",
        PendingIdMustBeDifferent => "pending_id_must_be_different",
        TimeoutReservedForPendingTransfer => "timeout_reserved_for_pending_transfer",
        ClosingTransferMustBePending => "closing_transfer_must_be_pending",
        AmountMustNotBeZero => "amount_must_not_be_zero",
        LedgerMustNotBeZero => "ledger_must_not_be_zero",
        CodeMustNotBeZero => "code_must_not_be_zero",
        ExistsWithDifferentFlags => "exists_with_different_flags",
        ExistsWithDifferentDebitAccountId => "exists_with_different_debit_account_id",
        ExistsWithDifferentCreditAccountId => "exists_with_different_credit_account_id",
        ExistsWithDifferentAmount => "exists_with_different_amount",
        ExistsWithDifferentPendingId => "exists_with_different_pending_id",
        ExistsWithDifferentUserData => "exists_with_different_user_data",
        ExistsWithDifferentTimeout => "exists_with_different_timeout",
        ExistsWithDifferentLedger => "exists_with_different_ledger",
        ExistsWithDifferentCode => "exists_with_different_code",
        Exists => "exists",
        DebitAccountNotFound => "debit_account_not_found",
        CreditAccountNotFound => "credit_account_not_found",
        AccountsMustHaveTheSameLedger => "accounts_must_have_the_same_ledger",
        TransferMustHaveTheSameLedgerAsAccounts => "transfer_must_have_the_same_ledger_as_accounts",
        PendingTransferNotFound => "pending_transfer_not_found",
        PendingTransferNotPending => "pending_transfer_not_pending",
        PendingTransferHasDifferentDebitAccountId => "pending_transfer_has_different_debit_account_id",
        PendingTransferHasDifferentCreditAccountId => "pending_transfer_has_different_credit_account_id",
        PendingTransferHasDifferentLedger => "pending_transfer_has_different_ledger",
        PendingTransferHasDifferentCode => "pending_transfer_has_different_code",
        ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
        PendingTransferHasDifferentAmount => "pending_transfer_has_different_amount",
        PendingTransferAlreadyPosted => "pending_transfer_already_posted",
        PendingTransferAlreadyVoided => "pending_transfer_already_voided",
        PendingTransferExpired => "pending_transfer_expired",
        DebitAccountAlreadyClosed => "debit_account_already_closed",
        CreditAccountAlreadyClosed => "credit_account_already_closed",
        OverflowsDebitsPending => "overflows_debits_pending",
        OverflowsCreditsPending => "overflows_credits_pending",
        OverflowsDebitsPosted => "overflows_debits_posted",
        OverflowsCreditsPosted => "overflows_credits_posted",
        OverflowsDebits => "overflows_debits",
        OverflowsCredits => "overflows_credits",
        OverflowsTimeout => "overflows_timeout",
        ExceedsCredits => "exceeds_credits",
        ExceedsDebits => "exceeds_debits",
    }
}
