//! Black-box tests of merchant trades and notifications against a real
//! `zhifu serve` on the simulated clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

fn code(body: &Value) -> &str {
    Server::error_code(body)
}

const SIMULATED: [&str; 2] = ["--clock", "simulated"];

struct Shop {
    server: Server,
    merchant: String,
    buyer_id: String,
    buyer: String,
}

fn shop(directory: &std::path::Path, extra: &[&str]) -> Shop {
    let mut args = SIMULATED.to_vec();
    args.extend_from_slice(extra);
    let server = Server::start(directory, &args);
    let (_, merchant) = server.merchant("shop");
    let (buyer_id, buyer) = server.user("buyer");
    server.top_up(&buyer, 1_000_000);
    Shop { server, merchant, buyer_id, buyer }
}

impl Shop {
    fn trade(&self, out_trade_no: &str, amount: u64, mode: &str) -> String {
        let body = json!({ "out_trade_no": out_trade_no, "amount": amount, "subject": "a book", "mode": mode });
        let (status, trade) = self.server.post("/v1/trades", Some(&self.merchant), body);
        assert_eq!(status, StatusCode::CREATED, "{trade}");
        assert_eq!(trade["status"].as_str(), Some("WAIT_BUYER_PAY"));
        trade["trade_no"].as_str().unwrap().to_string()
    }

    fn act(&self, trade: &str, action: &str, key: &str) -> (StatusCode, Value) {
        self.server.post(&format!("/v1/trades/{trade}/{action}"), Some(key), json!({}))
    }

    fn status(&self, trade: &str) -> String {
        let (status, body) = self.server.get(&format!("/v1/trades/{trade}"), Some(ADMIN_KEY));
        assert_eq!(status, StatusCode::OK, "{body}");
        body["status"].as_str().unwrap().to_string()
    }

    fn advance(&self, seconds: u64) -> Value {
        let (status, body) =
            self.server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": seconds }));
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    fn held(&self, key: &str) -> u64 {
        self.server.get("/v1/balance", Some(key)).1["held"].as_u64().unwrap()
    }

    /// What a trade has in escrow and what the escrow account holds in all.
    fn escrow(&self, trade: &str) -> (u64, u64) {
        let (_, body) = self.server.get(&format!("/v1/trades/{trade}"), Some(&self.merchant));
        let (_, check) = self.server.get("/v1/admin/ledger/check", Some(ADMIN_KEY));
        (body["escrow_amount"].as_u64().unwrap(), check["escrow_total"].as_u64().unwrap())
    }
}

#[test]
fn an_instant_trade_pays_the_merchant_less_its_fee_at_once() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let trade = shop.trade("order-1", 100_000, "instant");
    let (status, paid) = shop.act(&trade, "pay", &shop.buyer);
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")), "{paid}");
    // 0.6% of 1,000 yuan: 6 yuan.
    assert_eq!(paid["fee"].as_u64(), Some(600));
    assert_eq!(shop.server.available(&shop.merchant), 99_400);
    assert_eq!(shop.server.available(&shop.buyer), 900_000);
    // The merchant, the buyer and the admin see it; another user does not.
    let (_, other) = shop.server.user("other");
    for (key, expected) in
        [(&shop.merchant, StatusCode::OK), (&shop.buyer, StatusCode::OK), (&other, StatusCode::NOT_FOUND)]
    {
        assert_eq!(shop.server.get(&format!("/v1/trades/{trade}"), Some(key)).0, expected);
    }
    // The same out_trade_no is the same trade; with other fields it is refused.
    let again = json!({ "out_trade_no": "order-1", "amount": 100_000, "subject": "a book", "mode": "instant" });
    let (status, body) = shop.server.post("/v1/trades", Some(&shop.merchant), again);
    assert_eq!((status, body["trade_no"].as_str()), (StatusCode::CREATED, Some(trade.as_str())));
    let different = json!({ "out_trade_no": "order-1", "amount": 5, "subject": "a book", "mode": "instant" });
    assert_eq!(shop.server.post("/v1/trades", Some(&shop.merchant), different).0, StatusCode::CONFLICT);
    // Lists and events.
    let (_, list) = shop.server.get("/v1/trades?out_trade_no=order-1", Some(&shop.merchant));
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, list) = shop.server.get("/v1/trades?status=WAIT_BUYER_PAY", Some(&shop.merchant));
    assert!(list["data"].as_array().unwrap().is_empty());
    let (_, events) = shop.server.get("/v1/events", Some(&shop.merchant));
    let kinds: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["trade.succeeded", "trade.paid"]);
    assert_eq!(events["data"][0]["data"]["trade_no"].as_str(), Some(trade.as_str()));
    // Settled, it left memory for the archive: everything above read it from there.
    let metrics = shop.server.client.get(format!("{}/metrics", shop.server.base)).send().unwrap().text().unwrap();
    assert!(metrics.contains("zhifu_trades{place=\"memory\"} 0"), "{metrics}");
    assert!(metrics.contains("zhifu_trades{place=\"archived\"} 1"), "{metrics}");
    shop.server.assert_balanced();
}

#[test]
fn an_escrow_trade_holds_the_money_until_the_buyer_confirms() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let trade = shop.trade("order-2", 100_000, "escrow");
    let (status, paid) = shop.act(&trade, "pay", &shop.buyer);
    assert_eq!(
        (status, paid["status"].as_str(), paid["escrow_amount"].as_u64()),
        (StatusCode::OK, Some("WAIT_SELLER_SEND"), Some(100_000))
    );
    // The payment left the buyer's wallet; escrow holds it, not yet the merchant's.
    assert_eq!((shop.server.available(&shop.buyer), shop.held(&shop.buyer)), (900_000, 0));
    assert_eq!(shop.escrow(&trade), (100_000, 100_000));
    assert_eq!(shop.server.available(&shop.merchant), 0, "in escrow, not the merchant's yet");
    let (status, shipped) = shop.act(&trade, "ship", &shop.merchant);
    assert_eq!((status, shipped["status"].as_str()), (StatusCode::OK, Some("WAIT_BUYER_CONFIRM")));
    let (status, done) = shop.act(&trade, "confirm", &shop.buyer);
    assert_eq!(
        (status, done["status"].as_str(), done["fee"].as_u64()),
        (StatusCode::OK, Some("TRADE_SUCCESS"), Some(600))
    );
    assert_eq!((shop.server.available(&shop.merchant), shop.escrow(&trade)), (99_400, (0, 0)));
    // Refunds after settlement come from the merchant's balance.
    let refund = json!({ "out_request_no": "r1", "amount": 40_000, "reason": "damaged" });
    let (status, body) = shop.server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop.merchant), refund.clone());
    assert_eq!((status, body["amount"].as_u64()), (StatusCode::CREATED, Some(40_000)), "{body}");
    // Retried with the same out_request_no: the same refund, nothing moves.
    let (status, again) = shop.server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop.merchant), refund);
    assert_eq!((status, &again), (StatusCode::CREATED, &body));
    let other_amount = json!({ "out_request_no": "r1", "amount": 1 });
    assert_eq!(
        shop.server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop.merchant), other_amount).0,
        StatusCode::CONFLICT
    );
    // The refund took back 40% of the trade and gave back 40% of its fee.
    assert_eq!((shop.server.available(&shop.merchant), shop.server.available(&shop.buyer)), (59_640, 940_000));
    let too_much = json!({ "out_request_no": "r2", "amount": 60_001 });
    let (status, body) = shop.server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop.merchant), too_much);
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"));
    shop.server.assert_balanced();
}

#[test]
fn a_partial_refund_before_settlement_gives_money_back_at_once_and_holds_the_rest() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let trade = shop.trade("order-3", 10_000, "escrow");
    shop.act(&trade, "pay", &shop.buyer);
    let refund = json!({ "out_request_no": "part", "amount": 3_000 });
    assert_eq!(
        shop.server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop.merchant), refund).0,
        StatusCode::CREATED
    );
    assert_eq!((shop.server.available(&shop.buyer), shop.escrow(&trade)), (993_000, (7_000, 7_000)));
    shop.act(&trade, "ship", &shop.merchant);
    let (_, done) = shop.act(&trade, "confirm", &shop.buyer);
    // The fee is on what settled: 0.6% of 70 yuan = 0.42 yuan.
    assert_eq!(
        (done["status"].as_str(), done["fee"].as_u64(), done["refunded_amount"].as_u64()),
        (Some("TRADE_SUCCESS"), Some(42), Some(3_000))
    );
    assert_eq!(shop.server.available(&shop.merchant), 7_000 - 42);
    // A full refund before settlement closes the trade and releases the hold.
    let second = shop.trade("order-4", 5_000, "escrow");
    shop.act(&second, "pay", &shop.buyer);
    let full = json!({ "out_request_no": "all", "amount": 5_000 });
    assert_eq!(
        shop.server.post(&format!("/v1/trades/{second}/refunds"), Some(&shop.merchant), full).0,
        StatusCode::CREATED
    );
    assert_eq!(shop.status(&second), "TRADE_CLOSED");
    assert_eq!((shop.server.available(&shop.buyer), shop.escrow(&second)), (993_000, (0, 0)));
    shop.server.assert_balanced();
}

#[test]
fn illegal_transitions_are_409_and_move_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let escrow = shop.trade("order-5", 10_000, "escrow");
    let balances = |shop: &Shop| {
        (shop.server.available(&shop.buyer), shop.held(&shop.buyer), shop.server.available(&shop.merchant))
    };
    let before = balances(&shop);
    assert_eq!(shop.act(&escrow, "ship", &shop.merchant).0, StatusCode::CONFLICT, "ship before pay");
    assert_eq!(
        shop.act(&escrow, "confirm", &shop.buyer).0,
        StatusCode::NOT_FOUND,
        "confirm by someone who did not pay"
    );
    let refund = json!({ "out_request_no": "x", "amount": 1 });
    assert_eq!(
        shop.server.post(&format!("/v1/trades/{escrow}/refunds"), Some(&shop.merchant), refund.clone()).0,
        StatusCode::CONFLICT,
        "refund of an unpaid trade"
    );
    assert_eq!(before, balances(&shop));
    shop.act(&escrow, "pay", &shop.buyer);
    let paid = balances(&shop);
    assert_eq!(shop.act(&escrow, "close", &shop.merchant).0, StatusCode::CONFLICT, "close after pay");
    assert_eq!(shop.act(&escrow, "pay", &shop.buyer).0, StatusCode::CONFLICT, "pay twice");
    assert_eq!(shop.act(&escrow, "confirm", &shop.buyer).0, StatusCode::CONFLICT, "confirm before ship");
    shop.act(&escrow, "ship", &shop.merchant);
    assert_eq!(shop.act(&escrow, "ship", &shop.merchant).0, StatusCode::CONFLICT, "ship twice");
    assert_eq!(paid, balances(&shop));
    assert_eq!(shop.act(&escrow, "confirm", &shop.buyer).0, StatusCode::OK);
    let settled = balances(&shop);
    assert_eq!(shop.act(&escrow, "confirm", &shop.buyer).0, StatusCode::CONFLICT, "confirm twice");
    assert_eq!(settled, balances(&shop));
    let instant = shop.trade("order-6", 100, "instant");
    assert_eq!(shop.act(&instant, "ship", &shop.merchant).0, StatusCode::CONFLICT, "ship an instant trade");
    assert_eq!(shop.act(&instant, "close", &shop.merchant).0, StatusCode::OK);
    assert_eq!(shop.act(&instant, "pay", &shop.buyer).0, StatusCode::CONFLICT, "pay a closed trade");
    // Roles: a user cannot create or ship; the merchant cannot pay.
    let body = json!({ "out_trade_no": "u", "amount": 1, "subject": "s", "mode": "instant" });
    assert_eq!(shop.server.post("/v1/trades", Some(&shop.buyer), body).0, StatusCode::FORBIDDEN);
    assert_eq!(shop.act(&instant, "pay", &shop.merchant).0, StatusCode::FORBIDDEN);
    shop.server.assert_balanced();
}

#[test]
fn fifty_concurrent_payments_of_one_trade_pay_it_once() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let trade = shop.trade("order-7", 10_000, "instant");
    let statuses: Vec<StatusCode> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50).map(|_| scope.spawn(|| shop.act(&trade, "pay", &shop.buyer).0)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 49);
    assert_eq!(shop.server.available(&shop.buyer), 990_000);
    shop.server.assert_balanced();
}

#[test]
fn racing_refunds_never_exceed_what_was_paid() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let trade = shop.trade("order-8", 1_000, "escrow");
    shop.act(&trade, "pay", &shop.buyer);
    let statuses: Vec<StatusCode> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..25)
            .map(|n| {
                let (shop, trade) = (&shop, &trade);
                scope.spawn(move || {
                    let body = json!({ "out_request_no": format!("r{n}"), "amount": 100 });
                    shop.server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop.merchant), body).0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 10, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::CREATED, StatusCode::CONFLICT, StatusCode::UNPROCESSABLE_ENTITY].contains(s))
    );
    assert_eq!(shop.status(&trade), "TRADE_CLOSED");
    assert_eq!((shop.server.available(&shop.buyer), shop.held(&shop.buyer)), (1_000_000, 0));
    shop.server.assert_balanced();
}

#[test]
fn escrow_auto_confirms_exactly_when_due_and_unpaid_trades_expire() {
    let directory = tempfile::tempdir().unwrap();
    let shop = shop(directory.path(), &[]);
    let body = json!({ "out_trade_no": "order-9", "amount": 2_000, "subject": "a kettle", "mode": "escrow", "auto_confirm_days": 3, "buyer": shop.buyer_id });
    let (_, trade) = shop.server.post("/v1/trades", Some(&shop.merchant), body);
    let trade = trade["trade_no"].as_str().unwrap().to_string();
    shop.act(&trade, "pay", &shop.buyer);
    shop.act(&trade, "ship", &shop.merchant);
    shop.advance(3 * 86_400 - 1);
    assert_eq!(shop.status(&trade), "WAIT_BUYER_CONFIRM");
    let clock = shop.advance(1);
    assert_eq!(clock["trades_settled"].as_u64(), Some(1));
    assert_eq!(shop.status(&trade), "TRADE_SUCCESS");
    assert_eq!(shop.server.available(&shop.merchant), 2_000 - 12);
    // Unpaid past expire_minutes: closed, and cannot be paid.
    let body =
        json!({ "out_trade_no": "order-10", "amount": 10, "subject": "s", "mode": "instant", "expire_minutes": 15 });
    let (_, late) = shop.server.post("/v1/trades", Some(&shop.merchant), body);
    let late = late["trade_no"].as_str().unwrap().to_string();
    shop.advance(14 * 60);
    assert_eq!(shop.status(&late), "WAIT_BUYER_PAY");
    assert_eq!(shop.advance(60)["trades_closed"].as_u64(), Some(1));
    assert_eq!(shop.act(&late, "pay", &shop.buyer).0, StatusCode::CONFLICT);
    // A trade for one buyer cannot be paid by another.
    let (_, stranger) = shop.server.user("stranger");
    shop.server.top_up(&stranger, 100);
    let body =
        json!({ "out_trade_no": "order-11", "amount": 10, "subject": "s", "mode": "instant", "buyer": shop.buyer_id });
    let (_, mine) = shop.server.post("/v1/trades", Some(&shop.merchant), body);
    assert_eq!(shop.act(mine["trade_no"].as_str().unwrap(), "pay", &stranger).0, StatusCode::NOT_FOUND);
    shop.server.assert_balanced();
}

/// A webhook endpoint on loopback: answers the first `failures` requests
/// with 500, then 200; reports every request it gets.
fn receiver(failures: usize) -> (String, support::Received) {
    support::receiver_with(std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(failures)), "200 OK")
}

fn verify(secret: &str, header: &str, body: &str) -> u64 {
    use hmac::{Hmac, Mac};
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).expect("the signature verifies");
    t.parse().unwrap()
}

#[test]
fn notifications_are_signed_retried_on_schedule_and_survive_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (url, received) = receiver(2);
    let (status, merchant) =
        server.post("/v1/merchants", Some(ADMIN_KEY), json!({ "name": "shop", "webhook_url": url }));
    assert_eq!(status, StatusCode::CREATED);
    let (key, secret) =
        (merchant["api_key"].as_str().unwrap().to_string(), merchant["webhook_secret"].as_str().unwrap().to_string());
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    let body = json!({ "out_trade_no": "n-1", "amount": 500, "subject": "tea", "mode": "instant" });
    let (_, trade) = server.post("/v1/trades", Some(&key), body);
    let trade_no = trade["trade_no"].as_str().unwrap().to_string();
    server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({}));
    let wait = std::time::Duration::from_secs(10);
    // First attempt at once (fails).
    let (signature, first) = received.recv_timeout(wait).expect("the first attempt arrives");
    let t1 = verify(&secret, &signature, &first);
    let event: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["data"]["trade_no"].as_str()),
        (Some("trade.paid"), Some(trade_no.as_str()))
    );
    // The server goes down and comes back: the retry is not lost.
    let event_id = event["id"].as_str().unwrap();
    server.wait_for_attempts(&key, event_id, 1);
    let server = server.crash_and_restart();
    assert!(received.recv_timeout(std::time::Duration::from_millis(800)).is_err(), "no retry before 4 minutes");
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 240 }));
    let (signature, second) = received.recv_timeout(wait).expect("the retry after 4 minutes");
    let t2 = verify(&secret, &signature, &second);
    assert_eq!(second, first, "the same event, byte for byte");
    assert_eq!(t2 - t1, 240);
    server.wait_for_attempts(&key, event_id, 2);
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 600 }));
    let (signature, third) = received.recv_timeout(wait).expect("the retry after 10 more minutes");
    assert_eq!(verify(&secret, &signature, &third) - t1, 840);
    assert_eq!(third, first);
    // Delivered at last; then the trade's next event follows, in order.
    let (signature, next) = received.recv_timeout(wait).expect("trade.succeeded follows");
    verify(&secret, &signature, &next);
    let next: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(next["type"].as_str(), Some("trade.succeeded"));
    server.assert_balanced();
}

/// Operators find trades by `out_trade_no` through the merchants' reference
/// indexes (every merchant's, or the one named) and list one merchant's
/// trades along its own chain.
#[test]
fn operators_find_trades_by_reference_across_merchants_and_list_one_merchants() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (first_id, first) = server.merchant("first");
    let (second_id, second) = server.merchant("second");
    let mut made = Vec::new();
    for (key, out_trade_no) in [(&first, "same-1"), (&second, "same-1"), (&second, "other-1")] {
        let body = json!({ "out_trade_no": out_trade_no, "amount": 100, "subject": "s", "mode": "instant" });
        let (status, trade) = server.post("/v1/trades", Some(key), body);
        assert_eq!(status, 201, "{trade}");
        made.push(trade["trade_no"].as_str().unwrap().to_string());
    }
    let numbers = |path: &str, key: &str| {
        let (status, page) = server.get(path, Some(key));
        assert_eq!(status, 200, "{page}");
        page["data"].as_array().unwrap().iter().map(|t| t["trade_no"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(numbers("/v1/trades?out_trade_no=same-1", ADMIN_KEY), [made[1].clone(), made[0].clone()]);
    assert_eq!(numbers(&format!("/v1/trades?out_trade_no=same-1&merchant={first_id}"), ADMIN_KEY), [made[0].clone()]);
    assert_eq!(numbers(&format!("/v1/trades?merchant={second_id}"), ADMIN_KEY), [made[2].clone(), made[1].clone()]);
    assert_eq!(numbers("/v1/trades?out_trade_no=same-1", &second), [made[1].clone()], "a merchant sees its own");
    assert!(numbers(&format!("/v1/trades?merchant={first_id}"), &second).is_empty());
}
