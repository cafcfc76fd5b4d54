//! A cluster of three combined nodes (broker + metadata quorum voter), each its own process,
//! on loopback: it forms, spreads a topic's partitions over its brokers, serves librdkafka,
//! both Python clients, kcat and the Java client through any bootstrap broker (their own
//! topics created with the cluster's default of three replicas); SIGKILL of
//! the active controller elects another and admin requests keep working; the killed node
//! rejoins with its data; a node paused past the session timeout is fenced (its partitions
//! offline) and comes back when resumed; a node stopping cleanly fences itself first; with
//! two nodes down metadata changes fail cleanly and recover when one returns; a node
//! started on another cluster's data refuses to start. A node that applies the metadata log
//! late takes a new topic's pipelined batches in order.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_compat::{BrokerProcess, compile_java_check, free_listen_address, java_check};

mod common;
use common::{Cluster, NODES, client_config as config, get_json, get_text, wait_for};

const PARTITIONS: i32 = 30;

#[test]
#[ignore = "the broker child process of the cluster tests"]
fn broker_process() {
    sluice_compat::run_broker_process();
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .map_err(|e| e.to_string())?;
    match &result[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

/// Partition → leader, from a broker's Metadata, once every partition has a live leader.
fn leaders(bootstrap: &str, topic: &str, within: Duration) -> BTreeMap<i32, i32> {
    let consumer: BaseConsumer = config(bootstrap).create().unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
            && let Some(found) = metadata.topics().iter().find(|t| t.name() == topic)
        {
            let leaders: BTreeMap<i32, i32> = found
                .partitions()
                .iter()
                .map(|p| (p.id(), p.leader()))
                .collect();
            let brokers = metadata.brokers().len();
            if leaders.len() == PARTITIONS as usize
                && leaders.values().all(|l| *l > 0)
                && brokers == NODES as usize
            {
                return leaders;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: not every partition has a leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produces `count` messages keyed over every partition, acks=all, idempotent; returns what
/// was acknowledged: (partition, offset) → value.
async fn produce(
    bootstrap: &str,
    topic: &str,
    tag: &str,
    count: usize,
) -> BTreeMap<(i32, i64), String> {
    let producer: FutureProducer = config(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let mut acknowledged = BTreeMap::new();
    for i in 0..count {
        let value = format!("{tag}-{i}");
        let partition = (i % PARTITIONS as usize) as i32;
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key("k")
            .payload(&value);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("acknowledged");
        acknowledged.insert((delivery.partition, delivery.offset), value);
    }
    acknowledged
}

/// Consumes in group `group` until `expected` arrived (and no more than it), then commits.
fn consume(bootstrap: &str, topic: &str, group: &str, expected: &BTreeMap<(i32, i64), String>) {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {}",
            got.len(),
            expected.len()
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
            got.insert((message.partition(), message.offset()), value);
        }
    }
    assert_eq!(
        &got, expected,
        "exactly what was acknowledged, where it was"
    );
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
}

fn run_clients(bootstrap: &str) {
    let python = format!("{}/python/clients.py", env!("CARGO_MANIFEST_DIR"));
    for scenario in ["roundtrip-confluent", "roundtrip-kafka-python"] {
        let output = Command::new("python3")
            .args([python.as_str(), bootstrap, scenario])
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "{scenario}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let classes = tempfile::tempdir().unwrap();
    let classpath = compile_java_check(classes.path());
    for scenario in ["roundtrip", "groups"] {
        let output = java_check(&classpath, bootstrap, scenario)
            .output()
            .expect("java runs");
        assert!(
            output.status.success(),
            "Java {scenario}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let lines: String = (0..50).map(|i| format!("kcat-{i}\n")).collect();
    let mut producer = Command::new("kcat")
        .args([
            "-b",
            bootstrap,
            "-t",
            "kcat-cluster",
            "-P",
            "-X",
            "topic.request.required.acks=all",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed");
    producer
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(producer.wait().unwrap().success());
    let output = Command::new("kcat")
        .args([
            "-b",
            bootstrap,
            "-t",
            "kcat-cluster",
            "-C",
            "-e",
            "-o",
            "beginning",
        ])
        .output()
        .unwrap();
    let mut got: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    let mut sent: Vec<String> = lines.lines().map(str::to_string).collect();
    sent.sort();
    assert_eq!(got, sent, "kcat reads back what it wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_clients_fail_over_and_rejoin() {
    let root = tempfile::tempdir().unwrap();
    // Topics the clients create on their own get three replicas: every client scenario
    // below runs against replicated partitions.
    let mut cluster = Cluster::new(root.path(), &[("default.replication.factor", "3")]);
    for id in 1..=NODES {
        cluster.spawn(id, None);
    }
    for id in 1..=NODES {
        cluster.wait_ready(id);
    }
    let bootstrap = cluster.bootstrap();

    // Partitions spread over every broker.
    create_topic(&bootstrap, "spread", PARTITIONS)
        .await
        .unwrap();
    let placed = leaders(&bootstrap, "spread", Duration::from_secs(30));
    let mut per_broker: BTreeMap<i32, usize> = BTreeMap::new();
    for leader in placed.values() {
        *per_broker.entry(*leader).or_default() += 1;
    }
    assert_eq!(
        per_broker.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{per_broker:?}"
    );
    assert!(per_broker.values().all(|n| *n == 10), "{per_broker:?}");

    let first = produce(&bootstrap, "spread", "first", 300).await;
    consume(&bootstrap, "spread", "readers", &first);
    tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || run_clients(&bootstrap)
    })
    .await
    .unwrap();

    // SIGKILL of the active controller: the others elect one of themselves.
    let controller = cluster.controller(None, Duration::from_secs(20));
    cluster.kill(controller);
    let killed = Instant::now();
    let successor = cluster.controller(Some(controller), Duration::from_secs(30));
    eprintln!(
        "controller {controller} killed; {successor} took over after {:?}",
        killed.elapsed()
    );
    assert_ne!(successor, controller);
    let mut attempt = 0;
    while let Err(err) = create_topic(&bootstrap, "after-failover", 3).await {
        attempt += 1;
        assert!(attempt < 10, "admin requests fail after failover: {err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The killed node returns with its data: its partitions are served again, and the
    // group goes on from its committed offsets.
    cluster.spawn(controller, None);
    cluster.wait_ready(controller);
    leaders(&bootstrap, "spread", Duration::from_secs(30));
    let second = produce(&bootstrap, "spread", "second", 300).await;
    consume(&bootstrap, "spread", "readers", &second);

    // A node paused past the session timeout (SIGSTOP) is fenced by the controller: its
    // partitions go offline. Resumed, it registers again and leads them again.
    let controller = cluster.controller(None, Duration::from_secs(20));
    let paused = 1 + controller % NODES;
    cluster.signal(paused, "-STOP");
    let at_controller = cluster.node(controller).http.clone();
    let fenced = |node: i32| {
        let brokers = get_json(&at_controller, "/api/v1/brokers");
        brokers["brokers"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["node_id"] == node))
            .map(|b| b["fenced"] == true)
    };
    wait_for(Duration::from_secs(30), "the paused node fenced", || {
        fenced(paused) == Some(true)
    });
    let metrics = get_text(&at_controller, "/metrics");
    assert!(
        metrics.contains("sluice_cluster_brokers{state=\"fenced\"} 1"),
        "{metrics}"
    );
    cluster.signal(paused, "-CONT");
    wait_for(
        Duration::from_secs(30),
        "the resumed node live again",
        || fenced(paused) == Some(false),
    );
    leaders(&bootstrap, "spread", Duration::from_secs(30));
    let third = produce(&bootstrap, "spread", "third", 60).await;
    consume(&bootstrap, "spread", "readers", &third);

    // Controlled shutdown: a node stopping cleanly is fenced before its process ends.
    let stopping = paused;
    cluster.nodes[(stopping - 1) as usize]
        .process
        .take()
        .unwrap()
        .stop();
    assert_eq!(
        fenced(stopping),
        Some(true),
        "fenced by its controlled shutdown"
    );

    // Two of three down: no quorum, metadata changes fail (they do not hang, and nothing
    // is acknowledged); a node returning restores it.
    let killed = (1..=NODES)
        .find(|id| *id != stopping && *id != controller)
        .unwrap();
    cluster.kill(killed);
    let survivor = controller;
    let lone = cluster.node(survivor).client.clone();
    let refused = create_topic(&lone, "without-quorum", 1).await;
    assert!(refused.is_err(), "a change was accepted without a quorum");
    cluster.spawn(stopping, None);
    cluster.wait_ready(stopping);
    let mut attempt = 0;
    while let Err(err) = create_topic(&lone, "with-quorum-again", 1).await {
        attempt += 1;
        assert!(
            attempt < 20,
            "metadata changes fail after the quorum returned: {err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let downs = [stopping, killed];

    // A node pointed at another cluster's data refuses to start: the data of a single-node
    // broker (a cluster of its own) under the third node's id.
    let other = root.path().join("other-cluster");
    let lone_listen = free_listen_address();
    let node_id = downs[1].to_string();
    BrokerProcess::start(&other, &lone_listen, &[("node.id", node_id.as_str())]).stop();
    cluster.spawn(downs[1], Some(&other));
    let process = cluster.nodes[(downs[1] - 1) as usize]
        .process
        .as_mut()
        .unwrap();
    let (status, stderr) = process
        .wait_exit(Duration::from_secs(60))
        .expect("a node on another cluster's data refuses to start");
    assert!(!status.success());
    assert!(stderr.contains("belongs to cluster"), "{stderr}");
    cluster.nodes[(downs[1] - 1) as usize].process = None;
    cluster.stop_all();
}

/// Produce requests (v9, acks=all, one record each: `values`) written to `address` at once on
/// one connection, as a pipelining client sends them; each answer's (error code, base
/// offset), in request order.
fn pipelined_produce(address: &str, topic: &str, values: &[&str]) -> Vec<(i16, i64)> {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Read;
    use std::net::TcpStream;
    const VERSION: i16 = 9;

    let mut frames = BytesMut::new();
    for (i, value) in values.iter().enumerate() {
        let mut batch = sluice_record::BatchBuilder::new(sluice_record::Compression::None);
        batch.push(sluice_record::OwnedRecord::new(
            None,
            Some(value.as_bytes().to_vec()),
            1_700_000_000_000,
        ));
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        topic.to_string(),
                    )))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(batch.build().unwrap()))),
                    ]),
            ]);
        let frame = sluice_protocol::header::encode_request(
            ApiKey::Produce,
            VERSION,
            i as i32,
            "pipelining-test",
            &request,
        )
        .unwrap();
        frames.put_slice(&frame);
    }
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&frames).unwrap();
    (0..values.len())
        .map(|i| {
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).expect("an answer");
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            stream.read_exact(&mut body).expect("an answer");
            let mut body = Bytes::from(body);
            let header =
                ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(VERSION))
                    .unwrap();
            assert_eq!(header.correlation_id, i as i32, "answers out of order");
            let response = ProduceResponse::decode(&mut body, VERSION).unwrap();
            assert!(!body.has_remaining());
            let partition = &response.responses[0].partition_responses[0];
            (partition.error_code, partition.base_offset)
        })
        .collect()
}

/// A broker that learns of a new topic after its clients do (its quorum links slowed, so it
/// applies the metadata log late) still appends a pipelining client's batches for it in the
/// order they were sent: the first one waits for the metadata instead of being refused while
/// the next ones are taken (a client without idempotence retries it after them). A produce
/// for a topic that never comes is still answered, with UNKNOWN_TOPIC_OR_PARTITION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_behind_on_metadata_appends_a_new_topics_first_batches_in_order() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(root.path(), &[]);
    let links = cluster.route_quorum_through_proxies(17);
    for id in 1..=NODES {
        cluster.spawn(id, None);
    }
    for id in 1..=NODES {
        cluster.wait_ready(id);
    }
    let controller = cluster.controller(None, Duration::from_secs(30));
    let behind = (1..=NODES).find(|id| *id != controller).unwrap();
    // The other two make a majority: changes commit without `behind`, which hears of them
    // this much later (below the election timeout: it still follows its leader).
    const LAG: Duration = Duration::from_millis(700);
    for from in (1..=NODES).filter(|id| *id != behind) {
        links.proxies[&(from, behind)].others().set_delay(LAG);
    }
    let ahead = cluster.node(controller).client.clone();
    let admin: AdminClient<DefaultClientContext> = config(&ahead).create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let replicas: &[&[i32]] = &[&[behind]];
    let created = admin
        .create_topics(
            &[NewTopic::new(
                "late",
                1,
                TopicReplication::Variable(replicas),
            )],
            &options,
        )
        .await
        .expect("CreateTopics answered");
    assert!(created[0].is_ok(), "{created:?}");

    // Told by the controller that `behind` leads the new partition, a client sends it five
    // batches at once before `behind` has the topic.
    let address = cluster.node(behind).client.clone();
    let values = ["b0", "b1", "b2", "b3", "b4"];
    let answers = tokio::task::spawn_blocking(move || pipelined_produce(&address, "late", &values))
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)],
        "(error, base offset) of each batch"
    );

    let address = cluster.node(behind).client.clone();
    let answers =
        tokio::task::spawn_blocking(move || pipelined_produce(&address, "never-created", &["x"]))
            .await
            .unwrap();
    assert_eq!(
        answers,
        vec![(
            kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
            -1
        )]
    );
    links.clear();
    cluster.stop_all();
}
