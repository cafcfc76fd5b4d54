//! The handler fuzz target's property, run in CI on mutated frames (the libFuzzer target in
//! `fuzz/fuzz_targets/handlers.rs` runs it open-ended): whatever frame arrives, every
//! handler answers or the connection closes; nothing panics; no input makes the broker
//! allocate more than a bound; and afterwards the broker still serves another client and
//! restarts from its data directory.
//!
//! Frames are valid requests of many APIs and versions, then mutated (bytes flipped, length
//! fields set huge, cut short, spliced). Seeded from `SLUICE_TEST_SEED` or the clock; the
//! seed is printed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_broker::{BrokerConfig, GuardedAllocator, serve_frame};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

/// Resident memory, in bytes: now, and at its peak since [`reset_peak`]. Resident, not
/// allocated: the codec reserves arrays from the counts a frame declares (address space,
/// which the guard and the kernel hand out lazily); what matters is memory touched.
fn resident() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident size (`VmHWM`) to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Most memory one input may take beyond what was live before it. Inputs are at most a few
/// KiB; the largest legitimate use is a produced batch decompressed for validation.
const MAX_GROWTH_PER_INPUT: usize = 128 << 20;
/// Inputs per test run.
const INPUTS: usize = 20_000;
/// How long one input may take before it is dropped (a Fetch or JoinGroup may wait).
const INPUT_DEADLINE: Duration = Duration::from_millis(100);

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn name(text: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(text))
}

fn records(codec: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(codec);
    for i in 0..3u8 {
        builder.push(OwnedRecord::new(
            Some(vec![i]),
            Some(vec![i; 20]),
            1_700_000_000_000,
        ));
    }
    Bytes::from(builder.build().unwrap())
}

/// Valid frames of every version of the APIs whose bodies carry the most structure.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let lo = |key: ApiKey| -> (i16, i16) {
        sluice_broker::advertised_apis()
            .find(|(k, _, _)| *k == key)
            .map(|(_, lo, hi)| (lo, hi))
            .unwrap()
    };
    for key in [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::CreateTopics,
        ApiKey::JoinGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::DeleteRecords,
        ApiKey::DescribeConfigs,
        ApiKey::InitProducerId,
    ] {
        let (min, max) = lo(key);
        for version in min..=max {
            let built = match key {
                ApiKey::ApiVersions => frame(key, version, &ApiVersionsRequest::default()),
                ApiKey::Metadata => frame(
                    key,
                    version,
                    &MetadataRequest::default().with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(name("fuzzed"))),
                    ])),
                ),
                ApiKey::Produce => frame(
                    key,
                    version,
                    &ProduceRequest::default().with_acks(1).with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(name("fuzzed"))
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_records(Some(records(Compression::Lz4))),
                            ]),
                    ]),
                ),
                ApiKey::Fetch => frame(
                    key,
                    version,
                    &FetchRequest::default()
                        .with_max_wait_ms(50)
                        .with_topics(vec![
                            FetchTopic::default()
                                .with_topic(name("fuzzed"))
                                .with_partitions(vec![
                                    FetchPartition::default().with_partition_max_bytes(1000),
                                ]),
                        ]),
                ),
                ApiKey::ListOffsets => frame(
                    key,
                    version,
                    &ListOffsetsRequest::default().with_topics(vec![
                        ListOffsetsTopic::default()
                            .with_name(name("fuzzed"))
                            .with_partitions(vec![
                                ListOffsetsPartition::default().with_timestamp(-1),
                            ]),
                    ]),
                ),
                ApiKey::CreateTopics => frame(
                    key,
                    version,
                    &CreateTopicsRequest::default().with_topics(vec![
                        CreatableTopic::default()
                            .with_name(name("fuzzed"))
                            .with_num_partitions(2)
                            .with_replication_factor(1),
                    ]),
                ),
                ApiKey::JoinGroup => frame(
                    key,
                    version,
                    &JoinGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_session_timeout_ms(6000)
                        .with_rebalance_timeout_ms(100)
                        .with_protocol_type(StrBytes::from_static_str("consumer"))
                        .with_protocols(vec![
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str("range")),
                        ]),
                ),
                ApiKey::OffsetCommit => frame(
                    key,
                    version,
                    &OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![
                            OffsetCommitRequestTopic::default()
                                .with_name(name("fuzzed"))
                                .with_partitions(vec![
                                    OffsetCommitRequestPartition::default()
                                        .with_committed_offset(1),
                                ]),
                        ]),
                ),
                ApiKey::OffsetFetch => frame(
                    key,
                    version,
                    &OffsetFetchRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g"))),
                ),
                ApiKey::DeleteRecords => frame(key, version, &DeleteRecordsRequest::default()),
                ApiKey::DescribeConfigs => frame(key, version, &DescribeConfigsRequest::default()),
                ApiKey::InitProducerId => frame(
                    key,
                    version,
                    &InitProducerIdRequest::default().with_transaction_timeout_ms(1000),
                ),
                _ => None,
            };
            seeds.extend(built);
        }
    }
    // A decompression bomb: a few KiB that inflate to 12 MiB, which validation walks.
    let mut bomb = BatchBuilder::new(Compression::Zstd);
    bomb.push(OwnedRecord::new(
        None,
        Some(vec![0; 12 << 20]),
        1_700_000_000_000,
    ));
    seeds.extend(frame(
        ApiKey::Produce,
        9,
        &ProduceRequest::default().with_acks(1).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("fuzzed"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_records(Some(Bytes::from(bomb.build().unwrap()))),
                ]),
        ]),
    ));
    // Every other advertised API, at every version, with a default body.
    for (key, _, _) in sluice_broker::advertised_apis() {
        if !seeds.iter().any(|s| s[..2] == (key as i16).to_be_bytes()) {
            for version in lo(key).0..=lo(key).1 {
                let mut header = BytesMut::new();
                let built = RequestHeader::default()
                    .with_request_api_key(key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(7)
                    .encode(&mut header, key.request_header_version(version));
                if built.is_ok() {
                    // An empty body: every decoder must refuse or read defaults from it.
                    seeds.push(header.to_vec());
                }
            }
        }
    }
    seeds
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = 0xff,
            // A length or count field made huge or negative.
            2 => {
                let end = (at + 4).min(bytes.len());
                bytes[at..end].fill(if rng.below(2) == 0 { 0x7f } else { 0xff });
            }
            3 => bytes.truncate(at.max(8)),
            4 => {
                let from = rng.below(other.len());
                bytes.extend_from_slice(&other[from..]);
            }
            _ => bytes.insert(at, rng.next() as u8),
        }
    }
    bytes
}

fn seed() -> u64 {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("SLUICE_TEST_SEED={seed}");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_survives_mutated_frames_within_a_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let props = [
        ("listeners", "127.0.0.1:0".to_string()),
        ("log.dirs", dir.path().display().to_string()),
        // State the inputs can grow is capped small, so that growth shows up as a failure.
        ("max.broker.partitions", "64".into()),
        ("group.max.count", "64".into()),
        ("log.segment.bytes", "65536".into()),
        ("group.initial.rebalance.delay.ms", "0".into()),
    ];
    let config = BrokerConfig::from_overrides(
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
    .unwrap();
    let handle = sluice_broker::start(config.clone()).await.unwrap();
    let broker = handle.broker.clone();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let seeds = seeds();
    assert!(seeds.len() > 100, "{} seeds", seeds.len());
    let mut rng = Rng(seed());
    let mut answered = 0;
    for i in 0..INPUTS {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            mutate(seed, other, &mut rng)
        };
        reset_peak();
        let (before, _) = resident();
        let served = tokio::time::timeout(
            INPUT_DEADLINE,
            serve_frame(&broker, Bytes::from(input.clone()), peer),
        )
        .await;
        if let Ok(Some(response)) = served {
            answered += 1;
            // The response is written as a connection would: its chunks must be readable.
            let mut out = BytesMut::new();
            for chunk in &response.chunks {
                out.put_slice(&chunk_bytes(chunk));
            }
            assert_eq!(out.len(), response.len());
        }
        let growth = resident().1.saturating_sub(before);
        assert!(
            growth < MAX_GROWTH_PER_INPUT,
            "input {i} ({} bytes, {:02x?}) took {growth} bytes",
            input.len(),
            &input[..input.len().min(64)]
        );
    }
    assert!(
        answered > INPUTS / 10,
        "only {answered} inputs were answered"
    );
    drop(broker);

    // Another client is still served, then the data directory reopens.
    let mut client = RawFetchClient::connect(handle.local_addr);
    client.metadata();
    drop(client);
    handle.shutdown().await.unwrap();
    let reopened = sluice_broker::start(config).await.expect("restarts");
    reopened.shutdown().await.unwrap();
}

fn chunk_bytes(chunk: &sluice_protocol::response::Chunk) -> Vec<u8> {
    match chunk {
        sluice_protocol::response::Chunk::Bytes(bytes) => bytes.to_vec(),
        sluice_protocol::response::Chunk::File(region) => region
            .read_to_vec()
            .expect("a response's file region is readable"),
    }
}

/// A blocking client for one Metadata round trip over TCP.
struct RawFetchClient(std::net::TcpStream);

impl RawFetchClient {
    fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawFetchClient(stream)
    }

    fn metadata(&mut self) {
        use std::io::{Read, Write};
        let body = frame(ApiKey::Metadata, 9, &MetadataRequest::default()).unwrap();
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        self.0.write_all(&framed).unwrap();
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).unwrap();
        let mut response = vec![0u8; i32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut response).unwrap();
        assert_eq!(&response[..4], &7i32.to_be_bytes(), "correlation id");
    }
}
