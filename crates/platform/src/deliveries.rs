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
/// Deliveries one destination may owe at once (given-up ones included): a
/// destination dead through a Double Eleven would otherwise hold a day's
/// events in memory. Past it, new events are not queued for it (they stay
/// in the archive, listed by `GET /v1/events`, and can be resent).
pub const UNDELIVERED_PER_ENDPOINT_MAX: u64 = 1_000_000;
/// Attempts one listing reads at most, walking a merchant's chain back to
/// the event (a bound on a read, not on what is kept).
pub const ATTEMPTS_SCANNED_MAX: usize = 100_000;

/// Events: they live in the archive; each party's newest one is here, the
/// deliveries not yet made, and each merchant's newest attempt.
///
/// Deliveries wait in one queue per destination, by when they are due, so
/// the dispatcher takes from each destination what it has room for: a slow
/// endpoint's backlog is never in front of another endpoint's deliveries.
/// Of a trade's deliveries to one destination only the oldest is queued
/// (its events arrive in order); the next is queued when it is done.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EventBook {
    /// Each party's newest event (each archived event points to the one before).
    last_of_party: BTreeMap<PartyNumber, u64>,
    /// Deliveries not yet made (due, or given up on until a resend), by
    /// event and destination.
    deliveries: BTreeMap<(EventNumber, EndpointNumber), Delivery>,
    /// Deliveries of a trade not yet made nor given up, per destination.
    by_trade: BTreeSet<(TradeNumber, EndpointNumber, EventNumber)>,
    /// Queued deliveries, per destination, by when they are due.
    queues: BTreeMap<EndpointNumber, BTreeSet<(Timestamp, EventNumber)>>,
    /// Deliveries each destination owes (queued, waiting behind a trade's
    /// older one, or given up on): how many, and which, oldest first.
    owed: BTreeMap<EndpointNumber, u64>,
    by_endpoint: BTreeSet<(EndpointNumber, EventNumber)>,
    /// Each merchant's newest delivery attempt in the archive.
    last_attempt_of_party: BTreeMap<PartyNumber, u64>,
}

impl EventBook {
    pub(crate) fn last_of_party(&self, party: PartyNumber) -> Option<u64> {
        self.last_of_party.get(&party).copied()
    }

    fn enqueue(&mut self, key: (EventNumber, EndpointNumber)) {
        if let Some(at) = self.deliveries.get(&key).and_then(|delivery| delivery.next_attempt_at) {
            self.queues.entry(key.1).or_default().insert((at, key.0));
        }
    }

    fn dequeue(&mut self, key: (EventNumber, EndpointNumber)) {
        let Some(at) = self.deliveries.get(&key).and_then(|delivery| delivery.next_attempt_at) else { return };
        if let Some(queue) = self.queues.get_mut(&key.1) {
            queue.remove(&(at, key.0));
            if queue.is_empty() {
                self.queues.remove(&key.1);
            }
        }
    }

    /// Queues the oldest of a trade's deliveries to `endpoint`, and only it.
    fn queue_head(&mut self, trade: TradeNumber, endpoint: EndpointNumber) {
        let range = (trade, endpoint, EventNumber::new(0))..=(trade, endpoint, EventNumber::new(u64::MAX));
        let mut pending = self.by_trade.range(range).map(|&(_, _, event)| event);
        let (first, second) = (pending.next(), pending.next());
        if let Some(second) = second {
            self.dequeue((second, endpoint));
        }
        if let Some(first) = first {
            self.enqueue((first, endpoint));
        }
    }

    fn owed_to(&self, endpoint: EndpointNumber) -> u64 {
        self.owed.get(&endpoint).copied().unwrap_or(0)
    }

    /// Makes a delivery due at `at` (again), with a fresh count of attempts.
    fn schedule(&mut self, delivery: Delivery) {
        let key = (delivery.event, delivery.endpoint);
        self.dequeue(key);
        let trade = delivery.trade;
        if self.deliveries.insert(key, delivery).is_none() {
            *self.owed.entry(key.1).or_default() += 1;
            self.by_endpoint.insert((key.1, key.0));
        }
        match trade {
            Some(trade) => {
                self.by_trade.insert((trade, key.1, key.0));
                self.queue_head(trade, key.1);
            }
            None => self.enqueue(key),
        }
    }

    /// Takes a delivery out of the queues (done, or given up on).
    fn settle(&mut self, key: (EventNumber, EndpointNumber), delivered: bool) {
        self.dequeue(key);
        let trade = self.deliveries.get(&key).and_then(|delivery| delivery.trade);
        if delivered {
            self.by_endpoint.remove(&(key.1, key.0));
            if self.deliveries.remove(&key).is_some()
                && let Some(owed) = self.owed.get_mut(&key.1)
            {
                *owed -= 1;
                if *owed == 0 {
                    self.owed.remove(&key.1);
                }
            }
        } else if let Some(delivery) = self.deliveries.get_mut(&key) {
            delivery.next_attempt_at = None;
        }
        if let Some(trade) = trade {
            self.by_trade.remove(&(trade, key.1, key.0));
            self.queue_head(trade, key.1);
        }
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
        let about = match &event.data {
            EventData::Trade(trade) | EventData::Refund { trade, .. } => Some(trade.number),
            _ => None,
        };
        let previous_of_trade = about.and_then(|trade| self.last_record_of(trade));
        let at = self.state.archive.length();
        let offset =
            self.state.archive.append(&ArchiveRecord::of_event(event, at, previous_of_party, previous_of_trade));
        self.state.events.last_of_party.insert(event.party, offset);
        if let Some(trade) = about {
            self.touched.last_record.insert(trade, offset);
        }
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
            if self.state.events.owed_to(endpoint) >= UNDELIVERED_PER_ENDPOINT_MAX {
                continue;
            }
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
            self.state.events.schedule(delivery);
        }
    }

    /// Deliveries due by `now`, at most `limit`: from each destination's
    /// queue at most what `room` says it can take now, destinations visited
    /// in turn from the one after `after` (so each gets its share).
    pub fn deliveries_due(
        &self,
        now: Timestamp,
        limit: usize,
        after: EndpointNumber,
        room: impl Fn(EndpointNumber) -> usize,
    ) -> Vec<Delivery> {
        let queues = &self.state.events.queues;
        let in_turn =
            queues.range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)).chain(queues.range(..=after));
        let mut due = Vec::new();
        for (&endpoint, queue) in in_turn {
            let take = room(endpoint).min(limit - due.len());
            let ready = queue.iter().take_while(|(at, _)| *at <= now).take(take);
            due.extend(ready.filter_map(|&(_, event)| self.state.events.deliveries.get(&(event, endpoint)).cloned()));
            if due.len() == limit {
                break;
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
        // An attempt of a delivery not queued (resent meanwhile, given up,
        // its endpoint deleted) is logged and changes nothing.
        let Some(mut delivery) =
            self.state.events.deliveries.get(&key).filter(|d| d.next_attempt_at.is_some()).cloned()
        else {
            return Outcome::DeliveryRecorded;
        };
        delivery.attempts += 1;
        if attempt.delivered || delivery.attempts >= DELIVERY_ATTEMPTS_MAX {
            if let Some(stored) = self.state.events.deliveries.get_mut(&key) {
                stored.attempts = delivery.attempts;
            }
            self.state.events.settle(key, attempt.delivered);
        } else {
            let wait = RETRY_DELAYS_SECONDS[(delivery.attempts as usize - 1).min(RETRY_DELAYS_SECONDS.len() - 1)];
            delivery.next_attempt_at = Some(now.plus_nanos(wait * NANOS_PER_SECOND));
            self.state.events.schedule(delivery);
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
            let queued_at = self.state.events.deliveries.get(&(event.number, endpoint)).map_or(now, |d| d.queued_at);
            let delivery = Delivery {
                event: event.number,
                endpoint,
                merchant: event.merchant,
                offset: event.offset,
                trade: event.trade,
                attempts: 0,
                queued_at,
                next_attempt_at: Some(now),
            };
            self.state.events.schedule(delivery);
        }
        Outcome::EventResent { deliveries: destinations.len() as u32 }
    }

    /// Drops the deliveries queued for a deleted endpoint.
    pub(crate) fn forget_deliveries_to(&mut self, endpoint: EndpointNumber) {
        let events = &mut self.state.events;
        events.deliveries.retain(|&(_, to), _| to != endpoint);
        events.by_trade.retain(|&(_, to, _)| to != endpoint);
        events.queues.remove(&endpoint);
        events.owed.remove(&endpoint);
        events.by_endpoint.retain(|&(to, _)| to != endpoint);
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
        let events = &self.state.events;
        let oldest = |endpoint: EndpointNumber| {
            let first = events.by_endpoint.range((endpoint, EventNumber::new(0))..).next()?;
            events.deliveries.get(&(first.1, first.0))
        };
        let figures = events.owed.iter().filter_map(|(&endpoint, &undelivered)| {
            let oldest = oldest(endpoint)?;
            Some(QueueFigures { endpoint, merchant: oldest.merchant, undelivered, oldest_queued_at: oldest.queued_at })
        });
        figures.collect()
    }

    /// Whether the queues say what the deliveries do: each delivery not
    /// given up is queued at its time exactly when it heads its trade's
    /// deliveries to its destination (or has no trade), and nothing else is.
    pub fn check_delivery_queues(&self) -> Result<(), String> {
        let events = &self.state.events;
        let mut expected: BTreeMap<EndpointNumber, BTreeSet<(Timestamp, EventNumber)>> = BTreeMap::new();
        let mut heads = BTreeSet::new();
        for (&(event, endpoint), delivery) in &events.deliveries {
            let Some(at) = delivery.next_attempt_at else { continue };
            let head = delivery.trade.is_none_or(|trade| heads.insert((trade, endpoint)));
            if head {
                expected.entry(endpoint).or_default().insert((at, event));
            }
            if let Some(trade) = delivery.trade
                && !events.by_trade.contains(&(trade, endpoint, event))
            {
                return Err(format!("delivery of event {event} to {endpoint} is missing from its trade's list"));
            }
        }
        if expected != events.queues {
            return Err(format!("the delivery queues hold {:?}, the deliveries say {expected:?}", events.queues));
        }
        let mut owed: BTreeMap<EndpointNumber, u64> = BTreeMap::new();
        for &(_, endpoint) in events.deliveries.keys() {
            *owed.entry(endpoint).or_default() += 1;
        }
        let listed: BTreeSet<(EndpointNumber, EventNumber)> =
            events.deliveries.keys().map(|&(e, to)| (to, e)).collect();
        if owed != events.owed || listed != events.by_endpoint {
            return Err(format!("the counts owed are {:?}, the deliveries say {owed:?}", events.owed));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(event: u64, endpoint: u64, trade: Option<u64>, at: u64) -> Delivery {
        Delivery {
            event: EventNumber::new(event),
            endpoint: EndpointNumber::new(endpoint),
            merchant: PartyNumber::new(1),
            offset: event * 100,
            trade: trade.map(TradeNumber::new),
            attempts: 0,
            queued_at: Timestamp::from_nanos(at),
            next_attempt_at: Some(Timestamp::from_nanos(at)),
        }
    }

    /// (event, endpoint) of what each queue holds, in queue order.
    fn queued(book: &EventBook) -> Vec<(u64, u64)> {
        let entries =
            book.queues.iter().flat_map(|(endpoint, queue)| queue.iter().map(move |(_, e)| (e.get(), endpoint.get())));
        entries.collect()
    }

    #[test]
    fn only_the_oldest_of_a_trades_deliveries_to_an_endpoint_is_queued() {
        let mut book = EventBook::default();
        for event in [1, 2, 3] {
            book.schedule(delivery(event, 7, Some(50), event));
        }
        book.schedule(delivery(4, 8, Some(50), 4));
        book.schedule(delivery(5, 7, None, 5));
        assert_eq!(queued(&book), [(1, 7), (5, 7), (4, 8)], "event 1 heads trade 50 at 7; 4 at 8; 5 has no trade");
        book.settle((EventNumber::new(1), EndpointNumber::new(7)), true);
        assert_eq!(queued(&book), [(2, 7), (5, 7), (4, 8)], "delivered: the next of the trade is queued");
        book.settle((EventNumber::new(2), EndpointNumber::new(7)), false);
        assert_eq!(queued(&book), [(3, 7), (5, 7), (4, 8)], "given up: it waits unqueued, the next goes on");
        assert!(book.deliveries.contains_key(&(EventNumber::new(2), EndpointNumber::new(7))));
        // Resent, the older event heads its trade again and the newer waits.
        book.schedule(delivery(2, 7, Some(50), 9));
        assert_eq!(queued(&book), [(5, 7), (2, 7), (4, 8)]);
        book.schedule(delivery(3, 7, Some(50), 10));
        assert_eq!(queued(&book), [(5, 7), (2, 7), (4, 8)], "a resend of a newer one waits behind the older");
    }
}
