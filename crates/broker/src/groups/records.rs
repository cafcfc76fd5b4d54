//! The records of `__consumer_offsets`, in Kafka's key and value schemas, so that Kafka's own
//! tools can read the topic:
//!
//! ```text
//! offset commit key   (version 1): group string, topic string, partition int32
//! offset commit value (version 3): offset int64, leader_epoch int32, metadata string,
//!                                  commit_timestamp int64
//! group metadata key  (version 2): group string
//! group metadata value(version 3): protocol_type string, generation int32,
//!                                  protocol nullable string, leader nullable string,
//!                                  current_state_timestamp int64,
//!                                  members [member_id string, group_instance_id nullable
//!                                  string, client_id string, client_host string,
//!                                  rebalance_timeout int32, session_timeout int32,
//!                                  subscription bytes, assignment bytes]
//! ```
//! Every key and value starts with its int16 version; strings are int16-length-prefixed
//! (-1 for null), bytes int32-length-prefixed. A record with a null value is a tombstone.

use bytes::{BufMut, Bytes, BytesMut};

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nullable(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

impl RecordKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        match self {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut out, group);
                put_string(&mut out, topic);
                out.put_i32(*partition);
            }
            RecordKey::Group { group } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
        }
        out.to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let key = match r.i16()? {
            0 | 1 => RecordKey::Offset {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            },
            2 => RecordKey::Group { group: r.string()? },
            v => return Err(format!("unknown key version {v}")),
        };
        r.finish()?;
        Ok(key)
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i16(OFFSET_VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_string(&mut out, &self.metadata);
        out.put_i64(self.commit_timestamp);
        out.to_vec()
    }

    /// Reads versions 0-3 (Kafka wrote each at some point).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(format!("unknown offset value version {version}"));
        }
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp = r.i64()?;
        if version == 1 {
            r.i64()?; // expire timestamp, no longer used
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_nullable(&mut out, self.protocol.as_deref());
        put_nullable(&mut out, self.leader.as_deref());
        out.put_i64(self.state_timestamp);
        out.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut out, &m.member_id);
            put_nullable(&mut out, m.group_instance_id.as_deref());
            put_string(&mut out, &m.client_id);
            put_string(&mut out, &m.client_host);
            out.put_i32(m.rebalance_timeout_ms);
            out.put_i32(m.session_timeout_ms);
            put_bytes(&mut out, &m.subscription);
            put_bytes(&mut out, &m.assignment);
        }
        out.to_vec()
    }

    /// Reads versions 0-3.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(format!("unknown group value version {version}"));
        }
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable()?;
        let leader = r.nullable()?;
        let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
        let count = r.i32()?;
        let mut members = Vec::new();
        for _ in 0..count.max(0) {
            let member_id = r.string()?;
            let group_instance_id = if version >= 3 { r.nullable()? } else { None };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
            let session_timeout_ms = r.i32()?;
            let subscription = r.bytes()?;
            let assignment = r.bytes()?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("record truncated")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn nullable(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        String::from_utf8(self.take(len as usize)?.to_vec())
            .map(Some)
            .map_err(|_| "string is not UTF-8".into())
    }

    fn string(&mut self) -> Result<String, String> {
        self.nullable()?
            .ok_or_else(|| "null where a string is required".to_string())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }

    fn finish(&self) -> Result<(), String> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err("trailing bytes".into())
        }
    }
}

/// Kafka's partition of `__consumer_offsets` for a group: `abs(javaHashCode(group)) % n`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_roundtrip() {
        for key in [
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
            },
            RecordKey::Group { group: "g".into() },
        ] {
            assert_eq!(RecordKey::decode(&key.encode()).unwrap(), key);
        }
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp: 99,
        };
        assert_eq!(OffsetValue::decode(&offset.encode()).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 1,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        assert_eq!(GroupValue::decode(&group.encode()).unwrap(), group);
        assert!(RecordKey::decode(&[0, 9]).is_err());
        assert!(OffsetValue::decode(&[0, 3, 1]).is_err());
    }

    #[test]
    fn partitioning_matches_java_string_hash_code() {
        // Computed with the JDK: "my-group".hashCode() == -1906497762,
        // "ünïcode-grøup".hashCode() == -1604506395.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("ünïcode-grøup", 50), 45);
        assert_eq!(partition_for("", 50), 0);
    }
}
