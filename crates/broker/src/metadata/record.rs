//! Metadata records and their encoding (the value of each record of the metadata log): a
//! format version byte (0), a type byte, then the fields: strings as u16 length + UTF-8,
//! UUIDs as 16 bytes, counts as i32 / u16. Every field is checked against its length prefix
//! when encoded; decoding refuses anything malformed or trailing.

use std::collections::BTreeMap;

use uuid::Uuid;

const FORMAT_VERSION: u8 = 0;

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
    /// A partition's replicas, in-sync replicas and leader as the controller (or, for the
    /// ISR, the partition's leader) decided them. Every decision carries a partition epoch
    /// newer than the partition's, and a leader change a newer leader epoch, so a decision
    /// made on a stale image does not apply. Written as type 10; type 6 (written before the
    /// ISR was kept) reads back with the ISR equal to the replicas.
    PartitionChange {
        topic: String,
        partition: i32,
        replicas: Vec<i32>,
        /// The replicas holding everything up to the high watermark (always including the
        /// leader; when the partition has no leader, the last replica that was in sync).
        isr: Vec<i32>,
        /// -1: no leader (the partition is offline).
        leader: i32,
        leader_epoch: i32,
        /// Bumped by every change of the partition (leader or ISR).
        partition_epoch: i32,
        /// A reassignment in progress (KIP-455's shape): replicas being added (catching up,
        /// not yet in sync) and replicas to remove once every target replica is in sync.
        /// Both empty when none is; the target is `replicas` without `removing`.
        adding: Vec<i32>,
        removing: Vec<i32>,
    },
    /// A broker started (`incarnation` is new at every start) and serves clients at
    /// `host:port`; it is live (unfenced) until fenced.
    RegisterBroker {
        id: i32,
        incarnation: Uuid,
        host: String,
        port: u16,
    },
    /// The broker's incarnation stopped heartbeating or is shutting down: it leads nothing
    /// until it registers again.
    FenceBroker {
        id: i32,
        incarnation: Uuid,
    },
    /// The cluster's id, decided once by the first active controller.
    ClusterId {
        id: String,
    },
}

/// A record that cannot be written: a field longer than its length prefix can say. Checked
/// before anything is written, so an oversize value is refused instead of being written in a
/// form that replay would not read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} of {len} bytes does not fit a metadata record (at most {max})")]
pub struct EncodeError {
    pub what: &'static str,
    pub len: usize,
    pub max: usize,
}

fn put_ids(out: &mut Vec<u8>, what: &'static str, ids: &[i32]) -> Result<(), EncodeError> {
    let count = u16::try_from(ids.len()).map_err(|_| EncodeError {
        what,
        len: ids.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&count.to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, what: &'static str, s: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError {
        what,
        len: s.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

impl MetadataRecord {
    /// The record's bytes; fails, writing nothing, if a field does not fit its length prefix.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = vec![FORMAT_VERSION];
        match self {
            MetadataRecord::CreateTopic {
                name,
                id,
                partitions,
                configs,
            } => {
                out.push(1);
                put_str(&mut out, "topic name", name)?;
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&partitions.to_be_bytes());
                let count = u16::try_from(configs.len()).map_err(|_| EncodeError {
                    what: "configuration count",
                    len: configs.len(),
                    max: usize::from(u16::MAX),
                })?;
                out.extend_from_slice(&count.to_be_bytes());
                for (key, value) in configs {
                    put_str(&mut out, "configuration key", key)?;
                    put_str(&mut out, "configuration value", value)?;
                }
            }
            MetadataRecord::SetPartitionCount { name, partitions } => {
                out.push(2);
                put_str(&mut out, "topic name", name)?;
                out.extend_from_slice(&partitions.to_be_bytes());
            }
            MetadataRecord::SetTopicConfig { name, key, value } => {
                out.push(3);
                put_str(&mut out, "topic name", name)?;
                put_str(&mut out, "configuration key", key)?;
                match value {
                    Some(value) => {
                        out.push(1);
                        put_str(&mut out, "configuration value", value)?;
                    }
                    None => out.push(0),
                }
            }
            MetadataRecord::DeleteTopic { name } => {
                out.push(4);
                put_str(&mut out, "topic name", name)?;
            }
            MetadataRecord::ProducerIdBlock { end } => {
                out.push(5);
                out.extend_from_slice(&end.to_be_bytes());
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
                out.push(10);
                put_str(&mut out, "topic name", topic)?;
                out.extend_from_slice(&partition.to_be_bytes());
                put_ids(&mut out, "replica count", replicas)?;
                put_ids(&mut out, "in-sync replica count", isr)?;
                out.extend_from_slice(&leader.to_be_bytes());
                out.extend_from_slice(&leader_epoch.to_be_bytes());
                out.extend_from_slice(&partition_epoch.to_be_bytes());
                put_ids(&mut out, "adding replica count", adding)?;
                put_ids(&mut out, "removing replica count", removing)?;
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                host,
                port,
            } => {
                out.push(7);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(incarnation.as_bytes());
                put_str(&mut out, "broker host", host)?;
                out.extend_from_slice(&port.to_be_bytes());
            }
            MetadataRecord::FenceBroker { id, incarnation } => {
                out.push(8);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(incarnation.as_bytes());
            }
            MetadataRecord::ClusterId { id } => {
                out.push(9);
                put_str(&mut out, "cluster id", id)?;
            }
        }
        Ok(out)
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
                let id = r.uuid()?;
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
            6 => {
                // Before the ISR was kept: every replica counted as in sync, and every
                // change was a leader change.
                let topic = r.string()?;
                let partition = r.i32()?;
                let replicas = r.ids()?;
                let leader = r.i32()?;
                let leader_epoch = r.i32()?;
                MetadataRecord::PartitionChange {
                    topic,
                    partition,
                    isr: replicas.clone(),
                    replicas,
                    leader,
                    leader_epoch,
                    partition_epoch: leader_epoch,
                    adding: Vec::new(),
                    removing: Vec::new(),
                }
            }
            10 => MetadataRecord::PartitionChange {
                topic: r.string()?,
                partition: r.i32()?,
                replicas: r.ids()?,
                isr: r.ids()?,
                leader: r.i32()?,
                leader_epoch: r.i32()?,
                partition_epoch: r.i32()?,
                adding: r.ids()?,
                removing: r.ids()?,
            },
            7 => MetadataRecord::RegisterBroker {
                id: r.i32()?,
                incarnation: r.uuid()?,
                host: r.string()?,
                port: r.u16()?,
            },
            8 => MetadataRecord::FenceBroker {
                id: r.i32()?,
                incarnation: r.uuid()?,
            },
            9 => MetadataRecord::ClusterId { id: r.string()? },
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
    fn uuid(&mut self) -> Result<Uuid, String> {
        Ok(Uuid::from_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    /// Broker ids: a u16 count, then each as i32.
    fn ids(&mut self) -> Result<Vec<i32>, String> {
        let count = self.u16()?;
        (0..count).map(|_| self.i32()).collect()
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| "metadata string is not UTF-8".to_string())
    }
}
