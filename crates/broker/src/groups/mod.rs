//! The group coordinator (classic protocol): groups, their rebalances, and committed
//! offsets, stored as records in the compacted internal topic `__consumer_offsets`.
//!
//! - [`coordinator`]: the API the handlers call (join, sync, heartbeat, leave, commit,
//!   fetch, list, describe, delete), deadlines and the background task;
//! - [`group`]: one group's state machine, with its invariants checked after every change;
//! - `storage`: `__consumer_offsets` — appends through the partition layer, replay at
//!   startup, tombstones and offset expiry;
//! - [`records`]: Kafka's key/value schemas of that topic;
//! - `registry`: the groups known, each behind its own mutex.
//!
//! Depends on the partition layer, the metadata image (to find `__consumer_offsets`) and
//! its settings in `config`; must not depend on the broker wiring or the handlers.

pub mod coordinator;
pub mod group;
pub mod records;
mod registry;
mod storage;

pub use crate::internal_topics::OFFSETS_TOPIC;
pub use coordinator::{
    CoordinatorConfig, GroupCoordinator, GroupDescription, OffsetToCommit, PartitionLag,
    PartitionResults,
};
