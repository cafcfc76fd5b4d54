//! The partition log: Sluice's storage engine.
//!
//! Owns everything on disk below the broker: per-partition directories of segments in
//! Kafka's exact layout (`<topic>-<partition>/<20-digit base offset>.log|.index|.timeindex`),
//! appends with offset assignment, sparse indexes, reads as file regions ready for
//! `sendfile`, lookups by timestamp, recovery after a crash, retention, DeleteRecords,
//! log compaction (the cleaner),
//! durability through group commit, and a [`LogManager`] for thousands of partitions.
//!
//! It depends on `sluice-record` for the batch format and on nothing above it: no network,
//! no Kafka protocol, no async runtime (durability waits are plain futures, or blocking).
//!
//! Durability contract: [`Log::append`] returns once the data is in the page cache;
//! [`Log::wait_durable`] resolves once it is on stable storage (group commit), or at once
//! under [`FlushPolicy::Interval`]. A crash loses nothing that a resolved wait covered.

mod blocking;
mod checkpoint;
mod cleaner;
mod clock;
mod config;
mod error;
mod file_cache;
mod flush;
mod index;
mod leader_epochs;
mod log;
mod manager;
mod producer_state;
mod record_set;
mod recovery;
mod scan;
mod segment;
mod storage;
mod topic_partition;

pub use blocking::{BlockingSection, Inline};
pub use cleaner::{
    CleanerSettings, CleaningCandidate, CleaningReport, CrashPoint, OFFSET_MAP_BYTES_PER_KEY,
    set_crash_point,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CleanupPolicy, DEFAULT_MAX_MESSAGE_BYTES, FlushPolicy, LogConfig, ManagerConfig};
pub use error::{LogError, Result};
pub use flush::{DurableWait, FlushStatsSnapshot};
pub use leader_epochs::{EpochEntry, LEADER_EPOCH_CHECKPOINT, LeaderEpochs};
pub use log::{
    AppendInfo, FileRegion, Log, LogOffsets, ReadResult, RecordsFrom, RetentionReport, StoredBatch,
    TimestampOffset,
};
pub use manager::{CLEAN_SHUTDOWN_FILE, LogManager, STRAY_SUFFIX, stray_dirs};
pub use producer_state::{ProducerBatch, ProducerEntry, ProducerStates, SequenceError};
pub use record_set::{BatchSummary, ReplicatedRecords, ValidatedRecords};
pub use storage::{FileSystem, SimulatedDisk, SimulatedDiskStats, SimulatedFault, Storage};
pub use topic_partition::TopicPartition;
