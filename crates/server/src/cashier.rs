//! The cashier: the pages where a buyer, sent by a merchant's website
//! (`alipay.trade.page.pay` / `wap.pay`) or a phone's QR scan, signs in and
//! pays a trade, and goes back to the merchant's `return_url` with Alipay's
//! signed return parameters.
//!
//! Everything the pages carry is signed under the platform's secret: the
//! checkout token `t` (the trade, where to return, which method — so a
//! `return_url` only ever comes from a verified merchant request, never
//! from a visitor), the buyer's session cookie, and each form's CSRF token
//! (tied to a per-browser cookie that `SameSite=Lax` keeps off cross-site
//! POSTs). Pages are server-rendered (askama, checked at compile time) with
//! a strict Content-Security-Policy and no framing.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::{Action, Outcome, PartyKind, PartyNumber, PaySource, Trade, TradeNumber, TradeStatus};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;
use crate::ids::IdKind;
use crate::web::{self, VISIT_COOKIE};

/// A buyer's session lasts this long (clock time).
const SESSION_NANOS: u64 = 30 * 60 * 1_000_000_000;
const SESSION_COOKIE: &str = "zhifu_buyer";
/// A checkout token is at most this long (it carries the `return_url`).
const TOKEN_BYTES_MAX: usize = 4_096;

/// What a checkout token says: the trade, and where its buyer goes after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub trade: u64,
    /// The gateway method that sent the buyer (`alipay.trade.page.pay`, …), or
    /// `qr` for a scanned QR code.
    pub method: String,
    pub return_url: Option<String>,
    /// wap.pay's `quit_url`: where "cancel" goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quit_url: Option<String>,
}

/// The signed token of a checkout: base64url(JSON) `.` hex(MAC).
pub fn token(state: &AppState, checkout: &Checkout) -> Result<String, ApiError> {
    crate::web::signed_token(state, b"checkout", checkout)
}

fn read_token(state: &AppState, token: &str) -> Option<Checkout> {
    crate::web::read_signed_token(state, b"checkout", token, TOKEN_BYTES_MAX)
}

/// The words of the pages, in Chinese or English by `Accept-Language`.
pub struct Words {
    lang: &'static str,
    title: &'static str,
    login: &'static str,
    password: &'static str,
    sign_in: &'static str,
    scan: &'static str,
    qr_alt: &'static str,
    waiting: &'static str,
    pay_from: &'static str,
    balance: &'static str,
    fund: &'static str,
    pay: &'static str,
    back_to_shop: &'static str,
    quit: &'static str,
    coupon: &'static str,
    no_coupon: &'static str,
    off: &'static str,
    sign_out: &'static str,
}

const ENGLISH: Words = Words {
    lang: "en",
    title: "Pay",
    login: "Login",
    password: "Password",
    sign_in: "Sign in",
    scan: "Or scan with your phone",
    qr_alt: "QR code of this order",
    waiting: "Waiting for payment…",
    pay_from: "Pay from",
    balance: "Balance",
    fund: "Yu'e Bao",
    pay: "Pay",
    back_to_shop: "Back to the shop",
    quit: "Cancel and go back to the shop",
    coupon: "Coupon",
    no_coupon: "No coupon",
    off: "off",
    sign_out: "Sign out",
};

const CHINESE: Words = Words {
    lang: "zh-CN",
    title: "收银台",
    login: "账户名",
    password: "密码",
    sign_in: "登录",
    scan: "或用手机扫码支付",
    qr_alt: "本订单的二维码",
    waiting: "等待付款…",
    pay_from: "付款方式",
    balance: "账户余额",
    fund: "余额宝",
    pay: "确认付款",
    back_to_shop: "返回商家",
    quit: "取消付款，返回商家",
    coupon: "优惠券",
    no_coupon: "不使用优惠券",
    off: "立减",
    sign_out: "退出登录",
};

fn words(headers: &HeaderMap) -> &'static Words {
    if web::prefers_chinese(headers) { &CHINESE } else { &ENGLISH }
}

/// Messages of outcomes, in both languages.
fn message(words: &Words, what: Message) -> String {
    let zh = words.lang != "en";
    let text = match what {
        Message::WrongPassword => ["Wrong login or password.", "账户名或密码错误。"],
        Message::TooManyTries => ["Too many tries: wait a minute.", "尝试次数过多，请稍后再试。"],
        Message::Insufficient => ["Not enough money there: choose another way to pay.", "余额不足，请换一种付款方式。"],
        Message::Paid => ["Paid. Thank you.", "付款成功，谢谢。"],
        Message::PaidByOther => ["This order has been paid.", "该订单已付款。"],
        Message::Closed => ["This order is closed: it expired or was cancelled.", "该订单已关闭（超时或已取消）。"],
        Message::Refused => ["The payment was refused.", "付款未成功。"],
        Message::BadLink => ["This payment link is not valid.", "支付链接无效。"],
        Message::Expired => ["This page has expired: open it again.", "页面已过期，请重新打开。"],
        Message::CouponRefused => ["That coupon cannot be used here now.", "该优惠券现在不能用于此订单。"],
    };
    text[usize::from(zh)].to_string()
}

#[derive(Clone, Copy)]
enum Message {
    WrongPassword,
    TooManyTries,
    Insufficient,
    Paid,
    PaidByOther,
    Closed,
    Refused,
    BadLink,
    Expired,
    CouponRefused,
}

/// A coupon the buyer may use on this order, and what it takes off.
struct CouponChoice {
    id: String,
    discount: String,
    campaign: String,
}

/// Of a buyer's coupons, at most this many newest are looked at, and at
/// most `COUPONS_SHOWN` that apply are offered.
const COUPONS_LOOKED_AT: usize = 200;
const COUPONS_SHOWN: usize = 10;

/// The buyer's coupons that would take something off this trade now.
fn coupon_choices(state: &AppState, trade: &Trade, buyer: PartyNumber) -> Vec<CouponChoice> {
    let now = state.clock.now();
    state.store.read(|p| {
        p.coupons_of(buyer, None)
            .take(COUPONS_LOOKED_AT)
            .filter_map(|coupon| {
                let discount = p.coupon_discount(now, trade, buyer, coupon.number)?;
                Some(CouponChoice {
                    id: state.ids.format(IdKind::Coupon, coupon.number),
                    discount: crate::gateway::fen_to_yuan(discount.get()),
                    campaign: p.campaign(coupon.campaign).map(|c| c.name.clone()).unwrap_or_default(),
                })
            })
            .take(COUPONS_SHOWN)
            .collect()
    })
}

struct Order {
    merchant: String,
    subject: String,
    amount: String,
}

enum View {
    SignIn(Option<String>),
    Pay { balance: String, fund: String, coupons: Vec<CouponChoice>, message: Option<String> },
    Done { message: String, next: Option<String> },
}

#[derive(Template)]
#[template(path = "cashier/page.html")]
struct Page<'a> {
    words: &'a Words,
    order: Order,
    view: View,
    token: String,
    csrf: String,
    phone: bool,
    /// wap.pay's `quit_url`, shown while the order waits.
    quit_url: Option<String>,
}

/// The page with the web stack's headers, the merchant's return origin
/// allowed as a form target, and the visit cookie when the browser has none.
fn page_response(
    state: &AppState,
    status: StatusCode,
    page: &Page<'_>,
    return_origin: Option<&str>,
    visit: Option<&str>,
) -> Response {
    let Ok(html) = page.render() else {
        return ApiError::internal("a cashier page did not render").into_response();
    };
    let cookies: Vec<String> = visit.map(|visit| web::cookie(state, VISIT_COOKIE, visit, None)).into_iter().collect();
    web::page(status, html, return_origin, &cookies)
}

/// The signed-in buyer, from the session cookie (a party session token).
fn buyer_of(state: &AppState, headers: &HeaderMap) -> Option<PartyNumber> {
    let token = web::cookie_value(headers, SESSION_COOKIE)?;
    match state.sessions.verify(state, token, state.clock.now())? {
        crate::auth::Caller::Party { number, kind: PartyKind::User } => Some(number),
        _ => None,
    }
}

/// The trade behind a checkout, as it is now.
fn trade_of(state: &AppState, checkout: &Checkout) -> Result<Trade, ApiError> {
    let number = TradeNumber::new(checkout.trade);
    state
        .store
        .read_with_archive(|p, archive| p.trade(archive, number))
        .map_err(|error| ApiError::internal(format!("cannot read the trade: {error}")))?
        .ok_or_else(|| ApiError::not_found("trade"))
}

fn order_of(state: &AppState, trade: &Trade) -> Order {
    let merchant = state.store.read(|p| p.party(trade.merchant).map(|party| party.name.clone())).unwrap_or_default();
    Order { merchant, subject: trade.subject.clone(), amount: crate::gateway::fen_to_yuan(trade.amount.get()) }
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|url| url.origin().ascii_serialization())
}

/// Where a paid trade's buyer goes: the `return_url` with Alipay's signed
/// synchronous return parameters, or nowhere (the receipt is shown).
pub fn return_target(state: &AppState, checkout: &Checkout, trade: &Trade) -> Result<Option<String>, ApiError> {
    let Some(return_url) = &checkout.return_url else { return Ok(None) };
    let key = state.gateway_key().map_err(|error| ApiError::internal(format!("the gateway key: {error}")))?;
    let mut params = std::collections::BTreeMap::new();
    params.insert("out_trade_no".to_string(), trade.out_trade_no.clone());
    params.insert("trade_no".to_string(), state.ids.format(IdKind::Trade, trade.number));
    params.insert("total_amount".to_string(), crate::gateway::fen_to_yuan(trade.amount.get()));
    params.insert("seller_id".to_string(), state.ids.format(IdKind::Merchant, trade.merchant));
    params.insert("app_id".to_string(), crate::gateway::app_id(trade.merchant));
    params.insert("method".to_string(), format!("{}.return", checkout.method));
    params.insert("timestamp".to_string(), crate::gateway::format_timestamp(state.clock.now()));
    params.insert("charset".to_string(), "utf-8".to_string());
    params.insert("version".to_string(), "1.0".to_string());
    let signature = key
        .sign(&crate::gateway::sign_content(&params, &["sign", "sign_type"]))
        .map_err(|error| ApiError::internal(format!("cannot sign the return: {error}")))?;
    params.insert("sign".to_string(), signature);
    params.insert("sign_type".to_string(), "RSA2".to_string());
    let mut url = url::Url::parse(return_url).map_err(|_| ApiError::internal("a stored return_url does not parse"))?;
    url.query_pairs_mut().extend_pairs(params.iter());
    Ok(Some(url.to_string()))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    t: String,
    #[serde(default)]
    phone: Option<u8>,
}

fn is_phone(headers: &HeaderMap, asked: Option<u8>) -> bool {
    asked == Some(1)
        || headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|agent| agent.contains("Mobile") || agent.contains("Android") || agent.contains("iPhone"))
}

/// `GET /cashier?t=…`: the order and, for a signed-in buyer, the payment
/// form; else the sign-in form (and on a desktop, the QR code to pay by phone).
pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let words = words(&headers);
    let Ok(Query(query)) = query else { return bad_link(&state, words) };
    let phone = is_phone(&headers, query.phone);
    let Some(checkout) = read_token(&state, &query.t) else { return bad_link(&state, words) };
    render(&state, &headers, words, &query.t, &checkout, phone, None).await
}

fn bad_link(state: &AppState, words: &'static Words) -> Response {
    let order = Order { merchant: String::new(), subject: String::new(), amount: String::new() };
    let view = View::Done { message: message(words, Message::BadLink), next: None };
    let page = Page { words, order, view, token: String::new(), csrf: String::new(), phone: false, quit_url: None };
    page_response(state, StatusCode::BAD_REQUEST, &page, None, None)
}

/// The page for a checkout as things stand: paid, closed, or waiting.
async fn render(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    words: &'static Words,
    token: &str,
    checkout: &Checkout,
    phone: bool,
    notice: Option<(StatusCode, Message)>,
) -> Response {
    let trade = match trade_of(state, checkout) {
        Ok(trade) => trade,
        Err(_) => return bad_link(state, words),
    };
    let (visit, new_visit) = match web::visit_of(headers) {
        Ok(visit) => visit,
        Err(error) => return error.into_response(),
    };
    let Ok(csrf) = web::csrf_token(state, &visit, token) else {
        return ApiError::internal("no CSRF token").into_response();
    };
    let return_origin = checkout.return_url.as_deref().and_then(origin_of);
    let buyer = buyer_of(state, headers);
    let (status, view) = match trade.status {
        TradeStatus::WaitBuyerPay => match buyer {
            None => (
                notice.map_or(StatusCode::OK, |(status, _)| status),
                View::SignIn(notice.map(|(_, what)| message(words, what))),
            ),
            Some(buyer) => {
                let (balance, fund) = state
                    .store
                    .read(|p| (p.balance(buyer).map_or(0, |b| b.available), p.fund_position(buyer).value.get()));
                let yuan = |fen: u128| crate::gateway::fen_to_yuan(u64::try_from(fen).unwrap_or(u64::MAX));
                let view = View::Pay {
                    balance: yuan(balance),
                    fund: crate::gateway::fen_to_yuan(fund),
                    coupons: coupon_choices(state, &trade, buyer),
                    message: notice.map(|(_, what)| message(words, what)),
                };
                (notice.map_or(StatusCode::OK, |(status, _)| status), view)
            }
        },
        TradeStatus::TradeClosed => {
            (StatusCode::CONFLICT, View::Done { message: message(words, Message::Closed), next: None })
        }
        _ => {
            // Paid: its payer goes on to the merchant; anyone else is told so.
            let mine = buyer.is_some_and(|buyer| trade.payer == Some(buyer));
            let next = if mine { return_target(state, checkout, &trade).ok().flatten() } else { None };
            let what = if mine { Message::Paid } else { Message::PaidByOther };
            let status = if mine { StatusCode::OK } else { StatusCode::CONFLICT };
            (status, View::Done { message: message(words, what), next })
        }
    };
    let waiting = trade.status == TradeStatus::WaitBuyerPay;
    let quit_url = checkout.quit_url.clone().filter(|_| waiting);
    let order = order_of(state, &trade);
    let page = Page { words, order, view, token: token.to_string(), csrf, phone, quit_url };
    page_response(state, status, &page, return_origin.as_deref(), new_visit.then_some(visit.as_str()))
}

#[derive(Deserialize)]
pub struct SignInForm {
    t: String,
    csrf: String,
    login: String,
    password: String,
}

/// The form's CSRF token is the one this browser's visit cookie gives.
fn csrf_holds(state: &AppState, headers: &HeaderMap, token: &str, csrf: &str) -> bool {
    web::cookie_value(headers, VISIT_COOKIE).is_some_and(|visit| web::csrf_holds(state, visit, token, csrf))
}

fn forbidden_page(state: &AppState, words: &'static Words) -> Response {
    let order = Order { merchant: String::new(), subject: String::new(), amount: String::new() };
    let view = View::Done { message: message(words, Message::Expired), next: None };
    let page = Page { words, order, view, token: String::new(), csrf: String::new(), phone: false, quit_url: None };
    page_response(state, StatusCode::FORBIDDEN, &page, None, None)
}

/// A form's checkout, if its token is ours and its CSRF token this browser's.
fn checked_post(
    state: &AppState,
    headers: &HeaderMap,
    words: &'static Words,
    token: &str,
    csrf: &str,
) -> Result<Checkout, Box<Response>> {
    let checkout = read_token(state, token).ok_or_else(|| Box::new(bad_link(state, words)))?;
    if !csrf_holds(state, headers, token, csrf) {
        return Err(Box::new(forbidden_page(state, words)));
    }
    Ok(checkout)
}

/// `POST /cashier/sign-in`: login and password (Argon2id, rate-limited per
/// login); on success the session cookie, and back to the cashier.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let words = words(&headers);
    let Ok(Form(form)) = form else { return bad_link(&state, words) };
    let checkout = match checked_post(&state, &headers, words, &form.t, &form.csrf) {
        Ok(checkout) => checkout,
        Err(refused) => return *refused,
    };
    let phone = is_phone(&headers, None);
    let login = form.login.trim();
    if login.chars().count() > platform::access::LOGIN_CHARS_MAX || form.password.chars().count() > 128 {
        let notice = Some((StatusCode::UNAUTHORIZED, Message::WrongPassword));
        return render(&state, &headers, words, &form.t, &checkout, phone, notice).await;
    }
    if !state.limiters.allow_sign_in(login) {
        let notice = Some((StatusCode::TOO_MANY_REQUESTS, Message::TooManyTries));
        return render(&state, &headers, words, &form.t, &checkout, phone, notice).await;
    }
    let (party, hash) = match crate::auth::party_by_password(&state, login, &form.password, PartyKind::User).await {
        Ok(Some(user)) => user,
        Err(error) => return error.into_response(),
        Ok(None) => {
            let notice = Some((StatusCode::UNAUTHORIZED, Message::WrongPassword));
            return render(&state, &headers, words, &form.t, &checkout, phone, notice).await;
        }
    };
    let Ok((session, _)) = state.sessions.open_party(&state, party, &hash, SESSION_NANOS, state.clock.now()) else {
        return ApiError::internal("no session").into_response();
    };
    let session = web::cookie(&state, SESSION_COOKIE, &session, Some(SESSION_NANOS / 1_000_000_000));
    web::see_other(&cashier_url(&form.t, phone), &[session])
}

fn cashier_url(token: &str, phone: bool) -> String {
    format!("/cashier?t={token}{}", if phone { "&phone=1" } else { "" })
}

#[derive(Deserialize)]
pub struct PayForm {
    t: String,
    csrf: String,
    source: String,
    /// A coupon's id (`cpn_…`), or empty for none.
    #[serde(default)]
    coupon: String,
}

/// `POST /cashier/pay`: pays the trade from the signed-in buyer's balance
/// or fund. A second click finds it paid by the same buyer and goes on as
/// the first did: paid once.
pub async fn pay(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<PayForm>, FormRejection>,
) -> Response {
    let words = words(&headers);
    let Ok(Form(form)) = form else { return bad_link(&state, words) };
    let checkout = match checked_post(&state, &headers, words, &form.t, &form.csrf) {
        Ok(checkout) => checkout,
        Err(refused) => return *refused,
    };
    let phone = is_phone(&headers, None);
    let Some(buyer) = buyer_of(&state, &headers) else {
        return render(&state, &headers, words, &form.t, &checkout, phone, None).await;
    };
    let source = if form.source == "fund" { PaySource::Fund } else { PaySource::Balance };
    let coupon = match form.coupon.as_str() {
        "" => None,
        id => match state.ids.parse(IdKind::Coupon, id) {
            Some(number) => Some(platform::CouponNumber::new(number)),
            None => {
                let notice = Some((StatusCode::UNPROCESSABLE_ENTITY, Message::CouponRefused));
                return render(&state, &headers, words, &form.t, &checkout, phone, notice).await;
            }
        },
    };
    let action = Action::PayTrade { trade: TradeNumber::new(checkout.trade), buyer, source, coupon };
    let notice = match state.submit(None, action).await {
        Ok(Outcome::TradeUpdated(trade)) => match return_target(&state, &checkout, &trade) {
            Ok(Some(next)) => return web::see_other(&next, &[]),
            Ok(None) => None,
            Err(error) => return error.into_response(),
        },
        Ok(Outcome::Rejected(platform::Rejection::InsufficientFunds)) => {
            Some((StatusCode::UNPROCESSABLE_ENTITY, Message::Insufficient))
        }
        Ok(Outcome::Rejected(rejection)) if is_about_coupon(&rejection) => {
            Some((StatusCode::UNPROCESSABLE_ENTITY, Message::CouponRefused))
        }
        // Paid already: by this buyer (a second click) it goes on as the
        // first did; closed or expired, the page says which.
        Ok(Outcome::Rejected(platform::Rejection::Conflict(_))) => {
            if let Ok(trade) = trade_of(&state, &checkout)
                && trade.payer == Some(buyer)
                && let Ok(Some(next)) = return_target(&state, &checkout, &trade)
            {
                return web::see_other(&next, &[]);
            }
            None
        }
        Ok(_) => Some((StatusCode::UNPROCESSABLE_ENTITY, Message::Refused)),
        Err(error) => return error.into_response(),
    };
    render(&state, &headers, words, &form.t, &checkout, phone, notice).await
}

fn is_about_coupon(rejection: &platform::Rejection) -> bool {
    use platform::rejection::{Conflict, Missing};
    matches!(
        rejection,
        platform::Rejection::NotFound(Missing::Coupon)
            | platform::Rejection::Conflict(
                Conflict::CouponUsed | Conflict::CouponExpired | Conflict::CouponOfAnotherMerchant
            )
    )
}

#[derive(Deserialize)]
pub struct SignOutForm {
    t: String,
    csrf: String,
}

/// `POST /cashier/sign-out`: the buyer's session ends (on this node at
/// once, the cookie cleared), and back to the sign-in form.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Result<Form<SignOutForm>, FormRejection>,
) -> Response {
    let words = words(&headers);
    let Ok(Form(form)) = form else { return bad_link(&state, words) };
    if let Err(refused) = checked_post(&state, &headers, words, &form.t, &form.csrf) {
        return *refused;
    }
    if let Some(session) = web::cookie_value(&headers, SESSION_COOKIE) {
        let now = state.clock.now();
        state.sessions.end(session, now.plus_nanos(SESSION_NANOS), now);
    }
    let cleared = web::cookie(&state, SESSION_COOKIE, "", Some(0));
    web::see_other(&cashier_url(&form.t, is_phone(&headers, None)), &[cleared])
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    /// Where to go once paid (the signed return, or the receipt).
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// `GET /cashier/status?t=…`: what the desktop page polls.
pub async fn status(State(state): State<Arc<AppState>>, query: Result<Query<TokenQuery>, QueryRejection>) -> Response {
    let Ok(Query(query)) = query else { return ApiError::invalid("t is required").into_response() };
    let Some(checkout) = read_token(&state, &query.t) else { return ApiError::not_found("checkout").into_response() };
    let trade = match trade_of(&state, &checkout) {
        Ok(trade) => trade,
        Err(error) => return error.into_response(),
    };
    let paid = !matches!(trade.status, TradeStatus::WaitBuyerPay | TradeStatus::TradeClosed);
    let next = if paid {
        match return_target(&state, &checkout, &trade) {
            Ok(Some(next)) => Some(next),
            Ok(None) => Some(cashier_url(&query.t, false)),
            Err(error) => return error.into_response(),
        }
    } else {
        None
    };
    let status = if paid {
        "paid"
    } else if trade.status == TradeStatus::TradeClosed {
        "closed"
    } else {
        "waiting"
    };
    axum::Json(Status { status, next }).into_response()
}

/// `GET /qr/{token}`: a scanned QR code opens the phone cashier.
pub async fn scanned(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    match read_token(&state, &token) {
        Some(_) => web::see_other(&cashier_url(&token, true), &[]),
        None => bad_link(&state, &ENGLISH),
    }
}

/// `GET /cashier/qr.svg?t=…`: the QR code of `<public-url>/qr/<token>`.
pub async fn qr_image(
    State(state): State<Arc<AppState>>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else { return ApiError::invalid("t is required").into_response() };
    if read_token(&state, &query.t).is_none() {
        return ApiError::not_found("checkout").into_response();
    }
    let url = format!("{}/qr/{}", state.public_url, query.t);
    let Ok(code) = qrcode::QrCode::new(url.as_bytes()) else {
        return ApiError::internal("the QR code does not fit").into_response();
    };
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build();
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response()
}

/// The QR code's URL for a trade (what `alipay.trade.precreate` answers).
pub fn qr_url(state: &AppState, trade: TradeNumber) -> Result<String, ApiError> {
    let checkout = Checkout { trade: trade.get(), method: "qr".to_string(), return_url: None, quit_url: None };
    Ok(format!("{}/qr/{}", state.public_url, token(state, &checkout)?))
}

pub async fn stylesheet() -> Response {
    let css = include_str!("../templates/cashier/style.css");
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response()
}

pub async fn script() -> Response {
    let js = include_str!("../templates/cashier/follow.js");
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], js).into_response()
}
