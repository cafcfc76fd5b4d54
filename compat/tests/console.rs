//! The web console in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/test`) loads the console from a live broker, runs its script, and the rendered page
//! must show a topic created by the test, its messages (as pretty-printed JSON and as hex),
//! and a group's lag.

use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice_compat::start_broker;

/// The DOM after the page's script ran (Chromium's `--dump-dom`).
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_topics_messages_and_lag_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("admin.http.listener", "127.0.0.1:0")]).await;
    let http = broker.http_addr.unwrap();
    let bootstrap = broker.local_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new("shop-orders", 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..20 {
        let value = format!("{{\"order\":{i},\"item\":\"lamp-{i}\"}}");
        let key = format!("customer-{i}");
        producer
            .send(
                FutureRecord::to("shop-orders")
                    .partition(0)
                    .key(&key)
                    .payload(&value)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "origin",
                        value: Some("console-test"),
                    })),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let bootstrap_clone = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap_clone)
            .set("group.id", "fulfilment")
            .create()
            .unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("shop-orders", 0, Offset::Offset(5))
            .unwrap();
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();

    let overview = rendered(&format!("http://{http}/"));
    assert!(overview.contains("#/topic/shop-orders"), "{overview}");
    assert!(overview.contains("#/group/fulfilment"), "{overview}");
    assert!(overview.contains(broker.broker.cluster_id()), "{overview}");

    let topic = rendered(&format!(
        "http://{http}/#/topic/shop-orders?partition=0&offset=10&format=json"
    ));
    // Pretty-printed JSON of offset 10, keys and headers as text; nothing before offset 10.
    assert!(topic.contains("\"item\": \"lamp-10\""), "{topic}");
    assert!(
        topic.contains("customer-19") && topic.contains("origin=console-test"),
        "{topic}"
    );
    assert!(!topic.contains("customer-9<"), "{topic}");
    let hex = rendered(&format!(
        "http://{http}/#/topic/shop-orders?partition=0&offset=0&format=hex"
    ));
    // "lamp-0" in hex, as the console spaces it.
    assert!(hex.contains("6c 61 6d 70 2d 30"), "{hex}");

    let group = rendered(&format!("http://{http}/#/group/fulfilment"));
    assert!(group.contains("id=\"total-lag\">15<"), "{group}");
    broker.shutdown().await.unwrap();
}
