//! The broker's own counters: requests and their latency per Kafka API, bytes and messages
//! in and out per topic, produce and fetch errors, connections. Lock-free on the hot path
//! (atomics; a topic's counters are created once under a write lock). Rendered in the
//! Prometheus text format by `admin_http`, together with what the log manager and the group
//! coordinator already know (sizes, offsets, fsyncs, cleaner, lag).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative latency histogram (Prometheus semantics: `le` buckets, sum, count).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is `key="value",...` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Counters of one topic.
#[derive(Debug, Default)]
pub struct TopicCounters {
    pub bytes_in: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub produce_errors: AtomicU64,
    pub fetch_errors: AtomicU64,
}

#[derive(Debug, Default)]
struct ApiCounters {
    latency: Histogram,
}

/// Everything the broker counts about itself.
#[derive(Debug)]
pub struct BrokerMetrics {
    apis: HashMap<i16, ApiCounters>,
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        let apis = sluice_protocol::versions::SUPPORTED
            .iter()
            .map(|range| (range.key as i16, ApiCounters::default()))
            .collect();
        BrokerMetrics {
            apis,
            topics: RwLock::new(HashMap::new()),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
        }
    }
}

impl BrokerMetrics {
    /// Records a request of `api` that took `elapsed` from its arrival to its response.
    pub fn observe_request(&self, api: ApiKey, elapsed: Duration) {
        if let Some(counters) = self.apis.get(&(api as i16)) {
            counters.latency.observe(elapsed);
        }
    }

    /// The counters of `topic`, created on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        if let Some(counters) = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return counters.clone();
        }
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    /// Forgets a deleted topic's counters.
    pub fn forget_topic(&self, topic: &str) {
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic);
    }

    /// (bytes in, bytes out, messages in) summed over topics.
    pub fn totals(&self) -> (u64, u64, u64) {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.values().fold((0, 0, 0), |(i, o, m), c| {
            (
                i + c.bytes_in.load(Ordering::Relaxed),
                o + c.bytes_out.load(Ordering::Relaxed),
                m + c.messages_in.load(Ordering::Relaxed),
            )
        })
    }

    /// Requests answered for `api` so far.
    pub fn requests(&self, api: ApiKey) -> u64 {
        self.apis
            .get(&(api as i16))
            .map_or(0, |c| c.latency.count())
    }

    /// Appends the broker's own metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP sluice_request_duration_seconds Time from a request's arrival to its response, per Kafka API.\n");
        out.push_str("# TYPE sluice_request_duration_seconds histogram\n");
        let mut apis: Vec<_> = self.apis.iter().collect();
        apis.sort_by_key(|(key, _)| **key);
        for (key, counters) in apis {
            let name =
                ApiKey::try_from(*key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"));
            counters.latency.render(
                out,
                "sluice_request_duration_seconds",
                &format!("api=\"{name}\""),
            );
        }
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = topics.keys().collect();
        names.sort();
        type Field = fn(&TopicCounters) -> &AtomicU64;
        let series: [(&str, &str, Field); 5] = [
            (
                "sluice_topic_bytes_in_total",
                "Record-set bytes appended, per topic.",
                |c| &c.bytes_in,
            ),
            (
                "sluice_topic_messages_in_total",
                "Records appended, per topic.",
                |c| &c.messages_in,
            ),
            (
                "sluice_topic_bytes_out_total",
                "Record-set bytes sent to fetchers, per topic.",
                |c| &c.bytes_out,
            ),
            (
                "sluice_topic_produce_errors_total",
                "Partition produce results with an error, per topic.",
                |c| &c.produce_errors,
            ),
            (
                "sluice_topic_fetch_errors_total",
                "Partition fetch results with an error, per topic.",
                |c| &c.fetch_errors,
            ),
        ];
        for (name, help, field) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for topic in &names {
                let value = field(&topics[*topic]).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{topic=\"{}\"}} {value}", escape(topic));
            }
        }
        let _ = writeln!(
            out,
            "# HELP sluice_connections Open client connections.\n# TYPE sluice_connections gauge\nsluice_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sluice_connections_total Client connections accepted.\n# TYPE sluice_connections_total counter\nsluice_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        );
    }
}

/// Escapes a label value (Prometheus text format: backslash, quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "api=\"Produce\"");
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{api=\"Produce\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{api=\"Produce\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
