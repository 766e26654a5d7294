//! `/gateway.do`: Alipay's open-platform protocol, so that merchant code
//! written for Alipay's SDKs runs against zhifu unchanged. The gateway only
//! translates: every method becomes the platform action the REST API uses
//! for the same behaviour (create, pay, refund, close, transfer), and its
//! outcome becomes Alipay's response, signed with the platform's key.
//!
//! - `keys`: RSA2 signing and verification, the platform's key.
//! - `params`: the signed text of a request, decimal yuan amounts.

mod keys;
pub mod params;
mod preauth;
mod royalty;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::rejection::{Conflict, Invalid, Limit, Missing};
use platform::{
    Action, EventNumber, Fen, NewTrade, Outcome, PartyKind, PartyNumber, Rejection, Timestamp, Trade, TradeMode,
    TradeNumber, TradeStatus,
};
use serde_json::{Map, Value, json};

pub use keys::{PlatformKey, SigningKeyPair, parse_public_key};
pub use params::{fen_to_yuan, sign_content, yuan_to_fen};

use crate::app::AppState;
use crate::ids::{IdKind, PublicIds};

/// A request's `timestamp` may be this far from the server's clock.
const TIMESTAMP_SKEW_NANOS: u64 = 15 * ledger::NANOS_PER_MINUTE;
use ledger::NANOS_PER_SECOND;
/// China Standard Time, in which Alipay's timestamps are written.
const CST_OFFSET_SECONDS: i64 = 8 * 3_600;

const METHODS: [&str; 21] = [
    "alipay.data.dataservice.bill.downloadurl.query",
    "alipay.fund.auth.order.freeze",
    "alipay.fund.auth.order.unfreeze",
    "alipay.fund.auth.operation.detail.query",
    "alipay.trade.royalty.relation.bind",
    "alipay.trade.royalty.relation.unbind",
    "alipay.trade.royalty.relation.batchquery",
    "alipay.trade.order.settle",
    "alipay.trade.order.settle.query",
    "alipay.trade.pay",
    "alipay.trade.precreate",
    "alipay.trade.create",
    "alipay.trade.query",
    "alipay.trade.refund",
    "alipay.trade.fastpay.refund.query",
    "alipay.trade.close",
    "alipay.trade.cancel",
    "alipay.fund.trans.uni.transfer",
    "alipay.trade.page.pay",
    "alipay.trade.wap.pay",
    "alipay.trade.app.pay",
];

/// The methods that send a buyer's browser to the cashier (an HTML answer,
/// not Alipay's signed JSON).
const CHECKOUT_METHODS: [&str; 3] = ["alipay.trade.page.pay", "alipay.trade.wap.pay", "alipay.trade.app.pay"];

/// The `app_id` of a merchant: 16 digits, as Alipay's.
pub fn app_id(merchant: PartyNumber) -> String {
    format!("2013{:012}", merchant.get())
}

fn merchant_of_app_id(app_id: &str) -> Option<PartyNumber> {
    let digits =
        app_id.strip_prefix("2013").filter(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_digit()))?;
    digits.parse().ok().filter(|&number| number > 0).map(PartyNumber::new)
}

/// An answer that is not `10000 Success`, as Alipay words them.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    msg: &'static str,
    sub_code: String,
    sub_msg: String,
}

impl Failure {
    fn missing(name: &str) -> Failure {
        Failure {
            code: "40001",
            msg: "Missing Required Arguments",
            sub_code: format!("isv.missing-{}", name.replace('_', "-")),
            sub_msg: format!("{name} is required"),
        }
    }

    fn invalid(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "40002", msg: "Invalid Arguments", sub_code: sub_code.to_string(), sub_msg: sub_msg.into() }
    }

    fn business(sub_code: &str, sub_msg: impl Into<String>) -> Failure {
        Failure { code: "40004", msg: "Business Failed", sub_code: sub_code.to_string(), sub_msg: sub_msg.into() }
    }

    /// Alipay's answer to calls beyond a rate.
    fn limited(sub_msg: &str) -> Failure {
        Failure {
            code: "20000",
            msg: "Service Currently Unavailable",
            sub_code: "isp.call-limited".to_string(),
            sub_msg: sub_msg.to_string(),
        }
    }

    fn unavailable(sub_msg: impl Into<String>) -> Failure {
        Failure {
            code: "20000",
            msg: "Service Currently Unavailable",
            sub_code: "isp.unknow-error".to_string(),
            sub_msg: sub_msg.into(),
        }
    }

    /// A platform refusal in Alipay's terms.
    fn from_rejection(rejection: &Rejection) -> Failure {
        let message = crate::error::describe(rejection);
        match rejection {
            Rejection::InsufficientFunds => Failure::business("ACQ.BUYER_BALANCE_NOT_ENOUGH", message),
            Rejection::NotFound(Missing::Trade) => Failure::business("ACQ.TRADE_NOT_EXIST", "no such trade"),
            Rejection::NotFound(what) => {
                Failure::business("ACQ.INVALID_PARAMETER", format!("no such {}", crate::error::missing_name(*what)))
            }
            // The refund-count limit is not an amount error.
            Rejection::LimitExceeded(Limit::RefundsPerTrade) => Failure::business("ACQ.INVALID_PARAMETER", message),
            // Alipay's answer to a settle over what the trade can still share.
            Rejection::LimitExceeded(Limit::Splittable { .. }) => {
                Failure::business("ACQ.ALLOC_AMOUNT_VALIDATE_ERROR", message)
            }
            Rejection::LimitExceeded(_) => Failure::business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", message),
            Rejection::Invalid(Invalid::PaymentCode | Invalid::PaymentCodeUnknown | Invalid::PaymentCodeExpired) => {
                Failure::business("ACQ.PAYMENT_AUTH_CODE_INVALID", message)
            }
            Rejection::Invalid(_) => Failure::invalid("isv.invalid-parameter", message),
            Rejection::Conflict(Conflict::ReceiverNotBound) => Failure::business("ACQ.INVALID_PARAMETER", message),
            Rejection::Conflict(
                Conflict::RefundRequestNoUsed | Conflict::OutTradeNoUsed | Conflict::SplitRequestNoUsed,
            ) => Failure::business("ACQ.DISCORDANT_REPEAT_REQUEST", message),
            Rejection::Conflict(Conflict::TradeClosed | Conflict::TradeExpiredUnpaid) => {
                Failure::business("ACQ.TRADE_HAS_CLOSE", message)
            }
            Rejection::Conflict(_) => Failure::business("ACQ.TRADE_STATUS_ERROR", message),
        }
    }
}

type Answer = Result<Map<String, Value>, Failure>;

/// Answers to requests that were not verified (missing parameters, an
/// unknown app, a bad signature) are few and fixed texts: their signatures
/// are kept, so that a flood of junk costs a lookup, not an RSA signature
/// (3.7 ms of CPU each). At most this many are kept.
const UNVERIFIED_SIGNATURES_MAX: usize = 256;

/// Signatures of unverified answers' texts (see `UNVERIFIED_SIGNATURES_MAX`).
#[derive(Default)]
pub struct SignatureCache(std::sync::Mutex<std::collections::HashMap<String, String>>);

/// `GET` or `POST /gateway.do`. Always 200 with a signed body, as Alipay.
pub async fn gateway(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let params = match body {
        Ok(body) => collect_params(query.as_deref(), &headers, &body),
        Err(rejection) => Err(body_failure(&rejection)),
    };
    let method = params.as_ref().ok().and_then(|params| params.get("method").cloned()).unwrap_or_default();
    let name = if METHODS.contains(&method.as_str()) {
        format!("{}_response", method.replace('.', "_"))
    } else {
        "error_response".to_string()
    };
    let verified = params.and_then(|params| verify(&state, &params).map(|merchant| (merchant, params)));
    if CHECKOUT_METHODS.contains(&method.as_str()) {
        return checkout(&state, verified, &method).await;
    }
    let (answer, unverified) = match verified {
        Ok((merchant, _)) if !state.limiters.allow_key(&app_limit_key(merchant)) => {
            (Err(Failure::limited("too many requests for this app_id")), false)
        }
        Ok((merchant, params)) => (dispatch(&state, merchant, &params, &method).await, false),
        // Junk from one address past its rate gets one fixed answer.
        Err(_) if !state.limiters.allow_failure(peer.ip()) => {
            (Err(Failure::limited("too many unverifiable requests from this address")), true)
        }
        Err(failure) => (Err(failure), true),
    };
    let text = answer_text(answer);
    let signed = if unverified { sign_cached(&state, &text).await } else { sign(&state, &text).await };
    match signed {
        Ok(signature) => {
            let mut response = format!("{{\"{name}\":{text},\"sign\":\"{signature}\"}}").into_response();
            let content_type = HeaderValue::from_static("application/json;charset=utf-8");
            response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            response
        }
        Err(error) => {
            tracing::error!(%error, "the gateway cannot sign");
            let unsigned = json!({ "error_response": { "code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error", "sub_msg": "the platform cannot sign answers now" } });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(unsigned)).into_response()
        }
    }
}

/// The per-app rate limit's key (apps share the per-key limiter with API keys).
fn app_limit_key(merchant: PartyNumber) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(format!("gateway app {merchant}").as_bytes()).into()
}

/// The exact text of an answer's object.
fn answer_text(answer: Answer) -> String {
    let mut object = Map::new();
    match answer {
        Ok(fields) => {
            object.insert("code".to_string(), json!("10000"));
            object.insert("msg".to_string(), json!("Success"));
            object.extend(fields);
        }
        Err(failure) => {
            object.insert("code".to_string(), json!(failure.code));
            object.insert("msg".to_string(), json!(failure.msg));
            object.insert("sub_code".to_string(), json!(failure.sub_code));
            object.insert("sub_msg".to_string(), json!(failure.sub_msg));
        }
    }
    Value::Object(object).to_string()
}

/// Signs the exact text sent. RSA (and making the key, the first time)
/// takes milliseconds: not on the async workers.
async fn sign(state: &Arc<AppState>, text: &str) -> anyhow::Result<String> {
    let signer = Arc::clone(state);
    let text = text.to_string();
    tokio::task::spawn_blocking(move || signer.gateway_key()?.sign(&text))
        .await
        .unwrap_or_else(|error| Err(anyhow::anyhow!("the signing task failed: {error}")))
}

/// `sign`, for the fixed texts of unverified answers: each signed once.
async fn sign_cached(state: &Arc<AppState>, text: &str) -> anyhow::Result<String> {
    fn cache(state: &AppState) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        state.gateway_signatures.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    if let Some(signature) = cache(state).get(text) {
        return Ok(signature.clone());
    }
    let signature = sign(state, text).await?;
    let mut kept = cache(state);
    if kept.len() < UNVERIFIED_SIGNATURES_MAX {
        kept.insert(text.to_string(), signature.clone());
    }
    Ok(signature)
}

/// A body that could not be read, in Alipay's terms.
fn body_failure(rejection: &axum::extract::rejection::BytesRejection) -> Failure {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Failure::invalid("isv.invalid-parameter", "the request is larger than 64 KiB")
    } else {
        Failure::invalid("isv.invalid-parameter", "the request body could not be read")
    }
}

/// The query string's parameters and a form body's, merged (the first of a
/// repeated name counts).
fn collect_params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<BTreeMap<String, String>, Failure> {
    let mut params = BTreeMap::new();
    let bad_encoding = || Failure::invalid("isv.invalid-parameter", "parameters must be form-encoded UTF-8");
    let mut add = |pairs: Vec<(String, String)>| {
        for (name, value) in pairs {
            params.entry(name).or_insert(value);
        }
    };
    if let Some(query) = query {
        add(serde_urlencoded::from_str(query).map_err(|_| bad_encoding())?);
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !body.is_empty() && is_form {
        add(serde_urlencoded::from_bytes(body).map_err(|_| bad_encoding())?);
    }
    Ok(params)
}

/// Checks a request's common parameters and its signature: the merchant
/// whose app signed it. Nothing is done for a request that fails here.
fn verify(state: &AppState, params: &BTreeMap<String, String>) -> Result<PartyNumber, Failure> {
    let required =
        |name: &str| params.get(name).filter(|value| !value.is_empty()).ok_or_else(|| Failure::missing(name));
    let app_id = required("app_id")?;
    let method_param = required("method")?;
    let signature = required("sign")
        .map_err(|_| Failure { sub_code: "isv.missing-signature".to_string(), ..Failure::missing("sign") })?;
    let sign_type = required("sign_type")?;
    let timestamp = required("timestamp")?;
    if !METHODS.contains(&method_param.as_str()) {
        return Err(Failure::invalid("isv.invalid-method", "unknown method"));
    }
    if params.get("charset").is_some_and(|charset| !charset.eq_ignore_ascii_case("utf-8")) {
        return Err(Failure::invalid("isv.invalid-charset", "only utf-8 is supported"));
    }
    let merchant = merchant_of_app_id(app_id)
        .filter(|&number| state.store.read(|p| p.party(number).is_some_and(|party| party.kind == PartyKind::Merchant)))
        .ok_or_else(|| Failure::invalid("isv.invalid-app-id", "no such app_id"))?;
    let pem = state
        .store
        .read(|p| p.party(merchant).and_then(|party| party.app_public_key.clone()))
        .ok_or_else(|| Failure::invalid("isv.invalid-app-id", "this merchant has registered no app_public_key"))?;
    if sign_type != "RSA2" {
        return Err(Failure::invalid("isv.invalid-signature-type", "sign_type must be RSA2"));
    }
    let key =
        parse_public_key(&pem).map_err(|_| Failure::invalid("isv.invalid-app-id", "the registered key is unusable"))?;
    if !keys::verify(&key, &sign_content(params, &["sign"]), signature) {
        return Err(Failure::invalid("isv.invalid-signature", "the signature does not verify"));
    }
    let sent_at = parse_timestamp(timestamp)
        .ok_or_else(|| Failure::invalid("isv.invalid-timestamp", "timestamp must be yyyy-MM-dd HH:mm:ss"))?;
    if !state.clock.is_simulated() && sent_at.abs_diff(state.clock.now().nanos()) > TIMESTAMP_SKEW_NANOS {
        return Err(Failure::invalid(
            "isv.invalid-timestamp",
            "timestamp is more than 15 minutes from the server's time",
        ));
    }
    Ok(merchant)
}

/// A request's `biz_content` (a JSON object) and its `notify_url`, checked
/// as a destination.
async fn biz_and_notify_url(
    state: &AppState,
    params: &BTreeMap<String, String>,
) -> Result<(Map<String, Value>, Option<String>), Failure> {
    let biz_text =
        params.get("biz_content").filter(|text| !text.is_empty()).ok_or_else(|| Failure::missing("biz_content"))?;
    let Ok(Value::Object(biz)) = serde_json::from_str::<Value>(biz_text) else {
        return Err(Failure::invalid("isv.invalid-parameter", "biz_content must be a JSON object"));
    };
    let notify_url = params.get("notify_url").filter(|url| !url.is_empty()).cloned();
    if let Some(url) = &notify_url {
        crate::routes::check_destination(state, url, "notify_url")
            .await
            .map_err(|error| Failure::invalid("isv.invalid-parameter", error.message))?;
    }
    Ok((biz, notify_url))
}

/// Runs a verified request's method.
async fn dispatch(
    state: &Arc<AppState>,
    merchant: PartyNumber,
    params: &BTreeMap<String, String>,
    method: &str,
) -> Answer {
    let (biz, notify_url) = biz_and_notify_url(state, params).await?;
    let biz = Biz(&biz);
    match method {
        "alipay.trade.pay" => trade_pay(state, merchant, &biz, notify_url).await,
        "alipay.trade.precreate" => {
            trade_create(state, merchant, &biz, None, notify_url).await.map(|(trade, mut fields)| {
                fields.insert(
                    "qr_code".to_string(),
                    json!(crate::cashier::qr_url(state, trade.number).unwrap_or_default()),
                );
                // Beyond Alipay's answer: the trade's id, for an app that pays it by REST.
                fields.insert("trade_no".to_string(), json!(state.ids.format(IdKind::Trade, trade.number)));
                fields
            })
        }
        "alipay.trade.create" => {
            let buyer = biz.required("buyer_id")?;
            let buyer =
                state.ids.parse(IdKind::User, &buyer).map(PartyNumber::new).ok_or_else(|| {
                    Failure::invalid("isv.invalid-parameter", "buyer_id must be a zhifu user id (usr_…)")
                })?;
            trade_create(state, merchant, &biz, Some(buyer), notify_url).await.map(|(trade, mut fields)| {
                fields.insert("trade_no".to_string(), json!(state.ids.format(IdKind::Trade, trade.number)));
                fields
            })
        }
        "alipay.trade.query" => {
            let trade = find_trade(state, merchant, &biz)?;
            Ok(trade_fields(&state.ids, &trade))
        }
        "alipay.trade.refund" => trade_refund(state, merchant, &biz).await,
        "alipay.trade.fastpay.refund.query" => refund_query(state, merchant, &biz),
        "alipay.trade.close" => {
            let trade = find_trade(state, merchant, &biz)?;
            match trade.status {
                TradeStatus::WaitBuyerPay => {}
                TradeStatus::TradeClosed => {
                    return Err(Failure::business("ACQ.TRADE_HAS_CLOSE", "the trade is closed"));
                }
                _ => return Err(Failure::business("ACQ.TRADE_STATUS_ERROR", "only an unpaid trade can be closed")),
            }
            let outcome = submit(state, Action::CloseTrade { trade: trade.number, merchant }).await?;
            let closed = updated_trade(outcome)?;
            Ok(ids(&state.ids, &closed))
        }
        "alipay.trade.cancel" => trade_cancel(state, merchant, &biz).await,
        "alipay.trade.royalty.relation.bind" => royalty::bind(state, merchant, &biz, true).await,
        "alipay.trade.royalty.relation.unbind" => royalty::bind(state, merchant, &biz, false).await,
        "alipay.trade.royalty.relation.batchquery" => royalty::batch_query(state, merchant, &biz),
        "alipay.trade.order.settle" => royalty::settle(state, merchant, &biz).await,
        "alipay.trade.order.settle.query" => royalty::settle_query(state, merchant, &biz),
        "alipay.data.dataservice.bill.downloadurl.query" => bill_download_url(state, merchant, &biz),
        "alipay.fund.auth.order.freeze" => preauth::freeze(state, merchant, &biz).await,
        "alipay.fund.auth.order.unfreeze" => preauth::unfreeze(state, merchant, &biz).await,
        "alipay.fund.auth.operation.detail.query" => preauth::detail_query(state, merchant, &biz),
        _ => transfer(state, merchant, &biz).await,
    }
}

/// `alipay.data.dataservice.bill.downloadurl.query`: a URL, valid 30
/// seconds, of a bill as Alipay lays them out (`alipay_bill`), for a
/// business day (`yyyy-MM-dd`) or month (`yyyy-MM`) that has ended.
fn bill_download_url(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let bill_type = biz.required("bill_type")?;
    let kind = crate::alipay_bill::BillKind::of(&bill_type)
        .ok_or_else(|| Failure::invalid("isv.invalid-parameter", "bill_type must be trade or signcustomer"))?;
    let bill_date = biz.required("bill_date")?;
    let (date, month) =
        if bill_date.len() == 7 { (None, Some(bill_date.as_str())) } else { (Some(bill_date.as_str()), None) };
    let period = crate::routes::finance::period_named(date, month)
        .map_err(|_| Failure::invalid("isv.invalid-parameter", "bill_date must be yyyy-MM-dd or yyyy-MM"))?;
    if period.end > state.clock.now().nanos() {
        return Err(Failure::business(
            "isp.bill_not_exist",
            "bills are made for days and months that have ended (CST)",
        ));
    }
    let url = crate::alipay_bill::download_url(state, merchant, kind, period)
        .map_err(|error| Failure::unavailable(error.message))?;
    let mut fields = Map::new();
    fields.insert("bill_download_url".to_string(), json!(url));
    Ok(fields)
}

/// For the fuzzer in `fuzz/` (cargo fuzz): a request's parameters as the
/// gateway reads them before any state is touched — the query and a form
/// body, the text the signature covers, the timestamp, `biz_content` and
/// its amounts. Any bytes give an answer or a refusal, never a panic.
#[doc(hidden)]
pub fn read_parameters_for_fuzzing(query: &str, body: &[u8]) -> Option<(String, Option<u64>, Vec<u64>)> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-www-form-urlencoded"));
    let params = collect_params(Some(query), &headers, body).ok()?;
    let content = params::sign_content(&params, &["sign", "sign_type"]);
    let timestamp = params.get("timestamp").and_then(|text| parse_timestamp(text));
    let biz = params.get("biz_content").and_then(|text| serde_json::from_str::<Value>(text).ok());
    let amounts = match &biz {
        Some(Value::Object(fields)) => ["total_amount", "refund_amount", "amount"]
            .iter()
            .filter_map(|name| Biz(fields).amount(name).ok().map(Fen::get))
            .collect(),
        _ => Vec::new(),
    };
    Some((content, timestamp, amounts))
}

/// `yyyy-MM-dd HH:mm:ss` in China Standard Time, to nanoseconds since the epoch.
fn parse_timestamp(text: &str) -> Option<u64> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let moment = time::PrimitiveDateTime::parse(text, &format).ok()?;
    let offset = time::UtcOffset::from_whole_seconds(CST_OFFSET_SECONDS as i32).ok()?;
    u64::try_from(moment.assume_offset(offset).unix_timestamp_nanos()).ok()
}

/// `yyyy-MM-dd HH:mm:ss` in China Standard Time.
/// A time (nanoseconds since the epoch) as the gateway's `timestamp`: CST, `yyyy-MM-dd HH:mm:ss`.
pub fn format_cst(nanos: u64) -> String {
    format_timestamp(Timestamp::from_nanos(nanos))
}

pub(crate) fn format_timestamp(moment: Timestamp) -> String {
    let nanos = moment.nanos();
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let seconds = (nanos / NANOS_PER_SECOND) as i64 + CST_OFFSET_SECONDS;
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|moment| moment.format(&format).ok())
        .unwrap_or_default()
}

/// The fields of `biz_content`: strings, as the SDKs send them.
pub(super) struct Biz<'a>(&'a Map<String, Value>);

impl Biz<'_> {
    /// A list field (`receiver_list`, `royalty_parameters`): its objects.
    fn objects(&self, name: &str) -> Result<Vec<Biz<'_>>, Failure> {
        match self.0.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(fields) => Ok(Biz(fields)),
                    _ => Err(Failure::invalid("isv.invalid-parameter", format!("{name} must be a list of objects"))),
                })
                .collect(),
            None | Some(Value::Null) => Err(Failure::missing(name)),
            Some(_) => Err(Failure::invalid("isv.invalid-parameter", format!("{name} must be a list"))),
        }
    }

    fn optional(&self, name: &str) -> Result<Option<String>, Failure> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            // Some integrations send plain numbers for amounts.
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(Failure::invalid("isv.invalid-parameter", format!("{name} must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<String, Failure> {
        self.optional(name)?.ok_or_else(|| Failure::missing(name))
    }

    fn amount(&self, name: &str) -> Result<Fen, Failure> {
        let text = self.required(name)?;
        yuan_to_fen(&text).map(Fen::new).ok_or_else(|| {
            Failure::invalid("isv.invalid-parameter", format!("{name} must be yuan with at most two decimals, above 0"))
        })
    }
}

async fn submit(state: &Arc<AppState>, action: Action) -> Result<Outcome, Failure> {
    let outcome = state.submit(None, action).await.map_err(|error| Failure::unavailable(error.message))?;
    match outcome {
        Outcome::Rejected(rejection) => Err(Failure::from_rejection(&rejection)),
        Outcome::IdempotencyMismatch => {
            Err(Failure::business("ACQ.DISCORDANT_REPEAT_REQUEST", "the same request id came with another request"))
        }
        other => Ok(other),
    }
}

fn updated_trade(outcome: Outcome) -> Result<Trade, Failure> {
    match outcome {
        Outcome::TradeUpdated(trade) => Ok(std::sync::Arc::unwrap_or_clone(trade)),
        _ => Err(Failure::unavailable("unexpected answer from the platform")),
    }
}

fn status_name(trade: &Trade) -> &'static str {
    trade.status.name()
}

fn ids(public: &PublicIds, trade: &Trade) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("trade_no".to_string(), json!(public.format(IdKind::Trade, trade.number)));
    fields.insert("out_trade_no".to_string(), json!(trade.out_trade_no));
    fields
}

fn trade_fields(public: &PublicIds, trade: &Trade) -> Map<String, Value> {
    let mut fields = ids(public, trade);
    fields.insert("trade_status".to_string(), json!(status_name(trade)));
    fields.insert("total_amount".to_string(), json!(fen_to_yuan(trade.amount.get())));
    if let Some(paid_at) = trade.paid_at {
        fields.insert("buyer_pay_amount".to_string(), json!(fen_to_yuan(trade.paid_by_buyer().get())));
        fields.insert("receipt_amount".to_string(), json!(fen_to_yuan(trade.amount.get())));
        fields.insert("send_pay_date".to_string(), json!(format_timestamp(paid_at)));
    }
    if let Some(buyer) = trade.payer.or(trade.buyer) {
        fields.insert("buyer_user_id".to_string(), json!(public.format(IdKind::User, buyer)));
    }
    fields
}

/// A checkout method (`page.pay`, `wap.pay`, `app.pay`): the trade made or
/// found again by `out_trade_no`, and the buyer's browser sent to the
/// cashier (`303`); a failure is an HTML page with Alipay's sub-code (4xx).
async fn checkout(
    state: &Arc<AppState>,
    verified: Result<(PartyNumber, BTreeMap<String, String>), Failure>,
    method: &str,
) -> Response {
    let made = match verified {
        Ok((merchant, params)) => checkout_trade(state, merchant, &params, method).await,
        Err(failure) => Err(failure),
    };
    match made {
        Ok(location) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(failure) => {
            let status = if failure.sub_code.starts_with("isp.") {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_REQUEST
            };
            let body = format!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Payment request refused</title>\
                 <h1>Payment request refused</h1><p>{} ({})</p><p>{}</p></html>",
                escape_html(failure.msg),
                escape_html(&failure.sub_code),
                escape_html(&failure.sub_msg)
            );
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            response
        }
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn checkout_trade(
    state: &Arc<AppState>,
    merchant: PartyNumber,
    params: &BTreeMap<String, String>,
    method: &str,
) -> Result<String, Failure> {
    let (biz, notify_url) = biz_and_notify_url(state, params).await?;
    let biz = Biz(&biz);
    let return_url = params.get("return_url").filter(|url| !url.is_empty()).cloned();
    if return_url.as_ref().is_some_and(|url| !platform::text::is_web_url(url, 2_048)) {
        return Err(Failure::invalid("isv.invalid-parameter", "return_url must be an http or https URL"));
    }
    let quit_url = biz.optional("quit_url")?;
    if quit_url.as_ref().is_some_and(|url| !platform::text::is_web_url(url, 2_048)) {
        return Err(Failure::invalid("isv.invalid-parameter", "quit_url must be an http or https URL"));
    }
    let (trade, _) = trade_create(state, merchant, &biz, None, notify_url).await?;
    let checkout =
        crate::cashier::Checkout { trade: trade.number.get(), method: method.to_string(), return_url, quit_url };
    let token = crate::cashier::token(state, &checkout)
        .map_err(|_| Failure::invalid("isp.unknow-error", "the checkout could not be made"))?;
    let phone = if method == "alipay.trade.page.pay" { "" } else { "&phone=1" };
    Ok(format!("/cashier?t={token}{phone}"))
}

/// When an unpaid trade closes, in minutes from `now`, within a trade's
/// bounds: `time_expire` (`yyyy-MM-dd HH:mm:ss`, CST), else
/// `timeout_express` (`90m`, `2h`, `1d`).
fn expiry_minutes(biz: &Biz<'_>, now: Timestamp) -> Result<Option<u32>, Failure> {
    if let Some(text) = biz.optional("time_expire")? {
        let at = parse_timestamp(&text)
            .ok_or_else(|| Failure::invalid("isv.invalid-parameter", "time_expire must be yyyy-MM-dd HH:mm:ss"))?;
        let left = at.saturating_sub(now.nanos());
        if left == 0 {
            return Err(Failure::invalid("isv.invalid-parameter", "time_expire has passed"));
        }
        let minutes = left.div_ceil(60 * NANOS_PER_SECOND);
        return Ok(Some(u32::try_from(minutes).unwrap_or(u32::MAX).clamp(1, platform::trades::EXPIRE_MINUTES_MAX)));
    }
    let Some(text) = biz.optional("timeout_express")? else { return Ok(None) };
    let refused = || Failure::invalid("isv.invalid-parameter", "timeout_express must be like 90m, 2h or 1d");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let number: u32 = number.parse().map_err(|_| refused())?;
    let minutes = match unit {
        "m" => number,
        "h" => number.saturating_mul(60),
        "d" => number.saturating_mul(1_440),
        _ => return Err(refused()),
    };
    Ok(Some(minutes.clamp(1, platform::trades::EXPIRE_MINUTES_MAX)))
}

fn new_trade(
    merchant: PartyNumber,
    biz: &Biz<'_>,
    buyer: Option<PartyNumber>,
    notify_url: Option<String>,
    now: Timestamp,
) -> Result<NewTrade, Failure> {
    let out_trade_no = biz.required("out_trade_no")?;
    let amount = biz.amount("total_amount")?;
    let subject = biz.required("subject")?;
    let expire_minutes = expiry_minutes(biz, now)?;
    let passback_params = biz.optional("passback_params")?.filter(|text| !text.is_empty());
    Ok(NewTrade {
        merchant,
        out_trade_no,
        amount,
        subject,
        mode: TradeMode::Instant,
        buyer,
        auto_confirm_days: None,
        expire_minutes,
        campaign: None,
        notify_url,
        passback_params,
    })
}

async fn trade_create(
    state: &Arc<AppState>,
    merchant: PartyNumber,
    biz: &Biz<'_>,
    buyer: Option<PartyNumber>,
    notify_url: Option<String>,
) -> Result<(Trade, Map<String, Value>), Failure> {
    let new = new_trade(merchant, biz, buyer, notify_url, state.clock.now())?;
    let trade = updated_trade(submit(state, Action::CreateTrade(new)).await?)?;
    let mut fields = Map::new();
    fields.insert("out_trade_no".to_string(), json!(trade.out_trade_no));
    Ok((trade, fields))
}

async fn trade_pay(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>, notify_url: Option<String>) -> Answer {
    if biz.optional("auth_no")?.is_some() {
        return preauth::trade_pay(state, merchant, biz, notify_url).await;
    }
    let scene = biz.required("scene")?;
    if scene != "bar_code" {
        return Err(Failure::invalid("isv.invalid-parameter", "scene must be bar_code"));
    }
    let code = biz.required("auth_code")?;
    let new = new_trade(merchant, biz, None, notify_url, state.clock.now())?;
    let trade = updated_trade(submit(state, Action::PayWithCode { trade: new, code }).await?)?;
    if trade.paid_at.is_none() {
        return Err(Failure::business("ACQ.TRADE_STATUS_ERROR", "the trade was not paid"));
    }
    let mut fields = trade_fields(&state.ids, &trade);
    fields.remove("trade_status");
    fields.insert("gmt_payment".to_string(), json!(trade.paid_at.map(format_timestamp)));
    Ok(fields)
}

/// The trade named by `trade_no` or `out_trade_no`, if it is this merchant's.
fn find_trade(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Result<Trade, Failure> {
    let by_number = biz.optional("trade_no")?;
    let by_reference = biz.optional("out_trade_no")?;
    let found = match (by_number, by_reference) {
        (Some(trade_no), _) => {
            let number = state
                .ids
                .parse(IdKind::Trade, &trade_no)
                .map(TradeNumber::new)
                .ok_or_else(|| Failure::business("ACQ.TRADE_NOT_EXIST", "no such trade"))?;
            state.store.read_with_archive(|p, archive| p.trade(archive, number))
        }
        (None, Some(out_trade_no)) => {
            state.store.read_with_archive(|p, archive| p.trade_by_out_trade_no(archive, merchant, &out_trade_no))
        }
        (None, None) => return Err(Failure::missing("out_trade_no")),
    };
    let found = found.map_err(|error| Failure::unavailable(format!("cannot read the trade: {error}")))?;
    found
        .filter(|trade| trade.merchant == merchant)
        .ok_or_else(|| Failure::business("ACQ.TRADE_NOT_EXIST", "no such trade"))
}

async fn trade_refund(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let trade = find_trade(state, merchant, biz)?;
    let amount = biz.amount("refund_amount")?;
    // Without out_request_no, Alipay takes the trade's own reference.
    let out_request_no = biz.optional("out_request_no")?.unwrap_or_else(|| trade.out_trade_no.clone());
    let repeated = trade.refunds.iter().any(|refund| refund.out_request_no == out_request_no);
    let action = Action::RefundTrade {
        trade: trade.number,
        merchant,
        out_request_no,
        amount,
        reason: biz.optional("refund_reason")?,
    };
    let refunded = match submit(state, action).await {
        // After settlement the refund comes from the merchant's balance.
        Err(failure) if failure.sub_code == "ACQ.BUYER_BALANCE_NOT_ENOUGH" => {
            return Err(Failure::business(
                "ACQ.SELLER_BALANCE_NOT_ENOUGH",
                "the merchant's balance does not cover the refund",
            ));
        }
        other => other?,
    };
    let (updated, refund) = match refunded {
        Outcome::RefundCreated { trade, refund } => (std::sync::Arc::unwrap_or_clone(trade), refund),
        _ => return Err(Failure::unavailable("unexpected answer from the platform")),
    };
    let mut fields = ids(&state.ids, &updated);
    fields.insert("fund_change".to_string(), json!(if repeated { "N" } else { "Y" }));
    fields.insert("refund_fee".to_string(), json!(fen_to_yuan(updated.refunded.get())));
    fields.insert("gmt_refund_pay".to_string(), json!(format_timestamp(refund.created_at)));
    if let Some(buyer) = updated.payer {
        fields.insert("buyer_user_id".to_string(), json!(state.ids.format(IdKind::User, buyer)));
    }
    Ok(fields)
}

fn refund_query(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let trade = find_trade(state, merchant, biz)?;
    let out_request_no = biz.required("out_request_no")?;
    let mut fields = ids(&state.ids, &trade);
    // As Alipay: an unknown refund is a success with no refund in it.
    if let Some(refund) = trade.refunds.iter().find(|refund| refund.out_request_no == out_request_no) {
        fields.insert("out_request_no".to_string(), json!(refund.out_request_no));
        fields.insert("refund_amount".to_string(), json!(fen_to_yuan(refund.amount.get())));
        fields.insert("total_amount".to_string(), json!(fen_to_yuan(trade.amount.get())));
        fields.insert("refund_status".to_string(), json!("REFUND_SUCCESS"));
    }
    Ok(fields)
}

/// A refund after settlement comes from the merchant's balance: when that
/// is short, it is the seller's balance Alipay names.
fn seller_short(failure: Failure) -> Failure {
    if failure.sub_code == "ACQ.BUYER_BALANCE_NOT_ENOUGH" {
        Failure::business("ACQ.SELLER_BALANCE_NOT_ENOUGH", "the merchant's balance does not cover the refund")
    } else {
        failure
    }
}

/// Cancels a till payment: closes it if unpaid, refunds it in full if paid.
async fn trade_cancel(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let trade = find_trade(state, merchant, biz)?;
    let action = match trade.status {
        TradeStatus::WaitBuyerPay => {
            submit(state, Action::CloseTrade { trade: trade.number, merchant }).await?;
            "close"
        }
        // Fully refunded: a repeat of a cancel that refunded it.
        TradeStatus::TradeClosed if trade.paid_at.is_some() => "refund",
        TradeStatus::TradeClosed => "close",
        _ => {
            let refund = Action::RefundTrade {
                trade: trade.number,
                merchant,
                out_request_no: format!("cancel-{}", trade.number),
                amount: trade.refundable(),
                reason: Some("cancelled".to_string()),
            };
            if !trade.refundable().is_zero() {
                submit(state, refund).await.map_err(seller_short)?;
            }
            "refund"
        }
    };
    let mut fields = ids(&state.ids, &trade);
    fields.insert("action".to_string(), json!(action));
    fields.insert("retry_flag".to_string(), json!("N"));
    Ok(fields)
}

/// `alipay.fund.trans.uni.transfer`: from the merchant's balance to a user's.
async fn transfer(state: &Arc<AppState>, merchant: PartyNumber, biz: &Biz<'_>) -> Answer {
    let out_biz_no = biz.required("out_biz_no")?;
    let amount = biz.amount("trans_amount")?;
    let payee = match biz.0.get("payee_info") {
        Some(Value::Object(payee)) => payee,
        Some(_) => return Err(Failure::invalid("isv.invalid-parameter", "payee_info must be an object")),
        None => return Err(Failure::missing("payee_info")),
    };
    let identity = Biz(payee).required("identity")?;
    let to = state
        .ids
        .parse(IdKind::User, &identity)
        .map(PartyNumber::new)
        .filter(|&number| state.store.read(|p| p.party(number).is_some_and(|party| party.kind == PartyKind::User)))
        .ok_or_else(|| Failure::business("PAYEE_NOT_EXIST", "identity must be a zhifu user id (usr_…)"))?;
    // out_biz_no makes the transfer idempotent: the platform remembers it
    // with the request, as for an Idempotency-Key.
    let request = format!("{out_biz_no}\0{amount}\0{to}");
    let tag = platform::IdempotencyTag {
        caller: merchant,
        key: format!("alipay.fund.trans:{out_biz_no}"),
        request_hash: <sha2::Sha256 as sha2::Digest>::digest(request.as_bytes()).into(),
    };
    let outcome = state
        .submit(Some(tag), Action::Transfer { from: merchant, to, amount, memo: biz.optional("remark")? })
        .await
        .map_err(|error| Failure::unavailable(error.message))?;
    let (number, created) = match outcome {
        Outcome::Transferred { number, .. } => (number, state.clock.now()),
        Outcome::Rejected(Rejection::InsufficientFunds) => {
            return Err(Failure::business("PAYER_BALANCE_NOT_ENOUGH", "the merchant's balance does not cover this"));
        }
        Outcome::Rejected(rejection) => return Err(Failure::from_rejection(&rejection)),
        Outcome::IdempotencyMismatch => {
            return Err(Failure::business("ACQ.DISCORDANT_REPEAT_REQUEST", "out_biz_no was used for another transfer"));
        }
        _ => return Err(Failure::unavailable("unexpected answer from the platform")),
    };
    let mut fields = Map::new();
    fields.insert("out_biz_no".to_string(), json!(out_biz_no));
    fields.insert("order_id".to_string(), json!(state.ids.format(IdKind::Transfer, number)));
    fields.insert("status".to_string(), json!("SUCCESS"));
    fields.insert("trans_date".to_string(), json!(format_timestamp(created)));
    Ok(fields)
}

/// The form parameters of an Alipay-style notification of `trade` for an
/// event of `kind`, signed (over the sorted parameters but `sign` and
/// `sign_type`) with the platform's key.
pub fn notification(
    key: &SigningKeyPair,
    public: &PublicIds,
    notify_id: EventNumber,
    kind: &str,
    trade: &Trade,
    event_at: Timestamp,
    now: Timestamp,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut params = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        params.insert(name.to_string(), value);
    };
    set("notify_time", format_timestamp(now));
    set("notify_type", "trade_status_sync".to_string());
    set("notify_id", public.format(IdKind::Notification, notify_id));
    set("app_id", app_id(trade.merchant));
    set("charset", "utf-8".to_string());
    set("version", "1.0".to_string());
    set("sign_type", "RSA2".to_string());
    set("trade_no", public.format(IdKind::Trade, trade.number));
    set("out_trade_no", trade.out_trade_no.clone());
    set("trade_status", trade.status.name().to_string());
    set("total_amount", fen_to_yuan(trade.amount.get()));
    set("subject", trade.subject.clone());
    set("gmt_create", format_timestamp(trade.created_at));
    if let Some(paid_at) = trade.paid_at {
        set("gmt_payment", format_timestamp(paid_at));
        set("receipt_amount", fen_to_yuan(trade.amount.get()));
        set("buyer_pay_amount", fen_to_yuan(trade.paid_by_buyer().get()));
    }
    if let Some(buyer) = trade.payer {
        set("buyer_id", public.format(IdKind::User, buyer));
    }
    if !trade.refunded.is_zero() {
        set("refund_fee", fen_to_yuan(trade.refunded.get()));
        if let Some(refund) = trade.refunds.last() {
            set("gmt_refund", format_timestamp(refund.created_at));
            set("out_biz_no", refund.out_request_no.clone());
        }
    }
    if let Some(passback) = &trade.passback_params {
        set("passback_params", passback.clone());
    }
    if kind == "trade.closed" || trade.status == TradeStatus::TradeClosed {
        set("gmt_close", format_timestamp(event_at));
    }
    let signature = key.sign(&sign_content(&params, &["sign", "sign_type"]))?;
    params.insert("sign".to_string(), signature);
    Ok(params.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_sixteen_digits_and_read_back() {
        assert_eq!(app_id(PartyNumber::new(42)), "2013000000000042");
        assert_eq!(merchant_of_app_id("2013000000000042"), Some(PartyNumber::new(42)));
        for bad in ["", "2013", "201300000000004x", "2014000000000042", "20130000000000042", "2013000000000000"] {
            assert_eq!(merchant_of_app_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_are_china_standard_time() {
        let nanos = parse_timestamp("2013-11-11 00:00:55").unwrap_or(0);
        assert_eq!(nanos, (1_384_099_200 + 55) * NANOS_PER_SECOND);
        assert_eq!(format_timestamp(Timestamp::from_nanos(nanos)), "2013-11-11 00:00:55");
        assert_eq!(parse_timestamp("2013-11-11T00:00:55"), None);
        assert_eq!(parse_timestamp("2013-13-11 00:00:55"), None);
    }
}
