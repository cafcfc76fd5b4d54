//! Fetch responses (v4-v18) encoded by hand, so that each partition's record data is a
//! [`Chunk::File`] that goes from the page cache to the socket without being copied.
//!
//! Layout (v12 is the first flexible version: compact arrays and strings, tagged fields;
//! v13 names topics by ID; v14-v18 change only the request and tagged fields, of which this
//! encoder writes only a partition's DivergingEpoch, tag 0):
//! ```text
//! throttle_time_ms i32, error_code i16 (v7+), session_id i32 (v7+),
//! responses [ topic string (v4-v12) | topic_id uuid (v13+),
//!   partitions [ partition_index i32, error_code i16, high_watermark i64,
//!     last_stable_offset i64, log_start_offset i64 (v5+),
//!     aborted_transactions nullable [producer_id i64, first_offset i64],
//!     preferred_read_replica i32 (v11+), records nullable bytes ] ]
//! ```

use crate::response::{Chunk, FileChunk, Response, put_header};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

/// Record data of one partition in a fetch response.
#[derive(Debug, Clone)]
pub enum RecordData {
    /// No data: encoded as an empty record set.
    None,
    Bytes(Bytes),
    File(FileChunk),
}

impl RecordData {
    /// Bytes of record data.
    pub fn len(&self) -> usize {
        match self {
            RecordData::None => 0,
            RecordData::Bytes(bytes) => bytes.len(),
            RecordData::File(region) => region.len() as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `None` encodes a null list (read_uncommitted); `Some` a list of
    /// `(producer_id, first_offset)`.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    pub records: RecordData,
    /// v12+ (tagged field 0): the epoch and end offset where the fetcher's log diverged
    /// from this one, given its last fetched epoch.
    pub diverging_epoch: Option<(i32, i64)>,
}

#[derive(Debug, Clone)]
pub struct FetchedTopic {
    /// Written up to v12.
    pub name: String,
    /// Written from v13.
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<FetchedPartition>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchResponseData {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<FetchedTopic>,
}

/// Lowest and highest Fetch versions this encoder writes.
pub const MIN_VERSION: i16 = 4;
pub const MAX_VERSION: i16 = 18;

struct Writer {
    flexible: bool,
    buf: BytesMut,
    chunks: Vec<Chunk>,
}

impl Writer {
    fn varint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.buf.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.put_u8(value as u8);
    }

    fn array_len(&mut self, len: usize) {
        if self.flexible {
            self.varint(len as u32 + 1);
        } else {
            self.buf.put_i32(len as i32);
        }
    }

    fn null_array(&mut self) {
        if self.flexible {
            self.varint(0);
        } else {
            self.buf.put_i32(-1);
        }
    }

    fn string(&mut self, value: &str) {
        if self.flexible {
            self.varint(value.len() as u32 + 1);
        } else {
            self.buf.put_i16(value.len() as i16);
        }
        self.buf.put_slice(value.as_bytes());
    }

    fn no_tagged_fields(&mut self) {
        if self.flexible {
            self.varint(0);
        }
    }

    /// Record data is never null: Kafka sends an empty set for a partition without data, and
    /// librdkafka 2.0 (Debian's kcat) rejects a null one.
    fn records(&mut self, records: &RecordData) {
        match records {
            RecordData::None => {
                if self.flexible {
                    self.varint(1);
                } else {
                    self.buf.put_i32(0);
                }
            }
            other => {
                let len = other.len();
                if self.flexible {
                    self.varint(len as u32 + 1);
                } else {
                    self.buf.put_i32(len as i32);
                }
                let pending = self.buf.split().freeze();
                self.chunks.push(Chunk::Bytes(pending));
                self.chunks.push(match other {
                    RecordData::Bytes(bytes) => Chunk::Bytes(bytes.clone()),
                    RecordData::File(region) => Chunk::File(region.clone()),
                    RecordData::None => unreachable!("handled above"),
                });
            }
        }
    }
}

/// Encodes a complete Fetch response frame. `version` must be in
/// [`MIN_VERSION`]..=[`MAX_VERSION`] (the broker only advertises that range).
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    data: &FetchResponseData,
) -> Response {
    assert!(
        (MIN_VERSION..=MAX_VERSION).contains(&version),
        "Fetch v{version} not encodable"
    );
    let mut w = Writer {
        flexible: version >= 12,
        buf: BytesMut::with_capacity(256),
        chunks: Vec::new(),
    };
    w.buf.put_i32(0); // frame size, patched below
    put_header(&mut w.buf, ApiKey::Fetch, version, correlation_id);
    w.buf.put_i32(data.throttle_time_ms);
    if version >= 7 {
        w.buf.put_i16(data.error_code);
        w.buf.put_i32(data.session_id);
    }
    w.array_len(data.topics.len());
    for topic in &data.topics {
        if version >= 13 {
            w.buf.put_slice(topic.topic_id.as_bytes());
        } else {
            w.string(&topic.name);
        }
        w.array_len(topic.partitions.len());
        for p in &topic.partitions {
            w.buf.put_i32(p.partition);
            w.buf.put_i16(p.error_code);
            w.buf.put_i64(p.high_watermark);
            w.buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                w.buf.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None => w.null_array(),
                Some(list) => {
                    w.array_len(list.len());
                    for (producer_id, first_offset) in list {
                        w.buf.put_i64(*producer_id);
                        w.buf.put_i64(*first_offset);
                        w.no_tagged_fields();
                    }
                }
            }
            if version >= 11 {
                w.buf.put_i32(-1); // preferred_read_replica: none
            }
            w.records(&p.records);
            match p.diverging_epoch {
                Some((epoch, end_offset)) if w.flexible => {
                    // One tagged field: tag 0, then the EpochEndOffset struct's size and
                    // bytes (epoch, end offset, its own empty tagged fields).
                    w.varint(1);
                    w.varint(0);
                    w.varint(4 + 8 + 1);
                    w.buf.put_i32(epoch);
                    w.buf.put_i64(end_offset);
                    w.varint(0);
                }
                _ => w.no_tagged_fields(),
            }
        }
        w.no_tagged_fields();
    }
    w.no_tagged_fields();
    let tail = w.buf.split().freeze();
    w.chunks.push(Chunk::Bytes(tail));
    let total: usize = w.chunks.iter().map(Chunk::len).sum();
    let Chunk::Bytes(first) = &mut w.chunks[0] else {
        unreachable!("first chunk is bytes")
    };
    let mut head = BytesMut::from(&first[..]);
    head[..4].copy_from_slice(&((total - 4) as i32).to_be_bytes());
    *first = head.freeze();
    Response { chunks: w.chunks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    fn sample(records: RecordData) -> FetchResponseData {
        FetchResponseData {
            throttle_time_ms: 5,
            error_code: 0,
            session_id: 0,
            topics: vec![FetchedTopic {
                name: "orders".into(),
                topic_id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
                partitions: vec![
                    FetchedPartition {
                        partition: 3,
                        error_code: 0,
                        high_watermark: 100,
                        last_stable_offset: 100,
                        log_start_offset: 7,
                        aborted_transactions: None,
                        records,
                        diverging_epoch: None,
                    },
                    FetchedPartition {
                        partition: 4,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted_transactions: Some(vec![]),
                        records: RecordData::None,
                        diverging_epoch: Some((4, 1_234)),
                    },
                ],
            }],
        }
    }

    #[test]
    fn every_version_decodes_with_the_reference_codec() {
        let payload = Bytes::from_static(b"not really batches, but opaque bytes");
        for version in MIN_VERSION..=MAX_VERSION {
            let response =
                encode_fetch_response(version, 9, &sample(RecordData::Bytes(payload.clone())));
            let bytes = response.to_vec().unwrap();
            let size = i32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(size, bytes.len() - 4, "v{version}");
            let mut body = Bytes::from(bytes[4..].to_vec());
            let header =
                ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, 9);
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: trailing bytes");
            assert_eq!(decoded.throttle_time_ms, 5);
            let topic = &decoded.responses[0];
            if version >= 13 {
                assert_eq!(
                    topic.topic_id,
                    uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788)
                );
            } else {
                assert_eq!(&*topic.topic.0, "orders", "v{version}");
            }
            let p = &topic.partitions[0];
            assert_eq!(
                (p.partition_index, p.high_watermark, p.last_stable_offset),
                (3, 100, 100)
            );
            if version >= 5 {
                assert_eq!(p.log_start_offset, 7);
            }
            assert_eq!(p.records.as_ref().unwrap(), &payload, "v{version}");
            assert!(p.aborted_transactions.is_none());
            let q = &topic.partitions[1];
            assert_eq!(q.error_code, 1);
            assert_eq!(
                q.records.as_ref().map(Bytes::len),
                Some(0),
                "v{version}: empty, not null"
            );
            assert_eq!(q.aborted_transactions.as_ref().map(Vec::len), Some(0));
            let diverging = (q.diverging_epoch.epoch, q.diverging_epoch.end_offset);
            if version >= 12 {
                assert_eq!(diverging, (4, 1_234), "v{version}: tagged field 0");
                assert_eq!(
                    p.diverging_epoch.epoch, -1,
                    "v{version}: absent is the default"
                );
            } else {
                assert_eq!(diverging, (-1, -1), "v{version}: no such field");
            }
        }
    }

    #[test]
    fn file_regions_stay_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
        let region = FileChunk::new(file, 2, 5);
        let response = encode_fetch_response(12, 1, &sample(RecordData::File(region)));
        assert!(
            response
                .chunks
                .iter()
                .any(|c| matches!(c, Chunk::File(r) if r.len() == 5))
        );
        let bytes = response.to_vec().unwrap();
        assert!(bytes.windows(5).any(|w| w == b"23456"));
    }
}
