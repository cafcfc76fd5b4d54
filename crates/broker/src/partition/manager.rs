//! The partitions this broker holds (it is one of their replicas), and the log manager behind
//! them. Opens the logs the metadata places here at startup, then keeps the set and each
//! partition's leadership in step with the metadata image as changes are published
//! ([`PartitionManager::reconcile_topic`], [`PartitionManager::remove_topic`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sluice_log::{
    BlockingSection, CleaningReport, FlushStatsSnapshot, LogError, LogManager, ManagerConfig,
    TopicPartition,
};

use kafka_protocol::ResponseError;

use super::{Origin, Partition, partition_metadata};
use crate::config::BrokerConfig;
use crate::errors::ApiError;
use crate::internal_topics;
use crate::metadata::{MetadataImage, TopicImage};
use crate::metrics::BrokerMetrics;
use crate::topic_config;

/// A topic's partitions by index: `None` where this node holds no replica.
type HeldPartitions = Vec<Option<Arc<Partition>>>;

#[derive(Debug)]
pub struct PartitionManager {
    config: BrokerConfig,
    logs: LogManager,
    /// By topic, then by partition index (`None`: a partition this node holds no replica
    /// of): a lookup hashes the topic name once and allocates nothing (Fetch looks up every
    /// partition of every request).
    partitions: RwLock<HashMap<Arc<str>, HeldPartitions>>,
    metrics: Arc<BrokerMetrics>,
    /// This node's id: the partitions whose replicas name it are opened here.
    node_id: i32,
}

impl PartitionManager {
    /// Opens (recovering) every log of the data directory and holds the partitions `image`
    /// places on this node. The directory of a partition the image does not name is set aside
    /// (`<topic>-<partition>.<id>-stray`), never deleted: a damaged or missing metadata log
    /// must not cost the data.
    pub fn open(
        config: &BrokerConfig,
        mut manager_config: ManagerConfig,
        image: &Arc<MetadataImage>,
        metrics: Arc<BrokerMetrics>,
    ) -> Result<Self, LogError> {
        let for_topics = image.clone();
        let broker_config = config.clone();
        manager_config.topic_config =
            Some(Arc::new(move |topic: &str| match for_topics.topic(topic) {
                Some(t) => topic_config::log_config(&broker_config, &t.configs),
                None => broker_config.log_defaults.clone(),
            }));
        manager_config.blocking = Arc::new(OffWorker);
        let logs = LogManager::open_with_clock(manager_config, config.clock.clone())?;
        let manager = PartitionManager {
            config: config.clone(),
            logs,
            partitions: RwLock::new(HashMap::new()),
            metrics,
            node_id: config.node_id,
        };
        for tp in manager.logs.partitions() {
            let known = image
                .partition(&tp.topic, tp.partition)
                .is_some_and(|state| state.replicas.contains(&config.node_id));
            if !known && let Some(aside) = manager.logs.set_aside(&tp)? {
                tracing::warn!(
                    partition = %tp,
                    kept_as = %aside.display(),
                    "partition directory the metadata does not name: set aside, not deleted \
                     (inspect it, then remove it with `sluice stray-dirs --remove`)"
                );
            }
        }
        for topic in image.topics.values() {
            manager.reconcile_topic(topic)?;
        }
        Ok(manager)
    }

    /// The partition, if this broker holds a replica of it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(partition).ok()?;
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)?
            .get(index)?
            .clone()
    }

    /// The partition, if this broker leads it (serves its clients).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.get(topic, partition).filter(|p| p.is_leader())
    }

    /// Every partition held, in topic-partition order.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        let mut all: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.tp.cmp(&b.tp));
        all
    }

    pub fn len(&self) -> usize {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|held| held.iter().flatten().count())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the partitions of `topic` in step with its image: opens (creating if needed)
    /// every partition placed on this node and not held yet, applies the topic's
    /// configuration to all, and each partition's leadership.
    pub fn reconcile_topic(&self, topic: &TopicImage) -> Result<(), LogError> {
        let config = topic_config::log_config(&self.config, &topic.configs);
        let internal = internal_topics::is_internal(&topic.name);
        let min_insync = topic_config::min_insync_replicas(&self.config, &topic.configs);
        let now_ms = self.config.clock.now_ms();
        let mut opened = Vec::new();
        let mut unassigned = Vec::new();
        for (index, state) in (0..topic.partitions).zip(&topic.states) {
            if !state.replicas.contains(&self.node_id) {
                // Reassigned away (or never here): a replica held is dropped below.
                if state.partition_epoch >= 0 {
                    unassigned.push(index);
                }
                continue;
            }
            match self.get(&topic.name, index) {
                Some(partition) => {
                    partition.log().set_config(config.clone())?;
                    partition.apply_state(state, min_insync, now_ms);
                }
                None => {
                    let tp = TopicPartition::new(topic.name.clone(), index);
                    let mut log = self.logs.create(&tp, config.clone())?;
                    match partition_metadata::read(log.dir()) {
                        Some(id) if id != topic.id => {
                            // The directory of an earlier topic of the same name (deleted,
                            // then recreated): kept aside, never served as this one.
                            drop(log);
                            if let Some(aside) = self.logs.set_aside(&tp)? {
                                tracing::warn!(
                                    partition = %tp,
                                    kept_as = %aside.display(),
                                    old_topic_id = %partition_metadata::encode_id(id),
                                    "partition directory of an earlier topic of this name: set aside"
                                );
                            }
                            log = self.logs.create(&tp, config.clone())?;
                            partition_metadata::write(log.dir(), topic.id)?;
                        }
                        Some(_) => {}
                        None => partition_metadata::write(log.dir(), topic.id)?,
                    }
                    log.set_config(config.clone())?;
                    let counters = self.metrics.topic(&topic.name);
                    let partition =
                        Partition::new(tp, topic.id, internal, log, counters, self.node_id);
                    partition.apply_state(state, min_insync, now_ms);
                    opened.push(Arc::new(partition));
                }
            }
        }
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        let held = partitions
            .entry(Arc::from(topic.name.as_str()))
            .or_default();
        let count = usize::try_from(topic.partitions).expect("a partition count is positive");
        if held.len() < count {
            held.resize(count, None);
        }
        for partition in opened {
            let slot = &mut held[partition.tp.partition as usize];
            assert!(slot.is_none(), "a partition is opened once");
            *slot = Some(partition);
        }
        let dropped: Vec<Arc<Partition>> = unassigned
            .into_iter()
            .filter_map(|index| held.get_mut(usize::try_from(index).ok()?)?.take())
            .collect();
        drop(partitions);
        for partition in dropped {
            // Its data lives on the target replicas now; the leader no longer counts it.
            tracing::info!(partition = %partition.tp, "replica reassigned away: removing it");
            if let Err(err) = self.logs.delete(&partition.tp) {
                tracing::warn!(partition = %partition.tp, error = %err, "log removal failed; it is retried at startup");
            }
        }
        Ok(())
    }

    /// The topics this broker holds partitions of.
    pub fn topics(&self) -> Vec<String> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|t| t.to_string())
            .collect()
    }

    /// Stops serving every partition of a deleted topic and removes its logs (in the
    /// background; a removal that fails is retried at the next start).
    pub fn remove_topic(&self, topic: &str) {
        let removed: HeldPartitions = self
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic)
            .unwrap_or_default();
        for partition in removed.into_iter().flatten() {
            if let Err(err) = self.logs.delete(&partition.tp) {
                tracing::warn!(partition = %partition.tp, error = %err, "log removal failed; it is retried at startup");
            }
        }
        self.metrics.forget_topic(topic);
    }

    /// Kafka's DeleteRecords: moves the partition's log start offset to `offset` (at most the
    /// high watermark) and makes the new start durable (checkpoint) before returning. A
    /// client may not truncate an internal topic (committed offsets would be lost).
    /// Blocking: file deletions and fsyncs.
    pub fn delete_records(
        &self,
        partition: &Partition,
        offset: i64,
        origin: Origin,
    ) -> Result<i64, ApiError> {
        if origin == Origin::Client && partition.internal {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!(
                    "cannot delete records of internal topic {}",
                    partition.tp.topic
                ),
            ));
        }
        self.logs
            .delete_records(&partition.tp, offset)
            .map_err(|e| ApiError::from(&e))
    }

    /// Partition directories set aside at startup, still on disk.
    pub fn stray_dirs(&self) -> Vec<std::path::PathBuf> {
        self.logs.stray_dirs()
    }

    pub fn flush_stats(&self) -> FlushStatsSnapshot {
        self.logs.flush_stats()
    }

    pub fn cleaner_reports(&self) -> Vec<CleaningReport> {
        self.logs.cleaner_reports()
    }

    /// Clean shutdown of every log (synced, indexes and checkpoints written, marker left).
    pub fn shutdown(&self) -> Result<(), LogError> {
        self.logs.shutdown()
    }
}

/// The logs' blocking section on this broker: segment rolls and segment opens run from
/// Produce, Fetch and the coordinators on tokio's worker threads; `block_in_place` hands the
/// worker's other tasks to another thread while the filesystem work blocks this one. On a
/// current-thread runtime (tests), or off the runtime (the log's own threads, blocking-pool
/// threads), the work runs inline.
#[derive(Debug)]
struct OffWorker;

impl BlockingSection for OffWorker {
    fn run(&self, work: &mut dyn FnMut()) {
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(work);
        } else {
            work();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(section: &dyn BlockingSection) -> bool {
        let mut ran = false;
        section.run(&mut || ran = true);
        ran
    }

    #[test]
    fn off_worker_runs_the_work_wherever_it_is_called() {
        assert!(ran(&OffWorker), "off any runtime");
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(
            current.block_on(async { ran(&OffWorker) }),
            "current-thread runtime"
        );
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        assert!(
            multi.block_on(async { tokio::spawn(async { ran(&OffWorker) }).await.unwrap() }),
            "on a worker"
        );
        assert!(
            multi.block_on(async {
                tokio::task::spawn_blocking(|| ran(&OffWorker))
                    .await
                    .unwrap()
            }),
            "on a blocking-pool thread"
        );
        assert!(multi.block_on(async { ran(&OffWorker) }), "in block_on");
    }
}
