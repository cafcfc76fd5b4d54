//! Rewriting a stored batch with some of its records left out, as log compaction does.
//!
//! The rewritten batch keeps what identifies the original in the log and to producers: base
//! offset, last offset delta (so the batch still spans the same offsets and a producer's
//! last sequence, `base_sequence + last_offset_delta`, is unchanged), partition leader
//! epoch, producer id, epoch and base sequence, the transactional and control flags, the
//! timestamp type and the codec. Surviving records keep their offsets and timestamps.
//!
//! A delete horizon (KIP-534) is stored as Kafka stores it: the `DELETE_HORIZON` attribute
//! flag is set and `baseTimestamp` holds the horizon, with record timestamp deltas taken
//! from it, so that readers unaware of the flag still compute every record's timestamp.

use crate::batch::DELETE_HORIZON_FLAG;
use crate::builder::{BatchFields, encode_batch, encode_record};
use crate::{BatchHeader, Compression, Record, RecordError, TimestampType};

/// Encodes a batch holding `records`, a subset of the records of the batch `original`, in
/// their original order. With `delete_horizon` the batch carries that horizon; without, it
/// carries none.
///
/// An empty `records` gives the empty batch Kafka writes to keep a producer's sequence
/// when compaction removed all its records: no payload, no codec, both timestamps set to
/// the original's max timestamp.
pub fn rebuild_batch(
    original: &BatchHeader<'_>,
    records: &[Record<'_>],
    delete_horizon: Option<i64>,
) -> Result<Vec<u8>, RecordError> {
    let codec = original.compression()?;
    let mut attributes = original.attributes() & !DELETE_HORIZON_FLAG;
    let log_append_time = original.timestamp_type() == TimestampType::LogAppendTime;
    if records.is_empty() {
        attributes &= !0x07; // no codec for an empty payload
        let timestamp = original.max_timestamp();
        return Ok(encode_batch(
            &fields(original, attributes, timestamp, timestamp, 0),
            &[],
        ));
    }
    let max_timestamp = if log_append_time {
        original.max_timestamp()
    } else {
        records.iter().map(|r| r.timestamp).max().unwrap_or(-1)
    };
    let base_timestamp = match delete_horizon {
        Some(horizon) => {
            attributes |= DELETE_HORIZON_FLAG;
            horizon
        }
        None if original.has_delete_horizon() => {
            records.iter().map(|r| r.timestamp).min().unwrap_or(-1)
        }
        None => original.base_timestamp(),
    };
    let mut payload = Vec::new();
    let mut body = Vec::new();
    for record in records {
        let offset_delta = record.offset - original.base_offset();
        debug_assert!((0..=i64::from(original.last_offset_delta())).contains(&offset_delta));
        encode_record(
            &mut payload,
            &mut body,
            record.timestamp.wrapping_sub(base_timestamp),
            offset_delta as i32,
            record.key,
            record.value,
            record.headers.iter().map(|h| (h.key, h.value)),
        );
    }
    let payload = match codec {
        Compression::None => payload,
        codec => codec.compress(&payload)?,
    };
    Ok(encode_batch(
        &fields(
            original,
            attributes,
            base_timestamp,
            max_timestamp,
            records.len() as i32,
        ),
        &payload,
    ))
}

fn fields(
    original: &BatchHeader<'_>,
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    record_count: i32,
) -> BatchFields {
    BatchFields {
        base_offset: original.base_offset(),
        partition_leader_epoch: original.partition_leader_epoch(),
        attributes,
        last_offset_delta: original.last_offset_delta(),
        base_timestamp,
        max_timestamp,
        producer_id: original.producer_id(),
        producer_epoch: original.producer_epoch(),
        base_sequence: original.base_sequence(),
        record_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, OwnedRecord, RecordBatch, set_base_offset};

    fn batch(codec: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(codec).producer(7, 2, 40);
        for i in 0..5i64 {
            let value = (i != 3).then(|| format!("v{i}").into_bytes());
            builder.push(OwnedRecord::new(
                Some(format!("k{i}").into_bytes()),
                value,
                1_000 + i,
            ));
        }
        let mut bytes = builder.build().unwrap();
        set_base_offset(&mut bytes, 100);
        bytes
    }

    #[test]
    fn rebuilt_batch_keeps_identity_and_surviving_records() {
        for codec in Compression::ALL {
            let bytes = batch(codec);
            let original = RecordBatch::parse(&bytes).unwrap();
            let records = original.records(1 << 20).unwrap();
            let kept: Vec<Record<'_>> = records.iter().filter(|r| r.offset % 2 == 1).collect();
            let rebuilt = rebuild_batch(&original.header(), &kept, None).unwrap();
            let batch = RecordBatch::parse(&rebuilt).unwrap();
            batch.validate().unwrap();
            let header = batch.header();
            assert_eq!(header.base_offset(), 100);
            assert_eq!(header.last_offset(), 104);
            assert_eq!(header.record_count(), 2);
            assert_eq!(header.compression().unwrap(), codec);
            assert_eq!(
                (
                    header.producer_id(),
                    header.producer_epoch(),
                    header.base_sequence()
                ),
                (7, 2, 40)
            );
            assert_eq!(header.max_timestamp(), 1_003);
            let decoded = batch.records(1 << 20).unwrap();
            let got: Vec<_> = decoded.iter().collect();
            assert_eq!(got, kept);
        }
    }

    #[test]
    fn delete_horizon_is_flagged_and_timestamps_survive() {
        let bytes = batch(Compression::Lz4);
        let original = RecordBatch::parse(&bytes).unwrap();
        let records = original.records(1 << 20).unwrap();
        let all: Vec<Record<'_>> = records.iter().collect();
        let with_horizon = rebuild_batch(&original.header(), &all, Some(9_999_999)).unwrap();
        let batch = RecordBatch::parse(&with_horizon).unwrap();
        assert!(batch.header().has_delete_horizon());
        assert_eq!(batch.header().base_timestamp(), 9_999_999);
        let decoded = batch.records(1 << 20).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), all);

        // Rewriting without a horizon clears the flag and restores a record timestamp base.
        let cleared = rebuild_batch(&batch.header(), &all[..2], None).unwrap();
        let cleared = RecordBatch::parse(&cleared).unwrap();
        assert!(!cleared.header().has_delete_horizon());
        assert_eq!(cleared.header().base_timestamp(), 1_000);
        let decoded = cleared.records(1 << 20).unwrap();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), all[..2]);
    }

    #[test]
    fn empty_rebuild_keeps_the_producer_sequence_span() {
        let bytes = batch(Compression::Gzip);
        let original = RecordBatch::parse(&bytes).unwrap();
        let empty = rebuild_batch(&original.header(), &[], None).unwrap();
        let batch = RecordBatch::parse(&empty).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.header().record_count(), 0);
        assert_eq!(batch.header().last_offset(), 104);
        assert_eq!(batch.header().base_sequence(), 40);
        assert_eq!(batch.header().compression().unwrap(), Compression::None);
        assert!(batch.records(1 << 20).unwrap().is_empty());
    }
}
