//! Records inside a batch.
//!
//! ```text
//! length          varint   bytes that follow
//! attributes      int8     unused, 0
//! timestampDelta  varlong  from the batch's baseTimestamp
//! offsetDelta     varint   from the batch's baseOffset
//! keyLength       varint   -1 for a null key
//! key             bytes
//! valueLength     varint   -1 for a null value (a tombstone)
//! value           bytes
//! headerCount     varint
//! headers         [keyLength varint, key, valueLength varint (-1 = null), value]
//! ```

use std::borrow::Cow;

use crate::batch::read_i16;
use crate::varint::{read_varint, read_varlong};
use crate::{Compression, RecordBatch, RecordError, TimestampType};

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'r> {
    pub key: &'r [u8],
    pub value: Option<&'r [u8]>,
}

/// One decoded record, borrowing from its batch (or from the decompressed payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'r> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'r [u8]>,
    pub value: Option<&'r [u8]>,
    pub headers: Vec<Header<'r>>,
}

/// The kind of marker a control record carries (transaction commit or abort).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecordType {
    Abort,
    Commit,
    Unknown(i16),
}

impl Record<'_> {
    /// For a record of a control batch: which marker it is, from its key.
    pub fn control_type(&self) -> Option<ControlRecordType> {
        let key = self.key?;
        if key.len() < 4 {
            return None;
        }
        Some(match read_i16(key, 2) {
            0 => ControlRecordType::Abort,
            1 => ControlRecordType::Commit,
            other => ControlRecordType::Unknown(other),
        })
    }
}

/// The decoded records of one batch. Construction validates every record, so iteration
/// cannot fail.
#[derive(Debug)]
pub struct Records<'a> {
    batch: RecordBatch<'a>,
    data: Cow<'a, [u8]>,
}

impl<'a> Records<'a> {
    pub(crate) fn decode(batch: RecordBatch<'a>, limit: usize) -> Result<Self, RecordError> {
        let payload = batch.records_payload();
        let data = match batch.compression()? {
            Compression::None => Cow::Borrowed(payload),
            codec => Cow::Owned(codec.decompress(payload, limit)?),
        };
        let records = Records { batch, data };
        let mut found = 0usize;
        let mut cursor = 0usize;
        while cursor < records.data.len() {
            records.parse_at(&mut cursor, found)?;
            found += 1;
        }
        if found != batch.record_count().max(0) as usize {
            return Err(RecordError::RecordCountMismatch {
                declared: batch.record_count(),
                found,
            });
        }
        Ok(records)
    }

    pub fn len(&self) -> usize {
        self.batch.record_count() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        let mut cursor = 0usize;
        let mut index = 0usize;
        std::iter::from_fn(move || {
            if cursor >= self.data.len() {
                return None;
            }
            let record = self
                .parse_at(&mut cursor, index)
                .expect("records were validated when decoded");
            index += 1;
            Some(record)
        })
    }

    fn parse_at(&self, cursor: &mut usize, index: usize) -> Result<Record<'_>, RecordError> {
        let malformed = |reason| RecordError::MalformedRecord { index, reason };
        let data: &[u8] = &self.data;
        let length = read_varint(data, cursor).ok_or(malformed("bad length"))?;
        let length = usize::try_from(length).map_err(|_| malformed("negative length"))?;
        let end = cursor
            .checked_add(length)
            .filter(|end| *end <= data.len())
            .ok_or(malformed("length past end of batch"))?;
        let body = &data[..end];
        let _attributes = *body.get(*cursor).ok_or(malformed("missing attributes"))?;
        *cursor += 1;
        let timestamp_delta = read_varlong(body, cursor).ok_or(malformed("bad timestamp"))?;
        let offset_delta = read_varint(body, cursor).ok_or(malformed("bad offset delta"))?;
        let key = read_bytes(body, cursor).ok_or(malformed("bad key"))?;
        let value = read_bytes(body, cursor).ok_or(malformed("bad value"))?;
        let header_count = read_varint(body, cursor).ok_or(malformed("bad header count"))?;
        let header_count =
            usize::try_from(header_count).map_err(|_| malformed("negative header count"))?;
        // Each header needs at least two bytes, so this bound also caps the allocation.
        if header_count > (end - *cursor) / 2 {
            return Err(malformed("header count past end of record"));
        }
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let key = read_bytes(body, cursor)
                .ok_or(malformed("bad header key"))?
                .ok_or(malformed("null header key"))?;
            let value = read_bytes(body, cursor).ok_or(malformed("bad header value"))?;
            headers.push(Header { key, value });
        }
        if *cursor != end {
            return Err(malformed("record length does not match its fields"));
        }
        let timestamp = match self.batch.timestamp_type() {
            TimestampType::LogAppendTime => self.batch.max_timestamp(),
            TimestampType::CreateTime => self.batch.base_timestamp().wrapping_add(timestamp_delta),
        };
        Ok(Record {
            offset: self.batch.base_offset() + i64::from(offset_delta),
            timestamp,
            key,
            value,
            headers,
        })
    }
}

/// Reads a varint-length-prefixed byte string; length -1 is null.
fn read_bytes<'r>(buf: &'r [u8], cursor: &mut usize) -> Option<Option<&'r [u8]>> {
    let length = read_varint(buf, cursor)?;
    if length == -1 {
        return Some(None);
    }
    let length = usize::try_from(length).ok()?;
    let end = cursor.checked_add(length).filter(|end| *end <= buf.len())?;
    let bytes = &buf[*cursor..end];
    *cursor = end;
    Some(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, OwnedHeader, OwnedRecord};
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = OwnedRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            0i64..1_000_000,
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..10),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
                ),
                0..3,
            ),
        )
            .prop_map(|(key, value, timestamp, headers)| OwnedRecord {
                key,
                value,
                timestamp,
                headers: headers
                    .into_iter()
                    .map(|(key, value)| OwnedHeader { key, value })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn builder_and_decoder_agree(
            records in proptest::collection::vec(arb_record(), 1..40),
            codec_id in 0u8..5,
        ) {
            let codec = Compression::from_id(codec_id).unwrap();
            let mut builder = BatchBuilder::new(codec);
            for record in &records {
                builder.push(record.clone());
            }
            let bytes = builder.build().unwrap();
            let batch = RecordBatch::parse(&bytes).unwrap();
            batch.validate_from_producer().unwrap();
            prop_assert_eq!(batch.compression().unwrap(), codec);
            let decoded = batch.records(1 << 24).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.offset, i as i64);
                prop_assert_eq!(got.timestamp, want.timestamp);
                prop_assert_eq!(got.key, want.key.as_deref());
                prop_assert_eq!(got.value, want.value.as_deref());
                let headers: Vec<_> = want
                    .headers
                    .iter()
                    .map(|h| Header { key: &h.key, value: h.value.as_deref() })
                    .collect();
                prop_assert_eq!(&got.headers, &headers);
            }
        }

        #[test]
        fn arbitrary_payload_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut builder = BatchBuilder::new(Compression::None);
            builder.push(OwnedRecord::new(None, Some(vec![1]), 0));
            let mut bytes = builder.build().unwrap();
            bytes.truncate(crate::HEADER_SIZE);
            bytes.extend_from_slice(&payload);
            let length = (bytes.len() - crate::LOG_OVERHEAD) as i32;
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            let batch = RecordBatch::parse(&bytes).unwrap();
            let _ = batch.records(1 << 20).map(|records| records.iter().count());
        }
    }

    #[test]
    fn control_record_type_comes_from_the_key() {
        let record = Record {
            offset: 0,
            timestamp: 0,
            key: Some(&[0, 0, 0, 1]),
            value: Some(&[0, 0, 0, 0, 0, 0]),
            headers: vec![],
        };
        assert_eq!(record.control_type(), Some(ControlRecordType::Commit));
    }
}
