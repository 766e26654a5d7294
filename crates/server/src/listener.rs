//! Accepting connections with bounds, so that no client can hold the server:
//! at most `connections_max` open connections and `per_address_max` from one
//! address (others are closed as soon as they are accepted), and a
//! connection that takes longer than `header_read_timeout` to send a
//! request's headers — the first or, idle on keep-alive, the next — is
//! closed. (Bodies have their own timeout, `app::router`: a stalled body is
//! a `408`.) HTTP/1.1 only: every client of this API speaks it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// How many connections the server holds, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at once, from everyone.
    pub connections_max: usize,
    /// Open connections at once from one IP address.
    pub per_address_max: usize,
    /// Time to send a request's headers, from its first byte or from the
    /// end of the previous request on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Time that in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// After an `accept` fails (out of file descriptors, say), wait this long:
/// retrying at once would spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Open connections by address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One open connection counted against its address until dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { table: Arc::clone(self), address })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Connections turned away because a bound was reached.
#[derive(Default)]
pub struct Refusals {
    pub over_total: std::sync::atomic::AtomicU64,
    pub over_address: std::sync::atomic::AtomicU64,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting and gives in-flight requests `shutdown_grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    refusals: Arc<Refusals>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let total = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = Arc::new(PerAddress::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&total).try_acquire_owned() else {
            refusals.over_total.fetch_add(1, Relaxed);
            continue;
        };
        let Some(slot) = per_address.take(peer.ip(), limits.per_address_max) else {
            refusals.over_address.fetch_add(1, Relaxed);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), service(router.clone(), peer));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period were cut");
    }
}

/// The router as a hyper service for one connection, which tells each
/// request where it came from (`ConnectInfo`, as `axum::serve` does).
fn service(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request.map(axum::body::Body::new))
    })
}
