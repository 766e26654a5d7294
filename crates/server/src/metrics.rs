//! Prometheus metrics (`prometheus-client`, OpenMetrics text): request
//! counts and latency histograms by method, route and status, and the
//! journal's, ledger's and listener's figures, read when scraped.

use std::sync::atomic::Ordering;
use std::time::Duration;

use journal::WriterStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency histogram bucket bounds, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

/// The content type of the page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaceLabels {
    place: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BoundLabels {
    bound: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// Figures kept elsewhere, counted up to now: set when the page is scraped.
#[derive(Default)]
struct Totals {
    commands: Counter,
    fsyncs: Counter,
    snapshots: Counter,
    transfers: Counter,
    commands_per_fsync: Gauge<f64, std::sync::atomic::AtomicU64>,
    accounts: Gauge,
    trades: Family<PlaceLabels, Gauge>,
    refused: Family<BoundLabels, Counter>,
    undelivered: Family<EndpointLabels, Gauge>,
    oldest_undelivered_seconds: Family<EndpointLabels, Gauge>,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    deliveries: Family<OutcomeLabels, Counter>,
    totals: Totals,
}

/// One webhook destination's queue, as the metrics page shows it.
pub struct QueueGauge {
    /// `we_…`, or `notify_url`.
    pub endpoint: String,
    pub undelivered: u64,
    pub oldest_age_seconds: u64,
}

/// The method's name as a static string (others are counted as `OTHER`).
fn method_name(method: &str) -> &'static str {
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"].into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

/// What the metrics page shows beside the request counters.
pub struct Gauges {
    pub journal: WriterStats,
    pub transfers: u64,
    pub accounts: u64,
    /// Trades in memory (unpaid) and at rest in the archive (paid: waiting
    /// to ship or for the buyer, settled or closed).
    pub trades_in_memory: usize,
    pub trades_archived: usize,
    /// Connections closed at once for being past a bound: everyone's, one address's.
    pub connections_refused_over_total: u64,
    pub connections_refused_over_address: u64,
    pub delivery_queues: Vec<QueueGauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let totals = Totals::default();
        registry.register("zhifu_http_requests", "HTTP requests by method, route and status", requests.clone());
        registry.register("zhifu_http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("zhifu_journal_commands", "Commands made durable and applied", totals.commands.clone());
        registry.register(
            "zhifu_journal_fsyncs",
            "Group commits: one write and one fdatasync each",
            totals.fsyncs.clone(),
        );
        registry.register("zhifu_journal_snapshots", "Snapshots taken", totals.snapshots.clone());
        registry.register(
            "zhifu_journal_commands_per_fsync",
            "Mean commands sharing one fdatasync",
            totals.commands_per_fsync.clone(),
        );
        registry.register("zhifu_ledger_transfers", "Ledger transfers stored", totals.transfers.clone());
        registry.register("zhifu_ledger_accounts", "Ledger accounts", totals.accounts.clone());
        registry.register(
            "zhifu_trades",
            "Trades in memory (unpaid) and at rest in the archive file (paid)",
            totals.trades.clone(),
        );
        registry.register(
            "zhifu_connections_refused",
            "Connections closed at once, past a bound",
            totals.refused.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "zhifu_webhook_deliveries",
            "Webhook and notification delivery attempts by outcome",
            deliveries.clone(),
        );
        registry.register(
            "zhifu_webhook_undelivered",
            "Events not yet delivered, per endpoint (the queue's depth)",
            totals.undelivered.clone(),
        );
        registry.register(
            "zhifu_webhook_oldest_undelivered_age_seconds",
            "Clock time since the oldest undelivered event was queued, per endpoint",
            totals.oldest_undelivered_seconds.clone(),
        );
        Metrics { registry, requests, latency, deliveries, totals }
    }
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = RouteLabels { method: method_name(method), route: route.to_string(), status };
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// One delivery attempt's outcome: `delivered`, `failed` (an answer that
    /// is not an acknowledgement), `unreachable` (no answer), `refused` (a
    /// destination it may not go to).
    pub fn record_delivery(&self, outcome: &'static str) {
        self.deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The page, with the figures read now.
    pub fn render(&self, gauges: &Gauges) -> String {
        let totals = &self.totals;
        // Counted elsewhere, so set rather than added to.
        let set = |counter: &Counter, value: u64| counter.inner().store(value, Ordering::Relaxed);
        set(&totals.commands, gauges.journal.batches);
        set(&totals.fsyncs, gauges.journal.groups);
        set(&totals.snapshots, gauges.journal.snapshots);
        set(&totals.transfers, gauges.transfers);
        totals.commands_per_fsync.set(gauges.journal.batches as f64 / gauges.journal.groups.max(1) as f64);
        totals.accounts.set(i64::try_from(gauges.accounts).unwrap_or(i64::MAX));
        for (place, count) in [("memory", gauges.trades_in_memory), ("archived", gauges.trades_archived)] {
            totals.trades.get_or_create(&PlaceLabels { place }).set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let refused =
            [("total", gauges.connections_refused_over_total), ("address", gauges.connections_refused_over_address)];
        for (bound, count) in refused {
            set(&totals.refused.get_or_create(&BoundLabels { bound }), count);
        }
        // Endpoints come and go: only those with a queue now are shown.
        totals.undelivered.clear();
        totals.oldest_undelivered_seconds.clear();
        for queue in &gauges.delivery_queues {
            let labels = EndpointLabels { endpoint: queue.endpoint.clone() };
            totals.undelivered.get_or_create(&labels).set(i64::try_from(queue.undelivered).unwrap_or(i64::MAX));
            let age = i64::try_from(queue.oldest_age_seconds).unwrap_or(i64::MAX);
            totals.oldest_undelivered_seconds.get_or_create(&labels).set(age);
        }
        let mut page = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut page, &self.registry);
        page
    }
}
