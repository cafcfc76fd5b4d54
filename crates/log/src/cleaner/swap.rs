//! Swapping cleaned segments in, crash-safely, and finishing an interrupted swap at startup.
//!
//! The protocol:
//! 1. the `<base>.*.cleaned` files are written and synced, and the directory synced;
//! 2. `<base>.swapend` records where the replaced range ends (synced, directory synced);
//! 3. under the partition lock, briefly: the group's segments are reserved (retention and
//!    DeleteRecords leave them alone);
//! 4. `<base>.log.cleaned` → `<base>.log.swap`, indexes likewise, directory synced: the
//!    commit point;
//! 5. under the partition lock, briefly: every replaced segment's files → `.deleted`, the
//!    `.swap` files → live names, the segment map swapped; no sync in between;
//! 6. directory synced; then `.deleted` files and `.swapend` are removed.
//!
//! No fsync runs under the lock (appends and fetches wait on it), so the renames of step 5
//! may reach the disk in any order. Startup ([`complete_swaps`]) copes: a crash before 4
//! leaves the old segments (and a marker beside a `.cleaned` log, which it removes); after 4
//! either a `.swap` remains, which it installs in place of every segment in
//! `[base, swapend)`, or the marker remains beside a live `<base>.log` that is the new one,
//! and it removes the old segments that log overlaps. Either the old or the new segment
//! set, never a mix. Tests crash the process at each step ([`CrashPoint`]) and lay out the
//! states a power loss could leave.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Group, Written};
use crate::log::Log;
use crate::scan::{ScanStep, SegmentScanner};
use crate::segment::{
    INDEX_SUFFIX, LOG_SUFFIX, Segment, SegmentFiles, TIME_INDEX_SUFFIX, segment_file_name,
};
use crate::storage::{Storage, remove_if_present, write_file};
use crate::{LogError, Result, TopicPartition};

/// Suffix of a rewritten segment being written.
const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of a rewritten segment that replaces the old ones (the commit point).
const SWAP_SUFFIX: &str = "swap";
/// Suffix of a replaced segment's files, removed once the swap is complete.
const DELETED_SUFFIX: &str = "deleted";
/// `<base>.swapend` holds the offset where the replaced segments end, so that recovery can
/// finish a swap even when the rewritten segment lost its last records.
const SWAP_END_SUFFIX: &str = "swapend";

/// Fault injection for crash tests: when set to a [`CrashPoint`] step, the process aborts
/// there (like a SIGKILL: no unwinding, no cleanup). Zero, the default, never aborts.
static CRASH_POINT: AtomicU32 = AtomicU32::new(0);

/// Steps of a cleaning pass where a crash test can stop the process.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CrashPoint {
    /// The `.cleaned` files are written and synced.
    CleanedWritten = 1,
    /// The `.swapend` marker is durable.
    SwapEndWritten = 2,
    /// `.cleaned` → `.swap` done: the commit point.
    Committed = 3,
    /// The first replaced segment's files are renamed `.deleted`.
    OldPartlyDeleted = 4,
    /// The new log file has its live name; its indexes do not yet.
    LogLive = 5,
}

static CRASH_SKIPS: AtomicU32 = AtomicU32::new(0);
static CRASH_MIN_GROUP: AtomicU32 = AtomicU32::new(0);

/// Aborts the process the `skip + 1`-th time a pass reaches `point` while swapping a group
/// of at least `min_group` segments (crash tests only).
#[doc(hidden)]
pub fn set_crash_point(point: Option<CrashPoint>, skip: u32, min_group: u32) {
    CRASH_SKIPS.store(skip, Ordering::SeqCst);
    CRASH_MIN_GROUP.store(min_group, Ordering::SeqCst);
    CRASH_POINT.store(point.map_or(0, |p| p as u32), Ordering::SeqCst);
}

pub(super) fn crash_point(point: CrashPoint, group: usize) {
    if CRASH_POINT.load(Ordering::Relaxed) == point as u32
        && group >= CRASH_MIN_GROUP.load(Ordering::Relaxed) as usize
        && CRASH_SKIPS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
    {
        std::process::abort();
    }
}

impl Log {
    /// Replaces the group's segments with the cleaned one. `Ok(false)` when the log changed
    /// meanwhile (retention, DeleteRecords, deletion) and nothing was swapped; then, and on
    /// an error before the commit point, the cleaned files are removed here. An error past
    /// the commit point takes the log offline and leaves the files for the restart.
    ///
    /// No fsync runs under the partition lock: appends and fetches wait on that lock. The
    /// lock is taken twice, briefly: to reserve the group's segments (retention and
    /// DeleteRecords leave reserved segments in place until the swap is done), and to rename
    /// the old files aside and the new ones live and swap the segment map, a handful of
    /// renames with no sync between them. Crash safety does not rely on the order in which
    /// those renames reach the disk: [`complete_swaps`] decides from the `.swapend` marker
    /// and the names present (see the module doc).
    pub(super) fn swap_in(
        &self,
        group: &Group,
        paths: &CleanedPaths,
        written: &Written,
    ) -> Result<bool> {
        let base = group.segments[0].base();
        let segments = group.segments.len();
        crash_point(CrashPoint::CleanedWritten, segments);
        // The cleaned files' names are durable before the marker that refers to them.
        let storage = self.storage();
        let marked = storage
            .sync_dir(self.dir())
            .and_then(|()| {
                write_synced(
                    storage,
                    &paths.swap_end,
                    format!("{}\n", group.end).as_bytes(),
                )
            })
            .and_then(|()| storage.sync_dir(self.dir()));
        if let Err(err) = marked {
            paths.abandon(storage, self.dir());
            return Err(err.into());
        }
        crash_point(CrashPoint::SwapEndWritten, segments);
        if !self.reserve_for_swap(group, base..group.end)? {
            paths.abandon(storage, self.dir());
            return Ok(false);
        }
        // The commit point: a `.log.swap` exists and its name is durable.
        let committed = paths
            .cleaned
            .iter()
            .zip(&paths.swap)
            .try_for_each(|(cleaned, swap)| storage.rename(cleaned, swap));
        if let Err(err) = committed {
            // Before the `.log.swap` name (renamed first) exists nothing is committed; after
            // it, the restart finishes the swap, as after any failure past this point.
            self.release_swap_reservation();
            if paths.swap[0].exists() {
                self.fail_cleaner_swap(&err);
            } else {
                paths.abandon(storage, self.dir());
            }
            return Err(err.into());
        }
        let installed = storage.sync_dir(self.dir()).and_then(|()| {
            crash_point(CrashPoint::Committed, segments);
            self.install_swapped(group, paths, written)
        });
        let doomed = match installed {
            Ok(doomed) => doomed,
            Err(err) => {
                self.release_swap_reservation();
                self.fail_cleaner_swap(&err);
                return Err(LogError::Io(err));
            }
        };
        // The renames are durable before the marker goes: without the marker, a restart
        // would not know that a live `<base>.log` replaces the segments after it.
        if let Err(err) = storage.sync_dir(self.dir()) {
            self.fail_cleaner_swap(&err);
            return Err(LogError::Io(err));
        }
        for path in doomed {
            let _ = storage.remove_file(&path);
        }
        let _ = storage.remove_file(&paths.swap_end);
        Ok(true)
    }

    /// Marks the group's segments as being swapped, if they are all still the log's.
    fn reserve_for_swap(&self, group: &Group, range: std::ops::Range<i64>) -> Result<bool> {
        let mut inner = self.lock_for_cleaner()?;
        assert!(
            inner.cleaner.swapping.is_none(),
            "one cleaning pass per log at a time"
        );
        let current = group.segments.iter().all(|s| {
            inner
                .segments
                .get(&s.base())
                .is_some_and(|live| Arc::ptr_eq(&live.files, &s.files) && live.active.is_none())
        });
        if current {
            inner.cleaner.swapping = Some(range);
        }
        Ok(current)
    }

    /// Under the lock: renames the replaced segments' files `.deleted` and the `.swap` files
    /// live, and puts the new segment in the map. Returns the `.deleted` files.
    fn install_swapped(
        &self,
        group: &Group,
        paths: &CleanedPaths,
        written: &Written,
    ) -> io::Result<Vec<PathBuf>> {
        let base = group.segments[0].base();
        let segments = group.segments.len();
        let mut inner = self.lock_for_cleaner().map_err(io::Error::other)?;
        let reserved = inner.cleaner.swapping.take();
        assert_eq!(reserved, Some(base..group.end), "the swap's reservation");
        assert!(
            group.segments.iter().all(|s| inner
                .segments
                .get(&s.base())
                .is_some_and(|live| Arc::ptr_eq(&live.files, &s.files))),
            "reserved segments stay in the log until the swap installs"
        );
        let mut doomed = Vec::new();
        for segment in &group.segments {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                let live = segment.files.path(suffix);
                let deleted = with_suffix(&live, DELETED_SUFFIX);
                match self.storage().rename(&live, &deleted) {
                    Ok(()) => {
                        doomed.push(deleted);
                        crash_point(CrashPoint::OldPartlyDeleted, segments);
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        for (swap, live) in paths.swap.iter().zip(&paths.live) {
            self.storage().rename(swap, live)?;
            crash_point(CrashPoint::LogLive, segments);
        }
        for segment in &group.segments {
            inner.segments.remove(&segment.base());
        }
        let files = SegmentFiles::new(self.dir(), base, self.file_cache().clone());
        let now = self.clock().now_ms();
        inner.segments.insert(
            base,
            Segment {
                files,
                size: written.size,
                max_timestamp: written.max_timestamp,
                roll_start_ms: now,
                active: None,
            },
        );
        #[cfg(debug_assertions)]
        inner.assert_all(self);
        Ok(doomed)
    }
}

/// The paths of a cleaned segment in its three states: `.cleaned`, `.swap`, live.
pub(super) struct CleanedPaths {
    pub(super) cleaned: [PathBuf; 3],
    swap: [PathBuf; 3],
    live: [PathBuf; 3],
    swap_end: PathBuf,
}

impl CleanedPaths {
    pub(super) fn new(dir: &Path, base: i64) -> Self {
        let live = [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .map(|suffix| dir.join(segment_file_name(base, suffix)));
        CleanedPaths {
            cleaned: live.clone().map(|p| with_suffix(&p, CLEANED_SUFFIX)),
            swap: live.clone().map(|p| with_suffix(&p, SWAP_SUFFIX)),
            live,
            swap_end: dir.join(segment_file_name(base, SWAP_END_SUFFIX)),
        }
    }

    /// Removes what a failed or pointless attempt left (never live files). Only before the
    /// commit point: a `.swap` file is committed data. The marker goes first, durably: a
    /// marker without its `.cleaned` log means, to a restart, a swap that was installed.
    pub(super) fn abandon(&self, storage: &dyn Storage, dir: &Path) {
        match storage.remove_file(&self.swap_end) {
            Ok(()) => {
                if let Err(err) = storage.sync_dir(dir) {
                    // Keep the cleaned files: with the marker possibly still on disk, they
                    // tell a restart that the swap was never committed.
                    tracing::warn!(error = %err, "could not sync the removal of a swap marker");
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(error = %err, "could not remove a swap marker");
                return;
            }
        }
        for path in self.cleaned.iter().chain(&self.swap) {
            let _ = storage.remove_file(path);
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn write_synced(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file = write_file(storage, path, bytes)?;
    storage.sync_all(&file)
}

/// At startup, before segments are listed: finishes every swap whose commit point was
/// reached. A swap of base `b` was committed when `<b>.log.swap` exists, or when the
/// `<b>.swapend` marker exists without `<b>.log.cleaned` (the `.swap` file was renamed live;
/// the marker goes only after that rename is durable, and it is written only after the
/// `.cleaned` names are). Either way the segments the swap replaces are removed and the
/// `.swap` files renamed live. A marker beside a `.cleaned` log is a swap that never reached
/// its commit point: only the marker is removed. Returns whether any swap was finished.
/// `.cleaned` and `.deleted` leftovers are removed by the segment listing.
pub(crate) fn complete_swaps(
    storage: &dyn Storage,
    tp: &TopicPartition,
    dir: &Path,
) -> io::Result<bool> {
    let mut swaps = Vec::new();
    let mut markers = Vec::new();
    let mut cleaned = Vec::new();
    let mut live_logs = Vec::new();
    let mut stray_indexes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((base, suffix)) = crate::segment::parse_segment_file_name(name) else {
            continue;
        };
        match suffix {
            "log.swap" => swaps.push(base),
            "log.cleaned" => cleaned.push(base),
            SWAP_END_SUFFIX => markers.push(base),
            LOG_SUFFIX => live_logs.push(base),
            "index.swap" | "timeindex.swap" => stray_indexes.push((base, entry.path())),
            _ => {}
        }
    }
    let mut finished = Vec::new();
    for &base in &markers {
        if swaps.contains(&base) {
            continue;
        }
        let paths = CleanedPaths::new(dir, base);
        if cleaned.contains(&base) || !live_logs.contains(&base) {
            // Never committed (or its segment is gone since): the marker is all there is
            // to remove; the listing removes the `.cleaned` files after it.
            storage.remove_file(&paths.swap_end)?;
            storage.sync_dir(dir)?;
            continue;
        }
        finished.push((base, paths.live[0].clone()));
    }
    for &base in &swaps {
        finished.push((base, CleanedPaths::new(dir, base).swap[0].clone()));
    }
    finished.sort_unstable();
    for (base, new_log) in &finished {
        let base = *base;
        let paths = CleanedPaths::new(dir, base);
        let end = match std::fs::read_to_string(&paths.swap_end)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
        {
            Some(end) => end,
            // The end marker is written before the commit point; without it, fall back to
            // Kafka's rule: replace what the new segment's own offsets cover.
            None => end_of_segment(new_log, base)?,
        };
        let replaced = if new_log == &paths.live[0] {
            // The new log has its live name; every other live log in the range is an old one
            // it replaces, as far as it reaches. Only those it overlaps are removed: had a
            // marker been left by anything else, `<base>.log` would be an old segment, which
            // overlaps none of the next ones, and nothing would be lost.
            (base + 1)..end.min(end_of_segment(new_log, base)?)
        } else {
            base..end
        };
        for &old in live_logs.iter().filter(|b| replaced.contains(*b)) {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                remove_if_present(storage, &dir.join(segment_file_name(old, suffix)))?;
            }
        }
        for (swap, live) in paths.swap.iter().zip(&paths.live) {
            match storage.rename(swap, live) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        storage.sync_dir(dir)?;
        remove_if_present(storage, &paths.swap_end)?;
        tracing::warn!(partition = %tp, segment = base, end, "finished an interrupted cleaner swap");
    }
    // Index swaps without their log: the swap never reached its commit point, or finished;
    // either way they are not needed (indexes are rebuilt).
    for (base, path) in stray_indexes {
        if !finished.iter().any(|(b, _)| *b == base) {
            let _ = storage.remove_file(&path);
        }
    }
    Ok(!finished.is_empty())
}

/// The offset after the last batch of a segment file whose first offset is `base`.
fn end_of_segment(path: &Path, base: i64) -> io::Result<i64> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut scanner = SegmentScanner::new(&file, 0, size, crate::segment::SCAN_WINDOW);
    let mut next = base + 1;
    while let ScanStep::Batch(info, _) = scanner.next_header()? {
        next = info.last_offset + 1;
    }
    Ok(next)
}
