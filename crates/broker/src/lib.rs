//! The Sluice broker: a single node that speaks the Kafka protocol.
//!
//! Owns the network server ([`server`]), one handler per Kafka API (`handlers/`), the broker
//! configuration ([`config`]), topic configuration ([`topic_config`]), the cluster metadata
//! log and image ([`metadata`]) and the partitions it serves ([`broker`]). Error codes are
//! mapped from typed errors in one place ([`errors`]). Counters live in [`metrics`]; the
//! admin HTTP endpoint (health, Prometheus, JSON API) in [`admin_http`].
//!
//! Storage is `sluice-log`'s, framing and encoding `sluice-protocol`'s. Must not depend on the
//! CLI; the binary (`sluice broker`) only builds a [`config::BrokerConfig`] and calls
//! [`server::start`].

pub mod admin_http;
mod alloc_guard;
pub mod broker;
pub mod config;
pub mod errors;
pub mod groups;
mod handlers;
pub mod metadata;
pub mod metrics;
pub mod server;
pub mod topic_config;

pub use alloc_guard::GuardedAllocator;
pub use broker::Broker;

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;
pub use config::BrokerConfig;
pub use server::{BrokerHandle, start};
