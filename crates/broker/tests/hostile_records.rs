//! Record batches that pass their header and CRC checks but lie about their records are
//! refused before anything is written, as Kafka's log validator refuses them, with the
//! record at fault named (KIP-467). Meanwhile an honest producer keeps being served, and
//! after a restart the log holds exactly what was acknowledged.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use common::{RawClient, start_broker};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_record::{BatchBuilder, Compression, OwnedRecord, offsets, set_base_sequence};

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn create_topic(c: &mut RawClient, topic: &str, configs: &[(&str, &str)]) {
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
    let response: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(10_000),
    );
    assert_eq!(response.topics[0].error_code, 0);
}

fn produce(
    c: &mut RawClient,
    topic: &str,
    records: Vec<u8>,
) -> produce_response::PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].clone()
}

fn batch(records: &[(Option<&str>, i64)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for (key, timestamp) in records {
        builder.push(OwnedRecord::new(
            key.map(|k| k.as_bytes().to_vec()),
            Some(b"value".to_vec()),
            *timestamp,
        ));
    }
    builder.build().unwrap()
}

/// Rewrites header fields the way a hostile client would, and gives the batch a valid CRC.
fn tamper(mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut bytes);
    set_base_sequence(&mut bytes, -1); // recomputes the CRC
    bytes
}

fn put_i32(bytes: &mut [u8], at: usize, value: i32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn log_end(c: &mut RawClient, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &request);
    response.topics[0].partitions[0].offset
}

/// An honest producer on its own connection: one record per request until told to stop;
/// returns how many it had acknowledged.
fn honest_producer(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut c = RawClient::connect(addr);
        let mut acknowledged = 0;
        while !stop.load(Ordering::SeqCst) || acknowledged < 20 {
            let response = produce(&mut c, "honest", batch(&[(Some("k"), now_ms())]));
            assert_eq!(response.error_code, 0, "the honest producer was refused");
            assert_eq!(response.base_offset, acknowledged, "offsets stay dense");
            acknowledged += 1;
        }
        acknowledged
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_batches_are_refused_record_by_record_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    let acknowledged = tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        create_topic(&mut c, "honest", &[]);
        create_topic(&mut c, "target", &[]);
        create_topic(&mut c, "compacted", &[("cleanup.policy", "compact")]);
        let stop = Arc::new(AtomicBool::new(false));
        let honest = honest_producer(addr, stop.clone());
        let now = now_ms();

        // 70 bytes claiming 2^31 - 1 records: would take 2^31 offsets.
        let inflated = tamper(batch(&[(Some("k"), now)]), |b| {
            put_i32(b, offsets::RECORD_COUNT, i32::MAX);
            put_i32(b, offsets::LAST_OFFSET_DELTA, i32::MAX - 1);
        });
        // Three records declared (and offsets for three), two present.
        let short = tamper(batch(&[(Some("a"), now), (Some("b"), now)]), |b| {
            put_i32(b, offsets::RECORD_COUNT, 3);
            put_i32(b, offsets::LAST_OFFSET_DELTA, 2);
        });
        // The second record's offset delta is 2, not 1: a gap inside the batch.
        let gap = tamper(batch(&[(Some("a"), now), (Some("b"), now)]), |b| {
            let first = usize::from(b[offsets::RECORDS]) / 2 + 1; // varint length + record
            let second_delta = offsets::RECORDS + first + 1 + 1 + 1;
            assert_eq!(b[second_delta], 2, "zig-zag 1");
            b[second_delta] = 4; // zig-zag 2
        });
        let future = batch(&[(Some("a"), now), (Some("b"), now + 2 * 3_600_000)]);
        let keyless = batch(&[(Some("a"), now), (None, now)]);
        let cases: [(&str, Vec<u8>, i16, Option<i32>); 5] = [
            ("target", inflated, 87, None),  // INVALID_RECORD
            ("target", short, 87, None),     // INVALID_RECORD
            ("target", gap, 87, Some(1)),    // INVALID_RECORD, record 1
            ("target", future, 32, Some(1)), // INVALID_TIMESTAMP, record 1
            ("compacted", keyless, 87, Some(1)),
        ];
        for (i, (topic, records, code, record)) in cases.into_iter().enumerate() {
            let response = produce(&mut c, topic, records);
            assert_eq!(
                response.error_code, code,
                "case {i}: {:?}",
                response.error_message
            );
            let named: Vec<i32> = response
                .record_errors
                .iter()
                .map(|e| e.batch_index)
                .collect();
            assert_eq!(named, record.into_iter().collect::<Vec<_>>(), "case {i}");
            assert!(
                response.error_message.is_some(),
                "case {i}: a message says why"
            );
        }
        assert_eq!(
            log_end(&mut c, "target"),
            0,
            "nothing of the lying batches was written"
        );
        assert_eq!(log_end(&mut c, "compacted"), 0);
        // The same connection goes on: an honest batch lands at offset 0.
        let fine = produce(
            &mut c,
            "target",
            batch(&[(Some("a"), now), (Some("b"), now)]),
        );
        assert_eq!((fine.error_code, fine.base_offset), (0, 0));
        stop.store(true, Ordering::SeqCst);
        honest.join().unwrap()
    })
    .await
    .unwrap();

    broker.shutdown().await.unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        assert_eq!(
            log_end(&mut c, "honest"),
            acknowledged,
            "every acknowledged record kept"
        );
        assert_eq!(log_end(&mut c, "target"), 2);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
