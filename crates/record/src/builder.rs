//! Encoding records into a v2 batch.

use crate::batch::offsets;
use crate::varint::{write_varint, write_varlong};
use crate::{
    Compression, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE, RecordError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedHeader {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A record to encode. `timestamp` is absolute (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
    pub headers: Vec<OwnedHeader>,
}

impl OwnedRecord {
    pub fn new(key: Option<Vec<u8>>, value: Option<Vec<u8>>, timestamp: i64) -> Self {
        OwnedRecord {
            key,
            value,
            timestamp,
            headers: Vec::new(),
        }
    }
}

/// Builds one batch. Offsets start at 0 (the broker assigns real ones on append); the first
/// record's timestamp becomes the batch's base timestamp, as in Kafka's own builder.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    records: Vec<OwnedRecord>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            records: Vec::new(),
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    pub fn push(&mut self, record: OwnedRecord) {
        self.records.push(record);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encodes the batch, CRC included.
    pub fn build(&self) -> Result<Vec<u8>, RecordError> {
        let first = self.records.first().ok_or(RecordError::Empty)?;
        let base_timestamp = first.timestamp;
        let max_timestamp = self.records.iter().map(|r| r.timestamp).max().unwrap_or(-1);

        let mut payload = Vec::new();
        let mut body = Vec::new();
        for (delta, record) in self.records.iter().enumerate() {
            encode_record(
                &mut payload,
                &mut body,
                record.timestamp.wrapping_sub(base_timestamp),
                delta as i32,
                record.key.as_deref(),
                record.value.as_deref(),
                record
                    .headers
                    .iter()
                    .map(|h| (h.key.as_slice(), h.value.as_deref())),
            );
        }
        let payload = self.compression.compress(&payload)?;

        let mut attributes = i16::from(self.compression.id());
        if self.transactional {
            attributes |= 0x10;
        }
        if self.control {
            attributes |= 0x20;
        }
        Ok(encode_batch(
            &BatchFields {
                base_offset: 0,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                attributes,
                last_offset_delta: self.records.len() as i32 - 1,
                base_timestamp,
                max_timestamp,
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: self.base_sequence,
                record_count: self.records.len() as i32,
            },
            &payload,
        ))
    }
}

/// The header fields of a batch to encode (everything but the length and the CRC).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchFields {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Appends one record (length-prefixed) to `payload`; `body` is scratch space.
pub(crate) fn encode_record<'h>(
    payload: &mut Vec<u8>,
    body: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
) {
    body.clear();
    body.push(0); // attributes
    write_varlong(body, timestamp_delta);
    write_varint(body, offset_delta);
    write_bytes(body, key);
    write_bytes(body, value);
    write_varint(body, headers.len() as i32);
    for (key, value) in headers {
        write_bytes(body, Some(key));
        write_bytes(body, value);
    }
    write_varint(payload, body.len() as i32);
    payload.extend_from_slice(body);
}

/// Encodes a whole batch around an already compressed `payload`, CRC included.
pub(crate) fn encode_batch(fields: &BatchFields, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    out.extend_from_slice(&fields.base_offset.to_be_bytes());
    let length = (HEADER_SIZE - LOG_OVERHEAD + payload.len()) as i32;
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&fields.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // CRC, filled below
    out.extend_from_slice(&fields.attributes.to_be_bytes());
    out.extend_from_slice(&fields.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&fields.base_timestamp.to_be_bytes());
    out.extend_from_slice(&fields.max_timestamp.to_be_bytes());
    out.extend_from_slice(&fields.producer_id.to_be_bytes());
    out.extend_from_slice(&fields.producer_epoch.to_be_bytes());
    out.extend_from_slice(&fields.base_sequence.to_be_bytes());
    out.extend_from_slice(&fields.record_count.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_SIZE);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[offsets::ATTRIBUTES..]);
    out[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

fn write_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(bytes) => {
            write_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_builder_is_an_error() {
        assert_eq!(
            BatchBuilder::new(Compression::None).build(),
            Err(RecordError::Empty)
        );
    }
}
