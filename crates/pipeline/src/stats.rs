//! Counters of the gateway and the sink, rendered in the Prometheus text format. Atomics
//! only: they are bumped per request and per batch on the hot paths.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sluice_broker::metrics::Histogram;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub accepted_requests: AtomicU64,
    pub accepted_metrics: AtomicU64,
    /// 400: malformed JSON or a rule broken.
    pub rejected_invalid: AtomicU64,
    /// 413: body or metric count over the limit.
    pub rejected_too_large: AtomicU64,
    /// 503: the topic did not take the metrics (broker down, buffer full, timeout).
    pub rejected_unavailable: AtomicU64,
    pub in_flight: AtomicI64,
    /// POST latency, from the request's arrival to the response.
    pub latency: Histogram,
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
}

/// The sink's counters.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Messages read from the topic.
    pub consumed: AtomicU64,
    /// Rows the database did not have yet.
    pub inserted: AtomicU64,
    /// Rows already present (a batch replayed after a crash or rebalance).
    pub duplicates: AtomicU64,
    /// Messages that failed parsing or validation.
    pub invalid: AtomicU64,
    /// Of those, written to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub database_errors: AtomicU64,
    pub dead_letter_errors: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Messages in assigned partitions not yet read, at the last stats tick.
    pub lag: AtomicI64,
    /// From a batch's first message to its offsets' commit.
    pub batch_latency: Histogram,
    /// From the message's timestamp (the gateway's receipt time) to the database commit.
    pub end_to_end: Histogram,
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    histogram.render(out, name, "");
}

fn get(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

impl GatewayStats {
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP sluice_ingest_requests_total POST requests answered, by status.\n# TYPE sluice_ingest_requests_total counter"
        );
        for (status, value) in [
            ("202", &self.accepted_requests),
            ("400", &self.rejected_invalid),
            ("413", &self.rejected_too_large),
            ("503", &self.rejected_unavailable),
        ] {
            let _ = writeln!(
                out,
                "sluice_ingest_requests_total{{status=\"{status}\"}} {}",
                get(value)
            );
        }
        counter(
            out,
            "sluice_ingest_metrics_accepted_total",
            "Metrics durably written to the topic.",
            get(&self.accepted_metrics),
        );
        gauge(
            out,
            "sluice_ingest_requests_in_flight",
            "POST requests being handled.",
            self.in_flight.load(Ordering::Relaxed),
        );
        histogram(
            out,
            "sluice_ingest_request_duration_seconds",
            "POST latency.",
            &self.latency,
        );
        counter(
            out,
            "sluice_ingest_queries_total",
            "GET /api/v1/metrics requests.",
            get(&self.queries),
        );
        counter(
            out,
            "sluice_ingest_query_errors_total",
            "GET /api/v1/metrics requests the database failed.",
            get(&self.query_errors),
        );
    }
}

impl SinkStats {
    pub fn render(&self, out: &mut String) {
        for (name, help, value) in [
            (
                "sluice_sink_consumed_total",
                "Messages read from the topic.",
                &self.consumed,
            ),
            (
                "sluice_sink_rows_inserted_total",
                "Rows inserted.",
                &self.inserted,
            ),
            (
                "sluice_sink_rows_duplicate_total",
                "Rows skipped because they were already stored (replayed batches).",
                &self.duplicates,
            ),
            (
                "sluice_sink_invalid_total",
                "Messages that failed validation.",
                &self.invalid,
            ),
            (
                "sluice_sink_dead_lettered_total",
                "Messages written to the dead-letter topic.",
                &self.dead_lettered,
            ),
            (
                "sluice_sink_batches_total",
                "Batches committed.",
                &self.batches,
            ),
            (
                "sluice_sink_database_errors_total",
                "Failed database attempts (each retried).",
                &self.database_errors,
            ),
            (
                "sluice_sink_dead_letter_errors_total",
                "Failed dead-letter writes (each retried).",
                &self.dead_letter_errors,
            ),
            (
                "sluice_sink_commit_errors_total",
                "Offset commits the group refused (the batch is replayed, without duplicates).",
                &self.commit_errors,
            ),
        ] {
            counter(out, name, help, get(value));
        }
        gauge(
            out,
            "sluice_sink_lag",
            "Messages in assigned partitions not yet read.",
            self.lag.load(Ordering::Relaxed),
        );
        histogram(
            out,
            "sluice_sink_batch_duration_seconds",
            "From a batch's first message to its commit.",
            &self.batch_latency,
        );
        histogram(
            out,
            "sluice_sink_end_to_end_seconds",
            "From the message timestamp to the database commit.",
            &self.end_to_end,
        );
    }
}
