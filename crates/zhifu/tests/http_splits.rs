//! Profit sharing (分账) against a real `zhifu serve`: receivers must be
//! bound; a split moves parts of a settled trade's proceeds in one chain,
//! idempotent by `out_request_no`, never more than the trade left the
//! merchant after refunds, its fee and earlier splits — under 50 concurrent
//! requests too — and a refund after a split is the merchant's alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use serde_json::{Value, json};
use support::Server;

const SIMULATED: [&str; 2] = ["--clock", "simulated"];

fn paid_trade(server: &Server, shop: &str, buyer: &str, out_trade_no: &str, amount: u64, mode: &str) -> Value {
    let body = json!({ "out_trade_no": out_trade_no, "amount": amount, "subject": "tea", "mode": mode });
    let (status, trade) = server.post("/v1/trades", Some(shop), body);
    assert_eq!(status, 201, "{trade}");
    let trade_no = trade["trade_no"].as_str().unwrap();
    let (status, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(buyer), json!({}));
    assert_eq!(status, 200, "{paid}");
    paid
}

#[test]
fn splits_go_to_bound_receivers_once_and_never_beyond_what_the_trade_left() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("marketplace");
    let (seller_id, seller) = server.merchant("seller");
    let (carrier_id, carrier) = server.user("carrier");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 1_000_000);
    let trade = paid_trade(&server, &shop, &buyer, "o-1", 10_000, "instant");
    let (trade_no, fee) = (trade["trade_no"].as_str().unwrap().to_string(), trade["fee"].as_u64().unwrap());
    let splits = format!("/v1/trades/{trade_no}/splits");
    let body = |no: &str, parts: &[(&str, u64)]| json!({ "out_request_no": no, "splits": parts.iter().map(|(to, amount)| json!({ "to": to, "amount": amount })).collect::<Vec<_>>() });

    // Receivers must be bound first.
    let (status, answer) = server.post(&splits, Some(&shop), body("s-1", &[(&seller_id, 6_000)]));
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (409, "conflict"), "{answer}");
    for receiver in [&seller_id, &carrier_id] {
        assert_eq!(server.post("/v1/royalty-relations", Some(&shop), json!({ "receiver": receiver })).0, 201);
    }
    let (_, bound) = server.get("/v1/royalty-relations", Some(&shop));
    assert_eq!(bound["data"].as_array().unwrap().len(), 2, "{bound}");

    // One split, two receivers, one chain.
    let (before_shop, before_seller, before_carrier) =
        (server.available(&shop), server.available(&seller), server.available(&carrier));
    let (status, split) = server.post(&splits, Some(&shop), body("s-1", &[(&seller_id, 6_000), (&carrier_id, 1_000)]));
    assert_eq!(status, 201, "{split}");
    assert_eq!(split["trade_split_amount"], 7_000);
    assert_eq!(server.available(&shop), before_shop - 7_000);
    assert_eq!(server.available(&seller), before_seller + 6_000);
    assert_eq!(server.available(&carrier), before_carrier + 1_000);
    // The same request again: the same split; under the same number with other parts: refused.
    let (status, again) = server.post(&splits, Some(&shop), body("s-1", &[(&seller_id, 6_000), (&carrier_id, 1_000)]));
    assert_eq!((status.as_u16(), &again["id"]), (201, &split["id"]));
    assert_eq!(server.available(&seller), before_seller + 6_000, "split once");
    let (status, _) = server.post(&splits, Some(&shop), body("s-1", &[(&seller_id, 5_000)]));
    assert_eq!(status, 409);

    // What is left: 10,000 less the fee less 7,000; a fen more is refused.
    let left = 10_000 - fee - 7_000;
    let (status, answer) = server.post(&splits, Some(&shop), body("s-2", &[(&seller_id, left + 1)]));
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (422, "limit_exceeded"), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains(&format!("{left} fen")), "{answer}");
    assert_eq!(server.post(&splits, Some(&shop), body("s-2", &[(&carrier_id, left)])).0, 201);

    // A refund after the splits: the merchant pays it (from its other
    // takings: this trade left it nothing), the receivers keep theirs.
    let refund_alone = json!({ "out_request_no": "r-0", "amount": 2_000 });
    let (status, answer) = server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop), refund_alone);
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (422, "insufficient_funds"), "{answer}");
    let other = paid_trade(&server, &shop, &buyer, "o-2", 5_000, "instant");
    let refund = json!({ "out_request_no": "r-1", "amount": 2_000 });
    let (status, answer) = server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop), refund);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(server.available(&seller), before_seller + 6_000);
    let (_, trade) = server.get(&format!("/v1/trades/{trade_no}"), Some(&shop));
    assert_eq!((trade["split_amount"].as_u64(), trade["refunded_amount"].as_u64()), (Some(7_000 + left), Some(2_000)));
    // Nothing is left to split now.
    let (status, _) = server.post(&splits, Some(&shop), body("s-3", &[(&carrier_id, 1)]));
    assert_eq!(status, 422);

    // Unbound: no more splits to it. An escrow trade not yet confirmed: none at all.
    assert_eq!(
        server.call(reqwest::Method::DELETE, &format!("/v1/royalty-relations/{carrier_id}"), Some(&shop), None).0,
        200
    );
    let other_splits = format!("/v1/trades/{}/splits", other["trade_no"].as_str().unwrap());
    assert_eq!(server.post(&other_splits, Some(&shop), body("s-1", &[(&carrier_id, 100)])).0, 409);
    let escrow = paid_trade(&server, &shop, &buyer, "o-3", 5_000, "escrow");
    let escrow_splits = format!("/v1/trades/{}/splits", escrow["trade_no"].as_str().unwrap());
    let (status, answer) = server.post(&escrow_splits, Some(&shop), body("s-1", &[(&seller_id, 100)]));
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("TRADE_SUCCESS"), "{answer}");
    // Only the trade's merchant splits it.
    assert_eq!(server.post(&other_splits, Some(&seller), body("s-9", &[(&seller_id, 100)])).0, 404);
    server.assert_balanced();
}

#[test]
fn fifty_concurrent_splits_and_refunds_never_split_more_than_was_left() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("marketplace");
    let (seller_id, _) = server.merchant("seller");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 1_000_000);
    assert_eq!(server.post("/v1/royalty-relations", Some(&shop), json!({ "receiver": seller_id })).0, 201);
    let trade = paid_trade(&server, &shop, &buyer, "hot", 3_000, "instant");
    let (trade_no, fee) = (trade["trade_no"].as_str().unwrap().to_string(), trade["fee"].as_u64().unwrap());
    let outcomes: Vec<(bool, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|index| {
                let (server, trade_no, seller_id) = (&server, &trade_no, &seller_id);
                let shop = shop.clone();
                scope.spawn(move || {
                    if index % 5 == 4 {
                        let body = json!({ "out_request_no": format!("r-{index}"), "amount": 100 });
                        (false, server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop), body).0.as_u16())
                    } else {
                        let body = json!({ "out_request_no": format!("s-{index}"), "splits": [{ "to": seller_id, "amount": 100 }] });
                        (true, server.post(&format!("/v1/trades/{trade_no}/splits"), Some(&shop), body).0.as_u16())
                    }
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let split_ok = outcomes.iter().filter(|(split, status)| *split && *status == 201).count() as u64;
    assert!(outcomes.iter().all(|(_, status)| matches!(status, 201 | 409 | 422)), "{outcomes:?}");
    let (_, trade) = server.get(&format!("/v1/trades/{trade_no}"), Some(&shop));
    let (split, refunded) = (trade["split_amount"].as_u64().unwrap(), trade["refunded_amount"].as_u64().unwrap());
    assert_eq!(split, split_ok * 100, "{trade}");
    assert!(split + trade["fee"].as_u64().unwrap() <= 3_000, "never more than the trade paid the merchant: {trade}");
    assert!(split <= 3_000 - fee, "{trade}");
    assert!(split_ok >= 1 && refunded > 0, "{outcomes:?}");
    server.assert_balanced();
}
