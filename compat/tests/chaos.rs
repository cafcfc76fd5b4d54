//! The cluster fault harness: a seeded, time-bounded run of random faults against a 3-node
//! cluster (RF 3, `min.insync.replicas=2`) under load, then a checker, and a report with the
//! timeline of faults and what was checked.
//!
//! Load: the idempotent acks=all producer of `common::workload`; a consumer reading every
//! partition all along (what it is given must still be in the log at the same offset at the
//! end: nothing read above the high watermark, no offset that changes); a group member
//! committing increasing offsets (the group's committed offsets never go back behind an
//! acknowledged commit).
//!
//! Each node runs in a network namespace of its own (`common::netns`), under libfaketime,
//! and reaches the other voters' quorum listeners through `FaultProxy`s. Faults, one at a
//! time, each undone before a calm pause:
//! - processes: SIGKILL of partition 0's leader (restarted after), SIGSTOP within or past
//!   the session timeout;
//! - the network, all traffic between nodes (IP rules on the host; the clients still reach
//!   every node, as in Jepsen): a node cut from both others (minority/majority), a bridge
//!   (two nodes cut from each other, both reaching the third), a one-way cut;
//! - the metadata quorum's links only (the proxies): the same three shapes, a one-way cut
//!   there dropping one node's Raft messages to another while the reverse still flows;
//!   latency added on every link; flaky links (connections reset);
//! - clocks: one node's wall clock jumps 10 minutes to 2 hours ahead or behind, and back;
//! - disks: one node's data directory (a tmpfs of its own; its metadata log elsewhere) is
//!   shrunk to what it holds, so that its next writes fail with ENOSPC, then given space
//!   back (the node is restarted if its logs went offline, as Kafka's offline log
//!   directory needs).
//!
//! `SLUICE_CHAOS_SEED` (default: from the clock, printed), `SLUICE_CHAOS_SECONDS` (default
//! 40: faults stop after that), `SLUICE_CHAOS_FAULTS` (some of [`FAULTS`], comma-separated;
//! default all), `SLUICE_CHAOS_REPORT` (default: a file in the temporary
//! directory, printed). docs/TESTING.md has the long run.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::Namespaces;
use common::workload::*;
use common::{Cluster, NODES, QuorumLinks, SmallDisk, wait_for};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const COMMIT_GROUP: &str = "chaos-committer";
/// Each node's data disk (a tmpfs) when not full.
const DISK_SIZE: &str = "512m";

#[test]
#[ignore = "the broker child process of the chaos test"]
fn broker_process() {
    sluice_compat::run_broker_process();
}

/// SplitMix64, seeded: every choice of the run.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }

    fn node(&mut self) -> i32 {
        1 + self.below(NODES as u64) as i32
    }
}

/// The run's timeline, written out at the end whatever happens.
struct Report {
    started: Instant,
    lines: Vec<String>,
}

impl Report {
    fn note(&mut self, line: &str) {
        let line = format!("{:>7.2}s  {line}", self.started.elapsed().as_secs_f64());
        eprintln!("chaos: {line}");
        self.lines.push(line);
    }
}

/// What a consumer was given: (partition, offset) → sequence number.
type Seen = Arc<Mutex<BTreeMap<(i32, i64), u64>>>;

fn consume_until(bootstrap: &str, seen: &Seen, stop: &AtomicBool) {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "chaos-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let seq = std::str::from_utf8(message.payload().unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok());
            if let Some(seq) = seq {
                seen.lock()
                    .unwrap()
                    .insert((message.partition(), message.offset()), seq);
            }
        }
    }
}

/// Commits offsets 1, 2, 3, ... for every partition; returns (last acknowledged, last tried).
fn commit_until(bootstrap: &str, stop: &AtomicBool) -> (i64, i64) {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", COMMIT_GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (mut acknowledged, mut tried) = (0, 0);
    while !stop.load(Ordering::Acquire) {
        tried += 1;
        let mut offsets = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            offsets
                .add_partition_offset(TOPIC, partition, Offset::Offset(tried))
                .unwrap();
        }
        if consumer.commit(&offsets, CommitMode::Sync).is_ok() {
            acknowledged = tried;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    (acknowledged, tried)
}

/// The faults, by the names `SLUICE_CHAOS_FAULTS` takes (index = the `fault` arm).
const FAULTS: [&str; 12] = [
    "kill",
    "pause",
    "quorum-isolate",
    "quorum-one-way",
    "quorum-bridge",
    "latency",
    "flaky",
    "isolate",
    "bridge",
    "one-way",
    "clock",
    "disk",
];

/// The faults this run draws from: `SLUICE_CHAOS_FAULTS` (comma-separated names), or all.
fn allowed_faults() -> Vec<usize> {
    match std::env::var("SLUICE_CHAOS_FAULTS") {
        Ok(names) => names
            .split(',')
            .map(|name| {
                FAULTS
                    .iter()
                    .position(|f| *f == name.trim())
                    .unwrap_or_else(|| panic!("unknown fault {name:?}; known: {FAULTS:?}"))
            })
            .collect(),
        Err(_) => (0..FAULTS.len()).collect(),
    }
}

/// Two distinct nodes.
fn two(dice: &mut Dice) -> (i32, i32) {
    let a = dice.node();
    let offset = 1 + dice.below(NODES as u64 - 1) as i32;
    (a, (a - 1 + offset) % NODES + 1)
}

/// One fault, applied and undone; returns its description.
fn fault(
    dice: &mut Dice,
    cluster: &mut Cluster,
    links: &QuorumLinks,
    net: &Namespaces,
    disks: &[SmallDisk],
    bootstrap: &str,
) -> String {
    let hold = dice.millis(2_000, 7_000);
    let kinds = allowed_faults();
    let kind = kinds[dice.below(kinds.len() as u64) as usize];
    match kind {
        0 => {
            let leader = placement(bootstrap, TOPIC)
                .get(&0)
                .map(|(leader, _)| *leader)
                .filter(|l| *l > 0)
                .unwrap_or_else(|| dice.node());
            cluster.kill(leader);
            std::thread::sleep(hold / 2);
            cluster.spawn(leader, None);
            cluster.wait_ready(leader);
            format!(
                "SIGKILL node {leader} (partition 0's leader), restarted after {:?}",
                hold / 2
            )
        }
        1 => {
            let node = dice.node();
            cluster.signal(node, "-STOP");
            std::thread::sleep(hold);
            cluster.signal(node, "-CONT");
            format!("SIGSTOP node {node} for {hold:?}")
        }
        2 => {
            let node = dice.node();
            links.isolate(node);
            std::thread::sleep(hold);
            links.clear();
            format!("quorum: node {node} cut from both others (minority of one) for {hold:?}")
        }
        3 => {
            let (from, mut to) = (dice.node(), dice.node());
            if to == from {
                to = from % NODES + 1;
            }
            links.cut(from, to);
            std::thread::sleep(hold);
            links.clear();
            format!("quorum: one-way cut {from} -> {to} for {hold:?}")
        }
        4 => {
            let middle = dice.node();
            let (a, b) = (middle % NODES + 1, (middle + 1) % NODES + 1);
            links.cut_both(a, b);
            std::thread::sleep(hold);
            links.clear();
            format!(
                "quorum: bridge through node {middle} ({a} and {b} cut from each other) for {hold:?}"
            )
        }
        5 => {
            let delay = dice.millis(20, 250);
            links.delay_all(delay);
            std::thread::sleep(hold);
            links.clear();
            format!("quorum: {delay:?} added on every link for {hold:?}")
        }
        6 => {
            let per_mille = 5 + dice.below(45) as u32;
            links.flaky_all(per_mille);
            std::thread::sleep(hold);
            links.clear();
            format!("quorum: links reset {per_mille} per mille of chunks for {hold:?}")
        }
        7 => {
            let node = dice.node();
            net.isolate(node);
            links.isolate(node);
            std::thread::sleep(hold);
            net.heal();
            links.clear();
            format!("network: node {node} cut from both others, all traffic, for {hold:?}")
        }
        8 => {
            let middle = dice.node();
            let (a, b) = (middle % NODES + 1, (middle + 1) % NODES + 1);
            net.cut_both(a, b);
            links.cut_both(a, b);
            std::thread::sleep(hold);
            net.heal();
            links.clear();
            format!(
                "network: bridge through node {middle} ({a} and {b} cut from each other, all traffic) for {hold:?}"
            )
        }
        9 => {
            let (from, to) = two(dice);
            net.cut(from, to);
            links.cut(from, to);
            std::thread::sleep(hold);
            net.heal();
            links.clear();
            format!("network: one-way cut {from} -> {to}, all traffic, for {hold:?}")
        }
        11 => {
            let node = dice.node();
            let disk = &disks[(node - 1) as usize];
            let used = disk.used();
            disk.resize(&format!("{}k", used / 1024 + 8));
            std::thread::sleep(hold);
            disk.resize(DISK_SIZE);
            let readiness = common::get_text(&cluster.node(node).http, "/readyz");
            let restarted = readiness.contains("offline");
            if restarted {
                cluster.kill(node);
                cluster.spawn(node, None);
                cluster.wait_ready(node);
            }
            format!(
                "disk: node {node}'s data disk full ({used} bytes) for {hold:?}{}",
                if restarted {
                    ", its logs went offline: restarted"
                } else {
                    ""
                }
            )
        }
        10 => {
            let node = dice.node();
            let minutes = 10 + dice.below(111) as i64;
            let seconds = if dice.below(2) == 0 {
                60 * minutes
            } else {
                -60 * minutes
            };
            cluster.jump_clock(node, seconds);
            std::thread::sleep(hold);
            cluster.jump_clock(node, 0);
            format!("clock: node {node}'s wall clock {seconds:+} s for {hold:?}, then back")
        }
        other => unreachable!("fault {other}"),
    }
}

#[test]
fn a_seeded_fault_run_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var("SLUICE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        });
    let seconds: u64 = std::env::var("SLUICE_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let report_path = std::env::var("SLUICE_CHAOS_REPORT").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join(format!("sluice-chaos-{seed}.txt"))
            .display()
            .to_string()
    });
    let mut report = Report {
        started: Instant::now(),
        lines: Vec::new(),
    };
    report.note(&format!(
        "seed {seed}, faults for {seconds} s; report: {report_path}"
    ));
    let mut dice = Dice(seed);

    let root = tempfile::tempdir().unwrap();
    let net = Namespaces::create(NODES);
    let mut cluster =
        Cluster::in_namespaces(root.path(), &[("replica.lag.time.max.ms", "10000")], &net);
    cluster.with_clock_files(root.path());
    let mut disks = Vec::new();
    for id in 1..=NODES {
        disks.push(SmallDisk::mount(&cluster.node(id).dir, DISK_SIZE));
        let metadata = root.path().join(format!("node-{id}-metadata"));
        cluster.set_node_props(id, &[("metadata.log.dir", metadata.to_str().unwrap())]);
    }
    let links = cluster.route_quorum_through_proxies(seed);
    for id in 1..=NODES {
        cluster.spawn(id, None);
    }
    for id in 1..=NODES {
        cluster.wait_ready(id);
    }
    let bootstrap = cluster.bootstrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(create_topic(&bootstrap, None));
    wait_placed(&bootstrap, TOPIC, None, 3, Duration::from_secs(30));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = runtime.spawn(produce_until(
        bootstrap.clone(),
        ledger.clone(),
        stop.clone(),
        0,
    ));
    let seen: Seen = Arc::default();
    let reader = std::thread::spawn({
        let (bootstrap, seen, stop) = (bootstrap.clone(), seen.clone(), stop.clone());
        move || consume_until(&bootstrap, &seen, &stop)
    });
    let committer = std::thread::spawn({
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        move || commit_until(&bootstrap, &stop)
    });
    let acked = || ledger.lock().unwrap().acknowledged.len();
    wait_for(Duration::from_secs(30), "first writes", || acked() > 50);

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut faults = 0;
    while Instant::now() < deadline {
        let before = acked();
        let what = fault(&mut dice, &mut cluster, &links, &net, &disks, &bootstrap);
        faults += 1;
        report.note(&format!(
            "{what}; {} writes acknowledged meanwhile",
            acked() - before
        ));
        std::thread::sleep(dice.millis(1_000, 3_000));
    }
    links.clear();
    net.heal();
    report.note(&format!(
        "{faults} faults; healing: every replica back in sync"
    ));
    wait_placed(&bootstrap, TOPIC, None, 3, Duration::from_secs(120));
    let before = acked();
    wait_for(Duration::from_secs(60), "writes after the faults", || {
        acked() > before + 50
    });
    stop.store(true, Ordering::Release);
    runtime.block_on(producer).unwrap();
    reader.join().unwrap();
    let (commit_acked, commit_tried) = committer.join().unwrap();

    let log = read_everything(&bootstrap);
    let mut violations = Vec::new();
    // What consumers were given must be in the log where they read it.
    let seen = seen.lock().unwrap();
    for ((partition, offset), seq) in seen.iter() {
        let found = log
            .get(partition)
            .and_then(|records| records.iter().find(|(o, _)| o == offset));
        if found.map(|(_, s)| s) != Some(seq) {
            violations.push(format!(
                "a consumer read {seq} at {partition}/{offset}; the log has {found:?} there"
            ));
        }
    }
    let committed = committed_offsets(&bootstrap, COMMIT_GROUP);
    for (partition, offset) in &committed {
        if *offset < commit_acked || *offset > commit_tried {
            violations.push(format!(
                "partition {partition}: committed offset {offset}, acknowledged commits reached \
                 {commit_acked} (last tried {commit_tried})"
            ));
        }
    }
    let ledger = ledger.lock().unwrap();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&ledger, &log)));
    if let Err(panic) = checked {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        violations.push(format!("producer checker: {why}"));
    }
    report.note(&format!(
        "checked: {} acknowledged writes, {} records read by a consumer during the run, \
         committed offsets {committed:?} (acknowledged commits up to {commit_acked}, tried up \
         to {commit_tried}); violations: {}",
        ledger.acknowledged.len(),
        seen.len(),
        violations.len()
    ));
    for violation in &violations {
        report.note(&format!("VIOLATION: {violation}"));
    }
    let mut text = String::new();
    for line in &report.lines {
        let _ = writeln!(text, "{line}");
    }
    std::fs::write(&report_path, text).unwrap();
    cluster.stop_all();
    drop(disks);
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
}
