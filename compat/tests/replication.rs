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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::workload::*;
use common::{Cluster, NODES, wait_for};

#[test]
#[ignore = "the broker child process of the replication tests"]
fn broker_process() {
    sluice_compat::run_broker_process();
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
    read_back_and_check(&bootstrap, &ledger).await;
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
        move || committed_offsets(&bootstrap, GROUP)
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
    cluster.stop_all();
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
    let disk = common::SmallDisk::mount(&cluster.node(FULL).dir, "3m");
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
    read_back_and_check(&bootstrap, &ledger).await;
    cluster.stop_all();
    drop(disk);
}
