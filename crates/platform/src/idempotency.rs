//! Idempotency keys: the answer each caller's key got, kept for a day, so
//! that a retried request gets the same answer and moves nothing again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{IdempotencyTag, Outcome};
use crate::units::{PartyNumber, Timestamp};

/// How long an idempotency key is remembered (at least the 24 h promised).
pub const IDEMPOTENCY_RETENTION_NANOS: u64 = ledger::NANOS_PER_DAY;
/// Refusals remembered under idempotency keys per caller at once (over the
/// 24 h retention). A refusal moved nothing, so past this one is simply not
/// remembered (a retry asks again): a caller sending refused requests
/// without end cannot grow the state without end.
pub const REMEMBERED_REFUSALS_PER_CALLER_MAX: u32 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    request_hash: [u8; 32],
    outcome: Outcome,
    created_at: Timestamp,
}

/// The answers remembered, by (caller, key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Idempotency {
    records: BTreeMap<(PartyNumber, String), Record>,
    /// (created at, caller, key): what to forget, oldest first.
    expiry: BTreeSet<(Timestamp, PartyNumber, String)>,
    /// Refusals remembered, by caller (see `REMEMBERED_REFUSALS_PER_CALLER_MAX`).
    refusals: BTreeMap<PartyNumber, u32>,
}

impl Idempotency {
    /// The answer to a key used before: the first answer if the request is
    /// the same, a mismatch if not; `None` for a key not (or no longer) known.
    pub(crate) fn repeated(&self, tag: &IdempotencyTag) -> Option<Outcome> {
        let record = self.records.get(&(tag.caller, tag.key.clone()))?;
        Some(if record.request_hash == tag.request_hash {
            record.outcome.clone()
        } else {
            Outcome::IdempotencyMismatch
        })
    }

    pub(crate) fn remember(&mut self, tag: &IdempotencyTag, outcome: &Outcome, now: Timestamp) {
        if matches!(outcome, Outcome::Rejected(_)) {
            let remembered = self.refusals.entry(tag.caller).or_default();
            if *remembered >= REMEMBERED_REFUSALS_PER_CALLER_MAX {
                return;
            }
            *remembered += 1;
        }
        let record = Record { request_hash: tag.request_hash, outcome: outcome.clone(), created_at: now };
        self.records.insert((tag.caller, tag.key.clone()), record);
        self.expiry.insert((now, tag.caller, tag.key.clone()));
    }

    /// When the oldest key is old enough to forget: the first moment the
    /// retention has passed since it was made (`forget_expired`'s horizon).
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        let (created_at, _, _) = self.expiry.first()?;
        // Past the end of time never (as `forget_expired` never forgets it).
        created_at.nanos().checked_add(IDEMPOTENCY_RETENTION_NANOS + 1).map(Timestamp::from_nanos)
    }

    /// How many keys are older than the retention at `now`, counting at most `limit`.
    pub(crate) fn expired_count(&self, now: Timestamp, limit: usize) -> usize {
        let horizon = now.minus_nanos(IDEMPOTENCY_RETENTION_NANOS);
        self.expiry.iter().take_while(|(created_at, _, _)| *created_at < horizon).take(limit).count()
    }

    /// Forgets keys older than the retention, at most `budget` of them.
    pub(crate) fn forget_expired(&mut self, now: Timestamp, budget: &mut u32) {
        let horizon = now.minus_nanos(IDEMPOTENCY_RETENTION_NANOS);
        while let Some((created_at, caller, key)) = self.expiry.first().cloned() {
            if created_at >= horizon || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.expiry.pop_first();
            let forgotten = self.records.remove(&(caller, key));
            if forgotten.is_some_and(|record| matches!(record.outcome, Outcome::Rejected(_)))
                && let Some(remembered) = self.refusals.get_mut(&caller)
            {
                *remembered -= 1;
                if *remembered == 0 {
                    self.refusals.remove(&caller);
                }
            }
        }
    }
}
