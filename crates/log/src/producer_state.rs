//! Idempotent producers: per partition, what each producer last wrote, so that a retried
//! batch is recognised and answered with its original offsets instead of being appended
//! twice, and a batch out of sequence is refused.
//!
//! Rules (Kafka's, for producers without transactions):
//! - a batch with `producerId = -1` is not tracked;
//! - an epoch older than the producer's current one: INVALID_PRODUCER_EPOCH;
//! - a newer epoch starts over: its first batch must have sequence 0;
//! - same epoch: a batch equal (first and last sequence) to one of the last five is a
//!   duplicate; otherwise its first sequence must follow the last one (wrapping at
//!   `i32::MAX`), else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - a producer the partition knows nothing about (new, expired, or its batches removed by
//!   retention or DeleteRecords) may start at any sequence. Kafka has done so since 2.5
//!   (KIP-360) instead of answering UNKNOWN_PRODUCER_ID, and current clients rely on it: the
//!   Java client 4.x retries UNKNOWN_PRODUCER_ID forever when the answer carries no log
//!   start offset.
//!
//! A producer is forgotten once `producer.id.expiration.ms` passes after its last write as
//! the broker's clock saw it (Kafka measures from the batch's own timestamp, which expires
//! a producer that writes old timestamps, such as a backfill, immediately). Batches read
//! back from the log at recovery count as written at the time of recovery.
//!
//! State is rebuilt at startup from batch headers, starting from the newest snapshot
//! (`<offset>.snapshot`, written at every segment roll and at clean shutdown) so that recovery
//! does not rescan the whole log. Snapshot layout (Kafka's version 1): version int16, crc32c
//! uint32 of what follows, entry count int32, then entries of producer_id int64, epoch
//! int16, last_sequence int32, last_offset int64, offset_delta int32, timestamp int64,
//! coordinator_epoch int32, current_txn_first_offset int64. Kafka writes one entry per
//! producer (its last batch); Sluice writes one per remembered batch, oldest first, so that
//! all five are still recognised after a restart (a reader keeping the last entry per
//! producer sees what Kafka would have written).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use sluice_record::NO_PRODUCER_ID;

use crate::record_set::BatchSummary;

/// How many recent batches per producer are kept for duplicate detection.
pub const RECENT_BATCHES: usize = 5;
const SNAPSHOT_VERSION: i16 = 1;
const ENTRY_SIZE: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";

/// A batch of an idempotent producer, as far as deduplication needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`RECENT_BATCHES`].
    pub batches: VecDeque<ProducerBatch>,
}

impl ProducerBatch {
    /// The sequences of `batch`, before offsets are assigned (offsets -1, timestamp its max).
    pub(crate) fn pending(batch: &BatchSummary) -> Self {
        let count = batch.last_offset_delta.saturating_add(1).max(1);
        ProducerBatch {
            first_sequence: batch.base_sequence,
            last_sequence: sequence_after(batch.base_sequence, count),
            first_offset: -1,
            last_offset: -1,
            timestamp: batch.max_timestamp,
        }
    }
}

impl ProducerEntry {
    fn last(&self) -> Option<&ProducerBatch> {
        self.batches.back()
    }
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: sequence {got} does not follow {last}")]
    OutOfOrder {
        producer_id: i64,
        got: i32,
        last: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than {current}")]
    InvalidEpoch {
        producer_id: i64,
        got: i16,
        current: i16,
    },
}

/// The outcome of checking one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or new: append it.
    Append,
    /// Already in the log: answer with this batch's offsets, append nothing.
    Duplicate(ProducerBatch),
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn sequence_after(sequence: i32, count: i32) -> i32 {
    ((i64::from(sequence) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

/// All producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Producer id → last offset of its latest batch (the batch compaction must keep).
    pub fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(id, entry)| entry.last().map(|b| (*id, b.last_offset)))
            .collect()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer and its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
    }

    /// Checks a batch (offsets not yet assigned) against the state, as it would be after the
    /// `pending` batches of the same record set.
    pub fn check(
        &self,
        batch: &BatchSummary,
        pending: &[(i64, i16, ProducerBatch)],
    ) -> Result<Check, SequenceError> {
        let producer_id = batch.producer_id;
        if producer_id == NO_PRODUCER_ID {
            return Ok(Check::Append);
        }
        let epoch = batch.producer_epoch;
        let first = batch.base_sequence;
        let last = sequence_after(first, batch.last_offset_delta.saturating_add(1).max(1));
        // What this request already added for the producer comes after the stored state.
        let earlier = pending.iter().rev().find(|(id, _, _)| *id == producer_id);
        let (current_epoch, last_batch, recent) = match (earlier, self.producers.get(&producer_id))
        {
            (Some((_, e, batch)), _) => (Some(*e), Some(*batch), None),
            (None, Some(entry)) => (Some(entry.epoch), entry.last().copied(), Some(entry)),
            (None, None) => (None, None, None),
        };
        let Some(current_epoch) = current_epoch else {
            return Ok(Check::Append);
        };
        if epoch < current_epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id,
                got: epoch,
                current: current_epoch,
            });
        }
        if epoch > current_epoch {
            return if first == 0 {
                Ok(Check::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    got: first,
                    last: -1,
                })
            };
        }
        if let Some(entry) = recent
            && let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_sequence == first && b.last_sequence == last)
        {
            return Ok(Check::Duplicate(*dup));
        }
        let last_seen = last_batch.map_or(-1, |b| b.last_sequence);
        if first != next_sequence(last_seen) {
            return Err(SequenceError::OutOfOrder {
                producer_id,
                got: first,
                last: last_seen,
            });
        }
        Ok(Check::Append)
    }

    /// Records an appended (or recovered) batch whose first offset is `base_offset`, written
    /// at `now_ms` by the broker's clock.
    pub fn record(&mut self, batch: &BatchSummary, base_offset: i64, now_ms: i64) {
        if !batch.is_idempotent() {
            return;
        }
        let mut recorded = ProducerBatch::pending(batch);
        recorded.first_offset = base_offset;
        recorded.last_offset = base_offset + i64::from(batch.last_offset_delta);
        recorded.timestamp = now_ms;
        self.record_batch(batch.producer_id, batch.producer_epoch, recorded);
    }

    pub fn record_batch(&mut self, producer_id: i64, epoch: i16, batch: ProducerBatch) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > RECENT_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Forgets producers whose last batch lies below `log_start_offset` (retention or
    /// DeleteRecords removed it) or is older than `expire_before_ms`.
    pub fn evict(&mut self, log_start_offset: i64, expire_before_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.last().is_some_and(|b| {
                b.last_offset >= log_start_offset && b.timestamp >= expire_before_ms
            })
        });
        before - self.producers.len()
    }

    /// Kafka's snapshot layout (version 1).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let count: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let mut entries = Vec::with_capacity(4 + count * ENTRY_SIZE);
        entries.extend_from_slice(&(count as i32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let entry = &self.producers[id];
            for batch in &entry.batches {
                entries.extend_from_slice(&id.to_be_bytes());
                entries.extend_from_slice(&entry.epoch.to_be_bytes());
                entries.extend_from_slice(&batch.last_sequence.to_be_bytes());
                entries.extend_from_slice(&batch.last_offset.to_be_bytes());
                entries.extend_from_slice(
                    &((batch.last_offset - batch.first_offset) as i32).to_be_bytes(),
                );
                entries.extend_from_slice(&batch.timestamp.to_be_bytes());
                entries.extend_from_slice(&(-1i32).to_be_bytes()); // coordinator epoch
                entries.extend_from_slice(&(-1i64).to_be_bytes()); // no open transaction
            }
        }
        let mut out = Vec::with_capacity(6 + entries.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&entries).to_be_bytes());
        out.extend_from_slice(&entries);
        out
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 10 {
            return Err("snapshot too short".into());
        }
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let stored = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
        let entries = &bytes[6..];
        if crc32c::crc32c(entries) != stored {
            return Err("snapshot CRC mismatch".into());
        }
        let count = i32::from_be_bytes(entries[..4].try_into().expect("4 bytes"));
        let body = &entries[4..];
        if count < 0 || body.len() != count as usize * ENTRY_SIZE {
            return Err("snapshot length does not match its entry count".into());
        }
        let mut states = ProducerStates::default();
        for e in body.chunks_exact(ENTRY_SIZE) {
            let i64_at = |at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes"));
            let i32_at = |at: usize| i32::from_be_bytes(e[at..at + 4].try_into().expect("4 bytes"));
            let producer_id = i64_at(0);
            let epoch = i16::from_be_bytes([e[8], e[9]]);
            let last_sequence = i32_at(10);
            let last_offset = i64_at(14);
            let offset_delta = i32_at(22);
            let timestamp = i64_at(26);
            let count = offset_delta + 1;
            let first_sequence = ((i64::from(last_sequence) - i64::from(offset_delta))
                .rem_euclid(i64::from(i32::MAX) + 1)) as i32;
            let batch = ProducerBatch {
                first_sequence,
                last_sequence,
                first_offset: last_offset - i64::from(count) + 1,
                last_offset,
                timestamp,
            };
            states.record_batch(producer_id, epoch, batch);
        }
        Ok(states)
    }
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"))
}

/// Snapshot offsets in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Vec<i64> {
    let mut offsets: Vec<i64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (stem, suffix) = name.split_once('.')?;
            (suffix == SNAPSHOT_SUFFIX && stem.len() == 20)
                .then(|| stem.parse().ok())
                .flatten()
        })
        .collect();
    offsets.sort_unstable();
    offsets
}

/// Writes a snapshot atomically (temp file, rename). It is not synced: a snapshot is only
/// trusted for data the recovery kept, and a torn one fails its CRC.
pub(crate) fn write_snapshot(
    storage: &dyn crate::Storage,
    dir: &Path,
    offset: i64,
    states: &ProducerStates,
) -> std::io::Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    crate::storage::write_file(storage, &tmp, &states.encode_snapshot())?;
    storage.rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_record::{BatchBuilder, BatchHeader, Compression, OwnedRecord, set_base_offset};

    const TIME: i64 = 1_000;

    fn batch(
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        records: usize,
        base_offset: i64,
    ) -> Vec<u8> {
        let mut builder =
            BatchBuilder::new(Compression::None).producer(producer_id, epoch, sequence);
        for _ in 0..records {
            builder.push(OwnedRecord::new(None, Some(vec![1]), 1000));
        }
        let mut bytes = builder.build().unwrap();
        set_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn header(bytes: &[u8]) -> BatchSummary {
        BatchSummary::from_header(0, 0, &BatchHeader::parse(bytes).unwrap())
    }

    fn record(states: &mut ProducerStates, bytes: &[u8], now_ms: i64) {
        let base = BatchHeader::parse(bytes).unwrap().base_offset();
        states.record(&header(bytes), base, now_ms);
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut states = ProducerStates::default();
        let first = batch(7, 0, 0, 3, 0);
        assert_eq!(states.check(&header(&first), &[]), Ok(Check::Append));
        record(&mut states, &first, TIME);
        // The same batch again is a duplicate carrying its original offsets.
        match states.check(&header(&batch(7, 0, 0, 3, 99)), &[]) {
            Ok(Check::Duplicate(b)) => assert_eq!((b.first_offset, b.last_offset), (0, 2)),
            other => panic!("{other:?}"),
        }
        // A gap.
        assert!(matches!(
            states.check(&header(&batch(7, 0, 5, 1, 3)), &[]),
            Err(SequenceError::OutOfOrder {
                got: 5,
                last: 2,
                ..
            })
        ));
        // The next batch.
        let next = batch(7, 0, 3, 2, 3);
        assert_eq!(states.check(&header(&next), &[]), Ok(Check::Append));
        record(&mut states, &next, TIME);
        // An older epoch is fenced; a newer one must start at 0.
        assert!(matches!(
            states.check(&header(&batch(7, -1, 5, 1, 5)), &[]),
            Err(SequenceError::InvalidEpoch { .. })
        ));
        assert!(matches!(
            states.check(&header(&batch(7, 1, 5, 1, 5)), &[]),
            Err(SequenceError::OutOfOrder { .. })
        ));
        assert_eq!(
            states.check(&header(&batch(7, 1, 0, 1, 5)), &[]),
            Ok(Check::Append)
        );
        // A producer this partition does not know may start anywhere (Kafka since 2.5).
        assert_eq!(
            states.check(&header(&batch(8, 0, 4, 1, 5)), &[]),
            Ok(Check::Append)
        );
        // Non-idempotent batches pass untouched.
        assert_eq!(
            states.check(&header(&batch(-1, -1, -1, 1, 5)), &[]),
            Ok(Check::Append)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..7 {
            record(&mut states, &batch(1, 0, i, 1, i64::from(i)), TIME);
        }
        assert_eq!(states.get(1).unwrap().batches.len(), RECENT_BATCHES);
        assert!(matches!(
            states.check(&header(&batch(1, 0, 6, 1, 0)), &[]),
            Ok(Check::Duplicate(_))
        ));
        assert!(matches!(
            states.check(&header(&batch(1, 0, 1, 1, 0)), &[]),
            Err(SequenceError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut states = ProducerStates::default();
        states.record_batch(
            3,
            0,
            ProducerBatch {
                first_sequence: i32::MAX - 1,
                last_sequence: i32::MAX,
                first_offset: 0,
                last_offset: 1,
                timestamp: 0,
            },
        );
        assert_eq!(
            states.check(&header(&batch(3, 0, 0, 1, 2)), &[]),
            Ok(Check::Append)
        );
    }

    #[test]
    fn snapshots_roundtrip_and_reject_damage() {
        let mut states = ProducerStates::default();
        record(&mut states, &batch(1, 2, 10, 4, 100), TIME);
        record(&mut states, &batch(9, 0, 0, 1, 104), TIME);
        record(&mut states, &batch(1, 2, 14, 2, 105), TIME);
        let bytes = states.encode_snapshot();
        let decoded = ProducerStates::decode_snapshot(&bytes).unwrap();
        assert_eq!(decoded, states);
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(ProducerStates::decode_snapshot(&damaged).is_err());
        assert!(ProducerStates::decode_snapshot(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn eviction_by_log_start_and_age() {
        let mut states = ProducerStates::default();
        record(&mut states, &batch(1, 0, 0, 1, 5), TIME);
        record(&mut states, &batch(2, 0, 0, 1, 50), TIME + 2000);
        assert_eq!(states.evict(10, 0), 1);
        assert!(states.get(1).is_none() && states.get(2).is_some());
        assert_eq!(
            states.evict(0, TIME + 2000),
            0,
            "written at the limit: kept"
        );
        assert_eq!(states.evict(0, TIME + 2001), 1);
        assert!(states.is_empty());
    }
}
