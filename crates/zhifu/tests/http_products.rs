//! Black-box tests of Yu'e Bao, red packets and campaigns against a real
//! `zhifu serve` on the simulated clock (which starts 2013-11-11 00:00 CST).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

fn code(body: &Value) -> &str {
    Server::error_code(body)
}

fn simulated(directory: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec!["--clock", "simulated"];
    args.extend_from_slice(extra);
    Server::start(directory, &args)
}

fn fund(server: &Server, key: &str) -> Value {
    let (status, body) = server.get("/v1/fund", Some(key));
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[test]
fn a_days_yield_for_thousands_of_holders_sums_exactly_to_the_income_and_is_paid_once() {
    let directory = tempfile::tempdir().unwrap();
    let server = simulated(directory.path(), &["--rate-limit", "1000000"]);
    const HOLDERS: u64 = 2_000;
    // Awkward holdings: 1 yuan up to odd amounts, none alike in remainder.
    let holders: Vec<(String, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|part| {
                let server = &server;
                scope.spawn(move || {
                    (0..HOLDERS / 4)
                        .map(|i| {
                            let n = part * (HOLDERS / 4) + i;
                            let (_, key) = server.user(&format!("holder {n}"));
                            let holding = 100 + n * n * 7_919 % 99_991 + n;
                            server.top_up(&key, holding);
                            let (status, body) =
                                server.post("/v1/fund/subscriptions", Some(&key), json!({ "amount": holding }));
                            assert_eq!(status, StatusCode::CREATED, "{body}");
                            (key, holding)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let fund_value: u64 = holders.iter().map(|(_, v)| v).sum();
    // The day has not ended yet.
    let (status, body) =
        server.post("/v1/admin/fund/yield", Some(ADMIN_KEY), json!({ "date": "2013-11-11", "annual_rate_bps": 600 }));
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 86_400 }));
    let (status, day) =
        server.post("/v1/admin/fund/yield", Some(ADMIN_KEY), json!({ "date": "2013-11-11", "annual_rate_bps": 600 }));
    assert_eq!(status, StatusCode::OK, "{day}");
    let income = u128::from(fund_value) * 600 / 3_650_000;
    assert_eq!((day["fund_value"].as_u64(), day["income"].as_u64()), (Some(fund_value), Some(income as u64)));
    let mut paid = 0;
    for (key, holding) in &holders {
        let position = fund(&server, key);
        let yesterday = position["yesterday_yield"].as_u64().unwrap();
        // Each share is its proportion, rounded down, or one fen more.
        let floor = (u128::from(*holding) * income / u128::from(fund_value)) as u64;
        assert!(yesterday == floor || yesterday == floor + 1, "{holding}: {yesterday} vs {floor}");
        assert_eq!(position["value"].as_u64(), Some(holding + yesterday));
        assert_eq!(position["total_yield"].as_u64(), Some(yesterday));
        paid += yesterday;
    }
    assert_eq!(u128::from(paid), income, "the day pays exactly its income");
    // The same date again changes nothing and answers the same.
    let (status, again) =
        server.post("/v1/admin/fund/yield", Some(ADMIN_KEY), json!({ "date": "2013-11-11", "annual_rate_bps": 900 }));
    assert_eq!((status, &again), (StatusCode::OK, &day));
    assert_eq!(
        fund(&server, &holders[0].0)["total_yield"].as_u64(),
        fund(&server, &holders[0].0)["yesterday_yield"].as_u64()
    );
    server.assert_balanced();
}

#[test]
fn redemptions_are_instant_within_the_daily_limit_and_refused_beyond_it() {
    let directory = tempfile::tempdir().unwrap();
    let server = simulated(directory.path(), &["--fund-redeem-daily-limit", "10000"]);
    let (_, alice) = server.user("alice");
    server.top_up(&alice, 50_000);
    let (status, body) = server.post("/v1/fund/subscriptions", Some(&alice), json!({ "amount": 99 }));
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "below 1 yuan");
    assert_eq!(server.post("/v1/fund/subscriptions", Some(&alice), json!({ "amount": 40_000 })).0, StatusCode::CREATED);
    let (status, body) = server.post("/v1/fund/redemptions", Some(&alice), json!({ "amount": 6_000 }));
    assert_eq!((status, body["value"].as_u64()), (StatusCode::CREATED, Some(34_000)));
    assert_eq!(server.available(&alice), 16_000, "back in the wallet at once");
    let (status, body) = server.post("/v1/fund/redemptions", Some(&alice), json!({ "amount": 4_001 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"));
    assert_eq!(
        (server.available(&alice), fund(&server, &alice)["value"].as_u64()),
        (16_000, Some(34_000)),
        "nothing moved"
    );
    // A new business day, a new limit.
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 86_400 }));
    assert_eq!(server.post("/v1/fund/redemptions", Some(&alice), json!({ "amount": 10_000 })).0, StatusCode::CREATED);
    let (status, body) = server.post("/v1/fund/redemptions", Some(&alice), json!({ "amount": 1 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"));
    // Paying a trade straight from the fund.
    let (_, shop) = server.merchant("shop");
    let (_, trade) = server.post(
        "/v1/trades",
        Some(&shop),
        json!({ "out_trade_no": "f1", "amount": 5_000, "subject": "rice", "mode": "instant" }),
    );
    let trade_no = trade["trade_no"].as_str().unwrap();
    let (status, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&alice), json!({ "source": "fund" }));
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("TRADE_SUCCESS")));
    assert_eq!(fund(&server, &alice)["value"].as_u64(), Some(19_000));
    let (_, balance) = server.get("/v1/balance", Some(&alice));
    assert_eq!(balance["fund_value"].as_u64(), Some(19_000));
    server.assert_balanced();
}

#[test]
fn two_hundred_users_grabbing_a_ten_share_red_packet_get_exactly_ten_shares() {
    let directory = tempfile::tempdir().unwrap();
    let server = simulated(directory.path(), &["--rate-limit", "1000000"]);
    let (_, sender) = server.user("sender");
    server.top_up(&sender, 100_000);
    let (status, packet) = server.post(
        "/v1/red-packets",
        Some(&sender),
        json!({ "total": 8_888, "count": 10, "mode": "random", "greeting": "恭喜发财" }),
    );
    assert_eq!(status, StatusCode::CREATED, "{packet}");
    let id = packet["id"].as_str().unwrap().to_string();
    assert_eq!(server.available(&sender), 100_000 - 8_888, "held");
    let grabbers: Vec<String> = (0..200).map(|n| server.user(&format!("grabber {n}")).1).collect();
    let results: Vec<(StatusCode, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = grabbers
            .iter()
            .map(|key| {
                let (server, id) = (&server, &id);
                scope.spawn(move || server.post(&format!("/v1/red-packets/{id}/claims"), Some(key), json!({})))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let shares: Vec<u64> =
        results.iter().filter(|(s, _)| *s == StatusCode::CREATED).map(|(_, b)| b["amount"].as_u64().unwrap()).collect();
    assert_eq!(shares.len(), 10);
    assert_eq!(shares.iter().sum::<u64>(), 8_888);
    assert!(shares.iter().all(|&s| s >= 1));
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != StatusCode::CREATED)
            .all(|(s, b)| *s == StatusCode::CONFLICT && code(b) == "conflict")
    );
    let winner = grabbers.iter().find(|k| server.available(k) > 0).unwrap();
    assert_eq!(
        server.post(&format!("/v1/red-packets/{id}/claims"), Some(winner), json!({})).0,
        StatusCode::CONFLICT,
        "once each"
    );

    // An equal packet half claimed: the rest goes back after 24 hours.
    let (_, packet) =
        server.post("/v1/red-packets", Some(&sender), json!({ "total": 1_000, "count": 4, "mode": "equal" }));
    let id = packet["id"].as_str().unwrap().to_string();
    for key in &grabbers[..2] {
        let (status, body) = server.post(&format!("/v1/red-packets/{id}/claims"), Some(key), json!({}));
        assert_eq!((status, body["amount"].as_u64()), (StatusCode::CREATED, Some(250)));
    }
    let before = server.available(&sender);
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 86_400 }));
    assert_eq!(server.available(&sender), before + 500);
    assert_eq!(
        server.post(&format!("/v1/red-packets/{id}/claims"), Some(&grabbers[5]), json!({})).0,
        StatusCode::CONFLICT
    );
    let (status, body) =
        server.post("/v1/red-packets", Some(&sender), json!({ "total": 5, "count": 6, "mode": "equal" }));
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        "every share at least 1 fen"
    );
    server.assert_balanced();
}

#[test]
fn a_campaign_hit_concurrently_never_pays_more_than_its_budget() {
    let directory = tempfile::tempdir().unwrap();
    let server = simulated(directory.path(), &["--rate-limit", "1000000"]);
    let (_, shop) = server.merchant("shop");
    let campaign = json!({ "name": "双十一", "budget": 1_000, "discount": 100, "min_spend": 500, "per_user_limit": 1,
        "starts_at": "2013-11-11T00:00:00+08:00", "ends_at": "2013-11-12T00:00:00+08:00" });
    // The platform sponsors it from its marketing account.
    let (status, created) = server.post("/v1/campaigns", Some(ADMIN_KEY), campaign);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let campaign_id = created["id"].as_str().unwrap().to_string();
    let buyers: Vec<String> = (0..30)
        .map(|n| {
            let (_, key) = server.user(&format!("buyer {n}"));
            server.top_up(&key, 10_000);
            key
        })
        .collect();
    let trades: Vec<String> = (0..30).map(|n| {
        let body = json!({ "out_trade_no": format!("c{n}"), "amount": 1_000, "subject": "deal", "mode": "instant", "campaign": campaign_id });
        let (status, trade) = server.post("/v1/trades", Some(&shop), body);
        assert_eq!(status, StatusCode::CREATED, "{trade}");
        trade["trade_no"].as_str().unwrap().to_string()
    }).collect();
    let paid: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = buyers
            .iter()
            .zip(&trades)
            .map(|(key, trade)| {
                let server = &server;
                scope.spawn(move || {
                    let (status, body) = server.post(&format!("/v1/trades/{trade}/pay"), Some(key), json!({}));
                    assert_eq!(status, StatusCode::OK, "{body}");
                    body
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let discounted = paid.iter().filter(|t| t["discount"].as_u64() == Some(100)).count();
    assert_eq!(discounted, 10, "a budget of 10 discounts");
    let told: Vec<&str> = paid.iter().filter_map(|t| t["discount_note"].as_str()).collect();
    assert_eq!(told.len(), 20);
    assert!(told.iter().all(|note| note.starts_with("budget_exhausted")), "{told:?}");
    let (_, view) = server.get(&format!("/v1/campaigns/{campaign_id}"), Some(ADMIN_KEY));
    assert_eq!((view["spent"].as_u64(), view["remaining"].as_u64()), (Some(1_000), Some(0)));
    // The merchant got full price every time; buyers paid 900 or 1,000.
    let spent: u64 = buyers.iter().map(|k| 10_000 - server.available(k)).sum();
    assert_eq!(spent, 10 * 900 + 20 * 1_000);

    // A merchant's own campaign: unspent budget returns at the end.
    let own = json!({ "name": "shop sale", "budget": 500, "discount": 50, "min_spend": 0, "per_user_limit": 2,
        "starts_at": "2013-11-11T00:00:00+08:00", "ends_at": "2013-11-11T12:00:00+08:00" });
    let before = server.available(&shop);
    let (status, created) = server.post("/v1/campaigns", Some(&shop), own);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(server.available(&shop), before - 500, "the budget leaves the sponsor");
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 13 * 3_600 }));
    assert_eq!(server.available(&shop), before, "and comes back unspent");
    let (_, ended) = server.get(&format!("/v1/campaigns/{}", created["id"].as_str().unwrap()), Some(&shop));
    assert_eq!(ended["returned"].as_u64(), Some(500));
    server.assert_balanced();
}

#[test]
fn a_coupon_is_used_once_and_expires_on_the_clock() {
    let directory = tempfile::tempdir().unwrap();
    let server = simulated(directory.path(), &[]);
    let (_, shop) = server.merchant("shop");
    let (_, other_shop) = server.merchant("other shop");
    let (alice_id, alice) = server.user("alice");
    let (_, bob) = server.user("bob");
    server.top_up(&alice, 10_000);
    let campaign = json!({ "name": "coupons", "budget": 1_000, "discount": 200, "min_spend": 0, "per_user_limit": 5,
        "starts_at": "2013-11-11T00:00:00+08:00", "ends_at": "2013-11-20T00:00:00+08:00" });
    server.top_up(&bob, 1);
    let (_, created) = server.post("/v1/campaigns", Some(ADMIN_KEY), campaign);
    let campaign_id = created["id"].as_str().unwrap();
    let issue = |expires_at: Option<&str>| {
        let mut body = json!({ "user": alice_id });
        if let Some(at) = expires_at {
            body["expires_at"] = json!(at);
        }
        let (status, coupon) = server.post(&format!("/v1/campaigns/{campaign_id}/coupons"), Some(ADMIN_KEY), body);
        assert_eq!(status, StatusCode::CREATED, "{coupon}");
        coupon["id"].as_str().unwrap().to_string()
    };
    let coupon = issue(None);
    let trade = |shop: &str, no: &str| {
        let body = json!({ "out_trade_no": no, "amount": 1_000, "subject": "s", "mode": "instant" });
        server.post("/v1/trades", Some(shop), body).1["trade_no"].as_str().unwrap().to_string()
    };
    let first = trade(&shop, "k1");
    let (status, paid) = server.post(&format!("/v1/trades/{first}/pay"), Some(&alice), json!({ "coupon": coupon }));
    assert_eq!((status, paid["discount"].as_u64()), (StatusCode::OK, Some(200)), "{paid}");
    assert_eq!(server.available(&alice), 9_200);
    let second = trade(&shop, "k2");
    let (status, body) = server.post(&format!("/v1/trades/{second}/pay"), Some(&alice), json!({ "coupon": coupon }));
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"), "used once");
    // Only its owner may use it.
    let (status, _) = server.post(&format!("/v1/trades/{second}/pay"), Some(&bob), json!({ "coupon": coupon }));
    assert_eq!(status, StatusCode::NOT_FOUND);
    // It expires on the clock.
    let short = issue(Some("2013-11-11T01:00:00+08:00"));
    server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": 3_600 }));
    let (status, body) = server.post(&format!("/v1/trades/{second}/pay"), Some(&alice), json!({ "coupon": short }));
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"), "expired");
    // A merchant's coupon is not good at another merchant; the platform's are.
    let (status, own) = server.post(
        "/v1/campaigns",
        Some(&other_shop),
        json!({ "name": "own", "budget": 100, "discount": 10, "min_spend": 0,
        "per_user_limit": 1, "starts_at": "2013-11-11T00:00:00+08:00", "ends_at": "2013-11-20T00:00:00+08:00" }),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the sponsor has no money for the budget: {own}");
    assert_eq!(server.available(&alice), 9_200, "nothing moved by the refused payments");
    server.assert_balanced();
}
