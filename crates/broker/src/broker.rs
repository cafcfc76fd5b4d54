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
use crate::metadata::REFUSED_GRACE;
use crate::metadata::{
    BrokerImage, Change, Committed, MetadataError, MetadataImage, MetadataRecord, MetadataStore,
    QuorumSetup, QuorumStatus, TopicImage,
};
use crate::metrics::BrokerMetrics;
use crate::partition::{IsrRequest, Partition, PartitionManager};

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
    /// The data directory, or a voter, belongs to another cluster.
    #[error("cluster id mismatch: {0}")]
    ClusterMismatch(String),
    #[error("cannot register with the controller: {0}")]
    Register(String),
}

#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    /// This run of the broker process, as registered with the controller.
    registration: BrokerImage,
    /// Set when the broker stops: it registers no more.
    stopping: std::sync::atomic::AtomicBool,
    metadata: Arc<MetadataStore>,
    controller: Controller,
    partitions: Arc<PartitionManager>,
    groups: GroupCoordinator,
    fetch_sessions: FetchSessionCache,
    /// The broker's own counters (requests, per-topic traffic, connections).
    metrics: Arc<BrokerMetrics>,
}

const META_PROPERTIES: &str = "meta.properties";

/// How often the broker looks for partitions whose storage is failing here.
const STORAGE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether `dir` is missing or holds nothing.
fn metadata_dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// Reads `meta.properties` (Kafka's file naming the cluster and node a data directory
/// belongs to): the cluster id, if the file exists. A directory of another node is refused.
fn read_cluster_id(dir: &Path, node_id: i32) -> Result<Option<String>, StartError> {
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
            Ok(Some(cluster.to_string()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(fail(err.to_string())),
    }
}

/// Writes `meta.properties` (atomically, synced).
fn write_cluster_id(dir: &Path, node_id: i32, cluster: &str) -> Result<(), StartError> {
    let fail = |reason: String| StartError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    let text = format!("version=1\ncluster.id={cluster}\nnode.id={node_id}\n");
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(&tmp, text).map_err(|e| fail(e.to_string()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, dir.join(META_PROPERTIES)).map_err(|e| fail(e.to_string()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(e.to_string()))
}

/// How long startup waits between looks at the quorum, and how often it says it waits.
const STARTUP_POLL: std::time::Duration = std::time::Duration::from_millis(50);
const STARTUP_REPORT_EVERY: u32 = 100;

/// Waits until the metadata names the cluster (a new cluster's first controller records
/// it), and checks that this node's data belongs to it. A single node has it at once.
fn agree_on_cluster_id(
    metadata: &MetadataStore,
    dir: &Path,
    node_id: i32,
    ours: Option<&str>,
) -> Result<String, StartError> {
    let mut polls = 0u32;
    let cluster = loop {
        if let Some(foreign) = metadata.foreign_peer() {
            return Err(StartError::ClusterMismatch(format!(
                "{foreign}: a node started on another cluster's data directory (or pointed at another cluster's voters) must not join"
            )));
        }
        if let Some(id) = metadata.image().cluster_id.clone() {
            break id;
        }
        polls += 1;
        if polls.is_multiple_of(STARTUP_REPORT_EVERY) {
            tracing::info!(status = ?metadata.quorum_status(), "waiting for the metadata quorum to elect a leader");
        }
        std::thread::sleep(STARTUP_POLL);
    };
    match ours {
        Some(ours) if ours != cluster => Err(StartError::ClusterMismatch(format!(
            "the data directory {} belongs to cluster {ours}, the metadata quorum is cluster {cluster}",
            dir.display()
        ))),
        Some(_) => Ok(cluster),
        None => {
            write_cluster_id(dir, node_id, &cluster)?;
            Ok(cluster)
        }
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
        let known_cluster = read_cluster_id(&dir, config.node_id)?;
        if let Some(cluster) = &known_cluster
            && config.cluster.roles.controller
            && config.cluster.has_peers()
            && metadata_dir_is_empty(&config.metadata_dir)
        {
            // A voter of several that forgot its term and vote could vote twice in one
            // term: a data directory of a cluster with no metadata log beside it is
            // refused, never started from nothing (a `metadata.log.dir` pointed at a new
            // directory, or a lost disk). A single node has no one to disagree with: it
            // starts anew and sets the partitions it finds aside (stray).
            return Err(StartError::DataDir {
                path: config.metadata_dir.clone(),
                reason: format!(
                    "{} belongs to cluster {cluster} but this metadata directory holds no \
                     metadata log: point metadata.log.dir at this node's metadata, or \
                     remove meta.properties to start the node anew",
                    dir.display()
                ),
            });
        }
        let quorum =
            (config.cluster.has_peers() && config.cluster.roles.controller).then(|| QuorumSetup {
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
        let metadata = if config.cluster.roles.controller {
            MetadataStore::open_with(
                &config.metadata_dir,
                config.sync_threads,
                config.clock.clone(),
                config.node_id,
                quorum.as_ref(),
                known_cluster.as_deref(),
            )?
        } else {
            // A broker-only node follows the quorum's log from its leader.
            MetadataStore::open_observer(
                config.clock.clone(),
                config.node_id,
                config
                    .cluster
                    .voters
                    .iter()
                    .map(|v| (v.id, v.host.clone(), v.port))
                    .collect(),
                known_cluster.as_deref(),
            )?
        };
        let metadata = Arc::new(metadata);
        let cluster_id =
            agree_on_cluster_id(&metadata, &dir, config.node_id, known_cluster.as_deref())?;
        let controller = Controller::new(
            metadata.clone(),
            TopicDefaults {
                partitions: config.num_partitions,
                replication_factor: config.default_replication_factor,
                max_partitions: config.max_partitions,
            },
        );
        let registration = BrokerImage {
            id: config.node_id,
            incarnation: Uuid::new_v4(),
            host: config.advertised.0.clone(),
            port: config.advertised.1,
            fenced: false,
        };
        if config.cluster.roles.broker {
            register_at_startup(
                &controller,
                &metadata,
                &registration,
                !config.cluster.has_peers(),
            )?;
        }
        let image = metadata.image();
        let metrics = Arc::new(BrokerMetrics::default());
        let partitions = Arc::new(PartitionManager::open(
            &config,
            config.manager_config(),
            &image,
            metrics.clone(),
        )?);
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
            registration,
            stopping: std::sync::atomic::AtomicBool::new(false),
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
            .set_listener(Box::new(move |change, image| match publisher.upgrade() {
                Some(broker) => broker.publish(change, image),
                None => Ok(()), // stopping: the next start applies the image
            }));
        // Changes committed between the image the partitions opened from and the listener.
        broker
            .publish(Change::Restored, &broker.image())
            .map_err(|reason| StartError::DataDir {
                path: broker.config.data_dir.clone(),
                reason,
            })?;
        Ok(broker)
    }

    /// See [`MetadataStore::failed`].
    pub async fn metadata_failed(&self) -> String {
        self.metadata.failed().await
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

    /// Waits until `holds` is true of this node's metadata image, re-checking at each new
    /// image, for at most `within`; whether it came true. For a request naming what its
    /// client learned from a broker further ahead in the metadata log than this one.
    pub async fn await_image(
        &self,
        within: std::time::Duration,
        holds: impl Fn(&MetadataImage) -> bool,
    ) -> bool {
        let mut changes = self.metadata.image_changes();
        let caught_up = async {
            loop {
                // Marked seen before the image is read: a change after the read wakes us.
                changes.borrow_and_update();
                if holds(&self.image()) {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(within, caught_up)
            .await
            .unwrap_or(false)
    }

    /// What this node knows of the metadata quorum.
    pub fn quorum_status(&self) -> QuorumStatus {
        self.metadata.quorum_status()
    }

    /// The controller clients are told of (Metadata, DescribeCluster): the quorum's leader
    /// when it is a live broker, else this broker (a controller-only leader serves no client,
    /// and every broker takes admin requests itself); -1 while no leader is known.
    pub fn controller_for_clients(&self) -> i32 {
        match self.quorum_status().leader {
            Some(leader) if self.image().live_broker(leader).is_some() => leader,
            Some(_) => self.config.node_id,
            None => -1,
        }
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn partitions(&self) -> &PartitionManager {
        &self.partitions
    }

    /// The partition, if this broker leads it (serves its clients).
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions.leader(topic, partition)
    }

    /// Why a client's request for a partition this broker does not lead is refused:
    /// NOT_LEADER_OR_FOLLOWER if the partition exists (the client refreshes its metadata and
    /// goes to the leader), UNKNOWN_TOPIC_OR_PARTITION if not.
    pub fn not_served(&self, topic: &str, partition: i32) -> ResponseError {
        if self.image().partition(topic, partition).is_some() {
            ResponseError::NotLeaderOrFollower
        } else {
            ResponseError::UnknownTopicOrPartition
        }
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
    fn publish(&self, change: Change<'_>, image: &MetadataImage) -> Result<(), String> {
        let records = match change {
            Change::Opening(records) => {
                // Partitions this node now holds or leads are ready before the image that
                // names them is visible: a client told this node leads a partition finds
                // it open (a producer whose first batches met a half-open partition would
                // have retried them after later ones).
                // Partitions of __consumer_offsets this node starts to lead: their groups
                // are loaded from the log before a client can be sent here. Found before
                // anything is reconciled (one reconcile covers a whole topic).
                let offsets_leads: Vec<i32> = records
                    .iter()
                    .filter_map(|record| match record {
                        MetadataRecord::PartitionChange {
                            topic,
                            partition,
                            leader,
                            leader_epoch,
                            ..
                        } if topic == OFFSETS_TOPIC && *leader == self.config.node_id => self
                            .partitions
                            .get(topic, *partition)
                            .filter(|p| p.is_leader() && p.leader_epoch() == *leader_epoch)
                            .is_none()
                            .then_some(*partition),
                        _ => None,
                    })
                    .collect();
                // Each topic once (a fencing changes many partitions of one topic).
                let mut reconciled = std::collections::BTreeSet::new();
                for record in records {
                    if let MetadataRecord::CreateTopic { name, .. }
                    | MetadataRecord::SetPartitionCount { name, .. }
                    | MetadataRecord::PartitionChange { topic: name, .. } = record
                        && reconciled.insert(name.as_str())
                        && let Some(topic) = image.topic(name)
                    {
                        self.partitions
                            .reconcile_topic(topic)
                            .map_err(|e| e.to_string())?;
                    }
                }
                for partition in offsets_leads {
                    if let Err(err) = self.groups.reload_partition(partition) {
                        tracing::warn!(partition, error = %err, "could not load the groups of a newly led __consumer_offsets partition");
                    }
                }
                return Ok(());
            }
            Change::Records(records) => records,
            Change::Restored => {
                // The image replaced whole: topics it lacks are gone, the rest reconciled.
                for topic in self.partitions.topics() {
                    if image.topic(&topic).is_none() {
                        self.partitions.remove_topic(&topic);
                        self.groups.forget_topic(&topic);
                    }
                }
                for topic in image.topics.values() {
                    self.partitions
                        .reconcile_topic(topic)
                        .map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
        };
        for record in records {
            match record {
                MetadataRecord::DeleteTopic { name } => {
                    self.partitions.remove_topic(name);
                    self.groups.forget_topic(name);
                    tracing::info!(topic = %name, "deleted topic");
                }
                // Opened before the image (above); configuration changes apply here.
                MetadataRecord::CreateTopic { .. }
                | MetadataRecord::SetPartitionCount { .. }
                | MetadataRecord::PartitionChange { .. } => {}
                MetadataRecord::SetTopicConfig { name, .. } => {
                    if let Some(topic) = image.topic(name) {
                        self.partitions
                            .reconcile_topic(topic)
                            .map_err(|e| e.to_string())?;
                    }
                }
                MetadataRecord::ProducerIdBlock { .. }
                | MetadataRecord::RegisterBroker { .. }
                | MetadataRecord::FenceBroker { .. }
                | MetadataRecord::ClusterId { .. } => {}
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
        // Kafka refuses to create it with fewer brokers than offsets.topic.replication.factor;
        // here it gets as many replicas as there are brokers up to that, so that a single
        // node and a young cluster both work (and a later broker does not add replicas).
        let live = self.image().live_brokers().count().max(1);
        let replication = usize::try_from(self.config.offsets_replication_factor.max(1))
            .unwrap_or(1)
            .min(live);
        let spec = NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: settings.offsets_partitions,
            replication_factor: i16::try_from(replication).unwrap_or(1),
            configs,
            assignments: Vec::new(),
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
        self.create_partitions_placed(name, count, &[], validate_only)
            .await
    }

    /// Raises a topic's partition count to `count`, the new partitions on the replicas
    /// `assignments` name (empty: placed by the controller).
    pub async fn create_partitions_placed(
        &self,
        name: &str,
        count: i32,
        assignments: &[Vec<i32>],
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let change = self
            .controller
            .create_partitions(name, count, assignments, validate_only)
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

    /// Keeps this broker's membership (KRaft's broker heartbeats, done the quorum's way):
    /// every `broker.heartbeat.interval.ms` (at most 100 ms) it registers again if the
    /// controller fenced it while it was alive (a pause, a cut link); and on the active
    /// controller it fences every broker the quorum has not heard from for
    /// `broker.session.timeout.ms`, or for 300 ms while its quorum address refuses
    /// connections (the process is gone), moving its
    /// leaderships away, and every `leader.imbalance.check.interval.seconds` moves
    /// partitions back to their preferred (first) replica where it is in sync. Runs until
    /// `stop`.
    pub async fn run_membership(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        // Checked at least this often, whatever the heartbeat interval: a broker found down
        // is fenced within a fraction of a second.
        let interval = self
            .config
            .cluster
            .broker_heartbeat_interval
            .min(std::time::Duration::from_millis(100));
        let session = self.config.cluster.broker_session_timeout;
        let mut last_rebalance = self.clock().now();
        let mut last_round = self.clock().now();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            // A round that comes much later than asked means this process did not run
            // meanwhile (paused, starved): what it knows of who leads the quorum and whom
            // the quorum heard from is as old as that. A resumed ex-leader would fence every
            // healthy broker from it: it decides nothing this round (and its fencing is
            // proposed as leader only, so a decision made from a seat it has lost cannot
            // commit anyway).
            let round = self.clock().now();
            let late = round.saturating_duration_since(last_round) > interval + session / 2;
            last_round = round;
            let image = self.image();
            let me = &self.registration;
            let live = image
                .live_broker(me.id)
                .is_some_and(|b| b.incarnation == me.incarnation);
            if !live && self.config.cluster.roles.broker {
                tracing::warn!(
                    node = me.id,
                    "this broker was fenced while alive: registering again"
                );
                if let Err(err) = self.controller.reregister_broker(me).await {
                    tracing::warn!(error = %err.message, "could not register again");
                }
            }
            let status = self.quorum_status();
            if status.leader != Some(self.config.node_id) {
                continue;
            }
            if late {
                tracing::warn!("this node did not run for a while: no fencing decision this round");
                continue;
            }
            let now = self.clock().now();
            if let Some(every) = self.config.leader_rebalance_interval
                && now.saturating_duration_since(last_rebalance) >= every
            {
                last_rebalance = now;
                match self.controller.elect_preferred_leaders(None).await {
                    Ok(left) => {
                        let partitions: usize =
                            image.topics.values().map(|t| t.partitions as usize).sum();
                        let moved = partitions.saturating_sub(left.len());
                        if moved > 0 {
                            tracing::info!(
                                partitions = moved,
                                "leadership moved back to preferred replicas"
                            );
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err.message, "preferred leader election failed");
                    }
                }
            }
            let refusing = self.metadata.refusing_voters();
            for (node, heard) in &status.heard {
                if *node == self.config.node_id {
                    continue;
                }
                let Some(broker) = image.live_broker(*node) else {
                    continue;
                };
                let silent = now.saturating_duration_since(*heard);
                // A voter whose address refuses connections is down, not just slow: it is
                // fenced without waiting out the session (a SIGKILLed broker fails over in
                // a fraction of it). A silent one that still accepts connections (paused,
                // overloaded) or cannot be reached (a cut link) gets the whole session.
                let down = refusing.iter().any(|(id, since)| {
                    *id == *node && now.saturating_duration_since(*since) >= REFUSED_GRACE
                }) && silent >= REFUSED_GRACE;
                if silent < session && !down {
                    continue;
                }
                tracing::warn!(node, silent_for = ?silent, refusing_connections = down, "fencing a broker that missed its heartbeats");
                if let Err(err) = self
                    .controller
                    .fence_silent_broker(*node, broker.incarnation)
                    .await
                {
                    tracing::warn!(node, error = %err.message, "could not fence the broker");
                }
            }
        }
    }

    /// Sends an ISR change a partition this broker leads asks for to the controller, in the
    /// background (KRaft's AlterPartition). The partition learns the outcome from the
    /// metadata; a change that was not made may be asked for again.
    pub fn request_isr_change(self: &Arc<Self>, partition: Arc<Partition>, request: IsrRequest) {
        let broker = self.clone();
        let me = self.config.node_id;
        tokio::spawn(async move {
            let tp = partition.topic_partition().clone();
            let made = broker
                .controller
                .alter_isr(
                    &tp.topic,
                    tp.partition,
                    (me, request.leader_epoch),
                    request.partition_epoch,
                    &request.isr,
                )
                .await;
            match made {
                Ok(true) => {
                    tracing::info!(partition = %tp, isr = ?request.isr, "in-sync replicas changed");
                }
                Ok(false) => partition.isr_request_failed(&request),
                Err(err) => {
                    tracing::warn!(partition = %tp, isr = ?request.isr, error = %err.message, "could not change the in-sync replicas");
                    partition.isr_request_failed(&request);
                }
            }
        });
    }

    /// On every partition this broker leads, drops from the ISR the followers that have not
    /// caught up for `replica.lag.time.max.ms` (checked every half of it). Runs until `stop`.
    pub async fn run_isr_checks(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let lag = self.config.replica_lag_time_max;
        let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(lag / 2) => {}
            }
            let now_ms = self.config.clock.now_ms();
            for partition in self.partitions.all() {
                if !partition.is_leader() {
                    continue;
                }
                if let Some(request) = partition.lagging_followers(now_ms, lag_ms) {
                    tracing::warn!(partition = %partition.topic_partition(), isr = ?request.isr, "followers fell behind: shrinking the in-sync replicas");
                    self.request_isr_change(partition, request);
                }
            }
        }
    }

    /// Hands over what this broker can no longer store: every partition whose log is
    /// failing here (a full disk, an I/O error, a failed fsync) leaves the ISR, and where
    /// this broker led it, another live in-sync replica leads
    /// ([`crate::controller::resignation`]). Kafka takes a failed log directory offline and
    /// moves its leaders the same way. Such a replica fetches nothing until a probe write
    /// beside its log succeeds (space freed); then it copies again and rejoins the ISR like
    /// any follower that caught up. An offline log (failed fsync) waits for a restart.
    /// Runs until `stop`.
    pub async fn run_storage_checks(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if !self.config.cluster.has_peers() {
            return; // a single node has no one to hand a partition to
        }
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(STORAGE_CHECK_INTERVAL) => {}
            }
            let failing: Vec<(String, i32)> = self
                .partitions
                .all()
                .into_iter()
                .filter(|p| p.storage_failing())
                .filter(|p| {
                    let healthy = p.probe_storage();
                    if healthy {
                        tracing::info!(partition = %p.topic_partition(), "storage writable again: copying the leader again");
                    }
                    !healthy
                })
                .map(|p| {
                    let tp = p.topic_partition();
                    (tp.topic.clone(), tp.partition)
                })
                .collect();
            if failing.is_empty() {
                continue;
            }
            let me = &self.registration;
            let resigning =
                crate::controller::resignation(&self.image(), me.id, me.incarnation, &failing);
            if resigning.is_empty() {
                continue; // out of those ISRs already, or the only copy left
            }
            match self
                .controller
                .resign_replicas(me.id, me.incarnation, failing)
                .await
            {
                Ok(changed) => {
                    tracing::warn!(
                        partitions = changed,
                        "storage failing: this broker left the in-sync replicas and handed its leaderships over"
                    );
                }
                Err(err) => {
                    tracing::warn!(error = %err.message, "storage failing, and the controller could not be told");
                }
            }
        }
    }

    /// Controlled shutdown: this broker fences itself before stopping, so that clients are
    /// sent elsewhere at once instead of after the session timeout (with replicas, the
    /// leaderships move to them). Gives up after `timeout` (no quorum: the broker stops
    /// anyway and is fenced by the session timeout). A single node has no one to hand
    /// anything to.
    pub async fn controlled_shutdown(&self, timeout: std::time::Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if !self.config.cluster.has_peers() || !self.config.cluster.roles.broker {
            return;
        }
        let me = &self.registration;
        let fenced =
            tokio::time::timeout(timeout, self.controller.fence_broker(me.id, me.incarnation))
                .await;
        match fenced {
            Ok(Ok(())) => tracing::info!("controlled shutdown: this broker leads nothing now"),
            Ok(Err(err)) => tracing::warn!(error = %err.message, "controlled shutdown failed"),
            Err(_) => tracing::warn!("controlled shutdown timed out"),
        }
    }

    /// Clean shutdown of storage: logs, then metadata.
    pub fn shutdown(&self) -> Result<(), sluice_log::LogError> {
        let logs = self.partitions.shutdown();
        let metadata = self.metadata.shutdown();
        logs.and(metadata)
    }
}

/// Registers this broker's incarnation before it serves anything. A node of several waits
/// for the quorum (its registration is forwarded to the leader once there is one).
fn register_at_startup(
    controller: &Controller,
    metadata: &MetadataStore,
    registration: &BrokerImage,
    single_node: bool,
) -> Result<(), StartError> {
    let mut attempts = 0u32;
    loop {
        match controller.register_broker(registration, single_node) {
            Ok(()) => return Ok(()),
            Err(err) if single_node => return Err(StartError::Register(err.message)),
            Err(err) => {
                if let Some(foreign) = metadata.foreign_peer() {
                    return Err(StartError::ClusterMismatch(foreign));
                }
                attempts += 1;
                if attempts.is_multiple_of(20) {
                    tracing::info!(error = %err.message, "waiting to register with the controller");
                }
                std::thread::sleep(STARTUP_POLL * 4);
            }
        }
    }
}
