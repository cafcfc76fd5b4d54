//! The read side of a log: whole batches as file regions (Fetch), lookups by timestamp
//! (ListOffsets), and [`Log::records_from`], the one way to scan a log's records from an
//! offset (metadata replay, `__consumer_offsets` replay, the console's message browser).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sluice_record::{RecordBatch, Records};

use super::{Log, decompression_limit};
use crate::index::{batch_start_at_or_before, offset_for_timestamp, position_for_offset};
use crate::scan::{ScanStep, SegmentScanner};
use crate::segment::{Closed, Located, OpenSegment, ReadView, SCAN_WINDOW, Segment};
use crate::{LogError, Result, TopicPartition};

/// How much [`RecordsFrom`] reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// A byte range of a segment file holding whole batches: ready for `sendfile`, or to be
/// copied with [`FileRegion::read_to_vec`]. Holding it keeps the file open even if retention
/// deletes the segment meanwhile.
#[derive(Debug, Clone)]
pub struct FileRegion {
    file: Arc<File>,
    position: u64,
    len: u64,
}

impl FileRegion {
    /// A region of `file`; the caller vouches that it holds whole batches.
    pub fn new(file: Arc<File>, position: u64, len: u64) -> Self {
        FileRegion {
            file,
            position,
            len,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file, shared (a region handed to another layer keeps it open).
    pub fn shared_file(&self) -> &Arc<File> {
        &self.file
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The copying path: reads the region into memory.
    pub fn read_to_vec(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf)
    }
}

/// The answer to a read, with the offsets a fetch response reports.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches starting with the one that holds the requested offset; `None` when the
    /// requested offset is the log end.
    pub region: Option<FileRegion>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

/// The first record at or after a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp: i64,
}

/// How many times a read looks a segment up again after it vanished between the lookup and
/// the opening (retention, DeleteRecords or a cleaner swap ran meanwhile).
const MAX_LOOKUPS: u32 = 16;

impl Log {
    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// but always at least one batch, and never past the high watermark. An offset between
    /// the high watermark and the log end reads nothing (not an error).
    ///
    /// The lock is held only to find the segment: opening a segment the file cache closed,
    /// and scanning the file, happen without it.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_below(offset, max_bytes, false)
    }

    /// [`Log::read`] up to the log end instead of the high watermark: what a follower copies.
    pub fn read_for_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_below(offset, max_bytes, true)
    }

    fn read_below(&self, offset: i64, max_bytes: usize, to_end: bool) -> Result<ReadResult> {
        let mut segment_key = offset;
        let mut vanished = 0;
        loop {
            let (located, mut result) = {
                let inner = self.lock()?;
                let high_watermark = self
                    .high_watermark()
                    .clamp(inner.log_start_offset, inner.next_offset);
                let upper = if to_end {
                    inner.next_offset
                } else {
                    high_watermark
                };
                let result = ReadResult {
                    region: None,
                    log_start_offset: inner.log_start_offset,
                    high_watermark,
                    log_end_offset: inner.next_offset,
                };
                if offset < inner.log_start_offset || offset > inner.next_offset {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        log_start_offset: inner.log_start_offset,
                        log_end_offset: inner.next_offset,
                    });
                }
                if offset >= upper {
                    return Ok(result);
                }
                let Some((&base, segment)) = inner
                    .segments
                    .range(..=segment_key)
                    .next_back()
                    .or_else(|| inner.segments.iter().next())
                else {
                    return Ok(result);
                };
                let target = ReadTarget {
                    base,
                    size: segment.size,
                    next_segment: inner.segments.range(base + 1..).next().map(|(k, _)| *k),
                    upper,
                    at_end: upper == inner.next_offset,
                };
                let located = match segment.locate(inner.config.index_interval_bytes) {
                    Located::Open(view) => Ok(target.plan(&view, offset, max_bytes)),
                    Located::Closed(closed) => Err((closed, target)),
                };
                (located, result)
            };
            let plan = match located {
                Ok(plan) => plan,
                Err((closed, target)) => match self.open_closed(&closed)? {
                    Some(open) => target.plan(&ReadView::Inactive(open), offset, max_bytes),
                    None => {
                        vanished = self.count_vanished(vanished)?;
                        continue;
                    }
                },
            };
            match plan.scan(offset, max_bytes).map_err(LogError::Io)? {
                Scanned::Region(region) => {
                    result.region = Some(region);
                    return Ok(result);
                }
                Scanned::AtUpperBound => return Ok(result),
                // The offset lies in a gap left by compaction: continue in the next segment.
                Scanned::Nothing => match plan.next_segment {
                    Some(next) if next < plan.upper => segment_key = next,
                    _ => return Ok(result),
                },
            }
        }
    }

    /// Opens a segment the file cache closed, in the log's blocking section; `None` when it
    /// vanished since it was located.
    fn open_closed(&self, closed: &Closed) -> Result<Option<Arc<OpenSegment>>> {
        crate::blocking::run(&*self.blocking, || closed.open()).map_err(LogError::Io)
    }

    /// Bounds the lookups of one read: a segment vanishes between lookup and opening only
    /// when the log changed meanwhile, which cannot happen without end.
    fn count_vanished(&self, vanished: u32) -> Result<u32> {
        if vanished + 1 >= MAX_LOOKUPS {
            return Err(LogError::Io(io::Error::other(format!(
                "{}: segments kept vanishing during a read ({} lookups)",
                self.tp,
                vanished + 1
            ))));
        }
        Ok(vanished + 1)
    }

    /// The first record whose timestamp is at or after `timestamp` (Kafka's ListOffsets by
    /// time), at or after the log start offset.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let mut after_base: Option<i64> = None;
        let mut vanished = 0;
        loop {
            let (located, base, size, log_start, limit) = {
                let inner = self.lock()?;
                let log_start = inner.log_start_offset;
                let first_key = inner
                    .segments
                    .range(..=log_start)
                    .next_back()
                    .map(|(k, _)| *k)
                    .unwrap_or(log_start);
                let from = after_base.map_or(first_key, |b| b + 1);
                let Some((&base, segment)) = inner
                    .segments
                    .range(from..)
                    .find(|(_, s)| s.max_timestamp >= timestamp)
                else {
                    return Ok(None);
                };
                let located = match segment.locate(inner.config.index_interval_bytes) {
                    Located::Open(view) => Ok(start_for_timestamp(&view, timestamp)),
                    Located::Closed(closed) => Err(closed),
                };
                let limit = decompression_limit(&inner.config);
                (located, base, segment.size, log_start, limit)
            };
            let (file, start) = match located {
                Ok(found) => found,
                Err(closed) => match self.open_closed(&closed)? {
                    Some(open) => start_for_timestamp(&ReadView::Inactive(open), timestamp),
                    None => {
                        vanished = self.count_vanished(vanished)?;
                        continue;
                    }
                },
            };
            after_base = Some(base);
            let mut scanner = SegmentScanner::new(&file, start, size, SCAN_WINDOW);
            loop {
                match scanner.next_batch()? {
                    ScanStep::Batch(info, bytes) => {
                        if info.max_timestamp < timestamp || info.last_offset < log_start {
                            continue;
                        }
                        let batch = RecordBatch::parse(bytes)?;
                        let records = batch.records(limit)?;
                        let found = records
                            .iter()
                            .find(|r| r.timestamp >= timestamp && r.offset >= log_start);
                        if let Some(record) = found {
                            return Ok(Some(TimestampOffset {
                                offset: record.offset,
                                timestamp: record.timestamp,
                            }));
                        }
                    }
                    ScanStep::End => break,
                    ScanStep::Invalid { position, reason } => {
                        return Err(corrupt(&self.tp, position, &reason));
                    }
                }
            }
        }
    }

    /// The batch holding the largest timestamp (Kafka's ListOffsets MAX_TIMESTAMP): its max
    /// timestamp and last offset; the earliest such batch on ties.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>> {
        let mut vanished = 0;
        loop {
            let (located, base, max_timestamp, log_start) = {
                let inner = self.lock()?;
                let mut best: Option<(&i64, &Segment)> = None;
                for (base, segment) in &inner.segments {
                    if segment.max_timestamp >= 0
                        && best.is_none_or(|(_, b)| segment.max_timestamp > b.max_timestamp)
                    {
                        best = Some((base, segment));
                    }
                }
                let Some((&base, segment)) = best else {
                    return Ok(None);
                };
                let located = match segment.locate(inner.config.index_interval_bytes) {
                    Located::Open(ReadView::Active(active)) => {
                        Ok(Some(active.index.offset_of_max_timestamp))
                    }
                    Located::Open(view) => Ok(last_indexed_offset(&view, base)),
                    Located::Closed(closed) => Err(closed),
                };
                (located, base, segment.max_timestamp, inner.log_start_offset)
            };
            let offset = match located {
                Ok(offset) => offset,
                Err(closed) => match self.open_closed(&closed)? {
                    Some(open) => last_indexed_offset(&ReadView::Inactive(open), base),
                    None => {
                        vanished = self.count_vanished(vanished)?;
                        continue;
                    }
                },
            };
            return Ok(offset.map(|offset| TimestampOffset {
                offset: offset.max(log_start),
                timestamp: max_timestamp,
            }));
        }
    }
}

/// The offset of an inactive segment's largest timestamp (its time index's last entry).
fn last_indexed_offset(view: &ReadView<'_>, base: i64) -> Option<i64> {
    view.times()
        .last()
        .map(|entry| base + i64::from(entry.relative_offset))
}

/// A segment found for a read, with what planning the read needs besides its view.
struct ReadTarget {
    base: i64,
    size: u64,
    next_segment: Option<i64>,
    /// No batch starting at or above this offset is read.
    upper: i64,
    /// `upper` is the log end: every batch of the segment may be read.
    at_end: bool,
}

impl ReadTarget {
    fn plan(self, view: &ReadView<'_>, offset: i64, max_bytes: usize) -> ReadPlan {
        let relative = (offset - self.base).clamp(0, i64::from(u32::MAX)) as u32;
        let start_hint = u64::from(position_for_offset(view.offsets(), relative));
        // Below the log end the index cannot say where the bound lies: scan every header.
        let end_hint = batch_start_at_or_before(view.offsets(), start_hint + max_bytes as u64)
            .filter(|_| self.at_end);
        ReadPlan {
            file: view.file().clone(),
            size: self.size,
            start_hint,
            end_hint: end_hint.map(u64::from),
            next_segment: self.next_segment,
            upper: self.upper,
        }
    }
}

/// What a scan of one segment found.
enum Scanned {
    Region(FileRegion),
    /// The first batch at the offset starts at or above the read's upper bound.
    AtUpperBound,
    /// No batch of the segment ends at or after the offset.
    Nothing,
}

/// The file of a segment and the position from which to scan for `timestamp`.
fn start_for_timestamp(view: &ReadView<'_>, timestamp: i64) -> (Arc<File>, u64) {
    let start = offset_for_timestamp(view.times(), timestamp)
        .map_or(0, |relative| position_for_offset(view.offsets(), relative));
    (view.file().clone(), u64::from(start))
}

fn corrupt(tp: &TopicPartition, position: u64, reason: &str) -> LogError {
    LogError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{tp}: corrupt batch at position {position}: {reason}"),
    ))
}

/// What a read decided under the lock, to be carried out without it.
struct ReadPlan {
    file: Arc<File>,
    size: u64,
    start_hint: u64,
    end_hint: Option<u64>,
    next_segment: Option<i64>,
    upper: i64,
}

impl ReadPlan {
    /// Finds the first batch ending at or after `offset`, then extends the region with
    /// whole batches while it stays within `max_bytes` (the first batch always counts) and
    /// below the upper bound.
    fn scan(&self, offset: i64, max_bytes: usize) -> io::Result<Scanned> {
        let mut scanner = SegmentScanner::new(&self.file, self.start_hint, self.size, SCAN_WINDOW);
        let first = loop {
            match scanner.next_header()? {
                ScanStep::Batch(info, _) if info.last_offset >= offset => {
                    if info.base_offset >= self.upper {
                        return Ok(Scanned::AtUpperBound);
                    }
                    break info;
                }
                ScanStep::Batch(..) => {}
                ScanStep::End => return Ok(Scanned::Nothing),
                ScanStep::Invalid { position, reason } => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("corrupt batch at position {position}: {reason}"),
                    ));
                }
            }
        };
        let limit = first.position + (max_bytes as u64).max(u64::from(first.size));
        let mut end = first.end();
        // Batches that end before an indexed batch start inside the limit all fit: skip
        // scanning them.
        if let Some(hint) = self.end_hint
            && hint > end
            && hint <= limit
        {
            end = hint;
        }
        let mut scanner = SegmentScanner::new(&self.file, end, self.size, SCAN_WINDOW);
        while let ScanStep::Batch(info, _) = scanner.next_header()? {
            if info.end() > limit || info.base_offset >= self.upper {
                break;
            }
            end = info.end();
        }
        Ok(Scanned::Region(FileRegion {
            file: self.file.clone(),
            position: first.position,
            len: end - first.position,
        }))
    }
}

/// One batch read back by [`Log::records_from`]; owns (a share of) its bytes, so its records
/// can be decoded after the read, with the log's bound on decompressed size.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    chunk: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    decompression_limit: usize,
}

impl StoredBatch {
    /// The batch's header view (its structure was checked when it was read).
    pub fn batch(&self) -> RecordBatch<'_> {
        RecordBatch::parse(&self.chunk[self.start..self.end])
            .expect("a stored batch was parsed when it was read")
    }

    /// Decodes the records, decompressing within the log's limit.
    pub fn records(&self) -> Result<Records<'_>> {
        Ok(self.batch().records(self.decompression_limit)?)
    }

    pub fn base_offset(&self) -> i64 {
        self.batch().base_offset()
    }

    /// The offset after the batch's last.
    pub fn next_offset(&self) -> i64 {
        self.batch().next_offset()
    }

    pub fn is_control(&self) -> bool {
        self.batch().is_control()
    }
}

/// The batches of a log from an offset to its end, in order (see [`Log::records_from`]).
#[derive(Debug)]
pub struct RecordsFrom<'a> {
    log: &'a Log,
    next: i64,
    chunk: Arc<Vec<u8>>,
    position: usize,
    decompression_limit: usize,
    done: bool,
}

impl Iterator for RecordsFrom<'_> {
    type Item = Result<StoredBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.position < self.chunk.len() {
                let start = self.position;
                return Some(match RecordBatch::parse(&self.chunk[start..]) {
                    Ok(batch) => {
                        self.position += batch.size();
                        self.next = self.next.max(batch.next_offset());
                        Ok(StoredBatch {
                            chunk: self.chunk.clone(),
                            start,
                            end: self.position,
                            decompression_limit: self.decompression_limit,
                        })
                    }
                    Err(err) => {
                        self.done = true;
                        Err(LogError::InvalidBatch(err))
                    }
                });
            }
            let read = self
                .log
                .read_for_replica(self.next, SCAN_CHUNK)
                .and_then(|r| {
                    r.region
                        .map(|r| r.read_to_vec())
                        .transpose()
                        .map_err(Into::into)
                });
            match read {
                Ok(Some(bytes)) if !bytes.is_empty() => {
                    self.chunk = Arc::new(bytes);
                    self.position = 0;
                }
                Ok(_) => self.done = true,
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }
}

impl Log {
    /// Every batch from the one holding `offset` to the log end (as it is when the scan gets
    /// there, above the high watermark too: the caller decides what it may show), read a
    /// chunk at a time. The first batch may start before `offset`; callers
    /// skip the records they do not want. Stops after the first error.
    pub fn records_from(&self, offset: i64) -> RecordsFrom<'_> {
        let decompression_limit = decompression_limit(&self.config());
        RecordsFrom {
            log: self,
            next: offset,
            chunk: Arc::new(Vec::new()),
            position: 0,
            decompression_limit,
            done: false,
        }
    }
}
