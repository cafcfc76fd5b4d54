//! Replicated partitions under faults, with real clients and a checker that reads
//! everything back. Three combined nodes, a topic of replication factor 3 with
//! `min.insync.replicas=2`, an idempotent acks=all producer writing all along while the
//! leader of its busiest partition is SIGKILLed and restarted again and again, and once
//! paused (SIGSTOP) past the session timeout and resumed. Then the checker: every
//! acknowledged write is in the log exactly once, at the offset it was acknowledged with,
//! in order; nothing is in the log twice. Then the group coordinator fails over and the
//! group's committed offsets are still there; then two of three nodes die and nothing is
//! acknowledged until one returns.
//!
//! `SLUICE_REPLICATION_KILLS` sets how many leader kills (default 6; the long run
//! is 20: see docs/TESTING.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::{Cluster, NODES, wait_for};

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;
const GROUP: &str = "survivors";

#[test]
#[ignore = "the broker child process of the replication tests"]
fn broker_process() {
    sluice_compat::run_broker_process();
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut config = common::client_config(bootstrap);
    config.set("topic.metadata.refresh.interval.ms", "1000");
    config
}

/// Partition → (leader, ISR) as a broker's Metadata reports it.
fn placement(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
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
fn wait_placed(
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
struct Ledger {
    acknowledged: BTreeMap<(i32, i64), u64>,
    uncertain: BTreeSet<u64>,
    /// When each acknowledgement arrived.
    acked_at: Vec<Instant>,
}

/// Writes sequence numbers to the topic's partitions round-robin, 16 in flight, until
/// `stop`: an idempotent acks=all producer, as a Kafka user configures one.
async fn produce_until(
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
fn read_everything(bootstrap: &str) -> BTreeMap<i32, Vec<(i64, u64)>> {
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
fn check(ledger: &Ledger, log: &BTreeMap<i32, Vec<(i64, u64)>>) {
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
async fn create_topic(bootstrap: &str, assignments: Option<&[&[i32]]>) {
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
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kills_and_pauses() {
    let kills: usize = std::env::var("SLUICE_REPLICATION_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(6);
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(root.path(), &[("replica.lag.time.max.ms", "10000")]);
    for id in 1..=NODES {
        cluster.spawn(id, None);
    }
    for id in 1..=NODES {
        cluster.wait_ready(id);
    }
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, None).await;
    wait_placed(&bootstrap, TOPIC, None, 3, Duration::from_secs(30));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = tokio::spawn(produce_until(
        bootstrap.clone(),
        ledger.clone(),
        stop.clone(),
        0,
    ));
    let acked = || ledger.lock().unwrap().acknowledged.len();
    let blocking = |within: Duration, what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    blocking(Duration::from_secs(30), "first writes", &|| acked() > 100);

    let mut recoveries = Vec::new();
    for round in 0..=kills {
        let placed = wait_placed(&bootstrap, TOPIC, None, 3, Duration::from_secs(60));
        let leader = placed[&0].0;
        let before = acked();
        let fault_at = Instant::now();
        let paused = round == kills;
        if paused {
            // The last fault: a pause past the session timeout. The paused leader is
            // fenced and replaced; resumed, it must not take writes as a stale leader, and
            // whatever it has that the new leader does not is truncated.
            cluster.signal(leader, "-STOP");
        } else {
            cluster.kill(leader);
        }
        wait_placed(&bootstrap, TOPIC, Some(leader), 2, Duration::from_secs(60));
        let acked_at = {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let first = {
                    let ledger = ledger.lock().unwrap();
                    ledger.acked_at.get(before).copied()
                };
                if let Some(first) = first.filter(|t| *t > fault_at) {
                    break first;
                }
                assert!(
                    Instant::now() < deadline,
                    "no write acknowledged after the fault"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        recoveries.push(acked_at.saturating_duration_since(fault_at));
        if paused {
            cluster.signal(leader, "-CONT");
        } else {
            cluster.spawn(leader, None);
            cluster.wait_ready(leader);
        }
        eprintln!(
            "round {round}: {} leader {leader}, writes acknowledged again after {:?}",
            if paused { "paused" } else { "killed" },
            recoveries.last().unwrap()
        );
    }
    // Everyone back in sync, some more writes, then the producer stops.
    wait_placed(&bootstrap, TOPIC, None, 3, Duration::from_secs(60));
    let before = acked();
    blocking(Duration::from_secs(30), "writes after the faults", &|| {
        acked() > before + 100
    });
    stop.store(true, std::sync::atomic::Ordering::Release);
    producer.await.unwrap();
    let log = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || read_everything(&bootstrap)
    })
    .await
    .unwrap();
    check(&ledger.lock().unwrap(), &log);
    let mut sorted = recoveries.clone();
    sorted.sort();
    eprintln!(
        "fault to next acknowledged write over {} faults: median {:?}, max {:?}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted.last().unwrap()
    );

    // The group's coordinator fails over: its committed offsets are in the replicated
    // __consumer_offsets and the new coordinator has them.
    let committed: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 7 + i64::from(p))).collect();
    tokio::task::spawn_blocking({
        let (bootstrap, committed) = (bootstrap.clone(), committed.clone());
        move || {
            let consumer: BaseConsumer = config(&bootstrap)
                .set("group.id", GROUP)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut offsets = TopicPartitionList::new();
            for (p, o) in &committed {
                offsets
                    .add_partition_offset(TOPIC, *p, Offset::Offset(*o))
                    .unwrap();
            }
            consumer.commit(&offsets, CommitMode::Sync).unwrap();
        }
    })
    .await
    .unwrap();
    let offsets_partition = java_hash(GROUP).unsigned_abs() as i32 % 50;
    let offsets_placed = placement(&bootstrap, "__consumer_offsets")[&offsets_partition].clone();
    eprintln!("__consumer_offsets-{offsets_partition}: leader and ISR {offsets_placed:?}");
    let coordinator = offsets_placed.0;
    cluster.kill(coordinator);
    wait_for(Duration::from_secs(60), "a new coordinator", || {
        placement(&bootstrap, "__consumer_offsets")
            .get(&offsets_partition)
            .is_some_and(|(leader, _)| *leader > 0 && *leader != coordinator)
    });
    let read_back = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || {
            let consumer: BaseConsumer = config(&bootstrap)
                .set("group.id", GROUP)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut wanted = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                wanted.add_partition(TOPIC, p);
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
                        other => panic!("partition {}: {other:?}", e.partition()),
                    };
                    (e.partition(), offset)
                })
                .collect::<BTreeMap<i32, i64>>()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        read_back, committed,
        "committed offsets after coordinator failover"
    );

    // Two of three down (the coordinator above, and one more): no quorum, no ISR to
    // satisfy min.insync.replicas. Nothing may be acknowledged; a node returning restores
    // writes.
    let second = (1..=NODES).find(|id| *id != coordinator).unwrap();
    cluster.kill(second);
    let survivor = (1..=NODES)
        .find(|id| *id != coordinator && *id != second)
        .unwrap();
    let lone = cluster.node(survivor).client.clone();
    let refused = {
        let producer: FutureProducer = config(&lone)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "8000")
            .create()
            .unwrap();
        let record = FutureRecord::to(TOPIC)
            .partition(0)
            .key("k")
            .payload("lost?");
        producer.send(record, Duration::from_secs(10)).await
    };
    assert!(
        refused.is_err(),
        "acknowledged with two of three nodes down: {refused:?}"
    );
    cluster.spawn(second, None);
    cluster.wait_ready(second);
    wait_placed(&bootstrap, TOPIC, None, 2, Duration::from_secs(60));
    let producer: FutureProducer = config(&bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let record = FutureRecord::to(TOPIC)
        .partition(0)
        .key("k")
        .payload("back");
    if let Err(err) = producer.send(record, Duration::from_secs(60)).await {
        panic!(
            "no write acknowledged once two nodes are up: {err:?}; placement {:?}",
            placement(&bootstrap, TOPIC)
        );
    }
    for node in &mut cluster.nodes {
        if let Some(process) = node.process.take() {
            process.stop();
        }
    }
}

/// A node's data directory on a small tmpfs of its own (its metadata log elsewhere, as
/// `metadata.log.dir` allows), unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "mounting a tmpfs failed: the disk-full test runs as root (scripts/test)"
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    fn resize(&self, size: &str) {
        let resized = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(resized, "remounting the tmpfs at {size}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Issue 16 (c): one node's disk fills up under an acks=all load. The partition it leads
/// moves to an in-sync replica and it leaves the ISR of the partitions it follows, at once
/// (the ISR lag time is set far beyond the test: only the storage failure can move them),
/// while writes go on being acknowledged by the other two. Once space returns the node
/// copies what it missed and rejoins every ISR (restarted first if its logs went offline:
/// a failed fsync, like Kafka's offline log directory, needs a restart). Then the checker
/// reads everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_one_node_moves_its_partitions_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(
        root.path(),
        &[
            ("replica.lag.time.max.ms", "600000"),
            ("auto.leader.rebalance.enable", "false"),
        ],
    );
    const FULL: i32 = 3;
    let disk = SmallDisk::mount(&cluster.node(FULL).dir, "3m");
    let metadata_dir = root.path().join("node-3-metadata");
    cluster.set_node_props(
        FULL,
        &[("metadata.log.dir", metadata_dir.to_str().unwrap())],
    );
    for id in 1..=NODES {
        cluster.spawn(id, None);
    }
    for id in 1..=NODES {
        cluster.wait_ready(id);
    }
    let bootstrap = cluster.bootstrap();
    // Node 3 leads partition 0 and follows the other two.
    create_topic(&bootstrap, Some(&[&[3, 1, 2], &[1, 2, 3], &[2, 3, 1]])).await;
    let placed = wait_placed(&bootstrap, TOPIC, None, 3, Duration::from_secs(30));
    assert_eq!(placed[&0].0, FULL, "{placed:?}");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = tokio::spawn(produce_until(
        bootstrap.clone(),
        ledger.clone(),
        stop.clone(),
        1000,
    ));
    let acked = || ledger.lock().unwrap().acknowledged.len();
    let out_of_everything = |placed: &BTreeMap<i32, (i32, Vec<i32>)>| {
        placed.len() == PARTITIONS as usize
            && placed
                .values()
                .all(|(leader, isr)| *leader > 0 && *leader != FULL && !isr.contains(&FULL))
    };
    let bootstrap_ = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(90), "node 3 out of every ISR", || {
            out_of_everything(&placement(&bootstrap_, TOPIC))
        });
    })
    .await
    .unwrap();
    eprintln!(
        "disk full: node 3 leads nothing and is in no ISR; {} writes acknowledged",
        acked()
    );
    let before = acked();
    let more = || acked() > before + 300;
    tokio::task::spawn_blocking({
        let ledger = ledger.clone();
        move || {
            wait_for(Duration::from_secs(60), "writes on the other two", || {
                ledger.lock().unwrap().acknowledged.len() > before + 300
            });
        }
    })
    .await
    .unwrap();
    assert!(more());

    // Space returns.
    disk.resize("512m");
    let node = cluster.node(FULL).http.clone();
    let readiness = tokio::task::spawn_blocking(move || common::get_text(&node, "/readyz"))
        .await
        .unwrap();
    if readiness.contains("offline") {
        eprintln!("node 3's logs went offline ({readiness}): restarting it");
        cluster.kill(FULL);
        cluster.spawn(FULL, None);
        cluster.wait_ready(FULL);
    }
    let bootstrap_ = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        wait_placed(&bootstrap_, TOPIC, None, 3, Duration::from_secs(90))
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    producer.await.unwrap();
    let log = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || read_everything(&bootstrap)
    })
    .await
    .unwrap();
    check(&ledger.lock().unwrap(), &log);
    for node in &mut cluster.nodes {
        if let Some(process) = node.process.take() {
            process.stop();
        }
    }
    drop(disk);
}
