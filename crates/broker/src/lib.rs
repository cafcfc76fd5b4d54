//! The Sluice broker: a node that speaks the Kafka protocol, alone or in a cluster whose
//! metadata a Raft quorum of the nodes orders.
//!
//! Layers, from the socket down (see docs/ARCHITECTURE.md for the drawing):
//! - [`server`]: connections, frames, the per-connection reader and writer;
//! - `handlers/`: one file per Kafka API and the table that serves them;
//! - [`broker`]: the wiring of the components below, and publishing metadata changes;
//! - [`controller`]: every metadata change (topics, placements, configs, producer ids,
//!   brokers), made durable by the [`metadata`] store (the quorum's log and the image);
//! - [`partition`]: the data path of each partition (append, read, durability), the only
//!   user of `sluice-log`'s logs;
//! - [`groups`]: the group coordinator and its storage in `__consumer_offsets`.
//!
//! Beside them: [`config`] and [`topic_config`] (Kafka property names), [`errors`] (the one
//! place where errors become Kafka codes), [`metrics`] and [`prometheus`] (counters and the
//! text format, shared with the pipeline), [`admin_http`] (health, metrics, JSON API,
//! console), `peer_client` (one request to another broker: forwarding), and the allocator
//! guard the binaries install ([`GuardedAllocator`]).
//!
//! Storage is `sluice-log`'s, framing and encoding `sluice-protocol`'s. Must not depend on
//! the CLI; the binary (`sluice broker`) only builds a [`config::BrokerConfig`] and calls
//! [`server::start`]. Modules form no import cycle (checked by `tests/module_graph.rs`).

pub mod admin_http;
mod alloc_guard;
pub mod broker;
pub mod cluster_config;
pub mod config;
pub mod controller;
pub mod errors;
pub mod fetch_sessions;
pub mod groups;
mod handlers;
pub mod internal_topics;
pub mod metadata;
pub mod metrics;
pub mod partition;
mod peer_client;
pub mod prometheus;
mod replica_fetcher;
#[cfg(test)]
mod replication_sim;
pub mod server;
pub mod topic_config;

/// Time as the broker and the tools around it read it (see `sluice_log::Clock`).
pub mod clock {
    pub use sluice_log::{Clock, ManualClock, SystemClock};
}

pub use alloc_guard::GuardedAllocator;
pub use broker::Broker;
pub use config::BrokerConfig;
pub use handlers::{advertised_apis, servable, serve_frame};
pub use server::{BrokerHandle, start};

// The binaries install the allocator guard (see `GuardedAllocator`); the library's own unit
// tests run with it too.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: GuardedAllocator = GuardedAllocator;
