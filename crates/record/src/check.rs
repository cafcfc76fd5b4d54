//! What a broker checks of a producer's records before it stores them (the record-level half
//! of Kafka's LogValidator; the header and CRC half is [`RecordBatch::validate`]).
//!
//! One walk over the records of a batch, decompressing a compressed batch within a bound:
//! - every record parses to exactly its declared length (key, value and headers included),
//!   and nothing trails the last record;
//! - the records number `recordCount`, and their offset deltas run 0, 1, 2, ... so the last
//!   one is `lastOffsetDelta` (a producer's batch has no gaps);
//! - the topic's rules: a key on every record of a compacted topic (control batches are
//!   exempt), and CreateTime timestamps within the accepted range.
//!
//! Nothing is allocated except the decompressed copy of a compressed batch.

use crate::varint::{read_varint, read_varlong};

/// A zig-zag varint, with the one-byte case (every small length, delta and count) first:
/// this loop runs for every record a producer sends.
#[inline(always)]
fn varint(buf: &[u8], cursor: &mut usize) -> Option<i32> {
    let first = *buf.get(*cursor)?;
    if first < 0x80 {
        *cursor += 1;
        return Some(i32::from(first >> 1) ^ -i32::from(first & 1));
    }
    // Two bytes: lengths up to 8 KiB (a record of a few hundred bytes, its value).
    if let Some(&second) = buf.get(*cursor + 1)
        && second < 0x80
    {
        *cursor += 2;
        let raw = i32::from(first & 0x7f) | (i32::from(second) << 7);
        return Some((raw >> 1) ^ -(raw & 1));
    }
    read_varint(buf, cursor)
}

#[inline(always)]
fn varlong(buf: &[u8], cursor: &mut usize) -> Option<i64> {
    let byte = *buf.get(*cursor)?;
    if byte < 0x80 {
        *cursor += 1;
        return Some(i64::from(byte >> 1) ^ -i64::from(byte & 1));
    }
    read_varlong(buf, cursor)
}
use crate::{Compression, RecordBatch, RecordError, TimestampType};

/// The checks that depend on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    /// Every record needs a key (`cleanup.policy` includes compact).
    pub require_keys: bool,
    /// Accepted CreateTime timestamps, inclusive (`message.timestamp.before.max.ms` and
    /// `message.timestamp.after.max.ms` around the broker's clock); `None` accepts any.
    pub timestamps: Option<(i64, i64)>,
    /// Bound on the decompressed size of one batch.
    pub max_decompressed: usize,
}

impl RecordBatch<'_> {
    /// Walks every record once and checks it (see the module documentation).
    pub fn check_records(&self, rules: &RecordRules) -> Result<(), RecordError> {
        let decompressed;
        let data: &[u8] = match self.compression()? {
            Compression::None => self.records_payload(),
            codec => {
                decompressed = codec.decompress(self.records_payload(), rules.max_decompressed)?;
                &decompressed
            }
        };
        let require_keys = rules.require_keys && !self.is_control();
        let timestamps = match self.timestamp_type() {
            TimestampType::CreateTime => rules.timestamps,
            TimestampType::LogAppendTime => None,
        };
        let base_timestamp = self.base_timestamp();
        let mut cursor = 0usize;
        let mut index = 0usize;
        while cursor < data.len() {
            let malformed = |reason| RecordError::MalformedRecord { index, reason };
            let length = varint(data, &mut cursor).ok_or(malformed("bad length"))?;
            let length = usize::try_from(length).map_err(|_| malformed("negative length"))?;
            let end = cursor
                .checked_add(length)
                .filter(|end| *end <= data.len())
                .ok_or(malformed("length past end of batch"))?;
            let body = &data[..end];
            cursor += 1; // attributes, unused
            let timestamp_delta = varlong(body, &mut cursor).ok_or(malformed("bad timestamp"))?;
            let offset_delta = varint(body, &mut cursor).ok_or(malformed("bad offset delta"))?;
            if i64::from(offset_delta) != index as i64 {
                return Err(RecordError::OffsetDeltaMismatch {
                    index,
                    found: offset_delta,
                });
            }
            if let Some((low, high)) = timestamps {
                let timestamp = base_timestamp.wrapping_add(timestamp_delta);
                if timestamp < low || timestamp > high {
                    return Err(RecordError::TimestampOutOfRange {
                        index,
                        timestamp,
                        low,
                        high,
                    });
                }
            }
            let key = skip_bytes(body, &mut cursor).ok_or(malformed("bad key"))?;
            if require_keys && !key {
                return Err(RecordError::MissingKey { index });
            }
            skip_bytes(body, &mut cursor).ok_or(malformed("bad value"))?;
            let headers = varint(body, &mut cursor).ok_or(malformed("bad header count"))?;
            let headers =
                usize::try_from(headers).map_err(|_| malformed("negative header count"))?;
            for _ in 0..headers {
                let key = skip_bytes(body, &mut cursor).ok_or(malformed("bad header key"))?;
                if !key {
                    return Err(malformed("null header key"));
                }
                skip_bytes(body, &mut cursor).ok_or(malformed("bad header value"))?;
            }
            if cursor != end {
                return Err(malformed("record length does not match its fields"));
            }
            index += 1;
        }
        if index != self.record_count().max(0) as usize {
            return Err(RecordError::RecordCountMismatch {
                declared: self.record_count(),
                found: index,
            });
        }
        Ok(())
    }
}

/// Skips a varint-length-prefixed byte string; `Some(false)` for a null one (length -1).
#[inline(always)]
fn skip_bytes(buf: &[u8], cursor: &mut usize) -> Option<bool> {
    let length = varint(buf, cursor)?;
    if length == -1 {
        return Some(false);
    }
    let length = usize::try_from(length).ok()?;
    *cursor = cursor.checked_add(length).filter(|end| *end <= buf.len())?;
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, OwnedHeader, OwnedRecord, offsets};

    const ANY: RecordRules = RecordRules {
        require_keys: false,
        timestamps: None,
        max_decompressed: 1 << 20,
    };

    fn batch(codec: Compression, records: Vec<OwnedRecord>) -> Vec<u8> {
        let mut builder = BatchBuilder::new(codec);
        for record in records {
            builder.push(record);
        }
        builder.build().unwrap()
    }

    fn record(key: Option<&str>, timestamp: i64) -> OwnedRecord {
        let mut r = OwnedRecord::new(
            key.map(|k| k.as_bytes().to_vec()),
            Some(b"v".to_vec()),
            timestamp,
        );
        r.headers.push(OwnedHeader {
            key: b"h".to_vec(),
            value: Some(b"x".to_vec()),
        });
        r
    }

    #[test]
    fn well_formed_batches_pass_in_every_codec() {
        for codec in Compression::ALL {
            let bytes = batch(codec, vec![record(Some("a"), 10), record(None, 20)]);
            let parsed = RecordBatch::parse(&bytes).unwrap();
            parsed.check_records(&ANY).unwrap();
            let keys = RecordRules {
                require_keys: true,
                ..ANY
            };
            assert_eq!(
                parsed.check_records(&keys),
                Err(RecordError::MissingKey { index: 1 }),
                "{codec:?}"
            );
            let window = RecordRules {
                timestamps: Some((0, 15)),
                ..ANY
            };
            assert!(matches!(
                parsed.check_records(&window),
                Err(RecordError::TimestampOutOfRange {
                    index: 1,
                    timestamp: 20,
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_count_that_lies_or_trailing_bytes_are_refused() {
        let mut bytes = batch(
            Compression::None,
            vec![record(Some("a"), 1), record(Some("b"), 2)],
        );
        // Claim three records (header field, then fix the CRC as a malicious client would).
        bytes[offsets::RECORD_COUNT..offsets::RECORD_COUNT + 4]
            .copy_from_slice(&3i32.to_be_bytes());
        crate::set_base_sequence(&mut bytes, -1);
        let parsed = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(
            parsed.check_records(&ANY),
            Err(RecordError::RecordCountMismatch {
                declared: 3,
                found: 2
            })
        );
        // One record's bytes followed by garbage that is not a record.
        let mut bytes = batch(Compression::None, vec![record(Some("a"), 1)]);
        bytes.extend_from_slice(&[0x02, 0x00]);
        let length = (bytes.len() - 12) as i32;
        bytes[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4]
            .copy_from_slice(&length.to_be_bytes());
        crate::set_base_sequence(&mut bytes, -1);
        let parsed = RecordBatch::parse(&bytes).unwrap();
        assert!(matches!(
            parsed.check_records(&ANY),
            Err(RecordError::MalformedRecord { index: 1, .. })
        ));
    }

    fn arb_batch() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // Value sizes that make one-, two- and three-byte length varints.
        let value = prop_oneof![0usize..60, 60usize..9000, 9000usize..20_000];
        let record = (
            proptest::option::of(0usize..70),
            value,
            0i64..1_000_000,
            0usize..3,
        );
        (proptest::collection::vec(record, 1..20), 0usize..5).prop_map(|(records, codec)| {
            let mut builder = BatchBuilder::new(Compression::ALL[codec]);
            for (key, value, timestamp, headers) in records {
                let mut r = OwnedRecord::new(
                    key.map(|k| vec![b'k'; k]),
                    Some(vec![b'v'; value]),
                    timestamp,
                );
                for h in 0..headers {
                    r.headers.push(OwnedHeader {
                        key: vec![b'h'; h + 1],
                        value: None,
                    });
                }
                builder.push(r);
            }
            builder.build().unwrap()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// The walk agrees with the decoder: every batch the builder makes passes, and after
        /// random damage (CRC repaired, as a hostile client would) anything the walk accepts
        /// decodes to `recordCount` records at contiguous offsets.
        #[test]
        fn the_walk_accepts_what_decodes_in_order(
            bytes in arb_batch(),
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 1u8..=255), 0..4),
        ) {
            let parsed = RecordBatch::parse(&bytes).unwrap();
            proptest::prop_assert_eq!(parsed.check_records(&ANY), Ok(()));
            let mut damaged = bytes.clone();
            let payload = offsets::RECORDS..damaged.len();
            for (at, mask) in flips {
                let i = payload.start + at.index(payload.len());
                damaged[i] ^= mask;
            }
            crate::set_base_sequence(&mut damaged, -1);
            let parsed = RecordBatch::parse(&damaged).unwrap();
            if parsed.check_records(&ANY).is_ok() {
                let records = parsed.records(1 << 24).expect("a checked batch decodes");
                let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
                let expected: Vec<i64> = (0..i64::from(parsed.record_count())).map(|d| parsed.base_offset() + d).collect();
                proptest::prop_assert_eq!(offsets, expected);
            }
        }
    }
}
