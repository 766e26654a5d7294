//! The run's report: a summary in the terminal, `report.json` with every
//! figure, and a self-contained `report.html` with the charts (also written
//! as PNG files beside it).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use serde_json::json;
use sim::{Plan, SimConfig};

use super::tally::{Stall, Stalls};
use super::{RunOutput, charts, format_count, format_yuan};

pub struct Summary {
    pub config: SimConfig,
    pub plan: Plan,
    pub target: Option<String>,
    pub output: RunOutput,
}

/// One reconciliation of the report against the ledger.
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl Summary {
    fn percentile_ms(&self, quantile: f64) -> f64 {
        let latency = &self.output.tally.latency;
        if latency.is_empty() { 0.0 } else { latency.value_at_quantile(quantile) as f64 / 1_000.0 }
    }

    /// Payments answered per wall-clock second over the whole day, its
    /// settlement included.
    fn sustained_per_second(&self) -> f64 {
        self.payments_per_second_over(self.output.tally.day_elapsed())
    }

    /// Payments answered per wall-clock second up to the last of them.
    fn arrivals_per_second(&self) -> f64 {
        self.payments_per_second_over(self.output.tally.arrivals_elapsed())
    }

    fn payments_per_second_over(&self, elapsed: Duration) -> f64 {
        let seconds = elapsed.as_secs_f64();
        if seconds > 0.0 { self.output.tally.acknowledged.payments as f64 / seconds } else { 0.0 }
    }

    pub fn checks(&self) -> Vec<Check> {
        let acknowledged = &self.output.tally.acknowledged;
        let resumed = self.output.resumed_after_commands > 0;
        let mut checks = Vec::new();
        let Some(figures) = &self.output.figures else {
            checks.push(Check {
                name: "no request failed with a server error",
                passed: !acknowledged.rejected.keys().any(|key| key.contains("server error")),
                detail: format!("{} requests answered", format_count(acknowledged.commands)),
            });
            if let Some((balanced, detail)) = &self.output.server_check {
                checks.push(Check {
                    name: "debits equal credits (the server's ledger check)",
                    passed: *balanced,
                    detail: detail.clone(),
                });
            }
            return checks;
        };
        checks.push(Check {
            name: "debits equal credits",
            passed: figures.conserved && figures.debits_posted == figures.credits_posted,
            detail: format!("{} each", format_yuan(figures.debits_posted)),
        });
        checks.push(Check {
            name: "GMV equals the sum of settled payments (and of those refunded before settling)",
            passed: figures.unsettled_trades == 0 && figures.gmv_paid == figures.gmv_settled + figures.closed_unsettled,
            detail: format!(
                "{} paid = {} settled + {} refunded in full before settling; {} left unsettled",
                format_yuan(figures.gmv_paid),
                format_yuan(figures.gmv_settled),
                format_yuan(figures.closed_unsettled),
                figures.unsettled_trades
            ),
        });
        // The platform's own books against the ledger: escrow, the fund,
        // loans, campaigns, red packets, withdrawals, merchants' balances.
        for check in &figures.platform_checks {
            checks.push(Check { name: check.name, passed: check.ok, detail: check.detail.clone() });
        }
        if resumed {
            // Answers before the crash died with the process: the checks
            // against acknowledged figures need an uninterrupted run.
            return checks;
        }
        checks.push(Check {
            name: "every acknowledged payment is in the ledger, and nothing else",
            passed: u128::from(acknowledged.gmv) == figures.gmv_paid && acknowledged.payments == figures.paid_trades,
            detail: format!(
                "{} payments, {}",
                format_count(acknowledged.payments),
                format_yuan(acknowledged.gmv.into())
            ),
        });
        checks.push(Check {
            name: "acknowledged refunds equal the trades' refunds",
            passed: u128::from(acknowledged.refunded) == figures.refunded,
            detail: format_yuan(figures.refunded),
        });
        let fees =
            figures.trade_fees + u128::from(acknowledged.transfer_fees) + u128::from(acknowledged.withdrawal_fees);
        checks.push(Check {
            name: "fees earned equal the revenue account",
            passed: fees == figures.revenue,
            detail: format!(
                "{} trade + {} transfer + {} withdrawal fees = {} revenue",
                format_yuan(figures.trade_fees),
                format_yuan(acknowledged.transfer_fees.into()),
                format_yuan(acknowledged.withdrawal_fees.into()),
                format_yuan(figures.revenue)
            ),
        });
        checks
    }

    fn to_json(&self) -> serde_json::Value {
        let output = &self.output;
        let acknowledged = &output.tally.acknowledged;
        let figures = output.figures.as_ref().map(|f| {
            json!({
                "paid_trades": f.paid_trades,
                "gmv_paid_fen": f.gmv_paid.to_string(),
                "gmv_settled_fen": f.gmv_settled.to_string(),
                "closed_unsettled_fen": f.closed_unsettled.to_string(),
                "unsettled_trades": f.unsettled_trades,
                "discounts_fen": f.discounts.to_string(),
                "refunded_fen": f.refunded.to_string(),
                "trade_fees_fen": f.trade_fees.to_string(),
                "revenue_fen": f.revenue.to_string(),
                "escrow_balance_fen": f.escrow_balance.to_string(),
                "platform_checks": f.platform_checks.iter().map(|check| json!({ "name": check.name, "ok": check.ok, "detail": check.detail })).collect::<Vec<_>>(),
                "debits_posted_fen": f.debits_posted.to_string(),
                "credits_posted_fen": f.credits_posted.to_string(),
                "conserved": f.conserved,
            })
        });
        json!({
            "seed": self.config.seed,
            "scale": self.config.scale,
            "target": self.target,
            "plan": {
                "payments": self.plan.payments,
                "side_arrivals": self.plan.side_arrivals,
                "merchants": self.plan.merchants,
                "buyers": self.plan.buyers,
            },
            "acknowledged": {
                "commands": acknowledged.commands,
                "payments": acknowledged.payments,
                "gmv_fen": acknowledged.gmv,
                "discounts_fen": acknowledged.discounts,
                "declined": acknowledged.declined,
                "refunds": acknowledged.refunds,
                "refunded_fen": acknowledged.refunded,
                "transfers": acknowledged.transfers,
                "transfer_fees_fen": acknowledged.transfer_fees,
                "top_ups": acknowledged.top_ups,
                "withdrawals": acknowledged.withdrawals,
                "withdrawal_fees_fen": acknowledged.withdrawal_fees,
                "fund_subscriptions": acknowledged.fund_subscriptions,
                "red_packets": acknowledged.red_packets,
                "red_packet_claims": acknowledged.red_packet_claims,
                "fund_yield_fen": acknowledged.fund_yield,
                "auto_confirmed": acknowledged.auto_confirmed,
                "rejected": acknowledged.rejected,
            },
            "ledger": figures,
            "digest": output.digest.map(|digest| format!("{digest:016x}")),
            "resumed_after_commands": output.resumed_after_commands,
            "resume_skipped_operations": output.resume_skipped_operations,
            "journal": {
                "commands": output.writer.batches,
                "group_commits": output.writer.groups,
                "command_bytes": output.writer.command_bytes,
                "snapshots": output.writer.snapshots,
                "longest_read_wait_ms": output.writer.exclusive_us_max as f64 / 1_000.0,
                "longest_command_ms": output.writer.command_us_max as f64 / 1_000.0,
                "longest_snapshot_ms": output.writer.snapshot_us_max as f64 / 1_000.0,
            },
            "throughput": {
                "day_seconds": output.tally.day_elapsed().as_secs_f64(),
                "wall_seconds": output.wall.as_secs_f64(),
                "peak_payments_per_second": output.tally.peak_per_second(),
                "sustained_payments_per_second": self.sustained_per_second(),
                "arrivals_seconds": output.tally.arrivals_elapsed().as_secs_f64(),
                "arrivals_payments_per_second": self.arrivals_per_second(),
            },
            "driver_waits": Stall::ALL.map(|why| {
                let (waits, waited) = output.tally.stalls.of(why);
                json!({ "why": why.describe(), "waits": waits, "seconds": waited.as_secs_f64() })
            }),
            "latency_ms": {
                "p50": self.percentile_ms(0.5),
                "p99": self.percentile_ms(0.99),
                "p999": self.percentile_ms(0.999),
                "max": output.tally.latency.max() as f64 / 1_000.0,
            },
            "checks": self.checks().iter().map(|check| json!({
                "name": check.name,
                "passed": check.passed,
                "detail": check.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The summary printed at the end of a run.
pub fn terminal(summary: &Summary) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    lines.extend(day_lines(summary));
    if summary.target.is_none() {
        lines.extend(journal_lines(&summary.output.writer));
        lines.extend(stall_line(&summary.output.tally.stalls));
    }
    lines.extend(money_lines(summary));
    let mut text = String::from("\n");
    for (label, value) in lines {
        let _ = writeln!(text, "  {label:<14} {value}");
    }
    let _ = writeln!(text, "  checks");
    for check in summary.checks() {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(text, "    {mark} {}: {}", check.name, check.detail);
    }
    text
}

/// The day: payments, GMV, throughput and latency (and a resume).
fn day_lines(summary: &Summary) -> Vec<(&'static str, String)> {
    let output = &summary.output;
    let acknowledged = &output.tally.acknowledged;
    let mut lines = Vec::new();
    if output.resumed_after_commands > 0 {
        let resumed = format!(
            "after {} durable commands; figures below marked (this process) count only what it answered",
            format_count(output.resumed_after_commands)
        );
        lines.push(("resumed", resumed));
    }
    let payments = format!(
        "{} paid, {} declined for want of money (this process)",
        format_count(acknowledged.payments),
        format_count(acknowledged.declined)
    );
    lines.push(("payments", payments));
    let full_day = acknowledged.gmv as f64 / summary.config.scale / 1e11;
    let gmv = format!(
        "{} (×{} → {full_day:.1} billion yuan; 2013: 35.0 billion)",
        format_yuan(acknowledged.gmv.into()),
        1.0 / summary.config.scale
    );
    lines.push(("GMV", gmv));
    let mut throughput = format!(
        "peak {} payments/s (busiest wall-clock second), sustained {} payments/s over {:.1} s (the day and its \
         settlement)",
        format_count(output.tally.peak_per_second()),
        format_count(summary.sustained_per_second() as u64),
        output.tally.day_elapsed().as_secs_f64(),
    );
    // (None in a run resumed after its last payment.)
    if output.tally.last_payment_answered.is_some() {
        throughput.push_str(&format!(
            "; arrivals {} payments/s over {:.1} s (to the last payment's answer)",
            format_count(summary.arrivals_per_second() as u64),
            output.tally.arrivals_elapsed().as_secs_f64(),
        ));
    }
    lines.push(("throughput", throughput));
    let latency = format!(
        "p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms (submitted → durable and applied)",
        summary.percentile_ms(0.5),
        summary.percentile_ms(0.99),
        summary.percentile_ms(0.999)
    );
    lines.push(("latency", latency));
    lines
}

/// The journal's work and the waits it caused (in process only).
fn journal_lines(writer: &journal::WriterStats) -> Vec<(&'static str, String)> {
    let journal = format!(
        "{} commands in {} group commits (one fdatasync or transaction each), {} snapshots; {:.0} bytes a command",
        format_count(writer.batches),
        format_count(writer.groups),
        writer.snapshots,
        writer.command_bytes as f64 / writer.batches.max(1) as f64,
    );
    let waits = format!(
        "readers waited {:.1} ms at most; the longest command took {:.1} ms, the longest snapshot {:.1} s",
        writer.exclusive_us_max as f64 / 1_000.0,
        writer.command_us_max as f64 / 1_000.0,
        writer.snapshot_us_max as f64 / 1_000_000.0,
    );
    vec![("journal", journal), ("waits", waits)]
}

/// Where the driver waited for answers (nothing, if it never did).
fn stall_line(stalls: &Stalls) -> Option<(&'static str, String)> {
    let parts: Vec<String> = Stall::ALL
        .into_iter()
        .map(|why| (why, stalls.of(why)))
        .filter(|&(_, (waits, _))| waits > 0)
        .map(|(why, (waits, waited))| {
            format!("{:.1} s {} ({} times)", waited.as_secs_f64(), why.describe(), format_count(waits))
        })
        .collect();
    (!parts.is_empty()).then(|| ("driver waited", parts.join("; ")))
}

/// Refunds, escrow, the other products, fees, refusals and the digest.
fn money_lines(summary: &Summary) -> Vec<(&'static str, String)> {
    let output = &summary.output;
    let acknowledged = &output.tally.acknowledged;
    let mut lines = Vec::new();
    let refunds = format!("{} ({})", format_count(acknowledged.refunds), format_yuan(acknowledged.refunded.into()));
    lines.push(("refunds", refunds));
    if summary.target.is_none() {
        let escrow = format!(
            "{} trades auto-confirmed by the clock (their buyers had not confirmed in time)",
            format_count(acknowledged.auto_confirmed)
        );
        lines.push(("escrow", escrow));
    }
    let also = format!(
        "{} transfers, {} top-ups, {} withdrawals, {} Yu'e Bao subscriptions, {} red packets ({} claims), {} campaign discounts",
        format_count(acknowledged.transfers),
        format_count(acknowledged.top_ups),
        format_count(acknowledged.withdrawals),
        format_count(acknowledged.fund_subscriptions),
        format_count(acknowledged.red_packets),
        format_count(acknowledged.red_packet_claims),
        format_yuan(acknowledged.discounts.into()),
    );
    lines.push(("also", also));
    if let Some(figures) = &output.figures {
        lines.push(("fees earned", format!("{} (the revenue account)", format_yuan(figures.revenue))));
        lines.push(("Yu'e Bao", format!("{} yield paid for the day", format_yuan(acknowledged.fund_yield.into()))));
    }
    for (reason, count) in &acknowledged.rejected {
        lines.push(("refused", format!("{} × {reason}", format_count(*count))));
    }
    if let Some(digest) = output.digest {
        lines.push(("state digest", format!("{digest:016x}")));
    }
    lines
}

/// Writes report.json, the PNG charts and report.html; returns the HTML's path.
pub fn write(dir: &Path, summary: &Summary) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("create the report directory {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&summary.to_json())?;
    fs::write(dir.join("report.json"), json).context("write report.json")?;
    let charts = charts::draw(dir, &summary.output.tally, summary.config.scale)?;
    let html_path = dir.join("report.html");
    fs::write(&html_path, html(summary, &charts)?).context("write report.html")?;
    Ok(html_path)
}

fn html(summary: &Summary, charts: &[charts::Chart]) -> anyhow::Result<String> {
    let mut page = String::new();
    let escape = |text: &str| text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>zhifu double11 — seed {seed}, scale {scale}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}td{{padding:2px 10px}}.ok{{color:#080}}.fail{{color:#c00}}\
         img{{max-width:100%;border:1px solid #ddd;margin:.5em 0}}</style></head><body>\
         <h1>Double Eleven on zhifu</h1><p>Seed {seed}, scale {scale} of 2013's day ({payments} payments planned, \
         {merchants} merchants, {buyers} buyers), {where_}.</p>",
        seed = summary.config.seed,
        scale = summary.config.scale,
        payments = format_count(summary.plan.payments),
        merchants = format_count(u64::from(summary.plan.merchants)),
        buyers = format_count(u64::from(summary.plan.buyers)),
        where_ = summary
            .target
            .as_deref()
            .map_or("in process on the embedded store".to_string(), |url| format!("over HTTP against {}", escape(url))),
    );
    page.push_str("<h2>Checks against the ledger</h2><table>");
    for check in summary.checks() {
        let (class, mark) = if check.passed { ("ok", "✓") } else { ("fail", "✗") };
        let _ = write!(
            page,
            "<tr><td class=\"{class}\">{mark}</td><td>{}</td><td>{}</td></tr>",
            escape(check.name),
            escape(&check.detail)
        );
    }
    page.push_str("</table><h2>Summary</h2><pre>");
    page.push_str(&escape(&terminal(summary)));
    page.push_str("</pre><h2>Charts</h2>");
    for chart in charts {
        let bytes = fs::read(&chart.path).with_context(|| format!("read {}", chart.path.display()))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = write!(
            page,
            "<h3>{}</h3><img alt=\"{}\" src=\"data:image/png;base64,{encoded}\">",
            escape(&chart.title),
            escape(&chart.title)
        );
    }
    page.push_str("</body></html>\n");
    Ok(page)
}
