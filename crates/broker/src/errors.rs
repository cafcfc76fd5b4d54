//! The one place where internal errors become Kafka error codes.

use kafka_protocol::ResponseError;
use sluice_log::{LogError, SequenceError};
use sluice_record::RecordError;

/// The Kafka error for a log failure.
pub fn log_error_code(err: &LogError) -> ResponseError {
    match err {
        LogError::InvalidBatch(RecordError::UnsupportedMagic(0 | 1)) => {
            ResponseError::UnsupportedForMessageFormat
        }
        LogError::InvalidBatch(RecordError::UnknownCompression(_)) => {
            ResponseError::UnsupportedCompressionType
        }
        LogError::InvalidBatch(RecordError::TimestampOutOfRange { .. }) => {
            ResponseError::InvalidTimestamp
        }
        // A record breaks the format or the topic's rules (Kafka's InvalidRecordException).
        LogError::InvalidBatch(
            RecordError::MalformedRecord { .. }
            | RecordError::RecordCountMismatch { .. }
            | RecordError::OffsetDeltaMismatch { .. }
            | RecordError::MissingKey { .. },
        ) => ResponseError::InvalidRecord,
        LogError::InvalidBatch(_) | LogError::EmptyRecordSet | LogError::OutOfOrder(_) => {
            ResponseError::CorruptMessage
        }
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io(_) | LogError::Offline(_) => ResponseError::KafkaStorageError,
        LogError::Deleted => ResponseError::UnknownTopicOrPartition,
        LogError::InvalidConfig(_) => ResponseError::InvalidConfig,
        LogError::StaleLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
    }
}

/// An error with the code a client gets and a message for its `error_message` field.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: String,
    /// The record at fault, by its index within its batch, when one is (Produce v8+
    /// `record_errors`, KIP-467).
    pub record: Option<i32>,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            record: None,
        }
    }

    pub fn code(&self) -> i16 {
        self.code.code()
    }
}

impl From<&LogError> for ApiError {
    fn from(err: &LogError) -> Self {
        let record = match err {
            LogError::InvalidBatch(invalid) => invalid.record_index(),
            _ => None,
        };
        ApiError {
            record: record.and_then(|i| i32::try_from(i).ok()),
            ..ApiError::new(log_error_code(err), err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_map_to_the_documented_codes() {
        let crc = LogError::InvalidBatch(RecordError::CrcMismatch {
            stored: 1,
            computed: 2,
        });
        assert_eq!(log_error_code(&crc).code(), 2);
        assert_eq!(
            log_error_code(&LogError::BatchTooLarge { size: 2, max: 1 }).code(),
            10
        );
        let range = LogError::OffsetOutOfRange {
            requested: 9,
            log_start_offset: 0,
            log_end_offset: 1,
        };
        assert_eq!(log_error_code(&range).code(), 1);
        assert_eq!(
            log_error_code(&LogError::Io(std::io::Error::other("x"))).code(),
            56
        );
        assert_eq!(log_error_code(&LogError::Deleted).code(), 3);
    }
}
