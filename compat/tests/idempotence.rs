//! Idempotent producers through crashes: librdkafka (`enable.idempotence=true`) and the Java
//! client (idempotent by default) each send 1,000,000 numbered messages while the broker
//! process is killed with SIGKILL and restarted four times mid-stream. Afterwards the topic
//! must hold every acknowledged message exactly once, at the offset it was acknowledged
//! with, in the order it was sent within its partition.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_compat::{BrokerProcess, compile_java_check, free_listen_address, java_check};

const TOTAL: usize = 1_000_000;
const PARTITIONS: i32 = 4;
/// Acknowledged-message counts at which the broker is killed.
const KILL_AT: [usize; 4] = [150_000, 350_000, 550_000, 750_000];
const VALUE_SIZE: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(600);

/// Not a test: the broker child process that the tests kill and restart.
#[test]
#[ignore = "broker process of the idempotence tests, which run it"]
fn broker_process() {
    sluice_compat::run_broker_process();
}

fn value_for(id: usize) -> Vec<u8> {
    let mut value = vec![0u8; VALUE_SIZE];
    value[..8].copy_from_slice(&(id as u64).to_be_bytes());
    value
}

fn id_of(value: &[u8]) -> usize {
    assert_eq!(value.len(), VALUE_SIZE, "message value changed size");
    u64::from_be_bytes(value[..8].try_into().unwrap()) as usize
}

fn create_topic(bootstrap: &str, topic: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        assert!(results[0].is_ok(), "{results:?}");
    });
}

/// Kills and restarts the broker each time `acked` passes the next `KILL_AT` mark, until
/// `finished`. Returns the running broker. Panics if a kill would not be mid-stream.
fn strike_while_producing(
    dir: &Path,
    listen: &str,
    mut broker: BrokerProcess,
    acked: &AtomicUsize,
    finished: &AtomicBool,
) -> BrokerProcess {
    let deadline = Instant::now() + TIMEOUT;
    let mut marks = KILL_AT.iter().peekable();
    while !finished.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "producer did not finish");
        if let Some(&&mark) = marks.peek() {
            let now = acked.load(Ordering::SeqCst);
            if now >= mark {
                assert!(
                    now < TOTAL,
                    "the producer finished before the kill at {mark}"
                );
                broker.kill();
                eprintln!("killed the broker at {now} acknowledged messages");
                broker = BrokerProcess::start(dir, listen, &[]);
                marks.next();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        marks.peek().is_none(),
        "only {} of {} kills happened",
        KILL_AT.len() - marks.len(),
        KILL_AT.len()
    );
    broker
}

/// Reads the whole topic: per partition, (offset, message id) in log order.
fn read_topic(bootstrap: &str, topic: &str) -> HashMap<i32, Vec<(i64, usize)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "idempotence-check")
        .set("enable.auto.commit", "false")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(30))
            .unwrap();
        ends.insert(partition, high);
    }
    consumer.assign(&assignment).unwrap();
    let mut log: HashMap<i32, Vec<(i64, usize)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = |log: &HashMap<i32, Vec<(i64, usize)>>| {
        ends.iter().all(|(p, end)| {
            log.get(p)
                .and_then(|v| v.last())
                .map_or(*end == 0, |(o, _)| o + 1 >= *end)
        })
    };
    while !done(&log) {
        assert!(Instant::now() < deadline, "could not read the topic back");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            log.entry(message.partition())
                .or_default()
                .push((message.offset(), id_of(message.payload().unwrap())));
        }
    }
    log
}

/// The checks shared by both clients. `acks[id]` is the (partition, offset) the client was
/// given for message `id`, `None` if it was never acknowledged.
fn check_log(log: &HashMap<i32, Vec<(i64, usize)>>, acks: &[Option<(i32, i64)>]) {
    let mut copies = vec![0u32; TOTAL];
    for (partition, entries) in log {
        let mut previous: Option<usize> = None;
        for (offset, id) in entries {
            assert!(*id < TOTAL, "message id {id} out of range");
            copies[*id] += 1;
            assert!(
                previous.is_none_or(|p| p < *id),
                "partition {partition} offset {offset}: message {id} after {previous:?}: out of order or duplicated"
            );
            previous = Some(*id);
            if let Some(acked) = acks[*id] {
                assert_eq!(
                    acked,
                    (*partition, *offset),
                    "message {id} is not where it was acknowledged"
                );
            }
        }
    }
    let duplicated = copies.iter().filter(|c| **c > 1).count();
    assert_eq!(duplicated, 0, "{duplicated} messages stored more than once");
    let lost: Vec<usize> = (0..TOTAL)
        .filter(|id| acks[*id].is_some() && copies[*id] == 0)
        .take(10)
        .collect();
    assert!(lost.is_empty(), "acknowledged but missing: {lost:?}");
    let acked = acks.iter().filter(|a| a.is_some()).count();
    // Long delivery timeouts: every message must get through the crashes.
    assert_eq!(acked, TOTAL, "messages that were never acknowledged");
}

/// librdkafka's delivery reports, by message id.
struct Reports {
    acks: std::sync::Mutex<Vec<Option<(i32, i64)>>>,
    errors: std::sync::Mutex<Vec<String>>,
    acked: AtomicUsize,
}

#[derive(Clone)]
struct ReportContext(Arc<Reports>);

impl ClientContext for ReportContext {}

impl ProducerContext for ReportContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let id = id_of(message.payload().unwrap());
                self.0.acks.lock().unwrap()[id] = Some((message.partition(), message.offset()));
                self.0.acked.fetch_add(1, Ordering::SeqCst);
            }
            Err((err, _)) => {
                let mut errors = self.0.errors.lock().unwrap();
                if errors.len() < 10 {
                    errors.push(err.to_string());
                }
            }
        }
    }
}

#[test]
fn librdkafka_idempotent_producer_survives_sigkills_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_listen_address();
    let broker = BrokerProcess::start(dir.path(), &listen, &[]);
    let topic = "idempotent-rdkafka";
    create_topic(&listen, topic);
    let reports = Arc::new(Reports {
        acks: std::sync::Mutex::new(vec![None; TOTAL]),
        errors: std::sync::Mutex::new(Vec::new()),
        acked: AtomicUsize::new(0),
    });
    let finished = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (reports, finished, listen) = (reports.clone(), finished.clone(), listen.clone());
        std::thread::spawn(move || {
            let producer: ThreadedProducer<ReportContext> = ClientConfig::new()
                .set("bootstrap.servers", &listen)
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .set("message.timeout.ms", "300000")
                .set("socket.timeout.ms", "10000")
                .set("reconnect.backoff.ms", "50")
                .set("reconnect.backoff.max.ms", "500")
                .create_with_context(ReportContext(reports))
                .unwrap();
            for id in 0..TOTAL {
                let key = format!("k{}", id % 64);
                let value = value_for(id);
                let mut record = BaseRecord::to(topic).key(&key).payload(&value);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((err, returned)) => {
                            assert!(
                                matches!(
                                    err.rdkafka_error_code(),
                                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                                ),
                                "send failed: {err}"
                            );
                            record = returned;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            }
            producer
                .flush(TIMEOUT)
                .expect("everything delivered or failed");
            finished.store(true, Ordering::SeqCst);
        })
    };
    let broker = strike_while_producing(dir.path(), &listen, broker, &reports.acked, &finished);
    producer_thread.join().unwrap();
    let errors = reports.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "delivery failures: {errors:?}");
    let log = read_topic(&listen, topic);
    check_log(&log, &reports.acks.lock().unwrap());
    broker.stop();
}

#[test]
fn java_idempotent_producer_survives_sigkills_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_listen_address();
    let broker = BrokerProcess::start(dir.path(), &listen, &[]);
    let topic = "idempotent-java";
    create_topic(&listen, topic);
    let classes = tempfile::tempdir().unwrap();
    let classpath = compile_java_check(classes.path());
    let ack_file = classes.path().join("acks.txt");
    let mut child = java_check(&classpath, &listen, "idempotent-crashes")
        .arg(topic)
        .arg(TOTAL.to_string())
        .arg(&ack_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("java runs");
    let acked = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let reader = {
        let (acked, finished) = (acked.clone(), finished.clone());
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut done = None;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if let Some(n) = line.strip_prefix("ACKED ") {
                    acked.store(n.parse().unwrap(), Ordering::SeqCst);
                } else if line.starts_with("DONE") {
                    done = Some(line);
                }
            }
            finished.store(true, Ordering::SeqCst);
            done
        })
    };
    let broker = strike_while_producing(dir.path(), &listen, broker, &acked, &finished);
    let done = reader.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "Java producer failed: {done:?}");
    let done = done.expect("the Java producer reports its result");
    assert!(done.contains(&format!("acked={TOTAL} failed=0")), "{done}");
    let acks: Vec<Option<(i32, i64)>> = std::fs::read_to_string(&ack_file)
        .unwrap()
        .lines()
        .map(|line| {
            let (partition, offset) = line.split_once(' ').unwrap();
            let offset: i64 = offset.parse().unwrap();
            (offset >= 0).then(|| (partition.parse().unwrap(), offset))
        })
        .collect();
    assert_eq!(acks.len(), TOTAL);
    let log = read_topic(&listen, topic);
    check_log(&log, &acks);
    broker.stop();
}
