//! The metadata image: the state every record applied so far describes. Applying checks
//! that a record fits the image (no topic created twice, partitions never shrink, producer
//! id blocks only advance, leader epochs only advance, a broker incarnation registered and
//! fenced once, the cluster id set once): a change computed from a stale image (proposed by
//! a node that had not seen the latest changes) does not apply, on every node alike.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::record::MetadataRecord;

/// "No leader": the partition is offline, or not assigned yet.
pub const NO_LEADER: i32 = -1;

/// A partition's placement as the controller decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The brokers holding a replica; empty until the partition is assigned.
    pub replicas: Vec<i32>,
    /// The replicas known to hold every record below the high watermark: the leader and
    /// the followers that keep up with it. A leader is only ever chosen from these.
    pub isr: Vec<i32>,
    /// The broker serving it, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped by every leader decision; -1 before the first.
    pub leader_epoch: i32,
    /// Bumped by every change (leader or ISR); -1 before the first.
    pub partition_epoch: i32,
    /// A reassignment in progress: replicas being added and replicas to be removed (both
    /// empty when none is).
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl PartitionState {
    pub const UNASSIGNED: PartitionState = PartitionState {
        replicas: Vec::new(),
        isr: Vec::new(),
        leader: NO_LEADER,
        leader_epoch: -1,
        partition_epoch: -1,
        adding: Vec::new(),
        removing: Vec::new(),
    };

    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas the partition ends up with: `replicas` without those being removed.
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }
}

/// A topic as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level overrides only; defaults come from the broker configuration.
    pub configs: BTreeMap<String, String>,
    /// One per partition, by index (always `partitions` of them).
    pub states: Vec<PartitionState>,
}

impl TopicImage {
    pub fn state(&self, partition: i32) -> Option<&PartitionState> {
        self.states.get(usize::try_from(partition).ok()?)
    }
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub id: i32,
    /// New at every start of the broker process.
    pub incarnation: Uuid,
    /// Where clients reach it.
    pub host: String,
    pub port: u16,
    /// Missed its heartbeats or shut down: leads nothing, listed to no client.
    pub fenced: bool,
}

/// The state all records applied so far describe.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// The end of the last block of producer ids handed out.
    pub producer_ids_end: i64,
    /// Every broker that ever registered, by node id.
    pub brokers: BTreeMap<i32, BrokerImage>,
    /// Decided once, by the first active controller.
    pub cluster_id: Option<String>,
}

/// A record that does not apply to the current image (a bug, or a corrupt log).
#[derive(Debug, thiserror::Error)]
#[error("metadata record does not apply: {0}")]
pub struct ApplyError(String);

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// The partition's placement, if the partition exists.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic)?.state(partition)
    }

    /// The brokers clients may use (registered and not fenced).
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The live broker `id`, if it is one.
    pub fn live_broker(&self, id: i32) -> Option<&BrokerImage> {
        self.brokers.get(&id).filter(|b| !b.fenced)
    }

    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::CreateTopic {
                name,
                id,
                partitions,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return Err(ApplyError(format!("topic {name} exists")));
                }
                let count = usize::try_from(*partitions)
                    .map_err(|_| ApplyError(format!("{name}: {partitions} partitions")))?;
                self.topic_names_by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                        states: vec![PartitionState::UNASSIGNED; count],
                    },
                );
            }
            MetadataRecord::SetPartitionCount { name, partitions } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| ApplyError(format!("no topic {name}")))?;
                if *partitions < topic.partitions {
                    return Err(ApplyError(format!("{name}: partitions cannot decrease")));
                }
                topic.partitions = *partitions;
                topic
                    .states
                    .resize(*partitions as usize, PartitionState::UNASSIGNED);
            }
            MetadataRecord::SetTopicConfig { name, key, value } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| ApplyError(format!("no topic {name}")))?;
                match value {
                    Some(value) => topic.configs.insert(key.clone(), value.clone()),
                    None => topic.configs.remove(key),
                };
            }
            MetadataRecord::DeleteTopic { name } => {
                let topic = self
                    .topics
                    .remove(name)
                    .ok_or_else(|| ApplyError(format!("no topic {name}")))?;
                self.topic_names_by_id.remove(&topic.id);
            }
            MetadataRecord::ProducerIdBlock { end } => {
                if *end <= self.producer_ids_end {
                    return Err(ApplyError(format!(
                        "producer id block end {end} does not advance"
                    )));
                }
                self.producer_ids_end = *end;
            }
            MetadataRecord::PartitionChange {
                topic,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding,
                removing,
            } => {
                let state = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.states.get_mut(usize::try_from(*partition).ok()?))
                    .ok_or_else(|| ApplyError(format!("no partition {topic}-{partition}")))?;
                let refuse = |why: String| Err(ApplyError(format!("{topic}-{partition}: {why}")));
                if *partition_epoch <= state.partition_epoch {
                    return refuse(format!(
                        "partition epoch {partition_epoch} is not after {}",
                        state.partition_epoch
                    ));
                }
                if *leader_epoch < state.leader_epoch
                    || (*leader_epoch == state.leader_epoch && *leader != state.leader)
                {
                    return refuse(format!(
                        "leader {leader} in epoch {leader_epoch} after leader {} in epoch {}",
                        state.leader, state.leader_epoch
                    ));
                }
                let distinct = |ids: &[i32]| {
                    let mut sorted = ids.to_vec();
                    sorted.sort_unstable();
                    sorted.dedup();
                    sorted.len() == ids.len()
                };
                if replicas.is_empty() || !distinct(replicas) {
                    return refuse(format!("replicas {replicas:?}"));
                }
                if isr.is_empty() || !distinct(isr) || isr.iter().any(|r| !replicas.contains(r)) {
                    return refuse(format!("in-sync replicas {isr:?} of {replicas:?}"));
                }
                if *leader != NO_LEADER && !isr.contains(leader) {
                    return refuse(format!("leader {leader} is not in sync ({isr:?})"));
                }
                let moving = adding.iter().chain(removing);
                if !distinct(adding)
                    || !distinct(removing)
                    || moving.clone().any(|r| !replicas.contains(r))
                    || adding.iter().any(|r| removing.contains(r))
                    || replicas.iter().all(|r| removing.contains(r))
                {
                    return refuse(format!(
                        "reassignment adding {adding:?}, removing {removing:?} of {replicas:?}"
                    ));
                }
                *state = PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    adding: adding.clone(),
                    removing: removing.clone(),
                };
                let topic = &self.topics[topic];
                assert_eq!(
                    topic.states.len(),
                    usize::try_from(topic.partitions).unwrap_or(0),
                    "one placement per partition"
                );
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                host,
                port,
            } => {
                if let Some(current) = self.brokers.get(id)
                    && current.incarnation == *incarnation
                    && !current.fenced
                {
                    return Err(ApplyError(format!(
                        "broker {id} incarnation {incarnation} registered twice"
                    )));
                }
                self.brokers.insert(
                    *id,
                    BrokerImage {
                        id: *id,
                        incarnation: *incarnation,
                        host: host.clone(),
                        port: *port,
                        fenced: false,
                    },
                );
            }
            MetadataRecord::FenceBroker { id, incarnation } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .filter(|b| b.incarnation == *incarnation && !b.fenced)
                    .ok_or_else(|| {
                        ApplyError(format!("broker {id} incarnation {incarnation} is not live"))
                    })?;
                broker.fenced = true;
            }
            MetadataRecord::ClusterId { id } => {
                if let Some(current) = &self.cluster_id {
                    return Err(ApplyError(format!("the cluster id is {current} already")));
                }
                self.cluster_id = Some(id.clone());
            }
        }
        Ok(())
    }
}
