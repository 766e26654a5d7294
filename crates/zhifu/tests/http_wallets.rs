//! Black-box tests of `zhifu serve`: parties, balances, statements,
//! top-ups, transfers, withdrawals, fees, idempotency, auth, limits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

fn code(body: &Value) -> &str {
    Server::error_code(body)
}

#[test]
fn wallets_move_money_with_fees_and_statements() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (alice_id, alice) = server.user("alice");
    let (bob_id, bob) = server.user("bob");
    let (merchant_id, merchant) = server.merchant("shop");
    server.top_up(&alice, 500_000);

    // 2,000 yuan at the 2013 rule: 0.1% = 2 yuan.
    let (status, body) =
        server.post("/v1/transfers", Some(&alice), json!({ "to": bob_id, "amount": 200_000, "memo": "rent" }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["amount"].as_u64(), body["fee"].as_u64()), (Some(200_000), Some(200)));
    assert!(body["id"].as_str().unwrap().starts_with("trf_"));
    // To a merchant too; the minimum fee is 0.5 yuan.
    let (status, body) = server.post("/v1/transfers", Some(&alice), json!({ "to": merchant_id, "amount": 100 }));
    assert_eq!((status, body["fee"].as_u64()), (StatusCode::CREATED, Some(50)));
    assert_eq!(server.available(&alice), 500_000 - 200_200 - 150);
    assert_eq!(server.available(&bob), 200_000);
    assert_eq!(server.available(&merchant), 100);

    // Statement: newest first, paginated with starting_after.
    let (status, first) = server.get("/v1/statement?limit=2", Some(&alice));
    assert_eq!(status, StatusCode::OK);
    let entries = first["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(first["has_more"], json!(true));
    assert_eq!((entries[0]["type"].as_str(), entries[0]["amount"].as_u64()), (Some("transfer_fee"), Some(50)));
    let cursor = entries[1]["id"].as_str().unwrap();
    let (_, rest) = server.get(&format!("/v1/statement?limit=100&starting_after={cursor}"), Some(&alice));
    let kinds: Vec<&str> = rest["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["transfer_fee", "transfer", "topup"]);
    assert_eq!(rest["has_more"], json!(false));

    // Bad amounts and recipients are 400/404, never 5xx, and move nothing.
    for bad in [
        json!({ "to": bob_id, "amount": 0 }),
        json!({ "to": bob_id, "amount": -5 }),
        json!({ "to": bob_id, "amount": 1.5 }),
        json!({ "to": bob_id, "amount": "100" }),
        json!({ "to": bob_id, "amount": 1_000_000_000_000_001u64 }),
        json!({ "to": bob_id }),
        json!({ "to": bob_id, "amount": 1, "extra": true }),
    ] {
        let (status, body) = server.post("/v1/transfers", Some(&alice), bad.clone());
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{bad}");
    }
    // Made-up ids, and a real party's id under another kind's prefix.
    let merchant_as_user = merchant_id.replacen("mch_", "usr_", 1);
    for to in ["usr_999", "usr_0", "nobody", "mch_1", &merchant_as_user] {
        let (status, body) = server.post("/v1/transfers", Some(&alice), json!({ "to": to, "amount": 1 }));
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{to}");
    }
    let (status, body) = server.post("/v1/transfers", Some(&alice), json!({ "to": alice_id, "amount": 1 }));
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"), "to yourself");
    let (status, body) = server.post("/v1/transfers", Some(&bob), json!({ "to": alice_id, "amount": 10_000_000 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"));
    assert_eq!(server.available(&bob), 200_000);
    let (status, body) = server.post("/v1/transfers", Some(&alice), json!("not an object"));
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    server.assert_balanced();
}

#[test]
fn roles_and_ownership_are_enforced_without_leaking_data() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (alice_id, alice) = server.user("alice");
    let (_, bob) = server.user("bob");
    let (merchant_id, merchant) = server.merchant("shop");
    server.top_up(&alice, 10_000);
    let (_, withdrawal) = server.post("/v1/withdrawals", Some(&alice), json!({ "amount": 1_000 }));
    let withdrawal_id = withdrawal["id"].as_str().unwrap().to_string();

    // No key, a wrong key, a malformed header: 401.
    for key in [None, Some("zk_nope"), Some("")] {
        let (status, body) = server.get("/v1/balance", key);
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{key:?}");
    }
    // Users and merchants cannot administer; the admin cannot spend.
    for key in [&alice, &merchant] {
        let (status, _) = server.post("/v1/users", Some(key), json!({ "name": "mallory" }));
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = server.get(&format!("/v1/users/{alice_id}"), Some(key));
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = server.get("/v1/admin/ledger/check", Some(key));
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = server.post("/v1/topups", Some(ADMIN_KEY), json!({ "amount": 1, "bank": "ICBC" }));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.post("/v1/transfers", Some(ADMIN_KEY), json!({ "to": alice_id, "amount": 1 }));
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A merchant does not top up or send P2P transfers; it may withdraw.
    let (status, _) = server.post("/v1/topups", Some(&merchant), json!({ "amount": 1, "bank": "ICBC" }));
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bob cannot see Alice's withdrawal: it does not exist for him.
    let (status, body) = server.get(&format!("/v1/withdrawals/{withdrawal_id}"), Some(&bob));
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server.get(&format!("/v1/withdrawals/{withdrawal_id}"), Some(&alice));
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("pending")));
    // Admin views: the right kind only.
    let (status, body) = server.get(&format!("/v1/users/{alice_id}"), Some(ADMIN_KEY));
    assert_eq!(
        (status, body["balance"]["available"].as_u64(), body["balance"]["held"].as_u64()),
        (StatusCode::OK, Some(9_000), Some(1_000))
    );
    let (status, _) = server.get(&format!("/v1/merchants/{alice_id}"), Some(ADMIN_KEY));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server.get(&format!("/v1/merchants/{merchant_id}"), Some(ADMIN_KEY));
    assert_eq!((status, body["fee_rate_bps"].as_u64()), (StatusCode::OK, Some(60)));
    let (status, body) = server.get("/v1/nothing-here", Some(ADMIN_KEY));
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    server.assert_balanced();
}

#[test]
fn an_idempotency_key_replays_the_first_answer_and_refuses_a_different_body() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (alice_id, alice) = server.user("alice");
    let (bob_id, bob) = server.user("bob");
    server.top_up(&alice, 100_000);
    let transfer = json!({ "to": bob_id, "amount": 10_000 });
    let first = server.call_with(Method::POST, "/v1/transfers", Some(&alice), Some(transfer.clone()), Some("pay-1"));
    let again = server.call_with(Method::POST, "/v1/transfers", Some(&alice), Some(transfer.clone()), Some("pay-1"));
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first, again, "the stored status and body");
    assert_eq!(server.available(&bob), 10_000, "moved once");
    let other = json!({ "to": bob_id, "amount": 20_000 });
    let (status, body) = server.call_with(Method::POST, "/v1/transfers", Some(&alice), Some(other), Some("pay-1"));
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "idempotency_mismatch"));
    // Keys are per API key: Bob may use the same key for his own request.
    let back = json!({ "to": alice_id, "amount": 1_000 });
    let (status, _) = server.call_with(Method::POST, "/v1/transfers", Some(&bob), Some(back), Some("pay-1"));
    assert_eq!(status, StatusCode::CREATED);
    // A refused request is replayed as refused, too.
    let too_much = json!({ "to": bob_id, "amount": 10_000_000 });
    let refused = server.call_with(Method::POST, "/v1/transfers", Some(&alice), Some(too_much.clone()), Some("pay-2"));
    server.top_up(&alice, 100_000_000);
    let replay = server.call_with(Method::POST, "/v1/transfers", Some(&alice), Some(too_much), Some("pay-2"));
    assert_eq!(refused, replay);
    assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY);
    // A party created under an Idempotency-Key gets the same key on a retry.
    let create =
        |key| server.call_with(Method::POST, "/v1/users", Some(ADMIN_KEY), Some(json!({ "name": "carol" })), Some(key));
    let (first, again) = (create("carol-1"), create("carol-1"));
    assert_eq!(first, again);
    let carol_key = first.1["api_key"].as_str().unwrap();
    assert_eq!(server.available(carol_key), 0, "the replayed key works");
    server.assert_balanced();
}

#[test]
fn only_one_of_two_overspending_transfers_succeeds_under_concurrency() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    server.fees("transfer", json!({ "rate_bps": 0, "minimum": 0 }));
    let (_, alice) = server.user("alice");
    let (bob_id, bob) = server.user("bob");
    server.top_up(&alice, 1_000);
    // 20 rounds of two concurrent 600-fen transfers from a 1,000-fen wallet,
    // topped up again between rounds: exactly one of each pair succeeds.
    for round in 0..20 {
        let results: Vec<StatusCode> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| server.post("/v1/transfers", Some(&alice), json!({ "to": bob_id, "amount": 600 })).0)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let succeeded = results.iter().filter(|s| **s == StatusCode::CREATED).count();
        let refused = results.iter().filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY).count();
        assert_eq!((succeeded, refused), (1, 1), "round {round}: {results:?}");
        server.top_up(&alice, 600);
    }
    assert_eq!(server.available(&bob), 20 * 600);
    assert_eq!(server.available(&alice), 1_000);
    // Many at once: 50 transfers of 100 against 1,000: exactly 10 succeed.
    let results: Vec<StatusCode> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                scope.spawn(|| server.post("/v1/transfers", Some(&alice), json!({ "to": bob_id, "amount": 100 })).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|s| **s == StatusCode::CREATED).count(), 10);
    assert_eq!(server.available(&alice), 0);
    assert_eq!(server.available(&bob), 20 * 600 + 1_000);
    server.assert_balanced();
}

#[test]
fn withdrawals_settle_or_fail_on_the_simulated_clock() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated", "--withdrawal-settle-seconds", "3600"]);
    let (_, alice) = server.user("alice");
    let (_, shop) = server.merchant("shop");
    server.top_up(&alice, 3_000_000);
    let (status, body) = server.post("/v1/withdrawals", Some(&alice), json!({ "amount": 2_500_000 }));
    // 20,000 yuan free for life, then 0.1%: 5 yuan on the other 5,000.
    assert_eq!(
        (status, body["fee"].as_u64(), body["status"].as_str()),
        (StatusCode::CREATED, Some(500), Some("pending"))
    );
    let id = body["id"].as_str().unwrap().to_string();
    let (_, balance) = server.get("/v1/balance", Some(&alice));
    assert_eq!((balance["available"].as_u64(), balance["held"].as_u64()), (Some(499_500), Some(2_500_500)));
    let (status, clock) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 3_599 }));
    assert_eq!((status, clock["withdrawals_settled"].as_u64()), (StatusCode::OK, Some(0)));
    let (status, clock) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 1 }));
    assert_eq!((status, clock["withdrawals_settled"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(clock["now"].as_str(), Some("2013-11-10T17:00:00.000Z"));
    let (_, body) = server.get(&format!("/v1/withdrawals/{id}"), Some(&alice));
    assert_eq!(body["status"].as_str(), Some("succeeded"));
    let (_, balance) = server.get("/v1/balance", Some(&alice));
    assert_eq!((balance["available"].as_u64(), balance["held"].as_u64()), (Some(499_500), Some(0)));
    // The bank's statement and the ledger agree for that day (CST).
    let (status, report) = server.get("/v1/admin/reconciliation?date=2013-11-11", Some(ADMIN_KEY));
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["bank_entries"].as_u64(), report["matched"].as_u64(), report["balanced"].as_bool()),
        (Some(2), Some(2), Some(true)),
        "{report}"
    );
    let (status, body) = server.get("/v1/admin/reconciliation?date=2013-02-30", Some(ADMIN_KEY));
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    // Merchants withdraw too; more than they hold is refused.
    let (status, body) = server.post("/v1/withdrawals", Some(&shop), json!({ "amount": 1 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"));
    let (status, body) =
        server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 1_000_000_000_000u64 }));
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"));
    server.assert_balanced();
}

#[test]
fn a_failed_withdrawal_returns_money_and_fee() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated", "--bank-failure-bps", "10000"]);
    server.fees("withdrawal", json!({ "rate_bps": 10, "minimum": 10 }));
    let (_, alice) = server.user("alice");
    server.top_up(&alice, 100_000);
    let (status, body) = server.post("/v1/withdrawals", Some(&alice), json!({ "amount": 50_000 }));
    assert_eq!((status, body["fee"].as_u64()), (StatusCode::CREATED, Some(50)));
    assert_eq!(server.available(&alice), 49_950);
    let (_, clock) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 7_200 }));
    assert_eq!(clock["withdrawals_failed"].as_u64(), Some(1));
    assert_eq!(server.available(&alice), 100_000, "money and fee returned");
    let (_, statement) = server.get("/v1/statement", Some(&alice));
    let phases: Vec<&str> =
        statement["data"].as_array().unwrap().iter().map(|e| e["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["released", "released", "held", "held", "posted"]);
    // The real clock cannot be moved.
    let real = tempfile::tempdir().unwrap();
    let real = Server::start(real.path(), &[]);
    let (status, body) = real.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 1 }));
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    server.assert_balanced();
}

#[test]
fn a_restart_in_the_middle_loses_nothing_acknowledged() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--snapshot-every", "7"]);
    let (_, alice) = server.user("alice");
    let (bob_id, bob) = server.user("bob");
    server.top_up(&alice, 1_000_000);
    let mut sent = 0;
    for _ in 0..25 {
        let (status, _) = server.post("/v1/transfers", Some(&alice), json!({ "to": bob_id, "amount": 1_000 }));
        assert_eq!(status, StatusCode::CREATED);
        sent += 1_000;
    }
    let alice_before = server.available(&alice);
    let server = server.crash_and_restart();
    assert_eq!(server.available(&bob), sent, "every acknowledged transfer is there");
    assert_eq!(server.available(&alice), alice_before);
    let (status, _) = server.post("/v1/transfers", Some(&alice), json!({ "to": bob_id, "amount": 1_000 }));
    assert_eq!(status, StatusCode::CREATED, "the keys survive too");
    server.assert_balanced();
}

#[test]
fn sigterm_stops_the_server_cleanly_and_keeps_what_it_acknowledged() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (_, alice) = server.user("alice");
    server.top_up(&alice, 4_242);
    assert!(server.terminate(), "zhifu serve exits 0 on SIGTERM");
    let server = Server::start(directory.path(), &[]);
    assert_eq!(server.available(&alice), 4_242);
}

#[test]
fn limits_answer_413_and_429() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--body-limit", "1024", "--rate-limit", "5"]);
    let (_, alice) = server.user("alice");
    let big = json!({ "name": "x".repeat(5_000) });
    let (status, body) = server.post("/v1/users", Some(ADMIN_KEY), big);
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    let statuses: Vec<StatusCode> = (0..40).map(|_| server.get("/v1/balance", Some(&alice)).0).collect();
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let (status, body) = server.get("/v1/balance", Some(&alice));
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(code(&body), "rate_limited");
    }
    let (status, body) = server.get("/healthz", None);
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[test]
fn openapi_and_metrics_describe_the_running_server() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (status, document) = server.get("/openapi.json", None);
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/users", "/v1/transfers", "/v1/withdrawals", "/v1/statement", "/v1/admin/ledger/check"] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
    let (_, alice) = server.user("alice");
    server.top_up(&alice, 1);
    let response = server.client.get(format!("{}/metrics", server.base)).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().unwrap();
    assert!(
        text.contains("zhifu_http_requests_total{method=\"POST\",route=\"/v1/topups\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(text.contains("zhifu_journal_fsyncs_total"));
    let (status, page) = server.get("/", None);
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("zhifu"));
}

#[test]
fn a_fee_schedule_past_the_largest_amount_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let too_large = 1_000_000_000_000_001u64;
    for schedule in [
        json!({ "rate_bps": 10, "minimum": too_large }),
        json!({ "rate_bps": 10, "minimum": 0, "maximum": too_large }),
        json!({ "rate_bps": 10, "minimum": 0, "free_quota": { "amount": too_large, "period": "month" } }),
    ] {
        let (status, body) =
            server.call(Method::PUT, "/v1/admin/fee-schedules/transfer", Some(ADMIN_KEY), Some(schedule));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    // The largest amount itself is a fee schedule's limit, not past it.
    server.fees("transfer", json!({ "rate_bps": 10, "minimum": 0, "maximum": too_large - 1 }));
}
