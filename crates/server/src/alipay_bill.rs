//! Bills as Alipay lays them out, for `alipay.data.dataservice.bill.downloadurl.query`:
//! a zip of two GBK-encoded CSV files, the detail and its summary, with
//! Alipay's headers (`#支付宝业务明细查询`, the column names, the totals
//! lines). `bill_type` `trade` is the business detail (业务明细: one line per
//! payment, refund or split of a trade, its fee beside it); `signcustomer`
//! the account detail (账务明细: one line per movement of the balance).
//!
//! Both are read from the ledger's history as the REST bill is
//! (`routes::finance::period_movements`: 8 bytes of memory a movement of
//! the period), written into a temporary file (the bill itself never in
//! memory), then sent; two are made at once at most. The download URL
//! carries a signed request valid for 30 seconds; the zip is made when it
//! is fetched. Every amount is signed as it moved the merchant's balance,
//! so a detail's amounts add up to the ledger's change, fen for fen.

use std::io::{Read, Seek, Write};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::accounts::{self, Reference};
use platform::{PartyNumber, Timestamp, Trade, TradeNumber};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::error::ApiError;
use crate::gateway::format_timestamp;
use crate::ids::IdKind;
use crate::routes::finance::{
    Period, PeriodMovements, change_of, command_time, csv_field, history_failed, period_movements, signed_yuan,
};

/// How long a download URL works.
pub const DOWNLOAD_SECONDS: u64 = 30;
/// A download token's length at most.
const TOKEN_BYTES_MAX: usize = 1_024;
/// Bytes read from the zip file per chunk sent.
const CHUNK_BYTES: usize = 64 * 1024;
/// Bills being made at once, on this node.
static BUILDS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillKind {
    /// `trade`: 业务明细.
    Trade,
    /// `signcustomer`: 账务明细.
    Account,
}

impl BillKind {
    pub fn of(bill_type: &str) -> Option<BillKind> {
        match bill_type {
            "trade" => Some(BillKind::Trade),
            "signcustomer" => Some(BillKind::Account),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BillKind::Trade => "业务明细",
            BillKind::Account => "账务明细",
        }
    }
}

/// What a download URL asks for, signed.
#[derive(Serialize, Deserialize)]
struct Download {
    merchant: u64,
    kind: BillKind,
    period: Period,
    expires_nanos: u64,
}

/// A URL, valid `DOWNLOAD_SECONDS`, of `merchant`'s bill of `period`.
pub fn download_url(
    state: &AppState,
    merchant: PartyNumber,
    kind: BillKind,
    period: Period,
) -> Result<String, ApiError> {
    let expires_nanos = state.clock.now().nanos().saturating_add(DOWNLOAD_SECONDS * ledger::NANOS_PER_SECOND);
    let download = Download { merchant: merchant.get(), kind, period, expires_nanos };
    let token = crate::web::signed_token(state, b"alipay-bill", &download)?;
    Ok(format!("{}/bills/alipay/{token}", state.public_url))
}

fn read_token(state: &AppState, token: &str) -> Option<Download> {
    crate::web::read_signed_token(state, b"alipay-bill", token, TOKEN_BYTES_MAX)
}

/// `GET /bills/alipay/{token}`: the zip, made now.
pub async fn download(State(state): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    let Some(download) = read_token(&state, &token) else {
        return ApiError::not_found("bill").into_response();
    };
    if download.expires_nanos <= state.clock.now().nanos() {
        return ApiError::new(StatusCode::GONE, "expired", "the download URL has expired: ask for another")
            .into_response();
    }
    // A few bills at a time: each holds its period's positions (8 bytes a
    // movement) and a writer thread while it is made.
    let Ok(_permit) = BUILDS.try_acquire() else {
        return ApiError::overloaded().into_response();
    };
    let name = zip_name(&download);
    let writer = Arc::clone(&state);
    let made = tokio::task::spawn_blocking(move || make_zip(&writer, &download)).await;
    let file = match made {
        Ok(Ok(file)) => file,
        Ok(Err(error)) => return error.into_response(),
        Err(_) => return ApiError::internal("the bill's writer stopped").into_response(),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || send_file(file, &sender));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

fn send_file(mut file: std::fs::File, sender: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0u8; CHUNK_BYTES];
        match file.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => {
                chunk.truncate(read);
                if sender.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = sender.blocking_send(Err(error));
                return;
            }
        }
    }
}

/// `2013000000000042_20131111`: the merchant's app id (Alipay's pid) and the period.
fn stem(download: &Download) -> String {
    let app_id = crate::gateway::app_id(PartyNumber::new(download.merchant));
    format!("{app_id}_{}", download.period.label.replace('-', ""))
}

fn zip_name(download: &Download) -> String {
    format!("{}.csv.zip", stem(download))
}

fn make_zip(state: &AppState, download: &Download) -> Result<std::fs::File, ApiError> {
    let failed = |error: &dyn std::fmt::Display| ApiError::internal(format!("cannot write the bill: {error}"));
    let file = tempfile::tempfile().map_err(|error| failed(&error))?;
    let wallet = accounts::wallet(PartyNumber::new(download.merchant));
    let movements = period_movements(state, wallet, &download.period)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    // ZIP64 only where a file could pass 4 GiB (a line is far below 512
    // bytes): every reader opens the plain format.
    let large = movements.positions.len() > (4 << 30) / 512;
    // Deflate's fastest level: a bill of a million lines zips in a third
    // of the time of the default level (BENCHMARKS.md), a few MB larger.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(large);
    let stem = stem(download);
    let kind = download.kind.name();
    zip.start_file(format!("{stem}_{kind}.csv"), options).map_err(|error| failed(&error))?;
    let mut detail = Gbk(&mut zip);
    let summary = match download.kind {
        BillKind::Trade => write_trade_detail(state, download, &movements, &mut detail)?,
        BillKind::Account => write_account_detail(state, download, &movements, &mut detail)?,
    };
    zip.start_file(format!("{stem}_{kind}(汇总).csv"), options).map_err(|error| failed(&error))?;
    Gbk(&mut zip).lines(&summary).map_err(|error| failed(&error))?;
    let written = zip.finish().map_err(|error| failed(&error))?;
    let mut file = written.into_inner().map_err(|error| failed(&error.error()))?;
    file.rewind().map_err(|error| failed(&error))?;
    Ok(file)
}

/// Text written as GBK, Alipay's encoding for bills.
struct Gbk<'a, W: Write>(&'a mut W);

impl<W: Write> Gbk<'_, W> {
    fn line(&mut self, text: &str) -> std::io::Result<()> {
        let (bytes, _, _) = encoding_rs::GBK.encode(text);
        self.0.write_all(&bytes)?;
        self.0.write_all(b"\n")
    }

    fn lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        lines.iter().try_for_each(|line| self.line(line))
    }
}

/// `2013年11月11日 00:00:00`, CST.
fn chinese_time(nanos: u64) -> String {
    let plain = format_timestamp(Timestamp::from_nanos(nanos));
    let (date, time) = plain.split_once(' ').unwrap_or((&plain, ""));
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    format!("{year}年{month}月{day}日 {time}")
}

/// The lines above a file's columns.
fn preamble(download: &Download, title: &str, list: &str) -> Vec<String> {
    vec![
        format!("#支付宝{title}查询"),
        format!("#账号：[{}]", crate::gateway::app_id(PartyNumber::new(download.merchant))),
        format!(
            "#起始日期：[{}]   终止日期：[{}]",
            chinese_time(download.period.start),
            chinese_time(download.period.end)
        ),
        format!("#-----------------------------------------{list}列表----------------------------------------"),
    ]
}

fn list_end(list: &str) -> String {
    format!("#-----------------------------------------{list}列表结束------------------------------------")
}

fn exported(state: &AppState) -> String {
    format!("#导出时间：[{}]", chinese_time(state.clock.now().nanos()))
}

fn yuan(fen: i128) -> String {
    signed_yuan(fen)
}

/// The trade a movement belongs to, read once for the movements in a row.
struct TradeCache(Option<Trade>);

impl TradeCache {
    fn get(&mut self, state: &AppState, number: TradeNumber) -> Option<&Trade> {
        if self.0.as_ref().is_none_or(|trade| trade.number != number) {
            self.0 = state.store.read_with_archive(|p, archive| p.trade(archive, number)).ok().flatten();
        }
        self.0.as_ref()
    }
}

/// One line of the business detail: the movements of one trade by one command.
#[derive(Default)]
struct TradeRow {
    trade: Option<(TradeNumber, u64)>,
    kind: &'static str,
    received: i128,
    discount: i128,
    fee: i128,
    split: i128,
}

#[derive(Default)]
struct TradeTotals {
    payments: (u64, i128),
    refunds: (u64, i128),
    orders: i128,
    discount: i128,
    fee: i128,
    split: i128,
}

const TRADE_COLUMNS: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";
const TRADE_SUMMARY_COLUMNS: &str = "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）";

/// The business detail, and its summary's lines.
fn write_trade_detail<W: Write>(
    state: &AppState,
    download: &Download,
    movements: &PeriodMovements,
    out: &mut Gbk<'_, W>,
) -> Result<Vec<String>, ApiError> {
    let failed = |error: std::io::Error| ApiError::internal(format!("cannot write the bill: {error}"));
    let wallet = accounts::wallet(PartyNumber::new(download.merchant));
    out.lines(&preamble(download, "业务明细", "业务明细")).map_err(failed)?;
    out.line(TRADE_COLUMNS).map_err(failed)?;
    let mut row = TradeRow::default();
    let mut totals = TradeTotals::default();
    let mut trades = TradeCache(None);
    for &position in movements.positions.iter().rev() {
        let Some(stored) = state.store.stored_transfer(position).map_err(history_failed)? else { continue };
        let transfer = stored.transfer;
        let change = change_of(&transfer, wallet);
        let Some(Reference::Trade(number)) = Reference::decode(transfer.user_data) else { continue };
        if change == 0 {
            continue;
        }
        let key = (number, command_time(&transfer));
        if row.trade.is_some_and(|held| held != key) {
            write_trade_row(state, &mut trades, &row, &mut totals, out).map_err(failed)?;
            row = TradeRow::default();
        }
        row.trade = Some(key);
        add_to_row(&mut row, transfer.code, change);
    }
    if row.trade.is_some() {
        write_trade_row(state, &mut trades, &row, &mut totals, out).map_err(failed)?;
    }
    out.line(&list_end("业务明细")).map_err(failed)?;
    out.line(&format!(
        "#交易合计：{}笔，商家实收共：{}元，商家优惠共：0.00元",
        totals.payments.0,
        yuan(totals.payments.1)
    ))
    .map_err(failed)?;
    out.line(&format!(
        "#退款合计：{}笔，商家实收退款共：{}元，商家优惠退款共：0.00元",
        totals.refunds.0,
        yuan(totals.refunds.1)
    ))
    .map_err(failed)?;
    out.line(&exported(state)).map_err(failed)?;
    Ok(trade_summary(state, download, &totals))
}

/// A movement's part in its row, signed as it moved the merchant's balance.
fn add_to_row(row: &mut TradeRow, code: u16, change: i128) {
    match code {
        accounts::CODE_TRADE_FEE | accounts::CODE_TRADE_FEE_RETURN => row.fee += change,
        accounts::CODE_TRADE_SPLIT => {
            row.split += change;
            if row.kind.is_empty() {
                row.kind = "分账";
            }
        }
        accounts::CODE_CAMPAIGN_DISCOUNT => {
            row.received += change;
            row.discount += change;
        }
        accounts::CODE_TRADE_REFUND | accounts::CODE_CAMPAIGN_DISCOUNT_RETURN => {
            row.received += change;
            row.kind = "退款";
        }
        _ => {
            row.received += change;
            if row.kind != "退款" {
                row.kind = "交易";
            }
        }
    }
}

fn write_trade_row<W: Write>(
    state: &AppState,
    trades: &mut TradeCache,
    row: &TradeRow,
    totals: &mut TradeTotals,
    out: &mut Gbk<'_, W>,
) -> std::io::Result<()> {
    let Some((number, time)) = row.trade else { return Ok(()) };
    let kind = if row.kind.is_empty() { "交易" } else { row.kind };
    let trade = trades.get(state, number);
    let (out_trade_no, subject, created, buyer, amount) = trade.map_or_else(Default::default, |trade| {
        (
            trade.out_trade_no.clone(),
            trade.subject.clone(),
            format_timestamp(trade.created_at),
            trade.payer.map(|payer| state.ids.format(IdKind::User, payer)).unwrap_or_default(),
            i128::from(trade.amount.get()),
        )
    });
    let request_no = trade
        .and_then(|trade| trade.refunds.iter().find(|refund| refund.created_at.nanos() == time))
        .map(|refund| refund.out_request_no.clone())
        .filter(|_| kind == "退款")
        .unwrap_or_default();
    match kind {
        "交易" => {
            (totals.payments.0, totals.payments.1, totals.orders) =
                (totals.payments.0 + 1, totals.payments.1 + row.received, totals.orders + amount)
        }
        "退款" => (totals.refunds.0, totals.refunds.1) = (totals.refunds.0 + 1, totals.refunds.1 + row.received),
        _ => {}
    }
    (totals.discount, totals.fee, totals.split) =
        (totals.discount + row.discount, totals.fee + row.fee, totals.split + row.split);
    out.line(&format!(
        "{},{},{kind},{},{created},{},,,,,{buyer},{},{},0.00,0.00,{},0.00,0.00,,0.00,0.00,{},{},{},",
        state.ids.format(IdKind::Trade, number),
        csv_field(&out_trade_no),
        csv_field(&subject),
        format_timestamp(Timestamp::from_nanos(time)),
        yuan(amount),
        yuan(row.received),
        yuan(row.discount),
        csv_field(&request_no),
        yuan(row.fee),
        yuan(row.split),
    ))
}

fn trade_summary(state: &AppState, download: &Download, totals: &TradeTotals) -> Vec<String> {
    let received = totals.payments.1 + totals.refunds.1;
    let net = received + totals.fee + totals.split;
    let figures = format!(
        "{},{},{},{},{},0.00,0.00,{},{},{}",
        totals.payments.0,
        totals.refunds.0,
        yuan(totals.orders),
        yuan(received),
        yuan(totals.discount),
        yuan(totals.fee),
        yuan(totals.split),
        yuan(net)
    );
    let mut lines = preamble(download, "业务汇总", "业务汇总");
    lines.push(TRADE_SUMMARY_COLUMNS.to_string());
    lines.push(format!(",,{figures}"));
    lines.push(format!("合计（元）,,{figures}"));
    lines.push(list_end("业务汇总"));
    lines.push(exported(state));
    lines
}

const ACCOUNT_COLUMNS: &str = "账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注";

/// The account detail (every movement of the balance), and its summary's lines.
fn write_account_detail<W: Write>(
    state: &AppState,
    download: &Download,
    movements: &PeriodMovements,
    out: &mut Gbk<'_, W>,
) -> Result<Vec<String>, ApiError> {
    let failed = |error: std::io::Error| ApiError::internal(format!("cannot write the bill: {error}"));
    let wallet = accounts::wallet(PartyNumber::new(download.merchant));
    out.lines(&preamble(download, "账务明细", "账务明细")).map_err(failed)?;
    out.line(ACCOUNT_COLUMNS).map_err(failed)?;
    let mut balance = movements.opening;
    let mut by_type: std::collections::BTreeMap<&'static str, [(u64, i128); 2]> = Default::default();
    let mut trades = TradeCache(None);
    for &position in movements.positions.iter().rev() {
        let Some(stored) = state.store.stored_transfer(position).map_err(history_failed)? else { continue };
        let transfer = stored.transfer;
        let change = change_of(&transfer, wallet);
        if change == 0 {
            continue;
        }
        balance = balance.saturating_add_signed(change);
        let kind = business_type(transfer.code);
        let side = &mut by_type.entry(kind).or_default()[usize::from(change < 0)];
        (side.0, side.1) = (side.0 + 1, side.1 + change);
        let reference = Reference::decode(transfer.user_data);
        let (out_trade_no, subject) = match reference {
            Some(Reference::Trade(number)) => trades
                .get(state, number)
                .map(|trade| (trade.out_trade_no.clone(), trade.subject.clone()))
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let other =
            if transfer.credit_account_id == wallet { transfer.debit_account_id } else { transfer.credit_account_id };
        let (income, expense) = if change > 0 { (yuan(change), String::new()) } else { (String::new(), yuan(change)) };
        out.line(&format!(
            "{},{},{},{},{},{},{income},{expense},{},zhifu,{kind},{}",
            state.ids.format(IdKind::Entry, position),
            reference.map(|r| crate::routes::parties::reference_id(&state.ids, r)).unwrap_or_default(),
            csv_field(&out_trade_no),
            csv_field(&subject),
            format_timestamp(Timestamp::from_nanos(command_time(&transfer))),
            crate::routes::finance::account_label(state, other),
            yuan(i128::try_from(balance).unwrap_or(i128::MAX)),
            accounts::transfer_code_name(transfer.code),
        ))
        .map_err(failed)?;
    }
    let sum =
        |side: usize| by_type.values().fold((0u64, 0i128), |(n, s), sides| (n + sides[side].0, s + sides[side].1));
    let ((incomes, income), (expenses, expense)) = (sum(0), sum(1));
    out.line(&list_end("账务明细")).map_err(failed)?;
    out.line(&format!("#支出合计：{expenses}笔，共{}元", yuan(expense))).map_err(failed)?;
    out.line(&format!("#收入合计：{incomes}笔，共{}元", yuan(income))).map_err(failed)?;
    out.line(&exported(state)).map_err(failed)?;
    let mut lines = preamble(download, "账务汇总", "账务汇总");
    lines.push("业务类型,收入笔数,收入金额（+元）,支出笔数,支出金额（-元）,合计金额（元）".to_string());
    for (kind, [(ins, sum_in), (outs, sum_out)]) in &by_type {
        lines.push(format!("{kind},{ins},{},{outs},{},{}", yuan(*sum_in), yuan(*sum_out), yuan(sum_in + sum_out)));
    }
    lines.push(format!("合计,{incomes},{},{expenses},{},{}", yuan(income), yuan(expense), yuan(income + expense)));
    lines.push(list_end("账务汇总"));
    lines.push(format!("#期初余额：{}元", yuan(i128::try_from(movements.opening).unwrap_or(i128::MAX))));
    lines.push(format!("#期末余额：{}元", yuan(i128::try_from(movements.closing).unwrap_or(i128::MAX))));
    lines.push(exported(state));
    Ok(lines)
}

/// Alipay's words for what a movement is (业务类型).
fn business_type(code: u16) -> &'static str {
    match code {
        accounts::CODE_TRADE_PAYMENT | accounts::CODE_TRADE_SETTLEMENT | accounts::CODE_CAMPAIGN_DISCOUNT => "在线支付",
        accounts::CODE_TRADE_REFUND | accounts::CODE_CAMPAIGN_DISCOUNT_RETURN => "交易退款",
        accounts::CODE_TRADE_FEE
        | accounts::CODE_TRADE_FEE_RETURN
        | accounts::CODE_TRANSFER_FEE
        | accounts::CODE_WITHDRAWAL_FEE => "收费",
        accounts::CODE_TRADE_SPLIT => "分账",
        accounts::CODE_TOPUP => "充值",
        accounts::CODE_WITHDRAWAL => "提现",
        accounts::CODE_TRANSFER => "转账",
        accounts::CODE_LOAN_DISBURSEMENT | accounts::CODE_LOAN_REPAYMENT => "贷款",
        accounts::CODE_LOAN_INTEREST | accounts::CODE_LOAN_PENALTY => "贷款利息",
        accounts::CODE_FUND_SUBSCRIPTION | accounts::CODE_FUND_REDEMPTION | accounts::CODE_FUND_YIELD => "余额宝",
        _ => "其他",
    }
}
