//! The broker's wiring: it opens the components in order (metadata, partitions, group
//! coordinator), holds them, and publishes each committed metadata change to the partitions
//! and groups it concerns. It has no logic of its own beyond that composition: handlers reach
//! the components through its accessors.
//!
//! ```text
//!   handlers ─► Broker ─┬─► Controller ─► MetadataStore (metadata log + image)
//!                       ├─► PartitionManager ─► Partition ─► Log (sluice-log)
//!                       └─► GroupCoordinator ─► PartitionManager (`__consumer_offsets`)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use sluice_log::Clock;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::controller::{Controller, NewTopic, TopicDefaults};
use crate::errors::ApiError;
use crate::fetch_sessions::FetchSessionCache;
use crate::groups::GroupCoordinator;
use crate::internal_topics::OFFSETS_TOPIC;
use crate::metadata::{
    Committed, MetadataError, MetadataImage, MetadataRecord, MetadataStore, QuorumSetup,
    QuorumStatus, TopicImage,
};
use crate::metrics::BrokerMetrics;
use crate::partition::{Partition, PartitionManager};

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

#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    metadata: Arc<MetadataStore>,
    controller: Controller,
    partitions: Arc<PartitionManager>,
    groups: GroupCoordinator,
    fetch_sessions: FetchSessionCache,
    /// The broker's own counters (requests, per-topic traffic, connections).
    metrics: Arc<BrokerMetrics>,
}

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
    /// Opens the data directory: metadata first, then every partition it names, then the
    /// group coordinator's state. Partition directories of topics the metadata no longer has
    /// are deleted. Blocking.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| StartError::DataDir {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let cluster_id = cluster_id(&dir, config.node_id)?;
        let quorum = config.cluster.has_peers().then(|| QuorumSetup {
            node_id: config.node_id,
            voters: config
                .cluster
                .voters
                .iter()
                .map(|v| (v.id, v.host.clone(), v.port))
                .collect(),
            listen: config
                .cluster
                .controller_listener()
                .and_then(|l| l.bind_addr())
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            election_timeout: config.cluster.election_timeout,
        });
        let metadata = Arc::new(MetadataStore::open_with(
            &dir.join("metadata"),
            config.sync_threads,
            config.clock.clone(),
            config.node_id,
            quorum.as_ref(),
        )?);
        let image = metadata.image();
        let metrics = Arc::new(BrokerMetrics::default());
        let partitions = Arc::new(PartitionManager::open(
            &config,
            config.manager_config(),
            &image,
            metrics.clone(),
        )?);
        let controller = Controller::new(
            metadata.clone(),
            TopicDefaults {
                partitions: config.num_partitions,
                replication_factor: config.default_replication_factor,
                max_partitions: config.max_partitions,
            },
        );
        let groups = GroupCoordinator::new(
            config.coordinator.clone(),
            config.clock.clone(),
            partitions.clone(),
            metadata.clone(),
        );
        groups.load()?;
        let fetch_sessions =
            FetchSessionCache::new(config.fetch_session_slots, config.clock.clone());
        let broker = Arc::new(Broker {
            config,
            cluster_id,
            metadata,
            controller,
            partitions,
            groups,
            fetch_sessions,
            metrics,
        });
        let publisher = Arc::downgrade(&broker);
        broker
            .metadata
            .set_listener(Box::new(move |records, image| match publisher.upgrade() {
                Some(broker) => broker.publish(records, image),
                None => Ok(()), // stopping: the next start applies the image
            }));
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.config.clock
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// What this node knows of the metadata quorum.
    pub fn quorum_status(&self) -> QuorumStatus {
        self.metadata.quorum_status()
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn partitions(&self) -> &PartitionManager {
        &self.partitions
    }

    /// The partition, if this broker serves it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions.get(topic, partition)
    }

    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    pub fn fetch_sessions(&self) -> &FetchSessionCache {
        &self.fetch_sessions
    }

    /// Applies a committed metadata change to this broker's partitions and groups (KRaft's
    /// metadata publisher). The metadata store calls it for every change, in order, from the
    /// change's own commit task (so a requester that goes away cannot skip it). Failing to
    /// open a partition's log is reported to the requester as a storage error; the change
    /// itself is durable and carried out again at the next start.
    fn publish(&self, records: &[MetadataRecord], image: &MetadataImage) -> Result<(), String> {
        for record in records {
            match record {
                MetadataRecord::DeleteTopic { name } => {
                    self.partitions.remove_topic(name);
                    self.groups.forget_topic(name);
                    tracing::info!(topic = %name, "deleted topic");
                }
                MetadataRecord::CreateTopic { name, .. }
                | MetadataRecord::SetPartitionCount { name, .. }
                | MetadataRecord::SetTopicConfig { name, .. } => {
                    if let Some(topic) = image.topic(name) {
                        self.partitions
                            .reconcile_topic(topic)
                            .map_err(|e| e.to_string())?;
                    }
                }
                MetadataRecord::ProducerIdBlock { .. } => {}
            }
        }
        Ok(())
    }

    /// The publisher's verdict on a committed change, as the requester's error.
    fn published<T>(change: &Committed<T>) -> Result<(), ApiError> {
        change.published.clone().map_err(|reason| {
            ApiError::new(
                ResponseError::KafkaStorageError,
                format!("the change is recorded but could not be carried out: {reason}"),
            )
        })
    }

    /// Creates a topic (or only validates it). Returns the created topic.
    pub async fn create_topic(
        &self,
        spec: NewTopic,
        validate_only: bool,
    ) -> Result<TopicImage, ApiError> {
        let change = self.controller.create_topic(spec, validate_only).await?;
        Self::published(&change)?;
        if !validate_only {
            let topic = &change.value;
            tracing::info!(topic = %topic.name, partitions = topic.partitions, "created topic");
        }
        Ok(change.value)
    }

    /// Creates `__consumer_offsets` if it does not exist yet (on the first FindCoordinator,
    /// as Kafka does).
    pub async fn ensure_offsets_topic(&self) -> Result<(), ApiError> {
        if self.image().topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let settings = &self.config.coordinator;
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                settings.offsets_segment_bytes.to_string(),
            ),
        ]);
        let spec = NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: settings.offsets_partitions,
            replication_factor: 1,
            configs,
        };
        match self.create_topic(spec, false).await {
            Ok(_) => Ok(()),
            Err(err) if err.code == ResponseError::TopicAlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Deletes a topic, its logs, and groups' offsets of it. Returns its id.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, ApiError> {
        let change = self.controller.delete_topic(name).await?;
        Self::published(&change)?;
        Ok(change.value.id)
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let change = self
            .controller
            .create_partitions(name, count, validate_only)
            .await?;
        Self::published(&change)?;
        if !validate_only {
            tracing::info!(
                topic = name,
                from = change.value,
                to = count,
                "added partitions"
            );
        }
        Ok(())
    }

    /// Replaces (`replace_all`) or edits a topic's configuration overrides.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let change = self
            .controller
            .alter_topic_configs(name, changes, replace_all, validate_only)
            .await?;
        if let Err(err) = Self::published(&change) {
            // The configuration is durable; a log that cannot take it now gets it at restart.
            tracing::warn!(topic = name, error = %err.message, "could not apply configuration");
        }
        Ok(())
    }

    /// Clean shutdown of storage: logs, then metadata.
    pub fn shutdown(&self) -> Result<(), sluice_log::LogError> {
        let logs = self.partitions.shutdown();
        let metadata = self.metadata.shutdown();
        logs.and(metadata)
    }
}
