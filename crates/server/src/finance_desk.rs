//! Merchant finance in the console and the portal: a trade page's splits
//! and disputes, the list of disputes (the console's queue of open ones, a
//! merchant's own) and their answers — the merchant accepts or rejects,
//! support staff decide an escalated one — and pre-authorisations (a
//! merchant's freezes; it releases what one still holds). Each is the
//! API's request (`routes::disputes`, `routes::freezes`), made with the
//! session's token.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::desk::{Desk, Frame, Posted, csrf_forms, message_page, plain_id, refusal_page, render, session, text, yuan};
use crate::gateway::yuan_to_fen;
use crate::web::{self, Web};

/// A dispute as the pages show it, with what the viewer may do to it.
pub struct DisputeRow {
    pub id: String,
    pub trade_no: String,
    pub status: String,
    pub amount: String,
    pub reason: String,
    pub note: String,
    pub due: String,
    pub refunded: String,
    pub by_clock: bool,
    pub answerable: bool,
    pub rejectable: bool,
    pub decidable: bool,
}

pub fn dispute_rows(page: &Value) -> Vec<DisputeRow> {
    let Some(data) = page["data"].as_array() else { return Vec::new() };
    data.iter()
        .map(|dispute| {
            let status = text(dispute, "status");
            DisputeRow {
                id: text(dispute, "id"),
                trade_no: text(dispute, "trade_no"),
                amount: yuan(dispute, "amount"),
                reason: text(dispute, "reason"),
                note: text(dispute, "note"),
                due: text(dispute, "due_at"),
                refunded: yuan(dispute, "refunded"),
                by_clock: dispute["by_clock"].as_bool().unwrap_or(false),
                answerable: matches!(status.as_str(), "open" | "rejected" | "escalated"),
                rejectable: status == "open",
                decidable: status == "escalated",
                status,
            }
        })
        .collect()
}

/// A split as the trade page shows it.
pub struct SplitRow {
    pub id: String,
    pub out_request_no: String,
    pub parts: String,
    pub created: String,
}

pub fn split_rows(page: &Value) -> Vec<SplitRow> {
    let Some(data) = page["data"].as_array() else { return Vec::new() };
    data.iter()
        .map(|split| {
            let parts = split["splits"].as_array().map_or_else(String::new, |parts| {
                let each = parts.iter().map(|part| format!("{} ¥{}", text(part, "to"), yuan(part, "amount")));
                each.collect::<Vec<_>>().join(", ")
            });
            SplitRow {
                id: text(split, "id"),
                out_request_no: text(split, "out_request_no"),
                parts,
                created: text(split, "created"),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "desk/disputes.html")]
struct DisputesPage {
    frame: Frame,
    disputes: Vec<DisputeRow>,
}

/// `GET /{desk}/disputes`: the console's queue (disputes not over, oldest
/// first), or the merchant's disputes, newest first.
async fn list(desk: Desk, web: Arc<Web>, peer: SocketAddr, headers: HeaderMap) -> Response {
    let session = match session(&web, desk, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    match session.get("/v1/disputes?limit=100".to_string()).await {
        Ok(page) => render(StatusCode::OK, &DisputesPage { disputes: dispute_rows(&page), frame: session.frame }, &[]),
        Err(refusal) => refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct DisputeForm {
    csrf: String,
    nonce: String,
    /// The trade page to go back to.
    back: String,
    #[serde(default)]
    note: String,
    /// A decision's refund, in yuan.
    #[serde(default)]
    amount: String,
}

csrf_forms!(DisputeForm);

/// `POST /{desk}/disputes/{id}/{accept|reject|decide}`: the API's step, then back to the trade.
async fn step(what: &'static str, id: String, Posted(session, form): Posted<DisputeForm>) -> Response {
    let (Some(id), Some(back), Some(nonce)) = (plain_id(&id), plain_id(&form.back), plain_id(&form.nonce)) else {
        return message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    let (path, body) = if what == "decide" {
        let Some(fen) = yuan_to_fen(form.amount.trim()).or((form.amount.trim() == "0").then_some(0)) else {
            let text = "the refund must be yuan with at most two decimals (12.34, or 0)";
            return message_page(&session.frame, StatusCode::UNPROCESSABLE_ENTITY, text);
        };
        (format!("/v1/admin/disputes/{id}/decide"), json!({ "refund_amount": fen }))
    } else {
        let note = form.note.trim();
        let body = if note.is_empty() { json!({}) } else { json!({ "note": note }) };
        (format!("/v1/disputes/{id}/{what}"), body)
    };
    match session.call(Method::POST, path, Some(body), Some(nonce)).await {
        Ok(_) => web::see_other(&format!("{}/trades/{back}", session.frame.desk.base()), &[]),
        Err(refusal) => refusal_page(&session.frame, &refusal),
    }
}

/// A ledger transfer of a trade, as its page shows it.
pub struct TransferRow {
    pub id: String,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub amount: String,
    pub created: String,
}

pub fn transfer_rows(page: &Value) -> Vec<TransferRow> {
    let Some(data) = page["data"].as_array() else { return Vec::new() };
    data.iter()
        .map(|transfer| TransferRow {
            id: text(transfer, "id"),
            kind: text(transfer, "type"),
            from: text(transfer, "from"),
            to: text(transfer, "to"),
            amount: yuan(transfer, "amount"),
            created: text(transfer, "created"),
        })
        .collect()
}

/// A freeze as the pages show it.
pub struct FreezeRow {
    pub id: String,
    pub out_order_no: String,
    pub title: String,
    pub status: String,
    pub payer: String,
    pub frozen: String,
    pub rest: String,
    /// What is left, in fen (the release form's amount).
    pub rest_fen: u64,
    pub paid: String,
    pub released: String,
    pub expires_at: String,
}

pub fn freeze_rows(page: &Value) -> Vec<FreezeRow> {
    let Some(data) = page["data"].as_array() else { return Vec::new() };
    data.iter()
        .map(|freeze| FreezeRow {
            id: text(freeze, "id"),
            out_order_no: text(freeze, "out_order_no"),
            title: text(freeze, "title"),
            status: text(freeze, "status"),
            payer: text(freeze, "payer"),
            frozen: yuan(freeze, "frozen"),
            rest: yuan(freeze, "rest"),
            rest_fen: freeze["rest"].as_u64().unwrap_or(0),
            paid: yuan(freeze, "paid"),
            released: yuan(freeze, "released"),
            expires_at: text(freeze, "expires_at"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "desk/freezes.html")]
struct FreezesPage {
    frame: Frame,
    freezes: Vec<FreezeRow>,
    nonce: String,
}

/// `GET /portal/freezes`: the merchant's pre-authorisations, newest first.
async fn freezes(web: Arc<Web>, peer: SocketAddr, headers: HeaderMap) -> Response {
    let session = match session(&web, Desk::Portal, &headers, peer) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    let nonce = match web::form_nonce() {
        Ok(nonce) => nonce,
        Err(error) => return axum::response::IntoResponse::into_response(error),
    };
    match session.get("/v1/freezes?limit=100".to_string()).await {
        Ok(page) => {
            render(StatusCode::OK, &FreezesPage { freezes: freeze_rows(&page), nonce, frame: session.frame }, &[])
        }
        Err(refusal) => refusal_page(&session.frame, &refusal),
    }
}

#[derive(Deserialize)]
pub struct ReleaseForm {
    csrf: String,
    nonce: String,
    /// What the freeze holds, in fen, as the page showed it: the release is of that.
    amount: u64,
}

csrf_forms!(ReleaseForm);

/// `POST /portal/freezes/{id}/release`: what the freeze still holds goes
/// back to the buyer (the form's nonce is the request number: once).
async fn release(id: String, Posted(session, form): Posted<ReleaseForm>) -> Response {
    let (Some(id), Some(nonce)) = (plain_id(&id), plain_id(&form.nonce)) else {
        return message_page(&session.frame, StatusCode::BAD_REQUEST, session.frame.words.expired);
    };
    let body = json!({ "out_request_no": format!("web-{nonce}"), "amount": form.amount });
    match session.call(Method::POST, format!("/v1/freezes/{id}/unfreeze"), Some(body), Some(nonce)).await {
        Ok(_) => web::see_other("/portal/freezes", &[]),
        Err(refusal) => refusal_page(&session.frame, &refusal),
    }
}

/// The routes of `desk` (deciding disputes is the console's, freezes the portal's).
pub fn routes(desk: Desk) -> axum::Router<Arc<Web>> {
    use axum::routing::{get, post};
    let base = desk.base();
    let listed = move |State(web): State<Arc<Web>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap| {
        list(desk, web, peer, headers)
    };
    let router = axum::Router::new()
        .route(&format!("{base}/disputes"), get(listed))
        .route(&format!("{base}/disputes/{{id}}/accept"), post(|Path(id), form| step("accept", id, form)))
        .route(&format!("{base}/disputes/{{id}}/reject"), post(|Path(id), form| step("reject", id, form)));
    match desk {
        Desk::Console => router.route("/console/disputes/{id}/decide", post(|Path(id), form| step("decide", id, form))),
        Desk::Portal => router
            .route(
                "/portal/freezes",
                get(|State(web), ConnectInfo(peer): ConnectInfo<SocketAddr>, headers| freezes(web, peer, headers)),
            )
            .route("/portal/freezes/{id}/release", post(|Path(id), form| release(id, form))),
    }
}
