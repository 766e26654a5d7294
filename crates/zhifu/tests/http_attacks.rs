//! Regression tests for what a day of attacks on `zhifu serve` found (issue
//! 23, `docs/security.md`): each test is one finding, black-box against a
//! real server, and ends with the ledger check balanced.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

fn code(body: &Value) -> &str {
    Server::error_code(body)
}

fn advance_clock(server: &Server, seconds: u64) {
    let (status, body) = server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": seconds }));
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A trade of `amount` by `shop`, paid by `buyer` (escrow ones shipped too).
fn paid_trade(server: &Server, shop: &str, buyer: &str, reference: &str, amount: u64, mode: &str) -> String {
    let body = json!({ "out_trade_no": reference, "amount": amount, "subject": "goods", "mode": mode });
    let (status, trade) = server.post("/v1/trades", Some(shop), body);
    assert_eq!(status, StatusCode::CREATED, "{trade}");
    let trade_no = trade["trade_no"].as_str().unwrap().to_string();
    let (status, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(buyer), json!({}));
    assert_eq!(status, StatusCode::OK, "{paid}");
    if mode == "escrow" {
        let (status, shipped) = server.post(&format!("/v1/trades/{trade_no}/ship"), Some(shop), json!({}));
        assert_eq!(status, StatusCode::OK, "{shipped}");
    }
    trade_no
}

fn refund(server: &Server, shop: &str, trade_no: &str, request: &str, amount: u64) -> (StatusCode, Value) {
    let body = json!({ "out_request_no": request, "amount": amount });
    server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(shop), body)
}

fn balance(server: &Server, key: &str) -> Value {
    let (status, body) = server.get("/v1/balance", Some(key));
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Finding 1 (critical): a merchant without credit took an advance of a
/// trade's whole amount, had the trade refunded and withdrew the advance.
#[test]
fn an_advance_needs_credit_and_a_refund_of_its_trade_repays_it_first() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let (_, thief) = server.merchant("new shop");
    let (_, accomplice) = server.user("accomplice");
    server.top_up(&accomplice, 1_000_000_000_000);
    let trade = paid_trade(&server, &thief, &accomplice, "big", 1_000_000_000_000, "escrow");
    let (status, body) =
        server.post(&format!("/v1/trades/{trade}/advance"), Some(&thief), json!({ "out_request_no": "a" }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"), "no credit, no advance");
    assert_eq!(server.available(&thief), 0);

    // A merchant with credit: 900,000 sold this month gives a line of 600,000.
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 2_000_000);
    paid_trade(&server, &shop, &buyer, "sales", 900_000, "instant");
    let trade = paid_trade(&server, &shop, &buyer, "sofa", 500_000, "escrow");
    let advance = |request: &str, body: Value| {
        let mut body = body;
        body["out_request_no"] = json!(request);
        server.post(&format!("/v1/trades/{trade}/advance"), Some(&shop), body)
    };
    // At most 80% of what the trade will pay (500,000 less its 3,000 fee).
    let (status, body) = advance("too-much", json!({ "amount": 397_601 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"), "{body}");
    let (status, loan) = advance("a", json!({}));
    assert_eq!((status, loan["principal"].as_u64()), (StatusCode::CREATED, Some(397_600)), "{loan}");
    let loan_id = loan["id"].as_str().unwrap().to_string();

    // The advance withdrawn, the trade cannot be refunded: the refund would
    // have to repay the advance first, from a wallet that is empty.
    let wallet = server.available(&shop);
    let (status, body) = server.post("/v1/withdrawals", Some(&shop), json!({ "amount": wallet }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = refund(&server, &shop, &trade, "r-1", 500_000);
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"), "{body}");
    let (_, held) = server.get(&format!("/v1/trades/{trade}"), Some(&shop));
    assert_eq!(held["escrow_amount"].as_u64(), Some(500_000), "escrow still holds the trade's money");

    // With money in the wallet, a refund repays as much of the advance as it refunds, in its chain.
    server.top_up(&buyer, 600_000);
    paid_trade(&server, &shop, &buyer, "more", 600_000, "instant");
    let (status, body) = refund(&server, &shop, &trade, "r-2", 100_000);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, loan) = server.get(&format!("/v1/loans/{loan_id}"), Some(&shop));
    assert_eq!(loan["repaid_total"].as_u64(), Some(100_000), "{loan}");
    let (status, body) = refund(&server, &shop, &trade, "r-3", 400_000);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, loan) = server.get(&format!("/v1/loans/{loan_id}"), Some(&shop));
    assert_eq!(loan["status"].as_str(), Some("repaid"), "a full refund leaves nothing lent against nothing: {loan}");
    server.assert_balanced();
}

/// Finding 2 (high): ids came from one counter, so 300 guesses in a second
/// found and claimed someone else's red packet.
#[test]
fn ids_cannot_be_guessed_nor_tell_how_many_there_are() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (_, sender) = server.user("sender");
    let (_, sweeper) = server.user("sweeper");
    server.top_up(&sender, 10_000);
    let (status, packet) =
        server.post("/v1/red-packets", Some(&sender), json!({ "total": 1_000, "count": 2, "mode": "equal" }));
    assert_eq!(status, StatusCode::CREATED, "{packet}");
    let id = packet["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("rp_") && id.len() == 3 + 32, "{id}");
    // 300 guesses: small numbers, and neighbours of the real id.
    let mut guesses: Vec<String> = (0..200).map(|n| format!("rp_{n}")).collect();
    let digits = &id[3..];
    for position in 0..32 {
        let mut flipped: Vec<u8> = digits.bytes().collect();
        flipped[position] = if flipped[position] == b'0' { b'1' } else { b'0' };
        guesses.push(format!("rp_{}", String::from_utf8(flipped).unwrap()));
    }
    guesses.extend((0..68).map(|n| format!("rp_{n:032x}")));
    for guess in &guesses {
        let (status, body) = server.post(&format!("/v1/red-packets/{guess}/claims"), Some(&sweeper), json!({}));
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{guess}");
    }
    assert_eq!(server.available(&sweeper), 0);
    // Another kind's id does not stand in for it.
    let (other_id, _) = server.user("other");
    let as_packet = other_id.replacen("usr_", "rp_", 1);
    assert_eq!(
        server.post(&format!("/v1/red-packets/{as_packet}/claims"), Some(&sweeper), json!({})).0,
        StatusCode::NOT_FOUND
    );
    // The one given the id claims it.
    let (status, claim) = server.post(&format!("/v1/red-packets/{id}/claims"), Some(&sweeper), json!({}));
    assert_eq!((status, claim["amount"].as_u64()), (StatusCode::CREATED, Some(500)));
    // Ids made one after another share nothing a counter would show.
    let (first, _) = server.user("first");
    let (second, _) = server.user("second");
    let same = first.bytes().zip(second.bytes()).skip(4).filter(|(a, b)| a == b).count();
    assert!(same < 10, "{first} {second}");
    server.assert_balanced();
}

/// An HTTP endpoint that answers every request with 200 and a body of
/// `body_bytes` (streamed), and counts the requests and the bytes it sent.
fn endless_answer(body_bytes: usize) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    let (requests, sent) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, written) = (Arc::clone(&requests), Arc::clone(&sent));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (counted, written) = (Arc::clone(&counted), Arc::clone(&written));
            std::thread::spawn(move || {
                let mut request = [0u8; 65_536];
                let _ = stream.read(&mut request);
                counted.fetch_add(1, Ordering::SeqCst);
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_bytes}\r\n\r\n");
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b's'; 64 * 1024];
                let mut left = body_bytes;
                while left > 0 {
                    let part = left.min(chunk.len());
                    if stream.write_all(&chunk[..part]).is_err() {
                        return;
                    }
                    written.fetch_add(part, Ordering::SeqCst);
                    left -= part;
                }
            });
        }
    });
    (url, requests, sent)
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Finding 3 (high): the answer to a notification was read whole, so one
/// merchant's 800 MB answer grew the server by gigabytes, at every retry.
#[test]
fn a_merchants_endless_answer_is_read_only_up_to_its_bound() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let (_, shop, app) = server.merchant_with_app("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 10_000);
    let (notify_url, requests, sent) = endless_answer(800 * 1024 * 1024);
    let biz = json!({ "out_trade_no": "n-1", "total_amount": "10.00", "subject": "tea" });
    let created = server.gateway(&app, "alipay.trade.precreate", biz, &[("notify_url", &notify_url)]);
    assert_eq!(created["code"], "10000", "{created}");
    let (_, found) = server.get("/v1/trades?limit=1", Some(ADMIN_KEY));
    let trade_no = found["data"][0]["trade_no"].as_str().unwrap().to_string();
    let before = resident_kib(server.pid());
    assert_eq!(server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({})).0, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while requests.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the notification was sent");
    // An answer past 64 KiB is not read on (nor taken for `success`): the
    // server stops reading it, and its memory does not grow with it.
    let grown = resident_kib(server.pid()).saturating_sub(before);
    assert!(grown < 50 * 1024, "the server grew by {grown} KiB");
    assert!(sent.load(Ordering::SeqCst) < 64 * 1024 * 1024, "{} bytes were taken", sent.load(Ordering::SeqCst));
    // Not acknowledged: it is tried again on Alipay's schedule (4 minutes
    // after the attempt's record, which the clock waits for).
    let (_, events) = server.get("/v1/events", Some(&shop));
    let notified = events["data"].as_array().unwrap().iter().find(|event| event["type"] == "trade.succeeded");
    server.wait_for_attempts(&shop, notified.and_then(|event| event["id"].as_str()).unwrap(), 1);
    advance_clock(&server, 5 * 60);
    let deadline = Instant::now() + Duration::from_secs(20);
    while requests.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 2, "retried, as an unacknowledged notification is");
    assert!(resident_kib(server.pid()).saturating_sub(before) < 50 * 1024);
    server.assert_balanced();
}

/// Finding 4 (high): a request that timed out was answered `503 overloaded`
/// although its command had moved money; a client retrying it paid twice.
#[test]
fn a_request_whose_command_was_journaled_is_never_answered_503() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (_, payer) = server.user("payer");
    let (payee_id, payee) = server.user("payee");
    server.top_up(&payer, 1_000_000);
    // Requests get 1 ms: some are still waiting for their commit then (with
    // 3 ms, a fast disk answered every one in time).
    let server = server.restart_with(&["--request-timeout-ms", "1"]);
    let transfer = json!({ "to": payee_id, "amount": 1 });
    let send = |server: &Server, key: Option<&str>| {
        let mut request =
            server.client.post(format!("{}/v1/transfers", server.base)).bearer_auth(&payer).json(&transfer);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().unwrap();
        let status = response.status();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let in_parallel = |server: &Server, keys: &[Option<String>]| -> Vec<(StatusCode, Value)> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = keys
                .chunks(keys.len().div_ceil(8))
                .map(|chunk| {
                    scope.spawn(move || chunk.iter().map(|key| send(server, key.as_deref())).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect()
        })
    };
    let count = |answers: &[(StatusCode, Value)], wanted: StatusCode| {
        answers.iter().filter(|(status, _)| *status == wanted).count() as u64
    };
    // Without keys: money moved only for a 201 or a 504, never for a 503.
    let answers = in_parallel(&server, &vec![None; 200]);
    let (created, unknown) = (count(&answers, StatusCode::CREATED), count(&answers, StatusCode::GATEWAY_TIMEOUT));
    assert_eq!(created + unknown + count(&answers, StatusCode::SERVICE_UNAVAILABLE), 200, "{answers:?}");
    // Timed-out requests are counted like any other (the counts are the
    // process's: read before it stops).
    let metrics =
        |server: &Server| server.client.get(format!("{}/metrics", server.base)).send().unwrap().text().unwrap();
    let counted = metrics(&server);
    assert!(unknown == 0 || counted.contains("status=\"504\""), "{counted}");
    // A 504's command may still be on its way to the writer: a clean stop lets
    // every command the server took finish before the balance is read.
    let server = server.restart_with(&["--request-timeout-ms", "1"]);
    let moved = server.available(&payee);
    assert!(moved >= created && moved <= created + unknown, "{moved} moved; {created} created, {unknown} unknown");
    // With keys: each 504 says how to learn the outcome.
    let keys: Vec<Option<String>> = (0..100).map(|n| Some(format!("k-{n}"))).collect();
    let keyed = in_parallel(&server, &keys);
    let timed_out: Vec<&Value> =
        keyed.iter().filter(|(status, _)| *status == StatusCode::GATEWAY_TIMEOUT).map(|(_, body)| body).collect();
    assert!(timed_out.iter().all(|body| code(body) == "outcome_unknown"), "{timed_out:?}");
    assert!(unknown + timed_out.len() as u64 > 0, "no request timed out after its command was journaled");
    let counted = metrics(&server);
    assert!(timed_out.is_empty() || counted.contains("status=\"504\""), "{counted}");
    // Asked again with their keys (and time to answer), every key moved its fen exactly once.
    let server = server.restart_with(&[]);
    for answer in in_parallel(&server, &keys) {
        assert_eq!(answer.0, StatusCode::CREATED, "{answer:?}");
    }
    assert_eq!(server.available(&payee), moved + 100, "each key moved exactly once");
    server.assert_balanced();
}

/// Opens a connection and sends the start of a request's headers, never the end.
fn stalled_connection(base: &str) -> Option<TcpStream> {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).ok()?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
    Some(stream)
}

/// Finding 5 (high): slowloris — one client held 20,000 sockets without
/// finishing a request, and everyone else waited.
#[test]
fn slow_clients_cannot_hold_the_server() {
    let directory = tempfile::tempdir().unwrap();
    let limits =
        ["--connections-per-address-max", "50", "--header-read-timeout-ms", "5000", "--body-read-timeout-ms", "1500"];
    let server = Server::start(directory.path(), &limits);
    let (_, user) = server.user("user");
    // 500 connections from 127.0.0.1 that never finish their headers.
    let stalled: Vec<TcpStream> = (0..500).filter_map(|_| stalled_connection(&server.base)).collect();
    // Another client (another address) is served at once.
    let other = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = other.get(format!("{}/healthz", server.base)).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // (Well before the stalled ones' headers run late.)
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // The stalled ones are all closed: beyond 50 at once, and the rest when their headers run late.
    std::thread::sleep(Duration::from_secs(6));
    for mut stream in stalled {
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buffer = [0u8; 256];
        let closed = match stream.read(&mut buffer) {
            Ok(0) => true,
            Ok(read) => String::from_utf8_lossy(&buffer[..read]).contains("408"),
            // A reset is a close; a read that times out is a connection still open.
            Err(error) => !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        };
        assert!(closed, "a stalled connection is still open");
    }
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().unwrap().text().unwrap();
    let refused = metrics.lines().find(|line| line.starts_with("zhifu_connections_refused_total{bound=\"address\"}"));
    assert!(refused.is_some_and(|line| !line.ends_with(" 0")), "{refused:?}");
    // A body that stalls is a 408, one cut short a 400: the client's, never a 503.
    let address = server.base.trim_start_matches("http://").to_string();
    let request = |finish: bool| {
        let mut stream = TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST /v1/topups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"amount\":"
        );
        stream.write_all(head.as_bytes()).unwrap();
        if finish {
            stream.shutdown(Shutdown::Write).unwrap();
        }
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let stalled = request(false);
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    let short = request(true);
    assert!(short.starts_with("HTTP/1.1 400"), "{short}");
    assert_eq!(server.available(&user), 0, "neither moved money");
    server.assert_balanced();
}

/// Finding 6 (medium): a trade paid from Yu'e Bao and refunded put the money
/// in the wallet, past the fund's daily redemption limit.
#[test]
fn a_refund_goes_back_to_the_fund_it_was_paid_from() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--fund-redeem-daily-limit", "10000"]);
    let (_, shop) = server.merchant("shop");
    let (_, saver) = server.user("saver");
    server.top_up(&saver, 1_000_000);
    let (status, body) = server.post("/v1/fund/subscriptions", Some(&saver), json!({ "amount": 1_000_000 }));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (reference, mode) in [("instant", "instant"), ("escrow", "escrow")] {
        let body = json!({ "out_trade_no": reference, "amount": 400_000, "subject": "tv", "mode": mode });
        let (_, trade) = server.post("/v1/trades", Some(&shop), body);
        let trade_no = trade["trade_no"].as_str().unwrap().to_string();
        let (status, paid) =
            server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&saver), json!({ "source": "fund" }));
        assert_eq!(status, StatusCode::OK, "{paid}");
        let (status, body) = refund(&server, &shop, &trade_no, "back", 400_000);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let after = balance(&server, &saver);
    assert_eq!((after["available"].as_u64(), after["fund_value"].as_u64()), (Some(0), Some(1_000_000)), "{after}");
    let (status, body) = server.post("/v1/fund/redemptions", Some(&saver), json!({ "amount": 10_001 }));
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"), "the limit still holds");
    server.assert_balanced();
}

/// Finding 7 (medium): a fully refunded trade left its merchant the campaign's discount.
#[test]
fn a_refund_takes_back_its_share_of_the_campaigns_discount() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let (_, shop) = server.merchant("shop");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 100_000);
    // The platform's campaign: 1,000 off trades of at least 10,000.
    let campaign = json!({
        "name": "Double Eleven", "budget": 10_000, "discount": 1_000, "min_spend": 10_000, "per_user_limit": 5,
        "starts_at": "2013-11-11T00:00:00+08:00", "ends_at": "2013-11-12T00:00:00+08:00",
    });
    let (status, campaign) = server.post("/v1/campaigns", Some(ADMIN_KEY), campaign);
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    let campaign_id = campaign["id"].as_str().unwrap().to_string();
    let body = json!({ "out_trade_no": "c-1", "amount": 10_000, "subject": "shoes", "mode": "instant", "campaign": campaign_id });
    let (_, trade) = server.post("/v1/trades", Some(&shop), body);
    let trade_no = trade["trade_no"].as_str().unwrap().to_string();
    let shop_before = server.available(&shop);
    let (status, paid) = server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({}));
    assert_eq!((status, paid["discount"].as_u64()), (StatusCode::OK, Some(1_000)), "{paid}");
    // Half of the 9,000 the buyer paid: half of the discount goes back to the campaign.
    let (status, body) = refund(&server, &shop, &trade_no, "r-1", 4_500);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, running) = server.get(&format!("/v1/campaigns/{campaign_id}"), Some(ADMIN_KEY));
    assert_eq!(running["spent"].as_u64(), Some(500), "{running}");
    let (status, body) = refund(&server, &shop, &trade_no, "r-2", 4_500);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, after) = server.get(&format!("/v1/campaigns/{campaign_id}"), Some(ADMIN_KEY));
    assert_eq!((after["spent"].as_u64(), after["remaining"].as_u64()), (Some(0), Some(10_000)), "{after}");
    assert_eq!(server.available(&shop), shop_before, "nothing of the campaign's money, nor the fee, is left");
    assert_eq!(server.available(&buyer), 100_000);
    server.assert_balanced();
}

/// Finding 8 (medium): wash trading — an accomplice pays, the merchant sends
/// the money back — raised credit to the cap for ~1.2% in fees.
#[test]
fn money_sent_back_to_buyers_earns_no_credit() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let (_, shop, app) = server.merchant_with_app("washer");
    let (accomplice_id, accomplice) = server.user("accomplice");
    server.top_up(&accomplice, 2_000_000);
    let credit = |server: &Server| server.get("/v1/credit", Some(&shop)).1["limit"].as_u64().unwrap();
    paid_trade(&server, &shop, &accomplice, "w-1", 900_000, "instant");
    assert_eq!(credit(&server), 600_000, "200% of the month's average");
    // Sent straight back by the gateway's transfer: that volume earns nothing.
    let back = json!({
        "out_biz_no": "back-1", "trans_amount": "8000.00", "product_code": "TRANS_ACCOUNT_NO_PWD",
        "biz_scene": "DIRECT_TRANSFER", "payee_info": { "identity": accomplice_id, "identity_type": "ALIPAY_USER_ID" },
    });
    let moved = server.gateway(&app, "alipay.fund.trans.uni.transfer", back, &[]);
    assert_eq!(moved["code"], "10000", "{moved}");
    let line = |volume: u64| volume / 3 * 2;
    assert_eq!(credit(&server), line(900_000 - 800_000), "only what stayed counts");
    // Refunds after settlement take the volume back too.
    let trade = paid_trade(&server, &shop, &accomplice, "w-2", 300_000, "instant");
    assert_eq!(credit(&server), line(400_000));
    let (status, body) = refund(&server, &shop, &trade, "r", 300_000);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(credit(&server), line(100_000));
    server.assert_balanced();
}

/// Finding 9 (medium): every `/gateway.do` answer is RSA-signed (3.7 ms of
/// CPU), and junk, bad keys and missing keys were never limited.
#[test]
fn junk_at_the_gateway_and_bad_keys_are_answered_cheaply_and_limited() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--rate-limit-per-address", "100"]);
    let junk = |body: &str| -> Value {
        let response = server
            .client
            .post(format!("{}/gateway.do", server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().unwrap()
    };
    // The first answer makes the gateway's signing key (seconds of RSA on a
    // busy machine); the address's budget of failures refills after it.
    let first = junk("method=alipay.nope.first&app_id=2013000000000001");
    assert!(first["sign"].as_str().is_some_and(|sign| sign.len() > 300), "{first}");
    std::thread::sleep(Duration::from_secs(3));
    let is_limited = |answer: &Value| answer["error_response"]["sub_code"] == "isp.call-limited";
    let started = Instant::now();
    let mut answers: Vec<Value> = Vec::new();
    while answers.len() < 120 || (!answers.iter().any(is_limited) && answers.len() < 2_000) {
        answers.push(junk(&format!("method=alipay.nope.{}&app_id=2013000000000001", answers.len())));
    }
    let elapsed = started.elapsed();
    // Each junk answer is signed, the same text with the same (kept) signature,
    // and past the address's budget of failures (a burst of twice the rate)
    // it is a fixed refusal.
    assert!(answers[..4].iter().all(|answer| *answer == first), "one text, one signature");
    let limited = answers.iter().filter(|answer| is_limited(answer)).count();
    let rate = 20.0; // the server's FAILURES_PER_SECOND_PER_ADDRESS
    let allowed_most = (2.0 * rate + 1.0 + rate * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        limited > 0 && answers.len() - limited <= allowed_most,
        "{limited} of {} limited in {elapsed:?}",
        answers.len()
    );
    // Wrong API keys: 401, then 429 from that address (its budget of
    // failures, spent by the junk above, refilled first).
    std::thread::sleep(Duration::from_secs(3));
    let statuses: Vec<StatusCode> =
        (0..100).map(|n| server.get("/v1/balance", Some(&format!("zk_wrong{n}"))).0).collect();
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // And any address is held to its rate.
    let (_, user) = server.user("busy");
    let busy: Vec<StatusCode> = (0..1_000).map(|_| server.get("/v1/balance", Some(&user)).0).collect();
    assert!(busy.contains(&StatusCode::TOO_MANY_REQUESTS), "per-address limit");
    std::thread::sleep(Duration::from_secs(3));
    server.assert_balanced();
}

/// Finding 10 (medium): every refused request with an Idempotency-Key was
/// kept for 24 hours, with no bound per caller.
#[test]
fn refusals_are_remembered_only_up_to_a_bound_per_caller() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (_, broke) = server.user("broke");
    let (other_id, _) = server.user("other");
    let refused = |key: &str, amount: u64| {
        server.call_with(
            Method::POST,
            "/v1/transfers",
            Some(&broke),
            Some(json!({ "to": other_id, "amount": amount })),
            Some(key),
        )
    };
    for n in 0..1_001 {
        let (status, body) = refused(&format!("r-{n}"), 100);
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"), "{n}");
    }
    // The first thousand are remembered: another body under their key is a mismatch...
    let (status, body) = refused("r-0", 200);
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "idempotency_mismatch"));
    // ...the one past the bound was not (it moved nothing: asking again is safe).
    let (status, body) = refused("r-1000", 200);
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"));
    server.assert_balanced();
}

/// Finding 11 (low): files readable by everyone, balances capped at
/// `u64::MAX`, `http://` as a webhook, hidden characters in names, a red
/// packet's money shown nowhere, the fee kept on refunds.
#[test]
fn the_small_findings_hold() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.data_dir), 0o700, "the data directory");
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for (bad, field) in [
        (json!({ "name": "shop", "webhook_url": "http://" }), "webhook"),
        (json!({ "name": "shop", "webhook_url": "https:///x" }), "webhook"),
        (json!({ "name": "nul\u{0}" }), "name"),
        (json!({ "name": "esc\u{1b}[2J" }), "name"),
        (json!({ "name": "\u{202e}gpj.exe" }), "name"),
    ] {
        let (status, body) = server.post("/v1/merchants", Some(ADMIN_KEY), bad.clone());
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{field}: {bad}");
    }
    // A red packet's unclaimed money is the sender's, held.
    let (_, sender) = server.user("sender");
    let (_, friend) = server.user("friend");
    server.top_up(&sender, 1_000);
    let (_, packet) =
        server.post("/v1/red-packets", Some(&sender), json!({ "total": 600, "count": 3, "mode": "equal" }));
    let packet_id = packet["id"].as_str().unwrap().to_string();
    let held = |key: &str| balance(&server, key)["held"].as_u64().unwrap();
    assert_eq!((server.available(&sender), held(&sender)), (400, 600));
    server.post(&format!("/v1/red-packets/{packet_id}/claims"), Some(&friend), json!({}));
    assert_eq!(held(&sender), 400);
    advance_clock(&server, 25 * 3_600);
    assert_eq!((server.available(&sender), held(&sender)), (800, 0), "the rest came back");
    // A refund after settlement gives back its share of the fee (0.6%).
    let (_, shop) = server.merchant("shop");
    let trade = paid_trade(&server, &shop, &friend, "f-1", 200, "instant");
    let (_, sold) = server.get(&format!("/v1/trades/{trade}"), Some(&shop));
    assert_eq!(sold["fee"].as_u64(), Some(1), "{sold}");
    refund(&server, &shop, &trade, "all", 200);
    let (_, refunded) = server.get(&format!("/v1/trades/{trade}"), Some(&shop));
    assert_eq!((refunded["fee"].as_u64(), server.available(&shop)), (Some(0), 0), "{refunded}");
    server.assert_balanced();
}

/// Finding 11 (low): a balance past `u64::MAX` fen read as `u64::MAX`.
#[test]
fn a_balance_past_u64_is_shown_exactly() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--rate-limit", "0", "--rate-limit-per-address", "0"]);
    let (_, whale) = server.user("whale");
    let top_ups = u64::MAX / 1_000_000_000_000_000 + 1;
    std::thread::scope(|scope| {
        for part in 0..8 {
            let (server, whale) = (&server, &whale);
            scope.spawn(move || {
                for _ in (part..top_ups).step_by(8) {
                    server.top_up(whale, 1_000_000_000_000_000);
                }
            });
        }
    });
    let expected = u128::from(top_ups) * 1_000_000_000_000_000;
    assert!(expected > u128::from(u64::MAX));
    let text =
        server.client.get(format!("{}/v1/balance", server.base)).bearer_auth(&whale).send().unwrap().text().unwrap();
    assert!(text.contains(&format!("\"available\":{expected}")), "{text}");
    server.assert_balanced();
}

/// Finding 11 (low): `GET /v1/trades` of a party read every trade of the
/// platform; it walks the party's own now, newest first, page by page.
#[test]
fn a_partys_trade_list_holds_its_own_trades_page_by_page() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let (_, shop) = server.merchant("shop");
    let (_, other_shop) = server.merchant("other shop");
    let (_, buyer) = server.user("buyer");
    let (_, stranger) = server.user("stranger");
    server.top_up(&buyer, 1_000_000);
    let mut bought = Vec::new();
    for n in 0..30 {
        let seller = if n % 3 == 0 { &other_shop } else { &shop };
        bought.push(paid_trade(&server, seller, &buyer, &format!("t-{n}"), 100 + n, "instant"));
    }
    let (_, none) = server.get("/v1/trades", Some(&stranger));
    assert_eq!((none["data"].as_array().unwrap().len(), none["has_more"].as_bool()), (0, Some(false)));
    let walk = |key: &str| {
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(after) => format!("/v1/trades?limit=7&starting_after={after}"),
                None => "/v1/trades?limit=7".to_string(),
            };
            let (status, page) = server.get(&path, Some(key));
            assert_eq!(status, StatusCode::OK, "{page}");
            let data = page["data"].as_array().unwrap();
            found.extend(data.iter().map(|trade| trade["trade_no"].as_str().unwrap().to_string()));
            cursor = data.last().map(|trade| trade["trade_no"].as_str().unwrap().to_string());
            if page["has_more"] != json!(true) {
                return found;
            }
        }
    };
    let newest_first: Vec<String> = bought.iter().rev().cloned().collect();
    assert_eq!(walk(&buyer), newest_first, "the buyer's, newest first");
    let shop_trades: Vec<String> =
        bought.iter().enumerate().rev().filter(|(n, _)| n % 3 != 0).map(|(_, trade)| trade.clone()).collect();
    assert_eq!(walk(&shop), shop_trades, "the merchant's own");
    server.assert_balanced();
}

/// Destinations (API.md): a server listening beyond loopback sends nothing
/// to private or local addresses unless the operator allows it.
#[test]
fn a_public_server_refuses_private_destinations() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start_listening(directory.path(), "0.0.0.0:0", &[]);
    for url in
        ["http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://localhost/x"]
    {
        let (status, body) =
            server.post("/v1/merchants", Some(ADMIN_KEY), json!({ "name": "shop", "webhook_url": url }));
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{url}: {body}");
    }
    drop(server);
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start_listening(directory.path(), "0.0.0.0:0", &["--webhook-allow-private"]);
    let (status, body) =
        server.post("/v1/merchants", Some(ADMIN_KEY), json!({ "name": "shop", "webhook_url": "http://10.0.0.1/hook" }));
    assert_eq!(status, StatusCode::CREATED, "allowed by the operator: {body}");
    server.assert_balanced();
}

/// The cashier under attack (issue 28): forged or altered checkout tokens,
/// cross-site POSTs without the visit cookie or with another browser's CSRF
/// token, and replayed forms are refused, and nothing is paid.
#[test]
fn the_cashier_refuses_forged_tokens_cross_site_posts_and_replayed_forms() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let (_, _, app) = server.merchant_with_app("shop");
    let body = json!({ "name": "buyer", "login": "buyer1", "password": "a long passphrase" });
    let (status, buyer) = server.post("/v1/users", Some(ADMIN_KEY), body);
    assert_eq!(status, StatusCode::CREATED, "{buyer}");
    let buyer_key = buyer["api_key"].as_str().unwrap().to_string();
    server.top_up(&buyer_key, 10_000);
    let created = server.gateway(
        &app,
        "alipay.trade.precreate",
        json!({ "out_trade_no": "c-1", "total_amount": "1.00", "subject": "tea" }),
        &[],
    );
    let qr = created["qr_code"].as_str().unwrap().to_string();
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cashier = client.get(&qr).send().unwrap();
    assert_eq!(cashier.status(), StatusCode::SEE_OTHER);
    let location = cashier.headers()["location"].to_str().unwrap().to_string();
    let token = location.split("t=").nth(1).unwrap().split('&').next().unwrap().to_string();
    // A browser's visit: its cookie and the form's CSRF token.
    let visit = |client: &reqwest::blocking::Client| {
        let page = client.get(format!("{}{location}", server.base)).send().unwrap();
        let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
        let html = page.text().unwrap();
        let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        (cookie, csrf)
    };
    let (cookie, csrf) = visit(&client);
    let (other_cookie, _) = visit(&client);
    let sign_in = |cookie: Option<&str>, csrf: &str, t: &str| {
        let mut request = client.post(format!("{}/cashier/sign-in", server.base)).form(&[
            ("t", t),
            ("csrf", csrf),
            ("login", "buyer1"),
            ("password", "a long passphrase"),
        ]);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().unwrap().status()
    };
    // Forged and altered tokens.
    let mut altered = token.clone().into_bytes();
    altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in ["garbage", "eyJ0cmFkZSI6MX0.00000000000000000000000000000000", altered.as_str()] {
        assert_eq!(
            client.get(format!("{}/cashier?t={bad}", server.base)).send().unwrap().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(sign_in(Some(&cookie), &csrf, bad), StatusCode::BAD_REQUEST, "{bad}");
    }
    // A cross-site POST: no cookie (SameSite=Lax keeps it home), or another browser's.
    assert_eq!(sign_in(None, &csrf, &token), StatusCode::FORBIDDEN);
    assert_eq!(sign_in(Some(&other_cookie), &csrf, &token), StatusCode::FORBIDDEN);
    assert_eq!(sign_in(Some(&cookie), "0123456789abcdef0123456789abcdef", &token), StatusCode::FORBIDDEN);
    // A pay form replayed without a session, or with another visit's cookie: nothing paid.
    for cookie in [cookie.as_str(), other_cookie.as_str()] {
        let paid = client
            .post(format!("{}/cashier/pay", server.base))
            .header("cookie", cookie)
            .form(&[("t", token.as_str()), ("csrf", csrf.as_str()), ("source", "balance")])
            .send()
            .unwrap();
        assert!(paid.status() == StatusCode::OK || paid.status() == StatusCode::FORBIDDEN, "{}", paid.status());
    }
    // Junk forms are 4xx pages, never 5xx.
    let junk = client.post(format!("{}/cashier/pay", server.base)).body("%%%").send().unwrap();
    assert!(junk.status().is_client_error(), "{}", junk.status());
    assert_eq!(server.available(&buyer_key), 10_000, "nothing paid");
    server.assert_balanced();
}
