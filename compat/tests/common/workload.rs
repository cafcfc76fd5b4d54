//! The workload and checker the fault tests share (Jepsen's "queue" workload, Kafka
//! style): an idempotent acks=all producer writing sequence numbers to a topic of 3
//! partitions, replication factor 3 and `min.insync.replicas=2`; after the faults, every
//! partition read back from its log start to its high watermark and compared with what the
//! producer was told.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub const TOPIC: &str = "replicated";
pub const PARTITIONS: i32 = 3;
pub const GROUP: &str = "survivors";

pub fn config(bootstrap: &str) -> ClientConfig {
    let mut config = super::client_config(bootstrap);
    config.set("topic.metadata.refresh.interval.ms", "1000");
    config
}

/// Partition → (leader, ISR) as a broker's Metadata reports it.
pub fn placement(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let consumer: BaseConsumer = config(bootstrap).create().unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), (p.leader(), p.isr().to_vec())))
        .collect()
}

/// Waits until every partition of `topic` has a leader other than `not` and `isr` in sync
/// replicas; returns the placement.
pub fn wait_placed(
    bootstrap: &str,
    topic: &str,
    not: Option<i32>,
    isr: usize,
    within: Duration,
) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let deadline = Instant::now() + within;
    loop {
        let placed = placement(bootstrap, topic);
        let settled = !placed.is_empty()
            && placed.values().all(|(leader, in_sync)| {
                *leader > 0 && Some(*leader) != not && in_sync.len() >= isr
            });
        if settled {
            return placed;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: not placed as wanted (leader not {not:?}, {isr} in sync): {placed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the producer saw: acknowledged (partition, offset) → sequence number, and the
/// sequence numbers whose outcome is unknown (failed or timed out: they may or may not be
/// in the log, at most once).
#[derive(Default)]
pub struct Ledger {
    pub acknowledged: BTreeMap<(i32, i64), u64>,
    pub uncertain: BTreeSet<u64>,
    /// When each acknowledgement arrived.
    pub acked_at: Vec<Instant>,
}

/// Writes sequence numbers to the topic's partitions round-robin, 16 in flight, until
/// `stop`: an idempotent acks=all producer, as a Kafka user configures one.
pub async fn produce_until(
    bootstrap: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    width: usize,
) {
    let producer: FutureProducer = config(&bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut seq = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        // Zero-padded to `width` bytes: the checker parses them back all the same.
        let values: Vec<(u64, String)> = (seq..seq + 16)
            .map(|s| (s, format!("{s:0>width$}")))
            .collect();
        seq += 16;
        let mut sends = Vec::new();
        for (seq, value) in &values {
            let partition = (seq % PARTITIONS as u64) as i32;
            let record = FutureRecord::to(TOPIC)
                .partition(partition)
                .key("k")
                .payload(value);
            sends.push((*seq, producer.send(record, Duration::from_secs(60))));
        }
        for (seq, send) in sends {
            let outcome = send.await;
            let mut ledger = ledger.lock().unwrap();
            match outcome {
                Ok(delivery) => {
                    ledger
                        .acknowledged
                        .insert((delivery.partition, delivery.offset), seq);
                    ledger.acked_at.push(Instant::now());
                }
                Err(_) => {
                    ledger.uncertain.insert(seq);
                }
            }
        }
    }
}

/// Every record of every partition, read back from the log start to the high watermark:
/// partition → (offset, sequence number) in log order.
pub fn read_everything(bootstrap: &str) -> BTreeMap<i32, Vec<(i64, u64)>> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "checker")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, partition, Duration::from_secs(10))
            .unwrap();
        ends.insert(partition, high);
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut log: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    let done = |log: &BTreeMap<i32, Vec<(i64, u64)>>| {
        ends.iter().all(|(p, end)| {
            *end == 0
                || log
                    .get(p)
                    .and_then(|r| r.last())
                    .is_some_and(|(o, _)| o + 1 >= *end)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&log) {
        assert!(Instant::now() < deadline, "read back stalled: {ends:?}");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let seq = std::str::from_utf8(message.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            log.entry(message.partition())
                .or_default()
                .push((message.offset(), seq));
        }
    }
    log
}

/// The checker: what the producer was told against what the log holds.
pub fn check(ledger: &Ledger, log: &BTreeMap<i32, Vec<(i64, u64)>>) {
    let mut at: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut seen: BTreeMap<u64, (i32, i64)> = BTreeMap::new();
    for (partition, records) in log {
        let mut previous: Option<u64> = None;
        for (offset, seq) in records {
            assert!(
                at.insert((*partition, *offset), *seq).is_none(),
                "offset {partition}/{offset} read twice"
            );
            if let Some(first) = seen.insert(*seq, (*partition, *offset)) {
                panic!("{seq} is in the log twice: at {first:?} and {partition}/{offset}");
            }
            assert_eq!(
                *seq % PARTITIONS as u64,
                *partition as u64,
                "{seq} in the wrong partition"
            );
            if let Some(previous) = previous {
                assert!(
                    *seq > previous,
                    "partition {partition}: {seq} after {previous} at offset {offset}"
                );
            }
            previous = Some(*seq);
        }
    }
    for ((partition, offset), seq) in &ledger.acknowledged {
        assert_eq!(
            at.get(&(*partition, *offset)),
            Some(seq),
            "acknowledged {seq} at {partition}/{offset} is not there"
        );
    }
    let unacknowledged = seen.len() - ledger.acknowledged.len();
    eprintln!(
        "checker: {} acknowledged writes all present once, in order; {} records in the log, \
         {unacknowledged} of them unacknowledged; {} writes of unknown outcome",
        ledger.acknowledged.len(),
        seen.len(),
        ledger.uncertain.len()
    );
}

/// The test topic: three partitions on every node, `min.insync.replicas=2`; placed by the
/// controller, or as `assignments` says.
pub async fn create_topic(bootstrap: &str, assignments: Option<&[&[i32]]>) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let replication = match assignments {
        Some(replicas) => TopicReplication::Variable(replicas),
        None => TopicReplication::Fixed(3),
    };
    let topic = NewTopic::new(TOPIC, PARTITIONS, replication).set("min.insync.replicas", "2");
    let result = admin.create_topics(&[topic], &options).await.unwrap();
    assert!(result[0].is_ok(), "{result:?}");
}

/// Java's `String.hashCode`, which places a group in a `__consumer_offsets` partition.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Reads every partition back (off the runtime's threads) and runs [`check`] against what
/// the producer was told.
pub async fn read_back_and_check(bootstrap: &str, ledger: &Mutex<Ledger>) {
    let bootstrap = bootstrap.to_string();
    let log = tokio::task::spawn_blocking(move || read_everything(&bootstrap))
        .await
        .unwrap();
    check(&ledger.lock().unwrap(), &log);
}

/// The committed offsets of `group` on the test topic's partitions (-1: none).
pub fn committed_offsets(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        wanted.add_partition(TOPIC, partition);
    }
    let found = consumer
        .committed_offsets(wanted, Duration::from_secs(30))
        .unwrap();
    found
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), offset)
        })
        .collect()
}
