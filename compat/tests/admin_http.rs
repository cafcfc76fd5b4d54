//! The admin HTTP endpoint against a live broker with real traffic (librdkafka): health
//! checks, the JSON API, and Prometheus metrics whose values follow what clients do.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::Value;
use sluice_compat::start_broker;

/// A plain HTTP/1.1 GET: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked response"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of one sample of the metrics text, e.g. `sluice_topic_messages_in_total{topic="t"}`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

async fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..count {
        let payload = format!("message-{i:06}");
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::to(topic)
                        .partition((i % 2) as i32)
                        .key("k")
                        .payload(&payload),
                )
                .unwrap(),
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_json_api_and_metrics_follow_real_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("admin.http.listener", "127.0.0.1:0")]).await;
    let http = broker.http_addr.expect("admin HTTP configured");
    let bootstrap = broker.local_addr.to_string();
    let topic = "observed";

    assert_eq!(get(http, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(http, "/readyz").0, 200);
    assert_eq!(get(http, "/api/v1/topics/nope").0, 404);
    assert_eq!(get(http, "/api/v1/groups/nope").0, 404);
    assert_eq!(get(http, "/no-such-path").0, 404);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    produce(&bootstrap, topic, 1_000).await;

    let (_, before) = get(http, "/metrics");
    let labels = format!("{{topic=\"{topic}\"}}");
    assert_eq!(
        metric(&before, &format!("sluice_topic_messages_in_total{labels}")),
        1_000.0
    );
    let bytes_in = metric(&before, &format!("sluice_topic_bytes_in_total{labels}"));
    assert!(bytes_in >= 1_000.0 * 14.0, "bytes in {bytes_in}");
    assert!(
        metric(
            &before,
            "sluice_request_duration_seconds_count{api=\"Produce\"}"
        ) >= 1.0
    );
    assert!(metric(&before, "sluice_connections") >= 1.0);
    // A single node leads its one-voter metadata quorum, which has committed the topic.
    assert_eq!(metric(&before, "sluice_quorum_is_leader"), 1.0);
    assert_eq!(metric(&before, "sluice_quorum_leader"), 1.0);
    assert!(metric(&before, "sluice_quorum_commit_index") >= 2.0);
    assert_eq!(
        metric(&before, "sluice_quorum_applied_index"),
        metric(&before, "sluice_quorum_commit_index")
    );
    assert_eq!(metric(&before, "sluice_quorum_voter_lag{voter=\"1\"}"), 0.0);
    assert_eq!(
        metric(&before, "sluice_cluster_brokers{state=\"live\"}"),
        1.0
    );
    assert_eq!(metric(&before, "sluice_cluster_offline_partitions"), 0.0);
    let end0 = metric(
        &before,
        &format!("sluice_partition_log_end_offset{{topic=\"{topic}\",partition=\"0\"}}"),
    );
    let end1 = metric(
        &before,
        &format!("sluice_partition_log_end_offset{{topic=\"{topic}\",partition=\"1\"}}"),
    );
    assert_eq!(end0 + end1, 1_000.0);

    // JSON API.
    let topics = get_json(http, "/api/v1/topics");
    let listed = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .expect("topic listed");
    assert_eq!(listed["partitions"], 2);
    assert_eq!(listed["offsets_in_log"], 1_000);
    let detail = get_json(http, &format!("/api/v1/topics/{topic}"));
    assert_eq!(detail["partitions"][0]["log_end_offset"], 500);
    assert_eq!(detail["partitions"][1]["log_end_offset"], 500);
    assert!(detail["partitions"][0]["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(detail["configs"]["cleanup.policy"]["value"], "delete");
    let brokers = get_json(http, "/api/v1/brokers");
    assert_eq!(brokers["brokers"][0]["port"], broker.local_addr.port());
    assert_eq!(brokers["brokers"][0]["fenced"], false);
    assert_eq!(brokers["controller_id"], brokers["node_id"]);
    assert_eq!(brokers["quorum"]["leader"], brokers["node_id"]);
    assert_eq!(brokers["quorum"]["voters"][0]["lag"], 0);

    // A group consumes 600 messages of partition 0 and 1 and commits: lag shows the rest.
    let bootstrap_clone = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap_clone)
            .set("group.id", "watchers")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["observed"]).unwrap();
        let mut seen = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen < 600 {
            assert!(std::time::Instant::now() < deadline, "consumed {seen}");
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.unwrap();
                seen += 1;
                if seen == 600 {
                    consumer.commit_message(&message, CommitMode::Sync).unwrap();
                    let mut other = rdkafka::TopicPartitionList::new();
                    let other_partition = 1 - message.partition();
                    // Commit the other partition at 100 explicitly: a known lag of 400.
                    other
                        .add_partition_offset(
                            "observed",
                            other_partition,
                            rdkafka::Offset::Offset(100),
                        )
                        .unwrap();
                    consumer.commit(&other, CommitMode::Sync).unwrap();
                }
            }
        }
    })
    .await
    .unwrap();
    let group = get_json(http, "/api/v1/groups/watchers");
    let offsets = group["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 2, "{group}");
    let total_lag = group["total_lag"].as_i64().unwrap();
    assert!(total_lag > 400, "{group}");
    let groups = get_json(http, "/api/v1/groups");
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group_id"] == "watchers")
    );

    // Counters move with traffic.
    produce(&bootstrap, topic, 200).await;
    let (_, after) = get(http, "/metrics");
    assert_eq!(
        metric(&after, &format!("sluice_topic_messages_in_total{labels}")),
        1_200.0
    );
    assert!(metric(&after, &format!("sluice_topic_bytes_out_total{labels}")) > 0.0);
    let lag_sum: f64 = (0..2)
        .map(|p| {
            metric(
                &after,
                &format!(
                    "sluice_group_lag{{group=\"watchers\",topic=\"{topic}\",partition=\"{p}\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(
        lag_sum as i64,
        total_lag + 200,
        "lag grows with the new messages"
    );
    // librdkafka 2.12 produces at v10 and fetches at v16: counted per version.
    assert!(
        metric(
            &after,
            "sluice_requests_total{api=\"Produce\",version=\"10\"}"
        ) > 0.0
    );
    assert!(
        metric(
            &after,
            "sluice_requests_total{api=\"Fetch\",version=\"16\"}"
        ) > 0.0
    );
    assert!(
        metric(
            &after,
            "sluice_request_duration_seconds_count{api=\"Produce\"}"
        ) > metric(
            &before,
            "sluice_request_duration_seconds_count{api=\"Produce\"}"
        )
    );
    broker.shutdown().await.unwrap();
}
