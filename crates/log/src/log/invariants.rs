//! The log's invariants as code. [`LogInner::check_invariants`] checks all of them (tests call
//! it through [`Log::check_invariants`] after every operation); every build asserts the O(1)
//! subset after every append, and debug builds run the full check after every change:
//! appends, rolls, retention, DeleteRecords, compaction swaps.

use super::{Log, LogInner};
use crate::index::{OffsetEntry, TimeEntry};
use crate::segment::Segment;

impl LogInner {
    /// Every invariant of the segment list and the active segment's indexes:
    /// - there is at least one segment; the last is the only active one;
    /// - `first segment base <= log_start_offset <= next_offset`, and the active segment's
    ///   base is at most `next_offset`;
    /// - `log_end_offset` (the lock-free copy) equals `next_offset`; everything flushed is
    ///   below it;
    /// - every segment fits the index formats (`size <= i32::MAX`), and its max timestamp
    ///   covers its index's;
    /// - the active segment's offset index grows strictly in offset and position, stays
    ///   within the segment and the log end; its time index grows strictly in timestamp and
    ///   never goes back in offset;
    /// - the cleaner's checkpoint is within the log;
    /// - the leader-epoch history is ordered and within the log.
    pub(crate) fn check_invariants(&self, log_end_offset: i64, flushed: i64) -> Result<(), String> {
        let fail = |what: String| Err(what);
        let Some((&first_base, _)) = self.segments.iter().next() else {
            return fail("a log without segments".into());
        };
        let (&active_base, active) = self.segments.iter().next_back().expect("non-empty");
        for (&base, segment) in &self.segments {
            if segment.base_offset() != base {
                return fail(format!(
                    "segment keyed {base} has base {}",
                    segment.base_offset()
                ));
            }
            if (base == active_base) != segment.active.is_some() {
                return fail(format!("segment {base}: only the last segment is active"));
            }
            if segment.size > i32::MAX as u64 {
                return fail(format!("segment {base} is {} bytes", segment.size));
            }
        }
        if !(first_base <= self.log_start_offset && self.log_start_offset <= self.next_offset) {
            return fail(format!(
                "log start {} outside [first segment {first_base}, log end {}]",
                self.log_start_offset, self.next_offset
            ));
        }
        if active_base > self.next_offset {
            return fail(format!(
                "active segment {active_base} starts after the log end {}",
                self.next_offset
            ));
        }
        self.epochs.check(self.log_start_offset, self.next_offset)?;
        if log_end_offset != self.next_offset {
            return fail(format!(
                "published log end {log_end_offset} differs from {}",
                self.next_offset
            ));
        }
        if flushed > self.next_offset {
            return fail(format!(
                "flushed up to {flushed}, beyond the log end {}",
                self.next_offset
            ));
        }
        if let Some(first_dirty) = self.cleaner.first_dirty
            && first_dirty > self.next_offset
        {
            return fail(format!(
                "cleaner checkpoint {first_dirty} beyond the log end {}",
                self.next_offset
            ));
        }
        check_active_indexes(active, self.next_offset)
    }

    /// The O(1) part, after every append: the segment list's ends and the newest index
    /// entries. Panics: a violation is a bug in the append path, and appending on top of it
    /// would spread the damage.
    pub(super) fn assert_invariants_after_append(&self, log: &Log) {
        let (&active_base, active) = self
            .segments
            .iter()
            .next_back()
            .expect("a log always has an active segment");
        assert!(
            active.active.is_some(),
            "{}: the last segment is active",
            log.tp
        );
        assert!(
            active_base <= self.next_offset && self.log_start_offset <= self.next_offset,
            "{}: segment {active_base}, log start {}, log end {}",
            log.tp,
            self.log_start_offset,
            self.next_offset
        );
        assert!(
            active.size <= i32::MAX as u64,
            "{}: active segment too large",
            log.tp
        );
        if let Some(index) = active.active.as_ref().map(|a| &a.index) {
            let from_offsets = index.offsets.len().saturating_sub(2);
            let from_times = index.times.len().saturating_sub(2);
            if let Err(what) = check_entries(
                &index.offsets[from_offsets..],
                &index.times[from_times..],
                active,
                self.next_offset,
            ) {
                panic!("{}: {what}", log.tp);
            }
        }
        #[cfg(debug_assertions)]
        self.assert_all(log);
    }

    /// All invariants, in debug builds (tests), after every change of the log.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(crate) fn assert_all(&self, log: &Log) {
        if let Err(what) = self.check_invariants(log.log_end_offset(), log.durability().flushed()) {
            panic!("{}: log invariant violated: {what}", log.tp);
        }
    }
}

fn check_active_indexes(active: &Segment, next_offset: i64) -> Result<(), String> {
    let Some(index) = active.active.as_ref().map(|a| &a.index) else {
        return Err("the active segment has no in-memory index".into());
    };
    if index.max_timestamp > active.max_timestamp {
        return Err(format!(
            "segment {}: index max timestamp {} above the segment's {}",
            active.base_offset(),
            index.max_timestamp,
            active.max_timestamp
        ));
    }
    check_entries(&index.offsets, &index.times, active, next_offset)
}

/// Offset entries strictly increasing in offset and position, within the segment; time
/// entries strictly increasing in timestamp, not decreasing in offset.
fn check_entries(
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
    segment: &Segment,
    next_offset: i64,
) -> Result<(), String> {
    let base = segment.base_offset();
    for pair in offsets.windows(2) {
        if pair[1].relative_offset <= pair[0].relative_offset
            || pair[1].position <= pair[0].position
        {
            return Err(format!(
                "segment {base}: offset index not increasing: {pair:?}"
            ));
        }
    }
    if let Some(last) = offsets.last()
        && (u64::from(last.position) >= segment.size
            || base + i64::from(last.relative_offset) >= next_offset)
    {
        return Err(format!(
            "segment {base}: index entry {last:?} beyond the segment ({} bytes, log end {next_offset})",
            segment.size
        ));
    }
    for pair in times.windows(2) {
        if pair[1].timestamp <= pair[0].timestamp
            || pair[1].relative_offset < pair[0].relative_offset
        {
            return Err(format!(
                "segment {base}: time index not increasing: {pair:?}"
            ));
        }
    }
    Ok(())
}

impl Log {
    /// Checks every invariant of the log's in-memory state (see `LogInner::check_invariants`).
    /// For tests and diagnostics; the log checks itself as it goes.
    pub fn check_invariants(&self) -> Result<(), String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.check_invariants(self.log_end_offset(), self.durability().flushed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_record::{BatchBuilder, Compression, OwnedRecord};

    use crate::{LogConfig, LogManager, ManagerConfig, ManualClock, TopicPartition};

    fn append(log: &crate::Log, records: usize) {
        let mut builder = BatchBuilder::new(Compression::None);
        for _ in 0..records {
            builder.push(OwnedRecord::new(None, Some(vec![7; 300]), 1_000));
        }
        log.append(&mut builder.build().unwrap(), 0).unwrap();
    }

    #[test]
    fn a_broken_invariant_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::new(dir.path());
        config.default_log_config = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        let manager = LogManager::open_with_clock(config, Arc::new(ManualClock::new(0))).unwrap();
        let log = manager.get_or_create(&TopicPartition::new("t", 0)).unwrap();
        for _ in 0..40 {
            append(&log, 3);
        }
        log.check_invariants().unwrap();
        let mut inner = log.inner.lock().unwrap();
        assert!(inner.segments.len() > 2, "the appends rolled segments");

        inner.next_offset -= 1;
        let err = inner.check_invariants(log.log_end_offset(), 0).unwrap_err();
        assert!(err.contains("published log end"), "{err}");
        inner.next_offset += 1;

        inner.log_start_offset = inner.next_offset + 1;
        let err = inner.check_invariants(log.log_end_offset(), 0).unwrap_err();
        assert!(err.contains("log start"), "{err}");
        inner.log_start_offset = 0;

        let active = inner.active();
        let index = &mut active.active.as_mut().unwrap().index;
        assert!(
            index.offsets.len() >= 2,
            "the active segment has index entries"
        );
        index.offsets.swap(0, 1);
        let err = inner.check_invariants(log.log_end_offset(), 0).unwrap_err();
        assert!(err.contains("offset index not increasing"), "{err}");
        let index = &mut inner.active().active.as_mut().unwrap().index;
        index.offsets.swap(0, 1);
        inner.check_invariants(log.log_end_offset(), 0).unwrap();
    }
}
