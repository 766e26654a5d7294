//! The operator console (`/console`): staff sign in, search, open a trade
//! (timeline, refund, close, resend) or a party (balances, trades, keys,
//! audit), read the audit log, watch the books and the webhook queues, and
//! — admins only — change fee schedules. Each page is API requests made
//! with the staff member's session (`desk`).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::desk::{self, AuditRow, Desk, Frame, Posted, Session, TradeRow, text, yuan};
use crate::web::{self, Web};

type Peer = ConnectInfo<SocketAddr>;

pub fn routes() -> axum::Router<Arc<Web>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", post(sign_in))
        .route("/console/search", get(search))
        .route("/console/parties/{id}", get(party))
        .route("/console/parties/{id}/revoke-keys", post(revoke_keys))
        .route("/console/parties/{id}/bill", get(download_bill))
        .route("/console/audit", get(audit))
        .route("/console/live", get(live))
        .route("/console/reconciliation", get(reconciliation))
        .route("/console/settings", get(settings))
        .route("/console/settings/fees/{product}", post(set_fees))
        .route("/console/campaigns", post(create_campaign))
        .route("/console/settings/loans", post(set_loan_terms))
        .route("/console/campaigns/{id}/pause", post(pause_campaign))
        .merge(desk::shared_routes(Desk::Console))
}

fn signed_in(web: &Arc<Web>, headers: &HeaderMap, peer: SocketAddr) -> Result<Session, Box<Response>> {
    desk::session(web, Desk::Console, headers, peer)
}

struct Check {
    name: String,
    ok: bool,
    detail: String,
}

struct Queue {
    endpoint: String,
    undelivered: String,
    oldest_age_seconds: String,
}

#[derive(Template)]
#[template(path = "desk/console_home.html")]
struct HomePage {
    frame: Frame,
    balanced: bool,
    checks: Vec<Check>,
    transfers: String,
    accounts: String,
    queues: Vec<Queue>,
    recent: Vec<TradeRow>,
    store: Vec<(&'static str, String)>,
}

/// `GET /console`: search, the books' checks, the webhook queues, the
/// newest trades; the sign-in form when not signed in.
async fn home(State(web): State<Arc<Web>>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let check = session.get("/v1/admin/ledger/check".to_string()).await.unwrap_or(Value::Null);
    let checks = check["invariants"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| Check { name: text(c, "name"), ok: c["ok"].as_bool() == Some(true), detail: text(c, "detail") })
        .collect();
    let queues = web
        .state
        .store
        .read(|p| p.delivery_queues())
        .into_iter()
        .filter(|queue| queue.undelivered > 0)
        .take(20)
        .map(|queue| Queue {
            endpoint: if queue.endpoint == platform::NOTIFY_URL {
                "notify_url".to_string()
            } else {
                web.state.ids.format(crate::ids::IdKind::Endpoint, queue.endpoint)
            },
            undelivered: queue.undelivered.to_string(),
            oldest_age_seconds: (web.state.clock.now().nanos().saturating_sub(queue.oldest_queued_at.nanos())
                / 1_000_000_000)
                .to_string(),
        })
        .collect();
    let recent = session.get("/v1/trades?limit=10".to_string()).await.map(|page| rows(&page)).unwrap_or_default();
    let store = store_figures(&web);
    let page = HomePage {
        balanced: check["balanced"].as_bool() == Some(true),
        checks,
        transfers: text(&check, "transfers"),
        accounts: text(&check, "accounts"),
        queues,
        recent,
        store,
        frame: session.frame,
    };
    desk::render(StatusCode::OK, &page, &[])
}

/// This node's place in the store (leader or follower, the last command
/// applied), the journal's figures since it started and, on the leader of
/// a PostgreSQL store, its standbys' lag.
fn store_figures(web: &Web) -> Vec<(&'static str, String)> {
    let health = web.state.store.health();
    let role = match &health.role {
        journal::Lead::Leader => "leader".to_string(),
        journal::Lead::Follower { leader } => format!("follower (leader {})", leader.as_deref().unwrap_or("unknown")),
    };
    let status = match (&health.failure, &health.store_problem) {
        (Some(reason), _) => format!("failed: {reason}"),
        (None, Some(problem)) => format!("unavailable: {problem}"),
        (None, None) => "ok".to_string(),
    };
    let stats = web.state.store.stats();
    let per_group = if stats.groups == 0 { 0.0 } else { stats.batches as f64 / stats.groups as f64 };
    let shown = |figure: Option<u64>, unit: &str| figure.map_or("?".to_string(), |n| format!("{n} {unit}"));
    let replicas = health.replicas.iter().map(|replica| {
        let lag = format!(
            "{} ({}): replay lag {}, {} behind",
            replica.state,
            replica.sync_state,
            shown(replica.replay_lag_ms, "ms"),
            shown(replica.behind_bytes, "bytes")
        );
        ("PostgreSQL standby", format!("{}: {lag}", replica.name))
    });
    let mut figures = vec![
        ("role", role),
        ("status", status),
        ("last command applied", health.last_applied.to_string()),
        ("commands since start", stats.batches.to_string()),
        ("commands per durable write", format!("{per_group:.1}")),
        ("snapshots", stats.snapshots.to_string()),
        ("slowest append (µs)", stats.append_us_max.to_string()),
        ("slowest apply of a group (µs)", stats.apply_us_max.to_string()),
    ];
    figures.extend(replicas);
    figures.extend(health.followers.iter().map(|follower| {
        let behind = health.last_applied.saturating_sub(follower.applied);
        let said = format!(
            "{} at {} ({behind} behind, said {} ms ago)",
            follower.node, follower.applied, follower.seen_ms_ago
        );
        ("zhifu follower", said)
    }));
    figures
}

fn rows(page: &Value) -> Vec<TradeRow> {
    page["data"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(desk::trade_row).collect()
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    login: String,
    password: String,
}

/// `POST /console/sign-in`: the API's staff sign-in (Argon2id, limited
/// per login and address); its session token becomes the cookie.
async fn sign_in(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let words = desk::words(&headers);
    let Ok(Form(form)) = form else {
        return desk::sign_in_page(&web, Desk::Console, &headers, StatusCode::BAD_REQUEST, Some(words.expired));
    };
    if !desk::sign_in_csrf_holds(&web, Desk::Console, &headers, &form.csrf) {
        return desk::sign_in_page(&web, Desk::Console, &headers, StatusCode::FORBIDDEN, Some(words.expired));
    }
    let call = web::Call {
        token: "",
        method: Method::POST,
        path: "/v1/staff/sessions".to_string(),
        body: Some(json!({ "login": form.login.trim(), "password": form.password })),
        idempotency_key: None,
        request_id: "-",
        peer,
    };
    match web.api.call(call).await {
        Ok(session) => {
            let token = text(&session, "token");
            let age = crate::auth::SESSION_NANOS / 1_000_000_000;
            web::see_other("/console", &[web::cookie(&web.state, Desk::Console.cookie(), &token, Some(age))])
        }
        Err(refusal) if refusal.status == StatusCode::TOO_MANY_REQUESTS => {
            desk::sign_in_page(&web, Desk::Console, &headers, refusal.status, Some(&refusal.message))
        }
        Err(_) => {
            desk::sign_in_page(&web, Desk::Console, &headers, StatusCode::UNAUTHORIZED, Some(words.wrong_password))
        }
    }
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

#[derive(Template)]
#[template(path = "desk/results.html")]
struct ResultsPage {
    frame: Frame,
    query: String,
    trades: Vec<TradeRow>,
}

/// `GET /console/search?q=`: an id opens its page; a login its party; an
/// `out_trade_no` (after its merchant's id, found by the merchant's index;
/// alone, among the newest trades) lists the trades with it.
async fn search(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let q = query.map(|Query(query)| query.q).unwrap_or_default();
    let q = q.trim();
    if q.is_empty() || q.chars().count() > 200 {
        return desk::message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.no_results);
    }
    let parts: Vec<&str> = q.split_whitespace().collect();
    let id = desk::plain_id(parts[0]);
    if parts.len() == 1
        && let Some(id) = id
    {
        if id.starts_with("trd_") {
            return web::see_other(&format!("/console/trades/{id}"), &[]);
        }
        if id.starts_with("usr_") || id.starts_with("mch_") {
            return web::see_other(&format!("/console/parties/{id}"), &[]);
        }
        if id.starts_with("dsp_") || id.starts_with("rfd_") {
            let path = if id.starts_with("dsp_") { format!("/v1/disputes/{id}") } else { format!("/v1/refunds/{id}") };
            return match session.get(path).await {
                Ok(found) => web::see_other(&format!("/console/trades/{}", desk::text(&found, "trade_no")), &[]),
                Err(refusal) => desk::refusal_page(&session.frame, &refusal),
            };
        }
        if id.starts_with("evt_") {
            return open_event(&session, id, None).await;
        }
        if let Some(party) = web.state.store.read(|p| p.party_login(q).map(|(party, _)| party)) {
            let kind = web.state.store.read(|p| p.party(party).map(|party| party.kind));
            let kind = if kind == Some(platform::PartyKind::Merchant) {
                crate::ids::IdKind::Merchant
            } else {
                crate::ids::IdKind::User
            };
            return web::see_other(&format!("/console/parties/{}", web.state.ids.format(kind, party)), &[]);
        }
    }
    if let [merchant, event] = parts.as_slice()
        && merchant.starts_with("mch_")
        && event.starts_with("evt_")
        && let (Some(merchant), Some(event)) = (desk::plain_id(merchant), desk::plain_id(event))
    {
        return open_event(&session, event, Some(merchant)).await;
    }
    let (merchant, out_trade_no) = match parts.as_slice() {
        [merchant, out_trade_no] if merchant.starts_with("mch_") => (Some(*merchant), *out_trade_no),
        _ => (None, q),
    };
    let mut path = format!("/v1/trades?limit=20&out_trade_no={}", urlencoding(out_trade_no));
    if let Some(merchant) = merchant {
        path.push_str(&format!("&merchant={}", urlencoding(merchant)));
    }
    let trades = match session.get(path).await {
        Ok(page) => rows(&page),
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    if let [only] = trades.as_slice() {
        return web::see_other(&format!("/console/trades/{}", only.trade_no), &[]);
    }
    let page = ResultsPage { query: q.to_string(), trades, frame: session.frame };
    desk::render(StatusCode::OK, &page, &[])
}

/// An event's page: its trade's (where its deliveries are), else its
/// merchant's. Alone, an id finds an event some endpoint has not yet
/// acknowledged; a delivered one is found with its merchant's id.
async fn open_event(session: &desk::Session, event: &str, merchant: Option<&str>) -> Response {
    let path = match merchant {
        Some(merchant) => format!("/v1/events/{event}?merchant={merchant}"),
        None => format!("/v1/events/{event}"),
    };
    let found = match session.get(path).await {
        Ok(found) => found,
        Err(refusal) if refusal.status == StatusCode::NOT_FOUND && merchant.is_none() => {
            return desk::message_page(&session.frame, StatusCode::NOT_FOUND, session.frame.words.event_needs_merchant);
        }
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let data = &found["data"];
    // A trade's event holds the trade; a refund's, the trade beside it; a dispute's, its trade_no.
    let trade = [&data["trade_no"], &data["trade"]["trade_no"]].into_iter().find_map(|value| value.as_str());
    match (trade, merchant) {
        (Some(trade), _) => web::see_other(&format!("/console/trades/{trade}"), &[]),
        (None, Some(merchant)) => web::see_other(&format!("/console/parties/{merchant}"), &[]),
        (None, None) => {
            desk::message_page(&session.frame, StatusCode::NOT_FOUND, session.frame.words.event_needs_merchant)
        }
    }
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[derive(Template)]
#[template(path = "desk/party.html")]
struct PartyPage {
    frame: Frame,
    id: String,
    kind: String,
    name: String,
    created: String,
    available: String,
    held: String,
    fund: String,
    loans: String,
    trades: Vec<TradeRow>,
    audit: Vec<AuditRow>,
    new_key: Option<String>,
    yesterday: String,
    movements: Vec<desk::MovementRow>,
    freezes: Vec<crate::finance_desk::FreezeRow>,
    /// The freeze table's (the console shows no release form: unused).
    nonce: String,
}

/// `GET /console/parties/{id}`: a user or merchant, its balances, its
/// newest trades and the audit lines about it.
async fn party(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    party_page(session, &id, None).await
}

async fn party_page(session: Session, id: &str, new_key: Option<String>) -> Response {
    let Some(id) = desk::plain_id(id) else {
        return desk::message_page(&session.frame, StatusCode::NOT_FOUND, session.frame.words.no_results);
    };
    let path = if id.starts_with("mch_") { format!("/v1/merchants/{id}") } else { format!("/v1/users/{id}") };
    let party = match session.get(path).await {
        Ok(party) => party,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let (trades, freezes) = if id.starts_with("mch_") {
        let trades = session.get(format!("/v1/trades?limit=20&merchant={id}")).await.map(|page| rows(&page));
        let freezes = session.get(format!("/v1/freezes?limit=20&merchant={id}")).await;
        (trades.unwrap_or_default(), freezes.map(|page| crate::finance_desk::freeze_rows(&page)).unwrap_or_default())
    } else {
        (Vec::new(), Vec::new())
    };
    let audit = session.get(format!("/v1/admin/audit?target={id}&limit=50")).await.map(|p| desk::audit_rows(&p));
    let movements = session
        .get(format!("/v1/balance-transactions?limit=20&party={id}"))
        .await
        .map(|page| desk::movement_rows(&page))
        .unwrap_or_default();
    let balance = &party["balance"];
    let page = PartyPage {
        id: id.to_string(),
        kind: text(&party, "type"),
        name: text(&party, "name"),
        created: text(&party, "created"),
        available: balance["available"].as_u64().map(crate::gateway::fen_to_yuan).unwrap_or_default(),
        held: balance["held"].as_u64().map(crate::gateway::fen_to_yuan).unwrap_or_default(),
        fund: yuan(balance, "fund_value"),
        loans: yuan(balance, "loan_outstanding"),
        trades,
        audit: audit.unwrap_or_default(),
        new_key,
        yesterday: crate::portal::yesterday(&session.web),
        movements,
        freezes,
        nonce: String::new(),
        frame: session.frame,
    };
    desk::render(StatusCode::OK, &page, &[])
}

/// `GET /console/parties/{id}/bill?date=`: a merchant's bill (finance, admins).
async fn download_bill(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<crate::portal::BillQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let (Some(query), Some(id)) = (query.ok().and_then(|Query(query)| query.query()), desk::plain_id(&id)) else {
        return desk::message_page(
            &session.frame,
            StatusCode::BAD_REQUEST,
            "give a day (2013-11-11) or a month (2013-11)",
        );
    };
    session.download(format!("/v1/bills?{query}&merchant={id}")).await
}

#[derive(Deserialize)]
pub struct NonceForm {
    csrf: String,
    nonce: String,
}

/// `POST /console/parties/{id}/revoke-keys` (admins): every key of the
/// party stops at once; the one new key is shown once.
async fn revoke_keys(Path(id): Path<String>, Posted(session, form): Posted<NonceForm>) -> Response {
    let Some(id) = desk::plain_id(&id) else {
        return desk::message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    let path = format!("/v1/admin/parties/{id}/revoke-keys");
    match session.call(Method::POST, path, Some(json!({})), desk::plain_id(&form.nonce)).await {
        Ok(answer) => {
            let id = id.to_string();
            party_page(session, &id, Some(text(&answer, "api_key"))).await
        }
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    starting_after: Option<String>,
}

#[derive(Template)]
#[template(path = "desk/audit.html")]
struct AuditPage {
    frame: Frame,
    lines: Vec<AuditRow>,
    older: Option<String>,
}

/// `GET /console/audit`: the audit log, newest first, 50 a page.
async fn audit(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let after = query.ok().and_then(|Query(query)| query.starting_after);
    let mut path = "/v1/admin/audit?limit=50".to_string();
    if let Some(after) = after.as_deref().and_then(desk::plain_id) {
        path.push_str(&format!("&starting_after={after}"));
    }
    let answer = match session.get(path).await {
        Ok(answer) => answer,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let older = if answer["has_more"].as_bool() == Some(true) {
        answer["data"].as_array().and_then(|lines| lines.last()).map(|line| text(line, "id"))
    } else {
        None
    };
    let page = AuditPage { lines: desk::audit_rows(&answer), older, frame: session.frame };
    desk::render(StatusCode::OK, &page, &[])
}

struct FeeRow {
    product: String,
    rate_bps: String,
    minimum: String,
    maximum: String,
}

struct CampaignRow {
    id: String,
    sponsor: String,
    name: String,
    remaining: String,
    discount: String,
    ends_at: String,
    paused: bool,
    ended: bool,
}

#[derive(Template)]
#[template(path = "desk/settings.html")]
struct SettingsPage {
    frame: Frame,
    fees: Vec<FeeRow>,
    campaigns: Vec<CampaignRow>,
    nonce: String,
    /// (daily rate, penalty rate, credit multiple, credit cap in yuan).
    loan_terms: (String, String, String, String),
}

/// `GET /console/settings`: the fee schedules; only admins get the forms.
async fn settings(State(web): State<Arc<Web>>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let answer = match session.get("/v1/admin/fee-schedules".to_string()).await {
        Ok(answer) => answer,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let fees = answer
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|fee| FeeRow {
            product: text(fee, "product"),
            rate_bps: text(&fee["schedule"], "rate_bps"),
            minimum: yuan(&fee["schedule"], "minimum"),
            maximum: yuan(&fee["schedule"], "maximum"),
        })
        .collect();
    let campaigns = session.get("/v1/campaigns?limit=50".to_string()).await.unwrap_or(Value::Null);
    let campaigns = campaigns["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| CampaignRow {
            id: text(c, "id"),
            sponsor: text(c, "sponsor"),
            name: text(c, "name"),
            remaining: yuan(c, "remaining"),
            discount: yuan(c, "discount"),
            ends_at: text(c, "ends_at"),
            paused: c["paused"].as_bool() == Some(true),
            ended: !c["returned"].is_null(),
        })
        .collect();
    let nonce = match web::form_nonce() {
        Ok(nonce) => nonce,
        Err(error) => return error.into_response(),
    };
    let terms = session.get("/v1/admin/loan-terms".to_string()).await.unwrap_or(Value::Null);
    let loan_terms = (
        text(&terms, "daily_rate_bps"),
        text(&terms, "penalty_daily_rate_bps"),
        text(&terms, "credit_multiple_percent"),
        yuan(&terms, "credit_cap"),
    );
    desk::render(StatusCode::OK, &SettingsPage { fees, campaigns, nonce, loan_terms, frame: session.frame }, &[])
}

#[derive(Deserialize)]
pub struct CampaignForm {
    csrf: String,
    nonce: String,
    name: String,
    budget: String,
    discount: String,
    #[serde(default)]
    min_spend: String,
    per_user_limit: String,
    starts_at: String,
    ends_at: String,
}

/// `POST /console/campaigns`: a platform campaign (admins), through the API.
async fn create_campaign(Posted(session, form): Posted<CampaignForm>) -> Response {
    let amounts = (
        crate::gateway::yuan_to_fen(form.budget.trim()),
        crate::gateway::yuan_to_fen(form.discount.trim()),
        fee_fen(if form.min_spend.trim().is_empty() { "0" } else { form.min_spend.trim() }),
        form.per_user_limit.trim().parse::<u32>().ok(),
    );
    let (Some(budget), Some(discount), Some(min_spend), Some(per_user_limit)) = amounts else {
        let text = "budget, discount and minimum spend in yuan (12.34), a limit per user above zero";
        return desk::message_page(&session.frame, StatusCode::UNPROCESSABLE_ENTITY, text);
    };
    let body = json!({
        "name": form.name.trim(), "budget": budget, "discount": discount, "min_spend": min_spend,
        "per_user_limit": per_user_limit, "starts_at": form.starts_at.trim(), "ends_at": form.ends_at.trim(),
    });
    let nonce = desk::plain_id(&form.nonce);
    match session.call(Method::POST, "/v1/campaigns".to_string(), Some(body), nonce).await {
        Ok(_) => web::see_other("/console/settings", &[]),
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct PauseForm {
    csrf: String,
    nonce: String,
    /// `pause` or `resume`.
    action: String,
}

/// `POST /console/campaigns/{id}/pause`: pauses or resumes a platform campaign (admins).
async fn pause_campaign(Path(id): Path<String>, Posted(session, form): Posted<PauseForm>) -> Response {
    let Some(id) = desk::plain_id(&id) else {
        return desk::message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    let what = if form.action == "resume" { "resume" } else { "pause" };
    let path = format!("/v1/campaigns/{id}/{what}");
    match session.call(Method::POST, path, Some(json!({})), desk::plain_id(&form.nonce)).await {
        Ok(_) => web::see_other("/console/settings", &[]),
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct FeeForm {
    csrf: String,
    rate_bps: String,
    minimum: String,
    #[serde(default)]
    maximum: String,
}

/// `POST /console/settings/fees/{product}`: the API's `PUT` (admins; audited there).
async fn set_fees(Path(product): Path<String>, Posted(session, form): Posted<FeeForm>) -> Response {
    let Some(product) = desk::plain_id(&product) else {
        return desk::message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    let rate = form.rate_bps.trim().parse::<u32>().ok();
    let minimum = fee_fen(form.minimum.trim());
    let maximum = match form.maximum.trim() {
        "" => Some(None),
        text => fee_fen(text).map(Some),
    };
    let (Some(rate), Some(minimum), Some(maximum)) = (rate, minimum, maximum) else {
        let text = "rate in basis points (0 to 10000), minimum and maximum in yuan (12.34)";
        return desk::message_page(&session.frame, StatusCode::UNPROCESSABLE_ENTITY, text);
    };
    let mut body = json!({ "rate_bps": rate, "minimum": minimum });
    if let Some(maximum) = maximum {
        body["maximum"] = json!(maximum);
    }
    // The form does not show the free quota: it is kept as it is.
    if let Ok(schedules) = session.get("/v1/admin/fee-schedules".to_string()).await
        && let Some(current) = schedules.as_array().and_then(|all| all.iter().find(|s| text(s, "product") == product))
        && current["schedule"]["free_quota"].is_object()
    {
        body["free_quota"] = current["schedule"]["free_quota"].clone();
    }
    match session.call(Method::PUT, format!("/v1/admin/fee-schedules/{product}"), Some(body), None).await {
        Ok(_) => web::see_other("/console/settings", &[]),
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct DateQuery {
    date: Option<String>,
}

#[derive(Template)]
#[template(path = "desk/reconciliation.html")]
struct ReconciliationPage {
    frame: Frame,
    date: String,
    balanced: bool,
    figures: Vec<(&'static str, String)>,
    breaks: Vec<(&'static str, String)>,
}

/// `GET /console/reconciliation?date=`: the bank's statement of a day
/// against the ledger, with every break (finance and admins).
async fn reconciliation(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<DateQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let today = platform::calendar::Date::of(web.state.clock.now()).to_string();
    let date = query.ok().and_then(|Query(query)| query.date).filter(|d| d.len() == 10).unwrap_or(today);
    let answer = match session.get(format!("/v1/admin/reconciliation?date={}", urlencoding(&date))).await {
        Ok(answer) => answer,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let words = session.frame.words;
    let figures = vec![(words.bank_lines, text(&answer, "bank_entries")), (words.matched, text(&answer, "matched"))];
    let mut breaks = Vec::new();
    for (name, what) in [
        ("missing", "missing from the ledger"),
        ("mismatched", "different in the ledger"),
        ("unmatched_ledger", "not on the bank's statement"),
    ] {
        for line in answer[name].as_array().map(Vec::as_slice).unwrap_or_default() {
            breaks.push((what, line.as_str().unwrap_or_default().to_string()));
        }
    }
    let page = ReconciliationPage {
        date,
        balanced: answer["balanced"].as_bool() == Some(true),
        figures,
        breaks,
        frame: session.frame,
    };
    desk::render(StatusCode::OK, &page, &[])
}

desk::csrf_forms!(NonceForm, FeeForm, CampaignForm, PauseForm, LoanTermsForm);

#[derive(Deserialize)]
pub struct LoanTermsForm {
    csrf: String,
    daily_rate_bps: String,
    penalty_daily_rate_bps: String,
    credit_multiple_percent: String,
    credit_cap: String,
}

/// `POST /console/settings/loans`: the API's `PUT /v1/admin/loan-terms` (admins; audited there).
async fn set_loan_terms(Posted(session, form): Posted<LoanTermsForm>) -> Response {
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let values = (
        number(&form.daily_rate_bps),
        number(&form.penalty_daily_rate_bps),
        number(&form.credit_multiple_percent),
        fee_fen(form.credit_cap.trim()),
    );
    let (Some(daily), Some(penalty), Some(multiple), Some(cap)) = values else {
        let text = "rates in basis points a day, the multiple in percent, the cap in yuan (12.34)";
        return desk::message_page(&session.frame, StatusCode::UNPROCESSABLE_ENTITY, text);
    };
    let body = json!({ "daily_rate_bps": daily, "penalty_daily_rate_bps": penalty, "credit_multiple_percent": multiple, "credit_cap": cap });
    match session.call(Method::PUT, "/v1/admin/loan-terms".to_string(), Some(body), None).await {
        Ok(_) => web::see_other("/console/settings", &[]),
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

/// The live chart's size, in SVG units.
const CHART_WIDTH: u64 = 900;
const CHART_HEIGHT: u64 = 160;

#[derive(Template)]
#[template(path = "desk/live.html")]
struct LivePage {
    frame: Frame,
    per_second: String,
    gmv_minute: String,
    p50_ms: String,
    p99_ms: String,
    peak: u64,
    payments_points: String,
    gmv_points: String,
}

/// `GET /console/live`: payments per second, GMV and latency over the last
/// five minutes on this node (the page reloads itself every 2 seconds).
async fn live(State(web): State<Arc<Web>>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let pulse = &web.state.pulse;
    let seconds = pulse.seconds();
    let (last_ten, minute) = (pulse.summary(10), pulse.summary(60));
    let peak = seconds.iter().map(|second| second.payments).max().unwrap_or(0).max(1);
    let peak_gmv = seconds.iter().map(|second| second.gmv_fen).max().unwrap_or(0).max(1);
    let points = |value: &dyn Fn(&crate::pulse::SecondFigures) -> u64, top: u64| {
        let step = CHART_WIDTH / crate::pulse::WINDOW_SECONDS;
        seconds
            .iter()
            .enumerate()
            .map(|(index, second)| {
                let y = CHART_HEIGHT - value(second).saturating_mul(CHART_HEIGHT) / top;
                format!("{},{y}", index as u64 * step)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let millis = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    let page = LivePage {
        per_second: format!("{:.1}", last_ten.payments as f64 / 10.0),
        gmv_minute: crate::gateway::fen_to_yuan(minute.gmv_fen),
        p50_ms: millis(minute.p50_us),
        p99_ms: millis(minute.p99_us),
        peak,
        payments_points: points(&|second| second.payments, peak),
        gmv_points: points(&|second| second.gmv_fen, peak_gmv),
        frame: session.frame,
    };
    let Ok(html) = page.render() else {
        return crate::error::ApiError::internal("the live page did not render").into_response();
    };
    let mut response = web::page(StatusCode::OK, html, None, &[]);
    response.headers_mut().insert("refresh", axum::http::HeaderValue::from_static("2"));
    response
}

/// A fee bound in yuan: an amount, or zero.
fn fee_fen(text: &str) -> Option<u64> {
    let zero = !text.is_empty() && text.len() <= 8 && text.chars().all(|c| c == '0' || c == '.');
    if zero { Some(0) } else { crate::gateway::yuan_to_fen(text) }
}

/// `GET /`: where to go — the console, the portal, the API's reference.
pub async fn start(headers: HeaderMap) -> Response {
    #[derive(Template)]
    #[template(path = "desk/start.html")]
    struct StartPage {
        words: &'static desk::Words,
    }
    match (StartPage { words: desk::words(&headers) }).render() {
        Ok(html) => web::page(StatusCode::OK, html, None, &[]),
        Err(_) => crate::error::ApiError::internal("the start page did not render").into_response(),
    }
}
