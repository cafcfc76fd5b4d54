//! librdkafka 2.x (through the Rust `rdkafka` crate) against a real broker over TCP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryFuture, FutureProducer, FutureRecord, Producer, ProducerContext,
};
use rdkafka::{ClientContext, Offset, Timestamp, TopicPartitionList};
use sluice_compat::start_broker;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A delivery report: (partition, offset) or the error.
type Report = Result<(i32, i64), String>;

/// Collects delivery reports.
#[derive(Default, Clone)]
struct Deliveries(Arc<Mutex<Vec<Report>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let entry = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((err, _)) => Err(err.to_string()),
        };
        self.0.lock().unwrap().push(entry);
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000");
    config
}

fn producer(
    bootstrap: &str,
    extra: &[(&str, &str)],
) -> (rdkafka::producer::BaseProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let mut config = client_config(bootstrap);
    config
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    (
        config
            .create_with_context(deliveries.clone())
            .expect("producer"),
        deliveries,
    )
}

fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("check.crcs", "true");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("consumer")
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap).create().expect("admin")
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin(bootstrap)
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    results[0].as_ref().expect("topic created");
}

#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

fn message_for(i: usize) -> Sent {
    let key = (!i.is_multiple_of(5)).then(|| format!("key-{}", i % 17).into_bytes());
    let value = (!i.is_multiple_of(11)).then(|| {
        let mut v = format!("value-{i}-").into_bytes();
        v.extend((0..(i * 7) % 300).map(|j| (j % 251) as u8));
        v
    });
    let headers = (0..i % 3)
        .map(|h| {
            (
                format!("h{h}"),
                if h == 1 {
                    None
                } else {
                    Some(format!("v{i}.{h}").into_bytes())
                },
            )
        })
        .collect();
    Sent {
        key,
        value,
        headers,
        timestamp: 1_700_000_000_000 + i as i64,
    }
}

fn send_all(
    producer: &rdkafka::producer::BaseProducer<Deliveries>,
    topic: &str,
    partition: Option<i32>,
    messages: &[Sent],
) {
    for m in messages {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .timestamp(m.timestamp)
            .headers(headers);
        if let Some(key) = &m.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &m.value {
            record = record.payload(value.as_slice());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((err, back)) => {
                    assert!(
                        matches!(
                            err.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "send failed: {err}"
                    );
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
    }
    producer.flush(TIMEOUT).expect("flush");
}

/// Consumes `count` messages from the beginning of every partition of `topic`.
fn consume(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<(i32, i64, Sent)> {
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let timestamp = match message.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
            Timestamp::NotAvailable => -1,
        };
        out.push((
            message.partition(),
            message.offset(),
            Sent {
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
                timestamp,
            },
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&bootstrap, &topic, 1, &[]).await;
        let messages: Vec<Sent> = (0..300).map(message_for).collect();
        let (p, deliveries) = producer(
            &bootstrap,
            &[("compression.type", codec), ("batch.num.messages", "50")],
        );
        let b = bootstrap.clone();
        let t = topic.clone();
        let m = messages.clone();
        let got = tokio::task::spawn_blocking(move || {
            send_all(&p, &t, Some(0), &m);
            consume(&consumer(&b, &[]), &t, 1, m.len())
        })
        .await
        .unwrap();
        let reports = deliveries.0.lock().unwrap().clone();
        assert!(reports.iter().all(Result::is_ok), "{codec}: {reports:?}");
        assert_eq!(got.len(), messages.len());
        for (i, (partition, offset, message)) in got.iter().enumerate() {
            assert_eq!((*partition, *offset), (0, i as i64), "{codec}");
            assert_eq!(message, &messages[i], "{codec}: message {i}");
        }
    }
    sluice_compat::assert_negotiated(
        &broker.broker,
        "librdkafka 2.12.1",
        &[
            ("ApiVersions", 3),
            ("Metadata", 13),
            ("Produce", 10),
            ("Fetch", 16),
            ("ListOffsets", 7),
        ],
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_messages_and_ordering_under_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "big", 1, &[("max.message.bytes", "2097152")]).await;
    create_topic(&bootstrap, "ordered", 1, &[]).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let big: Vec<Sent> = (0..6)
            .map(|i| Sent {
                key: Some(vec![i as u8]),
                value: Some((0..1 << 20).map(|j| ((j * 31 + i) % 256) as u8).collect()),
                headers: vec![],
                timestamp: 1_700_000_000_000 + i as i64,
            })
            .collect();
        let (p, _) = producer(
            &b,
            &[
                ("message.max.bytes", "2097152"),
                ("compression.type", "none"),
            ],
        );
        send_all(&p, "big", Some(0), &big);
        let got = consume(
            &consumer(&b, &[("fetch.max.bytes", "1048576")]),
            "big",
            1,
            big.len(),
        );
        for (i, (_, _, m)) in got.iter().enumerate() {
            assert_eq!(m.value.as_ref().unwrap().len(), 1 << 20);
            assert!(m == &big[i], "1 MiB message {i} differs");
        }

        // Many small batches in flight on one connection: order must hold.
        let (p, _) = producer(
            &b,
            &[
                ("linger.ms", "0"),
                ("max.in.flight.requests.per.connection", "20"),
            ],
        );
        let ordered: Vec<Sent> = (0..20_000)
            .map(|i| Sent {
                key: None,
                value: Some(i.to_string().into_bytes()),
                headers: vec![],
                timestamp: 1_700_000_000_000,
            })
            .collect();
        send_all(&p, "ordered", Some(0), &ordered);
        let got = consume(&consumer(&b, &[]), "ordered", 1, ordered.len());
        for (i, (_, offset, m)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64);
            assert_eq!(
                m.value.as_deref(),
                Some(i.to_string().as_bytes()),
                "order broken at {i}"
            );
        }
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_deletion_auto_creation_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("num.partitions", "3")]).await;
    let bootstrap = broker.local_addr.to_string();
    // Auto-creation: producing to an unknown topic creates it with num.partitions.
    let b = bootstrap.clone();
    let times: HashMap<i32, i64> = tokio::task::spawn_blocking(move || {
        let (p, deliveries) = producer(&b, &[]);
        let messages: Vec<Sent> = (0..90)
            .map(|i| Sent {
                key: Some(vec![i as u8]),
                value: Some(vec![i as u8]),
                headers: vec![],
                timestamp: 1_700_000_000_000 + 1000 * i as i64,
            })
            .collect();
        send_all(&p, "auto-created", None, &messages);
        assert!(deliveries.0.lock().unwrap().iter().all(Result::is_ok));
        let metadata = p
            .client()
            .fetch_metadata(Some("auto-created"), TIMEOUT)
            .unwrap();
        assert_eq!(metadata.topics()[0].partitions().len(), 3);

        // offsets_for_times: first offset at or after the timestamp, per partition.
        let c = consumer(&b, &[]);
        let mut query = TopicPartitionList::new();
        for partition in 0..3 {
            query
                .add_partition_offset(
                    "auto-created",
                    partition,
                    Offset::Offset(1_700_000_000_000 + 45_000),
                )
                .unwrap();
        }
        let answer = c.offsets_for_times(query, TIMEOUT).unwrap();
        let all = consume(&c, "auto-created", 3, 90);
        let mut found = HashMap::new();
        for element in answer.elements() {
            let Offset::Offset(offset) = element.offset() else {
                panic!("no offset for {}", element.partition())
            };
            let expected = all
                .iter()
                .filter(|(p, _, m)| {
                    *p == element.partition() && m.timestamp >= 1_700_000_000_000 + 45_000
                })
                .map(|(_, o, _)| *o)
                .min()
                .unwrap_or(-1);
            assert_eq!(offset, expected, "partition {}", element.partition());
            found.insert(element.partition(), offset);
        }
        found
    })
    .await
    .unwrap();
    assert_eq!(times.len(), 3);

    // Adding partitions, then deleting the topic.
    let admin = admin(&bootstrap);
    let added = admin
        .create_partitions(
            &[NewPartitions::new("auto-created", 5)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    added[0].as_ref().unwrap();
    let deleted = admin
        .delete_topics(&["auto-created"], &AdminOptions::new())
        .await
        .unwrap();
    deleted[0].as_ref().unwrap();
    let again = admin
        .delete_topics(&["auto-created"], &AdminOptions::new())
        .await
        .unwrap();
    assert!(again[0].is_err(), "deleting twice must fail");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    let bootstrap = addr.to_string();
    create_topic(&bootstrap, "restart", 2, &[]).await;
    let producer: FutureProducer = client_config(&bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .set("reconnect.backoff.ms", "50")
        .create()
        .unwrap();
    let send = |i: usize| -> DeliveryFuture {
        let payload = format!("m{i}");
        let record = FutureRecord::<(), str>::to("restart")
            .partition((i % 2) as i32)
            .payload(payload.as_str());
        producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("enqueue")
    };
    let mut pending: Vec<DeliveryFuture> = (0..500).map(send).collect();
    for delivery in pending.drain(..) {
        delivery.await.unwrap().expect("delivered before restart");
    }
    // Restart on the same port; the producer keeps going and reconnects.
    let in_flight: Vec<DeliveryFuture> = (500..1000).map(send).collect();
    broker.shutdown().await.unwrap();
    let broker = start_broker(dir.path(), &[("listeners", &bootstrap)]).await;
    let more: Vec<DeliveryFuture> = (1000..1500).map(send).collect();
    for delivery in in_flight.into_iter().chain(more) {
        delivery
            .await
            .unwrap()
            .expect("delivered across the restart");
    }
    let b = bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || consume(&consumer(&b, &[]), "restart", 2, 1500))
        .await
        .unwrap();
    let mut values: Vec<String> = got
        .iter()
        .map(|(_, _, m)| String::from_utf8(m.value.clone().unwrap()).unwrap())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(
        values.len(),
        1500,
        "every acknowledged message exactly once"
    );
    for partition in 0..2 {
        let offsets: Vec<i64> = got
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, o, _)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {partition} offsets"
        );
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "wide", 1000, &[]).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let (p, deliveries) = producer(&b, &[("linger.ms", "20")]);
        for partition in 0..1000 {
            let value = format!("p{partition}");
            let record = BaseRecord::<(), str>::to("wide")
                .partition(partition)
                .payload(value.as_str());
            p.send(record).map_err(|(e, _)| e).unwrap();
        }
        p.flush(TIMEOUT).unwrap();
        assert_eq!(
            deliveries
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.is_ok())
                .count(),
            1000
        );
        let got = consume(&consumer(&b, &[]), "wide", 1000, 1000);
        for (partition, offset, m) in got {
            assert_eq!(offset, 0);
            assert_eq!(m.value.unwrap(), format!("p{partition}").into_bytes());
        }
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
