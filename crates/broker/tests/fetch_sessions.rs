//! Fetch sessions (KIP-227) and topic IDs in Fetch (KIP-516) over raw protocol: a full fetch
//! opens a session, incremental fetches carry and return only what changed, forgotten
//! partitions leave, epochs are checked, rotation keeps a busy partition from starving the
//! others, a long poll wakes for a partition the request did not mention, and a topic named
//! by an unknown (or a deleted topic's) ID is UNKNOWN_TOPIC_ID.

mod common;

use bytes::Bytes;
use common::{RawClient, start_broker};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_record::{BatchBuilder, Compression, OwnedRecord};
use uuid::Uuid;

const FETCH_VERSION: i16 = 17;
const TOPIC: &str = "sessions";

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn create(c: &mut RawClient, topic: &str, partitions: i32) -> Uuid {
    let request = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0);
    response.topics[0].topic_id
}

fn topic_id(c: &mut RawClient, topic: &str) -> Uuid {
    let response: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ])),
    );
    response.topics[0].topic_id
}

/// One ~1 KB batch to `partition`; returns its offset.
fn produce(c: &mut RawClient, topic: &str, partition: i32) -> i64 {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(OwnedRecord::new(
        None,
        Some(vec![b'v'; 1000]),
        1_700_000_000_000,
    ));
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(builder.build().unwrap()))),
                ]),
        ]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

/// Runs `test` with a client of a fresh broker (and its address), then shuts the broker
/// down cleanly.
async fn with_broker(test: impl FnOnce(&mut RawClient, std::net::SocketAddr) + Send + 'static) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || test(&mut RawClient::connect(addr), addr))
        .await
        .unwrap();
    broker.shutdown().await.unwrap();
}

#[derive(Clone, Copy)]
struct FetchArgs<'a> {
    session_id: i32,
    epoch: i32,
    partitions: &'a [(Uuid, i32, i64)],
    forgotten: &'a [(Uuid, i32)],
    max_bytes: i32,
    max_wait_ms: i32,
}

impl Default for FetchArgs<'_> {
    fn default() -> Self {
        FetchArgs {
            session_id: 0,
            epoch: -1,
            partitions: &[],
            forgotten: &[],
            max_bytes: 1 << 20,
            max_wait_ms: 0,
        }
    }
}

fn fetch(c: &mut RawClient, args: FetchArgs<'_>) -> FetchResponse {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for &(id, partition, offset) in args.partitions {
        let wanted = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20);
        match topics.iter_mut().find(|t| t.topic_id == id) {
            Some(topic) => topic.partitions.push(wanted),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(id)
                    .with_partitions(vec![wanted]),
            ),
        }
    }
    let forgotten: Vec<ForgottenTopic> = args
        .forgotten
        .iter()
        .map(|&(id, partition)| {
            ForgottenTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![partition])
        })
        .collect();
    let request = FetchRequest::default()
        .with_max_wait_ms(args.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(args.max_bytes)
        .with_session_id(args.session_id)
        .with_session_epoch(args.epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    c.call(ApiKey::Fetch, FETCH_VERSION, &request)
}

/// (partition, error, high watermark, whether it carried records), in response order.
fn listed(response: &FetchResponse) -> Vec<(i32, i16, i64, bool)> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.error_code,
                p.high_watermark,
                p.records.as_ref().is_some_and(|r| !r.is_empty()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_fetches_carry_and_return_only_what_changed() {
    with_broker(|c, _| {
        let id = create(c, TOPIC, 3);
        produce(c, TOPIC, 0);

        // A full fetch with epoch 0 opens a session and lists every partition.
        let all = [(id, 0, 0), (id, 1, 0), (id, 2, 0)];
        let full = fetch(
            c,
            FetchArgs {
                epoch: 0,
                partitions: &all,
                ..FetchArgs::default()
            },
        );
        assert_eq!(full.error_code, 0);
        let session = full.session_id;
        assert_ne!(session, 0, "a session was opened");
        assert_eq!(full.responses[0].topic_id, id);
        assert_eq!(
            listed(&full),
            [(0, 0, 1, true), (1, 0, 0, false), (2, 0, 0, false)]
        );

        // Partition 0 moved on; nothing else changed: an empty response.
        let quiet = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 1,
                partitions: &[(id, 0, 1)],
                ..FetchArgs::default()
            },
        );
        assert_eq!((quiet.error_code, quiet.session_id), (0, session));
        assert_eq!(listed(&quiet), []);

        // New data in a partition the request does not mention: only it is returned.
        produce(c, TOPIC, 2);
        let news = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 2,
                ..FetchArgs::default()
            },
        );
        assert_eq!(listed(&news), [(2, 0, 1, true)]);

        // Wrong epochs and unknown sessions are refused; the session survives a wrong epoch.
        let stale = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 2,
                ..FetchArgs::default()
            },
        );
        assert_eq!(
            stale.error_code,
            ResponseError::InvalidFetchSessionEpoch.code()
        );
        let unknown = fetch(
            c,
            FetchArgs {
                session_id: session ^ 0x55,
                epoch: 1,
                ..FetchArgs::default()
            },
        );
        assert_eq!(
            unknown.error_code,
            ResponseError::FetchSessionIdNotFound.code()
        );

        // Forgotten partitions leave the session: new data there is no longer returned.
        let forget = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 3,
                partitions: &[(id, 2, 1)],
                forgotten: &[(id, 1)],
                ..FetchArgs::default()
            },
        );
        assert_eq!(forget.error_code, 0);
        produce(c, TOPIC, 1);
        let after = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 4,
                ..FetchArgs::default()
            },
        );
        assert_eq!(listed(&after), [], "partition 1 was forgotten");

        // Epoch -1 closes the session.
        let closing = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: -1,
                partitions: &all,
                ..FetchArgs::default()
            },
        );
        assert_eq!((closing.error_code, closing.session_id), (0, 0));
        assert_eq!(listed(&closing).len(), 3, "a full fetch lists everything");
        let gone = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 5,
                ..FetchArgs::default()
            },
        );
        assert_eq!(
            gone.error_code,
            ResponseError::FetchSessionIdNotFound.code()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_partition_does_not_starve_the_others_in_a_session() {
    with_broker(|c, _| {
        let id = create(c, TOPIC, 3);
        for partition in 0..3 {
            for _ in 0..3 {
                produce(c, TOPIC, partition);
            }
        }
        // A response budget of one byte: only its first batch (KIP-74). Each response must
        // serve the partition that waited longest.
        let mut offsets = [0i64; 3];
        let all: Vec<(Uuid, i32, i64)> = (0..3).map(|p| (id, p, 0)).collect();
        let first = fetch(
            c,
            FetchArgs {
                epoch: 0,
                partitions: &all,
                max_bytes: 1,
                ..FetchArgs::default()
            },
        );
        let session = first.session_id;
        let mut served = Vec::new();
        let mut response = first;
        for epoch in 1..=6 {
            let with_records: Vec<i32> = listed(&response)
                .iter()
                .filter(|(_, _, _, records)| *records)
                .map(|(p, _, _, _)| *p)
                .collect();
            assert_eq!(with_records.len(), 1, "one batch per response");
            let partition = with_records[0];
            served.push(partition);
            offsets[partition as usize] += 1;
            let moved = [(id, partition, offsets[partition as usize])];
            response = fetch(
                c,
                FetchArgs {
                    session_id: session,
                    epoch,
                    partitions: &moved,
                    max_bytes: 1,
                    ..FetchArgs::default()
                },
            );
            assert_eq!(response.error_code, 0);
        }
        assert_eq!(
            served,
            [0, 1, 2, 0, 1, 2],
            "round robin over the partitions"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_in_a_session_wakes_for_any_of_its_partitions() {
    with_broker(|c, addr| {
        let id = create(c, TOPIC, 2);
        let all = [(id, 0, 0), (id, 1, 0)];
        let full = fetch(
            c,
            FetchArgs {
                epoch: 0,
                partitions: &all,
                ..FetchArgs::default()
            },
        );
        let session = full.session_id;
        let producer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut p = RawClient::connect(addr);
            produce(&mut p, TOPIC, 1);
        });
        let woken = fetch(
            c,
            FetchArgs {
                session_id: session,
                epoch: 1,
                max_wait_ms: 30_000,
                ..FetchArgs::default()
            },
        );
        producer.join().unwrap();
        assert_eq!(listed(&woken), [(1, 0, 1, true)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_fetched_by_id_and_a_recreated_topic_has_a_new_one() {
    with_broker(|c, _| {
        let old = create(c, TOPIC, 1);
        assert_eq!(topic_id(c, TOPIC), old);
        produce(c, TOPIC, 0);
        let by_id = fetch(
            c,
            FetchArgs {
                partitions: &[(old, 0, 0)],
                ..FetchArgs::default()
            },
        );
        assert_eq!(listed(&by_id), [(0, 0, 1, true)]);
        let made_up = Uuid::new_v4();
        let unknown = fetch(
            c,
            FetchArgs {
                partitions: &[(made_up, 0, 0)],
                ..FetchArgs::default()
            },
        );
        assert_eq!(unknown.responses[0].topic_id, made_up);
        assert_eq!(
            listed(&unknown),
            [(0, ResponseError::UnknownTopicId.code(), -1, false)]
        );

        let deleted: DeleteTopicsResponse = c.call(
            ApiKey::DeleteTopics,
            6,
            &DeleteTopicsRequest::default()
                .with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(name(TOPIC))),
                ])
                .with_timeout_ms(10_000),
        );
        assert_eq!(deleted.responses[0].error_code, 0);
        let new = create(c, TOPIC, 1);
        assert_ne!(new, old, "a recreated topic gets a new ID");
        let stale = fetch(
            c,
            FetchArgs {
                partitions: &[(old, 0, 0)],
                ..FetchArgs::default()
            },
        );
        assert_eq!(
            listed(&stale),
            [(0, ResponseError::UnknownTopicId.code(), -1, false)],
            "a client holding the old ID is told so"
        );
        let fresh = fetch(
            c,
            FetchArgs {
                partitions: &[(new, 0, 0)],
                ..FetchArgs::default()
            },
        );
        assert_eq!(listed(&fresh), [(0, 0, 0, false)], "the new topic is empty");
    })
    .await;
}
