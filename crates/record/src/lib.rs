//! Kafka's on-wire and on-disk unit of data: the RecordBatch, magic v2.
//!
//! This crate owns the byte layout of a batch and everything that can be decided by looking
//! at bytes alone:
//! - [`RecordBatch`], a zero-copy view over one batch with accessors for every header field,
//!   structural validation and CRC-32C verification;
//! - [`Batches`], an iterator that splits a produce request's record set into batches;
//! - patching of the two fields that lie outside the CRC and that a broker rewrites
//!   ([`set_base_offset`], [`set_partition_leader_epoch`]);
//! - decoding of the records inside a batch, decompressing gzip, snappy (raw and xerial
//!   framed), lz4 (frame format) and zstd when a caller needs them ([`RecordBatch::records`]);
//! - a [`BatchBuilder`] that encodes records into a batch, for tests, tools and the broker's
//!   own internal topics;
//! - [`rebuild_batch`], which rewrites a stored batch with some records left out (log
//!   compaction), keeping its offsets and producer metadata.
//!
//! It must not do I/O, spawn threads, or depend on any other Sluice crate: the log, the
//! protocol layer and clients all build on it.
//!
//! The hot path (validating a producer's batch before it is appended) never decompresses:
//! [`RecordBatch::validate`] checks the header invariants and the CRC only.

mod batch;
mod builder;
mod check;
mod compression;
mod error;
mod records;
mod rewrite;
mod varint;

pub use batch::{
    BatchHeader, Batches, HEADER_SIZE, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, RecordBatch, TimestampType, offsets,
    set_base_offset, set_base_sequence, set_log_append_time, set_partition_leader_epoch,
};
pub use builder::{BatchBuilder, OwnedHeader, OwnedRecord};
pub use check::RecordRules;
pub use compression::Compression;
pub use error::RecordError;
pub use records::{ControlRecordType, Header, Record, Records};
pub use rewrite::rebuild_batch;
