//! The request path before any handler (header, version check, body decode, record batches)
//! on mutated valid frames: nothing panics or aborts. The same path is the cargo-fuzz target
//! `fuzz/fuzz_targets/request_decoder.rs`; this runs a short version in every test run.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use sluice_protocol::header::parse_request;
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord};

// What the `sluice` binary installs; it defuses codec capacity bombs.
use sluice_broker::{GuardedAllocator, servable};

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("p")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

fn seeds() -> Vec<Vec<u8>> {
    let topic = TopicName(StrBytes::from_static_str("t"));
    let mut builder = BatchBuilder::new(Compression::Lz4);
    builder.push(OwnedRecord::new(Some(vec![1]), Some(vec![2; 30]), 1));
    let records = Bytes::from(builder.build().unwrap());
    vec![
        frame(
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(None),
        ),
        frame(
            ApiKey::Metadata,
            1,
            &MetadataRequest::default().with_topics(Some(vec![])),
        ),
        frame(
            ApiKey::Produce,
            9,
            &ProduceRequest::default().with_acks(1).with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic)
                    .with_partition_data(vec![
                        PartitionProduceData::default().with_records(Some(records)),
                    ]),
            ]),
        ),
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
    ]
}

fn decode_like_the_broker(data: &[u8]) {
    let Ok(request) = parse_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    if !servable(request.api_key, request.api_version) {
        return;
    }
    let Ok(RequestKind::Produce(produce)) = request.decode_body() else {
        return;
    };
    for topic in &produce.topic_data {
        for partition in &topic.partition_data {
            for batch in Batches::new(partition.records.as_deref().unwrap_or_default()) {
                let Ok(batch) = batch else { break };
                if batch.validate().is_ok()
                    && let Ok(records) = batch.records(1 << 20)
                {
                    assert!(records.iter().count() <= records.len());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_frames_never_panic(
        seed in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = seeds()[seed].clone();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        decode_like_the_broker(&data);
        let end = cut.index(data.len() + 1);
        decode_like_the_broker(&data[..end]);
    }

    #[test]
    fn random_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        decode_like_the_broker(&data);
    }
}

#[test]
fn a_declared_two_billion_element_array_is_refused_without_aborting() {
    // Metadata v1: topics array length 0x7fffffff with no elements behind it.
    let mut data = frame(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let len = data.len();
    data[len - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
    let request = parse_request(Bytes::from(data)).unwrap();
    assert!(request.decode_body().is_err());
}
