//! Notifications to merchants: POSTs of events to their `webhook_url`,
//! signed with `Zhifu-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, retried on the platform's schedule until a 2xx.
//!
//! Which events are due, and each attempt's outcome, live in the platform's
//! journaled state, so nothing is lost across a restart (an attempt that was
//! in flight at a crash is simply made again: at least once). Delivery runs
//! on its own tasks with a timeout and a bound on concurrency, so a slow or
//! dead endpoint never slows payments.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use platform::{Action, DeliveryAttempt, EndpointNumber, EventNumber, NOTIFY_URL};
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
/// ...and this long to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read (Alipay-style notifications are acknowledged
/// by the body `success`; a longer one is not an acknowledgement).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Deliveries in flight at once to one host: a slow or dead merchant holds
/// these, never the slots every other merchant's deliveries use.
const DELIVERIES_PER_HOST_MAX: usize = 4;
/// Deliveries in flight at once to one endpoint.
const DELIVERIES_PER_ENDPOINT_MAX: usize = 2;

/// Where the server may send webhooks and notifications. A server that
/// listens only on loopback (development, tests) may send anywhere; one
/// that listens on another address refuses destinations that are, or
/// resolve to, loopback, private, link-local or unspecified addresses
/// (the platform must not be a way into the operator's own network),
/// unless started with `--webhook-allow-private`.
#[derive(Clone, Copy, Debug)]
pub struct Destinations {
    allow_private: bool,
}

impl Destinations {
    pub fn for_listener(listen: SocketAddr, allow_private: bool) -> Destinations {
        Destinations { allow_private: allow_private || listen.ip().is_loopback() }
    }

    pub fn allows(self, address: IpAddr) -> bool {
        self.allow_private || is_public(address)
    }

    /// Whether a URL may be a destination: its host, resolved now.
    pub async fn check_url(self, text: &str) -> Result<(), String> {
        let url = url::Url::parse(text).map_err(|_| "not a URL".to_string())?;
        let host = url.host_str().ok_or_else(|| "the URL has no host".to_string())?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(address) => vec![address],
            Err(_) if self.allow_private => return Ok(()),
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| format!("{host} does not resolve"))?
                .map(|address| address.ip())
                .collect(),
        };
        match addresses.iter().find(|&&address| !self.allows(address)) {
            Some(address) => Err(format!("{host} is a private or local address ({address})")),
            None if addresses.is_empty() => Err(format!("{host} does not resolve")),
            None => Ok(()),
        }
    }
}

/// An address on the public internet: not loopback, private, link-local,
/// shared (carrier NAT), unspecified, broadcast, documentation or multicast.
fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Resolves a destination's host and keeps only the addresses it may use,
/// so that a name that resolves to a private address is refused at the
/// moment of delivery (after DNS), not only when it was registered.
struct CheckedResolver(Destinations);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.0;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|address| destinations.allows(address.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{} resolves to no address deliveries may go to", name.as_str()).into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of deliveries: no redirects (a destination is the URL
/// registered, not wherever it points), timeouts, checked addresses.
fn delivery_client(destinations: Destinations) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(CheckedResolver(destinations)))
        .build()
}

/// A destination's host and port (one server), for the per-host bound;
/// `None` if it may not be sent to at all (a literal address the resolver
/// never sees).
fn destination_host(destinations: Destinations, text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let host = format!("{}:{}", url.host_str()?, url.port_or_known_default().unwrap_or(0));
    match url.host()? {
        url::Host::Ipv4(address) if !destinations.allows(IpAddr::V4(address)) => None,
        url::Host::Ipv6(address) if !destinations.allows(IpAddr::V6(address)) => None,
        _ => Some(host),
    }
}

/// The body of an answer, if it is at most `max` bytes (read no further).
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > max {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// The signature header's value for a body sent at `unix_seconds`: one
/// `v1=` per secret (during a roll's overlap, the new one and the old one).
pub fn signature_with(secrets: &[&str], unix_seconds: u64, body: &[u8]) -> Option<String> {
    let mut header = format!("t={unix_seconds}");
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(unix_seconds.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    Some(header)
}

/// The signature header with one secret.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> Option<String> {
    signature_with(&[secret], unix_seconds, body)
}

/// A destination's name on the metrics page and in delivery logs.
pub fn endpoint_label(state: &AppState, endpoint: EndpointNumber) -> String {
    if endpoint == NOTIFY_URL {
        "notify_url".to_string()
    } else {
        state.ids.format(crate::ids::IdKind::Endpoint, endpoint)
    }
}

/// One attempt's request: where, and what.
struct Attempt {
    url: String,
    /// Host of `url`, for the per-host bound.
    host: String,
    content_type: &'static str,
    signature: Option<String>,
    body: Vec<u8>,
    /// Alipay's rule: delivered once the merchant answers the body `success`.
    needs_success_body: bool,
}

/// How an attempt went.
struct Answer {
    status_code: Option<u16>,
    error: Option<String>,
    delivered: bool,
    /// For the metrics: `delivered`, `failed`, `unreachable` or `refused`.
    outcome: &'static str,
}

impl Answer {
    fn refused(why: &str) -> Answer {
        Answer { status_code: None, error: Some(why.to_string()), delivered: false, outcome: "refused" }
    }
}

type Slot = (EventNumber, EndpointNumber);

/// The longest a failing host is left alone between attempts (wall time).
const PAUSE_MAX: Duration = Duration::from_secs(5);
/// The first pause after a failure.
const PAUSE_FIRST: Duration = Duration::from_millis(250);

/// Hosts whose last attempts failed, left alone for a while (doubling from
/// 250 ms to 5 s): a dead endpoint would otherwise be tried for every new
/// event at once, thousands of attempts a second on Double Eleven, each a
/// journaled record competing with payments for the writer and the CPU.
/// The deliveries stay due and keep their schedule; only when they are
/// tried waits. A success, or a resend, ends the pause.
#[derive(Default)]
pub struct Pauses {
    hosts: Mutex<HashMap<String, (std::time::Instant, u32)>>,
}

impl Pauses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (std::time::Instant, u32)>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn paused(&self, host: &str) -> bool {
        self.lock().get(host).is_some_and(|(until, _)| std::time::Instant::now() < *until)
    }

    fn failed(&self, host: &str) {
        let mut hosts = self.lock();
        let failures = hosts.get(host).map_or(1, |(_, failures)| failures.saturating_add(1));
        let pause = PAUSE_FIRST.saturating_mul(1 << (failures - 1).min(8)).min(PAUSE_MAX);
        hosts.insert(host.to_string(), (std::time::Instant::now() + pause, failures));
    }

    fn succeeded(&self, host: &str) {
        self.lock().remove(host);
    }

    /// Every host may be tried at once (an operator or merchant resent events).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Deliveries in flight: by event and destination (one attempt at a time),
/// by destination and by host.
#[derive(Default)]
struct InFlight {
    deliveries: HashSet<Slot>,
    endpoints: HashMap<EndpointNumber, usize>,
    hosts: HashMap<String, usize>,
    /// Each endpoint's host as last seen (one entry per endpoint attempted).
    host_of: HashMap<EndpointNumber, String>,
}

impl InFlight {
    /// How many of an endpoint's queue to look at now: its share, or none
    /// while its host is full (gateway trades' `notify_url`s, many hosts in
    /// one queue, are bounded per host as they are tried).
    fn room(&self, endpoint: EndpointNumber, pauses: &Pauses) -> usize {
        if endpoint == NOTIFY_URL {
            return DELIVERIES_PER_POLL_MAX;
        }
        let Some(host) = self.host_of.get(&endpoint) else { return DELIVERIES_PER_ENDPOINT_MAX };
        let full = self.hosts.get(host).copied().unwrap_or(0) >= DELIVERIES_PER_HOST_MAX;
        if full || pauses.paused(host) { 0 } else { DELIVERIES_PER_ENDPOINT_MAX }
    }

    /// Whether a delivery must wait: its own attempt, or its endpoint's
    /// share, is in flight.
    fn busy(&self, delivery: &platform::Delivery) -> bool {
        let endpoint = self.endpoints.get(&delivery.endpoint).copied().unwrap_or(0);
        self.deliveries.contains(&(delivery.event, delivery.endpoint))
            || (delivery.endpoint != NOTIFY_URL && endpoint >= DELIVERIES_PER_ENDPOINT_MAX)
    }
}

pub fn spawn_dispatcher(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match delivery_client(state.destinations) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "no HTTP client for webhooks: none will be delivered");
                return;
            }
        };
        let in_flight: Arc<Mutex<InFlight>> = Arc::default();
        let permits = Arc::new(Semaphore::new(DELIVERIES_IN_FLIGHT_MAX));
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        // A finished attempt wakes the loop: its destination has room again.
        let wake = Arc::new(tokio::sync::Notify::new());
        // Destinations are visited in turn, from the one after the last served.
        let mut after = NOTIFY_URL;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = wake.notified() => {}
            }
            // Only the leader delivers (and records what happened).
            if !state.leads() {
                continue;
            }
            let now = state.clock.now();
            let due = {
                let in_flight = lock(&in_flight);
                let room = |endpoint| in_flight.room(endpoint, &state.delivery_pauses);
                state.store.read(|p| p.deliveries_due(now, DELIVERIES_PER_POLL_MAX, after, room))
            };
            for delivery in due {
                after = delivery.endpoint;
                let slot = (delivery.event, delivery.endpoint);
                if lock(&in_flight).busy(&delivery) {
                    continue;
                }
                // An endpoint's host is known without reading the event: a full
                // or paused host costs no read of the archive.
                if delivery.endpoint != NOTIFY_URL {
                    let url = state.store.read(|p| p.endpoint(delivery.endpoint).map(|e| e.url.clone()));
                    if let Some(host) = url.and_then(|url| destination_host(state.destinations, &url)) {
                        let mut in_flight = lock(&in_flight);
                        let full = in_flight.hosts.get(&host).copied().unwrap_or(0) >= DELIVERIES_PER_HOST_MAX;
                        let paused = state.delivery_pauses.paused(&host);
                        in_flight.host_of.insert(delivery.endpoint, host);
                        if full || paused {
                            continue;
                        }
                    }
                }
                let event = match state.store.read_with_archive(|p, archive| p.event_at(archive, delivery.offset)) {
                    Ok(event) => event,
                    // Not an attempt: the next poll tries again without using one up.
                    Err(error) => {
                        tracing::error!(event = delivery.event.get(), %error, "cannot read an event to deliver it");
                        continue;
                    }
                };
                let attempt = attempt_of(&state, &event, delivery.endpoint);
                if let Ok(attempt) = &attempt {
                    let mut in_flight = lock(&in_flight);
                    // Known from now on: while the host is full, its endpoints are not picked.
                    in_flight.host_of.insert(delivery.endpoint, attempt.host.clone());
                    let full = in_flight.hosts.get(&attempt.host).copied().unwrap_or(0) >= DELIVERIES_PER_HOST_MAX;
                    if full || state.delivery_pauses.paused(&attempt.host) {
                        continue;
                    }
                }
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
                let host = attempt.as_ref().ok().map(|attempt| attempt.host.clone());
                take_slot(&in_flight, slot, host.clone());
                let (state, client, in_flight) = (Arc::clone(&state), client.clone(), Arc::clone(&in_flight));
                let wake = Arc::clone(&wake);
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    // No destination it may go to (none, or a refused address): a failed attempt.
                    let answer = match attempt {
                        Ok(attempt) => send(&client, attempt).await,
                        Err(why) => Answer::refused(why),
                    };
                    state.metrics.record_delivery(answer.outcome);
                    if let Some(host) = &host {
                        if answer.delivered {
                            state.delivery_pauses.succeeded(host);
                        } else {
                            state.delivery_pauses.failed(host);
                        }
                    }
                    let record = Action::RecordAttempt(DeliveryAttempt {
                        event: delivery.event,
                        endpoint: delivery.endpoint,
                        merchant: delivery.merchant,
                        status_code: answer.status_code,
                        error: answer.error,
                        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
                        delivered: answer.delivered,
                    });
                    if let Err(error) = state.submit(None, record).await {
                        tracing::error!(event = delivery.event.get(), error = %error.message, "cannot record a delivery");
                    }
                    release_slot(&in_flight, slot, host);
                    drop(permit);
                    wake.notify_one();
                });
            }
        }
    })
}

fn lock(in_flight: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    in_flight.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take_slot(in_flight: &Mutex<InFlight>, slot: Slot, host: Option<String>) {
    let mut in_flight = lock(in_flight);
    in_flight.deliveries.insert(slot);
    *in_flight.endpoints.entry(slot.1).or_default() += 1;
    if let Some(host) = &host {
        in_flight.host_of.insert(slot.1, host.clone());
    }
    if let Some(host) = host {
        *in_flight.hosts.entry(host).or_default() += 1;
    }
}

fn release_slot(in_flight: &Mutex<InFlight>, slot: Slot, host: Option<String>) {
    let mut in_flight = lock(in_flight);
    in_flight.deliveries.remove(&slot);
    if let Some(count) = in_flight.endpoints.get_mut(&slot.1) {
        *count -= 1;
        if *count == 0 {
            in_flight.endpoints.remove(&slot.1);
        }
    }
    if let Some(host) = host
        && let Some(count) = in_flight.hosts.get_mut(&host)
    {
        *count -= 1;
        if *count == 0 {
            in_flight.hosts.remove(&host);
        }
    }
}

/// The request that delivers `event` to `endpoint`: Alipay's signed form
/// to a gateway trade's `notify_url`, else the event as JSON, signed with
/// the endpoint's secrets, to the endpoint's URL.
fn attempt_of(state: &AppState, event: &platform::Event, endpoint: EndpointNumber) -> Result<Attempt, &'static str> {
    let now = state.clock.now();
    if endpoint == NOTIFY_URL {
        let (url, trade) = match &event.data {
            platform::EventData::Trade(trade) | platform::EventData::Refund { trade, .. } => {
                (trade.notify_url.clone().ok_or("the trade has no notify_url")?, trade)
            }
            _ => return Err("the event has no trade to notify"),
        };
        let (number, kind, event_at) = (event.number, &event.kind, event.created_at);
        let key = state.gateway_key().map_err(|_| "the gateway's key is unavailable")?;
        let form = crate::gateway::notification(key, &state.ids, number, kind, trade, event_at, now)
            .map_err(|_| "the notification could not be signed")?;
        let body = serde_urlencoded::to_string(form).map_err(|_| "the notification could not be encoded")?;
        return Ok(Attempt {
            host: destination_host(state.destinations, &url).ok_or("the destination is a private or local address")?,
            url,
            content_type: "application/x-www-form-urlencoded;charset=utf-8",
            signature: None,
            body: body.into_bytes(),
            needs_success_body: true,
        });
    }
    let (url, secrets) = state
        .store
        .read(|p| {
            let endpoint = p.endpoint(endpoint)?;
            Some((endpoint.url.clone(), endpoint.secrets_at(now).into_iter().map(str::to_string).collect::<Vec<_>>()))
        })
        .ok_or("the endpoint was deleted")?;
    let body = serde_json::to_vec(&event_view(&state.ids, event)).map_err(|_| "the event could not be encoded")?;
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let signature = signature_with(&secrets, now.nanos() / 1_000_000_000, &body);
    Ok(Attempt {
        host: destination_host(state.destinations, &url).ok_or("the destination is a private or local address")?,
        url,
        content_type: "application/json",
        signature: Some(signature.ok_or("the event could not be signed")?),
        body,
        needs_success_body: false,
    })
}

/// One attempt: delivered if the merchant acknowledged it (a 2xx, and for
/// Alipay's notifications the body `success`, read to at most 64 KiB).
async fn send(client: &reqwest::Client, attempt: Attempt) -> Answer {
    let mut request = client.post(&attempt.url).header("content-type", attempt.content_type);
    if let Some(signature) = &attempt.signature {
        request = request.header("zhifu-signature", signature);
    }
    let response = match request.body(attempt.body).send().await {
        Ok(response) => response,
        Err(error) => {
            let why = if error.is_timeout() { "timed out".to_string() } else { describe_error(&error) };
            return Answer { status_code: None, error: Some(why), delivered: false, outcome: "unreachable" };
        }
    };
    let status_code = Some(response.status().as_u16());
    let failed = |why: String| Answer { status_code, error: Some(why), delivered: false, outcome: "failed" };
    if !response.status().is_success() {
        return failed(format!("the endpoint answered {}", response.status().as_u16()));
    }
    if attempt.needs_success_body {
        let body = read_bounded(response, RESPONSE_BYTES_MAX).await;
        if body.is_none_or(|body| String::from_utf8_lossy(&body).trim() != "success") {
            return failed("the answer's body was not `success`".to_string());
        }
    }
    Answer { status_code, error: None, delivered: true, outcome: "delivered" }
}

/// A client error in a few words, without internal detail.
fn describe_error(error: &reqwest::Error) -> String {
    if error.is_connect() {
        // The resolver's refusal of a private address arrives as a connect error.
        let text = format!("{error:?}");
        if text.contains("resolves to no address deliveries may go to") {
            return "the destination resolves to a private or local address".to_string();
        }
        return "could not connect".to_string();
    }
    if error.is_redirect() { "redirects are not followed".to_string() } else { "the request failed".to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_destinations_unless_allowed() {
        let public = Destinations { allow_private: false };
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!public.allows(private.parse().unwrap_or(IpAddr::from([0; 4]))), "{private}");
        }
        for open in ["8.8.8.8", "140.205.94.189", "2001:4860:4860::8888"] {
            assert!(public.allows(open.parse().unwrap_or(IpAddr::from([0; 4]))), "{open}");
        }
        let loopback_server = Destinations::for_listener(SocketAddr::from(([127, 0, 0, 1], 8080)), false);
        assert!(loopback_server.allows(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(destination_host(public, "http://10.0.0.1/hook"), None);
        assert_eq!(destination_host(public, "https://shop.example/hook").as_deref(), Some("shop.example:443"));
    }

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
