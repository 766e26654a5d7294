//! Pre-authorisation (预授权) against a real `zhifu serve`: a freeze by the
//! buyer's payment code holds money in the buyer's wallet (unspendable),
//! partial releases and payments from it, `complete` releasing the rest,
//! expiry after exactly 30 days of clock time (across a restart), and 50
//! concurrent payments against one freeze never taking more than it held.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

const SIMULATED: [&str; 2] = ["--clock", "simulated"];

fn code(server: &Server, buyer: &str) -> String {
    let (status, code) = server.post("/v1/payment-codes", Some(buyer), json!({}));
    assert_eq!(status, 201, "{code}");
    code["auth_code"].as_str().unwrap().to_string()
}

fn freeze(server: &Server, hotel: &str, buyer: &str, order: &str, amount: u64) -> Value {
    let body = json!({ "payment_code": code(server, buyer), "out_order_no": order, "out_request_no": format!("{order}-f"), "amount": amount, "title": "room deposit" });
    let (status, freeze) = server.post("/v1/freezes", Some(hotel), body);
    assert_eq!(status, 201, "{freeze}");
    freeze
}

fn balance(server: &Server, key: &str) -> (u64, u64) {
    let (_, balance) = server.get("/v1/balance", Some(key));
    (balance["available"].as_u64().unwrap(), balance["held"].as_u64().unwrap())
}

fn advance(server: &Server, seconds: u64) {
    let (status, body) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": seconds }));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_deposit_is_frozen_partly_released_paid_and_the_rest_released_by_complete() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, hotel) = server.merchant("hotel");
    let (_, buyer) = server.user("guest");
    server.top_up(&buyer, 100_000);
    let frozen = freeze(&server, &hotel, &buyer, "stay-1", 60_000);
    assert_eq!((frozen["status"].as_str(), frozen["rest"].as_u64()), (Some("AUTHORIZED"), Some(60_000)));
    assert_eq!(balance(&server, &buyer), (40_000, 60_000), "held, not spendable");
    let id = frozen["id"].as_str().unwrap().to_string();
    // The same order again: the same freeze, nothing more held.
    let again = json!({ "payment_code": code(&server, &buyer), "out_order_no": "stay-1", "out_request_no": "stay-1-f", "amount": 60_000, "title": "room deposit" });
    let (status, same) = server.post("/v1/freezes", Some(&hotel), again);
    assert_eq!((status.as_u16(), &same["id"]), (201, &frozen["id"]));
    assert_eq!(balance(&server, &buyer), (40_000, 60_000));
    // The frozen money cannot be spent elsewhere.
    let (_, other) = server.merchant("other shop");
    let trade = json!({ "out_trade_no": "x", "amount": 50_000, "subject": "tv", "mode": "instant" });
    let (_, trade) = server.post("/v1/trades", Some(&other), trade);
    let (status, _) =
        server.post(&format!("/v1/trades/{}/pay", trade["trade_no"].as_str().unwrap()), Some(&buyer), json!({}));
    assert_eq!(status, 422, "only 40,000 are free");

    // Release 10,000; more than is left is refused; a retry is answered again.
    let release = |no: &str, amount: u64| {
        server.post(
            &format!("/v1/freezes/{id}/unfreeze"),
            Some(&hotel),
            json!({ "out_request_no": no, "amount": amount }),
        )
    };
    let (status, released) = release("u-1", 10_000);
    assert_eq!((status.as_u16(), released["rest"].as_u64()), (200, Some(50_000)), "{released}");
    assert_eq!(release("u-1", 10_000).1["rest"], 50_000, "a retry releases once");
    let (status, answer) = release("u-2", 50_001);
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (422, "limit_exceeded"), "{answer}");
    assert_eq!(balance(&server, &buyer), (50_000, 50_000));

    // Pay 12,000 of it (the rest stays frozen), then 8,000 with complete: the rest goes back.
    let hotel_before = balance(&server, &hotel).0;
    let pay = |no: &str, amount: u64, complete: bool| {
        let body = json!({ "out_trade_no": no, "amount": amount, "subject": "minibar", "complete": complete });
        server.post(&format!("/v1/freezes/{id}/pay"), Some(&hotel), body)
    };
    let (status, paid) = pay("bill-1", 12_000, false);
    assert_eq!((status.as_u16(), paid["status"].as_str()), (201, Some("TRADE_SUCCESS")), "{paid}");
    assert_eq!(balance(&server, &buyer), (50_000, 38_000), "paid from the frozen money, not the free");
    assert_eq!(pay("bill-1", 12_000, false).1["trade_no"], paid["trade_no"], "a retry is the same trade");
    assert_eq!(balance(&server, &buyer), (50_000, 38_000));
    let (status, last) = pay("bill-2", 8_000, true);
    assert_eq!(status, 201, "{last}");
    assert_eq!(balance(&server, &buyer), (80_000, 0), "the rest released");
    let fee = paid["fee"].as_u64().unwrap() + last["fee"].as_u64().unwrap();
    assert_eq!(balance(&server, &hotel).0, hotel_before + 20_000 - fee);
    let (_, finished) = server.get(&format!("/v1/freezes/{id}"), Some(&buyer));
    assert_eq!(
        (finished["status"].as_str(), finished["paid"].as_u64(), finished["released"].as_u64()),
        (Some("FINISH"), Some(20_000), Some(40_000)),
        "{finished}"
    );
    let kinds: Vec<&str> =
        finished["operations"].as_array().unwrap().iter().map(|op| op["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["FREEZE", "UNFREEZE", "PAY", "PAY"]);
    assert_eq!(pay("bill-3", 1, false).0, 409, "finished");
    // Another merchant cannot see or use it; the hotel lists it.
    assert_eq!(server.get(&format!("/v1/freezes/{id}"), Some(&other)).0, 404);
    assert!(server.get("/v1/freezes", Some(&other)).1["data"].as_array().unwrap().is_empty());
    let (_, listed) = server.get("/v1/freezes", Some(&hotel));
    assert_eq!(listed["data"][0]["id"], frozen["id"], "{listed}");
    server.assert_balanced();
}

#[test]
fn a_freeze_left_alone_returns_the_money_after_exactly_thirty_days() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, rental) = server.merchant("car rental");
    let (_, buyer) = server.user("driver");
    server.top_up(&buyer, 30_000);
    let frozen = freeze(&server, &rental, &buyer, "car-1", 25_000);
    let id = frozen["id"].as_str().unwrap().to_string();
    let pay = json!({ "out_trade_no": "fuel", "amount": 5_000, "subject": "fuel" });
    assert_eq!(server.post(&format!("/v1/freezes/{id}/pay"), Some(&rental), pay).0, 201);
    assert_eq!(balance(&server, &buyer), (5_000, 20_000));
    advance(&server, 30 * 86_400 - 1);
    assert_eq!(balance(&server, &buyer), (5_000, 20_000), "one second early");
    let server = server.crash_and_restart();
    advance(&server, 1);
    assert_eq!(balance(&server, &buyer), (25_000, 0), "back at 30 days");
    let (_, closed) = server.get(&format!("/v1/freezes/{id}"), Some(&rental));
    assert_eq!(
        (closed["status"].as_str(), closed["rest"].as_u64(), closed["released"].as_u64()),
        (Some("CLOSED"), Some(0), Some(20_000))
    );
    let late = json!({ "out_request_no": "late", "amount": 1 });
    assert_eq!(server.post(&format!("/v1/freezes/{id}/unfreeze"), Some(&rental), late).0, 409);
    server.assert_balanced();
}

#[test]
fn fifty_concurrent_payments_never_take_more_than_the_freeze_held() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, hotel) = server.merchant("hotel");
    let (_, buyer) = server.user("guest");
    server.top_up(&buyer, 1_000_000);
    let frozen = freeze(&server, &hotel, &buyer, "stay-9", 10_000);
    let id = frozen["id"].as_str().unwrap().to_string();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|index| {
                let (server, id, hotel) = (&server, &id, &hotel);
                scope.spawn(move || {
                    let body =
                        json!({ "out_trade_no": format!("charge-{index}"), "amount": 700, "subject": "room service" });
                    server.post(&format!("/v1/freezes/{id}/pay"), Some(hotel), body).0.as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|status| matches!(status, 201 | 422)), "{statuses:?}");
    let paid = statuses.iter().filter(|status| **status == 201).count() as u64;
    assert_eq!(paid, 10_000 / 700, "as many as fit: {statuses:?}");
    let (_, after) = server.get(&format!("/v1/freezes/{id}"), Some(&hotel));
    assert_eq!((after["paid"].as_u64(), after["rest"].as_u64()), (Some(paid * 700), Some(10_000 - paid * 700)));
    assert_eq!(balance(&server, &buyer), (990_000, 10_000 - paid * 700));
    server.assert_balanced();
}
