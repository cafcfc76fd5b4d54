//! Configuration of a log and of the manager, named after Kafka's properties.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_record::TimestampType;

use crate::LogError;
use crate::blocking::BlockingSection;

/// Which cleanup a topic gets (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };

    /// Parses Kafka's list form: `delete`, `compact`, `compact,delete`.
    pub fn parse(value: &str) -> Result<Self, LogError> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                other => {
                    return Err(LogError::InvalidConfig(format!(
                        "cleanup.policy: unknown policy {other:?}"
                    )));
                }
            }
        }
        Ok(policy)
    }
}

/// Per-partition settings (Kafka topic configs).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this size.
    pub segment_bytes: u32,
    /// `segment.ms`: roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// `segment.index.bytes`: roll when an index of the active segment reaches this size.
    pub segment_index_bytes: u32,
    /// `index.interval.bytes`: log bytes between two offset-index entries.
    pub index_interval_bytes: u32,
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger; -1 is unlimited.
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: u32,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `producer.id.expiration.ms`: an idempotent producer silent this long is forgotten.
    pub producer_expiration_ms: i64,
    /// `min.cleanable.dirty.ratio`: the cleaner skips a compacted log while the dirty share
    /// of its cleanable bytes is below this.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty record older than this makes the log eligible
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone survives after its first cleaning.
    pub delete_retention_ms: i64,
    /// `message.timestamp.before.max.ms`: how far before the broker's clock a CreateTime
    /// record's timestamp may be (`i64::MAX`: any).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far after the broker's clock it may be
    /// (`i64::MAX`: any; the broker's default is Kafka's, one hour).
    pub timestamp_after_max_ms: i64,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1_048_588;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            cleanup_policy: CleanupPolicy::DELETE,
            timestamp_type: TimestampType::CreateTime,
            producer_expiration_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        }
    }
}

/// Smallest `segment.bytes` Kafka accepts; smaller values only make sense in tests.
pub const MIN_SEGMENT_BYTES: u32 = 14;

impl LogConfig {
    /// Checks the bounds the on-disk format imposes: positions are 32-bit, index entries
    /// must fit at least one.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |msg: String| Err(LogError::InvalidConfig(msg));
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > i32::MAX as u32 {
            return bad(format!(
                "segment.bytes must be in [14, 2^31-1], got {}",
                self.segment_bytes
            ));
        }
        if self.segment_ms <= 0 {
            return bad(format!(
                "segment.ms must be positive, got {}",
                self.segment_ms
            ));
        }
        if self.segment_index_bytes < 24 {
            return bad(format!(
                "segment.index.bytes must be at least 24, got {}",
                self.segment_index_bytes
            ));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return bad("retention.ms and retention.bytes must be >= -1".to_string());
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return bad(format!(
                "min.cleanable.dirty.ratio must be in [0, 1], got {}",
                self.min_cleanable_dirty_ratio
            ));
        }
        if self.min_compaction_lag_ms < 0
            || self.max_compaction_lag_ms < 1
            || self.delete_retention_ms < 0
        {
            return bad(
                "min.compaction.lag.ms and delete.retention.ms must be >= 0, max.compaction.lag.ms >= 1"
                    .to_string(),
            );
        }
        if self.max_message_bytes == 0 {
            return bad("max.message.bytes must be positive".to_string());
        }
        Ok(())
    }

    pub(crate) fn max_offset_index_entries(&self) -> usize {
        self.segment_index_bytes as usize / crate::index::OFFSET_ENTRY_SIZE
    }

    pub(crate) fn max_time_index_entries(&self) -> usize {
        self.segment_index_bytes as usize / crate::index::TIME_ENTRY_SIZE
    }
}

/// When producers waiting for durability (acks=all) are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Default. A waiter is released only after an fdatasync (or syncfs) that started after
    /// its batch was written; one sync round covers every batch appended meanwhile, across
    /// partitions. Everything else is flushed every `interval`.
    GroupCommit,
    /// Relaxed durability (Kafka's `flush.ms` style): waiters are released at once and all
    /// logs are flushed every `interval`; a crash can lose up to that much acknowledged data.
    Interval,
}

/// Gives the configuration of a topic's partitions, by topic name.
pub type TopicConfigFn = Arc<dyn Fn(&str) -> LogConfig + Send + Sync>;

/// Settings of a [`crate::LogManager`].
#[derive(Clone)]
pub struct ManagerConfig {
    /// `log.dirs`: the directory that holds one sub-directory per partition.
    pub data_dir: PathBuf,
    /// Config of any partition not covered by `topic_config`.
    pub default_log_config: LogConfig,
    /// Per-topic configuration, consulted when a log is opened or created.
    pub topic_config: Option<TopicConfigFn>,
    pub flush_policy: FlushPolicy,
    /// `log.flush.interval.ms`: background flush of every log with unflushed data, which
    /// also advances recovery points.
    pub flush_interval: Duration,
    /// A group-commit round that covers at least this many partitions issues one `syncfs`
    /// on the data directory's filesystem instead of one fdatasync per file. 0 (default)
    /// disables it: syncfs also flushes unrelated files on a shared filesystem, and on the
    /// measured machine it was no faster than concurrent fdatasyncs (docs/BENCHMARKS.md).
    pub syncfs_threshold: usize,
    /// Sync worker threads: how many partitions can be fdatasynced at the same time. The disk
    /// folds concurrent fdatasyncs into shared journal commits, so throughput grows with this
    /// up to the number of partitions written with acks=all (docs/BENCHMARKS.md).
    pub sync_threads: usize,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval: Duration,
    /// `log.flush.offset.checkpoint.interval.ms`: how often recovery points and log start
    /// offsets are written to their checkpoint files.
    pub checkpoint_interval: Duration,
    /// Upper bound on file handles (and loaded indexes) kept open for inactive segments.
    pub max_open_segments: usize,
    /// `log.cleaner.enable`: run the background cleaner for compacted logs.
    pub cleaner_enabled: bool,
    /// `log.cleaner.dedupe.buffer.size`: memory for the cleaner's offset map, which bounds
    /// how many distinct keys one pass can compact.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// `log.cleaner.backoff.ms`: pause between cleaner checks when no log needs cleaning.
    pub cleaner_backoff: Duration,
    /// `log.cleaner.io.max.bytes.per.second`: I/O budget of the cleaner (infinite: none).
    pub cleaner_io_max_bytes_per_second: f64,
    /// Where the logs run blocking filesystem work that callers may be waiting on (segment
    /// rolls on append, segment opens on read): inline unless the embedder says otherwise.
    pub blocking: Arc<dyn BlockingSection>,
    /// What the logs' files are written and synced through: the real filesystem, or a
    /// [`crate::SimulatedDisk`] in tests.
    pub storage: Arc<dyn crate::Storage>,
}

impl std::fmt::Debug for ManagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerConfig")
            .field("data_dir", &self.data_dir)
            .field("default_log_config", &self.default_log_config)
            .field("topic_config", &self.topic_config.as_ref().map(|_| "fn"))
            .field("flush_policy", &self.flush_policy)
            .field("flush_interval", &self.flush_interval)
            .field("syncfs_threshold", &self.syncfs_threshold)
            .field("sync_threads", &self.sync_threads)
            .field("retention_check_interval", &self.retention_check_interval)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("max_open_segments", &self.max_open_segments)
            .field("cleaner_enabled", &self.cleaner_enabled)
            .field(
                "cleaner_dedupe_buffer_bytes",
                &self.cleaner_dedupe_buffer_bytes,
            )
            .field("cleaner_backoff", &self.cleaner_backoff)
            .field(
                "cleaner_io_max_bytes_per_second",
                &self.cleaner_io_max_bytes_per_second,
            )
            .field("blocking", &self.blocking)
            .field("storage", &self.storage)
            .finish()
    }
}

impl ManagerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ManagerConfig {
            data_dir: data_dir.into(),
            default_log_config: LogConfig::default(),
            topic_config: None,
            flush_policy: FlushPolicy::GroupCommit,
            flush_interval: Duration::from_secs(1),
            syncfs_threshold: 0,
            sync_threads: 64,
            retention_check_interval: Duration::from_secs(300),
            checkpoint_interval: Duration::from_secs(60),
            max_open_segments: 4096,
            cleaner_enabled: true,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            cleaner_backoff: Duration::from_secs(15),
            cleaner_io_max_bytes_per_second: f64::INFINITY,
            blocking: Arc::new(crate::Inline),
            storage: crate::FileSystem::shared(),
        }
    }

    /// The limits of one cleaning pass.
    pub fn cleaner_settings(&self) -> crate::CleanerSettings {
        crate::CleanerSettings {
            max_keys: (self.cleaner_dedupe_buffer_bytes / crate::cleaner::OFFSET_MAP_BYTES_PER_KEY)
                .max(1),
            io_max_bytes_per_second: self.cleaner_io_max_bytes_per_second,
        }
    }

    pub(crate) fn log_config_for(&self, topic: &str) -> LogConfig {
        match &self.topic_config {
            Some(lookup) => lookup(topic),
            None => self.default_log_config.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_policy_parses_kafka_lists() {
        assert_eq!(
            CleanupPolicy::parse("delete").unwrap(),
            CleanupPolicy::DELETE
        );
        assert_eq!(
            CleanupPolicy::parse("compact,delete").unwrap(),
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
        assert!(CleanupPolicy::parse("shred").is_err());
    }

    #[test]
    fn config_bounds_are_enforced() {
        assert!(LogConfig::default().validate().is_ok());
        let too_big = LogConfig {
            segment_bytes: u32::MAX,
            ..LogConfig::default()
        };
        assert!(too_big.validate().is_err());
        let tiny_index = LogConfig {
            segment_index_bytes: 8,
            ..LogConfig::default()
        };
        assert!(tiny_index.validate().is_err());
    }
}
