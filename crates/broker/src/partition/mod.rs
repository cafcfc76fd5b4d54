//! The partition layer: the one owner of each partition's data path (Kafka's `Partition`
//! and `ReplicaManager` roles). Every write to a partition's log goes through
//! [`Partition::append`], which validates the record set for its [`Origin`], appends
//! it, wakes the fetches waiting on the partition, counts it and hands back the durability
//! wait; every read for a fetch goes through [`Partition::read`]. Handlers and the group
//! coordinator use this layer; nothing else touches a `Log` or the `LogManager`.
//!
//! This is where replication will live: the leader epoch is the partition's (the controller's
//! latest decision for it, published by the broker wiring), the high watermark is what
//! [`Partition::read`] reports, and the ISR will be kept beside them. A partition this node
//! holds but does not lead is open but serves no client.
//!
//! Depends on the log crate, the metrics counters and the error mapping; must not depend on
//! handlers, the group coordinator or the broker wiring.

mod manager;
pub mod partition_metadata;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use kafka_protocol::ResponseError;
use sluice_log::{
    AppendInfo, DurableWait, Log, LogError, LogOffsets, ReadResult, TimestampOffset,
    TopicPartition, ValidatedRecords,
};
use sluice_record::RecordError;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use uuid::Uuid;

pub use manager::PartitionManager;

use crate::errors::ApiError;
use crate::metrics::TopicCounters;

/// The leader epoch of a partition that never changed leader.
pub const INITIAL_LEADER_EPOCH: i32 = 0;
/// A request's leader epoch when the client does not know one.
pub const NO_LEADER_EPOCH: i32 = -1;

/// Who appends, which decides what a record set may contain and where it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A producer's Produce request: no control batches, no internal topics.
    Client,
    /// The broker's own coordinators writing their internal topics.
    Coordinator,
}

/// A record set in the log. For acks=all, [`Appended::durable`] waits until it is on stable
/// storage.
#[derive(Debug)]
pub struct Appended {
    pub info: AppendInfo,
    wait: Option<DurableWait>,
}

impl Appended {
    /// Resolves once the appended batches are durable (at once if no durability wait was
    /// asked for). A failed wait is KAFKA_STORAGE_ERROR: nothing that may be lost is
    /// acknowledged.
    pub async fn durable(self) -> Result<AppendInfo, ApiError> {
        if let Some(wait) = self.wait {
            wait.await.map_err(|e| ApiError::from(&e))?;
        }
        Ok(self.info)
    }
}

/// One partition this broker serves.
#[derive(Debug)]
pub struct Partition {
    tp: TopicPartition,
    /// The ID of the topic this partition belongs to (its `partition.metadata`): a request
    /// naming the topic by another ID is for an earlier or later topic of the same name.
    topic_id: Uuid,
    /// A topic of the broker's own (`__consumer_offsets`): clients may not write to it.
    internal: bool,
    /// The controller's latest leader epoch for the partition as this node applied it.
    leader_epoch: AtomicI32,
    /// Whether this node leads the partition (serves clients) in that epoch.
    leading: AtomicBool,
    log: Arc<Log>,
    /// Woken after every append, for fetches waiting for data.
    appended: Notify,
    /// The topic's traffic counters, resolved once so that Produce and Fetch do not look
    /// them up per request.
    counters: Arc<TopicCounters>,
}

impl Partition {
    pub(crate) fn new(
        tp: TopicPartition,
        topic_id: Uuid,
        internal: bool,
        log: Arc<Log>,
        counters: Arc<TopicCounters>,
    ) -> Self {
        Partition {
            tp,
            topic_id,
            internal,
            leader_epoch: AtomicI32::new(NO_LEADER_EPOCH),
            leading: AtomicBool::new(false),
            log,
            appended: Notify::new(),
            counters,
        }
    }

    /// Applies the controller's decision for the partition: whether this node leads it, in
    /// which epoch. An epoch this node leads in starts in the log's epoch history at the log
    /// end (as Kafka's leader does). Decisions arrive in commit order; an older one is
    /// ignored.
    pub(crate) fn set_leadership(&self, leading: bool, epoch: i32) {
        let current = self.leader_epoch.load(Ordering::Acquire);
        if epoch < current {
            return;
        }
        if leading
            && (epoch > current || !self.leading.load(Ordering::Acquire))
            && let Err(err) = self.log.begin_leader_epoch(epoch.max(INITIAL_LEADER_EPOCH))
        {
            tracing::warn!(partition = %self.tp, error = %err, "cannot record the leader epoch");
        }
        self.leader_epoch.store(epoch, Ordering::Release);
        self.leading.store(leading, Ordering::Release);
    }

    /// Whether this node serves the partition's clients.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Checks the leader epoch a client believes current (Fetch v9+, ListOffsets v4+,
    /// OffsetForLeaderEpoch): -1 means the client does not know one. An older epoch is
    /// FENCED_LEADER_EPOCH (the client must refresh its metadata), a newer one
    /// UNKNOWN_LEADER_EPOCH (this broker has not caught up with it).
    pub fn check_leader_epoch(&self, current: i32) -> Result<(), ResponseError> {
        match current {
            NO_LEADER_EPOCH => Ok(()),
            e if e < self.leader_epoch() => Err(ResponseError::FencedLeaderEpoch),
            e if e > self.leader_epoch() => Err(ResponseError::UnknownLeaderEpoch),
            _ => Ok(()),
        }
    }

    /// Validates `records` for `origin`, appends them in one write, wakes waiting fetches and
    /// counts them. With `durable`, the returned [`Appended`] waits for group commit. On any
    /// error nothing of the record set is in the log.
    pub fn append(
        &self,
        records: &mut [u8],
        origin: Origin,
        durable: bool,
    ) -> Result<Appended, ApiError> {
        let appended = self.try_append(records, origin, durable);
        if origin == Origin::Client {
            match &appended {
                Ok(appended) if !appended.info.duplicate => {
                    let info = &appended.info;
                    self.counters
                        .bytes_in
                        .fetch_add(info.bytes as u64, Ordering::Relaxed);
                    self.counters.messages_in.fetch_add(
                        (info.last_offset - info.first_offset + 1) as u64,
                        Ordering::Relaxed,
                    );
                }
                Ok(_) => {}
                Err(_) => {
                    self.counters.produce_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        appended
    }

    fn try_append(
        &self,
        records: &mut [u8],
        origin: Origin,
        durable: bool,
    ) -> Result<Appended, ApiError> {
        if origin == Origin::Client && self.internal {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!("cannot write to internal topic {}", self.tp.topic),
            ));
        }
        let validated = ValidatedRecords::validate(records).map_err(|e| self.refused(&e))?;
        // Control batches are written by the transaction coordinator, never by clients.
        if origin == Origin::Client && validated.has_control_batch() {
            return Err(ApiError::new(
                ResponseError::InvalidRecord,
                "clients may not write control batches",
            ));
        }
        let info = self
            .log
            .append_validated(validated, self.leader_epoch())
            .map_err(|e| self.refused(&e))?;
        if !info.duplicate {
            self.appended.notify_waiters();
        }
        let wait = durable.then(|| self.log.wait_durable(info.last_offset + 1));
        Ok(Appended { info, wait })
    }

    fn refused(&self, err: &LogError) -> ApiError {
        if !matches!(err, LogError::InvalidBatch(RecordError::CrcMismatch { .. })) {
            tracing::debug!(partition = %self.tp, error = %err, "append refused");
        }
        ApiError::from(err)
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` but at least one batch,
    /// never above the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.log.read(offset, max_bytes)
    }

    /// Completes at the next append. Enable it before reading, so that an append between the
    /// read and the wait is not missed.
    pub fn next_append(&self) -> Notified<'_> {
        self.appended.notified()
    }

    /// Counts what a fetch response actually carried from this partition.
    pub fn count_fetched(&self, bytes: u64, failed: bool) {
        self.counters.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        if failed {
            self.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn offsets(&self) -> LogOffsets {
        self.log.offsets()
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` that led this
    /// partition and the offset where it ends; `None` when there is none (an epoch newer
    /// than the partition's).
    pub fn end_offset_for_epoch(&self, requested: i32) -> Option<(i32, i64)> {
        self.log.end_offset_for_epoch(requested)
    }

    /// For a fetch from `fetch_offset` after a record of `last_fetched_epoch`: `Some(epoch,
    /// end offset)` when the fetcher's log diverged from this one (that epoch ended before
    /// the fetch offset here, or never led this partition), which is where it must truncate.
    pub fn diverging_epoch(
        &self,
        last_fetched_epoch: i32,
        fetch_offset: i64,
    ) -> Option<(i32, i64)> {
        let (epoch, end) = self
            .end_offset_for_epoch(last_fetched_epoch)
            .unwrap_or((NO_LEADER_EPOCH, -1));
        (epoch < last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.offsets().high_watermark
    }

    /// The first record at or after `timestamp` (ListOffsets by time).
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        self.log.offset_for_timestamp(timestamp)
    }

    /// The batch with the largest timestamp (ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, LogError> {
        self.log.max_timestamp_offset()
    }

    /// Every batch from `offset` to the log end, for the broker's own scanners (replay of
    /// `__consumer_offsets`, the console's message browser).
    pub fn records_from(&self, offset: i64) -> sluice_log::RecordsFrom<'_> {
        self.log.records_from(offset)
    }

    /// The idempotent producers with state in this partition (DescribeProducers): id, epoch,
    /// last sequence and the timestamp of their latest batch, by id.
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64)> {
        let states = self.log.producer_states();
        let mut active: Vec<(i64, i16, i32, i64)> = states
            .iter()
            .filter_map(|(id, entry)| {
                let last = entry.batches.back()?;
                Some((id, entry.epoch, last.last_sequence, last.timestamp))
            })
            .collect();
        active.sort_unstable();
        active
    }

    pub fn is_offline(&self) -> bool {
        self.log.is_offline()
    }

    pub(crate) fn log(&self) -> &Arc<Log> {
        &self.log
    }
}
