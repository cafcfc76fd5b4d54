//! Consumer groups with real clients: a fleet of worker processes (confluent-kafka and
//! kafka-python, `compat/python/group_worker.py`) shares a topic, rebalances when a member
//! joins and when one is killed with SIGKILL (no LeaveGroup), and processes every message at
//! least once; rdkafka consumers in-process resume from committed offsets.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_compat::{BrokerProcess, free_listen_address, start_broker};

const GROUP_SETTINGS: &[(&str, &str)] = &[
    ("group.min.session.timeout.ms", "1000"),
    ("group.initial.rebalance.delay.ms", "300"),
    ("offsets.topic.num.partitions", "5"),
];
const TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Default)]
struct WorkerState {
    assignment: Option<BTreeSet<i32>>,
    processed: HashSet<(i32, i64)>,
    errors: Vec<String>,
}

struct Worker {
    name: String,
    child: Child,
    state: Arc<Mutex<WorkerState>>,
    alive: bool,
}

impl Worker {
    fn spawn(
        name: &str,
        bootstrap: &str,
        group: &str,
        topic: &str,
        client: &str,
        strategy: &str,
        instance: Option<&str>,
    ) -> Worker {
        let script = format!("{}/python/group_worker.py", env!("CARGO_MANIFEST_DIR"));
        let mut child =
            Command::new(std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into()))
                .args([
                    script.as_str(),
                    bootstrap,
                    group,
                    topic,
                    client,
                    strategy,
                    instance.unwrap_or(""),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 runs");
        let state = Arc::new(Mutex::new(WorkerState::default()));
        let stdout = child.stdout.take().unwrap();
        let shared = state.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut state = shared.lock().unwrap();
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    ["ASSIGNMENT", _, partitions] => {
                        state.assignment =
                            Some(partitions.split(',').map(|p| p.parse().unwrap()).collect());
                    }
                    ["ASSIGNMENT", _] => state.assignment = Some(BTreeSet::new()),
                    ["MSG", p, o] => {
                        state
                            .processed
                            .insert((p.parse().unwrap(), o.parse().unwrap()));
                    }
                    ["ERROR", ..] => state.errors.push(line.clone()),
                    _ => {}
                }
            }
        });
        Worker {
            name: name.to_string(),
            child,
            state,
            alive: true,
        }
    }

    fn assignment(&self) -> Option<BTreeSet<i32>> {
        self.state.lock().unwrap().assignment.clone()
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no LeaveGroup, no commit
        let _ = self.child.wait();
        self.alive = false;
    }

    fn stop(&mut self) {
        if self.alive {
            let _ = writeln!(self.child.stdin.as_mut().unwrap(), "STOP");
            let _ = self.child.wait();
            self.alive = false;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.alive {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until(what: &str, workers: &[Worker], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            let report: Vec<String> = workers
                .iter()
                .map(|w| format!("{}: {:?}", w.name, w.assignment()))
                .collect();
            panic!("timed out waiting for {what}; assignments: {report:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Live workers own disjoint partition sets covering the whole topic, each with its share.
fn balanced(workers: &[Worker], partitions: i32) -> bool {
    let live: Vec<BTreeSet<i32>> = workers
        .iter()
        .filter(|w| w.alive)
        .filter_map(Worker::assignment)
        .collect();
    if live.len() != workers.iter().filter(|w| w.alive).count() {
        return false;
    }
    let total: usize = live.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = live.iter().flatten().copied().collect();
    let fair = partitions as usize / live.len();
    total == partitions as usize
        && union.len() == partitions as usize
        && live.iter().all(|a| a.len() >= fair && a.len() <= fair + 1)
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, per_partition: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("{p}-{i}");
            producer
                .send(
                    BaseRecord::<(), str>::to(topic)
                        .partition(p)
                        .payload(value.as_str()),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let script = format!(
        "from confluent_kafka.admin import AdminClient, NewTopic\n\
         a = AdminClient({{'bootstrap.servers': '{bootstrap}'}})\n\
         [f.result(30) for f in a.create_topics([NewTopic('{topic}', {partitions}, 1)]).values()]"
    );
    let status = Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn fleet_scenario(client: &'static str, strategy: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), GROUP_SETTINGS).await;
    let bootstrap = broker.local_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let (topic, group, partitions) = ("fleet", "workers", 6);
        create_topic(&bootstrap, topic, partitions);
        produce(&bootstrap, topic, partitions, 100);

        let mut workers: Vec<Worker> = (0..3)
            .map(|i| {
                Worker::spawn(
                    &format!("w{i}"),
                    &bootstrap,
                    group,
                    topic,
                    client,
                    strategy,
                    None,
                )
            })
            .collect();
        wait_until("3 workers with 2 partitions each", &workers, || {
            balanced(&workers, partitions)
        });

        workers.push(Worker::spawn(
            "w3", &bootstrap, group, topic, client, strategy, None,
        ));
        wait_until("4 workers sharing 6 partitions", &workers, || {
            balanced(&workers, partitions)
        });
        produce(&bootstrap, topic, partitions, 100);

        workers[0].kill();
        wait_until(
            "3 survivors taking the killed worker's partitions",
            &workers,
            || balanced(&workers, partitions),
        );
        produce(&bootstrap, topic, partitions, 100);

        let expected: HashSet<(i32, i64)> = (0..partitions)
            .flat_map(|p| (0..300).map(move |o| (p, o)))
            .collect();
        wait_until("every message processed", &workers, || {
            let mut seen = HashSet::new();
            for w in &workers {
                seen.extend(w.state.lock().unwrap().processed.iter().copied());
            }
            expected.is_subset(&seen)
        });
        for w in &mut workers {
            w.stop();
            let errors = &w.state.lock().unwrap().errors;
            assert!(errors.is_empty(), "{}: {errors:?}", w.name);
        }
    })
    .await
    .unwrap();
    // The newest group API versions each client speaks.
    let negotiated: &[(&str, i16)] = match client {
        "confluent" => &[
            ("FindCoordinator", 2),
            ("JoinGroup", 5),
            ("SyncGroup", 3),
            ("Heartbeat", 3),
            ("LeaveGroup", 1),
            ("OffsetCommit", 9),
            ("OffsetFetch", 9),
        ],
        _ => &[
            ("FindCoordinator", 6),
            ("JoinGroup", 7),
            ("SyncGroup", 5),
            ("Heartbeat", 4),
            ("LeaveGroup", 5),
            ("OffsetCommit", 8),
            ("OffsetFetch", 8),
        ],
    };
    sluice_compat::assert_negotiated(&broker.broker, client, negotiated);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_fleet_eager_range() {
    fleet_scenario("confluent", "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_fleet_cooperative_sticky() {
    fleet_scenario("confluent", "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_fleet_roundrobin() {
    fleet_scenario("confluent", "roundrobin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_fleet_range() {
    fleet_scenario("kafka-python", "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_fleet_sticky() {
    fleet_scenario("kafka-python", "sticky").await;
}

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap()
}

/// Consumes until `count` messages arrived, committing each synchronously.
fn consume_committing(consumer: &BaseConsumer, count: usize) -> Vec<(i32, i64)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count}",
            got.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            got.push((message.partition(), message.offset()));
            consumer.commit_message(&message, CommitMode::Sync).unwrap();
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_group_resumes_from_committed_offsets_across_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), GROUP_SETTINGS).await;
    let addr = broker.local_addr;
    let bootstrap = addr.to_string();
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        create_topic(&b, "resume", 4);
        produce(&b, "resume", 4, 50);
        let consumer = group_consumer(&b, "resumers");
        consumer.subscribe(&["resume"]).unwrap();
        let first = consume_committing(&consumer, 120);
        // A partition list from librdkafka holds partition references: it must go before the
        // consumer, or destroying the consumer waits for them forever.
        let committed = consumer.committed(Duration::from_secs(10)).unwrap();
        assert_eq!(committed.count(), 4);
        drop(committed);
        drop(consumer); // leaves the group
        first.len()
    })
    .await
    .unwrap();

    // A clean restart, then an unclean one: the next consumer starts where the first stopped.
    broker.shutdown().await.unwrap();
    let broker = start_broker(
        dir.path(),
        &[GROUP_SETTINGS, &[("listeners", &bootstrap)]].concat(),
    )
    .await;
    broker.abort().await;
    let broker = start_broker(
        dir.path(),
        &[GROUP_SETTINGS, &[("listeners", &bootstrap)]].concat(),
    )
    .await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&b, "resumers");
        consumer.subscribe(&["resume"]).unwrap();
        let rest = consume_committing(&consumer, 80);
        let seen: HashSet<(i32, i64)> = rest.iter().copied().collect();
        assert_eq!(seen.len(), 80, "no message twice after a clean commit");
        // Nothing more: 200 produced, 120 + 80 consumed.
        assert!(
            consumer.poll(Duration::from_secs(2)).is_none(),
            "a message was delivered twice"
        );
        // The group without live members keeps its offsets until deleted.
        drop(consumer);
        let admin: rdkafka::admin::AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .create()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deleted = runtime
            .block_on(admin.delete_groups(&["resumers"], &rdkafka::admin::AdminOptions::new()))
            .unwrap();
        assert!(deleted[0].is_ok(), "{deleted:?}");
        let consumer = group_consumer(&b, "resumers");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition("resume", 0);
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            committed.elements()[0].offset(),
            rdkafka::Offset::Invalid,
            "offsets deleted with the group"
        );
        drop(committed);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

/// Not a test: the broker child process of `fleet_survives_broker_restarts`.
#[test]
#[ignore = "broker process of fleet_survives_broker_restarts, which runs it"]
fn broker_process() {
    sluice_compat::run_broker_process();
}

#[test]
fn fleet_survives_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_listen_address();
    let (topic, group, partitions) = ("restarts", "survivors", 6);
    let mut broker = BrokerProcess::start(dir.path(), &listen, GROUP_SETTINGS);
    create_topic(&listen, topic, partitions);
    produce(&listen, topic, partitions, 100);
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| {
            Worker::spawn(
                &format!("w{i}"),
                &listen,
                group,
                topic,
                "confluent",
                "range",
                None,
            )
        })
        .collect();
    wait_until("3 workers sharing the topic", &workers, || {
        balanced(&workers, partitions)
    });

    let all_processed = |workers: &[Worker], per_partition: i64| {
        let expected: HashSet<(i32, i64)> = (0..partitions)
            .flat_map(|p| (0..per_partition).map(move |o| (p, o)))
            .collect();
        wait_until("every message processed", workers, || {
            let mut seen = HashSet::new();
            for w in workers {
                seen.extend(w.state.lock().unwrap().processed.iter().copied());
            }
            expected.is_subset(&seen)
        });
    };
    all_processed(&workers, 100);

    // A clean restart, then a SIGKILL: the workers reconnect and go on from their commits.
    broker.stop();
    broker = BrokerProcess::start(dir.path(), &listen, GROUP_SETTINGS);
    produce(&listen, topic, partitions, 100);
    all_processed(&workers, 200);

    broker.kill();
    broker = BrokerProcess::start(dir.path(), &listen, GROUP_SETTINGS);
    produce(&listen, topic, partitions, 100);
    all_processed(&workers, 300);

    for w in &mut workers {
        w.stop();
    }
    broker.stop();
}
