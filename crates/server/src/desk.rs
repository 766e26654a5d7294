//! What the operator console (`/console`) and the merchant portal
//! (`/portal`) share: the signed-in session from its cookie, CSRF checks,
//! the frame of every page, and the pages both have — a trade with its
//! timeline, refunds with a confirmation step, closing or shipping it,
//! resending an event, signing out. Every change is an API request made as
//! the signed-in caller (`web::Api`), so the API's rules hold here.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::gateway::{fen_to_yuan, yuan_to_fen};
use crate::web::{self, Call, Refusal, Web};

/// The console or the portal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Desk {
    Console,
    Portal,
}

impl Desk {
    pub fn base(self) -> &'static str {
        match self {
            Desk::Console => "/console",
            Desk::Portal => "/portal",
        }
    }

    pub fn cookie(self) -> &'static str {
        match self {
            Desk::Console => "zhifu_staff",
            Desk::Portal => "zhifu_merchant",
        }
    }

    /// Who may sign in here.
    fn admits(self, caller: Caller) -> bool {
        match self {
            Desk::Console => matches!(caller, Caller::Staff { .. }),
            Desk::Portal => matches!(caller, Caller::Party { kind: platform::PartyKind::Merchant, .. }),
        }
    }
}

/// The words of the console and the portal, in English or Chinese.
pub struct Words {
    pub lang: &'static str,
    pub console: &'static str,
    pub portal: &'static str,
    pub login: &'static str,
    pub password: &'static str,
    pub sign_in: &'static str,
    pub sign_out: &'static str,
    pub search: &'static str,
    pub search_hint: &'static str,
    pub trades: &'static str,
    pub trade: &'static str,
    pub audit: &'static str,
    pub settings: &'static str,
    pub operations: &'static str,
    pub webhooks: &'static str,
    pub keys: &'static str,
    pub status: &'static str,
    pub amount: &'static str,
    pub refunded: &'static str,
    pub fee: &'static str,
    pub merchant: &'static str,
    pub buyer: &'static str,
    pub created: &'static str,
    pub timeline: &'static str,
    pub refund: &'static str,
    pub reason: &'static str,
    pub confirm_refund: &'static str,
    pub cancel: &'static str,
    pub close: &'static str,
    pub ship: &'static str,
    pub resend: &'static str,
    pub balance: &'static str,
    pub no_results: &'static str,
    pub older: &'static str,
    pub save: &'static str,
    pub wrong_password: &'static str,
    pub expired: &'static str,
    pub live: &'static str,
    pub reconciliation: &'static str,
    pub api_reference: &'static str,
    pub bills: &'static str,
    pub ledger: &'static str,
    pub transfers_word: &'static str,
    pub accounts_word: &'static str,
    pub check: &'static str,
    pub detail: &'static str,
    pub store: &'static str,
    pub endpoint: &'static str,
    pub undelivered: &'static str,
    pub oldest_seconds: &'static str,
    pub profit_sharing: &'static str,
    pub attempt: &'static str,
    pub answer: &'static str,
    pub fund: &'static str,
    pub loans: &'static str,
    pub held: &'static str,
    pub new_key_once: &'static str,
    pub revoke_keys: &'static str,
    pub bill_of_day: &'static str,
    pub download_bill: &'static str,
    pub time: &'static str,
    pub actor: &'static str,
    pub action: &'static str,
    pub target: &'static str,
    pub outcome: &'static str,
    pub request: &'static str,
    pub fee_schedules: &'static str,
    pub product: &'static str,
    pub rate_bp: &'static str,
    pub minimum: &'static str,
    pub maximum: &'static str,
    pub campaigns: &'static str,
    pub campaign: &'static str,
    pub sponsor: &'static str,
    pub discount: &'static str,
    pub budget_left: &'static str,
    pub ends: &'static str,
    pub state: &'static str,
    pub running: &'static str,
    pub paused: &'static str,
    pub ended: &'static str,
    pub pause: &'static str,
    pub resume: &'static str,
    pub new_campaign: &'static str,
    pub create: &'static str,
    pub today: &'static str,
    pub paid_word: &'static str,
    pub credit_line: &'static str,
    pub credit_of: &'static str,
    pub lent_at: &'static str,
    pub bp_a_day: &'static str,
    pub url: &'static str,
    pub events: &'static str,
    pub event: &'static str,
    pub kind: &'static str,
    pub source: &'static str,
    pub after: &'static str,
    pub restricted_once: &'static str,
    pub new_restricted: &'static str,
    pub app_key: &'static str,
    pub new_app_key: &'static str,
    pub replace_app_key: &'static str,
    pub roll_hint: &'static str,
    pub bills_hint: &'static str,
    pub day: &'static str,
    pub month: &'static str,
    pub download_day: &'static str,
    pub download_month: &'static str,
    pub per_second: &'static str,
    pub gmv_minute: &'static str,
    pub latency: &'static str,
    pub chart_payments: &'static str,
    pub chart_gmv: &'static str,
    pub peak: &'static str,
    pub live_hint: &'static str,
    pub balanced: &'static str,
    pub breaks: &'static str,
    pub day_cst: &'static str,
    pub break_word: &'static str,
    pub line: &'static str,
    pub bank_lines: &'static str,
    pub matched: &'static str,
    pub loan_rate: &'static str,
    pub loan_penalty: &'static str,
    pub credit_multiple: &'static str,
    pub credit_cap: &'static str,
    pub disputes: &'static str,
    pub dispute: &'static str,
    pub accept: &'static str,
    pub reject: &'static str,
    pub decide: &'static str,
    pub note: &'static str,
    pub due: &'static str,
    pub refund_amount_word: &'static str,
    pub receivers: &'static str,
    pub open_disputes: &'static str,
    pub disputes_hint: &'static str,
    pub freezes: &'static str,
    pub frozen: &'static str,
    pub released_word: &'static str,
    pub expires: &'static str,
    pub release: &'static str,
    pub freezes_hint: &'static str,
    pub ledger_transfers: &'static str,
    pub from_word: &'static str,
    pub to_word: &'static str,
    pub last_days: &'static str,
    pub date_word: &'static str,
    pub paid_trades: &'static str,
    pub paid_yuan: &'static str,
    pub refunds_word: &'static str,
    pub refunded_yuan: &'static str,
    pub net_yuan: &'static str,
    pub roll_key: &'static str,
    pub current_key: &'static str,
    pub old_key_works: &'static str,
    pub not_at_all: &'static str,
    pub one_hour: &'static str,
    pub one_day: &'static str,
    pub rolled_once: &'static str,
    pub old_stops_at: &'static str,
    pub not_our_key: &'static str,
    pub app_key_replaced: &'static str,
    pub campaign_name: &'static str,
    pub budget_yuan: &'static str,
    pub discount_yuan: &'static str,
    pub min_spend_yuan: &'static str,
    pub uses_per_user: &'static str,
    pub starts_at: &'static str,
    pub ends_at: &'static str,
    pub event_needs_merchant: &'static str,
}

const ENGLISH: Words = Words {
    lang: "en",
    console: "zhifu console",
    portal: "zhifu merchant portal",
    login: "Login",
    password: "Password",
    sign_in: "Sign in",
    sign_out: "Sign out",
    search: "Search",
    search_hint: "Trade, refund, party, dispute or event id, login, or out_trade_no (optionally after the merchant's id)",
    trades: "Trades",
    trade: "Trade",
    audit: "Audit log",
    settings: "Settings",
    operations: "Operations",
    webhooks: "Webhooks",
    keys: "API keys",
    status: "Status",
    amount: "Amount",
    refunded: "Refunded",
    fee: "Fee",
    merchant: "Merchant",
    buyer: "Buyer",
    created: "Created",
    timeline: "Timeline",
    refund: "Refund",
    reason: "Reason",
    confirm_refund: "Confirm the refund",
    cancel: "Cancel",
    close: "Close the trade",
    ship: "Mark as shipped",
    resend: "Resend",
    balance: "Balance",
    no_results: "Nothing found.",
    older: "Older",
    save: "Save",
    wrong_password: "Wrong login or password.",
    expired: "This form has expired: open the page again.",
    live: "Live",
    reconciliation: "Reconciliation",
    api_reference: "API reference",
    bills: "Bills",
    ledger: "Ledger",
    transfers_word: "transfers",
    accounts_word: "accounts",
    check: "Check",
    detail: "Detail",
    store: "Store and journal",
    endpoint: "Endpoint",
    undelivered: "Undelivered",
    oldest_seconds: "Oldest (s)",
    profit_sharing: "Profit sharing",
    attempt: "Attempt",
    answer: "Answer",
    fund: "Yu'e Bao",
    loans: "Loans",
    held: "held",
    new_key_once: "New API key (shown once)",
    revoke_keys: "Revoke every API key",
    bill_of_day: "Bill of the day",
    download_bill: "Download the bill",
    time: "Time",
    actor: "Actor",
    action: "Action",
    target: "Target",
    outcome: "Outcome",
    request: "Request",
    fee_schedules: "Fee schedules",
    product: "Product",
    rate_bp: "Rate (bp)",
    minimum: "Minimum (¥)",
    maximum: "Maximum (¥)",
    campaigns: "Campaigns",
    campaign: "Campaign",
    sponsor: "Sponsor",
    discount: "Discount (¥)",
    budget_left: "Budget left (¥)",
    ends: "Ends",
    state: "State",
    running: "running",
    paused: "paused",
    ended: "ended",
    pause: "Pause",
    resume: "Resume",
    new_campaign: "New platform campaign",
    create: "Create",
    today: "Today",
    paid_word: "paid",
    credit_line: "Credit line",
    credit_of: "of",
    lent_at: "lent at",
    bp_a_day: "bp a day",
    url: "URL",
    events: "Events",
    event: "Event",
    kind: "Type",
    source: "Source",
    after: "After (¥)",
    restricted_once: "Restricted key (GET only), shown once:",
    new_restricted: "New restricted key",
    app_key: "Gateway app key",
    new_app_key: "New app public key (PEM, RSA 2048)",
    replace_app_key: "Replace the app key",
    roll_hint: "Lost the full key? An operator revokes every key of the merchant and issues a new one (the console's merchant page).",
    bills_hint: "Every movement of the balance in a business day or month (CST) that has ended, oldest first, with its totals: CSV.",
    day: "Day",
    month: "Month",
    download_day: "Download the day's bill",
    download_month: "Download the month's bill",
    per_second: "Payments/s (last 10 s)",
    gmv_minute: "GMV (last minute)",
    latency: "Latency p50 / p99 (last minute)",
    chart_payments: "Payments per second, last 5 minutes",
    chart_gmv: "GMV per second",
    peak: "peak",
    live_hint: "This node's payments (REST, gateway, cashier, payment codes), by wall-clock second; the page reloads every 2 seconds.",
    balanced: "balanced",
    breaks: "breaks",
    day_cst: "Day (CST)",
    break_word: "Break",
    line: "Line",
    bank_lines: "bank lines",
    matched: "matched",
    loan_rate: "Daily rate (bp)",
    loan_penalty: "Penalty rate (bp a day)",
    credit_multiple: "Credit: % of monthly volume",
    credit_cap: "Credit cap (¥)",
    disputes: "Disputes",
    dispute: "Dispute",
    accept: "Accept and refund",
    reject: "Reject",
    decide: "Decide",
    note: "Note",
    due: "Due",
    refund_amount_word: "Refund to the buyer (¥)",
    receivers: "Receivers",
    open_disputes: "Disputes waiting for a decision or an answer",
    disputes_hint: "Open disputes pause the trade's auto-confirmation. Unanswered for 5 days, a dispute is accepted; a rejection not escalated in 5 days closes it.",
    freezes: "Pre-authorisations",
    frozen: "Frozen",
    released_word: "Released",
    expires: "Expires",
    release: "Release",
    freezes_hint: "Money frozen in buyers' balances (alipay.fund.auth.order.freeze, POST /v1/freezes): pay from it with auth_no, or release it; what is left goes back by itself 30 days after the freeze.",
    ledger_transfers: "Ledger transfers",
    from_word: "From",
    to_word: "To",
    last_days: "The last days",
    date_word: "Date",
    paid_trades: "Trades paid",
    paid_yuan: "Paid (¥)",
    refunds_word: "Refunds",
    refunded_yuan: "Refunded (¥)",
    net_yuan: "Net (¥)",
    roll_key: "Roll the full API key",
    current_key: "Current API key",
    old_key_works: "The old key keeps working",
    not_at_all: "not at all (stops now)",
    one_hour: "for 1 hour",
    one_day: "for 24 hours",
    rolled_once: "New API key, shown once:",
    old_stops_at: "The old key stops at",
    not_our_key: "That is not a key of this merchant.",
    app_key_replaced: "The gateway now verifies this merchant's requests with the new app key.",
    campaign_name: "name",
    budget_yuan: "budget (¥)",
    discount_yuan: "discount (¥)",
    min_spend_yuan: "minimum spend (¥)",
    uses_per_user: "uses per user",
    starts_at: "starts at (RFC 3339)",
    ends_at: "ends at (RFC 3339)",
    event_needs_merchant: "Not found alone: search with the merchant's id before the event's (mch_… evt_…); delivered events are found among their merchant's.",
};

const CHINESE: Words = Words {
    lang: "zh-CN",
    console: "zhifu 运营后台",
    portal: "zhifu 商家中心",
    login: "账户名",
    password: "密码",
    sign_in: "登录",
    sign_out: "退出登录",
    search: "搜索",
    search_hint: "交易号、退款号、用户或商户号、争议号、事件号、账户名，或商户订单号（可在商户号之后）",
    trades: "交易",
    trade: "交易",
    audit: "审计日志",
    settings: "设置",
    operations: "运维",
    webhooks: "通知",
    keys: "API 密钥",
    status: "状态",
    amount: "金额",
    refunded: "已退款",
    fee: "手续费",
    merchant: "商户",
    buyer: "买家",
    created: "创建时间",
    timeline: "时间线",
    refund: "退款",
    reason: "原因",
    confirm_refund: "确认退款",
    cancel: "取消",
    close: "关闭交易",
    ship: "标记为已发货",
    resend: "重新发送",
    balance: "余额",
    no_results: "没有找到。",
    older: "更早",
    save: "保存",
    wrong_password: "账户名或密码错误。",
    expired: "表单已过期，请重新打开页面。",
    live: "实时",
    reconciliation: "对账",
    api_reference: "API 文档",
    bills: "账单",
    ledger: "总账",
    transfers_word: "笔转账",
    accounts_word: "个账户",
    check: "检查项",
    detail: "详情",
    store: "存储与日志",
    endpoint: "通知地址",
    undelivered: "未送达",
    oldest_seconds: "最早（秒）",
    profit_sharing: "分账",
    attempt: "推送时间",
    answer: "响应",
    fund: "余额宝",
    loans: "贷款",
    held: "冻结",
    new_key_once: "新的 API 密钥（仅显示一次）",
    revoke_keys: "吊销全部 API 密钥",
    bill_of_day: "日账单",
    download_bill: "下载账单",
    time: "时间",
    actor: "操作人",
    action: "操作",
    target: "对象",
    outcome: "结果",
    request: "请求号",
    fee_schedules: "费率",
    product: "产品",
    rate_bp: "费率（基点）",
    minimum: "最低（元）",
    maximum: "最高（元）",
    campaigns: "营销活动",
    campaign: "活动",
    sponsor: "出资方",
    discount: "优惠（元）",
    budget_left: "剩余预算（元）",
    ends: "结束",
    state: "状态",
    running: "进行中",
    paused: "已暂停",
    ended: "已结束",
    pause: "暂停",
    resume: "恢复",
    new_campaign: "新建平台活动",
    create: "创建",
    today: "今日",
    paid_word: "笔已付款",
    credit_line: "授信额度",
    credit_of: "总额",
    lent_at: "已借，日利率",
    bp_a_day: "基点",
    url: "地址",
    events: "事件",
    event: "事件",
    kind: "类型",
    source: "来源",
    after: "余额（元）",
    restricted_once: "只读密钥（仅 GET），仅显示一次：",
    new_restricted: "新建只读密钥",
    app_key: "网关应用公钥",
    new_app_key: "新的应用公钥（PEM，RSA 2048）",
    replace_app_key: "更换应用公钥",
    roll_hint: "丢失了完整密钥？请运营人员在运营后台的商户页面停用全部密钥并签发新密钥。",
    bills_hint: "已结束的营业日或月份（北京时间）内余额的每一笔变动，按时间先后，附合计：CSV。",
    day: "日期",
    month: "月份",
    download_day: "下载日账单",
    download_month: "下载月账单",
    per_second: "每秒支付笔数（最近 10 秒）",
    gmv_minute: "成交额（最近一分钟）",
    latency: "延迟 p50 / p99（最近一分钟）",
    chart_payments: "最近 5 分钟每秒支付笔数",
    chart_gmv: "每秒成交额",
    peak: "峰值",
    live_hint: "本节点的支付（REST、网关、收银台、付款码），按秒统计；页面每 2 秒刷新。",
    balanced: "已平",
    breaks: "有差异",
    day_cst: "日期（北京时间）",
    break_word: "差异",
    line: "明细",
    bank_lines: "银行流水笔数",
    matched: "已匹配",
    loan_rate: "日利率（基点）",
    loan_penalty: "逾期日利率（基点）",
    credit_multiple: "授信：月均交易额的百分比",
    credit_cap: "授信上限（元）",
    disputes: "争议",
    dispute: "争议",
    accept: "同意并退款",
    reject: "拒绝",
    decide: "裁决",
    note: "说明",
    due: "截止",
    refund_amount_word: "退还买家（元）",
    receivers: "分账接收方",
    open_disputes: "等待答复或裁决的争议",
    disputes_hint: "争议期间交易的自动确认收货暂停。商家 5 天未答复则自动同意；拒绝后买家 5 天内未申请介入则争议关闭。",
    freezes: "预授权",
    frozen: "冻结",
    released_word: "已解冻",
    expires: "到期",
    release: "解冻",
    freezes_hint: "冻结在买家余额中的资金（alipay.fund.auth.order.freeze、POST /v1/freezes）：可用 auth_no 转支付或解冻；冻结 30 天后未用部分自动解冻。",
    ledger_transfers: "账务流水",
    from_word: "付款方",
    to_word: "收款方",
    last_days: "最近几天",
    date_word: "日期",
    paid_trades: "付款笔数",
    paid_yuan: "付款金额（¥）",
    refunds_word: "退款笔数",
    refunded_yuan: "退款金额（¥）",
    net_yuan: "净收入（¥）",
    roll_key: "轮换完整 API 密钥",
    current_key: "当前 API 密钥",
    old_key_works: "旧密钥继续可用",
    not_at_all: "不再可用（立即停用）",
    one_hour: "1 小时",
    one_day: "24 小时",
    rolled_once: "新 API 密钥（仅显示一次）：",
    old_stops_at: "旧密钥停用时间",
    not_our_key: "这不是本商户的密钥。",
    app_key_replaced: "网关此后使用新的应用公钥验证本商户的请求。",
    campaign_name: "名称",
    budget_yuan: "预算（¥）",
    discount_yuan: "优惠（¥）",
    min_spend_yuan: "最低消费（¥）",
    uses_per_user: "每人次数",
    starts_at: "开始时间（RFC 3339）",
    ends_at: "结束时间（RFC 3339）",
    event_needs_merchant: "单独无法找到：请在事件号前加上商户号搜索（mch_… evt_…）；已送达的事件在其商户的事件中查找。",
};

pub fn words(headers: &HeaderMap) -> &'static Words {
    if web::prefers_chinese(headers) { &CHINESE } else { &ENGLISH }
}

/// What every page of a desk shows around its content.
pub struct Frame {
    pub words: &'static Words,
    pub desk: Desk,
    /// The signed-in caller's name (login or merchant id), if any.
    pub who: Option<String>,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// Operators with this duty see its actions.
    pub may_support: bool,
    pub may_administer: bool,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl Frame {
    pub fn title(&self) -> &'static str {
        match self.desk {
            Desk::Console => self.words.console,
            Desk::Portal => self.words.portal,
        }
    }

    pub fn is_console(&self) -> bool {
        self.desk == Desk::Console
    }
}

/// A signed-in request: its session token and caller, the page frame, and
/// what an API call needs.
pub struct Session {
    pub web: Arc<Web>,
    pub token: String,
    pub frame: Frame,
    pub peer: SocketAddr,
    pub request_id: String,
}

/// The session of a request to `desk`, or the response to give instead
/// (the sign-in page).
pub fn session(web: &Arc<Web>, desk: Desk, headers: &HeaderMap, peer: SocketAddr) -> Result<Session, Box<Response>> {
    let words = words(headers);
    let state = &web.state;
    let token = web::cookie_value(headers, desk.cookie()).map(str::to_string);
    let caller = token.as_deref().and_then(|token| state.sessions.verify(state, token, state.clock.now()));
    let (Some(token), Some(caller)) = (token, caller.filter(|caller| desk.admits(*caller))) else {
        return Err(Box::new(sign_in_page(web, desk, headers, StatusCode::OK, None)));
    };
    let csrf = web::csrf_token(state, &token, desk.base()).map_err(|error| Box::new(error.into_response()))?;
    let who = match caller {
        Caller::Staff { number, .. } => state.store.read(|p| p.staff(number).map(|s| s.login.clone())),
        Caller::Party { number, .. } => Some(state.ids.format(crate::ids::IdKind::Merchant, number)),
        Caller::Admin => None,
    };
    let duty = |duty: crate::auth::Duty| caller.require(duty).is_ok();
    let frame = Frame {
        words,
        desk,
        who,
        csrf,
        may_support: duty(crate::auth::Duty::Support),
        may_administer: duty(crate::auth::Duty::Administer),
        notice: None,
        error: None,
    };
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    Ok(Session { web: Arc::clone(web), token, frame, peer, request_id })
}

impl Session {
    /// A signed-in form's CSRF token is this session's.
    pub fn check_csrf(&self, csrf: &str) -> Result<(), Box<Response>> {
        if web::csrf_holds(&self.web.state, &self.token, self.frame.desk.base(), csrf) {
            Ok(())
        } else {
            Err(Box::new(message_page(&self.frame, StatusCode::FORBIDDEN, self.frame.words.expired)))
        }
    }

    /// A download: the API's answer streamed through as it is, or the
    /// refusal as a page.
    pub async fn download(&self, path: String) -> Response {
        let call = Call {
            token: &self.token,
            method: Method::GET,
            path,
            body: None,
            idempotency_key: None,
            request_id: &self.request_id,
            peer: self.peer,
        };
        let response = match self.web.api.send(call).await {
            Ok(response) => response,
            Err(refusal) => return refusal_page(&self.frame, &refusal),
        };
        if response.status().is_success() {
            return response;
        }
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |name: &str| value["error"][name].as_str().unwrap_or_default().to_string();
        refusal_page(&self.frame, &Refusal { status, code: text("code"), message: text("message") })
    }

    pub async fn get(&self, path: String) -> Result<Value, Refusal> {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Refusal> {
        self.call_as(&self.token, method, path, body, idempotency_key).await
    }

    /// A call with another credential of the same party (an API key the
    /// signed-in merchant gave: what rolling that key needs).
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: String,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Refusal> {
        let call = Call { token, method, path, body, idempotency_key, request_id: &self.request_id, peer: self.peer };
        self.web.api.call(call).await
    }
}

#[derive(Template)]
#[template(path = "desk/sign_in.html")]
struct SignInPage {
    frame: Frame,
    visit_csrf: String,
}

/// The sign-in form (with the visit cookie its CSRF token is tied to).
pub fn sign_in_page(
    web: &Arc<Web>,
    desk: Desk,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let state = &web.state;
    let (visit, new_visit) = match web::visit_of(headers) {
        Ok(visit) => visit,
        Err(error) => return error.into_response(),
    };
    let Ok(visit_csrf) = web::csrf_token(state, &visit, desk.base()) else {
        return crate::error::ApiError::internal("no CSRF token").into_response();
    };
    let frame = Frame {
        words: words(headers),
        desk,
        who: None,
        csrf: String::new(),
        may_support: false,
        may_administer: false,
        notice: None,
        error: error.map(str::to_string),
    };
    let cookies: Vec<String> =
        new_visit.then(|| web::cookie(state, web::VISIT_COOKIE, &visit, None)).into_iter().collect();
    render(status, &SignInPage { frame, visit_csrf }, &cookies)
}

/// The sign-in form's CSRF token is the one the browser's visit cookie gives.
pub fn sign_in_csrf_holds(web: &Web, desk: Desk, headers: &HeaderMap, csrf: &str) -> bool {
    web::cookie_value(headers, web::VISIT_COOKIE)
        .is_some_and(|visit| web::csrf_holds(&web.state, visit, desk.base(), csrf))
}

pub fn render(status: StatusCode, page: &impl Template, cookies: &[String]) -> Response {
    match page.render() {
        Ok(html) => web::page(status, html, None, cookies),
        Err(_) => crate::error::ApiError::internal("a page did not render").into_response(),
    }
}

#[derive(Template)]
#[template(path = "desk/message.html")]
struct MessagePage<'a> {
    frame: &'a Frame,
    message: &'a str,
}

pub fn message_page(frame: &Frame, status: StatusCode, message: &str) -> Response {
    render(status, &MessagePage { frame, message }, &[])
}

/// A refused API call as a page: its status (never a 5xx for a refusal) and words.
pub fn refusal_page(frame: &Frame, refusal: &Refusal) -> Response {
    let text = format!("{} ({})", refusal.message, refusal.code);
    message_page(frame, refusal.status, &text)
}

/// A field of an API answer as text ("" when absent).
pub fn text(value: &Value, name: &str) -> String {
    match &value[name] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn yuan(value: &Value, name: &str) -> String {
    value[name].as_u64().map(fen_to_yuan).unwrap_or_default()
}

/// A trade as its page shows it.
pub struct TradeRow {
    pub trade_no: String,
    pub out_trade_no: String,
    pub merchant: String,
    pub buyer: String,
    pub subject: String,
    pub amount: String,
    pub refunded: String,
    pub split: String,
    pub fee: String,
    pub status: String,
    pub mode: String,
    pub created: String,
    pub refundable: bool,
    pub closable: bool,
    pub shippable: bool,
}

pub fn trade_row(trade: &Value) -> TradeRow {
    let status = text(trade, "status");
    let paid = matches!(status.as_str(), "WAIT_SELLER_SEND" | "WAIT_BUYER_CONFIRM" | "TRADE_SUCCESS");
    let amount = trade["amount"].as_u64().unwrap_or(0);
    let refunded = trade["refunded_amount"].as_u64().unwrap_or(0);
    TradeRow {
        trade_no: text(trade, "trade_no"),
        out_trade_no: text(trade, "out_trade_no"),
        merchant: text(trade, "merchant"),
        buyer: text(trade, "buyer"),
        subject: text(trade, "subject"),
        amount: yuan(trade, "amount"),
        refunded: yuan(trade, "refunded_amount"),
        split: yuan(trade, "split_amount"),
        fee: yuan(trade, "fee"),
        mode: text(trade, "mode"),
        created: text(trade, "created"),
        refundable: paid && refunded < amount,
        closable: status == "WAIT_BUYER_PAY",
        shippable: status == "WAIT_SELLER_SEND",
        status,
    }
}

/// One line of a trade's timeline: an event and its delivery attempts.
pub struct TimelineRow {
    pub event: String,
    pub kind: String,
    pub at: String,
    pub detail: String,
    pub attempts: Vec<AttemptRow>,
    /// Attempted and never acknowledged: it may be resent.
    pub owed: bool,
}

pub struct AttemptRow {
    pub at: String,
    pub endpoint: String,
    pub outcome: String,
    pub duration_ms: String,
}

fn timeline_rows(timeline: &Value) -> Vec<TimelineRow> {
    let entries = timeline["data"].as_array().map(Vec::as_slice).unwrap_or_default();
    entries
        .iter()
        .map(|entry| {
            let event = &entry["event"];
            let refund = &event["data"]["refund"];
            let detail = if refund.is_object() {
                format!("{} ¥{}", text(refund, "out_request_no"), yuan(refund, "amount"))
            } else {
                text(&event["data"], "status")
            };
            let attempts: Vec<AttemptRow> = entry["attempts"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|attempt| AttemptRow {
                    at: text(attempt, "attempted_at"),
                    endpoint: text(attempt, "endpoint"),
                    outcome: match (attempt["status_code"].as_u64(), attempt["error"].as_str()) {
                        (Some(code), _) => code.to_string(),
                        (None, Some(error)) => error.to_string(),
                        (None, None) => "-".to_string(),
                    },
                    duration_ms: text(attempt, "duration_ms"),
                })
                .collect();
            let owed = entry["attempts"].as_array().is_some_and(|attempts| {
                !attempts.is_empty() && attempts.iter().all(|a| a["delivered"].as_bool() != Some(true))
            });
            TimelineRow {
                event: text(event, "id"),
                kind: text(event, "type"),
                at: text(event, "created"),
                detail,
                attempts,
                owed,
            }
        })
        .collect()
}

/// A balance transaction as pages show it.
pub struct MovementRow {
    pub created: String,
    pub kind: String,
    pub source: String,
    pub amount: String,
    pub fee: String,
    pub balance_after: String,
}

pub fn movement_rows(page: &Value) -> Vec<MovementRow> {
    let signed = |value: &Value, name: &str| {
        let fen = value[name].as_i64().unwrap_or(0);
        let text = fen_to_yuan(fen.unsigned_abs());
        if fen < 0 { format!("-{text}") } else { text }
    };
    page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|row| MovementRow {
            created: text(row, "created"),
            kind: text(row, "type"),
            source: text(row, "source"),
            amount: signed(row, "amount"),
            fee: signed(row, "fee"),
            balance_after: row["balance_after"].as_u64().map(fen_to_yuan).unwrap_or_default(),
        })
        .collect()
}

/// An audit line as pages show it.
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: String,
}

pub fn audit_rows(page: &Value) -> Vec<AuditRow> {
    page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|line| AuditRow {
            at: text(line, "at"),
            actor: text(line, "actor"),
            action: text(line, "action"),
            target: text(line, "target"),
            outcome: text(line, "outcome"),
            request_id: text(line, "request_id"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "desk/trade.html")]
struct TradePage {
    frame: Frame,
    trade: TradeRow,
    splits: Vec<crate::finance_desk::SplitRow>,
    disputes: Vec<crate::finance_desk::DisputeRow>,
    transfers: Vec<crate::finance_desk::TransferRow>,
    timeline: Vec<TimelineRow>,
    truncated: bool,
    audit: Vec<AuditRow>,
    nonce: String,
}

/// `GET /{desk}/trades/{trade_no}`: the trade, its timeline (events and
/// every delivery attempt), and for operators the audit lines about it.
pub async fn trade_page(session: Session, trade_no: &str) -> Response {
    let Some(trade_no) = plain_id(trade_no) else {
        return message_page(&session.frame, StatusCode::NOT_FOUND, session.frame.words.no_results);
    };
    let trade = match session.get(format!("/v1/trades/{trade_no}")).await {
        Ok(trade) => trade,
        Err(refusal) => return refusal_page(&session.frame, &refusal),
    };
    let timeline = match session.get(format!("/v1/trades/{trade_no}/events")).await {
        Ok(timeline) => timeline,
        Err(refusal) => return refusal_page(&session.frame, &refusal),
    };
    // A trade has at most a few of each; a refusal shows none.
    let splits =
        session.get(format!("/v1/trades/{trade_no}/splits")).await.map(|page| crate::finance_desk::split_rows(&page));
    let disputes = session
        .get(format!("/v1/disputes?trade={trade_no}"))
        .await
        .map(|page| crate::finance_desk::dispute_rows(&page));
    let transfers = session
        .get(format!("/v1/trades/{trade_no}/transfers"))
        .await
        .map(|page| crate::finance_desk::transfer_rows(&page));
    let audit = if session.frame.is_console() {
        session.get(format!("/v1/admin/audit?target={trade_no}&limit=50")).await.map(|page| audit_rows(&page))
    } else {
        Ok(Vec::new())
    };
    let nonce = match web::form_nonce() {
        Ok(nonce) => nonce,
        Err(error) => return error.into_response(),
    };
    let page = TradePage {
        trade: trade_row(&trade),
        splits: splits.unwrap_or_default(),
        disputes: disputes.unwrap_or_default(),
        transfers: transfers.unwrap_or_default(),
        timeline: timeline_rows(&timeline),
        truncated: timeline["truncated"].as_bool().unwrap_or(false),
        audit: audit.unwrap_or_default(),
        nonce,
        frame: session.frame,
    };
    render(StatusCode::OK, &page, &[])
}

/// An id from a URL, if it is one (letters, digits and `_` only).
pub fn plain_id(id: &str) -> Option<&str> {
    (!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(id)
}

#[derive(Deserialize)]
pub struct RefundForm {
    csrf: String,
    nonce: String,
    amount: String,
    #[serde(default)]
    reason: String,
    /// Absent: show the confirmation step; `yes`: refund.
    #[serde(default)]
    confirm: String,
}

#[derive(Template)]
#[template(path = "desk/confirm_refund.html")]
struct ConfirmRefundPage {
    frame: Frame,
    trade: TradeRow,
    amount: String,
    reason: String,
    nonce: String,
}

/// `POST /{desk}/trades/{trade_no}/refund`: first a confirmation page, then
/// the refund (the form's nonce is its idempotency key and its
/// `out_request_no`: a second submission is the same refund).
pub async fn refund(session: Session, trade_no: &str, form: RefundForm) -> Response {
    let (Some(trade_no), Some(nonce)) = (plain_id(trade_no), plain_id(&form.nonce)) else {
        return message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.no_results);
    };
    let Some(fen) = yuan_to_fen(form.amount.trim()).filter(|&fen| fen > 0) else {
        let text = "amount must be yuan with at most two decimals, above zero (12.34)";
        return message_page(&session.frame, StatusCode::UNPROCESSABLE_ENTITY, text);
    };
    if form.confirm != "yes" {
        let trade = match session.get(format!("/v1/trades/{trade_no}")).await {
            Ok(trade) => trade_row(&trade),
            Err(refusal) => return refusal_page(&session.frame, &refusal),
        };
        let page = ConfirmRefundPage {
            trade,
            amount: fen_to_yuan(fen),
            reason: form.reason,
            nonce: nonce.to_string(),
            frame: session.frame,
        };
        return render(StatusCode::OK, &page, &[]);
    }
    let mut body = json!({ "out_request_no": format!("web-{nonce}"), "amount": fen });
    if !form.reason.trim().is_empty() {
        body["reason"] = json!(form.reason.trim());
    }
    let path = format!("/v1/trades/{trade_no}/refunds");
    match session.call(Method::POST, path, Some(body), Some(nonce)).await {
        Ok(_) => web::see_other(&format!("{}/trades/{trade_no}", session.frame.desk.base()), &[]),
        Err(refusal) => refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    nonce: String,
    /// The trade page to go back to.
    #[serde(default)]
    back: String,
}

/// A trade's action without fields (`close`, `ship`), or an event's
/// resend: the API request, then back to the trade.
pub async fn act(session: Session, path: String, form: ActionForm) -> Response {
    let nonce = plain_id(&form.nonce);
    match session.call(Method::POST, path, Some(json!({})), nonce).await {
        Ok(_) => {
            let back = plain_id(&form.back).map_or(session.frame.desk.base().to_string(), |trade| {
                format!("{}/trades/{trade}", session.frame.desk.base())
            });
            web::see_other(&back, &[])
        }
        Err(refusal) => refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct SignOutForm {
    csrf: String,
}

/// `POST /{desk}/sign-out`: the session ends on this node at once and the
/// cookie is cleared.
pub async fn sign_out(session: Session) -> Response {
    let state = &session.web.state;
    let now = state.clock.now();
    state.sessions.end(&session.token, now.plus_nanos(crate::auth::SESSION_NANOS), now);
    let cleared = web::cookie(state, session.frame.desk.cookie(), "", Some(0));
    web::see_other(session.frame.desk.base(), &[cleared])
}

/// The routes both desks have, for `desk`.
pub fn shared_routes(desk: Desk) -> axum::Router<Arc<Web>> {
    use axum::routing::{get, post};
    let base = desk.base();
    axum::Router::new()
        .route(&format!("{base}/trades/{{trade_no}}"), get(move |s, c, h, p| show_trade(desk, s, c, h, p)))
        .route(&format!("{base}/trades/{{trade_no}}/refund"), post(refund_trade))
        .route(&format!("{base}/trades/{{trade_no}}/close"), post(|p, f| trade_action("close", p, f)))
        .route(&format!("{base}/trades/{{trade_no}}/ship"), post(|p, f| trade_action("ship", p, f)))
        .route(&format!("{base}/events/{{id}}/resend"), post(resend))
        .route(&format!("{base}/sign-out"), post(leave))
        .merge(crate::finance_desk::routes(desk))
}

type Peer = ConnectInfo<SocketAddr>;

async fn show_trade(
    desk: Desk,
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(trade_no): Path<String>,
) -> Response {
    match session(&web, desk, &headers, peer) {
        Ok(session) => trade_page(session, &trade_no).await,
        Err(response) => *response,
    }
}

/// A form with a CSRF token.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A signed-in form post to a desk (the console or the portal, by its
/// path) whose CSRF token is the session's: the session and the form. Else
/// the sign-in page, or a page saying the form is not good (400, 403).
pub struct Posted<T>(pub Session, pub T);

impl<T: serde::de::DeserializeOwned + CsrfForm + Send + 'static> axum::extract::FromRequest<Arc<Web>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, web: &Arc<Web>) -> Result<Self, Response> {
        let desk = if request.uri().path().starts_with(Desk::Portal.base()) { Desk::Portal } else { Desk::Console };
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0);
        let session = session(web, desk, request.headers(), peer).map_err(|response| *response)?;
        let Ok(Form(form)) = Form::<T>::from_request(request, web).await else {
            return Err(message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired));
        };
        session.check_csrf(form.csrf()).map_err(|response| *response)?;
        Ok(Posted(session, form))
    }
}

macro_rules! csrf_forms {
    ($($form:ty),* $(,)?) => {
        $(impl $crate::desk::CsrfForm for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}
pub(crate) use csrf_forms;

csrf_forms!(RefundForm, ActionForm, SignOutForm);

async fn refund_trade(Path(trade_no): Path<String>, Posted(session, form): Posted<RefundForm>) -> Response {
    refund(session, &trade_no, form).await
}

async fn trade_action(
    what: &'static str,
    Path(trade_no): Path<String>,
    Posted(session, mut form): Posted<ActionForm>,
) -> Response {
    let Some(trade_no) = plain_id(&trade_no) else {
        return message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    form.back = trade_no.to_string();
    act(session, format!("/v1/trades/{trade_no}/{what}"), form).await
}

async fn resend(Path(id): Path<String>, Posted(session, form): Posted<ActionForm>) -> Response {
    let Some(id) = plain_id(&id) else {
        return message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    act(session, format!("/v1/events/{id}/resend"), form).await
}

async fn leave(Posted(session, _): Posted<SignOutForm>) -> Response {
    sign_out(session).await
}

pub async fn stylesheet() -> Response {
    let css = include_str!("../templates/desk/style.css");
    ([(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response()
}
