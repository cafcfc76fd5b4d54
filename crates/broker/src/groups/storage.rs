//! The coordinator's storage: groups and committed offsets as records in the compacted
//! internal topic `__consumer_offsets` (Kafka's key/value schemas, `records.rs`). Appends go
//! through the partition layer like any other write (origin: coordinator); startup replays
//! the topic into the registry; removed offsets and groups become tombstones, including
//! those that expire under `offsets.retention.minutes`.
//!
//! Every group lives in one partition of the topic (Kafka's `abs(hashCode(group)) % n`).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use sluice_log::{Clock, LogError};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

use super::group::{Group, GroupState, Now};
use super::records::{GroupValue, OffsetValue, RecordKey, partition_for};
use super::registry::{GroupRegistry, lock};
use crate::errors::ApiError;
use crate::internal_topics::OFFSETS_TOPIC;
use crate::metadata::MetadataStore;
use crate::partition::{Appended, Origin, PartitionManager};

/// A key and its value (`None`: a tombstone).
pub(super) type KeyValue = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug)]
pub(super) struct OffsetsStorage {
    partitions: Arc<PartitionManager>,
    metadata: Arc<MetadataStore>,
    clock: Arc<dyn Clock>,
    /// `offsets.topic.num.partitions`, until the topic exists.
    default_partitions: i32,
}

/// Storage failures are answered as COORDINATOR_NOT_AVAILABLE: the client retries, perhaps
/// elsewhere once there is elsewhere.
pub(super) fn unavailable(err: &ApiError) -> ApiError {
    ApiError::new(
        ResponseError::CoordinatorNotAvailable,
        format!("{OFFSETS_TOPIC}: {}", err.message),
    )
}

impl OffsetsStorage {
    pub fn new(
        partitions: Arc<PartitionManager>,
        metadata: Arc<MetadataStore>,
        clock: Arc<dyn Clock>,
        default_partitions: i32,
    ) -> Self {
        OffsetsStorage {
            partitions,
            metadata,
            clock,
            default_partitions,
        }
    }

    /// Whether the topic exists (it is created on the first FindCoordinator).
    pub fn ready(&self) -> bool {
        self.metadata.image().topic(OFFSETS_TOPIC).is_some()
    }

    /// See [`super::GroupCoordinator::coordinates`].
    pub fn coordinates(&self, group: &str) -> Result<(), ResponseError> {
        let image = self.metadata.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return Ok(());
        };
        let partition = partition_for(group, topic.partitions);
        match self.partitions.leader(OFFSETS_TOPIC, partition) {
            Some(_) => Ok(()),
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Whether the partition exists in the cluster (on this broker or another).
    pub fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        self.metadata.image().partition(topic, partition).is_some()
    }

    fn partition_count(&self) -> i32 {
        self.metadata
            .image()
            .topic(OFFSETS_TOPIC)
            .map_or(self.default_partitions, |t| t.partitions)
    }

    /// Appends records for `group` to its partition, in one batch, and asks for durability;
    /// await [`Appended::durable`] before acknowledging anything that depends on them.
    pub fn append(&self, group: &str, records: Vec<KeyValue>) -> Result<Appended, ApiError> {
        let partition = partition_for(group, self.partition_count());
        let target = self
            .partitions
            .leader(OFFSETS_TOPIC, partition)
            .ok_or_else(|| {
                ApiError::new(
                    ResponseError::NotCoordinator,
                    format!("this broker does not lead {OFFSETS_TOPIC}-{partition}"),
                )
            })?;
        let mut builder = BatchBuilder::new(Compression::None);
        let now = self.clock.now_ms();
        for (key, value) in records {
            builder.push(OwnedRecord::new(Some(key), value, now));
        }
        let mut batch = builder
            .build()
            .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
        target
            .append(&mut batch, Origin::Coordinator, true)
            .map_err(|e| unavailable(&e))
    }

    /// Writes the group's metadata record (a rebalance settled or the group emptied). Not
    /// awaited: losing it in a crash only makes members rejoin.
    pub fn write_group(&self, group: &Group) {
        let value = group.to_record(self.clock.now_ms()).encode();
        let key = RecordKey::Group {
            group: group.id.clone(),
        }
        .encode();
        if let Err(err) = self.append(&group.id, vec![(key, Some(value))]) {
            tracing::warn!(group = %group.id, error = %err.message, "could not write group metadata");
        }
    }

    /// Tombstones for committed offsets of `group` (and for the group itself with
    /// `with_group`).
    pub fn tombstones<'a>(
        group: &str,
        offsets: impl IntoIterator<Item = &'a (String, i32)>,
        with_group: bool,
    ) -> Vec<KeyValue> {
        let mut records: Vec<KeyValue> = offsets
            .into_iter()
            .map(|(topic, partition)| {
                let key = RecordKey::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (key.encode(), None)
            })
            .collect();
        if with_group {
            let key = RecordKey::Group {
                group: group.to_string(),
            };
            records.push((key.encode(), None));
        }
        records
    }

    /// Expires offsets of groups that have been empty longer than `retention` (KIP-211:
    /// counted from the later of the commit and the group becoming empty); a group left
    /// without offsets is forgotten, and so is an empty group that never had any once it has
    /// been empty for `grace` (so that a client's FindCoordinator-then-join is not raced).
    pub fn expire_offsets(&self, registry: &GroupRegistry, retention: Duration, grace: Duration) {
        let retention = retention.as_millis() as i64;
        let grace = grace.as_millis() as i64;
        let now = self.clock.now_ms();
        for group in registry.all() {
            let mut g = lock(&group);
            let Some(empty_since) = g.empty_since_ms else {
                continue;
            };
            // A commit on its way to disk keeps the group: its tombstones would land after the
            // commit's record.
            if g.state != GroupState::Empty || g.pending_commits > 0 {
                continue;
            }
            if g.offsets.is_empty() {
                if now - empty_since >= grace {
                    let id = g.id.clone();
                    // Its metadata record, if one was written, goes too; the tombstone is
                    // appended before the group leaves the registry, so that a new group of
                    // the same id can only write after it.
                    let records = Self::tombstones(&id, &[], true);
                    if let Err(err) = self.append(&id, records) {
                        tracing::debug!(group = %id, error = %err.message, "could not record a forgotten group");
                    }
                    g.mark_dead();
                    drop(g);
                    registry.remove(&id);
                    tracing::debug!(group = %id, "forgot an empty group without offsets");
                }
                continue;
            }
            let doomed: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| now - c.commit_timestamp.max(empty_since) >= retention)
                .map(|(k, _)| k.clone())
                .collect();
            if doomed.is_empty() {
                continue;
            }
            for key in &doomed {
                g.offsets.remove(key);
            }
            let forget_group = g.offsets.is_empty();
            if forget_group {
                g.mark_dead();
            }
            let id = g.id.clone();
            tracing::info!(group = %id, partitions = doomed.len(), "expired committed offsets");
            let records = Self::tombstones(&id, &doomed, forget_group);
            if let Err(err) = self.append(&id, records) {
                tracing::warn!(group = %id, error = %err.message, "could not record expired offsets");
            }
            drop(g);
            if forget_group {
                registry.remove(&id);
            }
        }
    }

    /// Rebuilds groups and offsets from the topic (at startup).
    pub fn load(&self, registry: &GroupRegistry) -> Result<(), LogError> {
        let Some(topic) = self.metadata.image().topic(OFFSETS_TOPIC).cloned() else {
            return Ok(());
        };
        let mut records = 0usize;
        for partition in 0..topic.partitions {
            records += self.replay(registry, partition)?;
        }
        self.drop_offsets_of_missing_partitions(registry);
        tracing::info!(groups = registry.len(), records, "group coordinator loaded");
        Ok(())
    }

    /// This broker now leads `partition` of the topic: what it knew of the partition's
    /// groups as a follower is stale (commits reached it by replication since startup), so
    /// they are dropped and replayed from its log (Kafka loads a partition's groups when it
    /// becomes their coordinator). Called before clients can learn that it leads.
    pub fn reload(&self, registry: &GroupRegistry, partition: i32) -> Result<(), LogError> {
        let count = self.partition_count();
        for group in registry.all() {
            let id = lock(&group).id.clone();
            if partition_for(&id, count) == partition {
                registry.remove(&id);
            }
        }
        let records = self.replay(registry, partition)?;
        tracing::info!(
            partition,
            records,
            "groups of a newly led __consumer_offsets partition loaded"
        );
        Ok(())
    }

    /// Replays one partition of the topic into the registry; returns the records read.
    fn replay(&self, registry: &GroupRegistry, partition: i32) -> Result<usize, LogError> {
        let Some(target) = self.partitions.get(OFFSETS_TOPIC, partition) else {
            return Ok(0);
        };
        let now = Now::from_clock(self.clock.as_ref());
        let mut records = 0usize;
        for stored in target.records_from(target.offsets().log_start_offset) {
            let stored = match stored {
                Ok(stored) => stored,
                // Storage failing is an error; a batch that does not parse is skipped with
                // the rest of its partition, which then replays no further.
                Err(err @ (LogError::Io(_) | LogError::Offline(_))) => return Err(err),
                Err(err) => {
                    tracing::warn!(partition, error = %err, "unreadable __consumer_offsets; replay of this partition stops here");
                    break;
                }
            };
            let Ok(decoded) = stored.records() else {
                tracing::warn!(
                    partition,
                    offset = stored.base_offset(),
                    "unreadable batch in __consumer_offsets"
                );
                continue;
            };
            for record in decoded.iter() {
                records += 1;
                if let Err(reason) = apply(registry, &record, now) {
                    tracing::warn!(partition, offset = record.offset, %reason, "skipping __consumer_offsets record");
                }
            }
        }
        Ok(records)
    }

    /// Offsets of partitions that no longer exist are dropped, durably: a commit in flight
    /// while its topic was deleted can leave one after the deletion's tombstones, and its
    /// own tombstone may not have reached the disk before a crash.
    fn drop_offsets_of_missing_partitions(&self, registry: &GroupRegistry) {
        let image = self.metadata.image();
        let exists = |topic: &str, partition: i32| {
            image
                .topic(topic)
                .is_some_and(|t| (0..t.partitions).contains(&partition))
        };
        for group in registry.all() {
            let mut g = lock(&group);
            let gone: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|(topic, partition)| !exists(topic, *partition))
                .cloned()
                .collect();
            if gone.is_empty() {
                continue;
            }
            for key in &gone {
                g.offsets.remove(key);
            }
            tracing::info!(group = %g.id, offsets = gone.len(), "dropped offsets of partitions that no longer exist");
            if let Err(err) = self.append(&g.id, Self::tombstones(&g.id, &gone, false)) {
                tracing::warn!(group = %g.id, error = %err.message, "could not record dropped offsets");
            }
        }
    }
}

/// Applies one record of the topic to the registry (replay).
fn apply(
    registry: &GroupRegistry,
    record: &sluice_record::Record<'_>,
    now: Now,
) -> Result<(), String> {
    let key = RecordKey::decode(record.key.ok_or("record without key")?)?;
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            let shared = registry.find_or_create(&group, now.ms);
            let mut g = lock(&shared);
            match record.value {
                None => {
                    g.offsets.remove(&(topic, partition));
                }
                Some(value) => {
                    let value = OffsetValue::decode(value)?;
                    g.offsets.insert(
                        (topic, partition),
                        super::group::Committed {
                            offset: value.offset,
                            leader_epoch: value.leader_epoch,
                            metadata: value.metadata,
                            commit_timestamp: value.commit_timestamp,
                            record_offset: record.offset,
                        },
                    );
                }
            }
        }
        RecordKey::Group { group } => match record.value {
            None => registry.remove(&group),
            Some(value) => {
                let value = GroupValue::decode(value)?;
                let shared = registry.find_or_create(&group, now.ms);
                lock(&shared).restore(value, now);
            }
        },
    }
    Ok(())
}
