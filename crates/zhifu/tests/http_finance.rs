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

/// The files of a zip, by name, decoded from GBK.
fn unzip_gbk(bytes: &[u8]) -> Vec<(String, String)> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|index| {
            let mut file = archive.by_index(index).unwrap();
            let mut raw = Vec::new();
            file.read_to_end(&mut raw).unwrap();
            let (text, _, malformed) = encoding_rs::GBK.decode(&raw);
            assert!(!malformed, "GBK");
            (file.name().unwrap().to_string(), text.into_owned())
        })
        .collect()
}

fn fen_of(yuan: &str) -> i64 {
    if yuan.is_empty() {
        return 0;
    }
    let negative = yuan.starts_with('-');
    let (whole, cents) = yuan.trim_start_matches(['-', '+']).split_once('.').unwrap();
    let value = whole.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap();
    if negative { -value } else { value }
}

/// The rows of a bill file: the lines after the column names, up to the first comment.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|line| line.starts_with('#'))
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

/// A day of payments (instant and escrow), refunds, splits and fees, and a
/// withdrawal: the Alipay-format bills from
/// `alipay.data.dataservice.bill.downloadurl.query` (a zip of GBK CSV files
/// with Alipay's columns and a summary) total to the ledger's movements as
/// the REST bill does, fen for fen; the URL works for 30 seconds.
#[test]
fn the_alipay_format_bills_total_to_the_ledger_like_the_rest_bill() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (_, shop, app) = server.merchant_with_app("shop");
    let (carrier_id, _) = server.user("carrier");
    let (_, buyer) = server.user("buyer");
    server.top_up(&buyer, 1_000_000);
    assert_eq!(server.post("/v1/royalty-relations", Some(&shop), json!({ "receiver": carrier_id })).0, 201);
    let mut trades = Vec::new();
    for (index, mode) in ["instant", "escrow", "instant", "escrow"].iter().enumerate() {
        advance(&server, 1_800);
        let body = json!({ "out_trade_no": format!("a-{index}"), "amount": 10_000 + index as u64 * 1_234, "subject": "茶叶 tea", "mode": mode });
        let (_, trade) = server.post("/v1/trades", Some(&shop), body);
        let trade_no = trade["trade_no"].as_str().unwrap().to_string();
        assert_eq!(server.post(&format!("/v1/trades/{trade_no}/pay"), Some(&buyer), json!({})).0, 200);
        trades.push(trade_no);
    }
    assert_eq!(server.post(&format!("/v1/trades/{}/ship", trades[1]), Some(&shop), json!({})).0, 200);
    assert_eq!(server.post(&format!("/v1/trades/{}/confirm", trades[1]), Some(&buyer), json!({})).0, 200);
    let refund = |trade: &str, no: &str, amount: u64| {
        let body = json!({ "out_request_no": no, "amount": amount });
        assert_eq!(server.post(&format!("/v1/trades/{trade}/refunds"), Some(&shop), body).0, 201);
    };
    refund(&trades[0], "r-0", 3_000);
    refund(&trades[3], "r-3", 2_000);
    let split = json!({ "out_request_no": "s-1", "splits": [{ "to": carrier_id, "amount": 1_500 }] });
    assert_eq!(server.post(&format!("/v1/trades/{}/splits", trades[2]), Some(&shop), split).0, 201);
    assert_eq!(server.post("/v1/withdrawals", Some(&shop), json!({ "amount": 7_000 })).0, 201);

    let ask = |bill_type: &str, date: &str| {
        server.gateway(
            &app,
            "alipay.data.dataservice.bill.downloadurl.query",
            json!({ "bill_type": bill_type, "bill_date": date }),
            &[],
        )
    };
    let early = ask("trade", "2013-11-11");
    assert_eq!(
        (early["code"].as_str(), early["sub_code"].as_str()),
        (Some("40004"), Some("isp.bill_not_exist")),
        "{early}"
    );
    advance(&server, 24 * 3_600);
    assert_eq!(ask("daily", "2013-11-11")["sub_code"], "isv.invalid-parameter");
    assert_eq!(ask("trade", "2013-11-32")["sub_code"], "isv.invalid-parameter");

    let text = reqwest::blocking::Client::new()
        .get(format!("{}/v1/bills?date=2013-11-11", server.base))
        .bearer_auth(&shop)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let rest_lines: Vec<Vec<&str>> =
        text.lines().filter(|line| !line.starts_with('#')).skip(1).map(|line| line.split(',').collect()).collect();
    let rest_total: i64 = rest_lines.iter().map(|line| fen_of(line[4])).sum();
    let of_trades: i64 = rest_lines
        .iter()
        .filter(|line| line[1].starts_with("trade_") || line[1].starts_with("campaign_discount"))
        .map(|line| fen_of(line[4]))
        .sum();
    let closing =
        fen_of(text.lines().find(|line| line.starts_with("# closing_balance,")).unwrap().rsplit(',').next().unwrap());

    let fetch = |url: &str| reqwest::blocking::get(url).unwrap();
    let app_id = &app.app_id;

    // The business detail: one line per payment, refund and split, fees beside them.
    let answer = ask("trade", "2013-11-11");
    assert_eq!(answer["code"], "10000", "{answer}");
    let url = answer["bill_download_url"].as_str().unwrap().to_string();
    let response = fetch(&url);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let files = unzip_gbk(&response.bytes().unwrap());
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, [format!("{app_id}_20131111_业务明细.csv"), format!("{app_id}_20131111_业务明细(汇总).csv")]);
    let detail = &files[0].1;
    assert!(detail.starts_with("#支付宝业务明细查询\n"), "{detail}");
    assert!(detail.contains("\n支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\n"), "{detail}");
    let lines = rows(detail);
    let kinds: Vec<&str> = lines.iter().map(|row| row[2].as_str()).collect();
    // The escrow trade not yet confirmed (and its refund) never reached the merchant's balance.
    assert_eq!(kinds, ["交易", "交易", "交易", "退款", "分账"], "{detail}");
    assert!(lines.iter().all(|row| row.len() == 25), "{detail}");
    assert!(lines[0][3] == "茶叶 tea" && lines[3][21] == "r-0", "{detail}");
    let net = |row: &Vec<String>| fen_of(&row[12]) + fen_of(&row[22]) + fen_of(&row[23]);
    assert_eq!(lines.iter().map(net).sum::<i64>(), of_trades, "the detail's net is the ledger's, by trade");
    let summary = &files[1].1;
    let total_line = summary.lines().find(|line| line.starts_with("合计（元）,")).unwrap();
    assert_eq!(fen_of(total_line.rsplit(',').next().unwrap()), of_trades, "{summary}");
    assert!(detail.contains("#交易合计：3笔"), "{detail}");

    // The account detail: every movement, the balance after each.
    let answer = ask("signcustomer", "2013-11-11");
    let files = unzip_gbk(&fetch(answer["bill_download_url"].as_str().unwrap()).bytes().unwrap());
    assert_eq!(files[0].0, format!("{app_id}_20131111_账务明细.csv"));
    let lines = rows(&files[0].1);
    assert_eq!(lines.len(), rest_lines.len());
    let moved: i64 = lines.iter().map(|row| fen_of(&row[6]) + fen_of(&row[7])).sum();
    assert_eq!(moved, rest_total, "{}", files[0].1);
    assert_eq!(fen_of(&lines.last().unwrap()[8]), closing, "the last balance is the day's closing one");
    assert!(files[1].1.contains(&format!("#期末余额：{}.{:02}元", closing / 100, closing % 100)), "{}", files[1].1);
    assert!(lines.iter().any(|row| row[10] == "提现"), "the withdrawal is there");

    // Thirty seconds later the URL is gone; a forged one never worked.
    advance(&server, 31);
    assert_eq!(fetch(&url).status(), 410);
    assert_eq!(fetch(&format!("{}x", url.trim_end_matches(char::is_alphanumeric))).status(), 404);
}

/// A trade's ledger transfers, found in the history at the trade's moments:
/// its payment and fee, a refund with the fee's share back, a split; to
/// its merchant and operators only.
#[test]
fn a_trades_ledger_transfers_are_found_in_the_history() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (shop_id, shop) = server.merchant("shop");
    let (carrier_id, _) = server.user("carrier");
    let (buyer_id, buyer) = server.user("buyer");
    server.top_up(&buyer, 1_000_000);
    assert_eq!(server.post("/v1/royalty-relations", Some(&shop), json!({ "receiver": carrier_id })).0, 201);
    // Other trades around it, at the same moments and after.
    let mut trade_no = String::new();
    for index in 0..3 {
        advance(&server, 60);
        let body =
            json!({ "out_trade_no": format!("x-{index}"), "amount": 10_000, "subject": "tea", "mode": "instant" });
        let (_, trade) = server.post("/v1/trades", Some(&shop), body);
        let number = trade["trade_no"].as_str().unwrap().to_string();
        assert_eq!(server.post(&format!("/v1/trades/{number}/pay"), Some(&buyer), json!({})).0, 200);
        if index == 1 {
            trade_no = number;
        }
    }
    advance(&server, 60);
    let refund = json!({ "out_request_no": "r-1", "amount": 4_000 });
    assert_eq!(server.post(&format!("/v1/trades/{trade_no}/refunds"), Some(&shop), refund).0, 201);
    let split = json!({ "out_request_no": "s-1", "splits": [{ "to": carrier_id, "amount": 1_000 }] });
    assert_eq!(server.post(&format!("/v1/trades/{trade_no}/splits"), Some(&shop), split).0, 201);
    let (status, transfers) = server.get(&format!("/v1/trades/{trade_no}/transfers"), Some(&shop));
    assert_eq!(status, 200, "{transfers}");
    let rows: Vec<(String, String, String)> = transfers["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let field = |name: &str| t[name].as_str().unwrap().to_string();
            (field("type"), field("from"), field("to"))
        })
        .collect();
    let kinds: Vec<&str> = rows.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["trade_payment", "trade_fee", "trade_fee_return", "trade_refund", "trade_split"], "{transfers}");
    assert_eq!(rows[0], ("trade_payment".to_string(), buyer_id.clone(), shop_id.clone()));
    assert_eq!(rows[1].2, "zhifu:revenue");
    assert_eq!(rows[3], ("trade_refund".to_string(), shop_id.clone(), buyer_id.clone()));
    assert_eq!(rows[4], ("trade_split".to_string(), shop_id, carrier_id));
    assert_eq!(transfers["truncated"], false);
    let (_, operator) = server.get(&format!("/v1/trades/{trade_no}/transfers"), Some(ADMIN_KEY));
    assert_eq!(operator["data"], transfers["data"]);
    assert_eq!(server.get(&format!("/v1/trades/{trade_no}/transfers"), Some(&buyer)).0, 403);
    let (_, other) = server.merchant("other");
    assert_eq!(server.get(&format!("/v1/trades/{trade_no}/transfers"), Some(&other)).0, 404);
}

/// A merchant's paid instant trade of `amount`; its trade number.
fn paid(server: &Server, merchant: &str, buyer: &str, out_trade_no: &str, amount: u64) -> String {
    let body = json!({ "out_trade_no": out_trade_no, "amount": amount, "subject": "tea", "mode": "instant" });
    let (status, trade) = server.post("/v1/trades", Some(merchant), body);
    assert_eq!(status, 201, "{trade}");
    let trade_no = trade["trade_no"].as_str().unwrap().to_string();
    assert_eq!(server.post(&format!("/v1/trades/{trade_no}/pay"), Some(buyer), json!({})).0, 200);
    trade_no
}

fn takings(server: &Server, key: &str) -> Vec<(String, u64, u64, u64, u64, i64)> {
    let (status, page) = server.get("/v1/takings", Some(key));
    assert_eq!(status, 200, "{page}");
    let days = page["data"].as_array().unwrap();
    let number = |day: &Value, name: &str| day[name].as_u64().unwrap();
    days.iter()
        .map(|day| {
            let date = day["date"].as_str().unwrap().to_string();
            let net = day["net_amount"].as_i64().unwrap();
            (
                date,
                number(day, "paid_count"),
                number(day, "paid_amount"),
                number(day, "refund_count"),
                number(day, "refunded_amount"),
                net,
            )
        })
        .collect()
}

#[test]
fn takings_by_day_and_refunds_and_events_found_by_their_ids() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &SIMULATED);
    let (shop_id, shop) = server.merchant("shop");
    let (_, other) = server.merchant("other");
    let (_, buyer) = server.user("buyer");
    let (_, stranger) = server.user("stranger");
    server.top_up(&buyer, 1_000_000);
    let first = paid(&server, &shop, &buyer, "t-1", 10_000);
    paid(&server, &shop, &buyer, "t-2", 5_000);
    paid(&server, &other, &buyer, "t-3", 777);
    let refund = json!({ "out_request_no": "r-1", "amount": 2_000 });
    let (status, refund) = server.post(&format!("/v1/trades/{first}/refunds"), Some(&shop), refund);
    assert_eq!(status, 201, "{refund}");
    let refund_id = refund["id"].as_str().unwrap().to_string();

    // Today's takings, and six empty days before it.
    let days = takings(&server, &shop);
    assert_eq!(days.len(), 7, "{days:?}");
    let today = days[0].0.clone();
    assert_eq!((days[0].1, days[0].2, days[0].3, days[0].4, days[0].5), (2, 15_000, 1, 2_000, 13_000));
    assert!(days[1..].iter().all(|day| (day.1, day.2, day.3, day.4, day.5) == (0, 0, 0, 0, 0)), "{days:?}");
    assert!(days.windows(2).all(|pair| pair[0].0 > pair[1].0), "newest first: {days:?}");
    // Operators name the merchant; a buyer has no takings.
    let (status, page) = server.get(&format!("/v1/takings?merchant={shop_id}"), Some(ADMIN_KEY));
    assert_eq!((status.as_u16(), page["data"][0]["net_amount"].as_i64()), (200, Some(13_000)), "{page}");
    assert_eq!(server.get("/v1/takings", Some(ADMIN_KEY)).0, 422);
    assert_eq!(server.get("/v1/takings", Some(&buyer)).0, 403);

    // A refund by its id: its trade's merchant, its buyer, operators; no one else.
    for key in [&shop, &buyer, ADMIN_KEY] {
        let (status, found) = server.get(&format!("/v1/refunds/{refund_id}"), Some(key));
        assert_eq!(status, 200, "{found}");
        assert_eq!((found["trade_no"].as_str(), found["amount"].as_u64()), (Some(first.as_str()), Some(2_000)));
        assert_eq!(found["out_request_no"], "r-1");
    }
    for key in [&other, &stranger] {
        assert_eq!(server.get(&format!("/v1/refunds/{refund_id}"), Some(key)).0, 404);
    }
    assert_eq!(server.get("/v1/refunds/rfd_1", Some(&shop)).0, 404);

    // An event by its id: the merchant's own; an operator names the merchant
    // (an event every endpoint acknowledged is not found alone).
    let (_, events) = server.get("/v1/events?limit=100", Some(&shop));
    let refunded = events["data"].as_array().unwrap().iter().find(|e| e["type"] == "refund.succeeded").unwrap().clone();
    let event_id = refunded["id"].as_str().unwrap().to_string();
    let (status, event) = server.get(&format!("/v1/events/{event_id}"), Some(&shop));
    assert_eq!((status.as_u16(), &event), (200, &refunded));
    let (status, event) = server.get(&format!("/v1/events/{event_id}?merchant={shop_id}"), Some(ADMIN_KEY));
    assert_eq!((status.as_u16(), &event), (200, &refunded));
    assert_eq!(server.get(&format!("/v1/events/{event_id}"), Some(ADMIN_KEY)).0, 404);
    assert_eq!(server.get(&format!("/v1/events/{event_id}"), Some(&other)).0, 404);
    assert_eq!(server.get(&format!("/v1/events/{event_id}?merchant={shop_id}"), Some(&shop)).0, 403);
    // One not yet delivered (its endpoint never answers) is found alone.
    let endpoint = json!({ "url": "http://127.0.0.1:9/hook", "events": ["trade.paid"] });
    assert_eq!(server.post("/v1/webhook-endpoints", Some(&shop), endpoint).0, 201);
    paid(&server, &shop, &buyer, "t-4", 100);
    let (_, pending) = server.get("/v1/events?delivered=false", Some(&shop));
    let pending_id = pending["data"][0]["id"].as_str().unwrap().to_string();
    let (status, event) = server.get(&format!("/v1/events/{pending_id}"), Some(ADMIN_KEY));
    assert_eq!((status.as_u16(), &event["id"]), (200, &json!(pending_id)), "{event}");

    // The next day: yesterday's figures move down a row; a restart keeps them
    // and the refund's place in the index.
    advance(&server, 86_400);
    let server = server.crash_and_restart();
    let days = takings(&server, &shop);
    assert_eq!(days[1].0, today);
    assert_eq!((days[1].1, days[1].2, days[1].4, days[1].5), (3, 15_100, 2_000, 13_100), "{days:?}");
    assert_eq!((days[0].1, days[0].5), (0, 0));
    let (status, found) = server.get(&format!("/v1/refunds/{refund_id}"), Some(&shop));
    assert_eq!((status.as_u16(), found["trade_no"].as_str()), (200, Some(first.as_str())));
    // A refund today of yesterday's trade counts today.
    let refund = json!({ "out_request_no": "r-2", "amount": 1_000 });
    assert_eq!(server.post(&format!("/v1/trades/{first}/refunds"), Some(&shop), refund).0, 201);
    let days = takings(&server, &shop);
    assert_eq!((days[0].3, days[0].4, days[0].5), (1, 1_000, -1_000));
    // A week on, that day is gone from the list.
    advance(&server, 6 * 86_400);
    let days = takings(&server, &shop);
    assert!(days.iter().all(|day| day.0 != today), "{days:?}");
    assert_eq!(days[6].4, 1_000, "six days back: the second refund's day");
}
