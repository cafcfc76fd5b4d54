//! The log cleaner's access to a log ([`crate::cleaner`]): snapshots of what to clean, the
//! files to read, and the outcome of a pass.

use std::fs::File;
use std::io;
use std::sync::{Arc, MutexGuard};

use super::{Log, LogInner};
use crate::LogError;
use crate::Result;
use crate::cleaner::{CleaningReport, SegmentRef, Snapshot, TombstoneHorizon};
use crate::clock::Clock;
use crate::file_cache::FileCache;
use crate::segment::Located;

/// The log cleaner's access to a log ([`crate::cleaner`]).
impl Log {
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub(crate) fn file_cache(&self) -> &Arc<FileCache> {
        &self.cache
    }

    pub(crate) fn lock_for_cleaner(&self) -> Result<MutexGuard<'_, LogInner>> {
        self.lock()
    }

    /// What a cleaning pass needs; `None` unless `cleanup.policy` includes compact.
    pub(crate) fn cleaner_snapshot(&self) -> Result<Option<Snapshot>> {
        let inner = self.lock()?;
        if !inner.config.cleanup_policy.compact {
            return Ok(None);
        }
        let active_base = *inner
            .segments
            .keys()
            .next_back()
            .expect("a log always has an active segment");
        let first_base = *inner.segments.keys().next().expect("active segment");
        let inactive = inner
            .segments
            .values()
            .filter(|s| s.active.is_none() && s.base_offset() < active_base)
            .map(|s| SegmentRef {
                files: s.files.clone(),
                size: s.size,
                max_timestamp: s.max_timestamp,
            })
            .collect();
        Ok(Some(Snapshot {
            config: inner.config.clone(),
            inactive,
            active_base,
            first_dirty: inner
                .cleaner
                .first_dirty
                .unwrap_or(first_base)
                .max(inner.log_start_offset),
            producer_last_offsets: inner.producers.last_offsets(),
            horizon: inner.cleaner.horizon,
        }))
    }

    /// The open file of a segment the cleaner reads; fails with `NotFound` if retention or a
    /// swap removed it since the snapshot. A segment the file cache closed is opened without
    /// the lock.
    pub(crate) fn open_cleaner_file(&self, segment: &SegmentRef) -> Result<Arc<File>> {
        let removed = || {
            LogError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: segment {} was removed during cleaning",
                    self.tp, segment.files.base_offset
                ),
            ))
        };
        let closed = {
            let inner = self.lock()?;
            match inner.segments.get(&segment.files.base_offset) {
                Some(live) if Arc::ptr_eq(&live.files, &segment.files) && live.active.is_none() => {
                    match live.locate(inner.config.index_interval_bytes) {
                        Located::Open(view) => return Ok(view.file().clone()),
                        Located::Closed(closed) => closed,
                    }
                }
                _ => return Err(removed()),
            }
        };
        match closed.open()? {
            Some(open) => Ok(open.file.clone()),
            None => Err(removed()),
        }
    }

    pub(crate) fn set_tombstone_horizon(&self, horizon: TombstoneHorizon) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.cleaner.horizon == TombstoneHorizon::Unknown {
            inner.cleaner.horizon = horizon;
        }
    }

    pub(crate) fn finish_cleaning(
        &self,
        end: i64,
        horizon: TombstoneHorizon,
        report: CleaningReport,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first_dirty = inner.cleaner.first_dirty.map_or(end, |d| d.max(end));
        inner.cleaner.first_dirty = Some(first_dirty);
        inner.cleaner.horizon = horizon;
        inner.cleaner.last_report = Some(report);
    }

    /// Ends a swap's reservation without installing it (the swap failed).
    pub(crate) fn release_swap_reservation(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cleaner
            .swapping = None;
    }

    pub(crate) fn fail_cleaner_swap(&self, err: &io::Error) {
        self.go_offline(format!(
            "cleaner swap failed past its commit point ({err}); a restart finishes it"
        ));
    }

    /// Offsets below this were compacted (`None`: never cleaned).
    pub fn cleaner_first_dirty_offset(&self) -> Option<i64> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cleaner
            .first_dirty
    }

    /// The last cleaning pass over this log since it was opened.
    pub fn last_cleaning(&self) -> Option<CleaningReport> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cleaner
            .last_report
            .clone()
    }
}
