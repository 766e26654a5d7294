//! Prometheus metrics: request counts and latency histograms by route and
//! status, and the journal's and ledger's counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use journal::WriterStats;

/// Latency histogram bucket bounds, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

#[derive(Default)]
struct RouteStats {
    count: u64,
    latency_seconds_sum: f64,
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
}

/// Counters by method, route and status; looked up by `&str`, so that a
/// request allocates nothing once its route has been seen.
type RouteTable = HashMap<&'static str, HashMap<String, HashMap<u16, RouteStats>>>;

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<RouteTable>,
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
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let by_route = routes.entry(method_name(method)).or_default();
        if !by_route.contains_key(route) {
            by_route.insert(route.to_string(), HashMap::new());
        }
        let Some(by_status) = by_route.get_mut(route) else { return };
        let stats = by_status.entry(status).or_default();
        stats.count += 1;
        let seconds = elapsed.as_secs_f64();
        stats.latency_seconds_sum += seconds;
        for (bucket, bound) in stats.buckets.iter_mut().zip(LATENCY_BUCKETS_SECONDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let table = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // Sorted, so that the page reads the same from scrape to scrape.
        let mut routes: BTreeMap<(&str, &str, u16), &RouteStats> = BTreeMap::new();
        for (method, by_route) in table.iter() {
            for (route, by_status) in by_route {
                for (status, stats) in by_status {
                    routes.insert((method, route.as_str(), *status), stats);
                }
            }
        }
        let _ = writeln!(out, "# HELP zhifu_http_requests_total HTTP requests by method, route and status.");
        let _ = writeln!(out, "# TYPE zhifu_http_requests_total counter");
        for ((method, route, status), stats) in routes.iter() {
            let _ = writeln!(
                out,
                "zhifu_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                stats.count
            );
        }
        let _ = writeln!(out, "# HELP zhifu_http_request_duration_seconds HTTP request latency.");
        let _ = writeln!(out, "# TYPE zhifu_http_request_duration_seconds histogram");
        for ((method, route, status), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            for (bucket, bound) in stats.buckets.iter().zip(LATENCY_BUCKETS_SECONDS) {
                let _ = writeln!(out, "zhifu_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {bucket}");
            }
            let _ = writeln!(out, "zhifu_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", stats.count);
            let _ = writeln!(out, "zhifu_http_request_duration_seconds_sum{{{labels}}} {}", stats.latency_seconds_sum);
            let _ = writeln!(out, "zhifu_http_request_duration_seconds_count{{{labels}}} {}", stats.count);
        }
        let counters = [
            ("zhifu_journal_commands_total", "Commands made durable and applied.", gauges.journal.batches),
            ("zhifu_journal_fsyncs_total", "Group commits: one write and one fdatasync each.", gauges.journal.groups),
            ("zhifu_journal_snapshots_total", "Snapshots taken.", gauges.journal.snapshots),
            ("zhifu_ledger_transfers_total", "Ledger transfers stored.", gauges.transfers),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let commands_per_fsync = gauges.journal.batches as f64 / gauges.journal.groups.max(1) as f64;
        let _ = writeln!(out, "# HELP zhifu_journal_commands_per_fsync Mean commands sharing one fdatasync.");
        let _ = writeln!(
            out,
            "# TYPE zhifu_journal_commands_per_fsync gauge\nzhifu_journal_commands_per_fsync {commands_per_fsync}"
        );
        let _ = writeln!(out, "# HELP zhifu_ledger_accounts Ledger accounts.\n# TYPE zhifu_ledger_accounts gauge");
        let _ = writeln!(out, "zhifu_ledger_accounts {}", gauges.accounts);
        let trades = [("memory", gauges.trades_in_memory), ("archived", gauges.trades_archived)];
        let _ = writeln!(out, "# HELP zhifu_trades Trades in memory (unpaid) and at rest in the archive file (paid).");
        let _ = writeln!(out, "# TYPE zhifu_trades gauge");
        for (place, count) in trades {
            let _ = writeln!(out, "zhifu_trades{{place=\"{place}\"}} {count}");
        }
        let _ = writeln!(out, "# HELP zhifu_connections_refused_total Connections closed at once, past a bound.");
        let _ = writeln!(out, "# TYPE zhifu_connections_refused_total counter");
        let refused =
            [("total", gauges.connections_refused_over_total), ("address", gauges.connections_refused_over_address)];
        for (bound, count) in refused {
            let _ = writeln!(out, "zhifu_connections_refused_total{{bound=\"{bound}\"}} {count}");
        }
        out
    }
}
