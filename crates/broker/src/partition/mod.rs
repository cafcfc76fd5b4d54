//! The partition layer: the one owner of each partition's data path (Kafka's `Partition`
//! and `ReplicaManager` roles). Every write to a partition's log goes through
//! [`Partition::append`], which validates the record set for its [`Origin`], appends
//! it, wakes the fetches waiting on the partition, counts it and hands back the durability
//! wait; every read for a fetch goes through [`Partition::read`]. Handlers and the group
//! coordinator use this layer; nothing else touches a `Log` or the `LogManager`.
//!
//! Replication lives here too: the leader epoch and ISR are the controller's latest state
//! for the partition (published by the broker wiring); on the leader, [`Replication`]
//! tracks each follower's fetches, moves the high watermark to what every in-sync replica
//! holds and holds acks=all answers until it gets there; a follower's copy is appended by
//! the broker's replica fetcher. A partition this node holds but does not
//! lead is open but serves no client.
//!
//! Depends on the log crate, the metrics counters and the error mapping; must not depend on
//! handlers, the group coordinator or the broker wiring.

mod manager;
pub mod partition_metadata;
pub mod replication;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
pub use replication::IsrRequest;
use replication::ReplicaSet;

use crate::errors::ApiError;
use crate::metadata::PartitionState;
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

/// How long an acks=all append waits for the ISR when the requester gives no timeout.
pub const DEFAULT_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A record set in the log. For acks=all, [`Appended::durable`] waits until it is on stable
/// storage here and held by every in-sync replica.
#[derive(Debug)]
pub struct Appended {
    pub info: AppendInfo,
    wait: Option<DurableWait>,
    /// For acks=all: the replication state to wait on, and the leader epoch appended in.
    commit: Option<(Arc<Replication>, i32)>,
    timeout: Duration,
}

impl Appended {
    /// Bounds the wait for the ISR (the Produce request's timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Resolves once the appended batches are durable and below the high watermark (at
    /// once if no wait was asked for). A failed durability wait is KAFKA_STORAGE_ERROR; a
    /// leader that lost its leadership meanwhile answers NOT_LEADER_OR_FOLLOWER; an ISR
    /// that shrank below `min.insync.replicas` NOT_ENOUGH_REPLICAS_AFTER_APPEND; no
    /// answer from the ISR in time REQUEST_TIMED_OUT. Nothing that may be lost is
    /// acknowledged.
    pub async fn durable(self) -> Result<AppendInfo, ApiError> {
        if let Some(wait) = self.wait {
            wait.await.map_err(|e| ApiError::from(&e))?;
        }
        // A retried batch already in the log (idempotent producer) waits too, for its
        // original's offsets: the first attempt may not be replicated yet.
        if let Some((replication, epoch)) = self.commit {
            replication
                .wait_committed(self.info.last_offset + 1, epoch, self.timeout)
                .await?;
        }
        Ok(self.info)
    }
}

/// What a partition's leader knows about its replicas, shared with the appends that wait
/// for them.
#[derive(Debug)]
pub struct Replication {
    set: Mutex<ReplicaSet>,
    log: Arc<Log>,
    /// Woken when the high watermark moves or the leadership changes.
    committed: Notify,
    /// `min.insync.replicas` of the topic.
    min_insync: AtomicUsize,
    /// The ISR's size as last applied (the set's, readable without its lock: every acks=all
    /// append checks it).
    in_sync: AtomicUsize,
}

impl Replication {
    fn set(&self) -> std::sync::MutexGuard<'_, ReplicaSet> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the high watermark reaches `target` while this node leads in `epoch`.
    async fn wait_committed(
        &self,
        target: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let set = self.set();
                if !set.is_leader() || set.leader_epoch != epoch {
                    return Err(ApiError::new(
                        ResponseError::NotLeaderOrFollower,
                        "leadership moved before the in-sync replicas had the records",
                    ));
                }
                if self.log.high_watermark() >= target {
                    let min = self.min_insync.load(Ordering::Acquire);
                    if set.in_sync() < min {
                        return Err(ApiError::new(
                            ResponseError::NotEnoughReplicasAfterAppend,
                            format!(
                                "written, but only {} of min.insync.replicas={min} replicas are in sync",
                                set.in_sync()
                            ),
                        ));
                    }
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ApiError::new(
                    ResponseError::RequestTimedOut,
                    "the in-sync replicas did not confirm the records in time",
                ));
            }
        }
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
    /// The leader this node follows (-1: none, or this node leads).
    followed_leader: AtomicI32,
    log: Arc<Log>,
    replication: Arc<Replication>,
    /// Woken after every append, for fetches waiting for data.
    appended: Notify,
    /// A write to this replica's log failed for want of storage (a full disk, an I/O
    /// error); cleared once a probe write succeeds ([`Partition::probe_storage`]). The
    /// broker takes such a replica out of the ISR, hands its leadership over, and does not
    /// fetch for it meanwhile.
    storage_failed: AtomicBool,
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
        node_id: i32,
    ) -> Self {
        let replication = Arc::new(Replication {
            set: Mutex::new(ReplicaSet::new(node_id)),
            log: log.clone(),
            committed: Notify::new(),
            min_insync: AtomicUsize::new(1),
            in_sync: AtomicUsize::new(0),
        });
        Partition {
            tp,
            topic_id,
            internal,
            leader_epoch: AtomicI32::new(NO_LEADER_EPOCH),
            leading: AtomicBool::new(false),
            followed_leader: AtomicI32::new(-1),
            log,
            replication,
            appended: Notify::new(),
            storage_failed: AtomicBool::new(false),
            counters,
        }
    }

    /// Applies the controller's latest state of the partition: whether this node leads it,
    /// in which epoch, and with which in-sync replicas. An epoch this node leads in starts
    /// in the log's epoch history at the log end (as Kafka's leader does). States arrive in
    /// commit order; an older one is ignored. A replicated partition's high watermark is
    /// this leader's to move (to what the ISR holds) or, on a follower, its leader's; a
    /// partition whose only in-sync replica is this leader commits at every append.
    pub(crate) fn apply_state(&self, state: &PartitionState, min_insync: usize, now_ms: i64) {
        let epoch = state.leader_epoch;
        let current = self.leader_epoch.load(Ordering::Acquire);
        if epoch < current {
            return;
        }
        let me = self.replication.set().me();
        let leading = state.leader == me;
        if leading
            && (epoch > current || !self.leading.load(Ordering::Acquire))
            && let Err(err) = self.log.begin_leader_epoch(epoch.max(INITIAL_LEADER_EPOCH))
        {
            tracing::warn!(partition = %self.tp, error = %err, "cannot record the leader epoch");
        }
        let first_state = current == NO_LEADER_EPOCH;
        {
            let mut set = self.replication.set();
            set.apply(
                &state.replicas,
                &state.isr,
                state.leader,
                epoch,
                state.partition_epoch,
                now_ms,
            );
            self.replication
                .min_insync
                .store(min_insync, Ordering::Release);
            self.replication
                .in_sync
                .store(set.in_sync(), Ordering::Release);
            if set.alone() {
                self.log.set_high_watermark_follows_end(true);
            } else {
                self.log.set_high_watermark_follows_end(false);
                if first_state && state.replicas.len() > 1 {
                    // What is committed is not known until the leader (or, leading, the
                    // ISR) says: nothing above the log start is shown before.
                    self.log.set_high_watermark(i64::MIN);
                }
            }
        }
        self.leader_epoch.store(epoch, Ordering::Release);
        self.leading.store(leading, Ordering::Release);
        let followed = if leading { -1 } else { state.leader };
        self.followed_leader.store(followed, Ordering::Release);
        self.advance_high_watermark();
        // Appends waiting for the ISR re-check who leads.
        self.replication.committed.notify_waiters();
    }

    /// The leader this node copies the partition from, if it follows one.
    pub fn followed_leader(&self) -> Option<i32> {
        let leader = self.followed_leader.load(Ordering::Acquire);
        (leader >= 0).then_some(leader)
    }

    /// On the leader: a follower fetched from `fetch_offset` after a record of
    /// `last_fetched_epoch` (it holds everything below, durably, unless its log diverged:
    /// [`replication::counts_as_progress`]). Moves the high watermark if the ISR now holds more, and returns an ISR
    /// expansion to ask the controller for when the follower caught up.
    pub fn follower_fetched(
        &self,
        follower: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        now_ms: i64,
    ) -> Option<IsrRequest> {
        let leader_end = self.log.log_end_offset();
        let counts = replication::counts_as_progress(
            self.end_offset_for_epoch(last_fetched_epoch),
            last_fetched_epoch,
            fetch_offset,
            leader_end,
        );
        if !counts {
            return None;
        }
        let epoch = self.leader_epoch();
        let epoch_start = self
            .log
            .end_offset_for_epoch(epoch - 1)
            .map_or(0, |(_, end)| end);
        let request = self.replication.set().follower_fetched(
            follower,
            fetch_offset,
            leader_end,
            self.log.high_watermark(),
            epoch_start,
            now_ms,
        );
        self.advance_high_watermark();
        request
    }

    /// On the leader: the in-sync followers that have lagged for `max_lag_ms`, as the ISR
    /// to ask for without them.
    pub fn lagging_followers(&self, now_ms: i64, max_lag_ms: i64) -> Option<IsrRequest> {
        self.replication.set().lagging(now_ms, max_lag_ms)
    }

    /// An ISR change this leader asked for was not made (refused as stale, or the
    /// controller could not be reached): it may be asked for again.
    pub fn isr_request_failed(&self, request: &IsrRequest) {
        self.replication
            .set()
            .request_failed(request.partition_epoch);
    }

    /// Moves the leader's high watermark up to what every in-sync replica holds, waking
    /// acks=all appends and consumers' fetches waiting for it.
    fn advance_high_watermark(&self) {
        let hw = self
            .replication
            .set()
            .high_watermark(self.log.log_end_offset());
        if let Some(hw) = hw
            && hw > self.log.high_watermark()
        {
            self.log.set_high_watermark(hw);
            self.replication.committed.notify_waiters();
            self.appended.notify_waiters();
        }
    }

    /// On a follower: the leader's high watermark, as far as this replica's log goes.
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let hw = leader_hw.min(self.log.log_end_offset());
        self.log.set_high_watermark(hw);
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
        if durable {
            let (in_sync, min) = (
                self.replication.in_sync.load(Ordering::Acquire),
                self.replication.min_insync.load(Ordering::Acquire),
            );
            if in_sync < min {
                return Err(ApiError::new(
                    ResponseError::NotEnoughReplicas,
                    format!("{in_sync} replicas in sync, min.insync.replicas is {min}"),
                ));
            }
        }
        let validated = ValidatedRecords::validate(records).map_err(|e| self.refused(&e))?;
        // Control batches are written by the transaction coordinator, never by clients.
        if origin == Origin::Client && validated.has_control_batch() {
            return Err(ApiError::new(
                ResponseError::InvalidRecord,
                "clients may not write control batches",
            ));
        }
        let epoch = self.leader_epoch();
        let info = self
            .storage_outcome(self.log.append_validated(validated, epoch))
            .map_err(|e| self.refused(&e))?;
        if !info.duplicate {
            self.appended.notify_waiters();
        }
        let wait = durable.then(|| self.log.wait_durable(info.last_offset + 1));
        let commit = durable.then(|| (self.replication.clone(), epoch));
        Ok(Appended {
            info,
            wait,
            commit,
            timeout: DEFAULT_COMMIT_TIMEOUT,
        })
    }

    /// Notes a write to this replica's log (a client's append, a copy from the leader, a
    /// truncation) that failed for want of storage, and passes `outcome` on. Success
    /// clears nothing: only a probe does, so that an idle partition cannot pass for healthy.
    pub fn storage_outcome<T>(&self, outcome: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(LogError::Io(_) | LogError::Offline(_)) = &outcome {
            self.storage_failed.store(true, Ordering::Relaxed);
        }
        outcome
    }

    /// Whether this replica's storage is failing: a write failed and no probe succeeded
    /// since, or its log went offline (a failed fsync: until a restart).
    pub fn storage_failing(&self) -> bool {
        self.storage_failed.load(Ordering::Relaxed) || self.log.is_offline()
    }

    /// For a replica whose storage failed: writes and syncs a probe file beside the log;
    /// if that works, the storage counts as healthy again. Returns whether it is.
    pub fn probe_storage(&self) -> bool {
        if !self.storage_failing() {
            return true;
        }
        if self.log.probe_storage().is_err() {
            return false;
        }
        self.storage_failed.store(false, Ordering::Relaxed);
        true
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

    /// [`Partition::read`] to the log end: what a follower copies.
    pub fn read_for_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.log.read_for_replica(offset, max_bytes)
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
        replication::diverging(
            self.end_offset_for_epoch(last_fetched_epoch),
            last_fetched_epoch,
            fetch_offset,
        )
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

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }
}
