//! One pass over a record set before it is appended (Kafka's LogValidator → LogAppendInfo).
//!
//! [`ValidatedRecords::validate`] walks the batch headers of a producer's record set once,
//! checks each batch (structure, CRC, one offset per record) and keeps a [`BatchSummary`] per
//! batch. Everything later in the append uses the summaries instead of walking the bytes
//! again: the origin checks of the broker's partition layer (control batches), the size
//! checks, the idempotent-producer check and record, the segment roll decision, offset
//! patching and the segment's index entries.
//!
//! Invariants of a [`ValidatedRecords`] (asserted at construction): at least one batch; the
//! summaries tile the bytes exactly, in order (each batch starts where the previous one
//! ended, the last one ends at the end); `relative_base` of each batch is the sum of the
//! offsets of the batches before it; every batch holds at least one offset.

use sluice_record::{BatchHeader, Batches, NO_PRODUCER_ID, RecordBatch};

use crate::{LogError, Result};

/// What the append path needs to know about one batch, read from its header once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Byte position of the batch within its record set.
    pub position: u32,
    /// Bytes of the whole batch, log overhead included.
    pub size: u32,
    /// Offset of the batch's first record relative to the record set's first offset.
    pub relative_base: i64,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub control: bool,
}

impl BatchSummary {
    /// The summary of a batch found at `position` (recovery reads them from stored headers).
    pub fn from_header(position: u32, relative_base: i64, header: &BatchHeader<'_>) -> Self {
        BatchSummary {
            position,
            size: header.size() as u32,
            relative_base,
            last_offset_delta: header.last_offset_delta(),
            max_timestamp: header.max_timestamp(),
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
            control: header.is_control(),
        }
    }

    /// Offsets the batch takes: one per record for a producer's batch.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.position as usize..self.position as usize + self.size as usize
    }
}

/// A producer's record set that passed validation, with one summary per batch. Only a
/// validated record set can be appended ([`crate::Log::append_validated`]).
#[derive(Debug)]
pub struct ValidatedRecords<'a> {
    bytes: &'a mut [u8],
    batches: Vec<BatchSummary>,
    offset_count: i64,
    largest_batch: u32,
}

impl<'a> ValidatedRecords<'a> {
    /// Validates every batch as a producer's (structure, CRC, at least one record, one offset
    /// per record) in one walk of the headers. Nothing is decompressed.
    pub fn validate(bytes: &'a mut [u8]) -> Result<Self> {
        let mut batches = Vec::with_capacity(1);
        let mut offset_count = 0i64;
        let mut largest_batch = 0u32;
        let mut iter = Batches::new(bytes);
        loop {
            let position = iter.position();
            let Some(batch) = iter.next() else { break };
            let batch: RecordBatch<'_> = batch?;
            batch.validate_from_producer()?;
            let position = u32::try_from(position).map_err(|_| LogError::EmptyRecordSet)?;
            let summary = BatchSummary::from_header(position, offset_count, &batch.header());
            offset_count += summary.offset_count();
            largest_batch = largest_batch.max(summary.size);
            batches.push(summary);
        }
        if batches.is_empty() {
            return Err(LogError::EmptyRecordSet);
        }
        let validated = ValidatedRecords {
            bytes,
            batches,
            offset_count,
            largest_batch,
        };
        validated.assert_invariants();
        Ok(validated)
    }

    fn assert_invariants(&self) {
        assert!(
            !self.batches.is_empty(),
            "a validated record set has a batch"
        );
        let mut end = 0u32;
        let mut offsets = 0i64;
        for batch in &self.batches {
            assert_eq!(batch.position, end, "batch summaries tile the record set");
            assert_eq!(
                batch.relative_base, offsets,
                "relative bases are cumulative"
            );
            assert!(
                batch.offset_count() >= 1,
                "a producer's batch has an offset"
            );
            end += batch.size;
            offsets += batch.offset_count();
        }
        assert_eq!(end as usize, self.bytes.len(), "summaries cover every byte");
        assert_eq!(offsets, self.offset_count);
    }

    pub fn batches(&self) -> &[BatchSummary] {
        &self.batches
    }

    /// Whether any batch is a control batch (transaction markers; never a client's to write).
    pub fn has_control_batch(&self) -> bool {
        self.batches.iter().any(|b| b.control)
    }

    /// Offsets the record set takes.
    pub fn offset_count(&self) -> i64 {
        self.offset_count
    }

    /// Size of the largest batch (checked against `max.message.bytes`).
    pub fn largest_batch(&self) -> usize {
        self.largest_batch as usize
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// One batch, parsed (no CRC check: validation did it).
    pub(crate) fn batch(&self, summary: &BatchSummary) -> Result<RecordBatch<'_>> {
        Ok(RecordBatch::parse(&self.bytes[summary.range()])?)
    }

    /// The bytes and summaries for patching: both change together (LogAppendTime rewrites
    /// the max timestamp the index records).
    pub(crate) fn parts_mut(&mut self) -> (&mut [u8], &mut [BatchSummary]) {
        (self.bytes, &mut self.batches)
    }
}

/// Batches a follower copies from its leader, offsets and leader epochs as the leader wrote
/// them. Checked for structure and CRC (not as a producer's: a compacted batch may have
/// fewer records than offsets). Invariants (asserted at construction): at least one batch;
/// the summaries tile the bytes; base offsets strictly increase, each batch starting after
/// the previous one ended (compaction may leave gaps); `relative_base` is the batch's base
/// offset minus the first batch's.
#[derive(Debug)]
pub struct ReplicatedRecords<'a> {
    bytes: &'a [u8],
    batches: Vec<BatchSummary>,
    /// The leader epoch each batch was written in, by batch.
    epochs: Vec<i32>,
    first_offset: i64,
    next_offset: i64,
}

impl<'a> ReplicatedRecords<'a> {
    /// Validates whole batches as fetched from a leader. A trailing partial batch is an
    /// error: the leader sends whole batches only.
    pub fn validate(bytes: &'a [u8]) -> Result<Self> {
        let mut batches = Vec::new();
        let mut epochs = Vec::new();
        let mut first_offset = None;
        let mut next_offset = i64::MIN;
        let mut position = 0usize;
        while position < bytes.len() {
            let rest = &bytes[position..];
            let batch = RecordBatch::parse(rest)?;
            batch.validate()?;
            let header = batch.header();
            let size = header.size();
            let base = batch.base_offset();
            if header.last_offset_delta() < 0 {
                return Err(LogError::OutOfOrder(format!(
                    "a batch at offset {base} with last offset delta {}",
                    header.last_offset_delta()
                )));
            }
            if base < next_offset || base < 0 {
                return Err(LogError::OutOfOrder(format!(
                    "a batch at offset {base} after one ending at {}",
                    next_offset - 1
                )));
            }
            let first = *first_offset.get_or_insert(base);
            let position32 = u32::try_from(position).map_err(|_| LogError::EmptyRecordSet)?;
            let summary = BatchSummary::from_header(position32, base - first, &header);
            next_offset = base + summary.offset_count();
            epochs.push(batch.partition_leader_epoch());
            batches.push(summary);
            position += size;
        }
        let Some(first_offset) = first_offset else {
            return Err(LogError::EmptyRecordSet);
        };
        let records = ReplicatedRecords {
            bytes,
            batches,
            epochs,
            first_offset,
            next_offset,
        };
        records.assert_invariants();
        Ok(records)
    }

    fn assert_invariants(&self) {
        assert!(
            !self.batches.is_empty(),
            "a replicated record set has a batch"
        );
        assert_eq!(self.batches.len(), self.epochs.len());
        let mut end = 0u32;
        let mut next = self.first_offset;
        for batch in &self.batches {
            assert_eq!(batch.position, end, "batch summaries tile the record set");
            assert!(batch.offset_count() >= 1, "a batch holds an offset");
            let base = self.first_offset + batch.relative_base;
            assert!(base >= next, "base offsets increase");
            next = base + batch.offset_count();
            end += batch.size;
        }
        assert_eq!(end as usize, self.bytes.len(), "summaries cover every byte");
        assert_eq!(next, self.next_offset);
    }

    pub fn batches(&self) -> &[BatchSummary] {
        &self.batches
    }

    pub fn epochs(&self) -> &[i32] {
        &self.epochs
    }

    /// The first batch's base offset.
    pub fn first_offset(&self) -> i64 {
        self.first_offset
    }

    /// The offset after the last batch.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_record::{BatchBuilder, Compression, OwnedRecord};

    fn batch(records: usize, producer: i64) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Compression::None);
        if producer >= 0 {
            builder = builder.producer(producer, 0, 7);
        }
        for i in 0..records {
            builder.push(OwnedRecord::new(
                None,
                Some(vec![b'x'; i + 1]),
                1_000 + i as i64,
            ));
        }
        builder.build().unwrap().to_vec()
    }

    #[test]
    fn one_pass_summarises_every_batch() {
        let mut bytes = batch(3, -1);
        let first = bytes.len() as u32;
        bytes.extend(batch(2, 42));
        let validated = ValidatedRecords::validate(&mut bytes).unwrap();
        let b = validated.batches();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].position, b[0].relative_base, b[0].offset_count()),
            (0, 0, 3)
        );
        assert_eq!(
            (b[1].position, b[1].relative_base, b[1].offset_count()),
            (first, 3, 2)
        );
        assert_eq!(b[1].producer_id, 42);
        assert_eq!(b[1].base_sequence, 7);
        assert_eq!(b[0].max_timestamp, 1_002);
        assert_eq!(validated.offset_count(), 5);
        assert!(!validated.has_control_batch());
    }

    #[test]
    fn a_corrupt_or_empty_set_is_refused() {
        assert!(matches!(
            ValidatedRecords::validate(&mut []),
            Err(LogError::EmptyRecordSet)
        ));
        let mut bytes = batch(2, -1);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            ValidatedRecords::validate(&mut bytes),
            Err(LogError::InvalidBatch(_))
        ));
    }
}
