//! Disputes on escrow trades against a real `zhifu serve` with the
//! simulated clock: every path of the state machine (accepted by the
//! merchant, accepted by the clock after 5 days unanswered, rejected and
//! closed by the clock, rejected, escalated and decided), timers exact to
//! the second, auto-confirmation paused and resumed with the time it had
//! left, never more refunded than paid less refunds, and a restart in the
//! middle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use serde_json::{Value, json};
use support::{ADMIN_KEY, Server};

const SIMULATED: [&str; 2] = ["--clock", "simulated"];
const DAY: u64 = 86_400;

struct Shop {
    server: Server,
    merchant: String,
    buyer: String,
}

impl Shop {
    fn start(directory: &std::path::Path) -> Shop {
        let server = Server::start(directory, &SIMULATED);
        let (_, merchant) = server.merchant("shop");
        let (_, buyer) = server.user("buyer");
        server.top_up(&buyer, 1_000_000);
        Shop { server, merchant, buyer }
    }

    /// A paid escrow trade of 10,000 fen, confirming itself 10 days after shipping.
    fn paid(&self, out_trade_no: &str) -> String {
        let body = json!({ "out_trade_no": out_trade_no, "amount": 10_000, "subject": "boots", "mode": "escrow", "auto_confirm_days": 10 });
        let (status, trade) = self.server.post("/v1/trades", Some(&self.merchant), body);
        assert_eq!(status, 201, "{trade}");
        let trade_no = trade["trade_no"].as_str().unwrap().to_string();
        let (status, paid) = self.server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&self.buyer), json!({}));
        assert_eq!(status, 200, "{paid}");
        trade_no
    }

    fn ship(&self, trade_no: &str) -> Value {
        let (status, trade) = self.server.post(&format!("/v1/trades/{trade_no}/ship"), Some(&self.merchant), json!({}));
        assert_eq!(status, 200, "{trade}");
        trade
    }

    fn open(&self, trade_no: &str, amount: u64) -> Value {
        let body = json!({ "amount": amount, "reason": "the boots never came" });
        let (status, dispute) = self.server.post(&format!("/v1/trades/{trade_no}/disputes"), Some(&self.buyer), body);
        assert_eq!(status, 201, "{dispute}");
        assert_eq!(dispute["status"], "open");
        dispute
    }

    fn step(&self, dispute: &Value, step: &str, key: &str, body: Value) -> (u16, Value) {
        let id = dispute["id"].as_str().unwrap();
        let path = if step == "decide" {
            format!("/v1/admin/disputes/{id}/decide")
        } else {
            format!("/v1/disputes/{id}/{step}")
        };
        let (status, answer) = self.server.post(&path, Some(key), body);
        (status.as_u16(), answer)
    }

    fn dispute(&self, dispute: &Value) -> Value {
        self.server.get(&format!("/v1/disputes/{}", dispute["id"].as_str().unwrap()), Some(&self.buyer)).1
    }

    fn trade(&self, trade_no: &str) -> Value {
        self.server.get(&format!("/v1/trades/{trade_no}"), Some(&self.merchant)).1
    }

    fn advance(&self, seconds: u64) -> Value {
        let (status, body) =
            self.server.post("/v1/admin/clock", Some(ADMIN_KEY), json!({ "advance_seconds": seconds }));
        assert_eq!(status, 200, "{body}");
        body
    }

    fn now(&self) -> i64 {
        seconds_of(self.advance(0)["now"].as_str().unwrap())
    }

    fn event_types(&self) -> Vec<String> {
        let (_, events) = self.server.get("/v1/events?limit=100", Some(&self.merchant));
        let mut types: Vec<String> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["type"].as_str().unwrap().to_string())
            .filter(|kind| kind.starts_with("dispute."))
            .collect();
        types.reverse();
        types
    }
}

fn seconds_of(rfc3339: &str) -> i64 {
    (server::clock::parse_rfc3339(rfc3339).unwrap() / 1_000_000_000) as i64
}

#[test]
fn a_merchant_accepts_and_the_buyer_gets_the_amount_back_at_once() {
    let directory = tempfile::tempdir().unwrap();
    let shop = Shop::start(directory.path());
    let trade_no = shop.paid("t-accept");
    let before = shop.server.available(&shop.buyer);
    let dispute = shop.open(&trade_no, 4_000);
    // One open dispute at a time; not more than was paid.
    let (status, answer) = shop.server.post(
        &format!("/v1/trades/{trade_no}/disputes"),
        Some(&shop.buyer),
        json!({ "amount": 1, "reason": "again" }),
    );
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (409, "conflict"), "{answer}");
    // The buyer cannot accept its own dispute; another merchant cannot see it.
    assert_eq!(shop.step(&dispute, "accept", &shop.buyer, json!({})).0, 403);
    let (_, stranger) = shop.server.merchant("stranger");
    assert_eq!(shop.step(&dispute, "accept", &stranger, json!({})).0, 404);
    let (status, accepted) = shop.step(&dispute, "accept", &shop.merchant, json!({}));
    assert_eq!(status, 200, "{accepted}");
    assert_eq!((accepted["status"].as_str(), accepted["refunded"].as_u64()), (Some("accepted"), Some(4_000)));
    assert!(accepted["refund"].as_str().unwrap().starts_with("rfd_"), "{accepted}");
    assert_eq!(shop.server.available(&shop.buyer), before + 4_000);
    let trade = shop.trade(&trade_no);
    assert_eq!((trade["status"].as_str(), trade["refunded_amount"].as_u64()), (Some("WAIT_SELLER_SEND"), Some(4_000)));
    // Over: no second answer.
    assert_eq!(shop.step(&dispute, "reject", &shop.merchant, json!({ "note": "late" })).0, 409);
    assert_eq!(shop.event_types(), ["dispute.opened", "dispute.accepted"]);
    shop.server.assert_balanced();
}

#[test]
fn an_unanswered_dispute_is_accepted_after_exactly_five_days_and_confirmation_resumes_with_its_time_left() {
    let directory = tempfile::tempdir().unwrap();
    let shop = Shop::start(directory.path());
    let trade_no = shop.paid("t-clock");
    let shipped = shop.ship(&trade_no);
    let confirm_due = seconds_of(shipped["confirm_due_at"].as_str().unwrap());
    shop.advance(DAY);
    let opened_at = shop.now();
    let dispute = shop.open(&trade_no, 2_500);
    assert_eq!(seconds_of(dispute["due_at"].as_str().unwrap()), opened_at + 5 * DAY as i64);
    assert!(shop.trade(&trade_no)["confirm_due_at"].is_null(), "auto-confirmation waits");
    // The buyer cannot confirm while its dispute is open.
    let (status, _) = shop.server.post(&format!("/v1/trades/{trade_no}/confirm"), Some(&shop.buyer), json!({}));
    assert_eq!(status, 409);

    shop.advance(5 * DAY - 1);
    assert_eq!(shop.dispute(&dispute)["status"], "open", "one second early");
    // A restart between: the dispute and its clock come back.
    let shop = Shop { server: shop.server.crash_and_restart(), ..shop };
    shop.advance(1);
    let accepted = shop.dispute(&dispute);
    assert_eq!((accepted["status"].as_str(), accepted["by_clock"].as_bool()), (Some("accepted"), Some(true)));
    assert_eq!(accepted["refunded"], 2_500);
    // Nine days were left (shipped, then a day before the dispute): they resume now.
    let now = shop.now();
    let trade = shop.trade(&trade_no);
    assert_eq!(seconds_of(trade["confirm_due_at"].as_str().unwrap()), now + (confirm_due - opened_at));
    shop.advance(9 * DAY);
    let trade = shop.trade(&trade_no);
    assert_eq!((trade["status"].as_str(), trade["refunded_amount"].as_u64()), (Some("TRADE_SUCCESS"), Some(2_500)));
    shop.server.assert_balanced();
}

#[test]
fn a_rejection_left_alone_closes_after_five_days_and_an_escalated_one_is_decided_by_support() {
    let directory = tempfile::tempdir().unwrap();
    let shop = Shop::start(directory.path());
    let buyer_before = shop.server.available(&shop.buyer);

    // Rejected, not escalated: closed by the clock at exactly 5 days, nothing refunded.
    let first = shop.paid("t-reject");
    shop.ship(&first);
    let dispute = shop.open(&first, 10_000);
    shop.advance(3_600);
    let (status, rejected) =
        shop.step(&dispute, "reject", &shop.merchant, json!({ "note": "tracking says delivered" }));
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(
        (rejected["status"].as_str(), rejected["note"].as_str()),
        (Some("rejected"), Some("tracking says delivered"))
    );
    let rejected_at = shop.now();
    assert_eq!(seconds_of(rejected["due_at"].as_str().unwrap()), rejected_at + 5 * DAY as i64);
    // The merchant cannot escalate; the buyer could, but does not.
    assert_eq!(shop.step(&dispute, "escalate", &shop.merchant, json!({})).0, 403);
    shop.advance(5 * DAY - 1);
    assert_eq!(shop.dispute(&dispute)["status"], "rejected");
    shop.advance(1);
    let closed = shop.dispute(&dispute);
    assert_eq!((closed["status"].as_str(), closed["refunded"].as_u64()), (Some("closed"), Some(0)));
    assert!(!shop.trade(&first)["confirm_due_at"].is_null(), "auto-confirmation resumed");
    assert_eq!(shop.step(&dispute, "escalate", &shop.buyer, json!({})).0, 409, "too late");

    // Rejected, escalated, decided by support staff: part refunded.
    let second = shop.paid("t-escalate");
    let dispute = shop.open(&second, 6_000);
    assert_eq!(shop.step(&dispute, "reject", &shop.merchant, json!({ "note": "no" })).0, 200);
    let (status, decided_early) = shop.step(&dispute, "decide", ADMIN_KEY, json!({ "refund_amount": 1 }));
    assert_eq!(status, 409, "only an escalated dispute is decided: {decided_early}");
    let (status, escalated) = shop.step(&dispute, "escalate", &shop.buyer, json!({}));
    assert_eq!((status, escalated["status"].as_str()), (200, Some("escalated")));
    assert!(escalated["due_at"].is_null(), "an escalated dispute waits for the operator, not the clock");
    shop.advance(30 * DAY);
    assert_eq!(shop.dispute(&dispute)["status"], "escalated");
    let (status, answer) = shop.step(&dispute, "decide", ADMIN_KEY, json!({ "refund_amount": 6_001 }));
    assert_eq!((status, Server::error_code(&answer)), (422, "limit_exceeded"), "{answer}");
    let (status, decided) = shop.step(&dispute, "decide", ADMIN_KEY, json!({ "refund_amount": 3_500 }));
    assert_eq!(status, 200, "{decided}");
    assert_eq!((decided["status"].as_str(), decided["refunded"].as_u64()), (Some("decided"), Some(3_500)));
    assert_eq!(shop.server.available(&shop.buyer), buyer_before - 20_000 + 3_500);
    // The operator's decision is in the audit log.
    let (_, audit) = shop.server.get("/v1/admin/audit?limit=5", Some(ADMIN_KEY));
    assert!(audit.to_string().contains("dispute.decide"), "{audit}");
    assert_eq!(
        shop.event_types(),
        [
            "dispute.opened",
            "dispute.rejected",
            "dispute.closed",
            "dispute.opened",
            "dispute.rejected",
            "dispute.escalated",
            "dispute.decided"
        ]
    );
    shop.server.assert_balanced();
}

#[test]
fn a_dispute_never_refunds_more_than_paid_less_refunds() {
    let directory = tempfile::tempdir().unwrap();
    let shop = Shop::start(directory.path());
    let trade_no = shop.paid("t-limit");
    let (status, answer) = shop.server.post(
        &format!("/v1/trades/{trade_no}/disputes"),
        Some(&shop.buyer),
        json!({ "amount": 10_001, "reason": "all of it and more" }),
    );
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (422, "limit_exceeded"), "{answer}");
    let dispute = shop.open(&trade_no, 8_000);
    let timeline = |shop: &Shop| -> Vec<String> {
        let (_, events) = shop.server.get(&format!("/v1/trades/{trade_no}/events"), Some(&shop.merchant));
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["event"]["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(timeline(&shop), ["trade.paid"], "a disputed trade in memory keeps its timeline");
    // The merchant refunds part on its own while the dispute is open…
    let refund = json!({ "out_request_no": "r-1", "amount": 7_000 });
    assert_eq!(shop.server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop.merchant), refund).0, 201);
    // …then accepts: only the 3,000 still paid go back.
    let (status, accepted) = shop.step(&dispute, "accept", &shop.merchant, json!({}));
    assert_eq!((status, accepted["refunded"].as_u64()), (200, Some(3_000)), "{accepted}");
    let trade = shop.trade(&trade_no);
    assert_eq!((trade["status"].as_str(), trade["refunded_amount"].as_u64()), (Some("TRADE_CLOSED"), Some(10_000)));
    // Every record of the trade in one chain, the ones made while it was disputed too.
    assert_eq!(timeline(&shop), ["trade.closed", "refund.succeeded", "refund.succeeded", "trade.paid"]);
    // Instant trades and other buyers' trades cannot be disputed.
    let (_, stranger) = shop.server.user("stranger");
    shop.server.top_up(&stranger, 100_000);
    let other = shop.paid("t-other");
    let body = json!({ "amount": 1, "reason": "not mine" });
    assert_eq!(shop.server.post(&format!("/v1/trades/{other}/disputes"), Some(&stranger), body.clone()).0, 404);
    let instant = json!({ "out_trade_no": "t-instant", "amount": 500, "subject": "tea", "mode": "instant" });
    let (_, trade) = shop.server.post("/v1/trades", Some(&shop.merchant), instant);
    let instant_no = trade["trade_no"].as_str().unwrap();
    assert_eq!(shop.server.post(&format!("/v1/trades/{instant_no}/pay"), Some(&shop.buyer), json!({})).0, 200);
    assert_eq!(shop.server.post(&format!("/v1/trades/{instant_no}/disputes"), Some(&shop.buyer), body).0, 409);
    // Lists: the buyer's, the trade's, the operator's queue of open ones.
    let (_, mine) = shop.server.get("/v1/disputes", Some(&shop.buyer));
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    let (_, of_trade) = shop.server.get(&format!("/v1/disputes?trade={trade_no}"), Some(&shop.merchant));
    assert_eq!(of_trade["data"][0]["id"], dispute["id"]);
    let (_, queue) = shop.server.get("/v1/disputes", Some(ADMIN_KEY));
    assert!(queue["data"].as_array().unwrap().is_empty(), "nothing open: {queue}");
    shop.server.assert_balanced();
}

/// The merchant may still give in after rejecting, and after the buyer
/// escalated: accepted, refunded, the operator has nothing left to decide.
#[test]
fn a_merchant_may_accept_after_rejecting_or_after_an_escalation() {
    let directory = tempfile::tempdir().unwrap();
    let shop = Shop::start(directory.path());
    let before = shop.server.available(&shop.buyer);
    let first = shop.paid("t-change-of-mind");
    let dispute = shop.open(&first, 1_000);
    assert_eq!(shop.step(&dispute, "reject", &shop.merchant, json!({ "note": "no" })).0, 200);
    let (status, accepted) = shop.step(&dispute, "accept", &shop.merchant, json!({}));
    assert_eq!(
        (status, accepted["status"].as_str(), accepted["refunded"].as_u64()),
        (200, Some("accepted"), Some(1_000))
    );
    assert!(accepted["due_at"].is_null(), "nothing left for the clock");

    let second = shop.paid("t-escalated");
    let dispute = shop.open(&second, 2_000);
    assert_eq!(shop.step(&dispute, "reject", &shop.merchant, json!({})).0, 200);
    assert_eq!(shop.step(&dispute, "escalate", &shop.buyer, json!({})).0, 200);
    assert_eq!(shop.step(&dispute, "accept", &shop.merchant, json!({})).1["status"], "accepted");
    assert_eq!(shop.step(&dispute, "decide", ADMIN_KEY, json!({ "refund_amount": 500 })).0, 409, "over");
    assert_eq!(shop.server.available(&shop.buyer), before - 20_000 + 3_000);
    // A second dispute on the same trade once the first is over; at most three.
    let again = shop.open(&second, 100);
    assert_eq!(shop.step(&again, "accept", &shop.merchant, json!({})).0, 200);
    let third = shop.open(&second, 100);
    assert_eq!(shop.step(&third, "accept", &shop.merchant, json!({})).0, 200);
    let body = json!({ "amount": 100, "reason": "a fourth" });
    let (status, answer) = shop.server.post(&format!("/v1/trades/{second}/disputes"), Some(&shop.buyer), body);
    assert_eq!((status.as_u16(), Server::error_code(&answer)), (422, "limit_exceeded"), "{answer}");
    shop.server.assert_balanced();
}

/// A merchant cannot block a dispute with refunds of its own: its refunds
/// used up (a fen each) the dispute still refunds, and a dispute's request
/// number is not one a merchant can take; a refund of everything left ends
/// the dispute.
#[test]
fn a_merchants_own_refunds_neither_block_nor_outlive_a_dispute() {
    let directory = tempfile::tempdir().unwrap();
    let shop = Shop::start(directory.path());
    let trade_no = shop.paid("t-blocked");
    let dispute = shop.open(&trade_no, 5_000);
    let refund = |no: String, amount: u64| {
        let body = json!({ "out_request_no": no, "amount": amount });
        shop.server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop.merchant), body).0.as_u16()
    };
    for index in 0..platform::REFUNDS_PER_TRADE_MAX {
        assert_eq!(refund(format!("tiny-{index}"), 1), 201);
    }
    assert_eq!(refund("one-more".to_string(), 1), 422, "the merchant's refunds are used up");
    assert_eq!(refund(format!("dispute {}", 1), 1), 400, "no space in a merchant's request number");
    shop.advance(5 * DAY);
    let accepted = shop.dispute(&dispute);
    assert_eq!(
        (accepted["status"].as_str(), accepted["refunded"].as_u64()),
        (Some("accepted"), Some(5_000)),
        "{accepted}"
    );

    let other = shop.paid("t-refunded-whole");
    let dispute = shop.open(&other, 3_000);
    let body = json!({ "out_request_no": "all", "amount": 10_000 });
    assert_eq!(shop.server.post(&format!("/v1/trades/{other}/refunds"), Some(&shop.merchant), body).0, 201);
    let ended = shop.dispute(&dispute);
    assert_eq!((ended["status"].as_str(), ended["refunded"].as_u64()), (Some("accepted"), Some(0)), "{ended}");
    assert!(ended["due_at"].is_null());
    shop.server.assert_balanced();
}
