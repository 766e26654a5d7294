//! Notifications to merchants: POSTs of events to their `webhook_url`,
//! signed with `Zhifu-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, retried on the platform's schedule until a 2xx.
//!
//! Which events are due, and each attempt's outcome, live in the platform's
//! journaled state, so nothing is lost across a restart (an attempt that was
//! in flight at a crash is simply made again: at least once). Delivery runs
//! on its own tasks with a timeout and a bound on concurrency, so a slow or
//! dead endpoint never slows payments.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use platform::Action;
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::app::AppState;
use crate::routes::trades::event_view;

/// How often due deliveries are looked for (wall time).
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Deliveries in flight at once.
const DELIVERIES_IN_FLIGHT_MAX: usize = 16;
/// Deliveries picked up per poll.
const DELIVERIES_PER_POLL_MAX: usize = 64;
/// A merchant endpoint has this long to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The signature header's value for a body sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("t={unix_seconds},v1={}", hex::encode(mac.finalize().into_bytes())))
}

pub fn spawn_dispatcher(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build() {
            Ok(client) => client,
            Err(error) => {
                eprintln!("zhifu: no HTTP client for webhooks: {error}");
                return;
            }
        };
        let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(DELIVERIES_IN_FLIGHT_MAX));
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        loop {
            interval.tick().await;
            let now = state.clock.now();
            let due = state.store.read(|p| p.deliveries_due(now, DELIVERIES_PER_POLL_MAX));
            for delivery in due {
                if !in_flight.lock().unwrap_or_else(PoisonError::into_inner).insert(delivery.event) {
                    continue;
                }
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
                let (state, client, in_flight) = (Arc::clone(&state), client.clone(), Arc::clone(&in_flight));
                tokio::spawn(async move {
                    match state.store.read_with_archive(|p, archive| p.event_at(archive, delivery.offset)) {
                        Ok(event) => {
                            let delivered = deliver(&state, &client, event).await;
                            let record = Action::RecordDelivery { event: delivery.event, delivered };
                            if let Err(error) = state.submit(None, record).await {
                                eprintln!(
                                    "zhifu: cannot record a delivery of evt_{}: {}",
                                    delivery.event, error.message
                                );
                            }
                        }
                        // Not an attempt: the next poll tries again without using one up.
                        Err(error) => eprintln!("zhifu: cannot read evt_{} to deliver it: {error}", delivery.event),
                    }
                    in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&delivery.event);
                    drop(permit);
                });
            }
        }
    })
}

/// One attempt: true if the merchant answered 2xx.
async fn deliver(state: &AppState, client: &reqwest::Client, event: platform::Event) -> bool {
    // Trades made through the gateway with a notify_url: Alipay's form.
    let alipay = match &event.data {
        platform::EventData::Trade(trade) | platform::EventData::Refund { trade, .. } => {
            trade.notify_url.clone().map(|url| (url, platform::Trade::clone(trade)))
        }
        _ => None,
    };
    if let Some((url, trade)) = alipay {
        let (number, kind, event_at) = (event.number, event.kind.clone(), event.created_at);
        let now = state.clock.now();
        let Ok(form) = crate::gateway::notification(&state.gateway_key, number, &kind, &trade, event_at, now) else {
            return false;
        };
        let Ok(body) = serde_urlencoded::to_string(&form) else { return false };
        let response = client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded;charset=utf-8")
            .body(body)
            .send()
            .await;
        // Alipay's rule: delivered once the merchant answers `success`.
        return match response {
            Ok(response) if response.status().is_success() => {
                response.text().await.is_ok_and(|text| text.trim() == "success")
            }
            _ => false,
        };
    }
    let target = state.store.read(|p| {
        let party = p.party(event.party)?;
        Some((party.webhook_url.clone()?, party.webhook_secret.clone()))
    });
    let Some((url, secret)) = target else { return false };
    let Ok(body) = serde_json::to_vec(&event_view(&event)) else { return false };
    let unix_seconds = state.clock.now() / 1_000_000_000;
    let Some(signature) = signature(&secret, unix_seconds, &body) else { return false };
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("zhifu-signature", signature)
        .body(body)
        .send()
        .await;
    matches!(response, Ok(response) if response.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Computed independently: printf '1384099200.{}' | openssl dgst -sha256 -hmac whsec_test
        let header = signature("whsec_test", 1_384_099_200, b"{}");
        assert_eq!(
            header.as_deref(),
            Some("t=1384099200,v1=f8d4c793a5bc6d0c78da2813d4b924b5592ec4dbb62a5db0590b020befe4bb35")
        );
    }
}
