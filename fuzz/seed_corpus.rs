//! Writes valid request frames to `corpus/request_decoder/` as starting points for the
//! fuzzer: `cargo run --bin seed_corpus` from `fuzz/`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

fn main() {
    let dir = std::path::Path::new("corpus/request_decoder");
    std::fs::create_dir_all(dir).unwrap();
    let topic = TopicName(StrBytes::from_static_str("t"));
    let mut seeds = vec![
        ("apiversions3", frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())),
        ("metadata1", frame(ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic.clone()))])))),
        ("metadata12", frame(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None))),
        ("fetch12", frame(ApiKey::Fetch, 12, &FetchRequest::default().with_topics(vec![FetchTopic::default().with_topic(topic.clone()).with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1000)])]))),
    ];
    for (codec, name) in [(Compression::None, "none"), (Compression::Gzip, "gzip"), (Compression::Snappy, "snappy"), (Compression::Lz4, "lz4"), (Compression::Zstd, "zstd")] {
        let mut builder = BatchBuilder::new(codec);
        for i in 0..3u8 {
            builder.push(OwnedRecord::new(Some(vec![i]), Some(vec![i; 20]), 1_700_000_000_000));
        }
        let records = Bytes::from(builder.build().unwrap());
        let request = ProduceRequest::default().with_acks(1).with_topic_data(vec![TopicProduceData::default()
            .with_name(topic.clone())
            .with_partition_data(vec![PartitionProduceData::default().with_records(Some(records))])]);
        seeds.push((name, frame(ApiKey::Produce, 9, &request)));
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
