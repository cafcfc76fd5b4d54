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
            body.clear();
            body.push(0); // attributes
            write_varlong(&mut body, record.timestamp.wrapping_sub(base_timestamp));
            write_varint(&mut body, delta as i32);
            write_bytes(&mut body, record.key.as_deref());
            write_bytes(&mut body, record.value.as_deref());
            write_varint(&mut body, record.headers.len() as i32);
            for header in &record.headers {
                write_bytes(&mut body, Some(&header.key));
                write_bytes(&mut body, header.value.as_deref());
            }
            write_varint(&mut payload, body.len() as i32);
            payload.extend_from_slice(&body);
        }
        let payload = self.compression.compress(&payload)?;

        let mut attributes = i16::from(self.compression.id());
        if self.transactional {
            attributes |= 0x10;
        }
        if self.control {
            attributes |= 0x20;
        }
        let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        let length = (HEADER_SIZE - LOG_OVERHEAD + payload.len()) as i32;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // CRC, filled below
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&(self.records.len() as i32 - 1).to_be_bytes());
        out.extend_from_slice(&base_timestamp.to_be_bytes());
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&(self.records.len() as i32).to_be_bytes());
        debug_assert_eq!(out.len(), HEADER_SIZE);
        out.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&out[offsets::ATTRIBUTES..]);
        out[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
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
