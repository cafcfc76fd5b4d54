//! Loading a partition directory at startup, and recovering it after an unclean stop.
//!
//! After a clean shutdown (marker present) nothing is re-read but the active segment's tail
//! past its last index entry, so restart costs a few reads per partition.
//!
//! After an unclean stop every segment from the one holding the recovery point onwards is
//! re-validated batch by batch: structure, CRC-32C, offsets increasing (and contiguous unless
//! the log is compacted), relative offsets in range. Indexes are rebuilt from what passes.
//! At the first batch that fails, the segment is truncated there and every later segment is
//! deleted, and a warning says what was cut. Data before the recovery point was synced and
//! is trusted, as in Kafka.
//!
//! Not detectable by design: a bit flip in `baseOffset` of a compacted log or in
//! `partitionLeaderEpoch`, the two header fields that the format keeps outside the CRC so a
//! broker can patch them. For non-compacted logs a damaged `baseOffset` breaks contiguity
//! and is caught.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use sluice_record::{BatchHeader, HEADER_SIZE, RecordBatch};

use crate::file_cache::FileCache;
use crate::index::{decode_offset_index, decode_time_index};
use crate::leader_epochs::LeaderEpochs;
use crate::scan::{ScanStep, SegmentScanner};
use crate::segment::{
    ActiveSegment, INDEX_SUFFIX, IndexBuilder, LOG_SUFFIX, RECOVERY_WINDOW, SCAN_WINDOW, Segment,
    SegmentFiles, TIME_INDEX_SUFFIX, parse_segment_file_name, rebuild_indexes,
};
use crate::storage::Storage;
use crate::{LogConfig, Result, TopicPartition};

#[derive(Debug)]
pub(crate) struct LoadedLog {
    pub segments: BTreeMap<i64, Segment>,
    /// The log end offset found (0 when there is no segment).
    pub next_offset: i64,
    /// The leader-epoch history, cut to the log end found.
    pub epochs: LeaderEpochs,
}

/// Rebuilds the leader-epoch history while the segments load: the checkpoint is trusted up
/// to the first batch that recovery re-reads, and from there the batches' own epochs are
/// the history. Without a checkpoint (a directory written before Sluice kept one) each
/// segment's first batch seeds it, which is exact for logs whose epoch only changes at
/// segment boundaries, as every log of a single node does.
struct EpochRecovery {
    epochs: LeaderEpochs,
    seed_from_segments: bool,
    rescanning: bool,
}

impl EpochRecovery {
    fn new(checkpoint: Option<LeaderEpochs>) -> Self {
        EpochRecovery {
            seed_from_segments: checkpoint.is_none(),
            epochs: checkpoint.unwrap_or_default(),
            rescanning: false,
        }
    }

    fn segment_opened(&mut self, file: &File, size: u64) {
        if !self.seed_from_segments || self.rescanning {
            return;
        }
        if let Some(header) = first_batch_header(file, size) {
            self.epochs.assign(header.0, header.1);
        }
    }

    fn batch_read(&mut self, leader_epoch: i32, base_offset: i64) {
        if !self.rescanning {
            self.rescanning = true;
            self.epochs.truncate_from_end(base_offset);
        }
        self.epochs.assign(leader_epoch, base_offset);
    }

    fn finish(mut self, next_offset: i64) -> LeaderEpochs {
        self.epochs.truncate_from_end(next_offset);
        self.epochs
    }
}

/// Result of re-validating one segment.
struct Recovered {
    valid_size: u64,
    next_offset: i64,
    index: IndexBuilder,
    first_timestamp: Option<i64>,
    invalid: Option<(u64, String)>,
}

/// Validates every batch of `file[0..size)` and rebuilds its indexes. `strict` requires
/// offsets to be contiguous (a log that was never compacted).
fn recover_segment(
    file: &File,
    base_offset: i64,
    size: u64,
    interval: u32,
    strict: bool,
    epochs: &mut EpochRecovery,
) -> io::Result<Recovered> {
    let mut index = IndexBuilder::new(base_offset, interval);
    let mut scanner = SegmentScanner::new(file, 0, size, RECOVERY_WINDOW);
    let mut next_offset = base_offset;
    let mut first_timestamp = None;
    let invalid = loop {
        let (info, bytes) = match scanner.next_batch()? {
            ScanStep::Batch(info, bytes) => (info, bytes),
            ScanStep::End => break None,
            ScanStep::Invalid { position, reason } => break Some((position, reason)),
        };
        let verdict = RecordBatch::parse(bytes).and_then(|batch| batch.validate());
        let problem = if let Err(err) = verdict {
            Some(err.to_string())
        } else if strict && info.base_offset != next_offset {
            Some(format!(
                "base offset {} where {next_offset} was expected",
                info.base_offset
            ))
        } else if info.base_offset < next_offset {
            Some(format!(
                "base offset {} goes back below {next_offset}",
                info.base_offset
            ))
        } else if info.last_offset - base_offset > i64::from(u32::MAX) {
            Some(format!(
                "offset {} too far from segment base",
                info.last_offset
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            break Some((info.position, reason));
        }
        index.add(&info);
        epochs.batch_read(info.leader_epoch, info.base_offset);
        first_timestamp.get_or_insert(info.max_timestamp);
        next_offset = info.last_offset + 1;
    };
    index.finish();
    let valid_size = invalid.as_ref().map_or(size, |(position, _)| *position);
    Ok(Recovered {
        valid_size,
        next_offset,
        index,
        first_timestamp,
        invalid,
    })
}

/// Reads the max timestamp of the batch at position 0, if any.
pub(crate) fn first_batch_timestamp(file: &File, size: u64) -> Option<i64> {
    if size < HEADER_SIZE as u64 {
        return None;
    }
    let mut header = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut header, 0).ok()?;
    BatchHeader::parse(&header).ok().map(|h| h.max_timestamp())
}

/// The leader epoch and base offset of the batch at position 0, if any.
fn first_batch_header(file: &File, size: u64) -> Option<(i32, i64)> {
    if size < HEADER_SIZE as u64 {
        return None;
    }
    let mut header = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut header, 0).ok()?;
    BatchHeader::parse(&header)
        .ok()
        .map(|h| (h.partition_leader_epoch(), h.base_offset()))
}

/// Lists segment base offsets and removes leftovers that are safe to remove.
fn list_segments(storage: &dyn Storage, tp: &TopicPartition, dir: &Path) -> io::Result<Vec<i64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((base, suffix)) = parse_segment_file_name(name) else {
            continue;
        };
        match suffix {
            LOG_SUFFIX => logs.push(base),
            INDEX_SUFFIX | TIME_INDEX_SUFFIX => indexes.push((base, entry.path())),
            s if s.ends_with(".deleted") || s.ends_with(".cleaned") || s.ends_with(".tmp") => {
                tracing::info!(partition = %tp, file = name, "removing leftover file");
                storage.remove_file(&entry.path())?;
            }
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            tracing::info!(partition = %tp, file = %path.display(), "removing orphan index");
            storage.remove_file(&path)?;
        }
    }
    Ok(logs)
}

/// Loads the segments of `dir`. See the module documentation for what is re-validated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn load(
    tp: &TopicPartition,
    dir: &Path,
    config: &LogConfig,
    cache: &Arc<FileCache>,
    now: i64,
    clean_shutdown: bool,
    recovery_point: i64,
    cleaned_before: bool,
    epoch_checkpoint: Option<LeaderEpochs>,
) -> Result<LoadedLog> {
    let storage = cache.storage();
    let swapped = crate::cleaner::complete_swaps(storage, tp, dir)?;
    let bases = list_segments(storage, tp, dir)?;
    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        return Ok(LoadedLog {
            segments,
            next_offset: 0,
            epochs: LeaderEpochs::default(),
        });
    }
    let mut epochs = EpochRecovery::new(epoch_checkpoint);
    let interval = config.index_interval_bytes;
    // Compaction leaves offset gaps; a log that was ever cleaned keeps them even if its
    // policy changed since.
    let strict = !(config.cleanup_policy.compact || cleaned_before || swapped);
    let last = bases.len() - 1;
    let first_to_recover = if clean_shutdown {
        bases.len()
    } else {
        bases
            .iter()
            .rposition(|base| *base <= recovery_point)
            .unwrap_or(0)
    };

    let mut next_offset = bases[0];
    for (i, &base) in bases.iter().enumerate() {
        let files = SegmentFiles::new(dir, base, cache.clone());
        let is_active = i == last;
        // Writable where recovery may cut it: the active segment, and every segment it
        // re-reads (a power loss can tear a sealed segment whose sync never came).
        let file = storage.open(
            &files.path(LOG_SUFFIX),
            OpenOptions::new()
                .read(true)
                .write(is_active || i >= first_to_recover),
        )?;
        let size = file.metadata()?.len();
        epochs.segment_opened(&file, size);
        let mut segment = Segment {
            files,
            size,
            max_timestamp: -1,
            roll_start_ms: now,
            active: None,
        };

        let mut truncated = false;
        if i >= first_to_recover {
            let recovered = recover_segment(&file, base, size, interval, strict, &mut epochs)?;
            if let Some((position, reason)) = &recovered.invalid {
                tracing::warn!(
                    partition = %tp,
                    segment = base,
                    position,
                    bytes_truncated = size - position,
                    next_offset = recovered.next_offset,
                    %reason,
                    "recovery truncated the log at the first invalid batch"
                );
                storage.set_len(&file, recovered.valid_size)?;
                truncated = true;
            }
            segment.size = recovered.valid_size;
            segment.max_timestamp = recovered.index.max_timestamp;
            segment.roll_start_ms = recovered.first_timestamp.unwrap_or(now).min(now);
            next_offset = recovered.next_offset;
            if is_active || truncated {
                segment.active = Some(ActiveSegment {
                    file: Arc::new(file),
                    index: recovered.index,
                });
            } else {
                segment
                    .files
                    .write_indexes(&recovered.index.offsets, &recovered.index.times)?;
            }
        } else if is_active {
            let (index, end) =
                resume_active_index(tp, &segment.files, &file, size, interval, &mut epochs)?;
            if end.valid_size < size {
                // Even a clean shutdown left a torn tail: treat this segment as unclean.
                let recovered = recover_segment(&file, base, size, interval, strict, &mut epochs)?;
                tracing::warn!(partition = %tp, segment = base, "torn tail after clean shutdown");
                storage.set_len(&file, recovered.valid_size)?;
                segment.size = recovered.valid_size;
                segment.max_timestamp = recovered.index.max_timestamp;
                next_offset = recovered.next_offset;
                segment.active = Some(ActiveSegment {
                    file: Arc::new(file),
                    index: recovered.index,
                });
            } else {
                segment.max_timestamp = index.max_timestamp;
                next_offset = end.next_offset.max(base);
                segment.roll_start_ms = first_batch_timestamp(&file, size).unwrap_or(now).min(now);
                segment.active = Some(ActiveSegment {
                    file: Arc::new(file),
                    index,
                });
            }
        } else {
            segment.max_timestamp = match segment.files.last_indexed_timestamp() {
                Some(timestamp) => timestamp,
                None if size == 0 => -1,
                None => {
                    let rebuilt = rebuild_indexes(&file, size, base, interval)?;
                    segment
                        .files
                        .write_indexes(&rebuilt.offsets, &rebuilt.times)?;
                    rebuilt.max_timestamp
                }
            };
        }
        segments.insert(base, segment);
        if truncated {
            for &later in &bases[i + 1..] {
                let files = SegmentFiles::new(dir, later, cache.clone());
                tracing::warn!(partition = %tp, segment = later, "deleting segment after truncation");
                files.delete()?;
            }
            break;
        }
    }
    Ok(LoadedLog {
        segments,
        next_offset,
        epochs: epochs.finish(next_offset),
    })
}

struct TailScan {
    valid_size: u64,
    next_offset: i64,
}

/// After a clean shutdown: loads the active segment's index files and walks only the
/// batches after the last indexed one to find the log end.
fn resume_active_index(
    tp: &TopicPartition,
    files: &SegmentFiles,
    file: &File,
    size: u64,
    interval: u32,
    epochs: &mut EpochRecovery,
) -> io::Result<(IndexBuilder, TailScan)> {
    let base = files.base_offset;
    let read = |suffix: &str| std::fs::read(files.path(suffix)).ok();
    let offsets = read(INDEX_SUFFIX).and_then(|bytes| decode_offset_index(&bytes, size).ok());
    let times = read(TIME_INDEX_SUFFIX).and_then(|bytes| decode_time_index(&bytes).ok());
    let Some((offsets, times)) = offsets.zip(times) else {
        tracing::warn!(partition = %tp, segment = base, "active segment index unusable, rebuilding");
        let mut index = IndexBuilder::new(base, interval);
        let tail = walk_tail(file, 0, size, &mut index, epochs)?;
        return Ok((index, tail));
    };
    let start = offsets.last().map_or(0, |e| u64::from(e.position));
    let mut index = IndexBuilder::resume(base, interval, offsets, times);
    let tail = walk_tail(file, start, size, &mut index, epochs)?;
    Ok((index, tail))
}

fn walk_tail(
    file: &File,
    start: u64,
    size: u64,
    index: &mut IndexBuilder,
    epochs: &mut EpochRecovery,
) -> io::Result<TailScan> {
    let mut scanner = SegmentScanner::new(file, start, size, SCAN_WINDOW);
    let mut next_offset = 0;
    loop {
        match scanner.next_header()? {
            ScanStep::Batch(info, _) => {
                index.add(&info);
                epochs.batch_read(info.leader_epoch, info.base_offset);
                next_offset = info.last_offset + 1;
            }
            ScanStep::End => {
                return Ok(TailScan {
                    valid_size: size,
                    next_offset,
                });
            }
            ScanStep::Invalid { position, .. } => {
                return Ok(TailScan {
                    valid_size: position,
                    next_offset,
                });
            }
        }
    }
}

/// Rebuilding idempotent producers' state at startup.
pub(crate) mod producers {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::path::Path;

    use sluice_record::BatchHeader;

    use crate::producer_state::{ProducerStates, list_snapshots, snapshot_path};
    use crate::record_set::BatchSummary;
    use crate::scan::{ScanStep, SegmentScanner};
    use crate::segment::{LOG_SUFFIX, SCAN_WINDOW, Segment};
    use crate::storage::Storage;
    use crate::{Result, TopicPartition};

    /// The state as of `next_offset`: the newest usable snapshot, then the headers of every
    /// batch after it, counted as written at `now_ms` (when they were written is not in the
    /// log). Snapshots past the log end (their data was cut by recovery) are removed.
    pub(crate) fn rebuild(
        storage: &dyn Storage,
        tp: &TopicPartition,
        dir: &Path,
        segments: &BTreeMap<i64, Segment>,
        log_start_offset: i64,
        next_offset: i64,
        now_ms: i64,
    ) -> Result<ProducerStates> {
        let mut states = ProducerStates::default();
        let mut from = segments.keys().next().copied().unwrap_or(log_start_offset);
        for offset in list_snapshots(dir).into_iter().rev() {
            let path = snapshot_path(dir, offset);
            if offset > next_offset {
                storage.remove_file(&path)?;
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| ProducerStates::decode_snapshot(&b))
            {
                Ok(loaded) => {
                    states = loaded;
                    from = offset;
                    break;
                }
                Err(reason) => {
                    tracing::warn!(partition = %tp, snapshot = offset, %reason, "ignoring producer snapshot");
                }
            }
        }
        let bases: Vec<i64> = segments.keys().copied().collect();
        let mut scanned = 0usize;
        for (i, base) in bases.iter().enumerate() {
            if bases.get(i + 1).is_some_and(|next| *next <= from) {
                continue;
            }
            let segment = &segments[base];
            let file = File::open(segment.files.path(LOG_SUFFIX))?;
            let mut scanner = SegmentScanner::new(&file, 0, segment.size, SCAN_WINDOW);
            while let ScanStep::Batch(info, header) = scanner.next_header()? {
                if info.base_offset >= from
                    && let Ok(header) = BatchHeader::parse(header)
                {
                    let summary = BatchSummary::from_header(0, 0, &header);
                    states.record(&summary, header.base_offset(), now_ms);
                    scanned += 1;
                }
            }
        }
        if scanned > 0 {
            tracing::debug!(partition = %tp, from, batches = scanned, producers = states.len(), "producer state rebuilt");
        }
        Ok(states)
    }

    /// Removes all but the `keep` newest snapshots.
    pub(crate) fn keep_newest_snapshots(storage: &dyn Storage, dir: &Path, keep: usize) {
        let snapshots = list_snapshots(dir);
        let doomed = snapshots.len().saturating_sub(keep);
        for snapshot in &snapshots[..doomed] {
            let _ = storage.remove_file(&snapshot_path(dir, *snapshot));
        }
    }

    /// Removes snapshots of offsets below the log start.
    pub(crate) fn delete_snapshots_below(storage: &dyn Storage, dir: &Path, offset: i64) {
        for snapshot in list_snapshots(dir).into_iter().filter(|s| *s < offset) {
            let _ = storage.remove_file(&snapshot_path(dir, snapshot));
        }
    }
}
