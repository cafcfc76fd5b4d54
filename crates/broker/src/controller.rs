//! The controller: every change to the cluster metadata is decided here (KRaft's controller
//! role). It validates an admin request against the current image, turns it into metadata
//! records and has the [`MetadataStore`] make them durable; what the change means for the
//! partitions and groups of this broker is then published by the broker wiring. It also
//! hands out producer ids, from blocks reserved durably in the metadata log.
//!
//! It runs on every node: a change computed here from this node's image is proposed to the
//! quorum (forwarded to its leader by a follower), and a change computed from an image that
//! turns out stale does not apply anywhere and is computed again. Partitions are placed on
//! the live brokers round-robin; a broker that registers takes back the leadership of its
//! partitions left without a leader, and a fenced broker leads nothing.
//!
//! Depends on the metadata store, topic configuration rules and the error type; must not
//! depend on partitions, groups or handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::errors::ApiError;
use crate::internal_topics;
use crate::metadata::{
    Committed, MetadataError, MetadataImage, MetadataRecord, MetadataStore, NO_LEADER,
    PartitionState, TopicImage,
};
use crate::topic_config::{self, validate_topic_name};

/// Producer ids reserved per metadata record.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// How many times a change computed from a stale image, or lost in a leader change, is
/// computed and proposed again.
const STALE_RETRIES: usize = 3;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default.
    pub partitions: i32,
    /// -1 for the broker default.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// The replicas of each partition as the client chose them (empty: placed by the
    /// controller).
    pub assignments: Vec<Vec<i32>>,
}

/// The defaults a topic creation falls back to, and the broker's partition cap.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication_factor: i16,
    /// `max.broker.partitions`.
    pub max_partitions: i32,
}

/// Refuses a change that would take the cluster past `max.broker.partitions` on each of
/// its live brokers.
fn check_partition_cap(image: &MetadataImage, adding: i64, cap: i32) -> Result<(), ApiError> {
    let held: i64 = image.topics.values().map(|t| i64::from(t.partitions)).sum();
    let brokers = image.live_brokers().count().max(1) as i64;
    if held + adding > i64::from(cap) * brokers {
        return Err(ApiError::new(
            ResponseError::PolicyViolation,
            format!(
                "{adding} more partitions would make {} on {brokers} broker(s); max.broker.partitions is {cap}",
                held + adding
            ),
        ));
    }
    Ok(())
}

/// Places partitions `from..to` of `topic` on the live brokers, round-robin from a start
/// that moves with the number of topics (so single-partition topics spread too), each led
/// by its first replica; or as `assignments` (one replica list per partition) say, once
/// checked.
fn place_partitions(
    image: &MetadataImage,
    topic: &str,
    from: i32,
    to: i32,
    replication: i16,
    assignments: &[Vec<i32>],
) -> Result<Vec<MetadataRecord>, ApiError> {
    if !assignments.is_empty() {
        let bad = |why: String| ApiError::new(ResponseError::InvalidReplicaAssignment, why);
        if assignments.len() != usize::try_from(to - from).unwrap_or(0) {
            return Err(bad(format!(
                "{} assignments for {} new partitions",
                assignments.len(),
                to - from
            )));
        }
        let mut records = Vec::with_capacity(assignments.len());
        for (index, replicas) in (from..to).zip(assignments) {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if replicas.is_empty()
                || distinct.len() != replicas.len()
                || i16::try_from(replicas.len()).ok() != Some(replication)
            {
                return Err(bad(format!(
                    "partition {index}: replicas {replicas:?} (replication factor {replication})"
                )));
            }
            if let Some(unknown) = replicas.iter().find(|r| image.live_broker(**r).is_none()) {
                return Err(bad(format!(
                    "partition {index}: broker {unknown} is not a live broker"
                )));
            }
            records.push(first_placement(topic, index, replicas.clone()));
        }
        return Ok(records);
    }
    let brokers: Vec<i32> = image.live_brokers().map(|b| b.id).collect();
    let replication = usize::try_from(replication).unwrap_or(0);
    if replication == 0 || replication > brokers.len() {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication} cannot be met: {} live broker(s)",
                brokers.len()
            ),
        ));
    }
    let start = image.topics.len() + usize::try_from(from).unwrap_or(0);
    Ok((from..to)
        .map(|index| {
            let first = start + usize::try_from(index - from).unwrap_or(0);
            let replicas: Vec<i32> = (0..replication)
                .map(|r| brokers[(first + r) % brokers.len()])
                .collect();
            first_placement(topic, index, replicas)
        })
        .collect())
}

/// A new partition: every replica in sync (all are empty), led by the first.
pub(crate) fn first_placement(topic: &str, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic: topic.to_string(),
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        leader_epoch: crate::partition::INITIAL_LEADER_EPOCH,
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

#[derive(Debug)]
pub struct Controller {
    metadata: Arc<MetadataStore>,
    defaults: TopicDefaults,
    /// Producer ids handed out next: (next, end of the reserved block).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

fn metadata_failure(err: &MetadataError) -> ApiError {
    match err {
        // Clients find the active controller in Metadata and retry there.
        MetadataError::NotController { .. } => {
            ApiError::new(ResponseError::NotController, err.to_string())
        }
        // Lost in a leader change, or no longer applies: a retry sees what happened.
        MetadataError::Quorum(_) | MetadataError::Stale(_) | MetadataError::Lost => {
            ApiError::new(ResponseError::RequestTimedOut, err.to_string())
        }
        _ => {
            tracing::error!(error = %err, "metadata update failed");
            ApiError::new(
                ResponseError::KafkaStorageError,
                format!("metadata log: {err}"),
            )
        }
    }
}

fn update_failure(err: MetadataError) -> ApiError {
    match err {
        // A record that cannot be written is the request's fault, and nothing was written.
        MetadataError::Encode(err) => ApiError::new(ResponseError::InvalidRequest, err.to_string()),
        other => metadata_failure(&other),
    }
}

fn no_topic(name: &str) -> ApiError {
    ApiError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("no topic {name}"),
    )
}

impl Controller {
    pub fn new(metadata: Arc<MetadataStore>, defaults: TopicDefaults) -> Self {
        let end = metadata.image().producer_ids_end;
        Controller {
            metadata,
            defaults,
            producer_ids: tokio::sync::Mutex::new((end, end)),
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// Makes the records `change` computes durable; maps storage failures to
    /// KAFKA_STORAGE_ERROR. A change computed from a stale image is computed again.
    async fn commit<T>(
        &self,
        change: impl Fn(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ApiError>,
    ) -> Result<Committed<T>, ApiError> {
        self.commit_from(change, false).await
    }

    /// [`Controller::commit`], `leader_only`: proposed only while this node leads the
    /// quorum ([`MetadataStore::update_as_leader`]).
    async fn commit_from<T>(
        &self,
        change: impl Fn(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ApiError>,
        leader_only: bool,
    ) -> Result<Committed<T>, ApiError> {
        let mut attempt = 0;
        loop {
            let update = if leader_only {
                self.metadata.update_as_leader(&change).await
            } else {
                self.metadata.update(&change).await
            };
            match update {
                Err(err @ (MetadataError::Stale(_) | MetadataError::Lost))
                    if attempt < STALE_RETRIES =>
                {
                    attempt += 1;
                    tracing::debug!(error = %err, attempt, "metadata change computed again");
                }
                Err(err) => return Err(update_failure(err)),
                Ok(result) => return result,
            }
        }
    }

    /// [`Controller::commit`] for a thread that may block (startup).
    fn commit_blocking<T>(
        &self,
        change: impl Fn(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ApiError>,
    ) -> Result<Committed<T>, ApiError> {
        let mut attempt = 0;
        loop {
            match self.metadata.update_blocking(&change) {
                Err(MetadataError::Stale(_) | MetadataError::Lost) if attempt < STALE_RETRIES => {
                    attempt += 1;
                }
                Err(err) => return Err(update_failure(err)),
                Ok(result) => return result,
            }
        }
    }

    /// Validates a topic creation without making it: (partitions, replication factor, the
    /// configuration overrides in the form they are stored).
    pub fn check_new_topic(
        &self,
        spec: &NewTopic,
    ) -> Result<(i32, i16, BTreeMap<String, String>), ApiError> {
        validate_topic_name(&spec.name)
            .map_err(|m| ApiError::new(ResponseError::InvalidTopicException, m))?;
        let partitions = if spec.partitions == -1 {
            self.defaults.partitions
        } else {
            spec.partitions
        };
        if partitions < 1 {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("{partitions} partitions: must be at least 1"),
            ));
        }
        let replication = match spec.assignments.first() {
            // Manual assignments say the replication factor themselves (Kafka's clients
            // send -1 with them).
            Some(replicas) if spec.replication_factor == -1 => {
                i16::try_from(replicas.len()).unwrap_or(i16::MAX)
            }
            _ if spec.replication_factor == -1 => self.defaults.replication_factor,
            _ => spec.replication_factor,
        };
        if replication < 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {replication}: must be at least 1"),
            ));
        }
        let configs = spec
            .configs
            .iter()
            .map(|(key, value)| {
                topic_config::validate(key, value)
                    .map(|value| (key.clone(), value))
                    .map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))
            })
            .collect::<Result<_, _>>()?;
        Ok((partitions, replication, configs))
    }

    /// Creates a topic (or only validates it); the value is the topic as created.
    pub async fn create_topic(
        &self,
        spec: NewTopic,
        validate_only: bool,
    ) -> Result<Committed<TopicImage>, ApiError> {
        let (partitions, replication, configs) = self.check_new_topic(&spec)?;
        let candidate = TopicImage {
            name: spec.name,
            id: Uuid::new_v4(),
            partitions,
            configs,
            states: Vec::new(),
        };
        let cap = self.defaults.max_partitions;
        self.commit(|image| {
            if image.topic(&candidate.name).is_some() {
                return Err(ApiError::new(
                    ResponseError::TopicAlreadyExists,
                    format!("topic {} already exists", candidate.name),
                ));
            }
            check_partition_cap(image, i64::from(candidate.partitions), cap)?;
            let placed = place_partitions(
                image,
                &candidate.name,
                0,
                candidate.partitions,
                replication,
                &spec.assignments,
            )?;
            let records = if validate_only {
                Vec::new()
            } else {
                let mut records = vec![MetadataRecord::CreateTopic {
                    name: candidate.name.clone(),
                    id: candidate.id,
                    partitions: candidate.partitions,
                    configs: candidate.configs.clone(),
                }];
                records.extend(placed);
                records
            };
            let mut created = candidate.clone();
            let mut preview = MetadataImage::default();
            for record in &records {
                preview
                    .apply(record)
                    .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
            }
            if let Some(topic) = preview.topic(&created.name) {
                created.states = topic.states.clone();
            }
            Ok((records, created))
        })
        .await
    }

    /// Deletes a topic; the value is the topic as it was.
    pub async fn delete_topic(&self, name: &str) -> Result<Committed<TopicImage>, ApiError> {
        if internal_topics::is_internal(name) {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!("{name} is an internal topic"),
            ));
        }
        self.commit(|image| {
            let topic = image.topic(name).ok_or_else(|| no_topic(name))?;
            let record = MetadataRecord::DeleteTopic {
                name: name.to_string(),
            };
            Ok((vec![record], topic.clone()))
        })
        .await
    }

    /// Raises a topic's partition count to `count`, placing the new partitions as
    /// `assignments` say (empty: the controller places them); the value is the previous
    /// count.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: &[Vec<i32>],
        validate_only: bool,
    ) -> Result<Committed<i32>, ApiError> {
        let cap = self.defaults.max_partitions;
        self.commit(|image| {
            let topic = image.topic(name).ok_or_else(|| no_topic(name))?;
            check_partition_cap(image, i64::from(count) - i64::from(topic.partitions), cap)?;
            if count <= topic.partitions {
                return Err(ApiError::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic {name} has {} partitions; the new count {count} must be larger",
                        topic.partitions
                    ),
                ));
            }
            let replication = topic
                .states
                .first()
                .map_or(1, |s| i16::try_from(s.replicas.len()).unwrap_or(1).max(1));
            let placed = place_partitions(
                image,
                name,
                topic.partitions,
                count,
                replication,
                assignments,
            )?;
            let records = if validate_only {
                Vec::new()
            } else {
                let mut records = vec![MetadataRecord::SetPartitionCount {
                    name: name.to_string(),
                    partitions: count,
                }];
                records.extend(placed);
                records
            };
            Ok((records, topic.partitions))
        })
        .await
    }

    /// Replaces (`replace_all`) or edits a topic's configuration overrides. `changes` maps a
    /// key to its new value, or to `None` to remove the override.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
        validate_only: bool,
    ) -> Result<Committed<()>, ApiError> {
        let changes = changes
            .into_iter()
            .map(|(key, value)| {
                let checked = match value {
                    Some(value) => topic_config::validate(&key, &value).map(Some),
                    None if topic_config::TOPIC_PROPERTIES
                        .iter()
                        .any(|(k, _)| *k == key) =>
                    {
                        Ok(None)
                    }
                    None => Err(format!("unknown topic configuration {key:?}")),
                };
                checked
                    .map(|value| (key, value))
                    .map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.commit(|image| {
            let topic = image.topic(name).ok_or_else(|| no_topic(name))?;
            let mut target = if replace_all {
                BTreeMap::new()
            } else {
                topic.configs.clone()
            };
            for (key, value) in &changes {
                match value {
                    Some(value) => target.insert(key.clone(), value.clone()),
                    None => target.remove(key),
                };
            }
            if validate_only {
                return Ok((Vec::new(), ()));
            }
            let mut records = Vec::new();
            for key in topic.configs.keys().filter(|k| !target.contains_key(*k)) {
                records.push(MetadataRecord::SetTopicConfig {
                    name: name.into(),
                    key: key.clone(),
                    value: None,
                });
            }
            for (key, value) in &target {
                if topic.configs.get(key) != Some(value) {
                    records.push(MetadataRecord::SetTopicConfig {
                        name: name.into(),
                        key: key.clone(),
                        value: Some(value.clone()),
                    });
                }
            }
            Ok((records, ()))
        })
        .await
    }

    /// Registers this broker's new incarnation (at startup, and again if it was fenced while
    /// alive): it becomes live, and leads again its partitions left without a leader. An
    /// earlier incarnation still live (a restart faster than the session timeout) is fenced
    /// in the same change ([`registration`]). With
    /// `claim_unplaced` (a single node) it also takes every partition placed nowhere (data
    /// written before partitions were placed). Blocking.
    pub fn register_broker(
        &self,
        broker: &crate::metadata::BrokerImage,
        claim_unplaced: bool,
    ) -> Result<(), ApiError> {
        self.commit_blocking(|image| Ok((registration(image, broker, claim_unplaced), ())))
            .map(|_| ())
    }

    /// [`Controller::register_broker`] from async code.
    pub async fn reregister_broker(
        &self,
        broker: &crate::metadata::BrokerImage,
    ) -> Result<(), ApiError> {
        self.commit(|image| Ok((registration(image, broker, false), ())))
            .await
            .map(|_| ())
    }

    /// Fences broker `id`'s incarnation from any node (a controlled shutdown fences itself).
    /// Its partitions' leadership moves to another in-sync live replica, or to none
    /// (offline until it returns). Nothing if that incarnation is no longer live.
    pub async fn fence_broker(&self, id: i32, incarnation: Uuid) -> Result<(), ApiError> {
        self.commit(|image| Ok((fencing(image, id, incarnation), ())))
            .await
            .map(|_| ())
    }

    /// The active controller fences a broker it has not heard from: proposed only while
    /// this node leads the quorum (the silence was seen from the leader's seat; a node
    /// that lost that seat while paused must not act on it).
    pub async fn fence_silent_broker(&self, id: i32, incarnation: Uuid) -> Result<(), ApiError> {
        self.commit_from(|image| Ok((fencing(image, id, incarnation), ())), true)
            .await
            .map(|_| ())
    }

    /// This broker's copies of `partitions` failed (storage): see [`resignation`].
    /// Returns how many partitions changed.
    pub async fn resign_replicas(
        &self,
        id: i32,
        incarnation: Uuid,
        partitions: Vec<PartitionKey>,
    ) -> Result<usize, ApiError> {
        let committed = self
            .commit(|image| {
                let records = resignation(image, id, incarnation, &partitions);
                let changed = records.len();
                Ok((records, changed))
            })
            .await?;
        Ok(committed.value)
    }

    /// A partition leader's request to change its ISR (KRaft's AlterPartition): applied
    /// when `leader` still leads in `leader_epoch` and nothing changed the partition since
    /// `partition_epoch`. Returns whether the change was made (false: refused as stale or
    /// no change; the leader learns the partition's state from the metadata either way).
    pub async fn alter_isr(
        &self,
        topic: &str,
        partition: i32,
        leader: (i32, i32),
        partition_epoch: i32,
        isr: &[i32],
    ) -> Result<bool, ApiError> {
        let committed = self
            .commit(|image| {
                let change = isr_update(
                    image,
                    topic,
                    partition,
                    leader.0,
                    leader.1,
                    partition_epoch,
                    isr,
                );
                let made = change.is_some();
                Ok((change.into_iter().collect(), made))
            })
            .await?;
        Ok(committed.value)
    }

    /// AlterPartitionReassignments: each `(topic, partition, target)` as [`reassignment`]
    /// decides, the valid ones committed together; one outcome per request entry.
    pub async fn alter_reassignments(
        &self,
        requests: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Result<Vec<Result<(), ApiError>>, ApiError> {
        let committed = self
            .commit(|image| {
                let mut records = Vec::new();
                let mut outcomes = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                for (topic, partition, target) in &requests {
                    if !seen.insert((topic, partition)) {
                        outcomes.push(Err(ApiError::new(
                            ResponseError::InvalidRequest,
                            format!("{topic}-{partition} is named twice"),
                        )));
                        continue;
                    }
                    match reassignment(image, topic, *partition, target.as_deref()) {
                        Ok(record) => {
                            records.push(record);
                            outcomes.push(Ok(()));
                        }
                        Err(err) => outcomes.push(Err(err)),
                    }
                }
                Ok((records, outcomes))
            })
            .await?;
        Ok(committed.value)
    }

    /// Preferred-leader election (ElectLeaders, and the periodic rebalance): see
    /// [`preferred_elections`]. Returns the partitions that were not moved, with why.
    pub async fn elect_preferred_leaders(
        &self,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(PartitionKey, NoElection)>, ApiError> {
        let committed = self
            .commit(|image| Ok(preferred_elections(image, partitions.as_deref())))
            .await?;
        Ok(committed.value)
    }

    /// A producer id never handed out before, not even by an earlier run of this broker: ids
    /// are reserved in blocks recorded durably in the metadata log.
    pub async fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 == ids.1 {
            let committed = self
                .commit(|image| {
                    let end = image.producer_ids_end + PRODUCER_ID_BLOCK;
                    Ok((
                        vec![MetadataRecord::ProducerIdBlock { end }],
                        (image.producer_ids_end, end),
                    ))
                })
                .await?;
            *ids = committed.value;
        }
        assert!(ids.0 < ids.1, "a reserved block has ids left");
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }
}

/// The records fencing broker `id`'s `incarnation`: the fence, then for each partition it
/// was in sync for, an ISR without it, and where it led, a new leader chosen from that ISR
/// among the live brokers (none if no live replica is in sync: `unclean.leader.election` is
/// off, so an out-of-sync replica never leads, and the partition waits for an in-sync one to
/// come back; its last in-sync replica stays named in the ISR). Nothing if that incarnation
/// is not live.
pub(crate) fn fencing(image: &MetadataImage, id: i32, incarnation: Uuid) -> Vec<MetadataRecord> {
    let live = image
        .live_broker(id)
        .is_some_and(|b| b.incarnation == incarnation);
    if !live {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::FenceBroker { id, incarnation }];
    for topic in image.topics.values() {
        for (index, state) in (0..topic.partitions).zip(&topic.states) {
            let (isr, leader) = without_replica(image, state, id);
            if isr == state.isr && leader == state.leader {
                continue;
            }
            records.push(partition_change(&topic.name, index, state, isr, leader));
        }
    }
    records
}

/// The records taking broker `id` (in `incarnation`) out of the named partitions because
/// its copy of them failed (a full disk, a failed write or fsync): it leaves their ISRs,
/// and where it led, another live in-sync replica leads. A partition it is the only live
/// in-sync replica of keeps it (an out-of-sync replica never leads: the failing copy is the
/// only complete one, and it serves again once its disk does). Nothing for an incarnation
/// that is not live.
pub(crate) fn resignation(
    image: &MetadataImage,
    id: i32,
    incarnation: Uuid,
    partitions: &[PartitionKey],
) -> Vec<MetadataRecord> {
    let live = image
        .live_broker(id)
        .is_some_and(|b| b.incarnation == incarnation);
    if !live {
        return Vec::new();
    }
    let mut records = Vec::new();
    for (topic, partition) in partitions {
        let Some(state) = image.partition(topic, *partition) else {
            continue;
        };
        let (isr, leader) = without_replica(image, state, id);
        let orphaned = leader == NO_LEADER && state.leader == id;
        if orphaned || (isr == state.isr && leader == state.leader) {
            continue;
        }
        assert!(
            !isr.contains(&id) && leader != id,
            "{id} resigned {topic}-{partition}"
        );
        records.push(partition_change(topic, *partition, state, isr, leader));
    }
    records
}

/// A partition's ISR and leader once broker `id` is out of it: the ISR without it (unless
/// it is the last member, who stays named as the last in-sync replica), and where it led,
/// the first live in-sync replica left (none if there is none).
fn without_replica(image: &MetadataImage, state: &PartitionState, id: i32) -> (Vec<i32>, i32) {
    if !state.isr.contains(&id) && state.leader != id {
        return (state.isr.clone(), state.leader);
    }
    let others: Vec<i32> = state.isr.iter().copied().filter(|r| *r != id).collect();
    let isr = if others.is_empty() {
        state.isr.clone()
    } else {
        others
    };
    let leader = if state.leader == id {
        isr.iter()
            .copied()
            .find(|r| *r != id && image.live_broker(*r).is_some())
            .unwrap_or(NO_LEADER)
    } else {
        state.leader
    };
    (isr, leader)
}

/// The change of a partition from `state` to `isr` led by `leader`: a new partition epoch,
/// and a new leader epoch if the leader changes. A reassignment in progress goes on, and
/// completes if the ISR now holds every target replica ([`settled`]).
pub(crate) fn partition_change(
    topic: &str,
    partition: i32,
    state: &PartitionState,
    isr: Vec<i32>,
    leader: i32,
) -> MetadataRecord {
    let next = PartitionState {
        replicas: state.replicas.clone(),
        isr,
        leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        adding: state.adding.clone(),
        removing: state.removing.clone(),
    };
    change_record(topic, partition, state, settled(next))
}

/// The record taking a partition from `state` to `next` (leader, ISR, replicas and
/// reassignment from `next`): one partition epoch later, a leader epoch later if the leader
/// changes.
fn change_record(
    topic: &str,
    partition: i32,
    state: &PartitionState,
    next: PartitionState,
) -> MetadataRecord {
    let leader_epoch = if next.leader == state.leader {
        state.leader_epoch
    } else {
        state.leader_epoch + 1
    };
    MetadataRecord::PartitionChange {
        topic: topic.to_string(),
        partition,
        replicas: next.replicas,
        isr: next.isr,
        leader: next.leader,
        leader_epoch,
        partition_epoch: state.partition_epoch + 1,
        adding: next.adding,
        removing: next.removing,
    }
}

/// Completes a reassignment whose target replicas are all in sync: the replicas become the
/// target, the removed ones leave the ISR, and if the leader is being removed the first
/// in-sync target replica leads. Anything else is returned as it is.
fn settled(mut next: PartitionState) -> PartitionState {
    if !next.reassigning() {
        return next;
    }
    let target = next.target();
    if !target.iter().all(|r| next.isr.contains(r)) {
        return next;
    }
    next.isr.retain(|r| target.contains(r));
    if !target.contains(&next.leader) && next.leader != NO_LEADER {
        next.leader = next.isr[0];
    }
    next.replicas = target;
    next.adding.clear();
    next.removing.clear();
    next
}

/// A reassignment request for one partition (AlterPartitionReassignments): move it to
/// `target` (replacing a reassignment in progress, counted from the replicas it started
/// from), or with `None` cancel the one in progress (back to those replicas). The new
/// replicas are added at once and copy the leader; the old ones go once every target
/// replica is in sync. Errors are the request's, per partition.
pub(crate) fn reassignment(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> Result<MetadataRecord, ApiError> {
    let state = image.partition(topic, partition).ok_or_else(|| {
        ApiError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {topic}-{partition}"),
        )
    })?;
    let original: Vec<i32> = state
        .replicas
        .iter()
        .copied()
        .filter(|r| !state.adding.contains(r))
        .collect();
    let target = match target {
        Some(target) => target.to_vec(),
        None if state.reassigning() => original.clone(),
        None => {
            return Err(ApiError::new(
                ResponseError::NoReassignmentInProgress,
                format!("{topic}-{partition} is not being reassigned"),
            ));
        }
    };
    let bad = |why: String| ApiError::new(ResponseError::InvalidReplicaAssignment, why);
    let mut distinct = target.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if target.is_empty() || distinct.len() != target.len() {
        return Err(bad(format!("replicas {target:?}")));
    }
    if let Some(unknown) = target.iter().find(|r| !image.brokers.contains_key(r)) {
        return Err(bad(format!("broker {unknown} is not registered")));
    }
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let mut replicas = target.clone();
    replicas.extend(removing.iter().copied());
    // Replicas added by the reassignment being replaced and not in the new target leave
    // the ISR with it.
    let isr: Vec<i32> = state
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    let leader = if replicas.contains(&state.leader) {
        state.leader
    } else {
        isr.first().copied().unwrap_or(NO_LEADER)
    };
    if isr.is_empty() {
        return Err(bad(format!(
            "{topic}-{partition}: no in-sync replica would remain among {replicas:?}"
        )));
    }
    let next = PartitionState {
        replicas,
        isr,
        leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        adding,
        removing,
    };
    Ok(change_record(topic, partition, state, settled(next)))
}

/// The records registering `broker`: the fencing of its earlier incarnation if that one is
/// still live, the registration, then the partitions it leads again (those left without a
/// leader that it was last in sync for), and on a single node the partitions placed
/// nowhere.
pub(crate) fn registration(
    image: &MetadataImage,
    broker: &crate::metadata::BrokerImage,
    claim_unplaced: bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    // A new incarnation while the last one is still live: the node restarted before it was
    // found silent. The last one is fenced first, as it would have been: where it led, another
    // in-sync replica leads in a new leader epoch, so that a new incarnation never continues
    // an epoch its predecessor led (its log may lack the unsynced tail the followers copied),
    // and clients go to replicas that stayed up while it catches up.
    let fenced_first;
    let before = image;
    let image = match image.live_broker(broker.id) {
        Some(last) if last.incarnation != broker.incarnation => {
            let fence = fencing(image, broker.id, last.incarnation);
            let mut next = image.clone();
            for record in &fence {
                next.apply(record)
                    .expect("a fencing applies to the image it was computed from");
            }
            records.extend(fence);
            fenced_first = next;
            &fenced_first
        }
        _ => image,
    };
    let current = image.brokers.get(&broker.id);
    let registered = current.is_some_and(|b| {
        b.incarnation == broker.incarnation
            && !b.fenced
            && b.host == broker.host
            && b.port == broker.port
    });
    if !registered {
        records.push(MetadataRecord::RegisterBroker {
            id: broker.id,
            incarnation: broker.incarnation,
            host: broker.host.clone(),
            port: broker.port,
        });
    }
    for topic in image.topics.values() {
        for (index, state) in (0..topic.partitions).zip(&topic.states) {
            if state.replicas.is_empty() && claim_unplaced {
                let mut placed = first_placement(&topic.name, index, vec![broker.id]);
                if let MetadataRecord::PartitionChange {
                    leader_epoch,
                    partition_epoch,
                    ..
                } = &mut placed
                {
                    *leader_epoch = state.leader_epoch.max(-1) + 1;
                    *partition_epoch = state.partition_epoch.max(-1) + 1;
                }
                records.push(placed);
            } else if state.leader == NO_LEADER && state.isr.contains(&broker.id) {
                records.push(partition_change(
                    &topic.name,
                    index,
                    state,
                    state.isr.clone(),
                    broker.id,
                ));
            }
        }
    }
    // Whatever this incarnation leads, it leads in an epoch no earlier one led.
    for record in &records {
        if let MetadataRecord::PartitionChange {
            topic,
            partition,
            leader,
            leader_epoch,
            ..
        } = record
            && *leader == broker.id
            && let Some(state) = before.partition(topic, *partition)
        {
            assert!(
                *leader_epoch > state.leader_epoch,
                "{topic}-{partition}: broker {} would lead in epoch {leader_epoch}, not after {}",
                broker.id,
                state.leader_epoch
            );
        }
    }
    records
}

/// A partition by topic name and index.
pub type PartitionKey = (String, i32);

/// Why a preferred-leader election did not move a partition's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoElection {
    /// The preferred replica leads already.
    NotNeeded,
    /// The preferred replica is not live or not in sync.
    PreferredNotAvailable,
    /// No such partition.
    Unknown,
}

/// Moves each of `partitions` (every partition when `None`) to its preferred leader, its
/// first replica, where that replica is live and in sync and does not lead (Kafka's
/// preferred-replica election: after a broker returns, leadership goes back to where
/// placement spread it). Returns the records, and the partitions left as they were with
/// the reason.
pub(crate) fn preferred_elections(
    image: &MetadataImage,
    partitions: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<(PartitionKey, NoElection)>) {
    let all: Vec<(String, i32)>;
    let wanted = match partitions {
        Some(wanted) => wanted,
        None => {
            all = image
                .topics
                .values()
                .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
                .collect();
            &all
        }
    };
    let mut records = Vec::new();
    let mut left = Vec::new();
    for (topic, partition) in wanted {
        let Some(state) = image.partition(topic, *partition) else {
            left.push(((topic.clone(), *partition), NoElection::Unknown));
            continue;
        };
        let Some(&preferred) = state.replicas.first() else {
            left.push(((topic.clone(), *partition), NoElection::Unknown));
            continue;
        };
        if state.leader == preferred {
            left.push(((topic.clone(), *partition), NoElection::NotNeeded));
        } else if state.isr.contains(&preferred) && image.live_broker(preferred).is_some() {
            records.push(partition_change(
                topic,
                *partition,
                state,
                state.isr.clone(),
                preferred,
            ));
        } else {
            left.push((
                (topic.clone(), *partition),
                NoElection::PreferredNotAvailable,
            ));
        }
    }
    (records, left)
}

/// The ISR change a partition's leader asks for (KRaft's AlterPartition), checked against
/// `image`: `None` when the leader is no longer `leader` in `leader_epoch`, the partition
/// changed since `partition_epoch`, or the ISR would be no change or invalid (not the
/// leader's, not replicas, or naming a fenced broker as joining).
pub(crate) fn isr_update(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: &[i32],
) -> Option<MetadataRecord> {
    let state = image.partition(topic, partition)?;
    let current = state.leader == leader
        && state.leader_epoch == leader_epoch
        && state.partition_epoch == partition_epoch;
    let joining_live = isr
        .iter()
        .filter(|r| !state.isr.contains(r))
        .all(|r| image.live_broker(*r).is_some());
    let valid = isr.contains(&leader) && isr.iter().all(|r| state.replicas.contains(r));
    if !current || !joining_live || !valid || isr == state.isr.as_slice() {
        return None;
    }
    Some(partition_change(
        topic,
        partition,
        state,
        isr.to_vec(),
        leader,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::BrokerImage;

    fn broker(id: i32, incarnation: u128) -> BrokerImage {
        BrokerImage {
            id,
            incarnation: Uuid::from_u128(incarnation),
            host: format!("h{id}"),
            port: 9092,
            fenced: false,
        }
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for record in records {
            image.apply(record).unwrap();
        }
    }

    /// Registers `broker` in `image` as the controller would.
    fn register(image: &mut MetadataImage, broker: &BrokerImage, claim_unplaced: bool) {
        let records = registration(image, broker, claim_unplaced);
        apply(image, &records);
    }

    /// Every partition's leader is one of its replicas and a live broker, or none.
    fn check_leaders(image: &MetadataImage) {
        for topic in image.topics.values() {
            assert_eq!(topic.states.len(), topic.partitions as usize);
            for state in &topic.states {
                if state.leader != NO_LEADER {
                    assert!(state.replicas.contains(&state.leader), "{state:?}");
                    assert!(image.live_broker(state.leader).is_some(), "{state:?}");
                }
            }
        }
    }

    /// Brokers 1, 2, 3 and topic `t` of `partitions` placed with `replication` replicas
    /// (as `assignments` say, if any).
    fn three_brokers_with_topic(
        partitions: i32,
        replication: i16,
        assignments: &[Vec<i32>],
    ) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            register(&mut image, &broker(id, id as u128), false);
        }
        let mut records = vec![MetadataRecord::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(9),
            partitions,
            configs: BTreeMap::new(),
        }];
        records.extend(
            place_partitions(&image, "t", 0, partitions, replication, assignments).unwrap(),
        );
        apply(&mut image, &records);
        image
    }

    /// Topic `t` of one partition on replicas 1, 2, 3, led by 1.
    fn replicated() -> MetadataImage {
        three_brokers_with_topic(1, 3, &[vec![1, 2, 3]])
    }

    #[test]
    fn a_failed_leader_is_replaced_from_the_isr_and_never_by_an_out_of_sync_replica() {
        let mut image = replicated();
        let state = |image: &MetadataImage| image.partition("t", 0).unwrap().clone();
        assert_eq!(state(&image).isr, vec![1, 2, 3]);
        // The leader shrinks the ISR: 3 fell behind.
        let shrink = isr_update(&image, "t", 0, 1, 0, 0, &[1, 2]).unwrap();
        apply(&mut image, &[shrink]);
        assert_eq!(
            (state(&image).isr, state(&image).partition_epoch),
            (vec![1, 2], 1)
        );
        assert!(
            isr_update(&image, "t", 0, 1, 0, 0, &[1]).is_none(),
            "computed from an older partition epoch"
        );
        assert!(
            isr_update(&image, "t", 0, 2, 0, 1, &[1]).is_none(),
            "not the leader"
        );
        assert!(
            isr_update(&image, "t", 0, 1, 0, 1, &[2, 3]).is_none(),
            "without the leader"
        );
        assert!(
            isr_update(&image, "t", 0, 1, 0, 1, &[1, 2]).is_none(),
            "no change"
        );
        // The leader dies: 2 (in sync) takes over in a new epoch, 1 leaves the ISR.
        let fence = fencing(&image, 1, Uuid::from_u128(1));
        apply(&mut image, &fence);
        check_leaders(&image);
        let now = state(&image);
        assert_eq!(
            (now.leader, now.leader_epoch, now.isr.clone()),
            (2, 1, vec![2])
        );
        // 2 dies too: 3 is live but out of sync, so the partition has no leader; 2 stays named.
        let fence = fencing(&image, 2, Uuid::from_u128(2));
        apply(&mut image, &fence);
        let now = state(&image);
        assert_eq!((now.leader, now.isr.clone()), (NO_LEADER, vec![2]));
        // 1 returns: it is not in sync either. 2 returns: it leads again.
        register(&mut image, &broker(1, 11), false);
        assert_eq!(state(&image).leader, NO_LEADER);
        assert!(
            isr_update(&image, "t", 0, 2, 2, now.partition_epoch, &[2, 1]).is_none(),
            "no leader to ask"
        );
        register(&mut image, &broker(2, 12), false);
        check_leaders(&image);
        let now = state(&image);
        assert_eq!(
            (now.leader, now.leader_epoch, now.isr.clone()),
            (2, 3, vec![2])
        );
        // Followers that caught up join; a fenced broker may not.
        let fence = fencing(&image, 3, Uuid::from_u128(3));
        apply(&mut image, &fence);
        let epoch = state(&image).partition_epoch;
        assert!(isr_update(&image, "t", 0, 2, 3, epoch, &[2, 3]).is_none());
        let grow = isr_update(&image, "t", 0, 2, 3, epoch, &[2, 1]).unwrap();
        apply(&mut image, &[grow]);
        assert_eq!(state(&image).isr, vec![2, 1]);
    }

    #[test]
    fn a_replica_whose_storage_failed_leaves_the_isr_and_hands_its_leadership_over() {
        // t-0 led by 1, t-1 led by 2 (1 follows), t-2 led by 1, its only in-sync replica.
        let mut image =
            three_brokers_with_topic(3, 3, &[vec![1, 2, 3], vec![2, 1, 3], vec![1, 3, 2]]);
        let alone = isr_update(&image, "t", 2, 1, 0, 0, &[1]).unwrap();
        apply(&mut image, &[alone]);
        let state = |image: &MetadataImage, p: i32| image.partition("t", p).unwrap().clone();
        let all = [("t".to_string(), 0), ("t".to_string(), 1), ("t".into(), 2)];
        assert!(
            resignation(&image, 1, Uuid::from_u128(99), &all).is_empty(),
            "another incarnation"
        );
        let records = resignation(&image, 1, Uuid::from_u128(1), &all);
        assert_eq!(
            records.len(),
            2,
            "the partition 1 holds alone stays: {records:?}"
        );
        apply(&mut image, &records);
        check_leaders(&image);
        let led = state(&image, 0);
        assert_eq!((led.leader, led.leader_epoch, led.isr), (2, 1, vec![2, 3]));
        let followed = state(&image, 1);
        assert_eq!(
            (followed.leader, followed.leader_epoch, followed.isr),
            (2, 0, vec![2, 3])
        );
        assert_eq!(state(&image, 2).leader, 1);
        assert!(
            resignation(&image, 1, Uuid::from_u128(1), &all).is_empty(),
            "out of every ISR already"
        );
        // The last live in-sync replica keeps leading: 3 is fenced, 2's disk fails.
        let fence = fencing(&image, 3, Uuid::from_u128(3));
        apply(&mut image, &fence);
        assert!(resignation(&image, 2, Uuid::from_u128(2), &all[..1]).is_empty());
        assert_eq!(state(&image, 0).leader, 2);
    }

    #[test]
    fn a_reassignment_adds_then_removes_and_can_be_cancelled() {
        let mut image = replicated();
        register(&mut image, &broker(4, 4), false);
        let state = |image: &MetadataImage| image.partition("t", 0).unwrap().clone();
        // [1, 2, 3] → [4, 2, 3]: 4 is added (not in sync), 1 waits to be removed.
        let start = reassignment(&image, "t", 0, Some(&[4, 2, 3])).unwrap();
        apply(&mut image, &[start]);
        let now = state(&image);
        assert_eq!(
            (
                now.replicas.clone(),
                now.adding.clone(),
                now.removing.clone()
            ),
            (vec![4, 2, 3, 1], vec![4], vec![1])
        );
        assert_eq!((now.leader, now.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!(now.target(), vec![4, 2, 3]);
        // Cancelled: back to the replicas it started from (in the order the move listed
        // them: the target's first, then those that were to go).
        let cancel = reassignment(&image, "t", 0, None).unwrap();
        apply(&mut image, &[cancel]);
        let now = state(&image);
        assert_eq!(
            (now.replicas.clone(), now.reassigning()),
            (vec![2, 3, 1], false)
        );
        assert_eq!(now.leader, 1, "the leader stays");
        assert!(
            reassignment(&image, "t", 0, None).is_err(),
            "nothing to cancel"
        );
        assert!(reassignment(&image, "t", 0, Some(&[1, 1])).is_err());
        assert!(
            reassignment(&image, "t", 0, Some(&[7])).is_err(),
            "unknown broker"
        );
        // Again; once 4 is in sync the move completes: 1 leaves, and as it led, the first
        // in-sync target replica leads in a new epoch.
        let start = reassignment(&image, "t", 0, Some(&[4, 2, 3])).unwrap();
        apply(&mut image, &[start]);
        let now = state(&image);
        let grow = isr_update(
            &image,
            "t",
            0,
            1,
            now.leader_epoch,
            now.partition_epoch,
            &[1, 2, 3, 4],
        )
        .unwrap();
        apply(&mut image, &[grow]);
        let done = state(&image);
        assert_eq!(
            (done.replicas.clone(), done.isr.clone(), done.reassigning()),
            (vec![4, 2, 3], vec![2, 3, 4], false)
        );
        assert!(
            isr_update(
                &image,
                "t",
                0,
                1,
                now.leader_epoch,
                done.partition_epoch,
                &[1]
            )
            .is_none()
        );
        assert_eq!((done.leader, done.leader_epoch), (2, now.leader_epoch + 1));
        check_leaders(&image);
        // A move whose target is already in sync completes at once.
        let shrink = reassignment(&image, "t", 0, Some(&[2, 3])).unwrap();
        apply(&mut image, &[shrink]);
        assert_eq!(state(&image).replicas, vec![2, 3]);
        assert!(!state(&image).reassigning());
    }

    #[test]
    fn leadership_goes_back_to_the_preferred_replica_once_it_is_in_sync() {
        let mut image = replicated();
        let fence = fencing(&image, 1, Uuid::from_u128(1));
        apply(&mut image, &fence);
        assert_eq!(image.partition("t", 0).unwrap().leader, 2);
        let wanted = [("t".to_string(), 0), ("t".to_string(), 9)];
        let (records, left) = preferred_elections(&image, Some(&wanted));
        assert!(records.is_empty());
        assert_eq!(
            left,
            vec![
                (("t".to_string(), 0), NoElection::PreferredNotAvailable),
                (("t".to_string(), 9), NoElection::Unknown)
            ]
        );
        // 1 returns and catches up: it is preferred again.
        register(&mut image, &broker(1, 11), false);
        let state = image.partition("t", 0).unwrap().clone();
        let grow = isr_update(
            &image,
            "t",
            0,
            2,
            state.leader_epoch,
            state.partition_epoch,
            &[2, 3, 1],
        );
        apply(&mut image, &[grow.unwrap()]);
        let (records, left) = preferred_elections(&image, None);
        assert!(left.is_empty());
        apply(&mut image, &records);
        let now = image.partition("t", 0).unwrap();
        assert_eq!((now.leader, now.leader_epoch), (1, state.leader_epoch + 1));
        check_leaders(&image);
        let (records, left) = preferred_elections(&image, None);
        assert!(records.is_empty());
        assert_eq!(left, vec![(("t".to_string(), 0), NoElection::NotNeeded)]);
    }

    #[test]
    fn partitions_spread_go_offline_with_their_broker_and_come_back_with_it() {
        let mut image = three_brokers_with_topic(6, 1, &[]);
        check_leaders(&image);
        let led_by = |image: &MetadataImage, id: i32| {
            image
                .topic("t")
                .unwrap()
                .states
                .iter()
                .filter(|s| s.leader == id)
                .count()
        };
        assert_eq!(
            (led_by(&image, 1), led_by(&image, 2), led_by(&image, 3)),
            (2, 2, 2)
        );

        // Broker 2 is fenced: its partitions have no other replica, so no leader.
        let fence = fencing(&image, 2, Uuid::from_u128(2));
        apply(&mut image, &fence);
        check_leaders(&image);
        assert_eq!(led_by(&image, NO_LEADER), 2);
        assert!(image.brokers[&2].fenced);
        // A second fencing of the same incarnation is nothing; of another, nothing either.
        assert!(fencing(&image, 2, Uuid::from_u128(2)).is_empty());
        assert!(fencing(&image, 1, Uuid::from_u128(77)).is_empty());
        // New partitions avoid the fenced broker.
        let more = place_partitions(&image, "t", 6, 10, 1, &[]).unwrap();
        assert!(
            more.iter().all(
                |r| matches!(r, MetadataRecord::PartitionChange { leader, .. } if *leader != 2)
            )
        );

        // Broker 2 returns (a new incarnation): it leads its partitions again, each in a
        // newer epoch than before it was fenced.
        let epochs_before: Vec<i32> = image
            .topic("t")
            .unwrap()
            .states
            .iter()
            .map(|s| s.leader_epoch)
            .collect();
        register(&mut image, &broker(2, 20), false);
        check_leaders(&image);
        assert_eq!(led_by(&image, 2), 2);
        let states = &image.topic("t").unwrap().states;
        for (state, before) in states.iter().zip(&epochs_before) {
            if state.leader == 2 {
                assert_eq!(state.leader_epoch, before + 1);
            }
        }
        // Registering the same live incarnation again changes nothing.
        assert!(registration(&image, &broker(2, 20), false).is_empty());
    }

    #[test]
    fn a_broker_restarted_before_it_was_fenced_never_continues_its_last_leader_epochs() {
        // Two partitions on 1, 2, 3, led by 1 (incarnation 1); partition 1's ISR shrank to 1.
        let mut image = three_brokers_with_topic(2, 3, &[vec![1, 2, 3], vec![1, 2, 3]]);
        let shrink = isr_update(&image, "t", 1, 1, 0, 0, &[1]).unwrap();
        apply(&mut image, &[shrink]);
        let before: Vec<PartitionState> = image.topic("t").unwrap().states.clone();
        assert!(before.iter().all(|s| s.leader == 1), "{before:?}");

        // Killed and back before anyone noticed: incarnation 11 registers while 1 is live.
        register(&mut image, &broker(1, 11), false);
        check_leaders(&image);
        assert_eq!(
            image.live_broker(1).map(|b| b.incarnation),
            Some(Uuid::from_u128(11))
        );
        let after = &image.topic("t").unwrap().states;
        // Partition 0: an in-sync replica that stayed up leads, in the next epoch; the new
        // incarnation rejoins the ISR once it has caught up.
        assert_ne!(after[0].leader, 1);
        assert_eq!(after[0].leader_epoch, before[0].leader_epoch + 1);
        assert_eq!(after[0].isr, vec![2, 3]);
        // Partition 1: no other replica in sync; the new incarnation leads it, in a newer
        // epoch (left without a leader by the fencing, then led again: two epochs on).
        assert_eq!(after[1].leader, 1);
        assert_eq!(after[1].leader_epoch, before[1].leader_epoch + 2);
        assert_eq!(after[1].isr, vec![1]);

        // The same incarnation registering again changes nothing.
        assert!(registration(&image, &broker(1, 11), false).is_empty());
    }

    #[test]
    fn manual_assignments_are_checked_against_the_live_brokers() {
        let mut image = MetadataImage::default();
        register(&mut image, &broker(1, 1), false);
        let bad = |assignments: &[Vec<i32>], replication| {
            place_partitions(
                &image,
                "t",
                0,
                assignments.len() as i32,
                replication,
                assignments,
            )
            .unwrap_err()
            .code
        };
        assert_eq!(bad(&[vec![2]], 1), ResponseError::InvalidReplicaAssignment);
        assert_eq!(
            bad(&[vec![1, 1]], 2),
            ResponseError::InvalidReplicaAssignment
        );
        assert_eq!(
            bad(&[vec![1], vec![]], 1),
            ResponseError::InvalidReplicaAssignment
        );
        assert!(place_partitions(&image, "t", 0, 1, 1, &[vec![1]]).is_ok());
        assert_eq!(
            place_partitions(&image, "t", 0, 1, 2, &[])
                .unwrap_err()
                .code,
            ResponseError::InvalidReplicationFactor
        );
    }

    #[test]
    fn a_single_node_claims_partitions_placed_nowhere() {
        let mut image = MetadataImage::default();
        // A topic from before placements existed.
        apply(
            &mut image,
            &[MetadataRecord::CreateTopic {
                name: "old".into(),
                id: Uuid::from_u128(3),
                partitions: 2,
                configs: BTreeMap::new(),
            }],
        );
        register(&mut image, &broker(5, 1), true);
        check_leaders(&image);
        let states = &image.topic("old").unwrap().states;
        assert!(
            states
                .iter()
                .all(|s| s.leader == 5 && s.replicas == [5] && s.leader_epoch == 0)
        );
    }
}
