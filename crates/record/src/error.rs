use crate::Compression;

/// Why a byte sequence is not an acceptable record batch.
///
/// Every variant describes the input, never an internal failure: callers map all of them to
/// Kafka's `CORRUPT_MESSAGE` (or `UNSUPPORTED_COMPRESSION_TYPE` / `INVALID_RECORD`), and can
/// log the message verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record set truncated: need {needed} bytes at position {position}, have {available}")]
    Truncated {
        position: usize,
        needed: usize,
        available: usize,
    },
    #[error("batch length {length} is smaller than the v2 header ({min})")]
    LengthTooSmall { length: i32, min: usize },
    #[error("unsupported magic byte {0}: only RecordBatch v2 is accepted")]
    UnsupportedMagic(i8),
    #[error("CRC mismatch: header says {stored:#010x}, content has {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("batch holds no records")]
    Empty,
    #[error("{codec:?} decompression failed: {reason}")]
    Decompression { codec: Compression, reason: String },
    #[error("{codec:?} compression failed: {reason}")]
    Compression { codec: Compression, reason: String },
    #[error("decompressed batch exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("malformed record {index}: {reason}")]
    MalformedRecord { index: usize, reason: &'static str },
    #[error("batch declares {declared} records but holds {found}")]
    RecordCountMismatch { declared: i32, found: usize },
    #[error("record {index} has offset delta {found}; a producer's records run 0, 1, 2, ...")]
    OffsetDeltaMismatch { index: usize, found: i32 },
    #[error("record {index} has timestamp {timestamp}, outside the accepted [{low}, {high}]")]
    TimestampOutOfRange {
        index: usize,
        timestamp: i64,
        low: i64,
        high: i64,
    },
    #[error("record {index} has no key; a compacted topic keeps the latest record per key")]
    MissingKey { index: usize },
}

impl RecordError {
    /// The index, within its batch, of the record at fault, if one record is (for Kafka's
    /// per-record errors, KIP-467).
    pub fn record_index(&self) -> Option<usize> {
        match self {
            RecordError::MalformedRecord { index, .. }
            | RecordError::OffsetDeltaMismatch { index, .. }
            | RecordError::TimestampOutOfRange { index, .. }
            | RecordError::MissingKey { index } => Some(*index),
            _ => None,
        }
    }
}
