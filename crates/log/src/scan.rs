//! Sequential reading of the batches in a segment file through a reusable window, so that
//! walking many small batches costs one `pread` per window rather than one per batch.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sluice_record::{BatchHeader, HEADER_SIZE, LOG_OVERHEAD, RecordBatch};

/// What the scanner learned about one batch from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchInfo {
    pub position: u64,
    pub size: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub leader_epoch: i32,
}

impl BatchInfo {
    pub fn end(&self) -> u64 {
        self.position + u64::from(self.size)
    }

    pub fn from_header(position: u64, header: &BatchHeader<'_>) -> Self {
        BatchInfo {
            position,
            size: header.size() as u32,
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp(),
            leader_epoch: header.partition_leader_epoch(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ScanStep<'a> {
    /// A batch: with [`SegmentScanner::next_header`] the bytes are its header only, with
    /// [`SegmentScanner::next_batch`] the whole batch.
    Batch(BatchInfo, &'a [u8]),
    /// The scan reached its end cleanly.
    End,
    /// The bytes at `position` are not a complete batch: a torn write or corruption.
    Invalid { position: u64, reason: String },
}

#[derive(Debug)]
pub(crate) struct SegmentScanner<'f> {
    file: &'f File,
    position: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
    window: usize,
}

impl<'f> SegmentScanner<'f> {
    /// Scans `[start, end)` of `file` reading `window` bytes at a time.
    pub fn new(file: &'f File, start: u64, end: u64, window: usize) -> Self {
        SegmentScanner {
            file,
            position: start,
            end,
            buf: Vec::new(),
            buf_start: 0,
            window,
        }
    }

    /// Makes `[position, position + need)` available in the buffer. Returns false when that
    /// range runs past the end of the scan.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        let want_end = self.position + need as u64;
        if want_end > self.end {
            return Ok(false);
        }
        let buffered_end = self.buf_start + self.buf.len() as u64;
        if self.position >= self.buf_start && want_end <= buffered_end {
            return Ok(true);
        }
        let len = (self.end - self.position).min(self.window.max(need) as u64) as usize;
        self.buf.resize(len, 0);
        self.file.read_exact_at(&mut self.buf, self.position)?;
        self.buf_start = self.position;
        Ok(true)
    }

    fn buffered(&self, len: usize) -> &[u8] {
        let at = (self.position - self.buf_start) as usize;
        &self.buf[at..at + len]
    }

    /// Reads the size of the next batch, or says why there is none.
    fn next_size(&mut self) -> io::Result<Result<usize, ScanStep<'static>>> {
        let position = self.position;
        if position == self.end {
            return Ok(Err(ScanStep::End));
        }
        let invalid = |reason: String| Ok(Err(ScanStep::Invalid { position, reason }));
        if !self.fill(LOG_OVERHEAD)? {
            return invalid(format!(
                "{} trailing bytes, too few for a batch",
                self.end - position
            ));
        }
        let size = match BatchHeader::peek_size(self.buffered(LOG_OVERHEAD)) {
            Some(Ok(size)) => size,
            Some(Err(err)) => return invalid(err.to_string()),
            None => unreachable!("fill guaranteed the log overhead"),
        };
        if position + size as u64 > self.end {
            return invalid(format!(
                "batch of {size} bytes runs past the end ({} bytes left)",
                self.end - position
            ));
        }
        Ok(Ok(size))
    }

    /// Advances over the next batch reading only its header.
    pub fn next_header(&mut self) -> io::Result<ScanStep<'_>> {
        let size = match self.next_size()? {
            Ok(size) => size,
            Err(step) => return Ok(step),
        };
        let position = self.position;
        self.fill(HEADER_SIZE)?;
        let header = match BatchHeader::parse(self.buffered(HEADER_SIZE)) {
            Ok(header) => BatchInfo::from_header(position, &header),
            Err(err) => {
                return Ok(ScanStep::Invalid {
                    position,
                    reason: err.to_string(),
                });
            }
        };
        self.position += size as u64;
        let at = (position - self.buf_start) as usize;
        Ok(ScanStep::Batch(header, &self.buf[at..at + HEADER_SIZE]))
    }

    /// Advances over the next batch, returning all of its bytes (not yet CRC-checked).
    pub fn next_batch(&mut self) -> io::Result<ScanStep<'_>> {
        let size = match self.next_size()? {
            Ok(size) => size,
            Err(step) => return Ok(step),
        };
        let position = self.position;
        self.fill(size)?;
        let info = match RecordBatch::parse(self.buffered(size)) {
            Ok(batch) => BatchInfo::from_header(position, &batch.header()),
            Err(err) => {
                return Ok(ScanStep::Invalid {
                    position,
                    reason: err.to_string(),
                });
            }
        };
        self.position += size as u64;
        let at = (position - self.buf_start) as usize;
        Ok(ScanStep::Batch(info, &self.buf[at..at + size]))
    }
}
