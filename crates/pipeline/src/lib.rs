//! The metrics ingestion pipeline, Sluice's flagship application: an HTTP gateway that
//! writes metrics to a topic and answers only once they are durable (`gateway`), a
//! consumer-group sink that writes them into PostgreSQL exactly once per message
//! (`sink`, `store`), and both in one process with an embedded broker (`embedded`).
//!
//! Talks to the log only through the Kafka protocol (librdkafka), so it runs against any
//! Kafka-compatible cluster. It may depend on `sluice-broker` only to start one in-process
//! for the embedded mode, never on broker or log internals.

pub mod embedded;
pub mod gateway;
pub mod kafka;
pub mod metric;
pub mod rfc3339;
pub mod sink;
pub mod stats;
pub mod store;
