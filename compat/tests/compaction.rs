//! Log compaction seen by real clients: a compacted topic gets 1,000 keys updated 100 times
//! and 100 keys deleted; once the broker's background cleaner has run, a consumer from the
//! beginning sees exactly the latest value of each live key and one tombstone per deleted
//! key (offsets strictly increasing), the partition's files shrink accordingly, and after
//! `delete.retention.ms` the tombstones are gone too. Once with librdkafka (the `rdkafka`
//! crate) and once with the Java client, whose producer is idempotent (so the cleaner also
//! has to keep producer metadata intact).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_compat::{compile_java_check, java_check, start_broker};

const KEYS: usize = 1_000;
const UPDATES: usize = 100;
const DELETED: usize = 100;
const DELETE_RETENTION_MS: &str = "10000";

/// Broker settings: a cleaner that looks for work every 200 ms.
const BROKER: &[(&str, &str)] = &[("log.cleaner.backoff.ms", "200")];

async fn create_compacted_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "65536")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", DELETE_RETENTION_MS);
    let results = admin
        .create_topics(&[new_topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

fn value(key: usize, version: usize) -> String {
    format!("value-{key}-{version}-padding-padding-padding")
}

/// Bytes of `.log` files in the partition directory.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    live: usize,
    tombstones: usize,
    duplicates: usize,
}

/// Reads the partition from the beginning to its end; checks offsets and that the topic
/// replays to the expected state; counts what it saw (the filler key aside).
fn consume_all(bootstrap: &str, topic: &str) -> Seen {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compaction-check")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let (_, end) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut latest: HashMap<String, Option<String>> = HashMap::new();
    let mut seen = Seen {
        live: 0,
        tombstones: 0,
        duplicates: 0,
    };
    let mut previous = -1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while previous < end - 1 {
        assert!(
            Instant::now() < deadline,
            "consumed up to {previous} of {end}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        assert!(
            message.offset() > previous,
            "offset {} after {previous}",
            message.offset()
        );
        previous = message.offset();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        if key == "filler" {
            continue;
        }
        let value = message
            .payload()
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        if value.is_some() {
            seen.live += 1;
        } else {
            seen.tombstones += 1;
        }
        if latest.insert(key, value).is_some() {
            seen.duplicates += 1;
        }
    }
    for key in 0..KEYS {
        let expected = (key >= DELETED).then(|| value(key, UPDATES - 1));
        // A deleted key replays to its tombstone, or to nothing once the tombstone is gone.
        assert_eq!(
            latest.get(&format!("key-{key}")).cloned().flatten(),
            expected,
            "key-{key} does not replay to its latest value"
        );
    }
    seen
}

/// Polls until the consumer sees `want`.
fn wait_for(bootstrap: &str, topic: &str, want: Seen) {
    let started = Instant::now();
    loop {
        let seen = consume_all(bootstrap, topic);
        if seen == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "compaction did not converge: saw {seen:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_sees_latest_values_then_tombstones_expire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), BROKER).await;
    let bootstrap = broker.local_addr.to_string();
    let topic = "compacted-rdkafka";
    create_compacted_topic(&bootstrap, topic).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut produced_bytes = 0u64;
    let mut deliveries = Vec::new();
    for version in 0..UPDATES {
        for key in 0..KEYS {
            let (k, v) = (format!("key-{key}"), value(key, version));
            produced_bytes += (k.len() + v.len()) as u64;
            deliveries.push(
                producer
                    .send_result(FutureRecord::to(topic).partition(0).key(&k).payload(&v))
                    .unwrap(),
            );
        }
    }
    let tombstones_sent = Instant::now();
    for key in 0..DELETED {
        let k = format!("key-{key}");
        deliveries.push(
            producer
                .send_result(FutureRecord::<_, ()>::to(topic).partition(0).key(&k))
                .unwrap(),
        );
    }
    // Keys and tombstones must not share a batch with the filler (a batch is never split).
    producer.flush(Duration::from_secs(30)).unwrap();
    // Incompressible filler past segment.bytes: everything above lands in inactive segments,
    // which the cleaner may compact.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let filler: Vec<u8> = (0..1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::to(topic)
                        .partition(0)
                        .key("filler")
                        .payload(&filler),
                )
                .unwrap(),
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }

    let bootstrap_clone = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            &bootstrap_clone,
            topic,
            Seen {
                live: KEYS - DELETED,
                tombstones: DELETED,
                duplicates: 0,
            },
        );
    })
    .await
    .unwrap();
    let on_disk = log_bytes(&dir.path().join(format!("{topic}-0")));
    assert!(
        on_disk < produced_bytes / 10,
        "partition files hold {on_disk} bytes after compaction of {produced_bytes} bytes of keys and values"
    );
    let bootstrap_clone = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            &bootstrap_clone,
            topic,
            Seen {
                live: KEYS - DELETED,
                tombstones: 0,
                duplicates: 0,
            },
        );
    })
    .await
    .unwrap();
    // A tombstone's horizon starts when it is first cleaned, which is after it was sent.
    let retention = Duration::from_millis(DELETE_RETENTION_MS.parse().unwrap());
    assert!(
        tombstones_sent.elapsed() >= retention,
        "tombstones went {:?} after they were sent, before delete.retention.ms",
        tombstones_sent.elapsed()
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_sees_latest_values_then_tombstones_expire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), BROKER).await;
    let bootstrap = broker.local_addr.to_string();
    let topic = "compacted-java";
    create_compacted_topic(&bootstrap, topic).await;
    let classes = tempfile::tempdir().unwrap();
    let classes_path = classes.path().to_path_buf();
    let bootstrap_clone = bootstrap.clone();
    let output = tokio::task::spawn_blocking(move || {
        let classpath = compile_java_check(&classes_path);
        java_check(&classpath, &bootstrap_clone, "compacted")
            .arg(topic)
            .output()
            .expect("java runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "Java compaction scenario failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let on_disk = log_bytes(&dir.path().join(format!("{topic}-0")));
    assert!(on_disk < 1_000_000, "{on_disk} bytes left after compaction");
    broker.shutdown().await.unwrap();
}

/// A group committing the same partitions over and over keeps `__consumer_offsets` small:
/// the topic is created compacted and cleaned like any other; after a restart the group's
/// offsets are the last ones committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_stay_small_under_repeated_commits() {
    let dir = tempfile::tempdir().unwrap();
    let settings: &[(&str, &str)] = &[
        ("log.cleaner.backoff.ms", "200"),
        ("offsets.topic.num.partitions", "1"),
        ("offsets.topic.segment.bytes", "16384"),
    ];
    let broker = start_broker(dir.path(), settings).await;
    let bootstrap = broker.local_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new("committed", 4, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    const COMMITS: i64 = 3_000;
    let offsets_dir = dir.path().join("__consumer_offsets-0");
    let bootstrap_clone = bootstrap.clone();
    let dir_clone = offsets_dir.clone();
    let (largest, settled) = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap_clone)
            .set("group.id", "busy-committer")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut largest = 0;
        for commit in 1..=COMMITS {
            let mut offsets = TopicPartitionList::new();
            for partition in 0..4 {
                offsets
                    .add_partition_offset(
                        "committed",
                        partition,
                        Offset::Offset(commit * 10 + i64::from(partition)),
                    )
                    .unwrap();
            }
            consumer
                .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
                .unwrap();
            if commit % 500 == 0 {
                largest = largest.max(log_bytes(&dir_clone));
            }
        }
        // Wait for the cleaner to catch up with the last segments.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut settled = log_bytes(&dir_clone);
        while settled > 64 * 1024 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            settled = log_bytes(&dir_clone);
        }
        (largest, settled)
    })
    .await
    .unwrap();
    // 12,000 offset commits are well over 1 MB uncompacted.
    assert!(
        largest < 256 * 1024 && settled <= 64 * 1024,
        "__consumer_offsets grew to {largest} bytes (settled at {settled})"
    );
    broker.shutdown().await.unwrap();

    let broker = start_broker(dir.path(), settings).await;
    let bootstrap = broker.local_addr.to_string();
    let committed = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "busy-committer")
            .create()
            .unwrap();
        let mut wanted = TopicPartitionList::new();
        for partition in 0..4 {
            wanted.add_partition("committed", partition);
        }
        consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    for partition in 0..4 {
        let element = committed.find_partition("committed", partition).unwrap();
        assert_eq!(
            element.offset(),
            Offset::Offset(COMMITS * 10 + i64::from(partition))
        );
    }
    broker.shutdown().await.unwrap();
}
