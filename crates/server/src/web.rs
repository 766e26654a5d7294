//! The web stack the cashier, the console and the portal share: cookies,
//! CSRF tokens, the headers every page carries, and — for the console and
//! the portal — calls into the REST API in-process.
//!
//! The console and the portal are browser front ends of the API, not a
//! second implementation of it: a signed-in page holds a session token
//! (staff `zst_…`, a party's `zps_…`) in an `HttpOnly` cookie and makes
//! the same request an API client would, as that caller. Roles, ownership,
//! idempotency and the audit log are therefore the API's own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use crate::app::AppState;
use crate::error::ApiError;

pub const VISIT_COOKIE: &str = "zhifu_visit";
/// A cookie value longer than this is not ours.
const COOKIE_VALUE_BYTES_MAX: usize = 256;
/// An API answer read by a page is at most this long.
const ANSWER_BYTES_MAX: usize = 4 << 20;

/// A cookie zhifu sets: `HttpOnly; SameSite=Lax; Path=/`, and `Secure`
/// when the public URL is https.
pub fn cookie(state: &AppState, name: &str, value: &str, max_age_seconds: Option<u64>) -> String {
    let age = max_age_seconds.map_or(String::new(), |seconds| format!("; Max-Age={seconds}"));
    let secure = if state.public_url.starts_with("https://") { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}{secure}")
}

pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty() && value.len() <= COOKIE_VALUE_BYTES_MAX)
}

/// The browser's visit id (a random cookie), and whether it is new. Forms
/// shown before sign-in carry a CSRF token tied to it.
pub fn visit_of(headers: &HeaderMap) -> Result<(String, bool), ApiError> {
    if let Some(visit) = cookie_value(headers, VISIT_COOKIE).filter(|v| v.len() == 32) {
        return Ok((visit.to_string(), false));
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness for a visit"))?;
    Ok((hex::encode(bytes), true))
}

/// The CSRF token of forms about `subject` for a browser whose secret is
/// `holder` (its visit id, or once signed in its session token): a page of
/// another site can read neither, so it cannot forge the token.
pub fn csrf_token(state: &AppState, holder: &str, subject: &str) -> Result<String, ApiError> {
    Ok(hex::encode(&state.derive(b"web-csrf", holder.as_bytes(), subject.as_bytes())?[..16]))
}

pub fn csrf_holds(state: &AppState, holder: &str, subject: &str, csrf: &str) -> bool {
    csrf_token(state, holder, subject).is_ok_and(|expected| bool::from(expected.as_bytes().ct_eq(csrf.as_bytes())))
}

/// Chinese when the browser asks for it first.
/// `value` as a token a link can carry, signed for `purpose`:
/// base64url(JSON) `.` hex(MAC).
pub fn signed_token(state: &AppState, purpose: &[u8], value: &impl serde::Serialize) -> Result<String, ApiError> {
    use base64::Engine;
    let json = serde_json::to_vec(value).map_err(|_| ApiError::internal("a token does not encode"))?;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let mac = state.derive(purpose, body.as_bytes(), b"")?;
    Ok(format!("{body}.{}", hex::encode(&mac[..16])))
}

/// What a token of [`signed_token`] for `purpose` carries, if it is one
/// (at most `bytes_max` long) and its MAC holds.
pub fn read_signed_token<T: serde::de::DeserializeOwned>(
    state: &AppState,
    purpose: &[u8],
    token: &str,
    bytes_max: usize,
) -> Option<T> {
    use base64::Engine;
    if token.len() > bytes_max {
        return None;
    }
    let (body, mac) = token.split_once('.')?;
    let expected = state.derive(purpose, body.as_bytes(), b"").ok()?;
    let mac = hex::decode(mac).ok()?;
    if !bool::from(expected[..16].ct_eq(&mac)) {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?;
    serde_json::from_slice(&json).ok()
}

pub fn prefers_chinese(headers: &HeaderMap) -> bool {
    let accepted = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    accepted.split(',').next().unwrap_or("").trim().to_ascii_lowercase().starts_with("zh")
}

/// A page with the headers every page carries: no framing, a strict CSP
/// (forms post only here, and to `form_origin` if given), no caching.
pub fn page(status: StatusCode, html: String, form_origin: Option<&str>, cookies: &[String]) -> Response {
    let mut response = (status, html).into_response();
    let form_action = form_origin.map_or("'self'".to_string(), |origin| format!("'self' {origin}"));
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    add_cookies(headers, cookies);
    response
}

pub fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    add_cookies(headers, cookies);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn add_cookies(headers: &mut HeaderMap, cookies: &[String]) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

/// The REST API, called in-process by the console's and portal's pages.
#[derive(Clone)]
pub struct Api {
    router: Router,
}

/// What the API answered when it refused.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

/// One API request a page makes, as the holder of `token`.
pub struct Call<'a> {
    pub token: &'a str,
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// A form's one-time token: submitting the same form twice is one change.
    pub idempotency_key: Option<&'a str>,
    pub request_id: &'a str,
    pub peer: SocketAddr,
}

impl Api {
    pub fn new(router: Router) -> Api {
        Api { router }
    }

    pub async fn call(&self, call: Call<'_>) -> Result<Value, Refusal> {
        let response = self.send(call).await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), ANSWER_BYTES_MAX)
            .await
            .map_err(|_| internal_refusal("the answer is too long"))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let text = |name: &str| value["error"][name].as_str().unwrap_or_default().to_string();
        Err(Refusal { status, code: text("code"), message: text("message") })
    }

    /// The API's answer as it is (a download streams through to the browser).
    pub async fn send(&self, call: Call<'_>) -> Result<Response, Refusal> {
        let refused = internal_refusal;
        let body = match &call.body {
            Some(value) => Body::from(serde_json::to_vec(value).map_err(|_| refused("the request does not encode"))?),
            None => Body::empty(),
        };
        let mut request = Request::builder()
            .method(call.method)
            .uri(&call.path)
            .header(header::AUTHORIZATION, format!("Bearer {}", call.token))
            .header("x-request-id", call.request_id);
        if call.body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(key) = call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let mut request = request.body(body).map_err(|_| refused("the request does not form"))?;
        request.extensions_mut().insert(ConnectInfo(call.peer));
        let Ok(response) = self.router.clone().oneshot(request).await;
        Ok(response)
    }
}

fn internal_refusal(message: &str) -> Refusal {
    Refusal { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal".to_string(), message: message.to_string() }
}

/// What the console and portal pages need: the server's state and its API.
pub struct Web {
    pub state: Arc<AppState>,
    pub api: Api,
}

/// A random one-time token for a form (its idempotency key).
pub fn form_nonce() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness for a form"))?;
    Ok(hex::encode(bytes))
}
