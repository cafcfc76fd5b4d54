//! The RecordBatch v2 header and the invariants a batch must satisfy.
//!
//! Layout (all integers big-endian), as defined by Kafka's `DefaultRecordBatch`:
//!
//! ```text
//!  0  baseOffset            int64   ┐ log overhead: outside the batch length and the CRC
//!  8  batchLength           int32   ┘ (bytes that follow this field)
//! 12  partitionLeaderEpoch  int32     outside the CRC: patched by the leader
//! 16  magic                 int8      must be 2
//! 17  crc                   uint32    CRC-32C of every byte from `attributes` to the end
//! 21  attributes            int16     bits 0-2 codec, 3 timestamp type, 4 transactional,
//!                                     5 control, 6 delete horizon present
//! 23  lastOffsetDelta       int32
//! 27  baseTimestamp         int64
//! 35  maxTimestamp          int64
//! 43  producerId            int64
//! 51  producerEpoch         int16
//! 53  baseSequence          int32
//! 57  recordCount           int32
//! 61  records...
//! ```
//!
//! Invariants enforced by [`RecordBatch::parse`] and [`RecordBatch::validate`]:
//! - the buffer holds the whole batch: `LOG_OVERHEAD + batchLength` bytes;
//! - `batchLength >= HEADER_SIZE - LOG_OVERHEAD`, so every header field is present;
//! - `magic == 2`;
//! - the stored CRC equals the CRC-32C of bytes `[21..]`;
//! - the codec id is one Kafka defines.
//!
//! The two fields outside the CRC, `baseOffset` and `partitionLeaderEpoch`, are exactly the
//! ones a broker assigns; patching them never requires re-encoding or a new CRC.

use crate::{Compression, RecordError, Records};

/// Bytes before the part of the batch that `batchLength` counts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 batch header, up to and including `recordCount`.
pub const HEADER_SIZE: usize = 61;
/// The only batch format this crate accepts.
pub const MAGIC_V2: i8 = 2;
/// Producer id of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// Leader epoch of a batch that no leader has stamped.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Byte offsets of the header fields, from the start of the batch.
pub mod offsets {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
    pub const RECORDS: usize = 61;
}

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;
pub(crate) const DELETE_HORIZON_FLAG: i16 = 0x40;

/// How the timestamps of a batch were assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer when it created the records.
    CreateTime,
    /// Set by the broker when it appended the batch; `maxTimestamp` holds it.
    LogAppendTime,
}

pub(crate) fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

pub(crate) fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

/// A view over the 61-byte header of a v2 batch (the records may or may not follow).
/// Construction ([`BatchHeader::parse`]) guarantees the header is complete, the batch length
/// covers it and the magic is 2, so accessors cannot fail.
#[derive(Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

impl std::fmt::Debug for BatchHeader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchHeader")
            .field("base_offset", &self.base_offset())
            .field("last_offset", &self.last_offset())
            .field("size", &self.size())
            .field("records", &self.record_count())
            .field("compression", &self.compression())
            .finish()
    }
}

impl<'a> BatchHeader<'a> {
    /// Reads the size of the batch that starts at `buf[0]`, from its first 12 bytes.
    /// Returns `None` when fewer than [`LOG_OVERHEAD`] bytes are available.
    pub fn peek_size(buf: &[u8]) -> Option<Result<usize, RecordError>> {
        if buf.len() < LOG_OVERHEAD {
            return None;
        }
        let length = read_i32(buf, offsets::BATCH_LENGTH);
        let min = HEADER_SIZE - LOG_OVERHEAD;
        Some(if length < min as i32 {
            Err(RecordError::LengthTooSmall {
                length,
                min: HEADER_SIZE,
            })
        } else {
            Ok(LOG_OVERHEAD + length as usize)
        })
    }

    /// Takes the header at the start of `buf`; the rest of the batch need not be present.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RecordError> {
        let truncated = |needed| RecordError::Truncated {
            position: 0,
            needed,
            available: buf.len(),
        };
        match Self::peek_size(buf) {
            None => return Err(truncated(LOG_OVERHEAD)),
            Some(size) => size?,
        };
        if buf.len() < HEADER_SIZE {
            return Err(truncated(HEADER_SIZE));
        }
        let magic = buf[offsets::MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(RecordError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader {
            bytes: &buf[..HEADER_SIZE],
        })
    }

    /// Total size of the batch on disk and on the wire: `LOG_OVERHEAD + batchLength`.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length() as usize
    }

    pub fn base_offset(&self) -> i64 {
        read_i64(self.bytes, offsets::BASE_OFFSET)
    }

    pub fn batch_length(&self) -> i32 {
        read_i32(self.bytes, offsets::BATCH_LENGTH)
    }

    pub fn partition_leader_epoch(&self) -> i32 {
        read_i32(self.bytes, offsets::PARTITION_LEADER_EPOCH)
    }

    pub fn magic(&self) -> i8 {
        self.bytes[offsets::MAGIC] as i8
    }

    pub fn stored_crc(&self) -> u32 {
        read_i32(self.bytes, offsets::CRC) as u32
    }

    pub fn attributes(&self) -> i16 {
        read_i16(self.bytes, offsets::ATTRIBUTES)
    }

    /// The codec named by the attributes; an unknown id is an error, checked by `validate`.
    pub fn compression(&self) -> Result<Compression, RecordError> {
        Compression::from_id((self.attributes() & COMPRESSION_MASK) as u8)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_FLAG != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_FLAG != 0
    }

    /// Whether `baseTimestamp` holds a delete horizon set by the log cleaner (KIP-534).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes() & DELETE_HORIZON_FLAG != 0
    }

    pub fn last_offset_delta(&self) -> i32 {
        read_i32(self.bytes, offsets::LAST_OFFSET_DELTA)
    }

    /// Offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    pub fn base_timestamp(&self) -> i64 {
        read_i64(self.bytes, offsets::BASE_TIMESTAMP)
    }

    pub fn max_timestamp(&self) -> i64 {
        read_i64(self.bytes, offsets::MAX_TIMESTAMP)
    }

    pub fn producer_id(&self) -> i64 {
        read_i64(self.bytes, offsets::PRODUCER_ID)
    }

    pub fn producer_epoch(&self) -> i16 {
        read_i16(self.bytes, offsets::PRODUCER_EPOCH)
    }

    pub fn base_sequence(&self) -> i32 {
        read_i32(self.bytes, offsets::BASE_SEQUENCE)
    }

    pub fn record_count(&self) -> i32 {
        read_i32(self.bytes, offsets::RECORD_COUNT)
    }
}

/// A view over exactly one whole v2 batch. It dereferences to its [`BatchHeader`] for the
/// header fields.
#[derive(Clone, Copy)]
pub struct RecordBatch<'a> {
    header: BatchHeader<'a>,
    bytes: &'a [u8],
}

impl std::fmt::Debug for RecordBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.header.fmt(f)
    }
}

impl<'a> std::ops::Deref for RecordBatch<'a> {
    type Target = BatchHeader<'a>;

    fn deref(&self) -> &BatchHeader<'a> {
        &self.header
    }
}

impl<'a> RecordBatch<'a> {
    /// Takes the batch at the start of `buf`, which may hold more bytes after it. Checks that
    /// the header and the whole batch are present and that the magic is 2. The CRC is not
    /// checked: see [`RecordBatch::validate`].
    pub fn parse(buf: &'a [u8]) -> Result<Self, RecordError> {
        let header = BatchHeader::parse(buf)?;
        let size = header.size();
        if buf.len() < size {
            return Err(RecordError::Truncated {
                position: 0,
                needed: size,
                available: buf.len(),
            });
        }
        Ok(RecordBatch {
            header,
            bytes: &buf[..size],
        })
    }

    pub fn header(&self) -> BatchHeader<'a> {
        self.header
    }

    /// The batch's bytes, log overhead included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// CRC-32C over the attributes and everything after them.
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[offsets::ATTRIBUTES..])
    }

    /// The bytes after the header: encoded records, possibly compressed.
    pub fn records_payload(&self) -> &'a [u8] {
        &self.bytes[offsets::RECORDS..]
    }

    /// Checks what any stored batch must satisfy: the CRC matches, the codec is known, and
    /// the record count is coherent with the offset range (compaction may leave fewer records
    /// than offsets, never more). Does not decompress.
    pub fn validate(&self) -> Result<(), RecordError> {
        let stored = self.stored_crc();
        let computed = self.computed_crc();
        if stored != computed {
            return Err(RecordError::CrcMismatch { stored, computed });
        }
        self.compression()?;
        let count = self.record_count();
        let last_offset_delta = self.last_offset_delta();
        if count < 0 || last_offset_delta < 0 || i64::from(count) > i64::from(last_offset_delta) + 1
        {
            return Err(RecordError::CountMismatch {
                count,
                last_offset_delta,
            });
        }
        Ok(())
    }

    /// [`RecordBatch::validate`] plus what a producer's batch must satisfy: at least one
    /// record, and exactly one offset per record (no gaps before the broker has seen it).
    pub fn validate_from_producer(&self) -> Result<(), RecordError> {
        self.validate()?;
        let count = self.record_count();
        if count == 0 {
            return Err(RecordError::Empty);
        }
        if i64::from(count) != i64::from(self.last_offset_delta()) + 1 {
            return Err(RecordError::CountMismatch {
                count,
                last_offset_delta: self.last_offset_delta(),
            });
        }
        Ok(())
    }

    /// Decodes the records, decompressing if needed. `max_decompressed` bounds the memory a
    /// hostile batch can make us allocate.
    pub fn records(&self, max_decompressed: usize) -> Result<Records<'a>, RecordError> {
        Records::decode(*self, max_decompressed)
    }
}

/// Splits a record set (the `records` field of a produce request or a slice of a segment)
/// into batches. Yields an error, then stops, at the first structurally invalid batch.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Batches {
            buf,
            position: 0,
            failed: false,
        }
    }

    /// Byte position of the next batch within the record set.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<RecordBatch<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        match RecordBatch::parse(&self.buf[self.position..]) {
            Ok(batch) => {
                self.position += batch.size();
                Some(Ok(batch))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(match err {
                    RecordError::Truncated {
                        needed, available, ..
                    } => RecordError::Truncated {
                        position: self.position,
                        needed,
                        available,
                    },
                    other => other,
                }))
            }
        }
    }
}

/// Writes `base_offset` into the batch starting at `batch[0]`. The field is outside the CRC.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[offsets::BASE_OFFSET..offsets::BASE_OFFSET + 8]
        .copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the leader epoch into the batch starting at `batch[0]`. The field is outside the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[offsets::PARTITION_LEADER_EPOCH..offsets::PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch starting at `batch[0]` as LogAppendTime with `timestamp` as its max
/// timestamp, and recomputes the CRC (both fields are covered by it). The caller must have
/// parsed the batch first.
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) {
    let attributes = read_i16(batch, offsets::ATTRIBUTES) | TIMESTAMP_TYPE_FLAG;
    batch[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[offsets::MAX_TIMESTAMP..offsets::MAX_TIMESTAMP + 8]
        .copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[offsets::ATTRIBUTES..]);
    batch[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Writes an idempotent producer's base sequence into the batch starting at `batch[0]` and
/// recomputes the CRC (the field is covered by it), as a producer does for each new batch.
/// The caller must have parsed the batch first.
pub fn set_base_sequence(batch: &mut [u8], sequence: i32) {
    batch[offsets::BASE_SEQUENCE..offsets::BASE_SEQUENCE + 4]
        .copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[offsets::ATTRIBUTES..]);
    batch[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, OwnedRecord};

    fn sample() -> Vec<u8> {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(OwnedRecord::new(
            Some(b"k".to_vec()),
            Some(b"v".to_vec()),
            1_000,
        ));
        builder.push(OwnedRecord::new(None, Some(b"second".to_vec()), 1_005));
        builder.build().unwrap()
    }

    #[test]
    fn header_fields_and_patches() {
        let mut bytes = sample();
        set_base_offset(&mut bytes, 42);
        set_partition_leader_epoch(&mut bytes, 7);
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_from_producer().unwrap();
        assert_eq!(batch.base_offset(), 42);
        assert_eq!(batch.last_offset(), 43);
        assert_eq!(batch.partition_leader_epoch(), 7);
        assert_eq!(batch.record_count(), 2);
        assert_eq!(batch.base_timestamp(), 1_000);
        assert_eq!(batch.max_timestamp(), 1_005);
        assert_eq!(batch.producer_id(), NO_PRODUCER_ID);
        assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
        assert!(!batch.is_control() && !batch.is_transactional());
    }

    #[test]
    fn every_flipped_bit_in_crc_range_is_detected() {
        let bytes = sample();
        for byte in offsets::ATTRIBUTES..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                let verdict = RecordBatch::parse(&damaged).and_then(|b| b.validate());
                assert!(
                    verdict.is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_magic_short_length_and_truncation() {
        let mut bytes = sample();
        bytes[offsets::MAGIC] = 1;
        assert_eq!(
            RecordBatch::parse(&bytes).unwrap_err(),
            RecordError::UnsupportedMagic(1)
        );

        let mut bytes = sample();
        bytes[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4]
            .copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            RecordBatch::parse(&bytes),
            Err(RecordError::LengthTooSmall { .. })
        ));

        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    RecordBatch::parse(&bytes[..cut]),
                    Err(RecordError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn batches_iterator_stops_at_torn_tail() {
        let one = sample();
        let mut set = one.clone();
        set.extend_from_slice(&one);
        set.extend_from_slice(&one[..20]);
        let mut batches = Batches::new(&set);
        assert!(batches.next().unwrap().is_ok());
        assert!(batches.next().unwrap().is_ok());
        match batches.next().unwrap() {
            Err(RecordError::Truncated { position, .. }) => assert_eq!(position, 2 * one.len()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(batches.next().is_none());
    }

    #[test]
    fn log_append_time_keeps_crc_valid() {
        let mut bytes = sample();
        set_log_append_time(&mut bytes, 99_999);
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(batch.max_timestamp(), 99_999);
    }

    #[test]
    fn producer_batch_must_have_one_offset_per_record() {
        let mut bytes = sample();
        bytes[offsets::LAST_OFFSET_DELTA..offsets::LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[offsets::ATTRIBUTES..]);
        bytes[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate().unwrap(); // legal after compaction
        assert!(matches!(
            batch.validate_from_producer(),
            Err(RecordError::CountMismatch { .. })
        ));
    }
}
