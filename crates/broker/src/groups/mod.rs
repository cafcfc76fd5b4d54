//! The group coordinator (classic protocol): groups, their rebalances, and committed
//! offsets, stored as records in the compacted internal topic `__consumer_offsets`.
//!
//! Every group lives in one partition of `__consumer_offsets` (Kafka's
//! `abs(hashCode(group)) % partitions`). Handlers write records there and answer once they
//! are durable (group commit), so an acknowledged offset commit survives a crash; startup
//! replays the topic to rebuild groups and offsets. In-memory offsets change only after their
//! record is durable, and never go back to an older record.
//!
//! Each group has its own mutex, held only for non-blocking work; waiting (for the end of a
//! rebalance, for the leader's assignment, for durability) happens after it is released.
//! Deadlines are applied by [`GroupCoordinator::run`], every 100 ms.

pub mod group;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_log::{DurableWait, LogError};
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord};

use self::group::{
    Committed, Group, GroupLimits, GroupState, JoinOutcome, JoinRequest, Reply, SyncOutcome, now_ms,
};
use self::records::{GroupValue, OffsetValue, RecordKey, partition_for};
use crate::broker::{Broker, LEADER_EPOCH};
use crate::errors::ApiError;

/// The internal topic that holds committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often deadlines are applied.
const TICK: Duration = Duration::from_millis(100);

/// Coordinator settings (Kafka's `group.*` and `offsets.*` properties).
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub limits: GroupLimits,
    pub offsets_partitions: i32,
    pub offsets_segment_bytes: u32,
    pub offsets_retention: Duration,
    pub offsets_retention_check: Duration,
    pub metadata_max_bytes: usize,
}

/// One partition's committed offset as OffsetCommit gives it.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Lag of one partition for a group: what a CLI or console shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_end_offset: i64,
    pub lag: i64,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

type SharedGroup = Arc<Mutex<Group>>;

#[derive(Debug)]
pub struct GroupCoordinator {
    pub config: CoordinatorConfig,
    groups: Mutex<HashMap<String, SharedGroup>>,
}

fn lock(group: &SharedGroup) -> MutexGuard<'_, Group> {
    group.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn groups(&self) -> MutexGuard<'_, HashMap<String, SharedGroup>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, id: &str) -> Option<SharedGroup> {
        self.groups().get(id).cloned()
    }

    fn find_or_create(&self, id: &str) -> SharedGroup {
        self.groups()
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(id, now_ms()))))
            .clone()
    }

    /// Creates `__consumer_offsets` if it does not exist yet (on the first FindCoordinator,
    /// as Kafka does).
    pub async fn ensure_offsets_topic(&self, broker: &Broker) -> Result<(), ApiError> {
        if broker.image().topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.offsets_segment_bytes.to_string(),
            ),
        ]);
        let spec = crate::broker::NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.config.offsets_partitions,
            replication_factor: 1,
            configs,
        };
        match broker.create_topic(spec, false).await {
            Ok(_) => Ok(()),
            Err(err) if err.code == ResponseError::TopicAlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn offsets_ready(broker: &Broker) -> bool {
        broker.image().topic(OFFSETS_TOPIC).is_some()
    }

    /// Appends records for `group` to its `__consumer_offsets` partition. Returns the wait for
    /// durability and the offset of the first record.
    fn append(
        &self,
        broker: &Broker,
        group: &str,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(DurableWait, i64), ApiError> {
        let partition = partition_for(group, self.partition_count(broker));
        let target = broker.partition(OFFSETS_TOPIC, partition).ok_or_else(|| {
            ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "offsets topic not ready",
            )
        })?;
        let mut builder = BatchBuilder::new(Compression::None);
        let now = now_ms();
        for (key, value) in records {
            builder.push(OwnedRecord::new(Some(key), value, now));
        }
        let mut batch = builder
            .build()
            .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
        let info = target
            .log
            .append(&mut batch, LEADER_EPOCH)
            .map_err(|e| storage_failure(&e))?;
        target.appended.notify_waiters();
        Ok((
            target.log.wait_durable(info.last_offset + 1),
            info.first_offset,
        ))
    }

    fn partition_count(&self, broker: &Broker) -> i32 {
        broker
            .image()
            .topic(OFFSETS_TOPIC)
            .map_or(self.config.offsets_partitions, |t| t.partitions)
    }

    /// Writes the group's metadata record if a rebalance just settled or the group emptied.
    /// Not awaited: a lost group record only makes members rejoin after a crash.
    fn persist_group(&self, broker: &Broker, group: &Group) {
        let value = group.to_record(now_ms()).encode();
        let key = RecordKey::Group {
            group: group.id.clone(),
        }
        .encode();
        if let Err(err) = self.append(broker, &group.id, vec![(key, Some(value))]) {
            tracing::warn!(group = %group.id, error = %err.message, "could not write group metadata");
        }
    }

    pub async fn join(&self, broker: &Broker, group_id: &str, request: JoinRequest) -> JoinOutcome {
        if !Self::offsets_ready(broker) {
            return JoinOutcome::error(ResponseError::CoordinatorNotAvailable, &request.member_id);
        }
        let member_id = request.member_id.clone();
        let timeout = request.rebalance_timeout + request.session_timeout;
        let group = self.find_or_create(group_id);
        let reply = lock(&group).join(request, &self.config.limits, Instant::now());
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(receiver) => match tokio::time::timeout(timeout, receiver).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => JoinOutcome::error(ResponseError::UnknownMemberId, &member_id),
                Err(_) => JoinOutcome::error(ResponseError::RebalanceInProgress, &member_id),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        broker: &Broker,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let Some(group) = self.find(group_id) else {
            return SyncOutcome::error(ResponseError::UnknownMemberId);
        };
        let (reply, timeout) = {
            let mut g = lock(&group);
            let was_completing = g.state == GroupState::CompletingRebalance;
            let timeout = g
                .members
                .get(member_id)
                .map_or(Duration::from_secs(30), |m| m.rebalance_timeout);
            let reply = g.sync(
                member_id,
                instance,
                generation,
                protocol_type,
                protocol_name,
                assignments,
                Instant::now(),
            );
            if was_completing && g.state == GroupState::Stable {
                self.persist_group(broker, &g);
            }
            (reply, timeout)
        };
        match reply {
            Reply::Now(outcome) => outcome,
            Reply::Later(receiver) => match tokio::time::timeout(timeout, receiver).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => SyncOutcome::error(ResponseError::UnknownMemberId),
                Err(_) => SyncOutcome::error(ResponseError::RebalanceInProgress),
            },
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        match self.find(group_id) {
            None => Some(ResponseError::UnknownMemberId),
            Some(group) => lock(&group).heartbeat(member_id, instance, generation, Instant::now()),
        }
    }

    pub fn leave(
        &self,
        broker: &Broker,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let group = self.find(group_id).ok_or(ResponseError::UnknownMemberId)?;
        let mut g = lock(&group);
        let before = g.state;
        let results = g.leave(leaving, &self.config.limits, Instant::now());
        if g.state == GroupState::Empty && before != GroupState::Empty {
            self.persist_group(broker, &g);
        }
        Ok(results)
    }

    /// OffsetCommit: one result per partition, answered once the records are durable.
    pub async fn commit(
        &self,
        broker: &Broker,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
    ) -> Vec<(String, i32, Option<ResponseError>)> {
        let fail_all = |error: ResponseError, offsets: &[OffsetToCommit]| {
            offsets
                .iter()
                .map(|o| (o.topic.clone(), o.partition, Some(error)))
                .collect::<Vec<_>>()
        };
        if !Self::offsets_ready(broker) {
            return fail_all(ResponseError::CoordinatorNotAvailable, &offsets);
        }
        let group = if generation < 0 && member_id.is_empty() {
            self.find_or_create(group_id)
        } else {
            match self.find(group_id) {
                Some(group) => group,
                None => return fail_all(ResponseError::IllegalGeneration, &offsets),
            }
        };
        let mut results = Vec::with_capacity(offsets.len());
        let mut accepted = Vec::new();
        let appended = {
            let g = lock(&group);
            if let Err(error) = g.check_commit(member_id, instance, generation) {
                return fail_all(error, &offsets);
            }
            let now = now_ms();
            let mut records = Vec::new();
            for o in offsets {
                let error = if o.metadata.len() > self.config.metadata_max_bytes {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else if broker.partition(&o.topic, o.partition).is_none() {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else {
                    None
                };
                match error {
                    Some(error) => results.push((o.topic, o.partition, Some(error))),
                    None => {
                        let key = RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: o.topic.clone(),
                            partition: o.partition,
                        };
                        let value = OffsetValue {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                            metadata: o.metadata.clone(),
                            commit_timestamp: now,
                        };
                        records.push((key.encode(), Some(value.encode())));
                        accepted.push((o, now));
                    }
                }
            }
            if records.is_empty() {
                None
            } else {
                Some(self.append(broker, group_id, records))
            }
        };
        let Some(appended) = appended else {
            return results;
        };
        let outcome = match appended {
            Ok((wait, first)) => wait.await.map(|()| first).map_err(|e| storage_failure(&e)),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(first) => {
                let mut g = lock(&group);
                for (i, (o, now)) in accepted.into_iter().enumerate() {
                    let record_offset = first + i as i64;
                    let newer = g
                        .offsets
                        .get(&(o.topic.clone(), o.partition))
                        .is_none_or(|c| c.record_offset < record_offset);
                    if newer {
                        g.offsets.insert(
                            (o.topic.clone(), o.partition),
                            Committed {
                                offset: o.offset,
                                leader_epoch: o.leader_epoch,
                                metadata: o.metadata,
                                commit_timestamp: now,
                                record_offset,
                            },
                        );
                    }
                    results.push((o.topic, o.partition, None));
                }
            }
            Err(err) => {
                tracing::warn!(group = group_id, error = %err.message, "offset commit not durable");
                results.extend(accepted.into_iter().map(|(o, _)| {
                    (
                        o.topic,
                        o.partition,
                        Some(ResponseError::CoordinatorNotAvailable),
                    )
                }));
            }
        }
        results
    }

    /// Committed offsets of a group: all of them, or those of the given partitions (missing
    /// ones answer offset -1).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, i32, Option<Committed>)> {
        let group = self.find(group_id);
        let offsets: HashMap<(String, i32), Committed> =
            group.map(|g| lock(&g).offsets.clone()).unwrap_or_default();
        match wanted {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    let offsets = &offsets;
                    partitions
                        .into_iter()
                        .map(move |p| (topic.clone(), p, offsets.get(&(topic.clone(), p)).cloned()))
                })
                .collect(),
            None => {
                let mut all: Vec<_> = offsets
                    .into_iter()
                    .map(|((t, p), c)| (t, p, Some(c)))
                    .collect();
                all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                all
            }
        }
    }

    /// (group id, protocol type, state) of every live group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups: Vec<SharedGroup> = self.groups().values().cloned().collect();
        let mut out: Vec<_> = groups
            .iter()
            .map(|g| {
                let g = lock(g);
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .filter(|(_, _, state)| *state != GroupState::Dead)
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.find(group_id)?;
        let g = lock(&group);
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        metadata,
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// DeleteGroups: only groups without members; their offsets and metadata are tombstoned.
    pub async fn delete_group(&self, broker: &Broker, group_id: &str) -> Option<ResponseError> {
        let Some(group) = self.find(group_id) else {
            return Some(ResponseError::GroupIdNotFound);
        };
        let wait = {
            let mut g = lock(&group);
            match g.state {
                GroupState::Dead => return Some(ResponseError::GroupIdNotFound),
                GroupState::Empty => {}
                _ => return Some(ResponseError::NonEmptyGroup),
            }
            let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = g
                .offsets
                .keys()
                .map(|(topic, partition)| {
                    (
                        RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition: *partition,
                        }
                        .encode(),
                        None,
                    )
                })
                .collect();
            records.push((
                RecordKey::Group {
                    group: group_id.to_string(),
                }
                .encode(),
                None,
            ));
            match self.append(broker, group_id, records) {
                Ok((wait, _)) => {
                    g.mark_dead();
                    g.offsets.clear();
                    wait
                }
                Err(err) => return Some(err.code),
            }
        };
        self.groups().remove(group_id);
        match wait.await {
            Ok(()) => None,
            Err(err) => Some(storage_failure(&err).code),
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    pub async fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, Option<ResponseError>)>, ResponseError> {
        let group = self.find(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        let (results, wait) = {
            let mut g = lock(&group);
            if g.state == GroupState::Dead {
                return Err(ResponseError::GroupIdNotFound);
            }
            let subscribed = if g.is_empty() {
                Default::default()
            } else {
                g.subscribed_topics()
            };
            let mut results = Vec::new();
            let mut records = Vec::new();
            for (topic, partition) in partitions {
                if subscribed.contains(&topic) {
                    results.push((
                        topic,
                        partition,
                        Some(ResponseError::GroupSubscribedToTopic),
                    ));
                    continue;
                }
                if g.offsets.remove(&(topic.clone(), partition)).is_some() {
                    records.push((
                        RecordKey::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition,
                        }
                        .encode(),
                        None,
                    ));
                }
                results.push((topic, partition, None));
            }
            let wait = if records.is_empty() {
                None
            } else {
                Some(
                    self.append(broker, group_id, records)
                        .map_err(|e| e.code)?
                        .0,
                )
            };
            (results, wait)
        };
        if let Some(wait) = wait {
            wait.await.map_err(|e| storage_failure(&e).code)?;
        }
        Ok(results)
    }

    /// Committed offset, log end offset and lag of every partition the group has an offset
    /// for. `None` if the group does not exist.
    pub fn lag(&self, broker: &Broker, group_id: &str) -> Option<Vec<PartitionLag>> {
        let offsets = self.fetch_offsets(group_id, None);
        self.find(group_id)?;
        Some(
            offsets
                .into_iter()
                .filter_map(|(topic, partition, committed)| {
                    let committed = committed?.offset;
                    let log_end_offset = broker
                        .partition(&topic, partition)?
                        .log
                        .offsets()
                        .high_watermark;
                    Some(PartitionLag {
                        lag: (log_end_offset - committed).max(0),
                        topic,
                        partition,
                        committed,
                        log_end_offset,
                    })
                })
                .collect(),
        )
    }

    /// Forgets the offsets of a deleted topic in every group.
    pub fn forget_topic(&self, broker: &Broker, topic: &str) {
        let groups: Vec<SharedGroup> = self.groups().values().cloned().collect();
        for group in groups {
            let mut g = lock(&group);
            let doomed: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect();
            if doomed.is_empty() {
                continue;
            }
            let records = doomed
                .iter()
                .map(|(t, p)| {
                    (
                        RecordKey::Offset {
                            group: g.id.clone(),
                            topic: t.clone(),
                            partition: *p,
                        }
                        .encode(),
                        None,
                    )
                })
                .collect();
            for key in &doomed {
                g.offsets.remove(key);
            }
            if let Err(err) = self.append(broker, &g.id.clone(), records) {
                tracing::warn!(group = %g.id, error = %err.message, "could not record removed offsets");
            }
        }
    }

    /// Expires offsets of groups that have been empty longer than offsets.retention.minutes
    /// (KIP-211: counted from the later of the commit and the group becoming empty).
    fn expire_offsets(&self, broker: &Broker) {
        let retention = self.config.offsets_retention.as_millis() as i64;
        let now = now_ms();
        let groups: Vec<SharedGroup> = self.groups().values().cloned().collect();
        for group in groups {
            let mut g = lock(&group);
            let Some(empty_since) = g.empty_since_ms else {
                continue;
            };
            if g.state != GroupState::Empty {
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
            let id = g.id.clone();
            let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = doomed
                .iter()
                .map(|(t, p)| {
                    (
                        RecordKey::Offset {
                            group: id.clone(),
                            topic: t.clone(),
                            partition: *p,
                        }
                        .encode(),
                        None,
                    )
                })
                .collect();
            for key in &doomed {
                g.offsets.remove(key);
            }
            let forget_group = g.offsets.is_empty();
            if forget_group {
                records.push((RecordKey::Group { group: id.clone() }.encode(), None));
                g.mark_dead();
            }
            tracing::info!(group = %id, partitions = doomed.len(), "expired committed offsets");
            if let Err(err) = self.append(broker, &id, records) {
                tracing::warn!(group = %id, error = %err.message, "could not record expired offsets");
            }
            drop(g);
            if forget_group {
                self.groups().remove(&id);
            }
        }
    }

    /// Applies deadlines in every group and writes the records of groups that changed.
    fn tick(&self, broker: &Broker) {
        let now = Instant::now();
        let groups: Vec<SharedGroup> = self.groups().values().cloned().collect();
        for group in groups {
            let mut g = lock(&group);
            let before = g.state;
            if g.tick(&self.config.limits, now)
                && g.state == GroupState::Empty
                && before != GroupState::Empty
            {
                self.persist_group(broker, &g);
            }
        }
    }

    /// Background work until the broker stops: deadlines every 100 ms, offset expiry every
    /// offsets.retention.check.interval.ms.
    pub async fn run(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_expiry = Instant::now() + broker.groups.config.offsets_retention_check;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            broker.groups.tick(&broker);
            if Instant::now() >= next_expiry {
                broker.groups.expire_offsets(&broker);
                next_expiry = Instant::now() + broker.groups.config.offsets_retention_check;
            }
        }
    }

    /// Rebuilds groups and offsets from `__consumer_offsets` (at startup).
    pub fn load(&self, broker: &Broker) -> Result<(), LogError> {
        let Some(topic) = broker.image().topic(OFFSETS_TOPIC).cloned() else {
            return Ok(());
        };
        let now = Instant::now();
        let mut records = 0usize;
        for partition in 0..topic.partitions {
            let Some(target) = broker.partition(OFFSETS_TOPIC, partition) else {
                continue;
            };
            let mut offset = target.log.offsets().log_start_offset;
            loop {
                let read = target.log.read(offset, 4 << 20)?;
                let Some(region) = read.region else { break };
                let bytes = region.read_to_vec()?;
                for batch in Batches::new(&bytes) {
                    let Ok(batch) = batch else { break };
                    offset = batch.next_offset();
                    let Ok(decoded) = batch.records(64 << 20) else {
                        tracing::warn!(
                            partition,
                            offset = batch.base_offset(),
                            "unreadable batch in __consumer_offsets"
                        );
                        continue;
                    };
                    for record in decoded.iter() {
                        records += 1;
                        if let Err(reason) = self.apply(&record, now) {
                            tracing::warn!(partition, offset = record.offset, %reason, "skipping __consumer_offsets record");
                        }
                    }
                }
            }
        }
        let groups = self.groups().len();
        tracing::info!(groups, records, "group coordinator loaded");
        Ok(())
    }

    fn apply(&self, record: &sluice_record::Record<'_>, now: Instant) -> Result<(), String> {
        let key = RecordKey::decode(record.key.ok_or("record without key")?)?;
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                let shared = self.find_or_create(&group);
                let mut g = lock(&shared);
                match record.value {
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                    Some(value) => {
                        let value = OffsetValue::decode(value)?;
                        g.offsets.insert(
                            (topic, partition),
                            Committed {
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
                None => {
                    self.groups().remove(&group);
                }
                Some(value) => {
                    let value = GroupValue::decode(value)?;
                    let shared = self.find_or_create(&group);
                    lock(&shared).restore(value, now);
                }
            },
        }
        Ok(())
    }
}

fn storage_failure(err: &LogError) -> ApiError {
    ApiError::new(
        ResponseError::CoordinatorNotAvailable,
        format!("__consumer_offsets: {err}"),
    )
}
