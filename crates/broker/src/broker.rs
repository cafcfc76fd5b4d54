//! The broker's state: configuration, the log manager, the metadata store, and the
//! partitions it serves, plus the topic operations the admin APIs share.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kafka_protocol::ResponseError;
use sluice_log::{Log, LogManager, TopicPartition};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::errors::ApiError;
use crate::groups::{GroupCoordinator, OFFSETS_TOPIC};
use crate::metadata::{MetadataError, MetadataImage, MetadataRecord, MetadataStore, TopicImage};
use crate::topic_config::{self, validate_topic_name};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Log(#[from] sluice_log::LogError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

/// One partition served by this broker.
#[derive(Debug)]
pub struct Partition {
    pub tp: TopicPartition,
    pub log: Arc<Log>,
    /// Woken after every append, for fetches waiting for data.
    pub appended: Notify,
    /// The topic's traffic counters, resolved once so that Produce and Fetch do not look
    /// them up per request.
    pub counters: Arc<crate::metrics::TopicCounters>,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default.
    pub partitions: i32,
    /// -1 for the broker default.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// The leader epoch this single node stamps on batches and reports in metadata.
pub const LEADER_EPOCH: i32 = 0;

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub logs: LogManager,
    pub metadata: MetadataStore,
    pub groups: GroupCoordinator,
    /// The broker's own counters (requests, per-topic traffic, connections).
    pub metrics: crate::metrics::BrokerMetrics,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Producer ids handed out next: (next, end of the reserved block).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

/// Producer ids reserved per metadata record.
const PRODUCER_ID_BLOCK: i64 = 1000;

const META_PROPERTIES: &str = "meta.properties";

/// Reads or creates `meta.properties` (Kafka's file naming the cluster and node a data
/// directory belongs to). A directory of another node is refused.
fn cluster_id(dir: &Path, node_id: i32) -> Result<String, StartError> {
    let path = dir.join(META_PROPERTIES);
    let fail = |reason: String| StartError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let get = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                    .map(str::trim)
            };
            let cluster = get("cluster.id")
                .ok_or_else(|| fail("meta.properties has no cluster.id".into()))?;
            let node: i32 = get("node.id")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| fail("meta.properties has no node.id".into()))?;
            if node != node_id {
                return Err(fail(format!(
                    "it belongs to node.id {node}, this broker is node.id {node_id}"
                )));
            }
            Ok(cluster.to_string())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let cluster = Uuid::new_v4().simple().to_string();
            let text = format!("version=1\ncluster.id={cluster}\nnode.id={node_id}\n");
            let tmp = dir.join("meta.properties.tmp");
            std::fs::write(&tmp, text).map_err(|e| fail(e.to_string()))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail(e.to_string()))?;
            std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
            Ok(cluster)
        }
        Err(err) => Err(fail(err.to_string())),
    }
}

impl Broker {
    /// Opens the data directory: metadata first, then every partition it names. Partition
    /// directories of topics the metadata no longer has are deleted.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let cluster_id = cluster_id(&dir, config.node_id)?;
        let metadata = MetadataStore::open(&dir.join("metadata"), config.sync_threads)?;
        let image = metadata.image();
        let mut manager_config = config.manager_config();
        let for_topics = image.clone();
        let broker_config = config.clone();
        manager_config.topic_config =
            Some(Arc::new(move |topic: &str| match for_topics.topic(topic) {
                Some(t) => topic_config::log_config(&broker_config, &t.configs),
                None => broker_config.log_defaults.clone(),
            }));
        let logs = LogManager::open(manager_config)?;
        let groups = GroupCoordinator::new(config.coordinator.clone());
        let broker = Broker {
            config,
            cluster_id,
            logs,
            metadata,
            groups,
            metrics: crate::metrics::BrokerMetrics::default(),
            partitions: RwLock::new(HashMap::new()),
            producer_ids: tokio::sync::Mutex::new((image.producer_ids_end, image.producer_ids_end)),
        };
        for tp in broker.logs.partitions() {
            let known = image
                .topic(&tp.topic)
                .is_some_and(|t| tp.partition < t.partitions);
            if !known {
                tracing::info!(partition = %tp, "deleting log of a topic the metadata does not have");
                broker.logs.delete(&tp)?;
            }
        }
        for topic in image.topics.values() {
            broker.open_partitions(topic, 0)?;
        }
        broker.groups.load(&broker)?;
        Ok(Arc::new(broker))
    }

    /// Creates (or opens) the logs of `topic`'s partitions from `first` on.
    fn open_partitions(&self, topic: &TopicImage, first: i32) -> Result<(), sluice_log::LogError> {
        let config = topic_config::log_config(&self.config, &topic.configs);
        let mut opened = Vec::new();
        for partition in first..topic.partitions {
            let tp = TopicPartition::new(topic.name.clone(), partition);
            let log = self.logs.create(&tp, config.clone())?;
            log.set_config(config.clone())?;
            opened.push(Arc::new(Partition {
                tp,
                log,
                appended: Notify::new(),
                counters: self.metrics.topic(&topic.name),
            }));
        }
        let mut partitions = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        for partition in opened {
            partitions.insert(partition.tp.clone(), partition);
        }
        Ok(())
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let tp = TopicPartition::new(topic, partition);
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tp)
            .cloned()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    fn metadata_failure(err: &MetadataError) -> ApiError {
        tracing::error!(error = %err, "metadata update failed");
        ApiError::new(
            ResponseError::KafkaStorageError,
            format!("metadata log: {err}"),
        )
    }

    /// Validates a topic creation without making it.
    pub fn check_new_topic(&self, spec: &NewTopic) -> Result<(i32, i16), ApiError> {
        validate_topic_name(&spec.name)
            .map_err(|m| ApiError::new(ResponseError::InvalidTopicException, m))?;
        let partitions = if spec.partitions == -1 {
            self.config.num_partitions
        } else {
            spec.partitions
        };
        if partitions < 1 {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("{partitions} partitions: must be at least 1"),
            ));
        }
        let replication = if spec.replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            spec.replication_factor
        };
        if replication != 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {replication}: this cluster has 1 broker"),
            ));
        }
        for (key, value) in &spec.configs {
            topic_config::validate(key, value)
                .map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))?;
        }
        Ok((partitions, replication))
    }

    /// Creates a topic (or only validates it). Returns the created topic.
    pub async fn create_topic(
        &self,
        spec: NewTopic,
        validate_only: bool,
    ) -> Result<TopicImage, ApiError> {
        let (partitions, _) = self.check_new_topic(&spec)?;
        let candidate = TopicImage {
            name: spec.name.clone(),
            id: Uuid::new_v4(),
            partitions,
            configs: spec.configs,
        };
        let outcome = self
            .metadata
            .update(|image| {
                if image.topic(&candidate.name).is_some() {
                    return Err(ApiError::new(
                        ResponseError::TopicAlreadyExists,
                        format!("topic {} already exists", candidate.name),
                    ));
                }
                if validate_only {
                    return Ok((Vec::new(), ()));
                }
                let record = MetadataRecord::CreateTopic {
                    name: candidate.name.clone(),
                    id: candidate.id,
                    partitions: candidate.partitions,
                    configs: candidate.configs.clone(),
                };
                Ok((vec![record], ()))
            })
            .await
            .map_err(|e| Self::metadata_failure(&e))?;
        outcome?;
        if !validate_only {
            self.open_partitions(&candidate, 0)
                .map_err(|e| ApiError::from(&e))?;
            tracing::info!(topic = %candidate.name, partitions, "created topic");
        }
        Ok(candidate)
    }

    /// Whether a topic belongs to the broker itself (clients may not write or delete it).
    pub fn is_internal(topic: &str) -> bool {
        topic == OFFSETS_TOPIC
    }

    /// Deletes a topic and its logs, and groups' offsets of it. Returns its id.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, ApiError> {
        if Self::is_internal(name) {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!("{name} is an internal topic"),
            ));
        }
        let outcome = self
            .metadata
            .update(|image| match image.topic(name) {
                None => Err(ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name}"),
                )),
                Some(topic) => Ok((
                    vec![MetadataRecord::DeleteTopic {
                        name: name.to_string(),
                    }],
                    topic.clone(),
                )),
            })
            .await
            .map_err(|e| Self::metadata_failure(&e))?;
        let (_, topic) = outcome?;
        for partition in 0..topic.partitions {
            let tp = TopicPartition::new(name, partition);
            self.partitions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tp);
            if let Err(err) = self.logs.delete(&tp) {
                tracing::warn!(partition = %tp, error = %err, "log removal failed; it is retried at startup");
            }
        }
        self.groups.forget_topic(self, name);
        self.metrics.forget_topic(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let outcome = self
            .metadata
            .update(|image| {
                let topic = image.topic(name).ok_or_else(|| {
                    ApiError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {name}"),
                    )
                })?;
                if count <= topic.partitions {
                    return Err(ApiError::new(
                        ResponseError::InvalidPartitions,
                        format!(
                            "topic {name} has {} partitions; the new count {count} must be larger",
                            topic.partitions
                        ),
                    ));
                }
                let records = if validate_only {
                    Vec::new()
                } else {
                    vec![MetadataRecord::SetPartitionCount {
                        name: name.to_string(),
                        partitions: count,
                    }]
                };
                Ok((records, topic.partitions))
            })
            .await
            .map_err(|e| Self::metadata_failure(&e))?;
        let (image, previous) = outcome?;
        if !validate_only {
            let topic = image.topic(name).expect("just updated").clone();
            self.open_partitions(&topic, previous)
                .map_err(|e| ApiError::from(&e))?;
            tracing::info!(
                topic = name,
                from = previous,
                to = count,
                "added partitions"
            );
        }
        Ok(())
    }

    /// Replaces (`replace_all`) or edits a topic's configuration overrides. `changes` maps a
    /// key to its new value, or to `None` to remove the override.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        for (key, value) in &changes {
            let checked = match value {
                Some(value) => topic_config::validate(key, value),
                None if topic_config::TOPIC_PROPERTIES.iter().any(|(k, _)| k == key) => Ok(()),
                None => Err(format!("unknown topic configuration {key:?}")),
            };
            checked.map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))?;
        }
        let outcome = self
            .metadata
            .update(|image| {
                let topic = image.topic(name).ok_or_else(|| {
                    ApiError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {name}"),
                    )
                })?;
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
                    return Ok::<_, ApiError>((Vec::new(), ()));
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
            .map_err(|e| Self::metadata_failure(&e))?;
        let (image, ()) = outcome?;
        if let Some(topic) = image.topic(name) {
            let config = topic_config::log_config(&self.config, &topic.configs);
            for partition in 0..topic.partitions {
                if let Some(p) = self.partition(name, partition)
                    && let Err(err) = p.log.set_config(config.clone())
                {
                    tracing::warn!(partition = %p.tp, error = %err, "could not apply configuration");
                }
            }
        }
        Ok(())
    }

    /// A producer id never handed out before, not even by an earlier run of this broker: ids
    /// are reserved in blocks recorded durably in the metadata log.
    pub async fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 == ids.1 {
            let outcome = self
                .metadata
                .update(|image| {
                    let end = image.producer_ids_end + PRODUCER_ID_BLOCK;
                    Ok::<_, ApiError>((
                        vec![MetadataRecord::ProducerIdBlock { end }],
                        (image.producer_ids_end, end),
                    ))
                })
                .await
                .map_err(|e| Self::metadata_failure(&e))?;
            let (_, block) = outcome?;
            *ids = block;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Clean shutdown of storage: logs, then metadata.
    pub fn shutdown(&self) -> Result<(), sluice_log::LogError> {
        let logs = self.logs.shutdown();
        let metadata = self.metadata.shutdown();
        logs.and(metadata)
    }
}
