//! Black-box tests of micro-loans on the simulated clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

fn code(body: &Value) -> &str {
    Server::error_code(body)
}

/// A merchant that sold `sales` fen this month (0.6% fee taken), and the server.
fn merchant_with_sales(directory: &std::path::Path, sales: u64) -> (Server, String) {
    let server = Server::start(directory, &["--clock", "simulated"]);
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, sales + 1);
    if sales > 0 {
        let (_, trade) = server.post(
            "/v1/trades",
            Some(&shop),
            json!({ "out_trade_no": "s", "amount": sales, "subject": "goods", "mode": "instant" }),
        );
        let trade_no = trade["trade_no"].as_str().unwrap();
        assert_eq!(server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({})).0, StatusCode::OK);
    }
    (server, shop)
}

fn advance_days(server: &Server, days: u64) {
    let (status, body) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": days * 86_400 }));
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn loan(server: &Server, key: &str, id: &str) -> Value {
    let (status, body) = server.get(&format!("/v1/loans/{id}"), Some(key));
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[test]
fn no_trade_history_means_no_credit() {
    let directory = tempfile::tempdir().unwrap();
    let (server, shop) = merchant_with_sales(directory.path(), 0);
    let (_, credit) = server.get("/v1/credit", Some(&shop));
    assert_eq!((credit["limit"].as_u64(), credit["daily_rate_bps"].as_u64()), (Some(0), Some(5)));
    let (status, body) =
        server.post("/v1/loans", Some(&shop), json!({ "amount": 1, "term_days": 7, "out_request_no": "l1" }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"));
    server.assert_balanced();
}

#[test]
fn a_loan_lived_through_its_term_repaid_late_with_penalties() {
    let directory = tempfile::tempdir().unwrap();
    // 900,000 fen this month: the average over three months is 300,000; the line is 200% of it.
    let (server, shop) = merchant_with_sales(directory.path(), 900_000);
    let (_, credit) = server.get("/v1/credit", Some(&shop));
    assert_eq!(credit["limit"].as_u64(), Some(600_000));
    let (status, body) = server.post(
        "/v1/loans",
        Some(&shop),
        json!({ "amount": 600_001, "term_days": 10, "out_request_no": "too-much" }),
    );
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"), "above the credit line");
    let wallet_before = server.available(&shop);
    let (status, created) =
        server.post("/v1/loans", Some(&shop), json!({ "amount": 300_000, "term_days": 10, "out_request_no": "l1" }));
    assert_eq!((status, created["status"].as_str()), (StatusCode::CREATED, Some("active")), "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["schedule"][0]["interest"].as_u64(), Some(10 * 150), "projected: 10 days of 0.05%");
    assert_eq!(server.available(&shop), wallet_before + 300_000, "disbursed to the balance");
    let (_, credit) = server.get("/v1/credit", Some(&shop));
    assert_eq!((credit["used"].as_u64(), credit["available"].as_u64()), (Some(300_000), Some(300_000)));
    // Three days: 3 × ⌊300,000 × 5 / 10,000⌋ = 450.
    advance_days(&server, 3);
    assert_eq!(loan(&server, &shop, &id)["accrued_interest"].as_u64(), Some(450));
    // A repayment pays interest first, then principal.
    let (status, repaid) = server.post(&format!("/v1/loans/{id}/repayments"), Some(&shop), json!({ "amount": 10_000 }));
    assert_eq!(status, StatusCode::OK, "{repaid}");
    assert_eq!((repaid["accrued_interest"].as_u64(), repaid["principal"].as_u64()), (Some(0), Some(290_450)));
    // The rest of the term on the lower principal, computed independently day by day.
    let mut expected_interest = 0;
    for _ in 4..=10 {
        expected_interest += 290_450 * 5 / 10_000;
    }
    advance_days(&server, 7);
    let at_term = loan(&server, &shop, &id);
    assert_eq!(at_term["accrued_interest"].as_u64(), Some(expected_interest));
    assert_eq!(at_term["status"].as_str(), Some("overdue"), "due at the end of day 10");
    // Five days late: interest and a penalty each day.
    advance_days(&server, 5);
    let late = loan(&server, &shop, &id);
    let daily = 290_450 * 5 / 10_000;
    assert_eq!(late["accrued_interest"].as_u64(), Some(expected_interest + 5 * daily));
    assert_eq!(late["penalties"].as_u64(), Some(5 * daily));
    let (_, portfolio) = server.get("/v1/admin/loans/portfolio", Some(ADMIN_KEY));
    assert_eq!((portfolio["loans_overdue"].as_u64(), portfolio["overdue_1_30"].as_u64()), (Some(1), Some(290_450)));
    // Paying more than is owed is refused; paying exactly what is owed ends it.
    let owed = late["owed"].as_u64().unwrap();
    let (status, body) = server.post(&format!("/v1/loans/{id}/repayments"), Some(&shop), json!({ "amount": owed + 1 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"));
    let (status, done) = server.post(&format!("/v1/loans/{id}/repayments"), Some(&shop), json!({ "amount": owed }));
    assert_eq!((status, done["status"].as_str(), done["owed"].as_u64()), (StatusCode::OK, Some("repaid"), Some(0)));
    let total_interest = 450 + expected_interest + 5 * daily;
    assert_eq!(done["interest_accrued_total"].as_u64(), Some(total_interest));
    assert_eq!(server.available(&shop), wallet_before + 300_000 - 10_000 - owed);
    let (_, portfolio) = server.get("/v1/admin/loans/portfolio", Some(ADMIN_KEY));
    assert_eq!(
        (portfolio["loans_repaid"].as_u64(), portfolio["interest_earned"].as_u64()),
        (Some(1), Some(total_interest))
    );
    let (_, events) = server.get("/v1/events", Some(&shop));
    let kinds: Vec<&str> = events["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"loan.overdue") && kinds.contains(&"loan.disbursed"), "{kinds:?}");
    server.assert_balanced();
}

#[test]
fn a_loan_repaid_early_costs_only_the_days_it_ran() {
    let directory = tempfile::tempdir().unwrap();
    let (server, shop) = merchant_with_sales(directory.path(), 3_000_000);
    let (_, created) = server.post(
        "/v1/loans",
        Some(&shop),
        json!({ "amount": 1_000_000, "term_days": 30, "out_request_no": "early" }),
    );
    let id = created["id"].as_str().unwrap().to_string();
    // Retrying with the same out_request_no returns the same loan; other fields are refused.
    let (status, again) = server.post(
        "/v1/loans",
        Some(&shop),
        json!({ "amount": 1_000_000, "term_days": 30, "out_request_no": "early" }),
    );
    assert_eq!((status, again["id"].as_str()), (StatusCode::CREATED, Some(id.as_str())));
    assert_eq!(
        server.post("/v1/loans", Some(&shop), json!({ "amount": 5, "term_days": 30, "out_request_no": "early" })).0,
        StatusCode::CONFLICT
    );
    advance_days(&server, 2);
    let owed = loan(&server, &shop, &id)["owed"].as_u64().unwrap();
    assert_eq!(owed, 1_000_000 + 2 * 500);
    let (_, done) = server.post(&format!("/v1/loans/{id}/repayments"), Some(&shop), json!({ "amount": owed }));
    assert_eq!(done["status"].as_str(), Some("repaid"));
    advance_days(&server, 40);
    assert_eq!(
        loan(&server, &shop, &id)["interest_accrued_total"].as_u64(),
        Some(1_000),
        "nothing accrues once repaid"
    );
    // Another merchant cannot see it.
    let (_, other) = server.merchant("other");
    assert_eq!(server.get(&format!("/v1/loans/{id}"), Some(&other)).0, StatusCode::NOT_FOUND);
    server.assert_balanced();
}

#[test]
fn an_order_loan_is_repaid_by_its_trades_settlement_in_the_same_chain() {
    let directory = tempfile::tempdir().unwrap();
    // 900,000 fen sold this month: a credit line of 600,000.
    let (server, shop) = merchant_with_sales(directory.path(), 900_000);
    let (_, buyer) = server.user("escrow buyer");
    server.top_up(&buyer, 100_000);
    let body = json!({ "out_trade_no": "o1", "amount": 100_000, "subject": "sofa", "mode": "escrow", "auto_confirm_days": 10 });
    let (_, trade) = server.post("/v1/trades", Some(&shop), body);
    let trade_no = trade["trade_no"].as_str().unwrap().to_string();
    let advance_on = |request: &str, body: Value| {
        let mut body = body;
        body["out_request_no"] = json!(request);
        server.post(&format!("/v1/trades/{trade_no}/advance"), Some(&shop), body)
    };
    // Not before the buyer paid.
    assert_eq!(advance_on("a0", json!({})).0, StatusCode::CONFLICT);
    server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({}));
    server.post(&format!("/v1/trades/{trade_no}/ship"), Some(&shop), json!({}));
    // At most 80% of what the trade will pay: 80% of 100,000 less the 600 fee.
    let (status, body) = advance_on("a0", json!({ "amount": 79_521 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"), "{body}");
    let wallet_before = server.available(&shop);
    let (status, advance) = advance_on("a1", json!({}));
    assert_eq!((status, advance["principal"].as_u64()), (StatusCode::CREATED, Some(79_520)), "{advance}");
    let id = advance["id"].as_str().unwrap().to_string();
    assert_eq!(server.available(&shop), wallet_before + 79_520, "the advance, now");
    assert_eq!(advance_on("a2", json!({})).0, StatusCode::CONFLICT, "one advance per trade");
    // Ten days later the trade auto-confirms: the settlement (100,000 less the
    // 600 fee) repays the advance and its 10 days of interest first.
    advance_days(&server, 10);
    let (_, trade) = server.get(&format!("/v1/trades/{trade_no}"), Some(&shop));
    assert_eq!(trade["status"].as_str(), Some("TRADE_SUCCESS"));
    let after = loan(&server, &shop, &id);
    let interest = 10 * (79_520 * 5 / 10_000);
    assert_eq!(
        (after["status"].as_str(), after["interest_accrued_total"].as_u64(), after["repaid_total"].as_u64()),
        (Some("repaid"), Some(interest), Some(79_520 + interest))
    );
    assert_eq!(server.available(&shop), wallet_before + 100_000 - 600 - interest, "the trade less fee and interest");
    server.assert_balanced();
}

/// The operator's lending terms: a new credit multiple and cap change the
/// credit line at once; new rates apply to new loans, an existing loan keeps
/// its own; terms beyond their bounds and non-admins are refused; audited.
#[test]
fn lending_terms_set_by_an_admin_apply_to_credit_and_new_loans() {
    let directory = tempfile::tempdir().unwrap();
    let (server, shop) = merchant_with_sales(directory.path(), 3_000_000);
    let (_, before) = server.get("/v1/credit", Some(&shop));
    let (status, first) =
        server.post("/v1/loans", Some(&shop), json!({ "amount": 10_000, "term_days": 7, "out_request_no": "l1" }));
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let terms = json!({ "daily_rate_bps": 9, "penalty_daily_rate_bps": 20, "credit_multiple_percent": 100, "credit_cap": 500_000 });
    let (status, set) = server.call(reqwest::Method::PUT, "/v1/admin/loan-terms", Some(ADMIN_KEY), Some(terms.clone()));
    assert_eq!((status, &set), (StatusCode::OK, &terms));
    assert_eq!(server.get("/v1/admin/loan-terms", Some(ADMIN_KEY)).1, terms);
    let (_, after) = server.get("/v1/credit", Some(&shop));
    assert_eq!(after["daily_rate_bps"], 9);
    assert_eq!(after["limit"], 500_000, "capped: {before} → {after}");
    let (status, second) =
        server.post("/v1/loans", Some(&shop), json!({ "amount": 10_000, "term_days": 7, "out_request_no": "l2" }));
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["daily_rate_bps"], 9);
    assert_eq!(
        loan(&server, &shop, first["id"].as_str().unwrap())["daily_rate_bps"],
        5,
        "an existing loan keeps its rate"
    );
    let beyond =
        json!({ "daily_rate_bps": 101, "penalty_daily_rate_bps": 0, "credit_multiple_percent": 0, "credit_cap": 0 });
    let (status, body) = server.call(reqwest::Method::PUT, "/v1/admin/loan-terms", Some(ADMIN_KEY), Some(beyond));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = server.call(reqwest::Method::PUT, "/v1/admin/loan-terms", Some(&shop), Some(terms));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, audit) = server.get("/v1/admin/audit?target=loan_terms", Some(ADMIN_KEY));
    assert_eq!(audit["data"][0]["action"], "loan_terms.set", "{audit}");
    server.assert_balanced();
}
