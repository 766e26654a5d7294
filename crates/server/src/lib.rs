//! zhifu's HTTP API: the only crate that speaks the wire format.
//!
//! Layout:
//! - [`app`]: shared state, the router and its layers (body limit, timeout,
//!   request ids, metrics), `serve` with graceful shutdown.
//! - `routes`: one module per area of the API; the OpenAPI document.
//! - `auth`: API keys (hashed), roles, per-key rate limits.
//! - `body`: JSON bodies with API errors, and `Idempotency-Key`.
//! - `error`: the error format. `clock`: real or simulated time. `metrics`.
//! - [`webhooks`]: signed notifications to merchants, retried on a schedule.
//! - [`gateway`]: `/gateway.do`, Alipay's open-platform protocol (RSA2).
//! - `cashier`: the pages where buyers sign in and pay (page.pay, wap.pay, QR codes).
//! - `web`: what every page shares; `desk`, `console`, `portal`: the staff
//!   console and the merchant portal, browser front ends of the API.
//!
//! Every request that changes state becomes one platform command, submitted
//! to the journal's writer, which gathers concurrent commands into one
//! durable commit; a request is answered only once its command is durable.

mod alipay_bill;
pub mod app;
mod auth;
mod body;
mod cashier;
pub mod clock;
mod console;
mod desk;
pub mod error;
mod finance_desk;
pub mod gateway;
mod ids;
mod limits;
mod listener;
mod metrics;
mod portal;
mod pulse;
mod reference;
mod routes;
mod web;
pub mod webhooks;

pub use app::{ServerConfig, StoreConfig, serve};
pub use limits::RateLimits;
pub use listener::ConnectionLimits;
pub use routes::requests;
