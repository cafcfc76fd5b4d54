//! What replication needs of a log: the high watermark, appending batches copied from a
//! leader (offsets and epochs kept as the leader wrote them), and truncating a divergent
//! suffix.
//!
//! The high watermark either follows the log end (a log nobody replicates, or a leader that
//! is its only in-sync replica) or is set by the partition layer (a replicated partition:
//! the leader moves it to what every in-sync replica holds, a follower to what its leader
//! said). Readers never see past it; replicas read to the log end.

use std::sync::atomic::Ordering;

use crate::producer_state::write_snapshot;
use crate::record_set::ReplicatedRecords;
use crate::recovery::producers;
use crate::scan::{ScanStep, SegmentScanner};
use crate::segment::{ActiveSegment, IndexBuilder, LOG_SUFFIX, Segment, SegmentFiles};
use crate::{LogError, Result};

use super::{AppendInfo, Log, LogInner};

/// How much of a segment a truncation scan reads at a time.
const TRUNCATE_SCAN_WINDOW: usize = 64 * 1024;

impl Log {
    /// The offset below which records are committed (visible to consumers).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::SeqCst)
    }

    /// Whether the high watermark follows the log end (no other replica to wait for). When
    /// turned on, it moves to the log end at once.
    pub fn set_high_watermark_follows_end(&self, follows: bool) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.hw_follows_end.store(follows, Ordering::SeqCst);
        if follows {
            self.high_watermark
                .store(inner.next_offset, Ordering::SeqCst);
        }
    }

    /// Sets the high watermark (a replicated partition's), kept within
    /// `[log start, log end]`. Returns the value set.
    pub fn set_high_watermark(&self, offset: i64) -> i64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let hw = offset.clamp(inner.log_start_offset, inner.next_offset);
        self.high_watermark.store(hw, Ordering::SeqCst);
        hw
    }

    /// Appends batches copied from the leader: they must start at or after the log end (a
    /// compacted leader log may leave a gap), and keep their offsets and leader epochs. The
    /// producers' state is recorded as the leader's was; sequences are not checked again
    /// (the leader did). On any error nothing of the record set is in the log.
    pub fn append_replicated(&self, records: &ReplicatedRecords<'_>) -> Result<AppendInfo> {
        let now = self.clock.now_ms();
        let mut inner = self.lock()?;
        let first_offset = records.first_offset();
        if first_offset < inner.next_offset {
            return Err(LogError::OutOfOrder(format!(
                "batches from offset {first_offset}, the log ends at {}",
                inner.next_offset
            )));
        }
        if let (Some(latest), Some(first_epoch)) = (inner.epochs.latest(), records.epochs().first())
            && *first_epoch < latest.epoch
        {
            return Err(LogError::StaleLeaderEpoch {
                epoch: *first_epoch,
                latest: latest.epoch,
            });
        }
        let next = records.next_offset();
        if first_offset > inner.next_offset && inner.active().size == 0 {
            // The active segment is empty: start it at the first copied offset instead of
            // leaving it named by an offset it never holds.
            self.restart_empty_active(&mut inner, first_offset, now)?;
        }
        self.maybe_roll(&mut inner, records.len(), next - 1, now)?;
        if inner.active().size == 0 && inner.active().base_offset() < first_offset {
            self.restart_empty_active(&mut inner, first_offset, now)?;
        }
        let active = inner.active();
        if active.size == 0 {
            active.roll_start_ms = now;
        }
        let last_epoch = *records.epochs().last().expect("a batch");
        if let Err(failure) =
            active.append(records.bytes(), records.batches(), first_offset, last_epoch)
        {
            if !failure.rolled_back {
                self.go_offline(failure.error.to_string());
            }
            return Err(LogError::Io(failure.error));
        }
        for (summary, epoch) in records.batches().iter().zip(records.epochs()) {
            let base = first_offset + summary.relative_base;
            if inner.epochs.assign(*epoch, base) {
                inner.epochs_dirty = true;
            }
            inner.producers.record(summary, base, now);
        }
        let batches = records.batches().len();
        Ok(self.publish_append(&mut inner, first_offset, next, batches, records.len()))
    }

    /// Replaces an empty active segment by one starting at `base` (above the log end).
    fn restart_empty_active(&self, inner: &mut LogInner, base: i64, now: i64) -> Result<()> {
        let old = inner.active().base_offset();
        assert_eq!(inner.active().size, 0, "only an empty segment is replaced");
        assert!(base >= old, "a segment only moves forward");
        if base == old {
            return Ok(());
        }
        let files = SegmentFiles::new(&self.dir, base, self.cache.clone());
        let segment = Segment::create(files, now, inner.config.index_interval_bytes)?;
        let mut replaced = inner.segments.remove(&old).expect("the active segment");
        inner.segments.insert(base, segment);
        inner.next_offset = base;
        if inner.segments.len() == 1 {
            inner.log_start_offset = base;
            inner.start_moved();
        }
        inner.dir_dirty = true;
        self.log_end_offset.store(base, Ordering::SeqCst);
        replaced.active = None;
        if let Err(err) = replaced.files.delete() {
            tracing::warn!(partition = %self.tp, error = %err, "could not remove an empty segment");
        }
        Ok(())
    }

    /// Truncates the log to end at `offset` (a follower or deposed leader dropping a suffix
    /// its new leader does not have). The cut is at a batch boundary: a batch holding
    /// `offset` goes whole, so the new end may be below `offset`. Returns the new log end.
    /// Segments after the cut are deleted; the one holding it is cut and becomes active.
    /// The epoch history, producers' state, high watermark and durable point follow.
    pub fn truncate_to(&self, offset: i64) -> Result<i64> {
        self.cut(offset, false)
    }

    /// Drops the whole log and starts it again, empty, at `offset` (a follower whose leader
    /// no longer has what it would fetch next: the leader's log starts above it).
    pub fn restart_at(&self, offset: i64) -> Result<i64> {
        self.cut(offset, true)
    }

    /// The epoch of the newest leader that wrote here (a follower's "last fetched epoch").
    pub fn latest_epoch(&self) -> Option<i32> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.epochs.latest().map(|e| e.epoch)
    }

    fn cut(&self, offset: i64, restart: bool) -> Result<i64> {
        let now = self.clock.now_ms();
        let mut inner = self.lock()?;
        if offset >= inner.next_offset && !restart {
            // Nothing to cut, but epochs begun at or after `offset` wrote nothing that
            // remains (a deposed leader's epoch begun at its log end): they go, or the next
            // fetch names that epoch and diverges again.
            if inner.epochs.truncate_from_end(offset.max(0)) {
                inner.epochs_dirty = true;
            }
            return Ok(inner.next_offset);
        }
        if inner.cleaner.swapping.is_some() {
            return Err(LogError::Io(std::io::Error::other(
                "the cleaner is replacing segments; truncation is retried",
            )));
        }
        let offset = offset.max(0);
        let containing = if restart {
            None
        } else {
            inner
                .segments
                .range(..offset)
                .next_back()
                .map(|(base, _)| *base)
        };
        let doomed: Vec<i64> = if restart {
            inner.segments.keys().copied().collect()
        } else {
            inner.segments.range(offset..).map(|(b, _)| *b).collect()
        };
        let mut removed = Vec::new();
        for base in &doomed {
            let mut segment = inner.segments.remove(base).expect("listed");
            segment.active = None;
            // Before a new segment may take the same name (a truncation to its base).
            if let Err(err) = segment.files.delete() {
                tracing::warn!(partition = %self.tp, segment = base, error = %err, "could not remove a truncated segment");
            }
            removed.push(segment);
        }
        let interval = inner.config.index_interval_bytes;
        let cut = match containing {
            Some(base) => {
                let segment = inner.segments.get_mut(&base).expect("listed");
                cut_segment(segment, offset, interval)
            }
            None => {
                // Nothing below the cut: the log starts again, empty, at `offset`.
                let files = SegmentFiles::new(&self.dir, offset, self.cache.clone());
                Segment::create(files, now, interval)
                    .map(|segment| {
                        inner.segments.insert(offset, segment);
                        inner.log_start_offset = offset;
                        offset
                    })
                    .map_err(LogError::Io)
            }
        };
        let new_end = match cut {
            Ok(end) => end,
            Err(err) => {
                // Segments are gone from the list already: the log cannot be trusted as it
                // stands in memory; recovery at restart rebuilds it from the files.
                self.go_offline(format!("truncation failed: {err}"));
                return Err(err);
            }
        };
        inner.next_offset = new_end;
        inner.log_start_offset = inner.log_start_offset.min(new_end);
        inner.dir_dirty = true;
        if inner.epochs.truncate_from_end(new_end) {
            inner.epochs_dirty = true;
        }
        if restart && inner.epochs.truncate_from_end(i64::MIN) {
            inner.epochs_dirty = true;
        }
        if let Some(first_dirty) = inner.cleaner.first_dirty {
            inner.cleaner.first_dirty = Some(first_dirty.min(new_end));
        }
        self.log_end_offset.store(new_end, Ordering::SeqCst);
        self.durability.truncate(new_end);
        if restart {
            // Nothing is below the new start: durable up to it.
            self.durability.advance(new_end);
        }
        let hw = self.high_watermark.load(Ordering::SeqCst).min(new_end);
        self.high_watermark.store(hw, Ordering::SeqCst);
        inner.producers = producers::rebuild(
            self.storage(),
            &self.tp,
            &self.dir,
            &inner.segments,
            inner.log_start_offset,
            new_end,
            now,
        )?;
        if let Err(err) = write_snapshot(self.storage(), &self.dir, new_end, &inner.producers) {
            tracing::warn!(partition = %self.tp, error = %err, "could not write producer snapshot");
        }
        tracing::info!(partition = %self.tp, requested = offset, log_end_offset = new_end, segments_removed = removed.len(), "truncated the log");
        #[cfg(debug_assertions)]
        inner.assert_all(self);
        Ok(new_end)
    }
}

/// Cuts `segment` before the first batch that ends at or after `offset`, and makes it the
/// active segment (reopened for writing, its index rebuilt from what remains). Returns the
/// offset after its last remaining batch.
fn cut_segment(segment: &mut Segment, offset: i64, interval: u32) -> Result<i64> {
    let storage = segment.files.storage();
    let file = storage.open(
        &segment.files.path(LOG_SUFFIX),
        std::fs::OpenOptions::new().read(true).write(true),
    )?;
    let mut index = IndexBuilder::new(segment.base_offset(), interval);
    let mut scanner = SegmentScanner::new(&file, 0, segment.size, TRUNCATE_SCAN_WINDOW);
    let mut cut = 0u64;
    let mut end = segment.base_offset();
    loop {
        match scanner.next_header()? {
            ScanStep::Batch(info, _) if info.last_offset < offset => {
                index.add(&info);
                cut = info.end();
                end = info.last_offset + 1;
            }
            ScanStep::Batch(..) | ScanStep::End => break,
            ScanStep::Invalid { position, reason } => {
                return Err(LogError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "segment {}: invalid batch at {position}: {reason}",
                        segment.base_offset()
                    ),
                )));
            }
        }
    }
    storage.set_len(&file, cut)?;
    // Readers holding the old open segment keep their file; its indexes must not be used
    // again for this segment.
    segment.files.forget_open();
    segment.size = cut;
    segment.max_timestamp = index.max_timestamp;
    segment.active = Some(ActiveSegment {
        file: std::sync::Arc::new(file),
        index,
    });
    Ok(end)
}
