//! The group coordinator's API (classic protocol): what JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and
//! OffsetDelete do, on top of the per-group state machine (`group.rs`) and the storage in
//! `__consumer_offsets` (`storage.rs`).
//!
//! Each group has its own mutex, held only for non-blocking work; waiting (for the end of a
//! rebalance, for the leader's assignment, for durability) happens after it is released.
//! In-memory offsets change only after their record is durable, and never go back to an
//! older record. Deadlines are applied by [`GroupCoordinator::run`], every 100 ms, on the
//! injected clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_log::{Clock, LogError};

use super::group::{Committed, GroupState, JoinOutcome, JoinRequest, Now, Reply, SyncOutcome};
use super::records::{OffsetValue, RecordKey};
use super::registry::{GroupRegistry, lock};
use super::storage::{OffsetsStorage, unavailable};
pub use crate::config::CoordinatorConfig;
use crate::metadata::MetadataStore;
use crate::partition::PartitionManager;

/// How often deadlines are applied.
const TICK: Duration = Duration::from_millis(100);

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

/// A result per partition: `None` is success.
pub type PartitionResults = Vec<(String, i32, Option<ResponseError>)>;

#[derive(Debug)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    clock: Arc<dyn Clock>,
    partitions: Arc<PartitionManager>,
    registry: GroupRegistry,
    storage: OffsetsStorage,
}

impl GroupCoordinator {
    pub fn new(
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
        partitions: Arc<PartitionManager>,
        metadata: Arc<MetadataStore>,
    ) -> Self {
        let storage = OffsetsStorage::new(
            partitions.clone(),
            metadata,
            clock.clone(),
            config.offsets_partitions,
        );
        GroupCoordinator {
            config,
            clock,
            partitions,
            registry: GroupRegistry::default(),
            storage,
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    fn now(&self) -> Now {
        Now::from_clock(self.clock.as_ref())
    }

    fn create_within_limits(
        &self,
        group_id: &str,
        now: Now,
    ) -> Result<super::registry::SharedGroup, ResponseError> {
        self.registry.find_or_create_within(
            group_id,
            now.ms,
            self.config.group_id_max_bytes,
            self.config.max_groups,
        )
    }

    /// Rebuilds groups and offsets from `__consumer_offsets` (at startup).
    pub fn load(&self) -> Result<(), LogError> {
        self.storage.load(&self.registry)
    }

    /// This broker now leads `partition` of `__consumer_offsets`: its groups are loaded
    /// again from the log (see `OffsetsStorage::reload`).
    pub fn reload_partition(&self, partition: i32) -> Result<(), LogError> {
        self.storage.reload(&self.registry, partition)
    }

    /// Whether this broker coordinates `group_id`: it leads the group's partition of
    /// `__consumer_offsets` (NOT_COORDINATOR otherwise: the client asks FindCoordinator
    /// again). Before the topic exists no broker does, and every one answers for the group
    /// as for an unknown one.
    pub fn coordinates(&self, group_id: &str) -> Result<(), ResponseError> {
        self.storage.coordinates(group_id)
    }

    pub async fn join(&self, group_id: &str, request: JoinRequest) -> JoinOutcome {
        if !self.storage.ready() {
            return JoinOutcome::error(ResponseError::CoordinatorNotAvailable, &request.member_id);
        }
        if let Err(error) = self.coordinates(group_id) {
            return JoinOutcome::error(error, &request.member_id);
        }
        let member_id = request.member_id.clone();
        let timeout = request.rebalance_timeout + request.session_timeout;
        let now = self.now();
        let group = match self.create_within_limits(group_id, now) {
            Ok(group) => group,
            Err(error) => return JoinOutcome::error(error, &request.member_id),
        };
        let reply = lock(&group).join(request, &self.config.limits, now);
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
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        if let Err(error) = self.coordinates(group_id) {
            return SyncOutcome::error(error);
        }
        let Some(group) = self.registry.find(group_id) else {
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
                self.now(),
            );
            if was_completing && g.state == GroupState::Stable {
                self.storage.write_group(&g);
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
        if let Err(error) = self.coordinates(group_id) {
            return Some(error);
        }
        match self.registry.find(group_id) {
            None => Some(ResponseError::UnknownMemberId),
            Some(group) => lock(&group).heartbeat(member_id, instance, generation, self.now()),
        }
    }

    pub fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        self.coordinates(group_id)?;
        let group = self
            .registry
            .find(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let mut g = lock(&group);
        let before = g.state;
        let results = g.leave(leaving, &self.config.limits, self.now());
        if g.state == GroupState::Empty && before != GroupState::Empty {
            self.storage.write_group(&g);
        }
        Ok(results)
    }

    /// OffsetCommit: one result per partition, answered once the records are durable.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
    ) -> PartitionResults {
        let fail_all = |error: ResponseError, offsets: &[OffsetToCommit]| {
            offsets
                .iter()
                .map(|o| (o.topic.clone(), o.partition, Some(error)))
                .collect::<Vec<_>>()
        };
        if !self.storage.ready() {
            return fail_all(ResponseError::CoordinatorNotAvailable, &offsets);
        }
        if let Err(error) = self.coordinates(group_id) {
            return fail_all(error, &offsets);
        }
        let now = self.now();
        let group = if generation < 0 && member_id.is_empty() {
            match self.create_within_limits(group_id, now) {
                Ok(group) => group,
                Err(error) => return fail_all(error, &offsets),
            }
        } else {
            match self.registry.find(group_id) {
                Some(group) => group,
                None => return fail_all(ResponseError::IllegalGeneration, &offsets),
            }
        };
        let mut results = Vec::with_capacity(offsets.len());
        let mut accepted = Vec::new();
        let appended = {
            let mut g = lock(&group);
            if let Err(error) = g.check_commit(member_id, instance, generation) {
                return fail_all(error, &offsets);
            }
            let mut records = Vec::new();
            for o in offsets {
                let error = if o.metadata.len() > self.config.metadata_max_bytes {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else if !self.storage.partition_exists(&o.topic, o.partition) {
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
                            commit_timestamp: now.ms,
                        };
                        records.push((key.encode(), Some(value.encode())));
                        accepted.push(o);
                    }
                }
            }
            if records.is_empty() {
                return results;
            }
            let appended = self.storage.append(group_id, records);
            if appended.is_ok() {
                g.pending_commits += 1;
            }
            appended
        };
        let appended_ok = appended.is_ok();
        let outcome = match appended {
            Ok(appended) => appended.durable().await.map_err(|e| unavailable(&e)),
            Err(err) => Err(err),
        };
        if appended_ok {
            let mut g = lock(&group);
            g.pending_commits -= 1;
        }
        match outcome {
            Ok(info) => {
                let mut g = lock(&group);
                // A topic deleted while the commit was in flight: its offsets were forgotten
                // (tombstoned) without this one, whose record may follow the tombstones. The
                // partitions go before the groups forget, and both sides hold the group lock,
                // so either the forgetting sees this offset or this sees the partition gone.
                let gone: Vec<(String, i32)> = accepted
                    .iter()
                    .filter(|o| !self.storage.partition_exists(&o.topic, o.partition))
                    .map(|o| (o.topic.clone(), o.partition))
                    .collect();
                if !gone.is_empty() {
                    let records = OffsetsStorage::tombstones(group_id, &gone, false);
                    if let Err(err) = self.storage.append(group_id, records) {
                        tracing::warn!(group = group_id, error = %err.message, "could not remove an offset of a deleted topic");
                    }
                }
                for (i, o) in accepted.into_iter().enumerate() {
                    if gone.iter().any(|(t, p)| *t == o.topic && *p == o.partition) {
                        let error = Some(ResponseError::UnknownTopicOrPartition);
                        results.push((o.topic, o.partition, error));
                        continue;
                    }
                    let record_offset = info.first_offset + i as i64;
                    let key = (o.topic.clone(), o.partition);
                    let newer = g
                        .offsets
                        .get(&key)
                        .is_none_or(|c| c.record_offset < record_offset);
                    if newer {
                        let committed = Committed {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                            metadata: o.metadata,
                            commit_timestamp: now.ms,
                            record_offset,
                        };
                        g.offsets.insert(key, committed);
                    }
                    results.push((o.topic, o.partition, None));
                }
            }
            Err(err) => {
                tracing::warn!(group = group_id, error = %err.message, "offset commit not durable");
                results.extend(accepted.into_iter().map(|o| {
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
        let group = self.registry.find(group_id);
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
        let mut out: Vec<_> = self
            .registry
            .all()
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
        let group = self.registry.find(group_id)?;
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
    pub async fn delete_group(&self, group_id: &str) -> Option<ResponseError> {
        if let Err(error) = self.coordinates(group_id) {
            return Some(error);
        }
        let Some(group) = self.registry.find(group_id) else {
            return Some(ResponseError::GroupIdNotFound);
        };
        let appended = {
            let mut g = lock(&group);
            match g.state {
                GroupState::Dead => return Some(ResponseError::GroupIdNotFound),
                // A commit on its way to disk is a use of the group.
                GroupState::Empty if g.pending_commits > 0 => {
                    return Some(ResponseError::NonEmptyGroup);
                }
                GroupState::Empty => {}
                _ => return Some(ResponseError::NonEmptyGroup),
            }
            let records = OffsetsStorage::tombstones(group_id, g.offsets.keys(), true);
            match self.storage.append(group_id, records) {
                Ok(appended) => {
                    g.mark_dead();
                    g.offsets.clear();
                    appended
                }
                Err(err) => return Some(err.code),
            }
        };
        self.registry.remove(group_id);
        match appended.durable().await {
            Ok(_) => None,
            Err(err) => Some(unavailable(&err).code),
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<PartitionResults, ResponseError> {
        self.coordinates(group_id)?;
        let group = self
            .registry
            .find(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let (results, appended) = {
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
            let mut removed = Vec::new();
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
                    removed.push((topic.clone(), partition));
                }
                results.push((topic, partition, None));
            }
            let appended = if removed.is_empty() {
                None
            } else {
                let records = OffsetsStorage::tombstones(group_id, &removed, false);
                Some(self.storage.append(group_id, records).map_err(|e| e.code)?)
            };
            (results, appended)
        };
        if let Some(appended) = appended {
            appended.durable().await.map_err(|e| unavailable(&e).code)?;
        }
        Ok(results)
    }

    /// Committed offset, log end offset and lag of every partition the group has an offset
    /// for. `None` if the group does not exist.
    pub fn lag(&self, group_id: &str) -> Option<Vec<PartitionLag>> {
        let offsets = self.fetch_offsets(group_id, None);
        self.registry.find(group_id)?;
        Some(
            offsets
                .into_iter()
                .filter_map(|(topic, partition, committed)| {
                    let committed = committed?.offset;
                    let log_end_offset = self.partitions.get(&topic, partition)?.high_watermark();
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
    pub fn forget_topic(&self, topic: &str) {
        for group in self.registry.all() {
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
            for key in &doomed {
                g.offsets.remove(key);
            }
            let records = OffsetsStorage::tombstones(&g.id, &doomed, false);
            if let Err(err) = self.storage.append(&g.id, records) {
                tracing::warn!(group = %g.id, error = %err.message, "could not record removed offsets");
            }
        }
    }

    /// Applies deadlines in every group and writes the records of groups that emptied.
    fn tick(&self) {
        let now = self.now();
        for group in self.registry.all() {
            let mut g = lock(&group);
            let before = g.state;
            if g.tick(&self.config.limits, now)
                && g.state == GroupState::Empty
                && before != GroupState::Empty
            {
                self.storage.write_group(&g);
            }
        }
    }

    /// Background work until `stop` changes: deadlines every 100 ms, offset expiry every
    /// `offsets.retention.check.interval.ms` (both measured on the injected clock).
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_expiry = self.clock.now() + self.config.offsets_retention_check;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            self.tick();
            if self.clock.now() >= next_expiry {
                self.storage.expire_offsets(
                    &self.registry,
                    self.config.offsets_retention,
                    self.config.offsets_retention_check,
                );
                next_expiry = self.clock.now() + self.config.offsets_retention_check;
            }
        }
    }
}
