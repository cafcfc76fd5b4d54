//! Cluster metadata as a log of records applied to an in-memory image (DESIGN.md §5).
//!
//! The log is a partition `__cluster_metadata-0` of its own log manager under
//! `<data>/metadata/`, written with group commit: a change is acknowledged only once its
//! record is durable. At startup the whole log is replayed into a fresh image. A single
//! node appends locally; a Raft quorum will replicate the same records later.
//!
//! Record encoding (the value of each log record): a format version byte (0), a type byte,
//! then the fields: strings as u16 length + UTF-8, UUIDs as 16 bytes, counts as i32 / u16.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use sluice_log::{Clock, Log, LogConfig, LogManager, ManagerConfig, TopicPartition};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};
use uuid::Uuid;

const FORMAT_VERSION: u8 = 0;
/// The metadata log's partition, named as in KRaft.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    SetPartitionCount {
        name: String,
        partitions: i32,
    },
    SetTopicConfig {
        name: String,
        key: String,
        value: Option<String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Producer ids below `end` have been handed out; a restarted broker starts above.
    ProducerIdBlock {
        end: i64,
    },
}

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

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        match self {
            MetadataRecord::CreateTopic {
                name,
                id,
                partitions,
                configs,
            } => {
                out.push(1);
                put_str(&mut out, name);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&partitions.to_be_bytes());
                out.extend_from_slice(&(configs.len() as u16).to_be_bytes());
                for (key, value) in configs {
                    put_str(&mut out, key);
                    put_str(&mut out, value);
                }
            }
            MetadataRecord::SetPartitionCount { name, partitions } => {
                out.push(2);
                put_str(&mut out, name);
                out.extend_from_slice(&partitions.to_be_bytes());
            }
            MetadataRecord::SetTopicConfig { name, key, value } => {
                out.push(3);
                put_str(&mut out, name);
                put_str(&mut out, key);
                match value {
                    Some(value) => {
                        out.push(1);
                        put_str(&mut out, value);
                    }
                    None => out.push(0),
                }
            }
            MetadataRecord::DeleteTopic { name } => {
                out.push(4);
                put_str(&mut out, name);
            }
            MetadataRecord::ProducerIdBlock { end } => {
                out.push(5);
                out.extend_from_slice(&end.to_be_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(format!("unknown metadata record format {version}"));
        }
        let record = match r.u8()? {
            1 => {
                let name = r.string()?;
                let id = Uuid::from_bytes(r.take(16)?.try_into().expect("16 bytes"));
                let partitions = r.i32()?;
                let count = r.u16()?;
                let mut configs = BTreeMap::new();
                for _ in 0..count {
                    let key = r.string()?;
                    configs.insert(key, r.string()?);
                }
                MetadataRecord::CreateTopic {
                    name,
                    id,
                    partitions,
                    configs,
                }
            }
            2 => MetadataRecord::SetPartitionCount {
                name: r.string()?,
                partitions: r.i32()?,
            },
            3 => {
                let name = r.string()?;
                let key = r.string()?;
                let value = match r.u8()? {
                    0 => None,
                    _ => Some(r.string()?),
                };
                MetadataRecord::SetTopicConfig { name, key, value }
            }
            4 => MetadataRecord::DeleteTopic { name: r.string()? },
            5 => MetadataRecord::ProducerIdBlock {
                end: i64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes")),
            },
            other => return Err(format!("unknown metadata record type {other}")),
        };
        if r.at != bytes.len() {
            return Err("trailing bytes after metadata record".into());
        }
        Ok(record)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("truncated metadata record")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| "metadata string is not UTF-8".to_string())
    }
}

/// Why a metadata change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Log(#[from] sluice_log::LogError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("corrupt metadata log at offset {offset}: {reason}")]
    Corrupt { offset: i64, reason: String },
}

/// A change made durable and applied: the image after it, and its records.
#[derive(Debug)]
pub struct Committed<T> {
    pub image: Arc<MetadataImage>,
    pub records: Vec<MetadataRecord>,
    pub value: T,
}

/// The metadata log and the image it produces.
#[derive(Debug)]
pub struct MetadataStore {
    manager: LogManager,
    log: Arc<Log>,
    clock: Arc<dyn Clock>,
    image: RwLock<Arc<MetadataImage>>,
    /// Serialises changes: each is validated against the image it will apply to.
    writer: tokio::sync::Mutex<()>,
}

impl MetadataStore {
    /// Opens (or creates) the metadata log under `dir` and replays it.
    pub fn open(
        dir: &Path,
        sync_threads: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MetadataError> {
        let mut config = ManagerConfig::new(dir);
        config.default_log_config = LogConfig {
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        };
        config.sync_threads = sync_threads.min(4);
        config.cleaner_enabled = false;
        let manager = LogManager::open_with_clock(config, clock.clone())?;
        let log = manager.get_or_create(&TopicPartition::new(METADATA_TOPIC, 0))?;
        let image = replay(&log)?;
        tracing::info!(
            topics = image.topics.len(),
            records_end = log.log_end_offset(),
            "metadata loaded"
        );
        Ok(MetadataStore {
            manager,
            log,
            clock,
            image: RwLock::new(Arc::new(image)),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The current image; cheap to take, never changes under the caller.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Computes records from the current image with `change`, makes them durable and applies
    /// them. `change` runs with writes serialised, so its checks hold when the records land.
    /// Returns what was committed, for the broker to publish to the partitions and groups.
    pub async fn update<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<Result<Committed<T>, E>, MetadataError> {
        let _serial = self.writer.lock().await;
        let current = self.image();
        let (records, value) = match change(&current) {
            Ok(result) => result,
            Err(err) => return Ok(Err(err)),
        };
        if records.is_empty() {
            return Ok(Ok(Committed {
                image: current,
                records,
                value,
            }));
        }
        let mut next = (*current).clone();
        for record in &records {
            next.apply(record)?;
        }
        let mut builder = BatchBuilder::new(Compression::None);
        let now = self.clock.now_ms();
        for record in &records {
            builder.push(OwnedRecord::new(None, Some(record.encode()), now));
        }
        let mut batch = builder.build().map_err(|e| MetadataError::Corrupt {
            offset: -1,
            reason: e.to_string(),
        })?;
        let info = self.log.append(&mut batch, 0)?;
        self.log.wait_durable(info.last_offset + 1).await?;
        let next = Arc::new(next);
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        Ok(Ok(Committed {
            image: next,
            records,
            value,
        }))
    }

    pub fn shutdown(&self) -> Result<(), sluice_log::LogError> {
        self.manager.shutdown()
    }
}

fn replay(log: &Log) -> Result<MetadataImage, MetadataError> {
    let mut image = MetadataImage::default();
    let corrupt = |offset: i64, reason: String| MetadataError::Corrupt { offset, reason };
    let start = log.offsets().log_start_offset;
    for stored in log.records_from(start) {
        let stored = stored.map_err(|e| corrupt(start, e.to_string()))?;
        let records = stored
            .records()
            .map_err(|e| corrupt(stored.base_offset(), e.to_string()))?;
        for record in records.iter() {
            let value = record.value.unwrap_or_default();
            let decoded =
                MetadataRecord::decode(value).map_err(|reason| corrupt(record.offset, reason))?;
            image.apply(&decoded)?;
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip() {
        let records = [
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                partitions: 3,
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
            },
            MetadataRecord::SetPartitionCount {
                name: "t".into(),
                partitions: 5,
            },
            MetadataRecord::SetTopicConfig {
                name: "t".into(),
                key: "k".into(),
                value: Some("v".into()),
            },
            MetadataRecord::SetTopicConfig {
                name: "t".into(),
                key: "k".into(),
                value: None,
            },
            MetadataRecord::DeleteTopic { name: "t".into() },
            MetadataRecord::ProducerIdBlock { end: 1000 },
        ];
        let mut image = MetadataImage::default();
        for record in &records {
            assert_eq!(&MetadataRecord::decode(&record.encode()).unwrap(), record);
            image.apply(record).unwrap();
        }
        assert!(image.topics.is_empty());
        assert!(MetadataRecord::decode(&[0, 9]).is_err());
        assert!(MetadataRecord::decode(&[0, 4, 0, 5, b'a']).is_err());
    }

    #[tokio::test]
    async fn changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let store =
                MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
            let created = store
                .update(|_| {
                    Ok::<_, ()>((
                        vec![MetadataRecord::CreateTopic {
                            name: "a".into(),
                            id,
                            partitions: 2,
                            configs: BTreeMap::new(),
                        }],
                        (),
                    ))
                })
                .await
                .unwrap();
            assert!(created.is_ok());
            store
                .update(|_| {
                    Ok::<_, ()>((
                        vec![MetadataRecord::SetPartitionCount {
                            name: "a".into(),
                            partitions: 4,
                        }],
                        (),
                    ))
                })
                .await
                .unwrap()
                .unwrap();
            // No clean shutdown: the records were durable when update returned.
        }
        let store = MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
        let topic = store.image().topic("a").cloned().unwrap();
        assert_eq!((topic.id, topic.partitions), (id, 4));
    }
}
