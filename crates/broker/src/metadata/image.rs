//! The metadata image: the state every record applied so far describes. Applying checks
//! that a record fits the image (no topic created twice, partitions never shrink, producer
//! id blocks only advance).

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::record::MetadataRecord;

/// A topic as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level overrides only; defaults come from the broker configuration.
    pub configs: BTreeMap<String, String>,
}

/// The state all records applied so far describe.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// The end of the last block of producer ids handed out.
    pub producer_ids_end: i64,
}

/// A record that does not apply to the current image (a bug, or a corrupt log).
#[derive(Debug, thiserror::Error)]
#[error("metadata record does not apply: {0}")]
pub struct ApplyError(String);

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
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
                self.topic_names_by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
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
        }
        Ok(())
    }
}
