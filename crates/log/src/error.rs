use std::io;

use sluice_record::RecordError;

/// Everything a log operation can refuse or fail with. The broker maps each variant to one
/// Kafka error code (see the broker's error mapping), so variants are distinct per code.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The batch is malformed, fails its CRC, or a record breaks a rule of the topic (a key on
    /// a compacted topic, a timestamp within bounds; see `sluice_record::RecordRules`).
    /// Nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] RecordError),
    /// A batch is larger than `max.message.bytes` (Kafka: MESSAGE_TOO_LARGE). Nothing was
    /// written.
    #[error("batch of {size} bytes exceeds max.message.bytes ({max})")]
    BatchTooLarge { size: usize, max: u32 },
    /// The record set holds no batch.
    #[error("empty record set")]
    EmptyRecordSet,
    /// The offset is outside `[log start, log end]` (Kafka: OFFSET_OUT_OF_RANGE).
    #[error("offset {requested} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// A filesystem operation failed; the log is unchanged and still usable (Kafka:
    /// KAFKA_STORAGE_ERROR). A full disk lands here with `ErrorKind::StorageFull`.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
    /// An earlier failure left the log in a state it cannot vouch for (a failed fsync); it
    /// refuses reads and writes until the broker restarts and recovers it.
    #[error("log is offline after an earlier storage failure: {0}")]
    Offline(String),
    /// The log was deleted while the caller held it.
    #[error("log has been deleted")]
    Deleted,
    /// An idempotent producer's batch is out of sequence, from a fenced epoch, or from a
    /// producer whose state is gone. Nothing was written.
    #[error(transparent)]
    Sequence(#[from] crate::SequenceError),
    /// An append stamped with a leader epoch older than one that already wrote to the log
    /// (Kafka: FENCED_LEADER_EPOCH). A leader's epoch only grows; nothing was written.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },
    /// Batches copied from a leader that do not continue this log (their first offset is
    /// below its end, or their offsets go backwards). Nothing was written.
    #[error("replicated batches out of order: {0}")]
    OutOfOrder(String),
    /// An invalid configuration value.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
}

impl LogError {
    /// Whether the failure was a full disk (ENOSPC / EDQUOT), which clears once space is freed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LogError::Io(err) if is_disk_full(err))
    }
}

pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
