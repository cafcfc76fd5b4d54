//! The broker's limits on what clients may hold, with Kafka's property names: connections
//! (`max.connections`, `max.connections.per.ip`), idle connections
//! (`connections.max.idle.ms`), requests queued on a connection (`queued.max.requests`) and
//! the bytes of one fetch (`fetch.max.bytes`). Connections over a limit are closed, counted,
//! and the connections within keep being served.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{RawClient, start_broker};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

fn api_versions(c: &mut RawClient) -> bool {
    c.call_raw(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .is_some()
}

/// Whether the broker closed this connection (reads EOF within `within`).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

fn counter(broker: &sluice_broker::BrokerHandle, name: &str) -> u64 {
    let text = sluice_broker::admin_http::render_metrics(&broker.broker);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limits_are_closed_and_the_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("max.connections", "3")]).await;
    let addr = broker.local_addr;
    let mut kept = tokio::task::spawn_blocking(move || {
        let mut clients: Vec<RawClient> = (0..3).map(|_| RawClient::connect(addr)).collect();
        for c in &mut clients {
            assert!(api_versions(c), "within the limit");
        }
        let mut extra = TcpStream::connect(addr).unwrap();
        assert!(
            closed_within(&mut extra, Duration::from_secs(30)),
            "a fourth connection is closed"
        );
        for c in &mut clients {
            assert!(api_versions(c), "the three keep being served");
        }
        clients
    })
    .await
    .unwrap();
    assert!(counter(&broker, "sluice_connections_refused_total") >= 1);
    // A slot that frees up can be taken again.
    kept.pop();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = RawClient::connect(addr);
            if api_versions(&mut c) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the freed slot was never given out"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(kept);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();

    let broker = start_broker(dir.path(), &[("max.connections.per.ip", "2")]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut a = RawClient::connect(addr);
        let mut b = RawClient::connect(addr);
        assert!(api_versions(&mut a) && api_versions(&mut b));
        let mut third = TcpStream::connect(addr).unwrap();
        assert!(closed_within(&mut third, Duration::from_secs(30)));
        assert!(api_versions(&mut a) && api_versions(&mut b));
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_busy_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("connections.max.idle.ms", "3000")]).await;
    let addr: SocketAddr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut idle = RawClient::connect(addr);
        assert!(api_versions(&mut idle));
        let mut busy = RawClient::connect(addr);
        // The busy client talks every 100 ms for 4 s: never idle for 3 s.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            assert!(api_versions(&mut busy), "a busy connection was closed");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            closed_within(idle.stream(), Duration::from_secs(30)),
            "the idle connection is closed"
        );
        // A client that announces a 100-byte request, sends 10 bytes and stalls is idle too.
        let mut stalled = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut stalled, &100i32.to_be_bytes()).unwrap();
        std::io::Write::write_all(&mut stalled, &[0u8; 10]).unwrap();
        assert!(
            closed_within(&mut stalled, Duration::from_secs(30)),
            "a stalled request does not hold its connection forever"
        );
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

fn produce(c: &mut RawClient, partition: i32, bytes: usize) {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(OwnedRecord::new(None, Some(vec![b'x'; bytes]), 1));
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(builder.build().unwrap()))),
                ]),
        ]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_stays_within_the_brokers_fetch_max_bytes_and_queues_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &[
            ("fetch.max.bytes", "10000"),
            ("num.partitions", "5"),
            ("queued.max.requests", "1"),
        ],
    )
    .await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        let _: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("t")))),
            ])),
        );
        for partition in 0..5 {
            produce(&mut c, partition, 3_000);
        }
        // The client asks for up to 1 MiB across five partitions of ~3 KB each.
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(
                        (0..5)
                            .map(|p| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(p)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    ),
            ]);
        let response: FetchResponse = c.call(ApiKey::Fetch, 11, &request);
        let carried: usize = response.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .sum();
        assert!(carried > 0, "the first partition's batch is returned");
        assert!(
            carried <= 10_000,
            "{carried} bytes for fetch.max.bytes=10000"
        );
        // The first partition alone may not take more either: five batches of ~3 KB in
        // partition 0, asked for with a 1 MiB partition limit.
        for _ in 0..4 {
            produce(&mut c, 0, 3_000);
        }
        let one = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response: FetchResponse = c.call(ApiKey::Fetch, 11, &one);
        let carried = response.responses[0].partitions[0]
            .records
            .as_ref()
            .map_or(0, Bytes::len);
        assert!(
            (3_000..=10_000).contains(&carried),
            "{carried} bytes from one partition for fetch.max.bytes=10000"
        );

        // With queued.max.requests=1, twenty requests pipelined in one write are still all
        // answered, in order: the reader waits for room instead of queueing without bound.
        let mut frames = Vec::new();
        for correlation in 1..=20i32 {
            let mut frame = vec![0, 18, 0, 0]; // ApiVersions v0
            frame.extend_from_slice(&correlation.to_be_bytes());
            frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
            frames.extend_from_slice(&(frame.len() as i32).to_be_bytes());
            frames.extend_from_slice(&frame);
        }
        std::io::Write::write_all(c.stream(), &frames).unwrap();
        for correlation in 1..=20i32 {
            let frame = c.read_frame().expect("answered");
            assert_eq!(&frame[..4], &correlation.to_be_bytes(), "in request order");
        }
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

fn create_topic(c: &mut RawClient, topic: &str, partitions: i32) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let response: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &request);
    response.topics[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_beyond_the_brokers_cap_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("max.broker.partitions", "20")]).await;
    let addr = broker.local_addr;
    let data = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        assert_eq!(
            create_topic(&mut c, "huge", 100_000),
            44,
            "POLICY_VIOLATION"
        );
        assert!(
            !data.join("huge-0").exists(),
            "no partition directory was made"
        );
        assert_eq!(create_topic(&mut c, "fits", 15), 0);
        assert_eq!(create_topic(&mut c, "too-many", 6), 44, "15 + 6 > 20");
        let more = CreatePartitionsRequest::default()
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("fits")))
                    .with_count(30),
            ])
            .with_timeout_ms(10_000);
        let response: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &more);
        assert_eq!(response.results[0].error_code, 44);
        let metadata: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        let names: Vec<String> = metadata
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect();
        assert_eq!(names, ["fits"], "only the topic within the cap exists");
        assert_eq!(metadata.topics[0].partitions.len(), 15);
        // Any client can create topics through Metadata (auto.create.topics.enable, one
        // partition each): they count against the same cap.
        let auto_create = |c: &mut RawClient, topic: &str| -> i16 {
            let request = MetadataRequest::default()
                .with_allow_auto_topic_creation(true)
                .with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(topic.into())))),
                ]));
            let response: MetadataResponse = c.call(ApiKey::Metadata, 12, &request);
            response.topics[0].error_code
        };
        for i in 0..5 {
            assert_eq!(auto_create(&mut c, &format!("auto-{i}")), 0);
        }
        assert_eq!(auto_create(&mut c, "auto-5"), 44, "20 partitions exist");
        assert!(!data.join("auto-5-0").exists());
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
