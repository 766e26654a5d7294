//! Events and webhook endpoints: a merchant's events, those not yet
//! delivered, each one's delivery log, resending one; the endpoints they go
//! to (several per merchant, each with its event types and its secret,
//! rolled with an overlap).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::{
    Action, EndpointNumber, Event, EventData, EventNumber, NOTIFY_URL, Outcome, PartyKind, PartyNumber, Target,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ChangeErrors, IdempotencyKey, Page, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::{Caller, Duty, RequestTag, audited};
use crate::body::{ApiQuery, JsonBody};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::IdKind;
use crate::routes::trades::{EventView, event_view};

/// Events read at most to find one by its id (a merchant's chain, newest
/// first): older events than that are answered 404.
const EVENTS_SCANNED_MAX: usize = 1_000_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(pattern = "^evt_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
    /// `false`: only events some endpoint has not acknowledged yet.
    pub delivered: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<EventView>,
    pub has_more: bool,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventListParams),
    responses((status = 200, body = EventPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<EventListParams>,
) -> Result<Json<EventPage>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let page = Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Event)?;
    let before = page.after.map(EventNumber::new);
    let reader = Arc::clone(&state);
    let mut found: Vec<Event> = tokio::task::spawn_blocking(move || match params.delivered {
        Some(false) => {
            let undelivered = reader.store.read(|p| p.undelivered_events(merchant, before, page.limit + 1));
            let read = |(_, offset)| platform::read_archived_event(reader.store.archive(), offset).map(|(e, _)| e);
            undelivered.into_iter().map(read).collect::<Result<Vec<Event>, _>>()
        }
        delivered => {
            let head = reader.store.read(|p| p.last_event_at(merchant));
            let read = |offset| platform::read_archived_event(reader.store.archive(), offset);
            let events = platform::walk_events(head, read, before, page.limit + 1);
            // `delivered=true`: those every endpoint has acknowledged.
            events.map(|events| {
                let pending = |event: &Event| reader.store.read(|p| p.is_undelivered(event.number));
                events.into_iter().filter(|event| delivered.is_none() || !pending(event)).collect()
            })
        }
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))?
    .map_err(|error| ApiError::internal(format!("cannot read the events: {error}")))?;
    let has_more = found.len() > page.limit;
    found.truncate(page.limit);
    Ok(Json(EventPage { data: found.iter().map(|event| event_view(&state.ids, event)).collect(), has_more }))
}

/// An event by its id, with where it is archived, if `caller` may see it:
/// its merchant's; operators any undelivered one, and others when they name
/// the merchant (`named`, `mch_…`: its chain is walked).
async fn find_event(
    state: &Arc<AppState>,
    caller: Caller,
    id: &str,
    named: Option<&str>,
) -> Result<(Event, u64), ApiError> {
    let merchant = match (caller, named) {
        (Caller::Party { number, kind: PartyKind::Merchant }, None) => Some(number),
        (Caller::Party { .. }, _) => return Err(ApiError::forbidden()),
        (_, None) => None,
        (_, Some(named)) => Some(PartyNumber::new(id_of(&state.ids, IdKind::Merchant, named, "merchant")?)),
    };
    let number = EventNumber::new(id_of(&state.ids, IdKind::Event, id, "event")?);
    let reader = Arc::clone(state);
    let found = tokio::task::spawn_blocking(move || find_event_blocking(&reader, merchant, number))
        .await
        .map_err(|_| ApiError::internal("the request was dropped"))??;
    found.ok_or_else(|| ApiError::not_found("event"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Operators: the event's merchant. Without it an operator finds an
    /// event only while some endpoint has not acknowledged it (no index
    /// of events by number is kept: they are as many as trades).
    #[param(pattern = "^mch_[0-9a-f]{32}$")]
    pub merchant: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "evt_…"), EventParams),
    responses((status = 200, body = EventView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_event(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<EventView>, ApiError> {
    if caller.is_operator() {
        caller.require(Duty::Read)?;
    }
    let (event, _) = find_event(&state, caller, &id, params.merchant.as_deref()).await?;
    Ok(Json(event_view(&state.ids, &event)))
}

fn find_event_blocking(
    state: &AppState,
    merchant: Option<PartyNumber>,
    number: EventNumber,
) -> Result<Option<(Event, u64)>, ApiError> {
    let read = |offset| {
        platform::read_archived_event(state.store.archive(), offset)
            .map_err(|error| ApiError::internal(format!("cannot read an event: {error}")))
    };
    // An undelivered event's place is known; others are found along their merchant's chain.
    if let Some((_, offset)) = state.store.read(|p| p.undelivered_event(number)) {
        let (event, _) = read(offset)?;
        return Ok((event.number == number && merchant.is_none_or(|m| m == event.party)).then_some((event, offset)));
    }
    // Operators name any merchant's event; without its merchant there is no chain to walk.
    let Some(merchant) = merchant else { return Ok(None) };
    let mut next = state.store.read(|p| p.last_event_at(merchant));
    for _ in 0..EVENTS_SCANNED_MAX {
        let Some(offset) = next else { break };
        let (event, previous) = read(offset)?;
        if event.number <= number {
            return Ok((event.number == number).then_some((event, offset)));
        }
        next = previous.filter(|&previous| previous < offset);
    }
    Ok(None)
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    /// `we_…`, or `notify_url` for a gateway trade's notification.
    pub endpoint: String,
    pub attempted_at: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
    pub delivered: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptPage {
    pub data: Vec<AttemptView>,
    pub has_more: bool,
}

#[utoipa::path(get, path = "/v1/events/{id}/deliveries", tag = "events",
    params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, body = AttemptPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AttemptPage>, ApiError> {
    let (event, offset) = find_event(&state, caller, &id, None).await?;
    let reader = Arc::clone(&state);
    let attempts = tokio::task::spawn_blocking(move || {
        let head = reader.store.read(|p| p.last_attempt_of(event.party));
        let read = |at| platform::read_archived_attempt(reader.store.archive(), at);
        platform::attempts_of_event(head, event.number, offset, read)
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))?
    .map_err(|error| ApiError::internal(format!("cannot read the attempts: {error}")))?;
    let data = attempts.into_iter().map(|(attempt, at)| attempt_view(&state, attempt, at)).collect();
    Ok(Json(AttemptPage { data, has_more: false }))
}

/// A trade's records read at most for its timeline (each version of the
/// trade and each event about it is one; a trade has at most
/// `REFUNDS_PER_TRADE_MAX` refunds).
const TIMELINE_RECORDS_MAX: usize = 1_000;

#[derive(Serialize, ToSchema)]
pub struct TimelineEntry {
    pub event: EventView,
    /// Every delivery attempt of the event, newest first.
    pub attempts: Vec<AttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct Timeline {
    /// The trade's events, newest first, each with its delivery attempts.
    pub data: Vec<TimelineEntry>,
    /// The trade's records were too many to read all: its oldest events
    /// are missing.
    pub truncated: bool,
}

#[utoipa::path(get, path = "/v1/trades/{trade_no}/events", tag = "events",
    params(("trade_no" = String, Path, description = "trd_…")),
    responses((status = 200, body = Timeline), ReadErrors),
    security(("api_key" = [])))]
pub async fn trade_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
) -> Result<Json<Timeline>, ApiError> {
    if matches!(caller, Caller::Party { kind: PartyKind::User, .. }) {
        return Err(ApiError::forbidden());
    }
    let trade = super::trades::visible_trade(&state, caller, &trade_no)?;
    let reader = Arc::clone(&state);
    let (found, truncated) = tokio::task::spawn_blocking(move || trade_events_blocking(&reader, &trade))
        .await
        .map_err(|_| ApiError::internal("the request was dropped"))??;
    let data = found
        .into_iter()
        .map(|(event, attempts)| TimelineEntry {
            event: event_view(&state.ids, &event),
            attempts: attempts.into_iter().map(|(attempt, at)| attempt_view(&state, attempt, at)).collect(),
        })
        .collect();
    Ok(Json(Timeline { data, truncated }))
}

type EventWithAttempts = (Event, Vec<(platform::DeliveryAttempt, platform::Timestamp)>);

/// Walks the trade's own chain of records in the archive, newest first,
/// and reads each event's delivery attempts.
fn trade_events_blocking(
    state: &AppState,
    trade: &platform::Trade,
) -> Result<(Vec<EventWithAttempts>, bool), ApiError> {
    let failed = |error: journal::JournalError| ApiError::internal(format!("cannot read the events: {error}"));
    let head = state.store.read(|p| p.trade_record_at(trade.number));
    let (events, truncated) =
        platform::walk_trade_events(state.store.archive(), head, TIMELINE_RECORDS_MAX).map_err(failed)?;
    let mut found = Vec::with_capacity(events.len());
    for (event, offset) in events {
        let head = state.store.read(|p| p.last_attempt_of(event.party));
        let read = |at| platform::read_archived_attempt(state.store.archive(), at);
        let attempts = platform::attempts_of_event(head, event.number, offset, read).map_err(failed)?;
        found.push((event, attempts));
    }
    Ok((found, truncated))
}

fn attempt_view(state: &AppState, attempt: platform::DeliveryAttempt, at: platform::Timestamp) -> AttemptView {
    AttemptView {
        endpoint: endpoint_name(state, attempt.endpoint),
        attempted_at: rfc3339(at),
        status_code: attempt.status_code,
        error: attempt.error,
        duration_ms: attempt.duration_ms,
        delivered: attempt.delivered,
    }
}

fn endpoint_name(state: &AppState, endpoint: EndpointNumber) -> String {
    if endpoint == NOTIFY_URL { "notify_url".to_string() } else { state.ids.format(IdKind::Endpoint, endpoint) }
}

#[derive(Serialize, ToSchema)]
pub struct Resent {
    /// The event (`evt_…`): the same id is delivered again.
    pub id: String,
    /// Destinations it was queued for.
    pub deliveries: u32,
}

#[utoipa::path(post, path = "/v1/events/{id}/resend", tag = "events",
    params(("id" = String, Path, description = "evt_…"), IdempotencyKey),
    responses((status = 200, body = Resent), ChangeErrors),
    security(("api_key" = [])))]
pub async fn resend(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<super::trades::EmptyBody>,
) -> Result<Json<Resent>, ApiError> {
    if caller.is_operator() {
        caller.require(Duty::Support)?;
    }
    let (event, offset) = find_event(&state, caller, &id, None).await?;
    let to_notify_url = match &event.data {
        EventData::Trade(trade) | EventData::Refund { trade, .. } => trade.notify_url.is_some(),
        _ => false,
    };
    let action = Action::ResendEvent {
        event: event.number,
        offset,
        merchant: event.party,
        kind: event.kind.clone(),
        trade: event.trade,
        to_notify_url,
    };
    let action = audited(caller, &request, "event.resend", Target::Event(event.number), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let deliveries = outcome_or_error!(outcome, Outcome::EventResent { deliveries } => deliveries)?;
    // "Now": a host paused after failing is tried at once.
    state.delivery_pauses.clear();
    Ok(Json(Resent { id, deliveries }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where events are POSTed: http(s).
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// Event types (`trade.paid`, …), or `["*"]` for all.
    #[schema(min_items = 1, max_items = 32)]
    pub events: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    /// `we_…`
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created: String,
    /// Shown when made and when rolled, never listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until then deliveries carry the previous secret's signature too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

fn endpoint_view(state: &AppState, endpoint: &platform::Endpoint, show_secret: bool) -> EndpointView {
    EndpointView {
        id: state.ids.format(IdKind::Endpoint, endpoint.number),
        url: endpoint.url.clone(),
        events: endpoint.events.clone(),
        created: rfc3339(endpoint.created_at),
        secret: show_secret.then(|| endpoint.secret.clone()),
        previous_secret_expires_at: endpoint.previous_secret.as_ref().map(|(_, until)| rfc3339(*until)),
    }
}

/// A webhook secret: derived from the request under the platform's secret
/// when it carries an `Idempotency-Key` (a retry shows the same secret),
/// else random.
fn new_secret<T>(state: &AppState, caller: Caller, body: &JsonBody<T>) -> Result<String, ApiError> {
    let bytes = match body.idempotency(caller) {
        Some(tag) => {
            let scope = tag.caller.get().to_le_bytes();
            state.derive(b"endpoint-secret", &tag.request_hash, &[tag.key.as_bytes(), &scope].concat())?
        }
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness for a secret"))?;
            bytes
        }
    };
    Ok(format!("whsec_{}", &hex::encode(bytes)[..48]))
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "events", request_body = NewEndpoint,
    params(IdempotencyKey),
    responses((status = 201, body = EndpointView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewEndpoint>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    super::parties::check_destination(&state, &body.value.url, "url").await?;
    let secret = new_secret(&state, caller, &body)?;
    let action =
        Action::CreateEndpoint { merchant, url: body.value.url.clone(), events: body.value.events.clone(), secret };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let endpoint = outcome_or_error!(outcome, Outcome::EndpointUpdated(endpoint) => endpoint)?;
    Ok((StatusCode::CREATED, Json(endpoint_view(&state, &endpoint, true))))
}

#[derive(Serialize, ToSchema)]
pub struct EndpointPage {
    pub data: Vec<EndpointView>,
    pub has_more: bool,
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "events",
    responses((status = 200, body = EndpointPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_endpoints(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<EndpointPage>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let data = state.store.read(|p| p.endpoints_of(merchant).map(|e| endpoint_view(&state, e, false)).collect());
    Ok(Json(EndpointPage { data, has_more: false }))
}

fn endpoint_number(state: &AppState, id: &str) -> Result<EndpointNumber, ApiError> {
    id_of(&state.ids, IdKind::Endpoint, id, "webhook endpoint").map(EndpointNumber::new)
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "events",
    params(("id" = String, Path, description = "we_…")),
    responses((status = 200, body = Deleted), ChangeErrors),
    security(("api_key" = [])))]
pub async fn delete_endpoint(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let endpoint = endpoint_number(&state, &id)?;
    let outcome = state.submit(None, Action::DeleteEndpoint { merchant, endpoint }).await?;
    outcome_or_error!(outcome, Outcome::EndpointDeleted => ())?;
    Ok(Json(Deleted { id, deleted: true }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overlap {
    /// How long the old secret (or key) keeps working: 0 (at once) to 30 days.
    #[serde(default, deserialize_with = "crate::body::whole_option")]
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub expires_in_seconds: Option<u64>,
}

impl Overlap {
    /// When the old one stops: from the clock's now; default 24 hours.
    pub fn expires_at(&self, now: platform::Timestamp) -> Result<platform::Timestamp, ApiError> {
        let seconds = self.expires_in_seconds.unwrap_or(86_400);
        if seconds > 30 * 86_400 {
            return Err(ApiError::invalid("expires_in_seconds must be at most 2592000 (30 days)"));
        }
        Ok(now.plus_nanos(seconds * 1_000_000_000))
    }
}

#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/roll-secret", tag = "events", request_body = Overlap,
    params(("id" = String, Path, description = "we_…"), IdempotencyKey),
    responses((status = 200, body = EndpointView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn roll_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<Overlap>,
) -> Result<Json<EndpointView>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let endpoint = endpoint_number(&state, &id)?;
    let old_expires_at = body.value.expires_at(state.clock.now())?;
    let secret = new_secret(&state, caller, &body)?;
    let action = Action::RollEndpointSecret { merchant, endpoint, secret, old_expires_at };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let endpoint = outcome_or_error!(outcome, Outcome::EndpointUpdated(endpoint) => endpoint)?;
    Ok(Json(endpoint_view(&state, &endpoint, true)))
}
