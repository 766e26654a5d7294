//! Request bodies: JSON parsed by us, so that every mistake is a 400 (or a
//! 413 past the size limit) in the API's error format, and so that the raw
//! bytes are at hand for the idempotency key's request hash.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use platform::{Fen, IdempotencyTag};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;

/// The longest `Idempotency-Key` accepted.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

pub struct JsonBody<T> {
    pub value: T,
    /// `Idempotency-Key` and what identifies the request (method, path, body).
    key: Option<String>,
    request_hash: [u8; 32],
}

impl<T> JsonBody<T> {
    /// The idempotency tag for this request, when it carried a key.
    pub fn idempotency(&self, caller: Caller) -> Option<IdempotencyTag> {
        let key = self.key.clone()?;
        Some(IdempotencyTag { caller: caller.scope(), key, request_hash: self.request_hash })
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let key = match request.headers().get("idempotency-key") {
            None => None,
            Some(value) => {
                let key = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key must be ASCII"))?;
                if key.is_empty()
                    || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
                    || !key.bytes().all(|b| (b' '..=b'~').contains(&b))
                {
                    return Err(ApiError::invalid("Idempotency-Key must be 1 to 255 printable ASCII characters"));
                }
                Some(key.to_string())
            }
        };
        let mut hasher = Sha256::new();
        hasher.update(request.method().as_str().as_bytes());
        hasher.update(b"\n");
        hasher.update(request.uri().path().as_bytes());
        hasher.update(b"\n");
        let bytes = Bytes::from_request(request, state).await.map_err(body_error)?;
        hasher.update(&bytes);
        // No body at all reads as `{}`: actions without fields need none.
        let json: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let value =
            serde_json::from_slice(json).map_err(|error| ApiError::invalid(format!("invalid JSON body: {error}")))?;
        Ok(JsonBody { value, key, request_hash: hasher.finalize().into() })
    }
}

/// Why a body could not be read, as the client should hear it: too large
/// (`413`), not sent in time (`408`: a stalled body, see `app::router`), or
/// cut short or malformed (`400`). Never a `5xx`: the client stopped.
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large");
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body was not sent in time",
            );
        }
        cause = error.source();
    }
    ApiError::invalid("the request body was cut short or could not be read")
}

/// Deserializes a whole number given as `7` or `7.0` (JSON Schema counts
/// both as integers), refusing fractions, negatives and anything above
/// 2^53 written as a float (where floats stop being exact).
pub fn whole<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let value = match (number.as_u64(), number.as_f64()) {
        (Some(value), _) => value,
        (None, Some(float)) if float >= 0.0 && float.fract() == 0.0 && float <= 9_007_199_254_740_992.0 => float as u64,
        _ => return Err(D::Error::custom(format!("expected a whole number, got {number}"))),
    };
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is out of range")))
}

/// `whole` for optional fields.
pub fn whole_option<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<Option<T>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapper<T: TryFrom<u64>>(#[serde(deserialize_with = "whole")] T);
    let wrapper: Option<Wrapper<T>> = Option::deserialize(deserializer)?;
    Ok(wrapper.map(|Wrapper(value)| value))
}

/// Query strings parsed by us, so that a bad one is a 400 in the API's format.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<ApiQuery<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|error| ApiError::invalid(format!("invalid query string: {error}")))
    }
}

/// Checks an amount against the API's range: 1 to 10^15 fen.
pub fn check_amount(amount: u64) -> Result<Fen, ApiError> {
    if amount == 0 || amount > platform::AMOUNT_MAX {
        return Err(ApiError::invalid(format!("amount must be between 1 and {} fen", platform::AMOUNT_MAX)));
    }
    Ok(Fen::new(amount))
}
