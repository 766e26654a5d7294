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

use crate::desk::{self, AuditRow, Desk, Frame, Session, TradeRow, text, yuan};
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
        .route("/console/audit", get(audit))
        .route("/console/settings", get(settings))
        .route("/console/settings/fees/{product}", post(set_fees))
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
    let page = HomePage {
        balanced: check["balanced"].as_bool() == Some(true),
        checks,
        transfers: text(&check, "transfers"),
        accounts: text(&check, "accounts"),
        queues,
        recent,
        frame: session.frame,
    };
    desk::render(StatusCode::OK, &page, &[])
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
    let trades = if id.starts_with("mch_") {
        session.get(format!("/v1/trades?limit=20&merchant={id}")).await.map(|page| rows(&page)).unwrap_or_default()
    } else {
        Vec::new()
    };
    let audit = session.get(format!("/v1/admin/audit?target={id}&limit=50")).await.map(|p| desk::audit_rows(&p));
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
        frame: session.frame,
    };
    desk::render(StatusCode::OK, &page, &[])
}

#[derive(Deserialize)]
pub struct NonceForm {
    csrf: String,
    nonce: String,
}

/// `POST /console/parties/{id}/revoke-keys` (admins): every key of the
/// party stops at once; the one new key is shown once.
async fn revoke_keys(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<NonceForm>, FormRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let (Ok(Form(form)), Some(id)) = (form, desk::plain_id(&id)) else {
        return desk::message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return *refused;
    }
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

#[derive(Template)]
#[template(path = "desk/settings.html")]
struct SettingsPage {
    frame: Frame,
    fees: Vec<FeeRow>,
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
    desk::render(StatusCode::OK, &SettingsPage { fees, frame: session.frame }, &[])
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
async fn set_fees(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(product): Path<String>,
    form: Result<Form<FeeForm>, FormRejection>,
) -> Response {
    let session = match signed_in(&web, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let (Ok(Form(form)), Some(product)) = (form, desk::plain_id(&product)) else {
        return desk::message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return *refused;
    }
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
