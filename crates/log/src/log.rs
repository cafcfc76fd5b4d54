//! One partition's log: an ordered set of segments, of which the last is active.
//!
//! Concurrency: all mutable state sits behind one mutex per partition, never a global one.
//! Appends hold it for validation-free work only (offset assignment, one `pwrite`, index
//! update); CRC checks run before it is taken. Reads hold it just long enough to pick a
//! segment, look up its index and take a reference to its file, then scan and return file
//! regions without it. The lock is never held across a sync.
//!
//! Offsets: `log_start_offset <= high_watermark <= log_end_offset`. The high watermark
//! follows the log end unless the partition layer sets it (a replicated partition:
//! `log/replica.rs`); reads for consumers stop at it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use sluice_record::{
    RecordRules, TimestampType, set_base_offset, set_log_append_time, set_partition_leader_epoch,
};

mod compaction;
mod invariants;
mod read;
mod replica;

pub use read::{FileRegion, ReadResult, RecordsFrom, StoredBatch, TimestampOffset};

use crate::blocking::{self, BlockingSection};
use crate::cleaner::CleanerState;
use crate::clock::Clock;
use crate::file_cache::FileCache;
use crate::flush::{Durability, DurableWait, Flusher};
use crate::leader_epochs::{self, LeaderEpochs};
use crate::producer_state::{Check, ProducerBatch, ProducerStates, write_snapshot};
use crate::record_set::{BatchSummary, ValidatedRecords};
use crate::recovery::{self, LoadedLog, producers};
use crate::segment::{Segment, SegmentFiles};
use crate::storage::Storage;
use crate::{FlushPolicy, LogConfig, LogError, Result, TopicPartition};

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The broker's time when `message.timestamp.type=LogAppendTime`, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub batches: usize,
    pub bytes: usize,
    /// The record set was a retry of batches already in the log (idempotent producer):
    /// nothing was written, and the offsets are those of the original.
    pub duplicate: bool,
}

/// Offsets and size of a log at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
    /// Everything below this offset is on stable storage.
    pub recovery_point: i64,
    pub size_bytes: u64,
    pub segments: usize,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// What a sync round must do for a log, taken under its lock and run without it.
#[derive(Debug)]
pub(crate) struct PreparedSync {
    next_offset: i64,
    pub files: Vec<Arc<File>>,
    dir: Option<PathBuf>,
    /// The leader-epoch history to checkpoint, when it changed since the last sync.
    epochs: Option<LeaderEpochs>,
    storage: Arc<dyn Storage>,
}

impl PreparedSync {
    /// Rewrites the checkpoint files that changed. Runs before the data is synced, so that
    /// a checkpoint is never behind synced data (recovery corrects one that is ahead); the
    /// directory sync that follows makes the rename durable.
    pub fn write_checkpoints(&self) -> io::Result<()> {
        if let (Some(dir), Some(epochs)) = (&self.dir, &self.epochs) {
            leader_epochs::write(&*self.storage, dir, epochs)?;
        }
        Ok(())
    }

    pub fn sync_files(&self) -> io::Result<()> {
        self.write_checkpoints()?;
        for file in &self.files {
            self.storage.sync_data(file)?;
        }
        if let Some(dir) = &self.dir {
            self.storage.sync_dir(dir)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct LogInner {
    pub config: LogConfig,
    pub segments: BTreeMap<i64, Segment>,
    pub next_offset: i64,
    pub log_start_offset: i64,
    /// Files of sealed segments not yet covered by a sync.
    unsynced: Vec<Arc<File>>,
    /// A segment file was created or removed since the directory was last synced.
    dir_dirty: bool,
    /// What each idempotent producer last wrote here.
    producers: ProducerStates,
    /// Log compaction's progress.
    pub cleaner: CleanerState,
    /// Which leader epoch wrote from which offset.
    pub epochs: LeaderEpochs,
    /// `epochs` changed since the checkpoint file was last written.
    epochs_dirty: bool,
}

impl LogInner {
    fn active(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// The log start offset moved up: the epoch history starts there too.
    fn start_moved(&mut self) {
        if self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs_dirty = true;
        }
    }
}

/// A partition's log. Shared as `Arc<Log>`; every method takes `&self`.
#[derive(Debug)]
pub struct Log {
    tp: TopicPartition,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    cache: Arc<FileCache>,
    flusher: Arc<Flusher>,
    /// Where rolls and segment opens run ([`BlockingSection`]).
    blocking: Arc<dyn BlockingSection>,
    inner: Mutex<LogInner>,
    durability: Durability,
    offline: OnceLock<String>,
    deleted: AtomicBool,
    log_end_offset: AtomicI64,
    /// Readers see offsets below it only ([`Log::high_watermark`]).
    high_watermark: AtomicI64,
    /// The high watermark moves with every append (no other replica to wait for).
    hw_follows_end: AtomicBool,
    /// What every record of an append must satisfy, read without the lock (the records are
    /// checked before it is taken). Updated with the configuration.
    rules: RecordRulesCell,
}

/// The file [`Log::probe_storage`] writes (recovery ignores it: not a segment's name).
const STORAGE_PROBE: &str = "storage-probe.tmp";
const STORAGE_PROBE_BYTES: usize = 1 << 20;

/// Upper bound on memory used to decompress one batch when searching by timestamp.
pub(crate) fn decompression_limit(config: &LogConfig) -> usize {
    (config.max_message_bytes as usize)
        .saturating_mul(16)
        .max(64 << 20)
}

impl Log {
    /// Opens (recovering if needed) or creates the log in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        cache: Arc<FileCache>,
        flusher: Arc<Flusher>,
        blocking: Arc<dyn BlockingSection>,
        clean_shutdown: bool,
        recovery_point: Option<i64>,
        log_start_offset: Option<i64>,
        cleaner_first_dirty: Option<i64>,
    ) -> Result<Log> {
        config.validate()?;
        cache.storage().create_dir_all(&dir)?;
        let now = clock.now_ms();
        let epoch_checkpoint = leader_epochs::read(&dir);
        let LoadedLog {
            mut segments,
            next_offset,
            mut epochs,
        } = recovery::load(
            &tp,
            &dir,
            &config,
            &cache,
            now,
            clean_shutdown,
            recovery_point.unwrap_or(0),
            cleaner_first_dirty.is_some(),
            epoch_checkpoint.clone(),
        )?;
        if segments.is_empty() {
            let base = log_start_offset.unwrap_or(0).max(0);
            let files = SegmentFiles::new(&dir, base, cache.clone());
            segments.insert(
                base,
                Segment::create(files, now, config.index_interval_bytes)?,
            );
        }
        let first_base = *segments.keys().next().expect("at least one segment");
        let next_offset = next_offset.max(first_base);
        let log_start_offset = log_start_offset
            .unwrap_or(first_base)
            .clamp(first_base, next_offset);
        let flushed = if clean_shutdown {
            next_offset
        } else {
            recovery_point.unwrap_or(0).min(next_offset)
        };
        epochs.truncate_from_start(log_start_offset);
        let epochs_dirty = epoch_checkpoint.as_ref() != Some(&epochs);
        let rules = RecordRulesCell::new(&config);
        let mut producers = producers::rebuild(
            cache.storage(),
            &tp,
            &dir,
            &segments,
            log_start_offset,
            next_offset,
            now,
        )?;
        producers.evict(
            log_start_offset,
            now.saturating_sub(config.producer_expiration_ms),
        );
        Ok(Log {
            tp,
            dir,
            clock,
            cache,
            flusher,
            blocking,
            inner: Mutex::new(LogInner {
                config,
                segments,
                next_offset,
                log_start_offset,
                unsynced: Vec::new(),
                dir_dirty: true,
                producers,
                cleaner: CleanerState::new(cleaner_first_dirty),
                epochs,
                epochs_dirty,
            }),
            durability: Durability::new(flushed),
            offline: OnceLock::new(),
            deleted: AtomicBool::new(false),
            log_end_offset: AtomicI64::new(next_offset),
            high_watermark: AtomicI64::new(next_offset),
            hw_follows_end: AtomicBool::new(true),
            rules,
        })
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// What this log's files are written and synced through.
    pub(crate) fn storage(&self) -> &dyn Storage {
        self.cache.storage()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn durability(&self) -> &Durability {
        &self.durability
    }

    /// Whether the log's directory takes writes again after a storage failure: a probe file
    /// of 1 MiB (room for a large batch, not just a page) is written, synced and removed
    /// there (through the log's storage).
    pub fn probe_storage(&self) -> Result<()> {
        self.check_usable()?;
        let path = self.dir.join(STORAGE_PROBE);
        let storage = self.storage();
        let probed = crate::storage::write_file(storage, &path, &vec![0u8; STORAGE_PROBE_BYTES])
            .and_then(|file| storage.sync_data(&file));
        let removed = crate::storage::remove_if_present(storage, &path);
        probed.and(removed).map_err(LogError::Io)
    }

    /// Whether an earlier storage failure took the log offline (until restart).
    pub fn is_offline(&self) -> bool {
        self.offline.get().is_some()
    }

    /// Fails if the log was deleted or went offline.
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.deleted.load(Ordering::SeqCst) {
            return Err(LogError::Deleted);
        }
        if let Some(reason) = self.offline.get() {
            return Err(LogError::Offline(reason.clone()));
        }
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, LogInner>> {
        self.check_usable()?;
        Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn config(&self) -> LogConfig {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }

    /// Replaces the configuration; applies from the next append or retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        let mut inner = self.lock()?;
        self.rules.set(&config);
        inner.config = config;
        Ok(())
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::SeqCst)
    }

    pub fn offsets(&self) -> LogOffsets {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        LogOffsets {
            log_start_offset: inner.log_start_offset,
            high_watermark: self
                .high_watermark()
                .clamp(inner.log_start_offset, inner.next_offset),
            log_end_offset: inner.next_offset,
            recovery_point: self.durability.flushed(),
            size_bytes: inner.size_bytes(),
            segments: inner.segments.len(),
        }
    }

    /// Appends a record set (one or more v2 batches, as a producer sends it): validates it
    /// ([`ValidatedRecords::validate`]), then [`Log::append_validated`].
    pub fn append(&self, records: &mut [u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.append_validated(ValidatedRecords::validate(records)?, leader_epoch)
    }

    /// Appends a validated record set. Checks what depends on the log's state first (keys on
    /// a compacted topic, `max.message.bytes`, idempotent producers' sequences); then assigns
    /// offsets, stamps `leader_epoch` and writes the bytes in one call. On any error nothing
    /// of the record set is in the log. Every step reads the batch summaries the validation
    /// made; the bytes are walked once, there.
    pub fn append_validated(
        &self,
        mut records: ValidatedRecords<'_>,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        // The records themselves, before the lock: this is the expensive part of validation
        // (every record is walked, compressed batches decompressed).
        let now = self.clock.now_ms();
        let rules = self.rules.at(now);
        for summary in records.batches() {
            records.batch(summary)?.check_records(&rules)?;
        }
        let mut inner = self.lock()?;
        if let Some(latest) = inner.epochs.latest()
            && leader_epoch < latest.epoch
        {
            return Err(LogError::StaleLeaderEpoch {
                epoch: leader_epoch,
                latest: latest.epoch,
            });
        }
        let max = inner.config.max_message_bytes;
        if records.largest_batch() > max as usize {
            return Err(LogError::BatchTooLarge {
                size: records.largest_batch(),
                max,
            });
        }
        if let Some(original) = check_producers(&inner.producers, records.batches())? {
            return Ok(AppendInfo {
                first_offset: original.first_offset,
                last_offset: original.last_offset,
                log_append_time: -1,
                log_start_offset: inner.log_start_offset,
                batches: records.batches().len(),
                bytes: 0,
                duplicate: true,
            });
        }
        let first_offset = inner.next_offset;
        let next = first_offset + records.offset_count();
        self.maybe_roll(&mut inner, records.len(), next - 1, now)?;

        let log_append_time = inner.config.timestamp_type == TimestampType::LogAppendTime;
        let (bytes, batches) = records.parts_mut();
        for summary in batches.iter_mut() {
            let batch = &mut bytes[summary.range()];
            set_base_offset(batch, first_offset + summary.relative_base);
            set_partition_leader_epoch(batch, leader_epoch);
            if log_append_time {
                set_log_append_time(batch, now);
                summary.max_timestamp = now;
            }
        }

        let active = inner.active();
        if active.size == 0 {
            active.roll_start_ms = now;
        }
        if let Err(failure) = active.append(
            records.bytes(),
            records.batches(),
            first_offset,
            leader_epoch,
        ) {
            if !failure.rolled_back {
                self.go_offline(failure.error.to_string());
            }
            return Err(LogError::Io(failure.error));
        }
        if inner.epochs.assign(leader_epoch, first_offset) {
            inner.epochs_dirty = true;
        }
        for summary in records.batches() {
            let base = first_offset + summary.relative_base;
            inner.producers.record(summary, base, now);
        }
        let batches = records.batches().len();
        let mut info = self.publish_append(&mut inner, first_offset, next, batches, records.len());
        if log_append_time {
            info.log_append_time = now;
        }
        Ok(info)
    }

    /// The end of every append, once its bytes are written and its epochs and producers
    /// recorded: the log end moves to `next` (and the high watermark with it when it follows
    /// the end), the invariants are checked, and the append is described.
    fn publish_append(
        &self,
        inner: &mut LogInner,
        first_offset: i64,
        next: i64,
        batches: usize,
        bytes: usize,
    ) -> AppendInfo {
        inner.next_offset = next;
        self.log_end_offset.store(next, Ordering::SeqCst);
        if self.hw_follows_end.load(Ordering::SeqCst) {
            self.high_watermark.store(next, Ordering::SeqCst);
        }
        inner.assert_invariants_after_append(self);
        AppendInfo {
            first_offset,
            last_offset: next - 1,
            log_append_time: -1,
            log_start_offset: inner.log_start_offset,
            batches,
            bytes,
            duplicate: false,
        }
    }

    fn go_offline(&self, reason: String) {
        tracing::error!(partition = %self.tp, %reason, "log going offline");
        let _ = self.offline.set(reason);
        self.durability.wake_all();
    }

    fn maybe_roll(
        &self,
        inner: &mut LogInner,
        incoming_bytes: usize,
        last_offset: i64,
        now: i64,
    ) -> Result<()> {
        let config = &inner.config;
        let (max_offsets, max_times) = (
            config.max_offset_index_entries(),
            config.max_time_index_entries(),
        );
        let (segment_bytes, segment_ms) = (u64::from(config.segment_bytes), config.segment_ms);
        let active = inner.active();
        if active.size == 0 {
            return Ok(());
        }
        let index = &active.active.as_ref().expect("active segment").index;
        let reason = if active.size + incoming_bytes as u64 > segment_bytes {
            "size"
        } else if now - active.roll_start_ms >= segment_ms {
            "age"
        } else if index.is_full(max_offsets, max_times) {
            "index full"
        } else if last_offset - active.base_offset() > i64::from(i32::MAX) {
            "offset range"
        } else {
            return Ok(());
        };
        tracing::debug!(partition = %self.tp, reason, "rolling segment");
        blocking::run(&*self.blocking, || self.roll(inner, now))
    }

    /// Seals the active segment and starts a new one at the log end offset. On failure the
    /// old segment stays active and untouched.
    fn roll(&self, inner: &mut LogInner, now: i64) -> Result<()> {
        let base = inner.next_offset;
        let files = SegmentFiles::new(&self.dir, base, self.cache.clone());
        let segment = Segment::create(files, now, inner.config.index_interval_bytes)?;
        let sealed = inner.active().seal();
        inner.unsynced.extend(sealed);
        inner.segments.insert(base, segment);
        inner.dir_dirty = true;
        // Recovery starts from the newest snapshot instead of rescanning the log.
        if let Err(err) = write_snapshot(self.storage(), &self.dir, base, &inner.producers) {
            tracing::warn!(partition = %self.tp, error = %err, "could not write producer snapshot");
        }
        // Older snapshots are never read while a newer one is intact; keep one spare.
        producers::keep_newest_snapshots(self.storage(), &self.dir, 2);
        #[cfg(debug_assertions)]
        inner.assert_all(self);
        Ok(())
    }

    /// Applies `retention.ms` and `retention.bytes` (for `cleanup.policy` including delete),
    /// and removes segments wholly below the log start offset. Deletes whole segments only, oldest first, never the active one (an
    /// expired active segment is rolled first).
    pub fn enforce_retention(&self) -> Result<RetentionReport> {
        let now = self.clock.now_ms();
        let mut inner = self.lock()?;
        // Time and size retention belong to cleanup.policy=delete; a compacted-only topic
        // keeps every segment (the cleaner shrinks it instead).
        let deletes = inner.config.cleanup_policy.delete;
        let retention_ms = if deletes {
            inner.config.retention_ms
        } else {
            -1
        };
        let retention_bytes = if deletes {
            inner.config.retention_bytes
        } else {
            -1
        };
        let expired = |segment: &Segment| {
            retention_ms >= 0
                && segment.max_timestamp >= 0
                && now - segment.max_timestamp > retention_ms
        };
        let all_inactive_expired = inner.segments.values().rev().skip(1).all(&expired);
        if all_inactive_expired {
            let active = inner.active();
            if active.size > 0 && expired(active) {
                self.roll(&mut inner, now)?;
            }
        }
        let mut remaining = inner.size_bytes();
        let log_start = inner.log_start_offset;
        let mut doomed = Vec::new();
        let bases: Vec<i64> = inner.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            let (base, next_base) = (pair[0], pair[1]);
            let segment = &inner.segments[&base];
            let below_start = next_base <= log_start;
            let over_size = retention_bytes >= 0 && remaining > retention_bytes as u64;
            if !(below_start || over_size || expired(segment)) {
                break;
            }
            remaining -= segment.size;
            doomed.push(base);
        }
        let mut removed = Vec::new();
        for base in doomed {
            match self.take_out_segment(&mut inner, base) {
                Some(segment) => removed.push(segment),
                None => break,
            }
        }
        let expire_before = now.saturating_sub(inner.config.producer_expiration_ms);
        let log_start = inner.log_start_offset;
        let expired_producers = inner.producers.evict(log_start, expire_before);
        if expired_producers > 0 {
            tracing::debug!(partition = %self.tp, producers = expired_producers, "producer state expired");
        }
        #[cfg(debug_assertions)]
        inner.assert_all(self);
        drop(inner);
        let mut report = RetentionReport::default();
        for segment in &removed {
            report.bytes_deleted += segment.size;
            report.segments_deleted += 1;
        }
        self.delete_files(removed, log_start)?;
        Ok(report)
    }

    /// Takes an inactive segment out of the log; the caller deletes its files once the lock
    /// is released ([`Log::delete_files`]), so that appends do not wait on the unlinks.
    /// `None` when a cleaner swap has reserved it: deletion goes oldest first, so the caller
    /// stops there (the next retention pass takes it).
    fn take_out_segment(&self, inner: &mut LogInner, base: i64) -> Option<Segment> {
        if let Some(reserved) = &inner.cleaner.swapping
            && reserved.contains(&base)
        {
            return None;
        }
        let segment = inner.segments.remove(&base)?;
        assert!(
            segment.active.is_none(),
            "the active segment is never deleted"
        );
        let first = *inner
            .segments
            .keys()
            .next()
            .expect("the active segment remains");
        inner.log_start_offset = inner.log_start_offset.max(first);
        inner.dir_dirty = true;
        inner.start_moved();
        tracing::info!(
            partition = %self.tp,
            segment = base,
            bytes = segment.size,
            log_start_offset = inner.log_start_offset,
            "deleted segment"
        );
        Some(segment)
    }

    /// Deletes the files of segments taken out of the log, and the producer snapshots below
    /// the log start offset. Never called under the log's lock.
    fn delete_files(&self, removed: Vec<Segment>, log_start_offset: i64) -> Result<()> {
        if removed.is_empty() {
            return Ok(());
        }
        let mut failed = None;
        for segment in removed {
            if let Err(err) = segment.files.delete() {
                tracing::warn!(partition = %self.tp, segment = segment.base_offset(), error = %err, "segment file removal failed");
                failed.get_or_insert(err);
            }
        }
        producers::delete_snapshots_below(self.storage(), &self.dir, log_start_offset);
        match failed {
            Some(err) => Err(LogError::Io(err)),
            None => Ok(()),
        }
    }

    /// Kafka's DeleteRecords: moves the log start offset to `offset` (at most the high
    /// watermark) and deletes segments wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let mut inner = self.lock()?;
        if offset < 0 || offset > inner.next_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.next_offset,
            });
        }
        if offset <= inner.log_start_offset {
            return Ok(inner.log_start_offset);
        }
        inner.log_start_offset = offset;
        inner.start_moved();
        let bases: Vec<i64> = inner.segments.keys().copied().collect();
        let mut removed = Vec::new();
        for pair in bases.windows(2) {
            if pair[1] > offset {
                break;
            }
            match self.take_out_segment(&mut inner, pair[0]) {
                Some(segment) => removed.push(segment),
                None => break,
            }
        }
        inner.producers.evict(offset, i64::MIN);
        #[cfg(debug_assertions)]
        inner.assert_all(self);
        let log_start = inner.log_start_offset;
        drop(inner);
        self.delete_files(removed, log_start)?;
        Ok(log_start)
    }

    /// Waits until every offset below `next_offset` is durable. Under the interval policy
    /// this returns at once (the operator chose to acknowledge before syncing).
    pub fn wait_durable(self: &Arc<Self>, next_offset: i64) -> DurableWait {
        if self.flusher.policy() == FlushPolicy::Interval {
            return DurableWait::ready();
        }
        self.flusher
            .stats
            .durable_waits
            .fetch_add(1, Ordering::Relaxed);
        // Register before queueing: see the ordering argument in `flush.rs`.
        let wait = DurableWait::new(self.clone(), next_offset);
        if self.durability.flushed() < next_offset && self.durability.claim_queue_slot() {
            self.flusher.enqueue(self.clone());
        }
        wait
    }

    /// Whether data below the log end is not yet known durable.
    pub fn has_unflushed_data(&self) -> bool {
        self.durability.flushed() < self.log_end_offset()
    }

    /// Takes what a sync must cover: the log end offset now, and the files holding data below
    /// it that may not be synced yet.
    pub(crate) fn prepare_sync(&self) -> Option<PreparedSync> {
        let mut inner = self.lock().ok()?;
        let mut files = std::mem::take(&mut inner.unsynced);
        let active = inner.active();
        files.push(active.active.as_ref().expect("active segment").file.clone());
        let epochs = std::mem::take(&mut inner.epochs_dirty).then(|| inner.epochs.clone());
        let dir_dirty = std::mem::take(&mut inner.dir_dirty) || epochs.is_some();
        let dir = dir_dirty.then(|| self.dir.clone());
        Some(PreparedSync {
            next_offset: inner.next_offset,
            files,
            dir,
            epochs,
            storage: self.cache.shared_storage(),
        })
    }

    pub(crate) fn complete_sync(&self, prepared: &PreparedSync) {
        self.durability.advance(prepared.next_offset);
    }

    pub(crate) fn fail_sync(&self, err: &io::Error) {
        self.go_offline(format!("sync failed: {err}"));
    }

    /// Flushes everything now, on the calling thread.
    pub fn flush(&self) -> Result<()> {
        self.check_usable()?;
        let Some(prepared) = self.prepare_sync() else {
            return self.check_usable();
        };
        match prepared.sync_files() {
            Ok(()) => {
                self.complete_sync(&prepared);
                Ok(())
            }
            Err(err) => {
                self.fail_sync(&err);
                Err(LogError::Io(err))
            }
        }
    }

    /// Clean close: writes the active segment's indexes and a producer snapshot at the log
    /// end, and syncs everything.
    pub(crate) fn close(&self) -> Result<()> {
        let index_files = {
            let mut inner = self.lock()?;
            write_snapshot(
                self.storage(),
                &self.dir,
                inner.next_offset,
                &inner.producers,
            )?;
            inner.active().persist_active_indexes()?
        };
        for file in index_files {
            self.storage().sync_data(&file)?;
        }
        self.flush()
    }

    /// The leader-epoch history (a copy).
    pub fn leader_epochs(&self) -> LeaderEpochs {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .epochs
            .clone()
    }

    /// This replica leads the partition from now on in `epoch`: the epoch starts at the log
    /// end even before it writes, as in Kafka, so that OffsetForLeaderEpoch for the current
    /// epoch always answers with the log end. An epoch older than the latest is refused.
    pub fn begin_leader_epoch(&self, epoch: i32) -> Result<()> {
        let mut inner = self.lock()?;
        if let Some(latest) = inner.epochs.latest()
            && epoch < latest.epoch
        {
            return Err(LogError::StaleLeaderEpoch {
                epoch,
                latest: latest.epoch,
            });
        }
        let end = inner.next_offset;
        if inner.epochs.assign(epoch, end) {
            inner.epochs_dirty = true;
        }
        #[cfg(debug_assertions)]
        inner.assert_all(self);
        Ok(())
    }

    /// OffsetForLeaderEpoch's answer: the largest epoch at or below `requested` that wrote
    /// here, and the offset where it ends (the log end for the latest). `None` when the log
    /// has no such epoch ([`LeaderEpochs::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, requested: i32) -> Option<(i32, i64)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.epochs.end_offset_for(requested, inner.next_offset)
    }

    /// A copy of the idempotent producers' state (for tests and diagnostics).
    pub fn producer_states(&self) -> ProducerStates {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .producers
            .clone()
    }

    /// Marks the log deleted: later calls fail with [`LogError::Deleted`], waiters wake.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        self.durability.wake_all();
    }
}

/// Checks every batch of a record set against the producers' state. `Some` when the set is a
/// retry of batches already in the log.
fn check_producers(
    producers: &ProducerStates,
    batches: &[BatchSummary],
) -> Result<Option<ProducerBatch>> {
    let mut pending: Vec<(i64, i16, ProducerBatch)> = Vec::new();
    for batch in batches {
        match producers
            .check(batch, &pending)
            .map_err(LogError::Sequence)?
        {
            Check::Duplicate(original) => return Ok(Some(original)),
            Check::Append if batch.is_idempotent() => {
                pending.push((
                    batch.producer_id,
                    batch.producer_epoch,
                    ProducerBatch::pending(batch),
                ));
            }
            Check::Append => {}
        }
    }
    Ok(None)
}

/// The record rules of a log's configuration, kept in atomics so that appends read them
/// without the partition lock.
#[derive(Debug)]
struct RecordRulesCell {
    compacted: AtomicBool,
    before_max_ms: AtomicI64,
    after_max_ms: AtomicI64,
    decompression_limit: std::sync::atomic::AtomicUsize,
}

impl RecordRulesCell {
    fn new(config: &LogConfig) -> Self {
        let cell = RecordRulesCell {
            compacted: AtomicBool::new(false),
            before_max_ms: AtomicI64::new(i64::MAX),
            after_max_ms: AtomicI64::new(i64::MAX),
            decompression_limit: std::sync::atomic::AtomicUsize::new(0),
        };
        cell.set(config);
        cell
    }

    fn set(&self, config: &LogConfig) {
        self.compacted
            .store(config.cleanup_policy.compact, Ordering::SeqCst);
        self.before_max_ms
            .store(config.timestamp_before_max_ms, Ordering::SeqCst);
        self.after_max_ms
            .store(config.timestamp_after_max_ms, Ordering::SeqCst);
        self.decompression_limit
            .store(decompression_limit(config), Ordering::SeqCst);
    }

    /// The rules for an append at `now_ms` (the timestamp window is relative to it).
    fn at(&self, now_ms: i64) -> RecordRules {
        let before = self.before_max_ms.load(Ordering::SeqCst);
        let after = self.after_max_ms.load(Ordering::SeqCst);
        let timestamps = (before != i64::MAX || after != i64::MAX)
            .then(|| (now_ms.saturating_sub(before), now_ms.saturating_add(after)));
        RecordRules {
            require_keys: self.compacted.load(Ordering::SeqCst),
            timestamps,
            max_decompressed: self.decompression_limit.load(Ordering::SeqCst),
        }
    }
}
