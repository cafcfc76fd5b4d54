//! Idempotent producers over the raw protocol: InitProducerId at every advertised version,
//! ids never reused across restarts (clean or not), and the Produce answers for retried
//! batches, gaps, old epochs and producers the partition has no state for.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{RawClient, start_broker};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn init_producer_id(
    c: &mut RawClient,
    version: i16,
    transactional_id: Option<&str>,
) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|id| TransactionalId(s(id))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    c.call(ApiKey::InitProducerId, version, &request)
}

fn batch(producer_id: i64, epoch: i16, sequence: i32, records: u8) -> Vec<u8> {
    // Old timestamps (a backfill) must not expire the producer's state: expiry runs on the
    // broker's clock.
    let mut builder = BatchBuilder::new(Compression::Lz4).producer(producer_id, epoch, sequence);
    for i in 0..records {
        builder.push(OwnedRecord::new(None, Some(vec![i; 64]), 1_600_000_000_000));
    }
    builder.build().unwrap()
}

/// Produces one record set to `t-0` with acks=all; returns (error code, base offset).
fn produce(c: &mut RawClient, records: Vec<u8>) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// Every batch in `t-0`: (base offset, producer id, base sequence).
fn batches_in_log(c: &mut RawClient) -> Vec<(i64, i64, i32)> {
    let mut batches = Vec::new();
    let mut next = 0;
    loop {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(16 << 20)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(next)
                            .with_partition_max_bytes(16 << 20),
                    ]),
            ]);
        let response: FetchResponse = c.call(ApiKey::Fetch, 12, &request);
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        // A fetch stops at the end of a segment: go on until the high watermark.
        if next >= partition.high_watermark {
            return batches;
        }
        let records = partition.records.clone().unwrap_or_default();
        for batch in Batches::new(&records) {
            let header = batch.expect("valid batch").header();
            batches.push((
                header.base_offset(),
                header.producer_id(),
                header.base_sequence(),
            ));
            next = header.last_offset() + 1;
        }
    }
}

fn create_topic(c: &mut RawClient) {
    let request = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0);
}

async fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_unique_at_every_version_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for restart in 0..3 {
        let broker = start_broker(dir.path(), &[]).await;
        let addr: SocketAddr = broker.local_addr;
        let ids = on_thread(move || {
            let mut c = RawClient::connect(addr);
            let (_, min, max) = sluice_broker::advertised_apis()
                .find(|(k, _, _)| *k == ApiKey::InitProducerId)
                .expect("advertised");
            let mut ids = Vec::new();
            for version in min..=max {
                let response = init_producer_id(&mut c, version, None);
                assert_eq!(response.error_code, 0, "v{version}");
                assert_eq!(response.producer_epoch, 0, "v{version}");
                ids.push(response.producer_id.0);
            }
            // Transactions are not supported: a transactional id gets a clear refusal.
            let refused = init_producer_id(&mut c, max, Some("tx"));
            assert_eq!(refused.error_code, ResponseError::InvalidRequest.code());
            assert_eq!(refused.producer_id.0, -1);
            ids
        })
        .await;
        for id in ids {
            assert!(id >= 0);
            assert!(
                seen.insert(id),
                "producer id {id} handed out twice (run {restart})"
            );
        }
        // One clean shutdown and one crash: neither may lead to an id being reused.
        if restart == 0 {
            broker.shutdown().await.unwrap();
        } else {
            broker.abort().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_answered_with_their_original_offsets_and_gaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    let producer_id = on_thread(move || {
        let mut c = RawClient::connect(addr);
        create_topic(&mut c);
        let id = init_producer_id(&mut c, 4, None).producer_id.0;
        assert_eq!(produce(&mut c, batch(id, 0, 0, 10)), (0, 0));
        assert_eq!(produce(&mut c, batch(id, 0, 10, 5)), (0, 10));
        // The client lost both answers and sends both batches again, on a new connection.
        let mut c = RawClient::connect(addr);
        assert_eq!(
            produce(&mut c, batch(id, 0, 0, 10)),
            (0, 0),
            "duplicate gets the original offset"
        );
        assert_eq!(produce(&mut c, batch(id, 0, 10, 5)), (0, 10));
        // A gap in the sequence is refused and writes nothing.
        let (code, offset) = produce(&mut c, batch(id, 0, 20, 1));
        assert_eq!(
            (code, offset),
            (ResponseError::OutOfOrderSequenceNumber.code(), -1)
        );
        // An epoch bump starts again at sequence 0; the old epoch is then fenced.
        assert_eq!(produce(&mut c, batch(id, 1, 0, 1)), (0, 15));
        let (code, _) = produce(&mut c, batch(id, 0, 15, 1));
        assert_eq!(code, ResponseError::InvalidProducerEpoch.code());
        // A new epoch that does not start at 0 is out of order.
        let (code, _) = produce(&mut c, batch(id, 2, 5, 1));
        assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
        // A producer this partition has no state for (expired, or its batches deleted) may
        // start mid-stream, as in Kafka since 2.5; from then on it is checked.
        assert_eq!(produce(&mut c, batch(id + 1, 0, 42, 1)), (0, 16));
        let (code, _) = produce(&mut c, batch(id + 1, 0, 44, 1));
        assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
        assert_eq!(
            batches_in_log(&mut c),
            vec![(0, id, 0), (10, id, 10), (15, id, 0), (16, id + 1, 42)],
            "each batch once"
        );
        id
    })
    .await;
    // Producer state survives a crash: the retry after restart is still recognised.
    broker.abort().await;
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    on_thread(move || {
        let mut c = RawClient::connect(addr);
        assert_eq!(
            produce(&mut c, batch(producer_id, 1, 0, 1)),
            (0, 15),
            "retry after restart"
        );
        assert_eq!(produce(&mut c, batch(producer_id, 1, 1, 1)), (0, 17));
        assert_eq!(produce(&mut c, batch(producer_id + 1, 0, 42, 1)), (0, 16));
        let all = batches_in_log(&mut c);
        assert_eq!(all.len(), 5, "{all:?}");
    })
    .await;
    broker.shutdown().await.unwrap();
}
