//! Swapping cleaned segments in, crash-safely, and finishing an interrupted swap at startup.
//!
//! The protocol, each step made durable by a directory fsync before the next:
//! 1. `<base>.swapend` records where the replaced range ends;
//! 2. `<base>.log.cleaned` → `<base>.log.swap` (the commit point), indexes likewise;
//! 3. every replaced segment's files → `.deleted`;
//! 4. `<base>.*.swap` → live names; then `.deleted` files and `.swapend` are removed.
//!
//! A crash before 2 leaves the old segments, and startup removes `.cleaned` files; a crash
//! after it leaves a `.swap` that startup installs in place of every segment in
//! `[base, swapend)` ([`complete_swaps`]). Either the old or the new segment set, never a
//! mix. Tests crash the process at each step ([`CrashPoint`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Group, Written};
use crate::log::Log;
use crate::scan::{ScanStep, SegmentScanner};
use crate::segment::{
    INDEX_SUFFIX, LOG_SUFFIX, Segment, SegmentFiles, TIME_INDEX_SUFFIX, segment_file_name,
};
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
    /// meanwhile (retention, DeleteRecords, deletion) and nothing was swapped.
    ///
    /// The protocol, each step made durable by a directory fsync before the next:
    /// 1. `<base>.swapend` records where the replaced range ends;
    /// 2. `<base>.log.cleaned` → `<base>.log.swap` (the commit point), indexes likewise;
    /// 3. every replaced segment's files → `.deleted`;
    /// 4. `<base>.*.swap` → live names; then `.deleted` files and `.swapend` are removed.
    ///
    /// A crash before 2 leaves the old segments, and startup removes `.cleaned` files; a crash
    /// after it leaves a `.swap` that startup installs in place of every segment in
    /// `[base, swapend)` ([`complete_swaps`]). Either the old or the new segment set, never a
    /// mix.
    pub(super) fn swap_in(
        &self,
        group: &Group,
        paths: &CleanedPaths,
        written: &Written,
    ) -> Result<bool> {
        let base = group.segments[0].base();
        crash_point(CrashPoint::CleanedWritten, group.segments.len());
        write_synced(&paths.swap_end, format!("{}\n", group.end).as_bytes())?;
        sync_dir(self.dir())?;
        crash_point(CrashPoint::SwapEndWritten, group.segments.len());
        let mut inner = self.lock_for_cleaner()?;
        let current = group.segments.iter().all(|s| {
            inner
                .segments
                .get(&s.base())
                .is_some_and(|live| Arc::ptr_eq(&live.files, &s.files) && live.active.is_none())
        });
        if !current {
            drop(inner);
            let _ = std::fs::remove_file(&paths.swap_end);
            return Ok(false);
        }
        for (cleaned, swap) in paths.cleaned.iter().zip(&paths.swap) {
            std::fs::rename(cleaned, swap)?;
        }
        // Past the commit point a failure leaves a swap that only a restart can finish.
        let finish = || -> io::Result<Vec<PathBuf>> {
            sync_dir(self.dir())?;
            crash_point(CrashPoint::Committed, group.segments.len());
            let mut doomed = Vec::new();
            for segment in &group.segments {
                for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    let live = segment.files.path(suffix);
                    let deleted = with_suffix(&live, DELETED_SUFFIX);
                    match std::fs::rename(&live, &deleted) {
                        Ok(()) => {
                            doomed.push(deleted);
                            crash_point(CrashPoint::OldPartlyDeleted, group.segments.len());
                        }
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            sync_dir(self.dir())?;
            for (swap, live) in paths.swap.iter().zip(&paths.live) {
                std::fs::rename(swap, live)?;
                crash_point(CrashPoint::LogLive, group.segments.len());
            }
            sync_dir(self.dir())?;
            Ok(doomed)
        };
        let doomed = match finish() {
            Ok(doomed) => doomed,
            Err(err) => {
                drop(inner);
                self.fail_cleaner_swap(&err);
                return Err(LogError::Io(err));
            }
        };
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
        drop(inner);
        for path in doomed {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(&paths.swap_end);
        Ok(true)
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

    /// Removes what a failed or pointless attempt left (never live files).
    pub(super) fn remove_all(&self) {
        for path in self
            .cleaned
            .iter()
            .chain(&self.swap)
            .chain([&self.swap_end])
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// At startup, before segments are listed: finishes every swap whose commit point was
/// reached (a `<base>.log.swap` exists) by removing the segments it replaces and renaming
/// it live. Returns whether any swap was finished. `.cleaned` and `.deleted` leftovers are
/// removed by the segment listing.
pub(crate) fn complete_swaps(tp: &TopicPartition, dir: &Path) -> io::Result<bool> {
    let mut swaps = Vec::new();
    let mut live_logs = Vec::new();
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((base, suffix)) = crate::segment::parse_segment_file_name(name) else {
            continue;
        };
        match suffix {
            "log.swap" => swaps.push(base),
            LOG_SUFFIX => live_logs.push(base),
            "index.swap" | "timeindex.swap" | SWAP_END_SUFFIX => stray.push((base, entry.path())),
            _ => {}
        }
    }
    swaps.sort_unstable();
    for &base in &swaps {
        let paths = CleanedPaths::new(dir, base);
        let end = std::fs::read_to_string(&paths.swap_end)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok());
        let end = match end {
            Some(end) => end,
            None => {
                // The end marker is written before the commit point; without it, fall back
                // to Kafka's rule: replace what the swap segment's own offsets cover.
                let file = File::open(&paths.swap[0])?;
                let size = file.metadata()?.len();
                let mut scanner = SegmentScanner::new(&file, 0, size, crate::segment::SCAN_WINDOW);
                let mut next = base + 1;
                while let ScanStep::Batch(info, _) = scanner.next_header()? {
                    next = info.last_offset + 1;
                }
                next
            }
        };
        for &old in live_logs.iter().filter(|b| (base..end).contains(*b)) {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                match std::fs::remove_file(dir.join(segment_file_name(old, suffix))) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        for (swap, live) in paths.swap.iter().zip(&paths.live) {
            match std::fs::rename(swap, live) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        sync_dir(dir)?;
        let _ = std::fs::remove_file(&paths.swap_end);
        tracing::warn!(partition = %tp, segment = base, end, "finished an interrupted cleaner swap");
    }
    // Index swaps without their log, and end markers without a swap: the swap never reached
    // its commit point, or finished; either way they are not needed (indexes are rebuilt).
    for (base, path) in stray {
        if !swaps.contains(&base) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(!swaps.is_empty())
}
