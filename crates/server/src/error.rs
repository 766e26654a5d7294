//! Errors on the wire: `{"error": {"code", "message"}}` with the status and
//! machine-readable code of the API contract. Client mistakes are never 5xx.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::Rejection;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For the log, never for the client: what went wrong inside.
    detail: Option<String>,
    /// On a follower: the leader's `--public-url` (the `Zhifu-Leader` header).
    leader: Option<String>,
}

/// Seconds a client should wait before retrying a `503`.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// What a server fault was, for the request's log line (see `app::observe`).
#[derive(Clone, Debug)]
pub struct InternalDetail(pub String);

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `idempotency_mismatch`, `payload_too_large`, `request_timeout`, `insufficient_funds`,
    /// `limit_exceeded`, `rate_limited`, `internal`, `overloaded`, `unavailable`, `not_leader`,
    /// `outcome_unknown`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: None, leader: None }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this key may not do that")
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A fault of the server: `500 internal`, the detail only in the log.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        let message = "the server failed to answer this request; it is logged under the request's x-request-id";
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }

    /// The queue of commands is full: nothing was done, retry later.
    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is busy; nothing was done, retry later",
        )
    }

    /// The store cannot take writes (its journal failed): nothing was done.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        let message = "the store cannot take this change now; nothing was done, retry later";
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// This node follows the store's leader: nothing was done here.
    pub fn not_leader(leader: Option<String>) -> ApiError {
        let message = "this node follows the store's leader: nothing was done; send the request to the leader";
        ApiError { leader, ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", message) }
    }

    /// What the journal's refusal of a command means for the client.
    pub fn from_journal(error: journal::JournalError) -> ApiError {
        match error {
            journal::JournalError::Busy => ApiError::overloaded(),
            journal::JournalError::NotLeader { leader } => ApiError::not_leader(leader),
            other => ApiError::unavailable(other.to_string()),
        }
    }

    /// The command reached the journal but the server stopped waiting for
    /// its outcome: it may have been applied.
    pub fn outcome_unknown() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome_unknown",
            "the change was submitted but its outcome is not known yet; retry with the same Idempotency-Key \
             (or out_trade_no / out_request_no) to learn it",
        )
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        match rejection {
            Rejection::InsufficientFunds => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds", "the balance does not cover this")
            }
            Rejection::NotFound(what) => ApiError::not_found(&what),
            Rejection::Invalid(message) => ApiError::invalid(message),
            Rejection::Conflict(message) => ApiError::conflict(message),
            Rejection::LimitExceeded(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
        }
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        if let Some(value) = self.leader.and_then(|leader| axum::http::HeaderValue::from_str(&leader).ok()) {
            response.headers_mut().insert("zhifu-leader", value);
        }
        response
    }
}
