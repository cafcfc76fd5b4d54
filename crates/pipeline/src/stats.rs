//! Counters of the gateway and the sink, rendered in the Prometheus text format. Atomics
//! only: they are bumped per request and per batch on the hot paths.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sluice_broker::prometheus::{Histogram, Kind, TextWriter};

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

fn get(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

fn histogram(out: &mut TextWriter, name: &str, help: &str, histogram: &Histogram) {
    out.family(name, Kind::Histogram, help);
    out.histogram(name, &[], histogram);
}

impl GatewayStats {
    pub fn render(&self, out: &mut TextWriter) {
        let name = "sluice_ingest_requests_total";
        out.family(name, Kind::Counter, "POST requests answered, by status.");
        for (status, value) in [
            ("202", &self.accepted_requests),
            ("400", &self.rejected_invalid),
            ("413", &self.rejected_too_large),
            ("503", &self.rejected_unavailable),
        ] {
            out.sample(name, &[("status", status)], get(value));
        }
        out.single(
            "sluice_ingest_metrics_accepted_total",
            Kind::Counter,
            "Metrics durably written to the topic.",
            get(&self.accepted_metrics),
        );
        out.single(
            "sluice_ingest_requests_in_flight",
            Kind::Gauge,
            "POST requests being handled.",
            self.in_flight.load(Ordering::Relaxed),
        );
        histogram(
            out,
            "sluice_ingest_request_duration_seconds",
            "POST latency.",
            &self.latency,
        );
        out.single(
            "sluice_ingest_queries_total",
            Kind::Counter,
            "GET /api/v1/metrics requests.",
            get(&self.queries),
        );
        out.single(
            "sluice_ingest_query_errors_total",
            Kind::Counter,
            "GET /api/v1/metrics requests the database failed.",
            get(&self.query_errors),
        );
    }
}

impl SinkStats {
    pub fn render(&self, out: &mut TextWriter) {
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
            out.single(name, Kind::Counter, help, get(value));
        }
        out.single(
            "sluice_sink_lag",
            Kind::Gauge,
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
