//! The merchant portal (`/portal`): a merchant signs in with its login and
//! password and sees its balance and today's takings, its trades (a trade's
//! page with refund and ship), its webhook endpoints with the events they
//! still owe (resend), and makes restricted API keys. Each page is API
//! requests made with the merchant's session (`desk`).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use platform::PartyKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::desk::{self, Desk, Frame, Session, TradeRow, text};
use crate::web::{self, Web};

type Peer = ConnectInfo<SocketAddr>;

/// A portal session lasts this long (clock time), as a staff session does.
const SESSION_NANOS: u64 = crate::auth::SESSION_NANOS;

pub fn routes() -> axum::Router<Arc<Web>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/portal", get(home))
        .route("/portal/sign-in", post(sign_in))
        .route("/portal/webhooks", get(webhooks))
        .route("/portal/keys", get(keys).post(new_key))
        .route("/portal/keys/app", post(set_app_key))
        .route("/portal/keys/roll", post(roll_key))
        .route("/portal/bills", get(bills))
        .route("/portal/bills/download", get(download_bill))
        .route("/portal/balance", get(balance_transactions))
        .merge(desk::shared_routes(Desk::Portal))
}

fn signed_in(web: &Arc<Web>, headers: &HeaderMap, peer: SocketAddr) -> Result<Session, Box<Response>> {
    desk::session(web, Desk::Portal, headers, peer)
}

#[derive(Deserialize)]
pub struct TradesQuery {
    starting_after: Option<String>,
    status: Option<String>,
}

#[derive(Template)]
#[template(path = "desk/portal_home.html")]
struct HomePage {
    frame: Frame,
    available: String,
    /// Today first, then the days before.
    days: Vec<DayRow>,
    /// The credit line: limit, used, available (yuan), daily rate (bp).
    credit: Option<(String, String, String, String)>,
    trades: Vec<TradeRow>,
    status: String,
    older: Option<String>,
}

/// `GET /portal`: balance, today's takings, the trades (20 a page, by status).
async fn home(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<TradesQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let query = query.ok().map(|Query(query)| query);
    let status = query.as_ref().and_then(|q| q.status.clone()).filter(|s| platform::TradeStatus::parse(s).is_some());
    let after = query.and_then(|q| q.starting_after).filter(|id| desk::plain_id(id).is_some());
    let mut path = "/v1/trades?limit=20".to_string();
    if let Some(status) = &status {
        path.push_str(&format!("&status={status}"));
    }
    if let Some(after) = &after {
        path.push_str(&format!("&starting_after={after}"));
    }
    let page = match session.get(path).await {
        Ok(page) => page,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let trades: Vec<TradeRow> =
        page["data"].as_array().map(Vec::as_slice).unwrap_or_default().iter().map(desk::trade_row).collect();
    let older = (page["has_more"].as_bool() == Some(true)).then(|| trades.last().map(|t| t.trade_no.clone())).flatten();
    let balance = session.get("/v1/balance".to_string()).await.unwrap_or(Value::Null);
    let days = takings(&session).await;
    let credit = session.get("/v1/credit".to_string()).await.ok().map(|credit| {
        let yuan = |name| desk::yuan(&credit, name);
        (yuan("limit"), yuan("used"), yuan("available"), text(&credit, "daily_rate_bps"))
    });
    let page = HomePage {
        available: balance["available"].as_u64().map(crate::gateway::fen_to_yuan).unwrap_or_default(),
        days,
        credit,
        trades,
        status: status.unwrap_or_default(),
        older,
        frame: session.frame,
    };
    desk::render(StatusCode::OK, &page, &[])
}

/// A business day's takings as the portal shows them.
pub struct DayRow {
    pub date: String,
    pub paid_count: u64,
    pub paid: String,
    pub refund_count: u64,
    pub refunded: String,
    pub net: String,
}

/// Today's takings and the days before, newest first (`GET /v1/takings`).
async fn takings(session: &Session) -> Vec<DayRow> {
    let Ok(page) = session.get("/v1/takings".to_string()).await else { return Vec::new() };
    let days = page["data"].as_array().map(Vec::as_slice).unwrap_or_default();
    days.iter()
        .map(|day| DayRow {
            date: text(day, "date"),
            paid_count: day["paid_count"].as_u64().unwrap_or(0),
            paid: desk::yuan(day, "paid_amount"),
            refund_count: day["refund_count"].as_u64().unwrap_or(0),
            refunded: desk::yuan(day, "refunded_amount"),
            net: crate::routes::finance::signed_yuan(i128::from(day["net_amount"].as_i64().unwrap_or(0))),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    login: String,
    password: String,
}

/// `POST /portal/sign-in`: a merchant's login and password (Argon2id,
/// limited per login; unknown logins cost the same), then the session cookie.
async fn sign_in(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let words = desk::words(&headers);
    let refuse = |status, message| desk::sign_in_page(&web, Desk::Portal, &headers, status, Some(message));
    let Ok(Form(form)) = form else { return refuse(StatusCode::BAD_REQUEST, words.expired) };
    if !desk::sign_in_csrf_holds(&web, Desk::Portal, &headers, &form.csrf) {
        return refuse(StatusCode::FORBIDDEN, words.expired);
    }
    let state = &web.state;
    let login = form.login.trim();
    if login.chars().count() > platform::access::LOGIN_CHARS_MAX || form.password.chars().count() > 128 {
        return refuse(StatusCode::UNAUTHORIZED, words.wrong_password);
    }
    if !state.limiters.allow_sign_in(login) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "too many sign-ins to this login: wait a minute");
    }
    let (party, hash) = match crate::auth::party_by_password(state, login, &form.password, PartyKind::Merchant).await {
        Ok(Some(merchant)) => merchant,
        Err(error) => return error.into_response(),
        // Failing too often from one address is answered as a rate limit, as the API does.
        _ if !state.limiters.allow_failure(peer.ip()) => {
            return refuse(StatusCode::TOO_MANY_REQUESTS, "too many failed sign-ins from this address");
        }
        _ => return refuse(StatusCode::UNAUTHORIZED, words.wrong_password),
    };
    let Ok((token, _)) = state.sessions.open_party(state, party, &hash, SESSION_NANOS, state.clock.now()) else {
        return crate::error::ApiError::internal("no session").into_response();
    };
    let cookie = web::cookie(state, Desk::Portal.cookie(), &token, Some(SESSION_NANOS / 1_000_000_000));
    web::see_other("/portal", &[cookie])
}

struct EndpointRow {
    id: String,
    url: String,
    events: String,
}

struct EventRow {
    id: String,
    kind: String,
    created: String,
    trade_no: String,
}

#[derive(Template)]
#[template(path = "desk/portal_webhooks.html")]
struct WebhooksPage {
    frame: Frame,
    endpoints: Vec<EndpointRow>,
    undelivered: Vec<EventRow>,
    nonce: String,
}

/// `GET /portal/webhooks`: the endpoints and the events still owed.
async fn webhooks(State(web): State<Arc<Web>>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let endpoints = match session.get("/v1/webhook-endpoints".to_string()).await {
        Ok(answer) => answer,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let owed = session.get("/v1/events?delivered=false&limit=50".to_string()).await.unwrap_or(Value::Null);
    let list = |value: &Value| value["data"].as_array().cloned().unwrap_or_default();
    let endpoints = list(&endpoints)
        .iter()
        .map(|e| EndpointRow {
            id: text(e, "id"),
            url: text(e, "url"),
            events: e["events"]
                .as_array()
                .map(|kinds| kinds.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        })
        .collect();
    let undelivered = list(&owed)
        .iter()
        .map(|e| EventRow {
            id: text(e, "id"),
            kind: text(e, "type"),
            created: text(e, "created"),
            trade_no: text(&e["data"], "trade_no"),
        })
        .collect();
    let nonce = match web::form_nonce() {
        Ok(nonce) => nonce,
        Err(error) => return error.into_response(),
    };
    desk::render(StatusCode::OK, &WebhooksPage { endpoints, undelivered, nonce, frame: session.frame }, &[])
}

#[derive(Template)]
#[template(path = "desk/bills.html")]
struct BillsPage {
    frame: Frame,
    action: String,
    yesterday: String,
}

/// Yesterday's business day (CST): the newest a bill can be had for.
pub fn yesterday(web: &Web) -> String {
    let today_start = platform::calendar::Date::of(web.state.clock.now()).start_nanos().unwrap_or(0);
    platform::calendar::Date::of_nanos(today_start.saturating_sub(1)).to_string()
}

/// `GET /portal/bills`: pick a day or a month.
async fn bills(State(web): State<Arc<Web>>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let page =
        BillsPage { action: "/portal/bills/download".to_string(), yesterday: yesterday(&web), frame: session.frame };
    desk::render(StatusCode::OK, &page, &[])
}

#[derive(Deserialize)]
pub struct BillQuery {
    #[serde(default)]
    date: String,
    #[serde(default)]
    month: String,
}

impl BillQuery {
    /// The API's query for this bill, if the form names a day or a month.
    pub fn query(&self) -> Option<String> {
        let plain =
            |text: &str| !text.is_empty() && text.len() <= 10 && text.chars().all(|c| c.is_ascii_digit() || c == '-');
        match (self.date.trim(), self.month.trim()) {
            (date, "") if plain(date) => Some(format!("date={date}")),
            ("", month) if plain(month) => Some(format!("month={month}")),
            _ => None,
        }
    }
}

/// `GET /portal/bills/download?date=`: the API's CSV, streamed through.
async fn download_bill(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<BillQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let Some(query) = query.ok().and_then(|Query(query)| query.query()) else {
        return desk::message_page(
            &session.frame,
            StatusCode::BAD_REQUEST,
            "give a day (2013-11-11) or a month (2013-11)",
        );
    };
    session.download(format!("/v1/bills?{query}")).await
}

#[derive(Template)]
#[template(path = "desk/portal_balance.html")]
struct BalancePage {
    frame: Frame,
    rows: Vec<desk::MovementRow>,
    older: Option<String>,
}

/// `GET /portal/balance`: balance transactions, 50 a page.
async fn balance_transactions(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    query: Result<Query<TradesQuery>, QueryRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let after = query.ok().and_then(|Query(query)| query.starting_after).filter(|id| desk::plain_id(id).is_some());
    let mut path = "/v1/balance-transactions?limit=50".to_string();
    if let Some(after) = &after {
        path.push_str(&format!("&starting_after={after}"));
    }
    let page = match session.get(path).await {
        Ok(page) => page,
        Err(refusal) => return desk::refusal_page(&session.frame, &refusal),
    };
    let rows = desk::movement_rows(&page);
    let list = page["data"].as_array().cloned().unwrap_or_default();
    let older = (page["has_more"].as_bool() == Some(true)).then(|| list.last().map(|row| text(row, "id"))).flatten();
    desk::render(StatusCode::OK, &BalancePage { rows, older, frame: session.frame }, &[])
}

#[derive(Template)]
#[template(path = "desk/portal_keys.html")]
struct KeysPage {
    frame: Frame,
    new_key: Option<String>,
    /// A rolled key, shown once, and when the old one stops.
    rolled: Option<(String, String)>,
    nonce: String,
}

async fn keys(State(web): State<Arc<Web>>, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    keys_page(session, None, None)
}

fn keys_page(session: Session, new_key: Option<String>, rolled: Option<(String, String)>) -> Response {
    let nonce = match web::form_nonce() {
        Ok(nonce) => nonce,
        Err(error) => return error.into_response(),
    };
    desk::render(StatusCode::OK, &KeysPage { new_key, rolled, nonce, frame: session.frame }, &[])
}

#[derive(Deserialize)]
pub struct KeyForm {
    csrf: String,
    nonce: String,
}

#[derive(Deserialize)]
pub struct AppKeyForm {
    csrf: String,
    app_public_key: String,
}

#[derive(Deserialize)]
pub struct RollForm {
    csrf: String,
    nonce: String,
    current_key: String,
    expires_in_seconds: u64,
}

desk::csrf_forms!(KeyForm, AppKeyForm, RollForm);

/// `POST /portal/keys/roll`: the merchant's current full key (which a
/// session is not) rolled through the API as that key: a new one shown
/// once, the old one working for the overlap chosen. A key of anyone else
/// is refused before it is used.
async fn roll_key(desk::Posted(session, form): desk::Posted<RollForm>) -> Response {
    let state = &session.web.state;
    let key = form.current_key.trim();
    let signed_in = state.sessions.verify(state, &session.token, state.clock.now());
    let grant = state.store.read(|p| p.key_grant(&crate::auth::hash_key(key)));
    let ours = match (signed_in, grant) {
        (Some(Caller::Party { number, .. }), Some(grant)) => grant.party == number,
        _ => false,
    };
    if !ours {
        return desk::message_page(&session.frame, StatusCode::UNPROCESSABLE_ENTITY, session.frame.words.not_our_key);
    }
    let body = json!({ "expires_in_seconds": form.expires_in_seconds });
    let nonce = desk::plain_id(&form.nonce);
    match session.call_as(key, Method::POST, "/v1/api-keys/roll".to_string(), Some(body), nonce).await {
        Ok(answer) => {
            let rolled = (text(&answer, "api_key"), text(&answer, "previous_key_expires_at"));
            keys_page(session, None, Some(rolled))
        }
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

/// `POST /portal/keys/app`: replaces the gateway's app public key (PEM),
/// through the API (which checks the key and audits the change).
async fn set_app_key(desk::Posted(session, form): desk::Posted<AppKeyForm>) -> Response {
    let body = json!({ "app_public_key": form.app_public_key });
    match session.call(Method::PUT, "/v1/merchants/me/app-public-key".to_string(), Some(body), None).await {
        Ok(answer) => {
            let mut session = session;
            let app = text(&answer, "app_id");
            session.frame.notice = Some(format!("{} (app_id {app})", session.frame.words.app_key_replaced));
            keys_page(session, None, None)
        }
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}

/// `POST /portal/keys`: a restricted (read-only) key, shown once.
async fn new_key(desk::Posted(session, form): desk::Posted<KeyForm>) -> Response {
    let body = json!({ "permissions": "read" });
    match session.call(Method::POST, "/v1/api-keys".to_string(), Some(body), desk::plain_id(&form.nonce)).await {
        Ok(answer) => keys_page(session, Some(text(&answer, "api_key")), None),
        Err(refusal) => desk::refusal_page(&session.frame, &refusal),
    }
}
