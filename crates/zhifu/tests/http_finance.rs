//! A party's money over time against a real `zhifu serve`: balance
//! transactions (each movement with its fee and the balance after) add up
//! to the balance, page without gaps, and `GET /v1/balance?at=` answers the
//! balance before and after movements on the simulated clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

const SIMULATED: [&str; 2] = ["--clock", "simulated"];

fn all_rows(server: &Server, key: &str, limit: u32) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/balance-transactions?limit={limit}");
        if let Some(after) = &after {
            path.push_str(&format!("&starting_after={after}"));
        }
        let (status, page) = server.get(&path, Some(key));
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap().clone();
        after = data.last().map(|row| row["id"].as_str().unwrap().to_string());
        rows.extend(data);
        if page["has_more"] != json!(true) {
            return rows;
        }
    }
}

fn advance(server: &Server, seconds: u64) {
    let (status, answer) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": seconds }));
    assert_eq!(status, 200, "{answer}");
}

fn now(server: &Server) -> String {
    let (_, answer) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 0 }));
    answer["now"].as_str().unwrap().to_string()
}

#[test]
fn balance_transactions_add_up_to_the_balance_and_the_past_balance_is_known() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (shop_id, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    let before_anything = now(&server);
    advance(&server, 60);
    server.top_up(&buyer, 100_000);
    let mut trades = Vec::new();
    for (index, amount) in [10_000u64, 25_000, 7_300].into_iter().enumerate() {
        advance(&server, 60);
        let body =
            json!({ "out_trade_no": format!("o-{index}"), "amount": amount, "subject": "tea", "mode": "instant" });
        let (status, trade) = server.post("/v1/trades", Some(&shop), body);
        assert_eq!(status, 201, "{trade}");
        let trade_no = trade["trade_no"].as_str().unwrap().to_string();
        let (status, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({}));
        assert_eq!(status, 200, "{paid}");
        let fee = paid["fee"].as_i64().unwrap();
        assert!(fee > 0, "the merchant pays a fee: {paid}");
        trades.push((trade_no, amount, fee));
    }
    let after_payments = now(&server);
    advance(&server, 60);
    let refund = json!({ "out_request_no": "r-1", "amount": 5_000 });
    let (status, answer) = server.post(&format!("/v1/trades/{}/refunds", trades[1].0), Some(&shop), refund);
    assert_eq!(status, 201, "{answer}");

    // The merchant's: three settlements with their fees, one refund with the
    // fee's share given back; they add up to the balance, newest first.
    let rows = all_rows(&server, &shop, 2);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let balance = server.available(&shop);
    assert_eq!(rows[0]["balance_after"], json!(balance));
    let total: i64 = rows.iter().map(|row| row["net"].as_i64().unwrap()).sum();
    assert_eq!(total, balance as i64, "the movements add up to the balance");
    for pair in rows.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert_eq!(
            newer["balance_after"].as_i64().unwrap() - newer["net"].as_i64().unwrap(),
            older["balance_after"].as_i64().unwrap(),
            "each balance follows from the one before: {newer} {older}"
        );
    }
    let refund_row = &rows[0];
    assert_eq!(refund_row["type"], "trade_refund");
    assert_eq!(refund_row["source"], json!(trades[1].0));
    // The refund takes back a fifth of the trade; a fifth of its fee comes back.
    assert_eq!((refund_row["amount"].as_i64(), refund_row["fee"].as_i64()), (Some(-5_000), Some(-trades[1].2 / 5)));
    for ((trade_no, amount, fee), row) in trades.iter().rev().zip(&rows[1..]) {
        let fee = *fee;
        assert_eq!(row["source"], json!(trade_no), "{row}");
        assert_eq!((row["amount"].as_i64(), row["fee"].as_i64()), (Some(*amount as i64), Some(fee)), "{row}");
        assert_eq!(row["net"].as_i64(), Some(*amount as i64 - fee));
    }

    // The buyer's: the top-up, then three payments.
    let rows = all_rows(&server, &buyer, 100);
    let kinds: Vec<&str> = rows.iter().map(|row| row["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["trade_refund", "trade_payment", "trade_payment", "trade_payment", "topup"]);
    assert_eq!(rows.last().unwrap()["balance_after"], json!(100_000));

    // The balance at a time: before anything, after the payments, now.
    let at = |key: &str, time: &str| {
        let (status, answer) = server.get(&format!("/v1/balance?at={}", time.replace('+', "%2B")), Some(key));
        assert_eq!(status, 200, "{answer}");
        answer["available"].as_u64().unwrap()
    };
    assert_eq!(at(&buyer, &before_anything), 0);
    assert_eq!(at(&buyer, &after_payments), 100_000 - 10_000 - 25_000 - 7_300);
    assert_eq!(at(&buyer, &now(&server)), server.available(&buyer));
    let settled: i64 = trades.iter().map(|(_, amount, fee)| *amount as i64 - fee).sum();
    assert_eq!(at(&shop, &after_payments) as i64, settled);
    let (status, _) = server.get("/v1/balance?at=yesterday", Some(&shop));
    assert_eq!(status, 400);
    // Operators read a party's by naming it; a party only its own.
    let (status, _) = server.get("/v1/balance-transactions", Some(ADMIN_KEY));
    assert_eq!(status, 422);
    let (_, by_operator) = server.get(&format!("/v1/balance-transactions?limit=100&party={shop_id}"), Some(ADMIN_KEY));
    assert_eq!(by_operator["data"].as_array().unwrap().len(), 4);
    let (status, _) = server.get(&format!("/v1/balance-transactions?party={shop_id}"), Some(&buyer));
    assert_eq!(status, 403);
    server.assert_balanced();
}

/// A merchant's bill of an ended day: one line per movement, oldest first,
/// each with the balance after it; totals that equal the wallet's change
/// over the day, fen for fen; only for days that have ended; finance staff
/// read any merchant's, support and users none.
#[test]
fn a_days_bill_totals_to_the_ledger_and_only_ended_days_have_one() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (shop_id, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 1_000_000);
    // The simulated clock starts at 2013-11-11 00:00 CST; a trade the day before is not in the bill.
    let mut trade_nos = Vec::new();
    for index in 0..5u64 {
        advance(&server, 3_600);
        let body = json!({ "out_trade_no": format!("d-{index}"), "amount": 1_000 + index * 111, "subject": "tea", "mode": "instant" });
        let (_, trade) = server.post("/v1/trades", Some(&shop), body);
        let trade_no = trade["trade_no"].as_str().unwrap().to_string();
        let (status, _) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({}));
        assert_eq!(status, 200);
        trade_nos.push(trade_no);
    }
    let refund = json!({ "out_request_no": "r-1", "amount": 500 });
    assert_eq!(server.post(&format!("/v1/trades/{}/refunds", trade_nos[2]), Some(&shop), refund).0, 201);
    let (status, answer) = server.get("/v1/bills?date=2013-11-11", Some(&shop));
    assert_eq!((status.as_u16(), answer["error"]["code"].as_str()), (409, Some("period_not_ended")));
    advance(&server, 24 * 3_600);
    // A movement of the next day: not in the bill.
    let body = json!({ "out_trade_no": "next-day", "amount": 999, "subject": "tea", "mode": "instant" });
    let (_, trade) = server.post("/v1/trades", Some(&shop), body);
    server.post(&format!("/v1/trades/{}/pay", trade["trade_no"].as_str().unwrap()), Some(&buyer), json!({}));

    let bill = |key: &str, query: &str| {
        let response = reqwest::blocking::Client::new()
            .get(format!("{}/v1/bills?{query}", server.base))
            .bearer_auth(key)
            .send()
            .unwrap();
        (response.status().as_u16(), response.headers().get("content-type").cloned(), response.text().unwrap())
    };
    let (status, kind, text) = bill(&shop, "date=2013-11-11");
    assert_eq!(status, 200, "{text}");
    assert_eq!(kind.unwrap(), "text/csv; charset=utf-8");
    let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).skip(1).collect();
    let fen = |yuan: &str| -> i64 {
        let negative = yuan.starts_with('-');
        let (whole, cents) = yuan.trim_start_matches('-').split_once('.').unwrap();
        let value = whole.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap();
        if negative { -value } else { value }
    };
    // Five settlements and their fees, the refund and its fee's share back.
    assert_eq!(lines.len(), 12, "{text}");
    assert!(lines.iter().all(|line| line.starts_with("2013-11-1")), "{text}");
    assert!(!text.contains("next-day"));
    let total: i64 = lines.iter().map(|line| fen(line.split(',').nth(4).unwrap())).sum();
    let totals = |name: &str| {
        let line = text.lines().find(|line| line.starts_with(&format!("# {name},"))).unwrap();
        fen(line.rsplit(',').next().unwrap())
    };
    let (opening, closing) = (totals("opening_balance"), totals("closing_balance"));
    assert_eq!(opening, 0);
    assert_eq!(closing - opening, total, "the lines add up to the day's change");
    assert_eq!(totals("net"), total);
    let at_midnight = {
        let (_, answer) = server.get("/v1/balance?at=2013-11-12T00:00:00%2B08:00", Some(&shop));
        answer["available"].as_i64().unwrap()
    };
    assert_eq!(closing, at_midnight, "the bill closes at the ledger's balance at midnight");
    let last = lines.last().unwrap();
    assert_eq!(fen(last.rsplit(',').next().unwrap()), closing, "the last line's balance is the closing one");
    assert!(lines.iter().any(|line| line.contains(",trade_refund,") && line.contains(",d-2,")), "{text}");

    // Monthly: not ended; operators: finance names the merchant; others may not.
    assert_eq!(bill(&shop, "month=2013-11").0, 409);
    let finance = {
        let body = json!({ "login": "fay", "password": "a long passphrase", "role": "finance" });
        assert_eq!(server.post("/v1/admin/staff", Some(ADMIN_KEY), body).0, 201);
        let (_, session) =
            server.post("/v1/staff/sessions", None, json!({ "login": "fay", "password": "a long passphrase" }));
        session["token"].as_str().unwrap().to_string()
    };
    let (status, _, same) = bill(&finance, &format!("date=2013-11-11&merchant={shop_id}"));
    assert_eq!((status, same), (200, text));
    assert_eq!(bill(&finance, "date=2013-11-11").0, 422);
    assert_eq!(bill(&buyer, "date=2013-11-11").0, 403);
    assert_eq!(bill(&shop, "date=2013-11-31").0, 422);
    assert_eq!(bill(&shop, &format!("date=2013-11-11&merchant={shop_id}")).0, 403);
}

/// A payment and a refund of one trade in the same instant (the simulated
/// clock stands still) are two balance transactions, each with its own fee.
#[test]
fn a_payment_and_a_refund_in_one_instant_keep_their_own_fees() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 100_000);
    let body = json!({ "out_trade_no": "same-instant", "amount": 5_000, "subject": "tea", "mode": "instant" });
    let (_, trade) = server.post("/v1/trades", Some(&shop), body);
    let trade_no = trade["trade_no"].as_str().unwrap();
    let (_, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({}));
    let fee = paid["fee"].as_i64().unwrap();
    let refund = json!({ "out_request_no": "r", "amount": 1_000 });
    assert_eq!(server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop), refund).0, 201);
    let rows = all_rows(&server, &shop, 10);
    let shape: Vec<(&str, i64, i64)> = rows
        .iter()
        .map(|row| (row["type"].as_str().unwrap(), row["amount"].as_i64().unwrap(), row["fee"].as_i64().unwrap()))
        .collect();
    assert_eq!(shape, [("trade_refund", -1_000, -fee / 5), ("trade_payment", 5_000, fee)]);
}
