//! The controller: every change to the cluster metadata is decided here (KRaft's controller
//! role). It validates an admin request against the current image, turns it into metadata
//! records and has the [`MetadataStore`] make them durable; what the change means for the
//! partitions and groups of this broker is then published by the broker wiring. It also
//! hands out producer ids, from blocks reserved durably in the metadata log.
//!
//! Depends on the metadata store, topic configuration rules and the error type; must not
//! depend on partitions, groups or handlers (the cluster issue will run it on the quorum's
//! active controller, away from any partition).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::errors::ApiError;
use crate::internal_topics;
use crate::metadata::{
    Committed, MetadataError, MetadataImage, MetadataRecord, MetadataStore, TopicImage,
};
use crate::topic_config::{self, validate_topic_name};

/// Producer ids reserved per metadata record.
const PRODUCER_ID_BLOCK: i64 = 1000;

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

/// The defaults a topic creation falls back to, and the broker's partition cap.
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication_factor: i16,
    /// `max.broker.partitions`.
    pub max_partitions: i32,
}

/// Refuses a change that would take the cluster past `max.broker.partitions`.
fn check_partition_cap(image: &MetadataImage, adding: i64, cap: i32) -> Result<(), ApiError> {
    let held: i64 = image.topics.values().map(|t| i64::from(t.partitions)).sum();
    if held + adding > i64::from(cap) {
        return Err(ApiError::new(
            ResponseError::PolicyViolation,
            format!(
                "{adding} more partitions would make {} on this broker; max.broker.partitions is {cap}",
                held + adding
            ),
        ));
    }
    Ok(())
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
        MetadataError::Quorum(_) => ApiError::new(ResponseError::RequestTimedOut, err.to_string()),
        _ => {
            tracing::error!(error = %err, "metadata update failed");
            ApiError::new(
                ResponseError::KafkaStorageError,
                format!("metadata log: {err}"),
            )
        }
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
    /// KAFKA_STORAGE_ERROR.
    async fn commit<T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), ApiError>,
    ) -> Result<Committed<T>, ApiError> {
        self.metadata.update(change).await.map_err(|e| match e {
            // A record that cannot be written is the request's fault, and nothing was
            // written.
            MetadataError::Encode(err) => {
                ApiError::new(ResponseError::InvalidRequest, err.to_string())
            }
            other => metadata_failure(&other),
        })?
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
        let replication = if spec.replication_factor == -1 {
            self.defaults.replication_factor
        } else {
            spec.replication_factor
        };
        if replication != 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {replication}: this cluster has 1 broker"),
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
        let (partitions, _, configs) = self.check_new_topic(&spec)?;
        let candidate = TopicImage {
            name: spec.name,
            id: Uuid::new_v4(),
            partitions,
            configs,
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
            let records = if validate_only {
                Vec::new()
            } else {
                vec![MetadataRecord::CreateTopic {
                    name: candidate.name.clone(),
                    id: candidate.id,
                    partitions: candidate.partitions,
                    configs: candidate.configs.clone(),
                }]
            };
            Ok((records, candidate))
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

    /// Raises a topic's partition count to `count`; the value is the previous count.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
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
