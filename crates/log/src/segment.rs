//! One segment: `<base offset, 20 digits>.log` with its `.index` and `.timeindex`.
//!
//! Invariants (checked by recovery, relied on everywhere else):
//! - the `.log` file holds whole batches back to back from position 0 to `size`; bytes past
//!   `size` are never read;
//! - every batch's offsets lie in `[base_offset, base_offset + u32::MAX]`, so relative offsets
//!   fit the index format, and batches are in increasing offset order;
//! - `size <= i32::MAX`, so positions fit the index format;
//! - the active segment is the only one written to; its indexes live in memory and reach
//!   their files when it is sealed (rolled) or the log is closed. Recovery rebuilds them for
//!   every segment after the recovery point, so an index file is never trusted for data
//!   that was not flushed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::file_cache::FileCache;
use crate::index::{
    self, OffsetEntry, TIME_ENTRY_SIZE, TimeEntry, decode_offset_index, decode_time_index,
};
use crate::record_set::BatchSummary;
use crate::scan::{BatchInfo, ScanStep, SegmentScanner};
use crate::storage::{Storage, remove_if_present, write_file};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Window used when walking batch headers.
pub(crate) const SCAN_WINDOW: usize = 16 * 1024;
/// Window used when reading whole batches (recovery, index rebuild).
pub(crate) const RECOVERY_WINDOW: usize = 1 << 20;

pub(crate) fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// Parses `00000000000000001234.log` into 1234.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, suffix))
}

/// A segment's open file and loaded indexes.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub file: Arc<File>,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

/// The files of a segment and the cache slot that holds them open while inactive.
#[derive(Debug)]
pub(crate) struct SegmentFiles {
    pub base_offset: i64,
    dir: PathBuf,
    cache: Arc<FileCache>,
    slot: Mutex<Option<Arc<OpenSegment>>>,
    referenced: AtomicBool,
}

impl SegmentFiles {
    pub fn new(dir: &Path, base_offset: i64, cache: Arc<FileCache>) -> Arc<Self> {
        Arc::new(SegmentFiles {
            base_offset,
            dir: dir.to_path_buf(),
            cache,
            slot: Mutex::new(None),
            referenced: AtomicBool::new(false),
        })
    }

    pub fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(segment_file_name(self.base_offset, suffix))
    }

    pub fn storage(&self) -> &dyn Storage {
        self.cache.storage()
    }

    pub fn take_referenced(&self) -> bool {
        self.referenced.swap(false, Ordering::SeqCst)
    }

    /// Closes the slot if nobody is using it right now. `None` when busy, otherwise whether
    /// something was closed.
    pub fn try_close(&self) -> Option<bool> {
        let mut slot = self.slot.try_lock().ok()?;
        Some(slot.take().is_some())
    }

    fn install(self: &Arc<Self>, open: Arc<OpenSegment>) {
        let previous = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(open);
        if previous.is_none() {
            self.cache.opened(self);
        }
    }

    /// The open file and indexes, if the file cache holds them (marks them recently used).
    pub fn cached(&self) -> Option<Arc<OpenSegment>> {
        let open = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        self.referenced.store(true, Ordering::SeqCst);
        Some(open)
    }

    /// The open file and indexes of an inactive segment of `size` bytes, opening and loading
    /// (or rebuilding) them if the cache had closed them.
    pub fn open_inactive(
        self: &Arc<Self>,
        size: u64,
        index_interval: u32,
    ) -> io::Result<Arc<OpenSegment>> {
        self.referenced.store(true, Ordering::SeqCst);
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = slot.as_ref() {
            return Ok(open.clone());
        }
        let file = File::open(self.path(LOG_SUFFIX))?;
        let indexes = self.load_indexes(size);
        let (offsets, times) = match indexes {
            Ok(indexes) => indexes,
            Err(reason) => {
                tracing::warn!(
                    segment = %self.path(LOG_SUFFIX).display(),
                    %reason,
                    "index unusable, rebuilding it from the log"
                );
                let rebuilt = rebuild_indexes(&file, size, self.base_offset, index_interval)?;
                if let Err(err) = self.write_indexes(&rebuilt.offsets, &rebuilt.times) {
                    tracing::warn!(error = %err, "could not persist rebuilt index");
                }
                (rebuilt.offsets, rebuilt.times)
            }
        };
        let open = Arc::new(OpenSegment {
            file: Arc::new(file),
            offsets,
            times,
        });
        *slot = Some(open.clone());
        drop(slot);
        self.cache.opened(self);
        Ok(open)
    }

    fn load_indexes(&self, size: u64) -> Result<(Vec<OffsetEntry>, Vec<TimeEntry>), String> {
        let read = |suffix| std::fs::read(self.path(suffix)).map_err(|e| format!("{suffix}: {e}"));
        let offsets = decode_offset_index(&read(INDEX_SUFFIX)?, size)?;
        let times = decode_time_index(&read(TIME_INDEX_SUFFIX)?)?;
        Ok((offsets, times))
    }

    /// Writes both index files; returns the open handles so the caller can fsync them.
    pub fn write_indexes(
        &self,
        offsets: &[OffsetEntry],
        times: &[TimeEntry],
    ) -> io::Result<[File; 2]> {
        let write = |suffix, bytes: Vec<u8>| -> io::Result<File> {
            write_file(self.storage(), &self.path(suffix), &bytes)
        };
        Ok([
            write(INDEX_SUFFIX, index::encode_offset_index(offsets))?,
            write(TIME_INDEX_SUFFIX, index::encode_time_index(times))?,
        ])
    }

    /// The newest timestamp recorded in the `.timeindex` file, without loading it.
    pub fn last_indexed_timestamp(&self) -> Option<i64> {
        let file = File::open(self.path(TIME_INDEX_SUFFIX)).ok()?;
        let len = file.metadata().ok()?.len();
        if len == 0 || len % TIME_ENTRY_SIZE as u64 != 0 {
            return None;
        }
        let mut entry = [0u8; 8];
        file.read_exact_at(&mut entry, len - TIME_ENTRY_SIZE as u64)
            .ok()?;
        Some(i64::from_be_bytes(entry))
    }

    /// Empties the cache slot (the segment becomes active again, or goes): readers that hold
    /// the open file keep it, later ones find the segment anew.
    pub fn forget_open(&self) {
        let taken = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if taken.is_some() {
            self.cache.closed();
        }
    }

    /// Removes the three files. Readers holding the open file keep reading it.
    pub fn delete(&self) -> io::Result<()> {
        self.forget_open();
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            remove_if_present(self.storage(), &self.path(suffix))?;
        }
        Ok(())
    }
}

impl Drop for SegmentFiles {
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(|e| e.into_inner());
        if slot.take().is_some() {
            self.cache.closed();
        }
    }
}

/// Accumulates the sparse indexes while batches are appended or scanned.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    base_offset: i64,
    interval: u32,
    bytes_since_entry: u64,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
}

impl IndexBuilder {
    pub fn new(base_offset: i64, interval: u32) -> Self {
        IndexBuilder {
            base_offset,
            interval,
            bytes_since_entry: 0,
            offsets: Vec::new(),
            times: Vec::new(),
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
        }
    }

    /// Continues from indexes loaded from disk; the caller then feeds the batches after the
    /// last indexed one.
    pub fn resume(
        base_offset: i64,
        interval: u32,
        offsets: Vec<OffsetEntry>,
        times: Vec<TimeEntry>,
    ) -> Self {
        let (max_timestamp, offset_of_max_timestamp) =
            times.last().map_or((-1, base_offset), |t| {
                (t.timestamp, base_offset + i64::from(t.relative_offset))
            });
        IndexBuilder {
            base_offset,
            interval,
            bytes_since_entry: 0,
            offsets,
            times,
            max_timestamp,
            offset_of_max_timestamp,
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        debug_assert!(offset >= self.base_offset && offset - self.base_offset <= u32::MAX as i64);
        (offset - self.base_offset) as u32
    }

    /// Records a batch at `info.position`; adds index entries once `interval` bytes of log
    /// have passed since the last entry (Kafka's rule).
    pub fn add(&mut self, info: &BatchInfo) {
        if info.max_timestamp > self.max_timestamp {
            self.max_timestamp = info.max_timestamp;
            self.offset_of_max_timestamp = info.last_offset;
        }
        if self.bytes_since_entry >= u64::from(self.interval) {
            self.offsets.push(OffsetEntry {
                relative_offset: self.relative(info.last_offset),
                position: info.position as u32,
            });
            self.push_time_entry();
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(info.size);
    }

    fn push_time_entry(&mut self) {
        let newer = self
            .times
            .last()
            .is_none_or(|last| self.max_timestamp > last.timestamp);
        if self.max_timestamp >= 0 && newer {
            let relative_offset = self.relative(self.offset_of_max_timestamp);
            self.times.push(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset,
            });
        }
    }

    /// Adds the final time entry so that the file's last entry is the segment's maximum, as
    /// Kafka does when a segment is rolled or closed.
    pub fn finish(&mut self) {
        self.push_time_entry();
    }

    pub fn is_full(&self, max_offset_entries: usize, max_time_entries: usize) -> bool {
        // One slot is kept for the entry `finish` may add.
        self.offsets.len() >= max_offset_entries || self.times.len() + 1 >= max_time_entries
    }
}

/// Builds indexes by walking all batch headers of `[0, size)`.
pub(crate) fn rebuild_indexes(
    file: &File,
    size: u64,
    base_offset: i64,
    interval: u32,
) -> io::Result<IndexBuilder> {
    let mut builder = IndexBuilder::new(base_offset, interval);
    let mut scanner = SegmentScanner::new(file, 0, size, RECOVERY_WINDOW);
    loop {
        match scanner.next_header()? {
            ScanStep::Batch(info, _) => builder.add(&info),
            ScanStep::End => break,
            ScanStep::Invalid { position, reason } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("segment {base_offset}: invalid batch at {position}: {reason}"),
                ));
            }
        }
    }
    builder.finish();
    Ok(builder)
}

/// A failed append: the error, and whether the file was restored to its previous size.
#[derive(Debug)]
pub(crate) struct AppendFailure {
    pub error: io::Error,
    pub rolled_back: bool,
}

/// The active segment's open file and in-memory indexes.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub file: Arc<File>,
    pub index: IndexBuilder,
}

/// A segment as its log sees it (guarded by the log's lock).
#[derive(Debug)]
pub(crate) struct Segment {
    pub files: Arc<SegmentFiles>,
    /// Bytes of valid batches in the `.log` file.
    pub size: u64,
    /// Largest batch max-timestamp, or -1 when unknown or absent.
    pub max_timestamp: i64,
    /// Clock time from which `segment.ms` is counted.
    pub roll_start_ms: i64,
    /// `Some` only for the active segment.
    pub active: Option<ActiveSegment>,
}

impl Segment {
    pub fn base_offset(&self) -> i64 {
        self.files.base_offset
    }

    /// Creates the three empty files of a new active segment.
    pub fn create(files: Arc<SegmentFiles>, now_ms: i64, interval: u32) -> io::Result<Segment> {
        let storage = files.storage();
        let log = storage.open(
            &files.path(LOG_SUFFIX),
            OpenOptions::new().read(true).write(true).create_new(true),
        );
        let log = match log {
            Ok(log) => log,
            // An empty leftover from a roll that crashed, or an empty log reopened.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let log = storage.open(
                    &files.path(LOG_SUFFIX),
                    OpenOptions::new().read(true).write(true),
                )?;
                if log.metadata()?.len() != 0 {
                    return Err(err);
                }
                log
            }
            Err(err) => return Err(err),
        };
        if let Err(err) = files.write_indexes(&[], &[]) {
            let _ = storage.remove_file(&files.path(LOG_SUFFIX));
            return Err(err);
        }
        let base_offset = files.base_offset;
        Ok(Segment {
            files,
            size: 0,
            max_timestamp: -1,
            roll_start_ms: now_ms,
            active: Some(ActiveSegment {
                file: Arc::new(log),
                index: IndexBuilder::new(base_offset, interval),
            }),
        })
    }

    /// Appends `bytes`, whole batches already validated and summarised in `batches` (their
    /// offsets patched, starting at `first_offset`, and stamped with `leader_epoch`). On failure the file is cut back so that
    /// nothing of the append remains, unless the failure says otherwise.
    pub fn append(
        &mut self,
        bytes: &[u8],
        batches: &[BatchSummary],
        first_offset: i64,
        leader_epoch: i32,
    ) -> Result<(), AppendFailure> {
        let active = self
            .active
            .as_mut()
            .expect("append to the active segment only");
        let storage = self.files.storage();
        if let Err(error) = storage.write_at(&active.file, bytes, self.size) {
            let rolled_back = match storage.set_len(&active.file, self.size) {
                Ok(()) => true,
                Err(cut) => {
                    tracing::error!(%error, %cut, "partial append could not be removed");
                    false
                }
            };
            return Err(AppendFailure { error, rolled_back });
        }
        for batch in batches {
            let base_offset = first_offset + batch.relative_base;
            active.index.add(&BatchInfo {
                position: self.size + u64::from(batch.position),
                size: batch.size,
                base_offset,
                last_offset: base_offset + i64::from(batch.last_offset_delta),
                max_timestamp: batch.max_timestamp,
                leader_epoch,
            });
        }
        self.size += bytes.len() as u64;
        self.max_timestamp = self.max_timestamp.max(active.index.max_timestamp);
        Ok(())
    }

    /// Turns the active segment into an inactive one: writes its index files and hands its
    /// open file and indexes to the cache. Returns the files that still need an fsync.
    pub fn seal(&mut self) -> Vec<Arc<File>> {
        let Some(mut active) = self.active.take() else {
            return Vec::new();
        };
        active.index.finish();
        let mut to_sync = vec![active.file.clone()];
        match self
            .files
            .write_indexes(&active.index.offsets, &active.index.times)
        {
            Ok(index_files) => to_sync.extend(index_files.map(Arc::new)),
            Err(err) => {
                // Indexes are rebuildable: drop the partial files rather than fail the roll.
                tracing::warn!(error = %err, segment = self.base_offset(), "index write failed");
                let storage = self.files.storage();
                let _ = storage.remove_file(&self.files.path(INDEX_SUFFIX));
                let _ = storage.remove_file(&self.files.path(TIME_INDEX_SUFFIX));
            }
        }
        let IndexBuilder { offsets, times, .. } = active.index;
        self.files.install(Arc::new(OpenSegment {
            file: active.file,
            offsets,
            times,
        }));
        to_sync
    }

    /// Writes the active segment's indexes to disk without sealing it (clean shutdown).
    pub fn persist_active_indexes(&mut self) -> io::Result<Vec<Arc<File>>> {
        let Some(active) = self.active.as_mut() else {
            return Ok(Vec::new());
        };
        let mut index = active.index.clone();
        index.finish();
        let files = self.files.write_indexes(&index.offsets, &index.times)?;
        Ok(files.into_iter().map(Arc::new).collect())
    }

    /// What a reader needs of this segment, without touching the filesystem: the active
    /// segment, or an inactive one the file cache holds open. Otherwise the segment's files
    /// and size, for [`Closed::open`] once the log's lock is released.
    pub fn locate(&self, index_interval: u32) -> Located<'_> {
        match &self.active {
            Some(active) => Located::Open(ReadView::Active(active)),
            None => match self.files.cached() {
                Some(open) => Located::Open(ReadView::Inactive(open)),
                None => Located::Closed(Closed {
                    files: self.files.clone(),
                    size: self.size,
                    index_interval,
                }),
            },
        }
    }
}

/// Where a reader finds a segment, decided under the log's lock.
pub(crate) enum Located<'a> {
    Open(ReadView<'a>),
    Closed(Closed),
}

/// An inactive segment the file cache closed: opening it (and loading, perhaps rebuilding,
/// its indexes) is filesystem work, done without the log's lock so that appends never wait
/// on it.
pub(crate) struct Closed {
    files: Arc<SegmentFiles>,
    size: u64,
    index_interval: u32,
}

impl Closed {
    /// The open segment; `None` when it was deleted or replaced (retention, DeleteRecords, a
    /// cleaner swap) since it was located: the caller looks again.
    pub fn open(&self) -> io::Result<Option<Arc<OpenSegment>>> {
        match self.files.open_inactive(self.size, self.index_interval) {
            Ok(open) => Ok(Some(open)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

pub(crate) enum ReadView<'a> {
    Active(&'a ActiveSegment),
    Inactive(Arc<OpenSegment>),
}

impl ReadView<'_> {
    pub fn file(&self) -> &Arc<File> {
        match self {
            ReadView::Active(active) => &active.file,
            ReadView::Inactive(open) => &open.file,
        }
    }

    pub fn offsets(&self) -> &[OffsetEntry] {
        match self {
            ReadView::Active(active) => &active.index.offsets,
            ReadView::Inactive(open) => &open.offsets,
        }
    }

    pub fn times(&self) -> &[TimeEntry] {
        match self {
            ReadView::Active(active) => &active.index.times,
            ReadView::Inactive(open) => &open.times,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_twenty_digits() {
        assert_eq!(
            segment_file_name(1234, LOG_SUFFIX),
            "00000000000000001234.log"
        );
        assert_eq!(
            parse_segment_file_name("00000000000000001234.log"),
            Some((1234, "log"))
        );
        assert_eq!(
            parse_segment_file_name("00000000000000001234.timeindex"),
            Some((1234, "timeindex"))
        );
        assert_eq!(parse_segment_file_name("1234.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000123x.log"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000000.log.deleted"),
            Some((0, "log.deleted"))
        );
    }

    #[test]
    fn index_builder_follows_the_interval() {
        let mut builder = IndexBuilder::new(100, 4096);
        let mut position = 0u64;
        for i in 0..10i64 {
            let info = BatchInfo {
                position,
                size: 3000,
                base_offset: 100 + i * 10,
                last_offset: 109 + i * 10,
                max_timestamp: 1000 + i,
                leader_epoch: 0,
            };
            builder.add(&info);
            position += 3000;
        }
        builder.finish();
        // Entries at the 3rd, 5th, 7th and 9th batch: after 6000 bytes, then every 6000.
        let positions: Vec<u32> = builder.offsets.iter().map(|e| e.position).collect();
        assert_eq!(positions, [6000, 12_000, 18_000, 24_000]);
        assert_eq!(builder.offsets[0].relative_offset, 29);
        assert_eq!(builder.times.last().unwrap().timestamp, 1009);
        assert_eq!(builder.times.last().unwrap().relative_offset, 99);
        assert_eq!(builder.max_timestamp, 1009);
    }
}
