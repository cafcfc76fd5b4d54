//! Log compaction (`cleanup.policy=compact`): keeps the latest record of every key.
//!
//! A cleaning pass over one log:
//! 1. Picks the dirty range: from the first dirty offset (everything below was cleaned by an
//!    earlier pass) up to the first uncleanable segment, which is the active segment or the
//!    first segment holding a record younger than `min.compaction.lag.ms`. The active
//!    segment is never touched.
//! 2. Builds an offset map, key hash → offset of the key's latest record, over the dirty
//!    range. Keys are hashed to 128 bits, so the map's memory is bounded by entry count
//!    (`log.cleaner.dedupe.buffer.size`); when it is full the pass stops early and the rest
//!    of the dirty range waits for the next pass.
//! 3. Rewrites every inactive segment overlapping `[log start, map end)`, in groups whose
//!    combined size fits `segment.bytes`: a record survives if no later record of its key is
//!    in the map. Keyless records are dropped (a compacted topic refuses them on produce).
//!    Tombstones get a delete horizon (now + `delete.retention.ms`) the first time they are
//!    cleaned and are dropped by the first pass after it. Control batches are kept as they
//!    are. A batch that loses all its records but is its producer's latest is kept empty,
//!    so the producer's sequence survives, as Kafka does.
//! 4. Swaps each rewritten group in with a crash-safe protocol (see [`swap`]).
//!
//! Offsets never change: a rewritten batch keeps its base offset and last offset delta, so
//! the log has gaps, which readers skip.
//!
//! Readers are never blocked for a pass: segments are read and written without the log's
//! lock, which is taken only to swap the new files in. A reader that already holds the old
//! file keeps reading it (its batches are still valid, just not compacted).

mod swap;
mod throttle;

pub(crate) use swap::complete_swaps;
pub use swap::{CrashPoint, set_crash_point};

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_record::{Record, RecordBatch, rebuild_batch};

use crate::index::{encode_offset_index, encode_time_index};
use crate::log::{Log, decompression_limit};
use crate::recovery::first_batch_timestamp;
use crate::scan::{BatchInfo, ScanStep, SegmentScanner};
use crate::segment::{IndexBuilder, RECOVERY_WINDOW, SegmentFiles};
use crate::storage::Appender;
use crate::{LogConfig, LogError, Result, TopicPartition};
use swap::CleanedPaths;
use throttle::Throttle;

/// Memory the offset map is charged per key: a 16-byte hash, an 8-byte offset and the hash
/// table's control byte and slack.
pub const OFFSET_MAP_BYTES_PER_KEY: usize = 32;

/// Limits of one cleaning pass.
#[derive(Debug, Clone, Copy)]
pub struct CleanerSettings {
    /// Keys the offset map may hold (`log.cleaner.dedupe.buffer.size` /
    /// [`OFFSET_MAP_BYTES_PER_KEY`]).
    pub max_keys: usize,
    /// `log.cleaner.io.max.bytes.per.second`: log bytes read (offset map and rewrite); the
    /// pass sleeps when it gets ahead. Infinite by default, as in Kafka.
    pub io_max_bytes_per_second: f64,
}

impl Default for CleanerSettings {
    fn default() -> Self {
        CleanerSettings {
            max_keys: (128 << 20) / OFFSET_MAP_BYTES_PER_KEY,
            io_max_bytes_per_second: f64::INFINITY,
        }
    }
}

/// What a cleaning pass did, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct CleaningReport {
    pub partition: TopicPartition,
    /// Share of the cleanable bytes that were dirty when the pass started.
    pub dirty_ratio: f64,
    /// Dirty range cleaned: `[first_dirty_offset, end_offset)`.
    pub first_dirty_offset: i64,
    pub end_offset: i64,
    pub keys: usize,
    /// Bytes of dirty log read to build the offset map.
    pub dirty_bytes: u64,
    /// Bytes of log read and written by the rewrite.
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    pub elapsed: Duration,
    /// Broker clock time at the end of the pass.
    pub finished_at_ms: i64,
}

/// Earliest delete horizon among the tombstones of the clean part of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TombstoneHorizon {
    /// Not known since the log was opened; the cleaner reads batch headers to find it.
    Unknown,
    None,
    At(i64),
}

/// A log's cleaning state (under the log's lock).
#[derive(Debug, Clone)]
pub(crate) struct CleanerState {
    /// Offsets below this were cleaned; `None` when the log was never cleaned.
    pub first_dirty: Option<i64>,
    pub horizon: TombstoneHorizon,
    pub last_report: Option<CleaningReport>,
    /// The offsets `[start, end)` of the segments a swap is replacing: retention and
    /// DeleteRecords leave them in place until the swap is installed.
    pub swapping: Option<std::ops::Range<i64>>,
}

impl CleanerState {
    pub fn new(first_dirty: Option<i64>) -> Self {
        CleanerState {
            first_dirty,
            horizon: TombstoneHorizon::Unknown,
            last_report: None,
            swapping: None,
        }
    }
}

/// An inactive segment as the cleaner sees it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    pub files: Arc<SegmentFiles>,
    pub size: u64,
    pub max_timestamp: i64,
}

impl SegmentRef {
    fn base(&self) -> i64 {
        self.files.base_offset
    }
}

/// Everything a pass needs, taken under the log's lock.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub config: LogConfig,
    pub inactive: Vec<SegmentRef>,
    pub active_base: i64,
    pub first_dirty: i64,
    /// Producer id → last offset of its latest batch.
    pub producer_last_offsets: HashMap<i64, i64>,
    pub horizon: TombstoneHorizon,
}

/// Why a log should be cleaned now, and how dirty it is.
#[derive(Debug, Clone)]
pub struct CleaningCandidate {
    pub dirty_ratio: f64,
    /// The dirty part is older than `max.compaction.lag.ms` or a tombstone's horizon passed:
    /// clean regardless of the ratio.
    pub overdue: bool,
}

fn key_hash(key: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut hasher = std::hash::DefaultHasher::new();
        seed.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// Key hash → offset of the latest record with that key, over `[start, end)`.
struct OffsetMap {
    map: HashMap<u128, i64>,
    max_keys: usize,
    /// Offsets below this are covered.
    end: i64,
}

impl Log {
    /// How dirty this compacted log is, or `None` if it has nothing to clean (not
    /// compacted, nothing dirty outside the active segment, below `min.cleanable.dirty.ratio`
    /// and not overdue). With `force` any cleanable log is a candidate.
    pub fn cleaning_candidate(&self, force: bool) -> Result<Option<CleaningCandidate>> {
        let now = self.clock().now_ms();
        let Some(snapshot) = self.cleaner_snapshot()? else {
            return Ok(None);
        };
        self.candidate_of(&snapshot, now, force)
    }

    fn candidate_of(
        &self,
        snapshot: &Snapshot,
        now: i64,
        force: bool,
    ) -> Result<Option<CleaningCandidate>> {
        let range = DirtyRange::of(snapshot, now);
        if snapshot.inactive.is_empty() {
            return Ok(None);
        }
        let mut overdue = false;
        if range.dirty_bytes > 0 && snapshot.config.max_compaction_lag_ms < i64::MAX {
            let first = &snapshot.inactive[range.dirty_start];
            let oldest = first_batch_timestamp(&*self.open_cleaner_file(first)?, first.size)
                .unwrap_or(first.max_timestamp);
            overdue =
                oldest >= 0 && oldest <= now.saturating_sub(snapshot.config.max_compaction_lag_ms);
        }
        let horizon = match snapshot.horizon {
            TombstoneHorizon::Unknown => {
                let found = self.find_tombstone_horizon(snapshot)?;
                self.set_tombstone_horizon(found);
                found
            }
            known => known,
        };
        if matches!(horizon, TombstoneHorizon::At(h) if h <= now) {
            overdue = true;
        }
        let ratio = range.ratio();
        let dirty_enough =
            range.dirty_bytes > 0 && ratio >= snapshot.config.min_cleanable_dirty_ratio;
        Ok(
            (force || overdue || dirty_enough).then_some(CleaningCandidate {
                dirty_ratio: ratio,
                overdue,
            }),
        )
    }

    /// Runs one cleaning pass if the log is a candidate (always, with `force`), within
    /// `settings`. `stop` is polled between steps; a stopped pass leaves the log as it was or
    /// partly cleaned, never inconsistent.
    pub fn clean(
        &self,
        force: bool,
        settings: &CleanerSettings,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<CleaningReport>> {
        let started = Instant::now();
        let now = self.clock().now_ms();
        let Some(snapshot) = self.cleaner_snapshot()? else {
            return Ok(None);
        };
        let Some(candidate) = self.candidate_of(&snapshot, now, force)? else {
            return Ok(None);
        };
        let range = DirtyRange::of(&snapshot, now);
        let mut report = CleaningReport {
            partition: self.topic_partition().clone(),
            dirty_ratio: candidate.dirty_ratio,
            first_dirty_offset: snapshot.first_dirty,
            end_offset: snapshot.first_dirty,
            keys: 0,
            dirty_bytes: 0,
            bytes_read: 0,
            bytes_written: 0,
            records_read: 0,
            records_removed: 0,
            tombstones_removed: 0,
            segments_before: snapshot.inactive.len(),
            segments_after: snapshot.inactive.len(),
            elapsed: Duration::ZERO,
            finished_at_ms: now,
        };
        let mut throttle = Throttle::new(settings.io_max_bytes_per_second);
        let map = self.build_offset_map(
            &snapshot,
            &range,
            settings.max_keys,
            stop,
            &mut report,
            &mut throttle,
        )?;
        report.keys = map.map.len();
        report.end_offset = map.end;

        // Segments overlapping [log start, map end), never past the uncleanable point.
        let to_clean: Vec<SegmentRef> = snapshot.inactive[..range.uncleanable]
            .iter()
            .filter(|s| s.base() < map.end.max(snapshot.first_dirty))
            .cloned()
            .collect();
        let mut horizon = TombstoneHorizon::None;
        let mut replaced = 0usize;
        let mut written = 0usize;
        for group in group_segments(&to_clean, &snapshot) {
            if stop() {
                return Ok(None);
            }
            let outcome =
                self.clean_group(&group, &snapshot, &map, now, &mut report, &mut throttle)?;
            if let Some(h) = outcome.min_horizon {
                horizon = match horizon {
                    TombstoneHorizon::At(current) => TombstoneHorizon::At(current.min(h)),
                    _ => TombstoneHorizon::At(h),
                };
            }
            if outcome.swapped {
                replaced += group.segments.len();
                written += 1;
            }
            if outcome.aborted {
                tracing::info!(partition = %self.topic_partition(), "cleaning aborted: the log changed");
                return Ok(None);
            }
        }
        report.segments_after = report.segments_before - replaced + written;
        report.elapsed = started.elapsed();
        report.finished_at_ms = self.clock().now_ms();
        self.finish_cleaning(map.end, horizon, report.clone());
        tracing::info!(
            partition = %report.partition,
            dirty_ratio = format!("{:.2}", report.dirty_ratio),
            first_dirty_offset = report.first_dirty_offset,
            end_offset = report.end_offset,
            keys = report.keys,
            dirty_bytes = report.dirty_bytes,
            bytes_read = report.bytes_read,
            bytes_written = report.bytes_written,
            records_removed = report.records_removed,
            tombstones_removed = report.tombstones_removed,
            segments_before = report.segments_before,
            segments_after = report.segments_after,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "log cleaned"
        );
        Ok(Some(report))
    }

    /// Calls `f` with every batch of `segment` (its header info and bytes) until `f` says
    /// to stop; a batch that does not parse is corruption.
    fn each_batch(
        &self,
        segment: &SegmentRef,
        mut f: impl FnMut(BatchInfo, &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<ControlFlow<()>> {
        let file = self.open_cleaner_file(segment)?;
        let mut scanner = SegmentScanner::new(&file, 0, segment.size, RECOVERY_WINDOW);
        loop {
            match scanner.next_batch()? {
                ScanStep::Batch(info, bytes) => {
                    if f(info, bytes)?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                ScanStep::End => return Ok(ControlFlow::Continue(())),
                ScanStep::Invalid { position, reason } => {
                    return Err(corrupt(self.topic_partition(), segment, position, &reason));
                }
            }
        }
    }

    fn build_offset_map(
        &self,
        snapshot: &Snapshot,
        range: &DirtyRange,
        max_keys: usize,
        stop: &dyn Fn() -> bool,
        report: &mut CleaningReport,
        throttle: &mut Throttle,
    ) -> Result<OffsetMap> {
        let mut map = OffsetMap {
            map: HashMap::new(),
            max_keys: max_keys.max(1),
            end: snapshot.first_dirty,
        };
        let limit = decompression_limit(&snapshot.config);
        for segment in &snapshot.inactive[range.dirty_start..range.uncleanable] {
            if stop() {
                break;
            }
            let full = self.each_batch(segment, |info, bytes| {
                report.dirty_bytes += u64::from(info.size);
                throttle.account(u64::from(info.size));
                if info.last_offset < snapshot.first_dirty {
                    return Ok(ControlFlow::Continue(()));
                }
                let batch = RecordBatch::parse(bytes)?;
                let header = batch.header();
                let count = header.record_count().max(0) as usize;
                if !map.map.is_empty() && map.map.len() + count > map.max_keys {
                    // Full: the rest of the dirty range waits for the next pass.
                    return Ok(ControlFlow::Break(()));
                }
                if !header.is_control() {
                    for record in batch.records(limit)?.iter() {
                        if let Some(key) = record.key {
                            map.map.insert(key_hash(key), record.offset);
                        }
                    }
                }
                map.end = info.last_offset + 1;
                Ok(ControlFlow::Continue(()))
            })?;
            if full.is_break() {
                return Ok(map);
            }
            // Gaps at a segment's end are covered too.
            map.end = map.end.max(range.next_base(snapshot, segment));
        }
        Ok(map)
    }

    /// Rewrites one group of segments into one and swaps it in.
    fn clean_group(
        &self,
        group: &Group,
        snapshot: &Snapshot,
        map: &OffsetMap,
        now: i64,
        report: &mut CleaningReport,
        throttle: &mut Throttle,
    ) -> Result<GroupOutcome> {
        let base = group.segments[0].base();
        let dir = self.dir();
        let paths = CleanedPaths::new(dir, base);
        paths.abandon(self.storage(), dir);
        let result = self.write_cleaned(group, snapshot, map, now, &paths, report, throttle);
        let written = match result {
            Ok(written) => written,
            Err(err) => {
                paths.abandon(self.storage(), dir);
                return Err(err);
            }
        };
        let mut outcome = GroupOutcome {
            swapped: false,
            aborted: false,
            size: written.size,
            min_horizon: written.min_horizon,
        };
        if !written.changed && group.segments.len() == 1 {
            paths.abandon(self.storage(), dir);
            report.bytes_written += written.size;
            return Ok(outcome);
        }
        // `swap_in` cleans up after itself: past the commit point nothing may be removed.
        if self.swap_in(group, &paths, &written)? {
            outcome.swapped = true;
        } else {
            outcome.aborted = true;
        }
        report.bytes_written += outcome.size;
        Ok(outcome)
    }

    fn write_cleaned(
        &self,
        group: &Group,
        snapshot: &Snapshot,
        map: &OffsetMap,
        now: i64,
        paths: &CleanedPaths,
        report: &mut CleaningReport,
        throttle: &mut Throttle,
    ) -> Result<Written> {
        let base = group.segments[0].base();
        let config = &snapshot.config;
        let limit = decompression_limit(config);
        let storage = self.storage();
        let file = storage.open(
            &paths.cleaned[0],
            OpenOptions::new().write(true).create_new(true),
        )?;
        let mut out = BufWriter::with_capacity(1 << 20, Appender::new(storage, &file));
        let mut index = IndexBuilder::new(base, config.index_interval_bytes);
        let mut written = Written {
            size: 0,
            changed: false,
            min_horizon: None,
            max_timestamp: -1,
        };
        let mut emit = |bytes: &[u8], written: &mut Written| -> Result<()> {
            let batch = RecordBatch::parse(bytes)?;
            let header = batch.header();
            index.add(&BatchInfo::from_header(written.size, &header));
            if header.has_delete_horizon() {
                let h = header.base_timestamp();
                written.min_horizon = Some(written.min_horizon.map_or(h, |m: i64| m.min(h)));
            }
            written.max_timestamp = written.max_timestamp.max(header.max_timestamp());
            out.write_all(bytes)?;
            written.size += bytes.len() as u64;
            Ok(())
        };
        for segment in &group.segments {
            // Every batch is visited: the closure never breaks.
            let _ = self.each_batch(segment, |info, bytes| {
                report.bytes_read += u64::from(info.size);
                throttle.account(u64::from(info.size));
                match filter_batch(bytes, snapshot, map, now, limit, report)? {
                    Filtered::Unchanged => emit(bytes, &mut written)?,
                    Filtered::Dropped => written.changed = true,
                    Filtered::Rewritten(rebuilt) => {
                        written.changed = true;
                        emit(&rebuilt, &mut written)?;
                    }
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        out.flush()?;
        drop(out);
        storage.sync_data(&file)?;
        index.finish();
        written.max_timestamp = written.max_timestamp.max(index.max_timestamp);
        for (path, bytes) in [
            (&paths.cleaned[1], encode_offset_index(&index.offsets)),
            (&paths.cleaned[2], encode_time_index(&index.times)),
        ] {
            let file = storage.open(path, OpenOptions::new().write(true).create_new(true))?;
            storage.write_at(&file, &bytes, 0)?;
            storage.sync_data(&file)?;
        }
        Ok(written)
    }

    /// Reads the delete horizons of the clean part's batches (headers only).
    fn find_tombstone_horizon(&self, snapshot: &Snapshot) -> Result<TombstoneHorizon> {
        let mut found = TombstoneHorizon::None;
        for segment in &snapshot.inactive {
            if segment.base() >= snapshot.first_dirty {
                break;
            }
            let file = self.open_cleaner_file(segment)?;
            let mut scanner =
                SegmentScanner::new(&file, 0, segment.size, crate::segment::SCAN_WINDOW);
            while let ScanStep::Batch(_, header) = scanner.next_header()? {
                let Ok(header) = sluice_record::BatchHeader::parse(header) else {
                    break;
                };
                if header.has_delete_horizon() {
                    let h = header.base_timestamp();
                    found = match found {
                        TombstoneHorizon::At(current) => TombstoneHorizon::At(current.min(h)),
                        _ => TombstoneHorizon::At(h),
                    };
                }
            }
        }
        Ok(found)
    }
}

/// What cleaning does to one batch.
enum Filtered {
    /// Every record stays and the delete horizon is right: copy the bytes as they are.
    Unchanged,
    Dropped,
    Rewritten(Vec<u8>),
}

/// Applies the retention rules (module documentation) to one stored batch.
fn filter_batch(
    bytes: &[u8],
    snapshot: &Snapshot,
    map: &OffsetMap,
    now: i64,
    limit: usize,
    report: &mut CleaningReport,
) -> Result<Filtered> {
    let batch = RecordBatch::parse(bytes)?;
    let header = batch.header();
    if header.is_control() {
        return Ok(Filtered::Unchanged);
    }
    let records = batch.records(limit)?;
    let total = records.len();
    report.records_read += total as u64;
    let expired_horizon = header.has_delete_horizon() && now >= header.base_timestamp();
    let mut kept: Vec<Record<'_>> = Vec::with_capacity(total);
    let mut tombstones = 0usize;
    for record in records.iter() {
        let Some(key) = record.key else { continue };
        let latest = map
            .map
            .get(&key_hash(key))
            .is_none_or(|&offset| record.offset >= offset);
        if !latest {
            continue;
        }
        if record.value.is_none() {
            if expired_horizon {
                report.tombstones_removed += 1;
                continue;
            }
            tombstones += 1;
        }
        kept.push(record);
    }
    report.records_removed += (total - kept.len()) as u64;
    let producer_latest = header.producer_id() >= 0
        && snapshot.producer_last_offsets.get(&header.producer_id()) == Some(&header.last_offset());
    if total == 0 {
        // An empty batch kept for its producer: it goes once the producer has written a
        // later batch or expired.
        return Ok(if producer_latest {
            Filtered::Unchanged
        } else {
            Filtered::Dropped
        });
    }
    let needs_horizon = tombstones > 0 && !header.has_delete_horizon();
    let stale_horizon = header.has_delete_horizon() && tombstones == 0;
    if kept.len() == total && !needs_horizon && !stale_horizon {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(if producer_latest {
            Filtered::Rewritten(rebuild_batch(&header, &[], None)?)
        } else {
            Filtered::Dropped
        });
    }
    let horizon = match tombstones {
        0 => None,
        _ if header.has_delete_horizon() => Some(header.base_timestamp()),
        _ => Some(now.saturating_add(snapshot.config.delete_retention_ms)),
    };
    Ok(Filtered::Rewritten(rebuild_batch(&header, &kept, horizon)?))
}

/// Where the dirty part of a log lies among its inactive segments.
#[derive(Debug)]
struct DirtyRange {
    /// Index of the first inactive segment holding dirty offsets.
    dirty_start: usize,
    /// Index of the first inactive segment that must not be cleaned yet (or the count).
    uncleanable: usize,
    clean_bytes: u64,
    dirty_bytes: u64,
}

impl DirtyRange {
    fn of(snapshot: &Snapshot, now: i64) -> Self {
        let segments = &snapshot.inactive;
        let next_base = |i: usize| {
            segments
                .get(i + 1)
                .map_or(snapshot.active_base, |s| s.base())
        };
        let dirty_start = (0..segments.len())
            .find(|&i| next_base(i) > snapshot.first_dirty)
            .unwrap_or(segments.len());
        let lag = snapshot.config.min_compaction_lag_ms;
        let uncleanable = (dirty_start..segments.len())
            .find(|&i| lag > 0 && segments[i].max_timestamp > now.saturating_sub(lag))
            .unwrap_or(segments.len());
        let clean_bytes = segments[..dirty_start].iter().map(|s| s.size).sum();
        let dirty_bytes = segments[dirty_start..uncleanable]
            .iter()
            .map(|s| s.size)
            .sum();
        DirtyRange {
            dirty_start,
            uncleanable,
            clean_bytes,
            dirty_bytes,
        }
    }

    fn ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    fn next_base(&self, snapshot: &Snapshot, segment: &SegmentRef) -> i64 {
        snapshot
            .inactive
            .iter()
            .find(|s| s.base() > segment.base())
            .map_or(snapshot.active_base, |s| s.base())
    }
}

/// Consecutive segments rewritten into one.
#[derive(Debug)]
struct Group {
    segments: Vec<SegmentRef>,
    /// Base offset of the segment after the group: the replaced range is `[base, end)`.
    end: i64,
}

/// Groups consecutive segments while their combined size fits `segment.bytes` and their
/// offsets fit one segment's relative offsets.
fn group_segments(segments: &[SegmentRef], snapshot: &Snapshot) -> Vec<Group> {
    let next_base = |segment: &SegmentRef| {
        snapshot
            .inactive
            .iter()
            .find(|s| s.base() > segment.base())
            .map_or(snapshot.active_base, |s| s.base())
    };
    let max_bytes = u64::from(snapshot.config.segment_bytes);
    let mut groups: Vec<Group> = Vec::new();
    for segment in segments {
        let end = next_base(segment);
        if let Some(group) = groups.last_mut() {
            let size: u64 = group.segments.iter().map(|s| s.size).sum();
            let span = end - group.segments[0].base();
            if size + segment.size <= max_bytes && span - 1 <= i64::from(i32::MAX) {
                group.segments.push(segment.clone());
                group.end = end;
                continue;
            }
        }
        groups.push(Group {
            segments: vec![segment.clone()],
            end,
        });
    }
    groups
}

struct GroupOutcome {
    swapped: bool,
    aborted: bool,
    size: u64,
    min_horizon: Option<i64>,
}

struct Written {
    size: u64,
    changed: bool,
    min_horizon: Option<i64>,
    max_timestamp: i64,
}

fn corrupt(tp: &TopicPartition, segment: &SegmentRef, position: u64, reason: &str) -> LogError {
    LogError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{tp}: segment {}: corrupt batch at position {position}: {reason}",
            segment.base()
        ),
    ))
}
