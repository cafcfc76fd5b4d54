//! Broker CPU per Fetch for a consumer of many partitions, with and without a fetch session
//! (KIP-227). Starts `sluice broker` as its own process, creates a topic of `--partitions`
//! partitions with one small batch in each, then sends `--requests` fetches at the log end
//! (nothing new: the steady state of a caught-up consumer polling) in two modes:
//! sessionless full fetches (epoch -1, every partition listed both ways), and incremental
//! fetches in one session (nothing listed either way). Reports broker CPU per request
//! (summed over its threads' schedstat) and the request and response sizes.
//!
//!     cargo build --release -p sluice-cli
//!     cargo run --release -p sluice-broker --example fetch_sessions_bench -- \
//!         --sluice target/release/sluice [--partitions 1000] [--requests 3000]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

const FETCH_VERSION: i16 = 13;

struct Client {
    stream: TcpStream,
    correlation: i32,
    sent_bytes: usize,
    received_bytes: usize,
}

impl Client {
    fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        request.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).unwrap();
        self.sent_bytes += buf.len();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        self.received_bytes += frame.len() + 4;
        let mut frame = Bytes::from(frame);
        ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        let response = Resp::decode(&mut frame, version).unwrap();
        assert!(!frame.has_remaining());
        response
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total as f64 / 1e9
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut sluice, mut partitions, mut requests) = (None, 1000i32, 3000usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sluice" => sluice = args.next(),
            "--partitions" => partitions = args.next().unwrap().parse().unwrap(),
            "--requests" => requests = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let sluice = sluice.expect("--sluice PATH");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut broker = Command::new(sluice)
        .args(["broker", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_nodelay(true).unwrap();
    let mut c = Client {
        stream,
        correlation: 0,
        sent_bytes: 0,
        received_bytes: 0,
    };
    let topic = TopicName(StrBytes::from_static_str("wide"));
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(topic.clone())
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]),
    );
    assert_eq!(created.topics[0].error_code, 0);
    let topic_id = created.topics[0].topic_id;
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(OwnedRecord::new(
        None,
        Some(vec![b'x'; 100]),
        1_700_000_000_000,
    ));
    let batch = Bytes::from(builder.build().unwrap());
    let produced: ProduceResponse = c.call(
        ApiKey::Produce,
        9,
        &ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(
                        (0..partitions)
                            .map(|p| {
                                PartitionProduceData::default()
                                    .with_index(p)
                                    .with_records(Some(batch.clone()))
                            })
                            .collect(),
                    ),
            ]),
    );
    assert!(
        produced.responses[0]
            .partition_responses
            .iter()
            .all(|p| p.error_code == 0)
    );
    let at_end = FetchTopic::default()
        .with_topic_id(topic_id)
        .with_partitions(
            (0..partitions)
                .map(|p| {
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(1)
                        .with_partition_max_bytes(1 << 20)
                })
                .collect(),
        );
    let fetch = |session_id: i32, epoch: i32, topics: Vec<FetchTopic>| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(50 << 20)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(topics)
    };
    let pid = broker.id();
    println!(
        "{partitions} partitions, {requests} fetches at the log end per mode, Fetch v{FETCH_VERSION}"
    );
    for mode in [
        "full fetches, no session",
        "incremental fetches in a session",
    ] {
        let incremental = mode.starts_with("incremental");
        let mut session = 0;
        if incremental {
            let opened: FetchResponse = c.call(
                ApiKey::Fetch,
                FETCH_VERSION,
                &fetch(0, 0, vec![at_end.clone()]),
            );
            session = opened.session_id;
            assert_ne!(session, 0, "a session was opened");
        }
        let (sent, received) = (c.sent_bytes, c.received_bytes);
        let cpu = cpu_seconds(pid);
        let started = Instant::now();
        for i in 0..requests {
            let request = if incremental {
                fetch(session, i as i32 + 1, Vec::new())
            } else {
                fetch(0, -1, vec![at_end.clone()])
            };
            let response: FetchResponse = c.call(ApiKey::Fetch, FETCH_VERSION, &request);
            assert_eq!(response.error_code, 0);
        }
        let elapsed = started.elapsed();
        let cpu = cpu_seconds(pid) - cpu;
        println!(
            "{mode}: broker CPU {:.1} µs/request, round trip {:.1} µs, request {} B, response {} B",
            cpu * 1e6 / requests as f64,
            elapsed.as_secs_f64() * 1e6 / requests as f64,
            (c.sent_bytes - sent) / requests,
            (c.received_bytes - received) / requests,
        );
    }
    broker.kill().unwrap();
    broker.wait().unwrap();
}
