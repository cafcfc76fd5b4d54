//! The partitions this broker serves, and the log manager behind them. Opens the logs the
//! metadata names at startup, then keeps the set in step with the metadata image as changes
//! are published ([`PartitionManager::reconcile_topic`], [`PartitionManager::remove_topic`]).

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

#[derive(Debug)]
pub struct PartitionManager {
    config: BrokerConfig,
    logs: LogManager,
    /// By topic, then by partition index (a topic's partitions are always `0..n`): a lookup
    /// hashes the topic name once and allocates nothing (Fetch looks up every partition of
    /// every request).
    partitions: RwLock<HashMap<Arc<str>, Vec<Arc<Partition>>>>,
    metrics: Arc<BrokerMetrics>,
}

impl PartitionManager {
    /// Opens (recovering) every log of the data directory and serves the partitions `image`
    /// names. The directory of a partition the image does not name is set aside
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
        };
        for tp in manager.logs.partitions() {
            let known = image
                .topic(&tp.topic)
                .is_some_and(|t| tp.partition < t.partitions);
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

    /// The partition, if this broker serves it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(partition).ok()?;
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)?
            .get(index)
            .cloned()
    }

    /// Every partition served, in topic-partition order.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        let mut all: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
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
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the partitions of `topic` in step with its image: opens (creating if needed)
    /// every partition not served yet and applies the topic's configuration to all.
    pub fn reconcile_topic(&self, topic: &TopicImage) -> Result<(), LogError> {
        let config = topic_config::log_config(&self.config, &topic.configs);
        let internal = internal_topics::is_internal(&topic.name);
        let mut opened = Vec::new();
        for index in 0..topic.partitions {
            match self.get(&topic.name, index) {
                Some(partition) => partition.log().set_config(config.clone())?,
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
                    opened.push(Arc::new(Partition::new(
                        tp, topic.id, internal, log, counters,
                    )));
                }
            }
        }
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        let served = partitions
            .entry(Arc::from(topic.name.as_str()))
            .or_default();
        for partition in opened {
            // Partitions are opened in index order, after those already served.
            assert_eq!(
                partition.tp.partition as usize,
                served.len(),
                "a topic's partitions are 0..n"
            );
            served.push(partition);
        }
        Ok(())
    }

    /// Stops serving every partition of a deleted topic and removes its logs (in the
    /// background; a removal that fails is retried at the next start).
    pub fn remove_topic(&self, topic: &str) {
        let removed: Vec<Arc<Partition>> = self
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(topic)
            .unwrap_or_default();
        for partition in removed {
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
