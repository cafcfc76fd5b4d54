//! Cluster metadata as a log of records applied to an in-memory image (DESIGN.md §5).
//!
//! The log is a partition `__cluster_metadata-0` of its own log manager under
//! `<data>/metadata/`, written with group commit: a change is acknowledged only once its
//! record is durable. At startup the whole log is replayed into a fresh image. A single
//! node appends locally; a Raft quorum will replicate the same records later.
//!
//! A change, once computed, is committed by a task of its own: appended, made durable,
//! applied to the image and handed to the listener (the broker's publisher, which opens and
//! removes partitions), in that order, whatever the requester does meanwhile. A requester
//! that disconnects cannot leave a record in the log that the image lacks, and a retry sees
//! the change applied. Records are encoded (and refused if a field does not fit) before
//! anything is written, so replay reads back every record this store wrote.
//!
//! - [`record`]: the records and their encoding;
//! - [`image`]: the image and how a record applies to it.

pub mod image;
pub mod record;

use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use sluice_log::{Clock, Log, LogConfig, LogManager, ManagerConfig, TopicPartition};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

pub use image::{ApplyError, MetadataImage, TopicImage};
pub use record::{EncodeError, MetadataRecord};

/// The metadata log's partition, named as in KRaft.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Why a metadata change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Log(#[from] sluice_log::LogError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("corrupt metadata log at offset {offset}: {reason}")]
    Corrupt { offset: i64, reason: String },
    #[error("metadata commit task failed: {0}")]
    Task(String),
}

/// A change made durable, applied and published: what the listener said of it (`Err`: it
/// could not carry the change out, e.g. a log it could not create; the change itself is
/// durable and is carried out again at the next start), and the value the change computed.
#[derive(Debug)]
pub struct Committed<T> {
    pub published: Result<(), String>,
    pub value: T,
}

/// Called with every committed change, in commit order, before the next change starts.
pub type Listener =
    Box<dyn Fn(&[MetadataRecord], &MetadataImage) -> Result<(), String> + Send + Sync>;

struct Inner {
    manager: LogManager,
    log: Arc<Log>,
    clock: Arc<dyn Clock>,
    image: RwLock<Arc<MetadataImage>>,
    /// Serialises changes: each is validated against the image it will apply to, and the
    /// commit task holds it until the change is applied and published.
    writer: Arc<tokio::sync::Mutex<()>>,
    listener: OnceLock<Listener>,
}

/// The metadata log and the image it produces.
pub struct MetadataStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("log", &self.inner.log)
            .finish_non_exhaustive()
    }
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
            inner: Arc::new(Inner {
                manager,
                log,
                clock,
                image: RwLock::new(Arc::new(image)),
                writer: Arc::new(tokio::sync::Mutex::new(())),
                listener: OnceLock::new(),
            }),
        })
    }

    /// Sets the listener that carries out each committed change (once, at startup).
    pub fn set_listener(&self, listener: Listener) {
        if self.inner.listener.set(listener).is_err() {
            panic!("the metadata listener is set once");
        }
    }

    /// The current image; cheap to take, never changes under the caller.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image()
    }

    /// Computes records from the current image with `change`, then commits them: appended,
    /// durable, applied, published. `change` runs with writes serialised, so its checks hold
    /// when the records land. From the moment `change` returns records, the commit runs to
    /// its end even if the caller stops waiting.
    pub async fn update<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<Result<Committed<T>, E>, MetadataError> {
        let serial = self.inner.writer.clone().lock_owned().await;
        let current = self.image();
        let (records, value) = match change(&current) {
            Ok(result) => result,
            Err(err) => return Ok(Err(err)),
        };
        if records.is_empty() {
            return Ok(Ok(Committed {
                published: Ok(()),
                value,
            }));
        }
        let mut next = (*current).clone();
        for record in &records {
            next.apply(record)?;
        }
        let encoded = records
            .iter()
            .map(MetadataRecord::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let inner = self.inner.clone();
        let commit = tokio::spawn(async move {
            let _serial = serial;
            let info = inner.append(encoded)?;
            inner.log.wait_durable(info.last_offset + 1).await?;
            let next = Arc::new(next);
            *inner.image.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
            // Publishing opens and removes logs: blocking work, off the async workers.
            let publisher = inner.clone();
            tokio::task::spawn_blocking(move || match publisher.listener.get() {
                Some(listener) => listener(&records, &next),
                None => Ok(()),
            })
            .await
            .map_err(|e| MetadataError::Task(e.to_string()))
        });
        let published = commit
            .await
            .map_err(|e| MetadataError::Task(e.to_string()))??;
        Ok(Ok(Committed { published, value }))
    }

    pub fn shutdown(&self) -> Result<(), sluice_log::LogError> {
        self.inner.manager.shutdown()
    }
}

impl Inner {
    fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Appends encoded records as one batch.
    fn append(&self, encoded: Vec<Vec<u8>>) -> Result<sluice_log::AppendInfo, MetadataError> {
        let mut builder = BatchBuilder::new(Compression::None);
        let now = self.clock.now_ms();
        for value in encoded {
            builder.push(OwnedRecord::new(None, Some(value), now));
        }
        let mut batch = builder.build().map_err(|e| MetadataError::Corrupt {
            offset: -1,
            reason: e.to_string(),
        })?;
        Ok(self.log.append(&mut batch, 0)?)
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
    use std::collections::BTreeMap;

    use uuid::Uuid;

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
            assert_eq!(
                &MetadataRecord::decode(&record.encode().unwrap()).unwrap(),
                record
            );
            image.apply(record).unwrap();
        }
        assert!(image.topics.is_empty());
        assert!(MetadataRecord::decode(&[0, 9]).is_err());
        assert!(MetadataRecord::decode(&[0, 4, 0, 5, b'a']).is_err());
        // A value longer than its length prefix can say is refused, not written short.
        let long = MetadataRecord::SetTopicConfig {
            name: "t".into(),
            key: "retention.ms".into(),
            value: Some("1".repeat(70_000)),
        };
        let err = long.encode().unwrap_err();
        assert_eq!((err.what, err.len), ("configuration value", 70_000));
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
