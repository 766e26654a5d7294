//! Events and their deliveries: each event is archived once; a delivery is
//! queued for each destination that takes it (the merchant's endpoints
//! subscribed to its type, or a gateway trade's `notify_url`), retried on
//! Alipay's schedule, and every attempt is archived on the merchant's chain
//! of attempts so that its log can be read back.

use std::collections::{BTreeMap, BTreeSet};

use journal::{ArchiveSource, JournalError};
use ledger::NANOS_PER_SECOND;

use crate::at_rest::ArchiveRecord;
use crate::command::{DeliveryAttempt, NOTIFY_URL, Outcome};
use crate::platform::Platform;
use crate::rejection::{Missing, not_found};
use crate::trades::{DELIVERY_ATTEMPTS_MAX, Delivery, Event, EventData, RETRY_DELAYS_SECONDS};
use crate::units::{EndpointNumber, EventNumber, PartyNumber, Timestamp, TradeNumber};

/// An attempt's error text is kept to this many characters.
pub const ATTEMPT_ERROR_CHARS_MAX: usize = 200;
/// Attempts one listing reads at most, walking a merchant's chain back to
/// the event (a bound on a read, not on what is kept).
pub const ATTEMPTS_SCANNED_MAX: usize = 100_000;

/// Events: they live in the archive; each party's newest one is here, the
/// deliveries not yet made, and each merchant's newest attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EventBook {
    /// Each party's newest event (each archived event points to the one before).
    last_of_party: BTreeMap<PartyNumber, u64>,
    /// Deliveries not yet made (due, or given up on until a resend), by
    /// event and destination.
    deliveries: BTreeMap<(EventNumber, EndpointNumber), Delivery>,
    /// Each merchant's newest delivery attempt in the archive.
    last_attempt_of_party: BTreeMap<PartyNumber, u64>,
}

impl EventBook {
    pub(crate) fn last_of_party(&self, party: PartyNumber) -> Option<u64> {
        self.last_of_party.get(&party).copied()
    }
}

/// An event to deliver again, as the server read it from the archive.
pub(crate) struct ResentEvent<'a> {
    pub number: EventNumber,
    pub offset: u64,
    pub merchant: PartyNumber,
    pub kind: &'a str,
    pub trade: Option<TradeNumber>,
    pub to_notify_url: bool,
}

/// One destination's queue, for the metrics page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFigures {
    pub endpoint: EndpointNumber,
    pub merchant: PartyNumber,
    /// Deliveries not yet made (given up ones included).
    pub undelivered: u64,
    /// When the oldest of them was queued.
    pub oldest_queued_at: Timestamp,
}

impl Platform {
    /// Archives an event on its party's chain; returns its offset.
    pub(crate) fn archive_event(&mut self, event: &Event) -> u64 {
        let previous_of_party = self.state.events.last_of_party(event.party);
        let at = self.state.archive.length();
        let offset = self.state.archive.append(&ArchiveRecord::of_event(event, at, previous_of_party));
        self.state.events.last_of_party.insert(event.party, offset);
        offset
    }

    /// Where an event of `merchant` goes: a gateway trade with a
    /// `notify_url` is notified Alipay's way, once per change of its status
    /// or refunds; other events go to each endpoint subscribed to their type.
    fn destinations(&self, merchant: PartyNumber, kind: &str, to_notify_url: bool) -> Vec<EndpointNumber> {
        if to_notify_url {
            return vec![NOTIFY_URL];
        }
        self.state.access.endpoints_of(merchant).filter(|e| e.subscribes_to(kind)).map(|e| e.number).collect()
    }

    pub(crate) fn queue_deliveries(&mut self, now: Timestamp, event: &Event, offset: u64) {
        let notify_trade = match &event.data {
            EventData::Trade(record) | EventData::Refund { trade: record, .. } => {
                record.notify_url.is_some().then_some(record)
            }
            _ => None,
        };
        let destinations = match notify_trade {
            Some(record) => {
                // A full refund closes the trade: its refund notification already says so.
                let notified = match event.kind.as_str() {
                    "trade.succeeded" | "refund.succeeded" => true,
                    "trade.closed" => record.refunded.is_zero(),
                    _ => false,
                };
                if notified { vec![NOTIFY_URL] } else { Vec::new() }
            }
            None => self.destinations(event.party, &event.kind, false),
        };
        for endpoint in destinations {
            let delivery = Delivery {
                event: event.number,
                endpoint,
                merchant: event.party,
                offset,
                trade: event.trade,
                attempts: 0,
                queued_at: now,
                next_attempt_at: Some(now),
            };
            self.state.events.deliveries.insert((event.number, endpoint), delivery);
        }
    }

    /// Deliveries due by `now`: for each trade and destination only the
    /// oldest not yet made (so a trade's events arrive in order), and every
    /// other one. Given-up deliveries wait for a resend and block nothing.
    pub fn deliveries_due(&self, now: Timestamp, limit: usize) -> Vec<Delivery> {
        let mut blocked = BTreeSet::new();
        let mut due = Vec::new();
        for delivery in self.state.events.deliveries.values() {
            let Some(next_attempt_at) = delivery.next_attempt_at else { continue };
            if let Some(trade) = delivery.trade
                && !blocked.insert((trade, delivery.endpoint))
            {
                continue;
            }
            if next_attempt_at <= now {
                due.push(delivery.clone());
                if due.len() == limit {
                    break;
                }
            }
        }
        due
    }

    pub(crate) fn record_attempt(&mut self, now: Timestamp, attempt: &DeliveryAttempt) -> Outcome {
        let mut attempt = attempt.clone();
        if let Some(error) = &mut attempt.error {
            *error = error.chars().filter(|c| !c.is_control()).take(ATTEMPT_ERROR_CHARS_MAX).collect();
        }
        let previous = self.state.events.last_attempt_of_party.get(&attempt.merchant).copied();
        let offset = self.state.archive.append(&ArchiveRecord::attempt(&attempt, now, previous));
        self.state.events.last_attempt_of_party.insert(attempt.merchant, offset);
        let key = (attempt.event, attempt.endpoint);
        let Some(delivery) = self.state.events.deliveries.get_mut(&key) else { return Outcome::DeliveryRecorded };
        delivery.attempts += 1;
        if attempt.delivered {
            self.state.events.deliveries.remove(&key);
        } else if delivery.attempts >= DELIVERY_ATTEMPTS_MAX {
            delivery.next_attempt_at = None;
        } else {
            let wait = RETRY_DELAYS_SECONDS[(delivery.attempts as usize - 1).min(RETRY_DELAYS_SECONDS.len() - 1)];
            delivery.next_attempt_at = Some(now.plus_nanos(wait * NANOS_PER_SECOND));
        }
        Outcome::DeliveryRecorded
    }

    /// Queues an event again, due now, for every destination that takes it
    /// (with a fresh schedule of retries).
    pub(crate) fn resend_event(&mut self, now: Timestamp, event: &ResentEvent<'_>) -> Outcome {
        if !self.state.parties.is(event.merchant, crate::command::PartyKind::Merchant) {
            return not_found(Missing::Event);
        }
        let destinations = self.destinations(event.merchant, event.kind, event.to_notify_url);
        for &endpoint in &destinations {
            let fresh = Delivery {
                event: event.number,
                endpoint,
                merchant: event.merchant,
                offset: event.offset,
                trade: event.trade,
                attempts: 0,
                queued_at: now,
                next_attempt_at: Some(now),
            };
            let delivery = self.state.events.deliveries.entry((event.number, endpoint)).or_insert(fresh);
            delivery.attempts = 0;
            delivery.next_attempt_at = Some(now);
        }
        Outcome::EventResent { deliveries: destinations.len() as u32 }
    }

    /// Drops the deliveries queued for a deleted endpoint.
    pub(crate) fn forget_deliveries_to(&mut self, endpoint: EndpointNumber) {
        self.state.events.deliveries.retain(|&(_, to), _| to != endpoint);
    }

    /// A merchant's events not yet delivered to every destination, newest
    /// first, below `before`: (event, where it is archived).
    pub fn undelivered_events(
        &self,
        merchant: PartyNumber,
        before: Option<EventNumber>,
        limit: usize,
    ) -> Vec<(EventNumber, u64)> {
        let below = (before.unwrap_or(EventNumber::new(u64::MAX)), EndpointNumber::new(0));
        let mut found: Vec<(EventNumber, u64)> = Vec::new();
        for delivery in self.state.events.deliveries.range(..below).rev().map(|(_, delivery)| delivery) {
            if delivery.merchant != merchant || found.last().is_some_and(|(last, _)| *last == delivery.event) {
                continue;
            }
            found.push((delivery.event, delivery.offset));
            if found.len() == limit {
                break;
            }
        }
        found
    }

    /// An event that still has a delivery to make: its merchant and where it is archived.
    pub fn undelivered_event(&self, event: EventNumber) -> Option<(PartyNumber, u64)> {
        let first = (event, EndpointNumber::new(0));
        let (_, delivery) = self.state.events.deliveries.range(first..).next()?;
        (delivery.event == event).then_some((delivery.merchant, delivery.offset))
    }

    /// Whether an event still has a delivery to make.
    pub fn is_undelivered(&self, event: EventNumber) -> bool {
        self.undelivered_event(event).is_some()
    }

    /// Each destination's queue of undelivered events.
    pub fn delivery_queues(&self) -> Vec<QueueFigures> {
        let mut queues: BTreeMap<EndpointNumber, QueueFigures> = BTreeMap::new();
        for delivery in self.state.events.deliveries.values() {
            let figures = queues.entry(delivery.endpoint).or_insert(QueueFigures {
                endpoint: delivery.endpoint,
                merchant: delivery.merchant,
                undelivered: 0,
                oldest_queued_at: delivery.queued_at,
            });
            figures.undelivered += 1;
            figures.oldest_queued_at = figures.oldest_queued_at.min(delivery.queued_at);
        }
        queues.into_values().collect()
    }

    /// The merchant's newest attempt in the archive (each points to the one before).
    pub fn last_attempt_of(&self, merchant: PartyNumber) -> Option<u64> {
        self.state.events.last_attempt_of_party.get(&merchant).copied()
    }
}

/// The attempts to deliver the event archived at `event_offset`, newest
/// first: a walk of its merchant's attempts from `head` back to the event
/// (every attempt comes after its event), at most [`ATTEMPTS_SCANNED_MAX`]
/// records; `read` gives an archived attempt, its time, and the one before.
pub fn attempts_of_event(
    head: Option<u64>,
    event: EventNumber,
    event_offset: u64,
    read: impl Fn(u64) -> Result<(DeliveryAttempt, Timestamp, Option<u64>), JournalError>,
) -> Result<Vec<(DeliveryAttempt, Timestamp)>, JournalError> {
    let mut found = Vec::new();
    let mut next = head;
    let mut scanned = 0;
    while let Some(offset) = next.filter(|&offset| offset > event_offset && scanned < ATTEMPTS_SCANNED_MAX) {
        scanned += 1;
        let (attempt, at, previous) = read(offset)?;
        if attempt.event == event {
            found.push((attempt, at));
        }
        next = previous;
    }
    Ok(found)
}

/// An archived attempt, its time, and where its merchant's previous one is.
pub fn read_archived_attempt(
    archive: &dyn ArchiveSource,
    offset: u64,
) -> Result<(DeliveryAttempt, Timestamp, Option<u64>), JournalError> {
    crate::trade_actions::decode_archived(archive, offset)?.into_attempt(offset)
}
