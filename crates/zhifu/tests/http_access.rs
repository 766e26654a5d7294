//! Webhook endpoints, keys, staff and the audit log, black-box against a
//! real `zhifu serve` (API.md, "Webhook endpoints, keys and audit" and
//! "Staff"): what a merchant needs after an outage, a leak or an inspection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Received, Server, receiver_with};

const SIMULATED: [&str; 2] = ["--clock", "simulated"];
const WAIT: Duration = Duration::from_secs(10);

fn code(body: &Value) -> &str {
    Server::error_code(body)
}

fn receiver() -> (String, Received) {
    receiver_with(Arc::new(AtomicUsize::new(0)), "200 OK")
}

/// The secrets (of those given) whose `v1=` signature the header carries.
fn signed_by<'a>(secrets: &[&'a str], header: &str, body: &str) -> Vec<&'a str> {
    use hmac::{Hmac, Mac};
    let mut parts = header.split(',');
    let t = parts.next().unwrap().strip_prefix("t=").unwrap();
    let signatures: Vec<&str> = parts.map(|part| part.strip_prefix("v1=").unwrap()).collect();
    secrets
        .iter()
        .copied()
        .filter(|secret| {
            signatures.iter().any(|signature| {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(format!("{t}.{body}").as_bytes());
                mac.verify_slice(&hex::decode(signature).unwrap()).is_ok()
            })
        })
        .collect()
}

fn event_type(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["type"].as_str().unwrap().to_string()
}

/// Everything a receiver gets until it has been quiet for a second and a half.
fn drain(received: &Received) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let Ok(message) = received.recv_timeout(Duration::from_millis(1_500)) {
        got.push(message);
    }
    got
}

/// The `expected` messages a receiver gets (each waited for as long as a
/// loaded machine may take), then any more until it is quiet.
fn receive(received: &Received, expected: usize) -> Vec<(String, String)> {
    let mut got: Vec<_> = (0..expected).map_while(|_| received.recv_timeout(WAIT).ok()).collect();
    got.extend(drain(received));
    got
}

fn endpoint(server: &Server, key: &str, url: &str, events: Value) -> (String, String) {
    let (status, body) = server.post("/v1/webhook-endpoints", Some(key), json!({ "url": url, "events": events }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().unwrap().to_string(), body["secret"].as_str().unwrap().to_string())
}

/// A paid instant trade of `merchant` (events: trade.paid, trade.succeeded).
fn paid_trade(server: &Server, merchant: &str, buyer: &str, out_trade_no: &str) -> String {
    let body = json!({ "out_trade_no": out_trade_no, "amount": 500, "subject": "tea", "mode": "instant" });
    let (status, trade) = server.post("/v1/trades", Some(merchant), body);
    assert_eq!(status, StatusCode::CREATED, "{trade}");
    let trade_no = trade["trade_no"].as_str().unwrap().to_string();
    let (status, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(buyer), json!({}));
    assert_eq!(status, StatusCode::OK, "{paid}");
    trade_no
}

#[test]
fn each_endpoint_gets_exactly_the_events_it_subscribes_to_signed_with_its_own_secret() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    let (paid_url, paid_received) = receiver();
    let (rest_url, rest_received) = receiver();
    let (_, paid_secret) = endpoint(&server, &shop, &paid_url, json!(["trade.paid"]));
    let (_, rest_secret) = endpoint(&server, &shop, &rest_url, json!(["trade.succeeded", "refund.succeeded"]));
    let trade_no = paid_trade(&server, &shop, &buyer, "f-1");
    let refund = json!({ "out_request_no": "r-1", "amount": 100 });
    let (status, body) = server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop), refund);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let paid = receive(&paid_received, 1);
    let rest = receive(&rest_received, 2);
    assert_eq!(paid.iter().map(|(_, body)| event_type(body)).collect::<Vec<_>>(), ["trade.paid"]);
    assert_eq!(
        rest.iter().map(|(_, body)| event_type(body)).collect::<Vec<_>>(),
        ["trade.succeeded", "refund.succeeded"],
        "in order per trade"
    );
    let secrets = [paid_secret.as_str(), rest_secret.as_str()];
    for (signature, body) in &paid {
        assert_eq!(signed_by(&secrets, signature, body), [paid_secret.as_str()]);
    }
    for (signature, body) in &rest {
        assert_eq!(signed_by(&secrets, signature, body), [rest_secret.as_str()]);
    }
    // Listed without their secrets; deleted ones get nothing more.
    let (_, list) = server.get("/v1/webhook-endpoints", Some(&shop));
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(list["data"][0].get("secret").is_none(), "{list}");
    let paid_id = list["data"][0]["id"].as_str().unwrap();
    let (status, _) = server.call(Method::DELETE, &format!("/v1/webhook-endpoints/{paid_id}"), Some(&shop), None);
    assert_eq!(status, StatusCode::OK);
    paid_trade(&server, &shop, &buyer, "f-2");
    assert!(drain(&paid_received).is_empty(), "a deleted endpoint gets nothing");
    assert_eq!(receive(&rest_received, 1).len(), 1, "trade.succeeded of f-2");
    // Another merchant cannot delete this one's endpoint.
    let (_, other) = server.merchant("other");
    let rest_id = list["data"][1]["id"].as_str().unwrap();
    let (status, _) = server.call(Method::DELETE, &format!("/v1/webhook-endpoints/{rest_id}"), Some(&other), None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.assert_balanced();
}

/// Advances the simulated clock once the last attempt has been recorded.
fn advance(server: &Server, seconds: u64) {
    let (status, body) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": seconds }));
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn after_a_day_down_the_undelivered_event_is_listed_resent_and_every_attempt_logged() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    // Down for every scheduled attempt (eight over about a day), then up.
    let down = Arc::new(AtomicUsize::new(8));
    let (url, received) = receiver_with(Arc::clone(&down), "200 OK");
    endpoint(&server, &shop, &url, json!(["trade.paid"]));
    paid_trade(&server, &shop, &buyer, "d-1");
    for (attempt, wait) in [0, 240, 600, 600, 3_600, 7_200, 21_600, 54_000].into_iter().enumerate() {
        if wait > 0 {
            advance(&server, wait);
        }
        let (_, body) = received.recv_timeout(WAIT).expect("a scheduled attempt");
        let event: Value = serde_json::from_str(&body).unwrap();
        server.wait_for_attempts(&shop, event["id"].as_str().unwrap(), attempt + 1);
    }
    advance(&server, 86_400);
    assert!(received.recv_timeout(Duration::from_secs(1)).is_err(), "the schedule has given up");
    let (status, undelivered) = server.get("/v1/events?delivered=false", Some(&shop));
    assert_eq!(status, StatusCode::OK, "{undelivered}");
    let events = undelivered["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{undelivered}");
    assert_eq!(events[0]["type"], "trade.paid");
    let event_id = events[0]["id"].as_str().unwrap().to_string();
    // Resent: delivered now, with the same id.
    let (status, resent) = server.post(&format!("/v1/events/{event_id}/resend"), Some(&shop), json!({}));
    assert_eq!((status, resent["deliveries"].as_u64()), (StatusCode::OK, Some(1)), "{resent}");
    let (_, body) = received.recv_timeout(WAIT).expect("the resend arrives");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], event_id.as_str());
    server.wait_for_attempts(&shop, &event_id, 9);
    let (_, undelivered) = server.get("/v1/events?delivered=false", Some(&shop));
    assert_eq!(undelivered["data"].as_array().unwrap().len(), 0, "{undelivered}");
    // The log: nine attempts, newest first, eight 500s then the 200.
    let (status, log) = server.get(&format!("/v1/events/{event_id}/deliveries"), Some(&shop));
    assert_eq!(status, StatusCode::OK, "{log}");
    let attempts = log["data"].as_array().unwrap();
    let codes: Vec<u64> = attempts.iter().map(|attempt| attempt["status_code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [200, 500, 500, 500, 500, 500, 500, 500, 500], "{log}");
    assert_eq!(attempts[0]["delivered"], true);
    assert_eq!(attempts[1]["error"], "the endpoint answered 500");
    let times: Vec<&str> = attempts.iter().map(|attempt| attempt["attempted_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] >= pair[1]), "newest first: {times:?}");
    // Another merchant sees neither the event nor its log.
    let (_, other) = server.merchant("other");
    let (status, _) = server.get(&format!("/v1/events/{event_id}/deliveries"), Some(&other));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.post(&format!("/v1/events/{event_id}/resend"), Some(&other), json!({}));
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn a_rolled_secret_signs_beside_the_new_one_until_it_expires() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    let (url, received) = receiver();
    let (id, old) = endpoint(&server, &shop, &url, json!(["trade.paid"]));
    let (status, rolled) = server.post(
        &format!("/v1/webhook-endpoints/{id}/roll-secret"),
        Some(&shop),
        json!({ "expires_in_seconds": 3600 }),
    );
    assert_eq!(status, StatusCode::OK, "{rolled}");
    let new = rolled["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let secrets = [new.as_str(), old.as_str()];
    paid_trade(&server, &shop, &buyer, "s-1");
    let (signature, body) = received.recv_timeout(WAIT).unwrap();
    assert_eq!(signed_by(&secrets, &signature, &body), [new.as_str(), old.as_str()], "both during the overlap");
    advance(&server, 3_600);
    paid_trade(&server, &shop, &buyer, "s-2");
    let (signature, body) = received.recv_timeout(WAIT).unwrap();
    assert_eq!(signed_by(&secrets, &signature, &body), [new.as_str()], "only the new one after it");
    let (status, body) = server.post(
        &format!("/v1/webhook-endpoints/{id}/roll-secret"),
        Some(&shop),
        json!({ "expires_in_seconds": 99_999_999 }),
    );
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{body}");
}

#[test]
fn keys_roll_with_an_overlap_restricted_keys_only_read_and_revoking_is_immediate() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (shop_id, first) = server.merchant("shop");
    let (status, rolled) = server.post("/v1/api-keys/roll", Some(&first), json!({ "expires_in_seconds": 600 }));
    assert_eq!(status, StatusCode::CREATED, "{rolled}");
    let second = rolled["api_key"].as_str().unwrap().to_string();
    assert_eq!(server.get("/v1/balance", Some(&first)).0, StatusCode::OK, "the old key works until it expires");
    assert_eq!(server.get("/v1/balance", Some(&second)).0, StatusCode::OK);
    advance(&server, 600);
    let (status, body) = server.get("/v1/balance", Some(&first));
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(server.get("/v1/balance", Some(&second)).0, StatusCode::OK);
    // A restricted key reads and never changes anything.
    let (status, restricted) = server.post("/v1/api-keys", Some(&second), json!({ "permissions": "read" }));
    assert_eq!((status, restricted["permissions"].as_str()), (StatusCode::CREATED, Some("read")), "{restricted}");
    let reader = restricted["api_key"].as_str().unwrap().to_string();
    assert_eq!(server.get("/v1/balance", Some(&reader)).0, StatusCode::OK);
    assert_eq!(server.get("/v1/trades", Some(&reader)).0, StatusCode::OK);
    let posts = [
        ("/v1/trades", json!({ "out_trade_no": "x", "amount": 1, "subject": "s", "mode": "instant" })),
        ("/v1/webhook-endpoints", json!({ "url": "http://127.0.0.1:9/", "events": ["*"] })),
        ("/v1/api-keys/roll", json!({})),
        ("/v1/api-keys", json!({ "permissions": "read" })),
        ("/v1/withdrawals", json!({ "amount": 1 })),
        ("/v1/loans", json!({ "amount": 100, "term_days": 30, "out_request_no": "l" })),
    ];
    for (path, body) in posts {
        let (status, answer) = server.post(path, Some(&reader), body);
        assert_eq!((status, code(&answer)), (StatusCode::FORBIDDEN, "forbidden"), "{path}: {answer}");
    }
    let (status, _) = server.call(Method::PUT, "/v1/merchants/me/app-public-key", Some(&reader), Some(json!({})));
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Revoked: every key stops at once; the one answered works.
    let (status, revoked) =
        server.post(&format!("/v1/admin/parties/{shop_id}/revoke-keys"), Some(ADMIN_KEY), json!({}));
    assert_eq!(status, StatusCode::OK, "{revoked}");
    for key in [&second, &reader] {
        assert_eq!(server.get("/v1/balance", Some(key)).0, StatusCode::UNAUTHORIZED);
    }
    let third = revoked["api_key"].as_str().unwrap();
    assert_eq!(server.get("/v1/balance", Some(third)).0, StatusCode::OK);
    // Rolling at once (0 seconds): the old key stops with the answer.
    let (_, rolled) = server.post("/v1/api-keys/roll", Some(third), json!({ "expires_in_seconds": 0 }));
    assert_eq!(server.get("/v1/balance", Some(third)).0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.get("/v1/balance", rolled["api_key"].as_str()).0, StatusCode::OK);
    // Restarted: the keys are what the log says.
    let server = server.crash_and_restart();
    assert_eq!(server.get("/v1/balance", rolled["api_key"].as_str()).0, StatusCode::OK);
    assert_eq!(server.get("/v1/balance", Some(&second)).0, StatusCode::UNAUTHORIZED);
}

#[test]
fn a_merchant_replaces_its_gateway_key() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("shop");
    let pem = rsa_public_key_pem();
    let (status, body) = server.call(
        Method::PUT,
        "/v1/merchants/me/app-public-key",
        Some(&shop),
        Some(json!({ "app_public_key": pem })),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["app_id"].as_str().is_some_and(|id| id.starts_with("2013")), "{body}");
    let (status, body) = server.call(
        Method::PUT,
        "/v1/merchants/me/app-public-key",
        Some(&shop),
        Some(json!({ "app_public_key": "not a key" })),
    );
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_key"), "{body}");
    let (_, audit) = server.get("/v1/admin/audit?limit=5", Some(ADMIN_KEY));
    assert_eq!(audit["data"][0]["action"], "app_public_key.set", "{audit}");
}

/// A fresh RSA 2048 public key, PEM (the gateway's format).
fn rsa_public_key_pem() -> String {
    let directory = tempfile::tempdir().unwrap();
    server::gateway::PlatformKey::in_directory(directory.path()).public_pem().unwrap()
}

/// Who calls, in the route table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    AdminKey,
    StaffAdmin,
    Support,
    Finance,
    Merchant,
    MerchantReadOnly,
    User,
}

const EVERYONE: [Who; 8] = [
    Who::Anonymous,
    Who::AdminKey,
    Who::StaffAdmin,
    Who::Support,
    Who::Finance,
    Who::Merchant,
    Who::MerchantReadOnly,
    Who::User,
];
const OPERATORS: &[Who] = &[Who::AdminKey, Who::StaffAdmin, Who::Support, Who::Finance];
const ADMINS: &[Who] = &[Who::AdminKey, Who::StaffAdmin];
const SUPPORT_OR_MERCHANT: &[Who] = &[Who::AdminKey, Who::StaffAdmin, Who::Support, Who::Merchant];
const FINANCE: &[Who] = &[Who::AdminKey, Who::StaffAdmin, Who::Finance];
const MERCHANT: &[Who] = &[Who::Merchant];
const OPERATORS_AND_MERCHANT: &[Who] =
    &[Who::AdminKey, Who::StaffAdmin, Who::Support, Who::Finance, Who::Merchant, Who::MerchantReadOnly];
const MERCHANT_READS: &[Who] = &[Who::Merchant, Who::MerchantReadOnly];
const USER: &[Who] = &[Who::User];
const PARTIES: &[Who] = &[Who::Merchant, Who::User];
const PARTIES_READ: &[Who] = &[Who::Merchant, Who::MerchantReadOnly, Who::User];
const SIGNED_IN: &[Who] =
    &[Who::AdminKey, Who::StaffAdmin, Who::Support, Who::Finance, Who::Merchant, Who::MerchantReadOnly, Who::User];

fn staff_token(server: &Server, login: &str, role: &str) -> String {
    let body = json!({ "login": login, "password": "a long passphrase", "role": role });
    let (status, created) = server.post("/v1/admin/staff", Some(ADMIN_KEY), body);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, session) =
        server.post("/v1/staff/sessions", None, json!({ "login": login, "password": "a long passphrase" }));
    assert_eq!(status, StatusCode::CREATED, "{session}");
    session["token"].as_str().unwrap().to_string()
}

/// Every route × every kind of caller (docs/security.md's table): 401
/// without credentials, 403 where the role may not, anything else where it may.
#[test]
fn every_route_answers_each_role_as_the_table_says() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (merchant_id, merchant) = server.merchant("shop");
    let (user_id, user) = server.user("buyer");
    let (victim_id, _) = server.user("victim");
    server.top_up(&user, 1_000_000);
    let (_, reader) = server.post("/v1/api-keys", Some(&merchant), json!({ "permissions": "read" }));
    let reader = reader["api_key"].as_str().unwrap().to_string();
    let tokens = [
        (Who::StaffAdmin, staff_token(&server, "ada", "admin")),
        (Who::Support, staff_token(&server, "sam", "support")),
        (Who::Finance, staff_token(&server, "fay", "finance")),
    ];
    let trade = json!({ "out_trade_no": "t-1", "amount": 100, "subject": "s", "mode": "escrow" });
    let (_, trade) = server.post("/v1/trades", Some(&merchant), trade);
    let trade = trade["trade_no"].as_str().unwrap().to_string();
    let key_of = |who: Who| -> Option<String> {
        match who {
            Who::Anonymous => None,
            Who::AdminKey => Some(ADMIN_KEY.to_string()),
            Who::Merchant => Some(merchant.clone()),
            Who::MerchantReadOnly => Some(reader.clone()),
            Who::User => Some(user.clone()),
            staff => tokens.iter().find(|(role, _)| *role == staff).map(|(_, token)| token.clone()),
        }
    };
    let zero_id = |prefix: &str| format!("{prefix}{}", "0".repeat(32));
    let campaign = json!({ "name": "c", "budget": 100, "discount": 1, "min_spend": 0, "per_user_limit": 1,
        "starts_at": "2013-11-11T00:00:00+08:00", "ends_at": "2013-11-12T00:00:00+08:00" });
    let table: Vec<(Method, String, Option<Value>, &[Who])> = vec![
        (Method::POST, "/v1/users".into(), Some(json!({ "name": "n" })), ADMINS),
        (Method::GET, format!("/v1/users/{user_id}"), None, OPERATORS),
        (Method::POST, "/v1/merchants".into(), Some(json!({ "name": "n" })), ADMINS),
        (Method::GET, format!("/v1/merchants/{merchant_id}"), None, OPERATORS),
        (Method::GET, "/v1/balance".into(), None, PARTIES_READ),
        (Method::GET, "/v1/statement".into(), None, PARTIES_READ),
        (Method::GET, "/v1/balance-transactions".into(), None, SIGNED_IN),
        (
            Method::GET,
            "/v1/bills?date=2013-11-10".into(),
            None,
            &[Who::AdminKey, Who::StaffAdmin, Who::Finance, Who::Merchant, Who::MerchantReadOnly],
        ),
        (Method::POST, "/v1/topups".into(), Some(json!({ "amount": 1, "bank": "ICBC" })), USER),
        (Method::POST, "/v1/withdrawals".into(), Some(json!({ "amount": 1 })), PARTIES),
        (Method::POST, "/v1/transfers".into(), Some(json!({ "to": merchant_id, "amount": 1 })), USER),
        (
            Method::POST,
            "/v1/trades".into(),
            Some(json!({ "out_trade_no": "t-2", "amount": 1, "subject": "s", "mode": "instant" })),
            MERCHANT,
        ),
        (Method::GET, "/v1/trades".into(), None, SIGNED_IN),
        (Method::POST, format!("/v1/trades/{}/pay", zero_id("trd_")), Some(json!({})), USER),
        (Method::POST, format!("/v1/trades/{trade}/ship"), Some(json!({})), MERCHANT),
        (Method::POST, format!("/v1/trades/{trade}/confirm"), Some(json!({})), USER),
        (Method::POST, format!("/v1/trades/{}/close", zero_id("trd_")), Some(json!({})), SUPPORT_OR_MERCHANT),
        (Method::POST, format!("/v1/trades/{trade}/close"), Some(json!({})), SUPPORT_OR_MERCHANT),
        (
            Method::POST,
            format!("/v1/trades/{trade}/refunds"),
            Some(json!({ "out_request_no": "r", "amount": 1 })),
            SUPPORT_OR_MERCHANT,
        ),
        (Method::GET, "/v1/events".into(), None, MERCHANT_READS),
        (
            Method::POST,
            format!("/v1/trades/{trade}/splits"),
            Some(json!({ "out_request_no": "s", "splits": [{ "to": user_id, "amount": 1 }] })),
            MERCHANT,
        ),
        (Method::POST, "/v1/royalty-relations".into(), Some(json!({ "receiver": user_id })), MERCHANT),
        (Method::GET, "/v1/royalty-relations".into(), None, MERCHANT_READS),
        (Method::DELETE, format!("/v1/royalty-relations/{victim_id}"), None, MERCHANT),
        (Method::POST, format!("/v1/trades/{trade}/disputes"), Some(json!({ "amount": 1, "reason": "r" })), USER),
        (Method::GET, "/v1/disputes".into(), None, SIGNED_IN),
        (
            Method::POST,
            "/v1/freezes".into(),
            Some(
                json!({ "payment_code": "280000000000000000", "out_order_no": "o", "out_request_no": "r", "amount": 1, "title": "t" }),
            ),
            MERCHANT,
        ),
        (Method::GET, format!("/v1/freezes/{}", zero_id("frz_")), None, SIGNED_IN),
        (Method::GET, "/v1/freezes".into(), None, OPERATORS_AND_MERCHANT),
        (Method::GET, format!("/v1/trades/{trade}/splits"), None, SIGNED_IN),
        (Method::GET, format!("/v1/trades/{trade}/transfers"), None, OPERATORS_AND_MERCHANT),
        (
            Method::POST,
            format!("/v1/freezes/{}/unfreeze", zero_id("frz_")),
            Some(json!({ "out_request_no": "r", "amount": 1 })),
            MERCHANT,
        ),
        (
            Method::POST,
            format!("/v1/freezes/{}/pay", zero_id("frz_")),
            Some(json!({ "out_trade_no": "p", "amount": 1, "subject": "s" })),
            MERCHANT,
        ),
        (Method::GET, format!("/v1/disputes/{}", zero_id("dsp_")), None, SIGNED_IN),
        (Method::POST, format!("/v1/disputes/{}/accept", zero_id("dsp_")), Some(json!({})), SUPPORT_OR_MERCHANT),
        (Method::POST, format!("/v1/disputes/{}/reject", zero_id("dsp_")), Some(json!({})), SUPPORT_OR_MERCHANT),
        (Method::POST, format!("/v1/disputes/{}/escalate", zero_id("dsp_")), Some(json!({})), USER),
        (
            Method::POST,
            format!("/v1/admin/disputes/{}/decide", zero_id("dsp_")),
            Some(json!({ "refund_amount": 0 })),
            &[Who::AdminKey, Who::StaffAdmin, Who::Support],
        ),
        (Method::GET, format!("/v1/events/{}/deliveries", zero_id("evt_")), None, OPERATORS_AND_MERCHANT),
        (Method::GET, format!("/v1/events/{}", zero_id("evt_")), None, OPERATORS_AND_MERCHANT),
        (Method::GET, format!("/v1/refunds/{}", zero_id("rfd_")), None, SIGNED_IN),
        (Method::GET, "/v1/takings".into(), None, OPERATORS_AND_MERCHANT),
        (Method::POST, format!("/v1/events/{}/resend", zero_id("evt_")), Some(json!({})), SUPPORT_OR_MERCHANT),
        (
            Method::POST,
            "/v1/webhook-endpoints".into(),
            Some(json!({ "url": "http://127.0.0.1:9/", "events": ["*"] })),
            MERCHANT,
        ),
        (Method::GET, "/v1/webhook-endpoints".into(), None, MERCHANT_READS),
        (Method::DELETE, format!("/v1/webhook-endpoints/{}", zero_id("we_")), None, MERCHANT),
        (Method::POST, format!("/v1/webhook-endpoints/{}/roll-secret", zero_id("we_")), Some(json!({})), MERCHANT),
        (Method::GET, "/v1/credit".into(), None, MERCHANT_READS),
        (
            Method::POST,
            "/v1/loans".into(),
            Some(json!({ "amount": 100, "term_days": 30, "out_request_no": "l" })),
            MERCHANT,
        ),
        (Method::GET, "/v1/admin/loans/portfolio".into(), None, OPERATORS),
        (Method::GET, "/v1/admin/loan-terms".into(), None, OPERATORS),
        (
            Method::PUT,
            "/v1/admin/loan-terms".into(),
            Some(
                json!({ "daily_rate_bps": 5, "penalty_daily_rate_bps": 5, "credit_multiple_percent": 200, "credit_cap": 100_000_000 }),
            ),
            ADMINS,
        ),
        (Method::GET, "/v1/fund".into(), None, USER),
        (Method::POST, "/v1/fund/subscriptions".into(), Some(json!({ "amount": 100 })), USER),
        (Method::POST, "/v1/fund/redemptions".into(), Some(json!({ "amount": 1 })), USER),
        (
            Method::POST,
            "/v1/admin/fund/yield".into(),
            Some(json!({ "date": "2013-11-10", "annual_rate_bps": 400 })),
            ADMINS,
        ),
        (Method::POST, "/v1/campaigns".into(), Some(campaign), &[Who::AdminKey, Who::StaffAdmin, Who::Merchant]),
        (Method::GET, "/v1/campaigns".into(), None, OPERATORS_AND_MERCHANT),
        (
            Method::POST,
            format!("/v1/campaigns/{}/pause", zero_id("cmp_")),
            Some(json!({})),
            &[Who::AdminKey, Who::StaffAdmin, Who::Merchant],
        ),
        (
            Method::POST,
            format!("/v1/campaigns/{}/resume", zero_id("cmp_")),
            Some(json!({})),
            &[Who::AdminKey, Who::StaffAdmin, Who::Merchant],
        ),
        (Method::GET, format!("/v1/trades/{trade}/events"), None, OPERATORS_AND_MERCHANT),
        (Method::POST, "/v1/red-packets".into(), Some(json!({ "total": 10, "count": 1, "mode": "equal" })), USER),
        (Method::POST, "/v1/payment-codes".into(), Some(json!({})), USER),
        (Method::GET, "/v1/admin/ledger/check".into(), None, OPERATORS),
        (Method::POST, "/v1/admin/clock".into(), Some(json!({ "advance_seconds": 0 })), ADMINS),
        (Method::GET, "/v1/admin/reconciliation?date=2013-11-10".into(), None, FINANCE),
        (Method::GET, "/v1/admin/fee-schedules".into(), None, OPERATORS),
        (Method::PUT, "/v1/admin/fee-schedules/transfer".into(), Some(json!({ "rate_bps": 0, "minimum": 0 })), ADMINS),
        (Method::POST, "/v1/api-keys".into(), Some(json!({ "permissions": "read" })), PARTIES),
        (Method::POST, format!("/v1/admin/parties/{victim_id}/revoke-keys"), Some(json!({})), ADMINS),
        (Method::PUT, "/v1/merchants/me/app-public-key".into(), Some(json!({ "app_public_key": "x" })), MERCHANT),
        (
            Method::POST,
            "/v1/admin/staff".into(),
            Some(json!({ "login": "extra", "password": "a long passphrase", "role": "finance" })),
            ADMINS,
        ),
        (Method::GET, "/v1/admin/staff".into(), None, ADMINS),
        (Method::GET, "/v1/admin/audit".into(), None, OPERATORS),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, allowed) in &table {
        for who in EVERYONE {
            let key = key_of(who);
            let (mut status, mut answer) = server.call(method.clone(), path, key.as_deref(), body.clone());
            // Failed credentials are rate-limited per address (a few a second): wait out the limit.
            if who == Who::Anonymous && status == StatusCode::TOO_MANY_REQUESTS {
                std::thread::sleep(std::time::Duration::from_millis(1_100));
                (status, answer) = server.call(method.clone(), path, key.as_deref(), body.clone());
            }
            let expected_denial = match who {
                Who::Anonymous => Some(StatusCode::UNAUTHORIZED),
                _ if allowed.contains(&who) => None,
                _ => Some(StatusCode::FORBIDDEN),
            };
            let fine = match expected_denial {
                Some(denial) => status == denial,
                None => {
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN && !status.is_server_error()
                }
            };
            if !fine {
                wrong.push(format!("{method} {path} as {who:?}: {status} {answer}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
    // Operators' credentials are not rolled through the API.
    let (status, _) = server.post("/v1/api-keys/roll", Some(ADMIN_KEY), json!({}));
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.assert_balanced();
}

#[test]
fn staff_sign_in_is_checked_rate_limited_and_ends() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let token = staff_token(&server, "sam", "support");
    assert_eq!(server.get("/v1/admin/ledger/check", Some(&token)).0, StatusCode::OK);
    // A wrong password, an unknown login: the same 401.
    for (login, password) in [("sam", "wrong password!"), ("nobody", "a long passphrase")] {
        let (status, _) = server.post("/v1/staff/sessions", None, json!({ "login": login, "password": password }));
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{login}");
    }
    // A tampered token is refused.
    // (Its last digit changed: to another digit, whatever it was.)
    let other = if token.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{other}", &token[..token.len() - 1]);
    assert_eq!(server.get("/v1/admin/ledger/check", Some(&tampered)).0, StatusCode::UNAUTHORIZED);
    // Guessing one login's password is slowed to a few a minute.
    let statuses: Vec<StatusCode> = (0..12)
        .map(|_| server.post("/v1/staff/sessions", None, json!({ "login": "sam", "password": "guess guess" })).0)
        .collect();
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // Sessions expire with the clock, and sign-out ends one at once.
    let (status, _) = server.call(Method::DELETE, "/v1/staff/sessions/current", Some(&token), None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get("/v1/admin/ledger/check", Some(&token)).0, StatusCode::UNAUTHORIZED);
    let fresh = staff_token(&server, "fay", "finance");
    assert_eq!(server.get("/v1/admin/ledger/check", Some(&fresh)).0, StatusCode::OK);
    advance(&server, 8 * 3_600);
    assert_eq!(server.get("/v1/admin/ledger/check", Some(&fresh)).0, StatusCode::UNAUTHORIZED, "expired");
    // Passwords too short, roles unknown, logins taken: clear 4xx.
    let cases = [
        (json!({ "login": "x", "password": "short", "role": "admin" }), StatusCode::BAD_REQUEST),
        (json!({ "login": "x", "password": "a long passphrase", "role": "owner" }), StatusCode::BAD_REQUEST),
        (json!({ "login": "sam", "password": "a long passphrase", "role": "admin" }), StatusCode::CONFLICT),
        (json!({ "login": "a b", "password": "a long passphrase", "role": "admin" }), StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in cases {
        assert_eq!(server.post("/v1/admin/staff", Some(ADMIN_KEY), body.clone()).0, expected, "{body}");
    }
}

#[test]
fn the_audit_log_lists_every_operator_action_and_key_change_in_order_with_actors() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (shop_id, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    let support = staff_token(&server, "sam", "support");
    let (_, me) = server.get("/v1/admin/staff", Some(ADMIN_KEY));
    let sam = me["data"].as_array().unwrap().iter().find(|staff| staff["login"] == "sam").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let trade_no = paid_trade(&server, &shop, &buyer, "a-1");
    let refund = json!({ "out_request_no": "r-1", "amount": 100 });
    let (status, body) = server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&support), refund);
    assert_eq!(status, StatusCode::CREATED, "support refunds for the merchant: {body}");
    // Finance may not refund; support may not set fees.
    let (finance_status, _) = server.post(
        &format!("/v1/trades/{trade_no}/refunds"),
        Some(&staff_token(&server, "fay", "finance")),
        json!({ "out_request_no": "r-2", "amount": 1 }),
    );
    assert_eq!(finance_status, StatusCode::FORBIDDEN);
    let schedule = json!({ "rate_bps": 10, "minimum": 0 });
    let (status, _) =
        server.call(Method::PUT, "/v1/admin/fee-schedules/transfer", Some(&support), Some(schedule.clone()));
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.fees("transfer", schedule);
    server.post("/v1/api-keys/roll", Some(&shop), json!({ "expires_in_seconds": 60 }));
    let (status, audit) = server.get("/v1/admin/audit", Some(&support));
    assert_eq!(status, StatusCode::OK, "{audit}");
    let lines: Vec<(String, String, String)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            let field = |name: &str| line[name].as_str().unwrap_or("").to_string();
            (field("actor"), field("action"), field("outcome"))
        })
        .collect();
    let expected = [
        (shop_id.as_str(), "api_key.roll"),
        ("admin_key", "fee_schedule.set"),
        ("admin_key", "staff.create"),
        (sam.as_str(), "trade.refund"),
        ("admin_key", "staff.create"),
        ("admin_key", "user.create"),
        ("admin_key", "merchant.create"),
    ];
    let seen: Vec<(&str, &str)> = lines.iter().map(|(actor, action, _)| (actor.as_str(), action.as_str())).collect();
    assert_eq!(seen, expected, "newest first: {audit}");
    assert!(lines.iter().all(|(_, _, outcome)| outcome == "ok"), "{audit}");
    assert!(audit["data"][3]["request_id"].as_str().is_some_and(|id| id.starts_with("req_")), "{audit}");
    // Filtered by actor and by target; paginated.
    let (_, by_sam) = server.get(&format!("/v1/admin/audit?actor={sam}"), Some(ADMIN_KEY));
    assert_eq!(by_sam["data"].as_array().unwrap().len(), 1, "{by_sam}");
    assert_eq!(by_sam["data"][0]["target"], trade_no.as_str());
    let (_, on_trade) = server.get(&format!("/v1/admin/audit?target={trade_no}"), Some(ADMIN_KEY));
    assert_eq!(on_trade["data"].as_array().unwrap().len(), 1, "{on_trade}");
    let (_, first_page) = server.get("/v1/admin/audit?limit=3", Some(ADMIN_KEY));
    assert_eq!(first_page["has_more"], true);
    let last = first_page["data"][2]["id"].as_str().unwrap();
    let (_, second_page) = server.get(&format!("/v1/admin/audit?limit=3&starting_after={last}"), Some(ADMIN_KEY));
    assert_eq!(second_page["data"][0]["action"], "trade.refund", "{second_page}");
    // Nothing edits it: no route but GET.
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let (status, _) = server.call(method.clone(), "/v1/admin/audit", Some(ADMIN_KEY), Some(json!({})));
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    // It survives a restart, as the log it is part of.
    let server = server.crash_and_restart();
    let (_, again) = server.get("/v1/admin/audit", Some(ADMIN_KEY));
    assert_eq!(again["data"], audit["data"]);
}

/// Destinations (API.md): a server listening beyond loopback refuses
/// private and local endpoints, and no server follows a redirect.
#[test]
fn endpoints_refuse_private_destinations_and_redirects_are_not_followed() {
    let directory = tempfile::tempdir().unwrap();
    let public = Server::start_listening(directory.path(), "0.0.0.0:0", &[]);
    let (_, shop) = public.merchant("shop");
    for url in
        ["http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://localhost:9/x"]
    {
        let (status, body) = public.post("/v1/webhook-endpoints", Some(&shop), json!({ "url": url, "events": ["*"] }));
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{url}: {body}");
    }
    drop(public);
    // A redirect to another receiver: the attempt fails and the second hears nothing.
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (target_url, target_received) = receiver();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let redirect_url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 65_536];
            let _ = stream.read(&mut buffer);
            let _ = write!(
                stream,
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {target_url}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    endpoint(&server, &shop, &redirect_url, json!(["trade.paid"]));
    paid_trade(&server, &shop, &buyer, "r-1");
    let (_, undelivered) = server.get("/v1/events?delivered=false", Some(&shop));
    let event = undelivered["data"][0]["id"].as_str().unwrap().to_string();
    server.wait_for_attempts(&shop, &event, 1);
    assert!(target_received.try_recv().is_err(), "the redirect was not followed");
    let (_, log) = server.get(&format!("/v1/events/{event}/deliveries"), Some(&shop));
    assert_eq!(log["data"][0]["status_code"], 307, "{log}");
    assert_eq!(log["data"][0]["delivered"], false, "{log}");
}

#[test]
fn only_failed_credentials_count_toward_the_address_limit() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    // Wrong keys from this address, until the address is limited.
    let statuses: Vec<StatusCode> = (0..200).map(|_| server.get("/v1/balance", Some("zk_wrong")).0).collect();
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // And stays limited (a failure a 50 ms is let through as the budget refills).
    let again: Vec<StatusCode> = (0..10).map(|_| server.get("/v1/balance", Some("zk_wrong")).0).collect();
    assert!(again.contains(&StatusCode::TOO_MANY_REQUESTS), "{again:?}");
    // A request with no credential guesses nothing: it is told it needs one.
    let (status, body) = server.get("/v1/balance", None);
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{body}");
}
