//! Who may act, and what they did: API keys (several per party, rolled with
//! an overlap, read-only ones, all revoked at once), staff accounts,
//! merchants' webhook endpoints, and the audit log.
//!
//! Keys and passwords arrive as hashes (the server makes keys, shows them
//! once and hashes them; it hashes passwords with Argon2id): the log and
//! the state never hold a secret that opens an account. Webhook secrets are
//! the exception by nature: the server signs each delivery with them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Action, Outcome, PartyKind};
use crate::key_table::KeyTable;
use crate::platform::Platform;
use crate::rejection::{Conflict, Invalid, Limit, Missing, Rejection, conflict, invalid, not_found};
use crate::units::{AuditNumber, EndpointNumber, PartyNumber, StaffNumber, Timestamp};

/// Keys one party holds at once (rolled ones not yet expired included).
pub const KEYS_PER_PARTY_MAX: u32 = 16;
/// Webhook endpoints of one merchant.
pub const ENDPOINTS_PER_MERCHANT_MAX: usize = 16;
/// Event types one endpoint names.
pub const EVENT_TYPES_PER_ENDPOINT_MAX: usize = 32;
/// Staff accounts.
pub const STAFF_MAX: usize = 10_000;
/// A login's length, in characters.
pub const LOGIN_CHARS_MAX: usize = 64;
/// An Argon2 PHC string, or a webhook secret, is at most this long.
pub const SECRET_CHARS_MAX: usize = 256;
/// An audit note's texts (action, target, request id) are at most this long.
pub const AUDIT_TEXT_CHARS_MAX: usize = 128;
/// How far ahead a rolled key or secret may keep working: 30 days.
pub const OVERLAP_NANOS_MAX: u64 = 30 * 24 * 3_600 * 1_000_000_000;

/// What a key may do, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyGrant {
    pub party: PartyNumber,
    /// A restricted key: GET requests only.
    pub read_only: bool,
    /// A rolled key works until then.
    pub expires_at: Option<Timestamp>,
}

impl KeyGrant {
    pub fn works_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StaffRole {
    /// Everything the admin key may do.
    Admin,
    /// Reads everything; refunds, closes, resends, decides disputes.
    Support,
    /// Reads everything; bills and reconciliation.
    Finance,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Staff {
    pub number: StaffNumber,
    pub login: String,
    /// Argon2id, as a PHC string.
    pub password_hash: String,
    pub role: StaffRole,
    pub created_at: Timestamp,
}

/// Where a merchant's events go: a URL, the event types it takes, and the
/// secret its deliveries are signed with.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub number: EndpointNumber,
    pub merchant: PartyNumber,
    pub url: String,
    /// Event types, or `*` for all.
    pub events: Vec<String>,
    pub secret: String,
    /// The secret before the last roll, and when it stops signing.
    pub previous_secret: Option<(String, Timestamp)>,
    pub created_at: Timestamp,
}

impl Endpoint {
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.events.iter().any(|event| event == "*" || event == kind)
    }

    /// The secrets deliveries are signed with now: the current one first.
    pub fn secrets_at(&self, now: Timestamp) -> Vec<&str> {
        let previous = self.previous_secret.as_ref().filter(|(_, until)| now < *until);
        std::iter::once(self.secret.as_str()).chain(previous.map(|(secret, _)| secret.as_str())).collect()
    }
}

/// Who did something the audit log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// The operator's admin key.
    AdminKey,
    Staff(StaffNumber),
    /// A party changing its own keys.
    Party(PartyNumber),
}

/// What the server says about an audited action: who, what, on what, and
/// which request (its texts in the server's words, bounded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditNote {
    pub actor: Actor,
    /// What was done, as `area.verb` (`fee_schedule.set`).
    pub action: String,
    /// What it was done to (an action that creates it names it once made).
    pub target: Target,
    pub request_id: String,
}

/// What an audited action was done to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// Not named (yet: filled in from what the action made).
    None,
    Party(PartyNumber),
    Trade(crate::units::TradeNumber),
    Staff(StaffNumber),
    Endpoint(EndpointNumber),
    Event(crate::units::EventNumber),
    Campaign(crate::units::CampaignNumber),
    /// Something without a number (a fee schedule's product, the clock).
    Named(String),
}

/// One line of the audit log: the note, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditEntry {
    pub number: AuditNumber,
    pub at: Timestamp,
    pub note: AuditNote,
    /// Why the action was refused, if it was.
    pub refused: Option<Rejection>,
}

/// Keys, staff, endpoints and where the audit log's newest line is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Access {
    keys: KeyTable,
    /// Keys held by parties that have changed theirs (others hold one).
    key_counts: BTreeMap<PartyNumber, u32>,
    /// Rolled keys, by when they stop working (a tick forgets them).
    expiring: BTreeSet<(Timestamp, [u8; 32])>,
    staff: BTreeMap<StaffNumber, Staff>,
    staff_by_login: BTreeMap<String, StaffNumber>,
    endpoints: BTreeMap<EndpointNumber, Endpoint>,
    endpoints_of: BTreeMap<PartyNumber, Vec<EndpointNumber>>,
    /// Parties' sign-in names (the cashier's buyers, the portal's merchants):
    /// login → (party, Argon2id PHC string). Only parties made with one.
    party_logins: BTreeMap<String, (PartyNumber, String)>,
    /// Each such party's login.
    login_of: BTreeMap<PartyNumber, String>,
    /// The newest audit line's offset in the archive (each points to the one before).
    audit_head: Option<u64>,
    audit_count: u64,
}

impl Access {
    pub(crate) fn grant(&self, key_hash: &[u8; 32]) -> Option<KeyGrant> {
        self.keys.get(key_hash)
    }

    pub(crate) fn key_in_use(&self, key_hash: &[u8; 32]) -> bool {
        self.keys.contains(key_hash)
    }

    /// A new party's first key.
    pub(crate) fn add_first_key(&mut self, party: PartyNumber, key_hash: [u8; 32]) {
        self.keys.insert(key_hash, KeyGrant { party, read_only: false, expires_at: None });
    }

    pub(crate) fn endpoints_of(&self, merchant: PartyNumber) -> impl Iterator<Item = &Endpoint> + '_ {
        let numbers = self.endpoints_of.get(&merchant).map(Vec::as_slice).unwrap_or_default();
        numbers.iter().filter_map(|number| self.endpoints.get(number))
    }

    pub(crate) fn endpoint(&self, number: EndpointNumber) -> Option<&Endpoint> {
        self.endpoints.get(&number)
    }

    pub(crate) fn audit_head(&self) -> Option<u64> {
        self.audit_head
    }

    fn key_count(&self, party: PartyNumber) -> u32 {
        self.key_counts.get(&party).copied().unwrap_or(1)
    }

    /// When the next rolled key stops working.
    pub(crate) fn first_due(&self) -> Option<Timestamp> {
        self.expiring.first().map(|(at, _)| *at)
    }

    /// Forgets keys expired by `now`, at most `budget` of them.
    pub(crate) fn forget_expired_keys(&mut self, now: Timestamp, budget: &mut u32) {
        while let Some(&(at, hash)) = self.expiring.first() {
            if at > now || *budget == 0 {
                break;
            }
            *budget -= 1;
            self.expiring.pop_first();
            if let Some(grant) = self.keys.get(&hash).filter(|grant| grant.expires_at == Some(at)) {
                self.keys.remove(&hash);
                let count = self.key_count(grant.party).saturating_sub(1);
                self.key_counts.insert(grant.party, count);
            }
        }
    }

    fn add_key(&mut self, hash: [u8; 32], grant: KeyGrant) {
        let count = self.key_count(grant.party) + 1;
        self.key_counts.insert(grant.party, count);
        self.keys.insert(hash, grant);
    }

    /// Sets when a key stops working (never later than it already would).
    fn expire_key(&mut self, hash: [u8; 32], at: Timestamp, now: Timestamp) {
        let Some(grant) = self.keys.get(&hash) else { return };
        let at = grant.expires_at.map_or(at, |before| before.min(at));
        if at <= now {
            self.keys.remove(&hash);
            let count = self.key_count(grant.party).saturating_sub(1);
            self.key_counts.insert(grant.party, count);
            return;
        }
        self.keys.insert(hash, KeyGrant { expires_at: Some(at), ..grant });
        self.expiring.insert((at, hash));
    }
}

impl Platform {
    /// What a key (by its SHA-256) may do, whoever holds it.
    pub fn key_grant(&self, key_hash: &[u8; 32]) -> Option<KeyGrant> {
        self.state.access.grant(key_hash)
    }

    pub fn staff(&self, number: StaffNumber) -> Option<&Staff> {
        self.state.access.staff.get(&number)
    }

    /// The party that signs in with `login`, and its password's hash.
    pub fn party_login(&self, login: &str) -> Option<(PartyNumber, &str)> {
        self.state.access.party_logins.get(login).map(|(party, hash)| (*party, hash.as_str()))
    }

    /// Creates a party (`action`, a `CreateParty`) that signs in with
    /// `login`: both or neither.
    pub(crate) fn with_login(&mut self, now: Timestamp, login: &str, password_hash: &str, action: &Action) -> Outcome {
        if !matches!(action, Action::CreateParty { .. }) || !is_login(login) {
            return invalid(Invalid::Login);
        }
        if password_hash.is_empty() || password_hash.len() > SECRET_CHARS_MAX {
            return invalid(Invalid::PasswordHash);
        }
        if self.state.access.party_logins.contains_key(login) {
            return conflict(Conflict::LoginInUse);
        }
        let outcome = self.execute(now, action);
        if let Outcome::PartyCreated { number, .. } = outcome {
            self.state.access.party_logins.insert(login.to_string(), (number, password_hash.to_string()));
            self.state.access.login_of.insert(number, login.to_string());
        }
        outcome
    }

    /// The password hash a party signs in with, if it has a login.
    pub fn party_password_hash(&self, party: PartyNumber) -> Option<&str> {
        let login = self.state.access.login_of.get(&party)?;
        self.party_login(login).map(|(_, hash)| hash)
    }

    pub fn staff_by_login(&self, login: &str) -> Option<&Staff> {
        self.staff(*self.state.access.staff_by_login.get(login)?)
    }

    /// Staff accounts in the order they were made.
    pub fn staff_list(&self) -> impl Iterator<Item = &Staff> + '_ {
        self.state.access.staff.values()
    }

    pub fn endpoints_of(&self, merchant: PartyNumber) -> impl Iterator<Item = &Endpoint> + '_ {
        self.state.access.endpoints_of(merchant)
    }

    pub fn endpoint(&self, number: EndpointNumber) -> Option<&Endpoint> {
        self.state.access.endpoint(number)
    }

    /// The archive offset of the newest audit line.
    pub fn audit_head(&self) -> Option<u64> {
        self.state.access.audit_head()
    }

    /// Applies an audited action and appends its line to the log, in the
    /// same command: the line cannot be lost or reordered against the change.
    pub(crate) fn audited(&mut self, now: Timestamp, note: &AuditNote, action: &Action) -> Outcome {
        let outcome = match action {
            // One line per action: an audited action is never nested.
            Action::Audited { .. } => invalid(Invalid::AuditNote),
            _ if !note_is_bounded(note) => invalid(Invalid::AuditNote),
            inner => self.execute(now, inner),
        };
        let refused = match &outcome {
            Outcome::Rejected(rejection) => Some(rejection.clone()),
            _ => None,
        };
        let mut note = note.clone();
        if note.target == Target::None {
            note.target = made_by(&outcome);
        }
        let access = &mut self.state.access;
        access.audit_count += 1;
        let entry = AuditEntry { number: AuditNumber::new(access.audit_count), at: now, note, refused };
        let previous = access.audit_head;
        let record = crate::at_rest::ArchiveRecord::audit(&entry, previous);
        self.state.access.audit_head = Some(self.state.archive.append(&record));
        outcome
    }

    pub(crate) fn create_staff(
        &mut self,
        now: Timestamp,
        login: &str,
        password_hash: &str,
        role: StaffRole,
    ) -> Outcome {
        if !is_login(login) {
            return invalid(Invalid::Login);
        }
        if password_hash.is_empty() || password_hash.len() > SECRET_CHARS_MAX {
            return invalid(Invalid::PasswordHash);
        }
        if self.state.access.staff_by_login.contains_key(login) {
            return conflict(Conflict::LoginInUse);
        }
        if self.state.access.staff.len() >= STAFF_MAX {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Staff));
        }
        let number = StaffNumber::new(self.take_number());
        let staff =
            Staff { number, login: login.to_string(), password_hash: password_hash.to_string(), role, created_at: now };
        self.state.access.staff_by_login.insert(login.to_string(), number);
        self.state.access.staff.insert(number, staff);
        Outcome::StaffCreated { number }
    }

    pub(crate) fn add_key(&mut self, party: PartyNumber, key_hash: [u8; 32], read_only: bool) -> Outcome {
        if !self.state.parties.contains(party) {
            return not_found(Missing::Party);
        }
        if self.state.access.key_in_use(&key_hash) {
            return conflict(Conflict::KeyInUse);
        }
        if self.state.access.key_count(party) >= KEYS_PER_PARTY_MAX {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Keys));
        }
        self.state.access.add_key(key_hash, KeyGrant { party, read_only, expires_at: None });
        Outcome::KeysChanged
    }

    /// A new key like `old` (the caller's), and `old` working until `old_expires_at`.
    pub(crate) fn roll_key(
        &mut self,
        now: Timestamp,
        party: PartyNumber,
        old: [u8; 32],
        new: [u8; 32],
        old_expires_at: Timestamp,
    ) -> Outcome {
        let Some(grant) = self.state.access.grant(&old).filter(|grant| grant.party == party) else {
            return not_found(Missing::Key);
        };
        if old_expires_at.nanos_since(now) > OVERLAP_NANOS_MAX {
            return invalid(Invalid::KeyExpiry);
        }
        if let outcome @ Outcome::Rejected(_) = self.add_key(party, new, grant.read_only) {
            return outcome;
        }
        self.state.access.expire_key(old, old_expires_at, now);
        Outcome::KeysChanged
    }

    /// Every key of `party` stops working now; `new` is its only key.
    pub(crate) fn revoke_keys(&mut self, party: PartyNumber, new: [u8; 32]) -> Outcome {
        if !self.state.parties.contains(party) {
            return not_found(Missing::Party);
        }
        if self.state.access.key_in_use(&new) {
            return conflict(Conflict::KeyInUse);
        }
        // A walk of every key: an operator's action in an incident, rare.
        let access = &mut self.state.access;
        let spare_read_keys = crate::faults::revoke_spares_read_keys();
        access.keys.retain(|grant| grant.party != party || (spare_read_keys && grant.read_only));
        access.key_counts.insert(party, 0);
        access.add_key(new, KeyGrant { party, read_only: false, expires_at: None });
        Outcome::KeysChanged
    }

    pub(crate) fn set_app_public_key(&mut self, merchant: PartyNumber, pem: &str) -> Outcome {
        if pem.is_empty() || pem.len() > crate::platform::APP_KEY_BYTES_MAX {
            return invalid(Invalid::AppPublicKey);
        }
        match self.state.parties.get_mut(merchant).filter(|party| party.kind == PartyKind::Merchant) {
            Some(party) => {
                party.app_public_key = Some(pem.to_string());
                Outcome::KeysChanged
            }
            None => not_found(Missing::Merchant),
        }
    }

    pub(crate) fn create_endpoint(
        &mut self,
        now: Timestamp,
        merchant: PartyNumber,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Outcome {
        if !self.state.parties.is(merchant, PartyKind::Merchant) {
            return not_found(Missing::Merchant);
        }
        if !crate::text::is_web_url(url, crate::trade_actions::URL_CHARS_MAX) {
            return invalid(Invalid::WebhookUrl);
        }
        if !are_event_types(events) {
            return invalid(Invalid::EventTypes);
        }
        if secret.is_empty() || secret.len() > SECRET_CHARS_MAX {
            return invalid(Invalid::WebhookSecret);
        }
        if self.state.access.endpoints_of(merchant).count() >= ENDPOINTS_PER_MERCHANT_MAX {
            return Outcome::Rejected(Rejection::LimitExceeded(Limit::Endpoints));
        }
        let number = EndpointNumber::new(self.take_number());
        let endpoint = Endpoint {
            number,
            merchant,
            url: url.to_string(),
            events: events.to_vec(),
            secret: secret.to_string(),
            previous_secret: None,
            created_at: now,
        };
        let access = &mut self.state.access;
        access.endpoints_of.entry(merchant).or_default().push(number);
        access.endpoints.insert(number, endpoint.clone());
        Outcome::EndpointUpdated(Box::new(endpoint))
    }

    /// A merchant's endpoint, for a change.
    fn own_endpoint(&mut self, merchant: PartyNumber, number: EndpointNumber) -> Result<&mut Endpoint, Outcome> {
        match self.state.access.endpoints.get_mut(&number) {
            Some(endpoint) if endpoint.merchant == merchant => Ok(endpoint),
            _ => Err(not_found(Missing::Endpoint)),
        }
    }

    pub(crate) fn delete_endpoint(&mut self, merchant: PartyNumber, number: EndpointNumber) -> Outcome {
        if let Err(outcome) = self.own_endpoint(merchant, number) {
            return outcome;
        }
        let access = &mut self.state.access;
        access.endpoints.remove(&number);
        if let Some(numbers) = access.endpoints_of.get_mut(&merchant) {
            numbers.retain(|&other| other != number);
        }
        self.forget_deliveries_to(number);
        Outcome::EndpointDeleted
    }

    pub(crate) fn roll_endpoint_secret(
        &mut self,
        now: Timestamp,
        merchant: PartyNumber,
        number: EndpointNumber,
        secret: &str,
        old_expires_at: Timestamp,
    ) -> Outcome {
        if secret.is_empty() || secret.len() > SECRET_CHARS_MAX {
            return invalid(Invalid::WebhookSecret);
        }
        if old_expires_at.nanos_since(now) > OVERLAP_NANOS_MAX {
            return invalid(Invalid::KeyExpiry);
        }
        let endpoint = match self.own_endpoint(merchant, number) {
            Ok(endpoint) => endpoint,
            Err(outcome) => return outcome,
        };
        let old = std::mem::replace(&mut endpoint.secret, secret.to_string());
        endpoint.previous_secret = (old_expires_at > now).then_some((old, old_expires_at));
        Outcome::EndpointUpdated(Box::new(endpoint.clone()))
    }
}

/// Audit lines one listing reads at most (a bound on a read, not on what is kept).
pub const AUDIT_SCANNED_MAX: usize = 100_000;

/// Audit lines newest first from `head`, below `before` (an audit number),
/// those `keep` accepts, at most `limit`, reading at most
/// [`AUDIT_SCANNED_MAX`]; `read` gives an archived line and the one before.
pub fn audit_lines(
    head: Option<u64>,
    before: Option<AuditNumber>,
    limit: usize,
    keep: impl Fn(&AuditEntry) -> bool,
    read: impl Fn(u64) -> Result<(AuditEntry, Option<u64>), journal::JournalError>,
) -> Result<Vec<AuditEntry>, journal::JournalError> {
    let before = before.unwrap_or(AuditNumber::new(u64::MAX));
    let (mut found, mut next, mut scanned) = (Vec::new(), head, 0);
    while let Some(offset) = next.filter(|_| found.len() < limit && scanned < AUDIT_SCANNED_MAX) {
        scanned += 1;
        let (entry, previous) = read(offset)?;
        if entry.number < before && keep(&entry) {
            found.push(entry);
        }
        next = previous;
    }
    Ok(found)
}

/// An archived audit line and where the one before it is.
pub fn read_archived_audit(
    archive: &dyn journal::ArchiveSource,
    offset: u64,
) -> Result<(AuditEntry, Option<u64>), journal::JournalError> {
    crate::trade_actions::decode_archived(archive, offset)?.into_audit(offset)
}

fn note_is_bounded(note: &AuditNote) -> bool {
    let target = match &note.target {
        Target::Named(name) => name.as_str(),
        _ => "",
    };
    [note.action.as_str(), target, note.request_id.as_str()]
        .iter()
        .all(|text| text.chars().count() <= AUDIT_TEXT_CHARS_MAX && !text.chars().any(char::is_control))
}

/// What an outcome made, as an audit target.
fn made_by(outcome: &Outcome) -> Target {
    match outcome {
        Outcome::PartyCreated { number, .. } => Target::Party(*number),
        Outcome::StaffCreated { number } => Target::Staff(*number),
        Outcome::EndpointUpdated(endpoint) => Target::Endpoint(endpoint.number),
        Outcome::CampaignCreated(campaign) => Target::Campaign(campaign.number),
        Outcome::TradeUpdated(trade) | Outcome::RefundCreated { trade, .. } => Target::Trade(trade.number),
        _ => Target::None,
    }
}

/// A login: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn is_login(login: &str) -> bool {
    (1..=LOGIN_CHARS_MAX).contains(&login.chars().count())
        && login.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Event types an endpoint may name: `*`, or `area.happening` words.
fn are_event_types(events: &[String]) -> bool {
    let is_type = |event: &String| {
        event == "*"
            || (event.len() <= 64
                && event.split('.').count() == 2
                && event
                    .split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')))
    };
    (1..=EVENT_TYPES_PER_ENDPOINT_MAX).contains(&events.len()) && events.iter().all(is_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_takes_the_types_it_names_or_all() {
        let endpoint = Endpoint {
            number: EndpointNumber::new(1),
            merchant: PartyNumber::new(2),
            url: "https://shop.example/hook".to_string(),
            events: vec!["trade.paid".to_string()],
            secret: "new".to_string(),
            previous_secret: Some(("old".to_string(), Timestamp::from_nanos(100))),
            created_at: Timestamp::from_nanos(0),
        };
        assert!(endpoint.subscribes_to("trade.paid"));
        assert!(!endpoint.subscribes_to("refund.succeeded"));
        assert_eq!(endpoint.secrets_at(Timestamp::from_nanos(99)), ["new", "old"]);
        assert_eq!(endpoint.secrets_at(Timestamp::from_nanos(100)), ["new"]);
        assert!(are_event_types(&["*".to_string()]));
        assert!(!are_event_types(&[]));
        assert!(!are_event_types(&["Trade.Paid".to_string()]));
        assert!(is_login("ops.lee@example"));
        assert!(!is_login("no spaces"));
    }
}
