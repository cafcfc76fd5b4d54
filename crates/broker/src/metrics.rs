//! The broker's own counters: requests and their latency per Kafka API, bytes and messages
//! in and out per topic, produce and fetch errors, connections. Lock-free on the hot path
//! (atomics; a topic's counters are created once under a write lock, when its partitions
//! are opened, and held by each partition). Rendered in the Prometheus text format by
//! `admin_http`, together with what the partitions and the group coordinator already know.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use crate::prometheus::{Histogram, Kind, TextWriter};

/// One latency histogram per possible API key (the protocol's keys are below this).
const API_SLOTS: usize = 128;
/// Versions counted per API: every version Kafka 4.x defines is below this (Fetch's newest
/// is 18); a request at a higher version is not counted.
const VERSION_SLOTS: usize = 32;

/// Counters of one topic.
#[derive(Debug, Default)]
pub struct TopicCounters {
    pub bytes_in: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub produce_errors: AtomicU64,
    pub fetch_errors: AtomicU64,
}

/// Everything the broker counts about itself.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Indexed by API key.
    latency: Box<[Histogram]>,
    /// Requests per API key and version (`API_SLOTS` x `VERSION_SLOTS`): which versions
    /// clients negotiate.
    by_version: Box<[AtomicU64]>,
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    /// Connections closed at once for being over `max.connections[.per.ip]`.
    pub connections_refused: AtomicU64,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            latency: (0..API_SLOTS).map(|_| Histogram::default()).collect(),
            by_version: (0..API_SLOTS * VERSION_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            topics: RwLock::new(HashMap::new()),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
        }
    }
}

impl BrokerMetrics {
    fn latency_of(&self, api: ApiKey) -> Option<&Histogram> {
        usize::try_from(api as i16)
            .ok()
            .and_then(|slot| self.latency.get(slot))
    }

    /// Records a request of `api` that took `elapsed` from its arrival to its response.
    pub fn observe_request(&self, api: ApiKey, elapsed: Duration) {
        if let Some(histogram) = self.latency_of(api) {
            histogram.observe(elapsed);
        }
    }

    fn version_slot(api: ApiKey, version: i16) -> Option<usize> {
        let api = usize::try_from(api as i16)
            .ok()
            .filter(|&a| a < API_SLOTS)?;
        let version = usize::try_from(version)
            .ok()
            .filter(|&v| v < VERSION_SLOTS)?;
        Some(api * VERSION_SLOTS + version)
    }

    /// Counts a request of `api` at `version` as it arrives.
    pub fn count_request_version(&self, api: ApiKey, version: i16) {
        if let Some(slot) = Self::version_slot(api, version) {
            self.by_version[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The versions of `api` that requests used so far, with their counts, lowest first.
    pub fn versions_used(&self, api: ApiKey) -> Vec<(i16, u64)> {
        (0..VERSION_SLOTS as i16)
            .filter_map(|v| {
                let count = self.by_version[Self::version_slot(api, v)?].load(Ordering::Relaxed);
                (count > 0).then_some((v, count))
            })
            .collect()
    }

    /// Requests answered for `api` so far.
    pub fn requests(&self, api: ApiKey) -> u64 {
        self.latency_of(api).map_or(0, Histogram::count)
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

    /// Writes the broker's own metrics; `served` lists the APIs that get a latency series
    /// (zero until their first request).
    pub fn render(&self, out: &mut TextWriter, served: impl Iterator<Item = ApiKey>) {
        let name = "sluice_request_duration_seconds";
        out.family(
            name,
            Kind::Histogram,
            "Time from a request's arrival to its response, per Kafka API.",
        );
        let mut served: Vec<ApiKey> = served.collect();
        served.sort_by_key(|key| *key as i16);
        for api in &served {
            if let Some(histogram) = self.latency_of(*api) {
                out.histogram(name, &[("api", &format!("{api:?}"))], histogram);
            }
        }
        let name = "sluice_requests_total";
        out.family(
            name,
            Kind::Counter,
            "Requests received, per Kafka API and version (the versions clients negotiate).",
        );
        for api in &served {
            let label = format!("{api:?}");
            for (version, count) in self.versions_used(*api) {
                out.sample(
                    name,
                    &[("api", &label), ("version", &version.to_string())],
                    count,
                );
            }
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
            out.family(name, Kind::Counter, help);
            for topic in &names {
                let value = field(&topics[*topic]).load(Ordering::Relaxed);
                out.sample(name, &[("topic", topic)], value);
            }
        }
        out.single(
            "sluice_connections",
            Kind::Gauge,
            "Open client connections.",
            self.connections.load(Ordering::Relaxed),
        );
        out.single(
            "sluice_connections_total",
            Kind::Counter,
            "Client connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        out.single(
            "sluice_connections_refused_total",
            Kind::Counter,
            "Connections closed at once: over max.connections or max.connections.per.ip.",
            self.connections_refused.load(Ordering::Relaxed),
        );
    }
}
