//! The cluster fault harness: a seeded, time-bounded run of random faults against a 3-node
//! cluster (RF 3, `min.insync.replicas=2`) under load, then a checker, and a report with the
//! timeline of faults and what was checked.
//!
//! Load: the idempotent acks=all producer of `common::workload`; a consumer reading every
//! partition all along (what it is given must still be in the log at the same offset at the
//! end: nothing read above the high watermark, no offset that changes); a group member
//! committing increasing offsets (the group's committed offsets never go back behind an
//! acknowledged commit); a group of two members subscribing to the topic (rebalances under
//! faults) and committing what they were given (nothing below a committed offset was
//! skipped; committed offsets never go back).
//!
//! Each node runs in a network namespace of its own (`common::netns`), under libfaketime;
//! it reaches the other voters' quorum listeners through `FaultProxy`s, and advertises a
//! `FaultProxy` in front of its Kafka listener, which the clients and the other nodes'
//! replica fetchers go through (told apart by their addresses). Each step puts a fault in
//! force, and one time in three a second one of another kind over it (on another node where
//! it acts on one), holds them 2-7 s, undoes them, and leaves a calm pause. Faults:
//! - processes: SIGKILL of partition 0's leader (started again at the undo), SIGSTOP
//!   within or past the session timeout;
//! - the network, all traffic between nodes (IP rules on the host for what it forwards, and
//!   the proxies' links between the two nodes; the clients still reach every node, as in
//!   Jepsen): a node cut from both others (minority/majority), a bridge (two nodes cut from
//!   each other, both reaching the third), a one-way cut (on the Kafka links TCP dies both
//!   ways, as it does when one direction's packets are lost; the quorum's proxies drop one
//!   node's Raft messages only);
//! - the metadata quorum's links only (its proxies): the same three shapes, a one-way cut
//!   there dropping one node's Raft messages to another while the reverse still flows;
//!   latency added on every link; flaky links (connections reset);
//! - packet loss (kernel: a random drop on a node's veth, both ways; TCP retransmits): 1-15%
//!   on one node's link or on every node's;
//! - the Kafka listeners' links (their proxies): latency or resets between the nodes
//!   (replication), or between the clients and one node (producer retries, which
//!   idempotence must not turn into duplicates);
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
use common::{Cluster, DataLinks, NODES, QuorumLinks, SmallDisk, wait_for};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const COMMIT_GROUP: &str = "chaos-committer";
/// How many of the steps after which writes took longest to resume the report names.
const SLOWEST_RECOVERIES: usize = 12;
/// The group whose two members subscribe to the topic and share its partitions.
const MEMBER_GROUP: &str = "chaos-members";
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

    /// Latency a slow link adds.
    fn latency(&mut self) -> Duration {
        self.millis(20, 250)
    }

    /// How many chunks per mille a flaky link resets on.
    fn reset_rate(&mut self) -> u32 {
        5 + self.below(45) as u32
    }

    /// A bridge: the middle node, and the two nodes cut from each other.
    fn bridge(&mut self) -> (i32, i32, i32) {
        let middle = self.node();
        (middle, middle % NODES + 1, (middle + 1) % NODES + 1)
    }
}

/// The sequence number a record of the workload carries.
fn sequence_of(message: &impl Message) -> Option<u64> {
    std::str::from_utf8(message.payload().unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
}

/// The run's timeline, written to its file line by line: a run that stops early (a stuck
/// node, a panic) leaves what it did up to there.
struct Report {
    started: Instant,
    file: std::fs::File,
}

impl Report {
    fn create(path: &str) -> Report {
        Report {
            started: Instant::now(),
            file: std::fs::File::create(path)
                .unwrap_or_else(|e| panic!("the report file {path}: {e}")),
        }
    }

    /// Writes `line` with the time into the run; returns it as written.
    fn note(&mut self, line: &str) -> String {
        use std::io::Write as _;
        let line = format!("{:>7.2}s  {line}", self.started.elapsed().as_secs_f64());
        eprintln!("chaos: {line}");
        let _ = writeln!(self.file, "{line}");
        line
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
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
            && let Some(seq) = sequence_of(&message)
        {
            seen.lock()
                .unwrap()
                .insert((message.partition(), message.offset()), seq);
        }
    }
}

/// What the members of [`MEMBER_GROUP`] did.
#[derive(Default)]
struct GroupRecord {
    /// Every record a member was given: (partition, offset) → sequence number.
    delivered: BTreeMap<(i32, i64), u64>,
    /// The highest offset a commit was acknowledged for, by partition.
    acked_commits: BTreeMap<i32, i64>,
    commits: usize,
}

/// A member of [`MEMBER_GROUP`]: subscribes (join, sync, heartbeats, rebalances), records
/// what it is given, and commits its position (what it was given + 1) every 500 ms: as a
/// consumer that processes records before it commits them.
fn member_until(bootstrap: &str, record: &Mutex<GroupRecord>, stop: &AtomicBool) {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", MEMBER_GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
            && let Some(seq) = sequence_of(&message)
        {
            record
                .lock()
                .unwrap()
                .delivered
                .insert((message.partition(), message.offset()), seq);
        }
        if last_commit.elapsed() < Duration::from_millis(500) {
            continue;
        }
        last_commit = Instant::now();
        let Ok(positions) = consumer.position() else {
            continue;
        };
        for element in positions.elements() {
            let Offset::Offset(offset) = element.offset() else {
                continue; // assigned, nothing fetched yet
            };
            if commit_one(&consumer, element.partition(), offset) {
                let mut record = record.lock().unwrap();
                record.commits += 1;
                let highest = record.acked_commits.entry(element.partition()).or_default();
                *highest = (*highest).max(offset);
            }
        }
    }
}

/// Commits `offset` for one partition; whether the commit was acknowledged. One partition
/// a call: librdkafka reports a commit failed only when every partition in it failed.
fn commit_one(consumer: &BaseConsumer, partition: i32, offset: i64) -> bool {
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(TOPIC, partition, Offset::Offset(offset))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).is_ok()
}

/// Commits offsets 1, 2, 3, ... for every partition; returns the last acknowledged by
/// partition, and the last tried.
fn commit_until(bootstrap: &str, stop: &AtomicBool) -> (BTreeMap<i32, i64>, i64) {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", COMMIT_GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (mut acknowledged, mut tried) = (BTreeMap::new(), 0);
    while !stop.load(Ordering::Acquire) {
        tried += 1;
        for partition in 0..PARTITIONS {
            if commit_one(&consumer, partition, tried) {
                acknowledged.insert(partition, tried);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    (acknowledged, tried)
}

/// The faults, by the names `SLUICE_CHAOS_FAULTS` takes.
const FAULTS: [&str; 17] = [
    "kill",
    "pause",
    "quorum-isolate",
    "quorum-one-way",
    "quorum-bridge",
    "quorum-latency",
    "quorum-flaky",
    "isolate",
    "bridge",
    "one-way",
    "replication-latency",
    "replication-flaky",
    "client-latency",
    "client-flaky",
    "loss",
    "clock",
    "disk",
];

/// Names that stand for several faults in `SLUICE_CHAOS_FAULTS`.
const FAULT_GROUPS: [(&str, &[&str]); 5] = [
    ("all", &FAULTS),
    ("partition", &["isolate", "bridge", "one-way"]),
    (
        "quorum",
        &["quorum-isolate", "quorum-bridge", "quorum-one-way"],
    ),
    (
        "latency",
        &["quorum-latency", "replication-latency", "client-latency"],
    ),
    (
        "flaky",
        &["quorum-flaky", "replication-flaky", "client-flaky"],
    ),
];

/// The faults this run draws from: `SLUICE_CHAOS_FAULTS` (comma-separated names of faults
/// or of groups of them), or all.
fn allowed_faults() -> Vec<&'static str> {
    let Ok(names) = std::env::var("SLUICE_CHAOS_FAULTS") else {
        return FAULTS.to_vec();
    };
    let mut allowed: Vec<&'static str> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let faults: Vec<&'static str> = match FAULTS.iter().find(|f| **f == name) {
            Some(fault) => vec![*fault],
            None => FAULT_GROUPS
                .iter()
                .find(|(group, _)| *group == name)
                .map(|(_, faults)| faults.to_vec())
                .unwrap_or_else(|| {
                    panic!(
                        "unknown fault {name:?}; known: {FAULTS:?} and the groups {FAULT_GROUPS:?}"
                    )
                }),
        };
        for fault in faults {
            if !allowed.contains(&fault) {
                allowed.push(fault);
            }
        }
    }
    assert!(!allowed.is_empty(), "SLUICE_CHAOS_FAULTS names no fault");
    allowed
}

/// Two distinct nodes.
fn two(dice: &mut Dice) -> (i32, i32) {
    let a = dice.node();
    let offset = 1 + dice.below(NODES as u64 - 1) as i32;
    (a, (a - 1 + offset) % NODES + 1)
}

/// A node that no fault in force holds (killed, paused, its clock or disk).
fn free_node(dice: &mut Dice, busy: &[i32]) -> i32 {
    assert!(busy.len() < NODES as usize, "a node is free");
    loop {
        let node = dice.node();
        if !busy.contains(&node) {
            return node;
        }
    }
}

/// What the faults act on.
struct Rig<'a> {
    cluster: &'a mut Cluster,
    quorum: &'a QuorumLinks,
    data: &'a DataLinks,
    net: &'a Namespaces,
    disks: &'a [SmallDisk],
    bootstrap: &'a str,
    /// Whether this kernel can drop packets for the `loss` fault (probed at the start).
    loss_available: bool,
}

/// A fault in force: what it is, and what undoes it.
struct Active {
    what: String,
    undo: Undo,
}

enum Undo {
    /// Killed: started again.
    Restart(i32),
    /// Paused: SIGCONT.
    Continue(i32),
    /// The quorum's proxies cleared.
    QuorumLinks,
    /// Every IP rule removed, every proxy cleared.
    Network,
    /// The Kafka listeners' proxies cleared.
    DataLinks,
    /// No link loses packets.
    Loss,
    /// The node's clock back to the real one.
    Clock(i32),
    /// The node's disk given space back.
    Disk(i32),
}

impl Undo {
    /// The node this fault holds, that another fault in force at the same time must leave
    /// alone.
    fn node(&self) -> Option<i32> {
        match self {
            Undo::Restart(n) | Undo::Continue(n) | Undo::Clock(n) | Undo::Disk(n) => Some(*n),
            Undo::QuorumLinks | Undo::Network | Undo::DataLinks | Undo::Loss => None,
        }
    }
}

/// Puts fault `kind` in force, on a node not in `busy` where it acts on one.
fn start(kind: &str, dice: &mut Dice, rig: &mut Rig<'_>, busy: &[i32]) -> Active {
    let (what, undo) = match kind {
        "kill" => {
            let leader = placement(rig.bootstrap, TOPIC)
                .get(&0)
                .map(|(leader, _)| *leader)
                .filter(|l| *l > 0 && !busy.contains(l))
                .unwrap_or_else(|| free_node(dice, busy));
            rig.cluster.kill(leader);
            (
                format!("SIGKILL node {leader} (partition 0's leader if it could)"),
                Undo::Restart(leader),
            )
        }
        "pause" => {
            let node = free_node(dice, busy);
            rig.cluster.signal(node, "-STOP");
            (format!("SIGSTOP node {node}"), Undo::Continue(node))
        }
        "quorum-isolate" => {
            let node = dice.node();
            rig.quorum.isolate(node);
            (
                format!("quorum: node {node} cut from both others (minority of one)"),
                Undo::QuorumLinks,
            )
        }
        "quorum-one-way" => {
            let (from, to) = two(dice);
            rig.quorum.cut(from, to);
            (
                format!("quorum: one-way cut {from} -> {to}"),
                Undo::QuorumLinks,
            )
        }
        "quorum-bridge" => {
            let (middle, a, b) = dice.bridge();
            rig.quorum.cut_both(a, b);
            (
                format!("quorum: bridge through node {middle} ({a} and {b} cut from each other)"),
                Undo::QuorumLinks,
            )
        }
        "quorum-latency" => {
            let delay = dice.latency();
            rig.quorum.delay_all(delay);
            (
                format!("quorum: {delay:?} added on every link"),
                Undo::QuorumLinks,
            )
        }
        "quorum-flaky" => {
            let per_mille = dice.reset_rate();
            rig.quorum.flaky_all(per_mille);
            (
                format!("quorum: links reset {per_mille} per mille of chunks"),
                Undo::QuorumLinks,
            )
        }
        "isolate" => {
            let node = dice.node();
            rig.net.isolate(node);
            rig.quorum.isolate(node);
            rig.data.isolate(node);
            (
                format!("network: node {node} cut from both others, all traffic"),
                Undo::Network,
            )
        }
        "bridge" => {
            let (middle, a, b) = dice.bridge();
            rig.net.cut_both(a, b);
            rig.quorum.cut_both(a, b);
            rig.data.cut(a, b);
            (
                format!(
                    "network: bridge through node {middle} ({a} and {b} cut from each other, all traffic)"
                ),
                Undo::Network,
            )
        }
        "one-way" => {
            let (from, to) = two(dice);
            rig.net.cut(from, to);
            rig.quorum.cut(from, to);
            // TCP between the two dies either way (acknowledgements and answers are lost).
            rig.data.cut(from, to);
            (
                format!("network: one-way cut {from} -> {to}, all traffic"),
                Undo::Network,
            )
        }
        "replication-latency" => {
            let delay = dice.latency();
            rig.data.delay_between_nodes(delay);
            (
                format!("data: {delay:?} added between every two nodes (replication)"),
                Undo::DataLinks,
            )
        }
        "replication-flaky" => {
            let per_mille = dice.reset_rate();
            rig.data.flaky_between_nodes(per_mille);
            (
                format!("data: links between nodes reset {per_mille} per mille of chunks"),
                Undo::DataLinks,
            )
        }
        "client-latency" => {
            let (node, delay) = (dice.node(), dice.latency());
            rig.data.clients_of(node).set_delay(delay);
            (
                format!("data: {delay:?} added between the clients and node {node}"),
                Undo::DataLinks,
            )
        }
        "client-flaky" => {
            let (node, per_mille) = (dice.node(), dice.reset_rate());
            rig.data.clients_of(node).set_flaky(per_mille);
            (
                format!(
                    "data: the clients' links to node {node} reset {per_mille} per mille of chunks"
                ),
                Undo::DataLinks,
            )
        }
        "loss" => {
            let per_mille = 10 + dice.below(141) as u32;
            let (nodes, which) = if dice.below(2) == 0 {
                let node = dice.node();
                (vec![node], format!("node {node}'s link"))
            } else {
                ((1..=NODES).collect(), "every node's link".to_string())
            };
            for node in nodes {
                if let Err(error) = rig.net.lose(node, per_mille) {
                    panic!("{error}");
                }
            }
            (
                format!("network: {which} loses {per_mille} per mille of packets each way"),
                Undo::Loss,
            )
        }
        "clock" => {
            let node = free_node(dice, busy);
            let minutes = 10 + dice.below(111) as i64;
            let seconds = if dice.below(2) == 0 {
                60 * minutes
            } else {
                -60 * minutes
            };
            rig.cluster.jump_clock(node, seconds);
            (
                format!("clock: node {node}'s wall clock {seconds:+} s"),
                Undo::Clock(node),
            )
        }
        "disk" => {
            let node = free_node(dice, busy);
            let disk = &rig.disks[(node - 1) as usize];
            let used = disk.used();
            disk.resize(&format!("{}k", used / 1024 + 8));
            (
                format!("disk: node {node}'s data disk full ({used} bytes)"),
                Undo::Disk(node),
            )
        }
        other => unreachable!("fault {other}"),
    };
    Active { what, undo }
}

/// Undoes a fault; returns a note (if it needed more than undoing) and the node it started
/// again, to wait for once every fault is undone (a node cut from the others cannot be
/// ready before).
fn undo(active: &Active, rig: &mut Rig<'_>) -> (String, Option<i32>) {
    match active.undo {
        Undo::Restart(node) => {
            rig.cluster.spawn(node, None);
            (String::new(), Some(node))
        }
        Undo::Continue(node) => {
            rig.cluster.signal(node, "-CONT");
            (String::new(), None)
        }
        Undo::QuorumLinks => {
            rig.quorum.clear();
            (String::new(), None)
        }
        Undo::Network => {
            rig.net.heal();
            rig.quorum.clear();
            rig.data.clear();
            (String::new(), None)
        }
        Undo::DataLinks => {
            rig.data.clear();
            (String::new(), None)
        }
        Undo::Loss => {
            let dropped = rig.net.stop_losses();
            (format!(" ({dropped} packets dropped)"), None)
        }
        Undo::Clock(node) => {
            rig.cluster.jump_clock(node, 0);
            (String::new(), None)
        }
        Undo::Disk(node) => {
            rig.disks[(node - 1) as usize].resize(DISK_SIZE);
            let readiness = common::get_text(&rig.cluster.node(node).http, "/readyz");
            if readiness.contains("offline") {
                // Kafka's offline log directory: back with a restart.
                rig.cluster.kill(node);
                rig.cluster.spawn(node, None);
                (" (its logs went offline: restarted)".into(), Some(node))
            } else {
                (String::new(), None)
            }
        }
    }
}

/// One step of the run: a fault, sometimes a second one of another kind over it, held,
/// undone; returns its description.
fn step(dice: &mut Dice, rig: &mut Rig<'_>, counts: &mut BTreeMap<&'static str, usize>) -> String {
    let mut kinds = allowed_faults();
    if !rig.loss_available {
        kinds.retain(|kind| *kind != "loss");
        assert!(
            !kinds.is_empty(),
            "only packet loss asked for, and this kernel cannot"
        );
    }
    let hold = dice.millis(2_000, 7_000);
    let first_kind = kinds[dice.below(kinds.len() as u64) as usize];
    let first = start(first_kind, dice, rig, &[]);
    *counts.entry(first_kind).or_default() += 1;
    let mut text = first.what.clone();
    let mut in_force = vec![first];
    if kinds.len() > 1 && dice.below(3) == 0 {
        let after = dice.millis(0, hold.as_millis() as u64 / 2);
        std::thread::sleep(after);
        let second_kind = loop {
            let kind = kinds[dice.below(kinds.len() as u64) as usize];
            if kind != first_kind {
                break kind;
            }
        };
        let busy: Vec<i32> = in_force.iter().filter_map(|a| a.undo.node()).collect();
        let second = start(second_kind, dice, rig, &busy);
        *counts.entry(second_kind).or_default() += 1;
        let _ = write!(text, "; {after:?} later, with: {}", second.what);
        in_force.push(second);
        std::thread::sleep(hold - after);
    } else {
        std::thread::sleep(hold);
    }
    let mut restarted = Vec::new();
    for active in in_force.iter().rev() {
        let (note, node) = undo(active, rig);
        text.push_str(&note);
        restarted.extend(node);
    }
    // A node that died by itself meanwhile: a problem (the checker reports it), started
    // again so that the run goes on.
    restarted.extend(rig.cluster.restart_exited());
    for node in restarted {
        rig.cluster.wait_ready(node);
    }
    let _ = write!(text, "; for {hold:?}");
    text
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
    let mut report = Report::create(&report_path);
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
    let data = cluster.route_clients_through_proxies(seed);
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
    let group: Arc<Mutex<GroupRecord>> = Arc::default();
    let members: Vec<_> = (0..2)
        .map(|_| {
            let (bootstrap, group, stop) = (bootstrap.clone(), group.clone(), stop.clone());
            std::thread::spawn(move || member_until(&bootstrap, &group, &stop))
        })
        .collect();
    let acked = || ledger.lock().unwrap().acknowledged.len();
    wait_for(Duration::from_secs(30), "first writes", || acked() > 50);

    // Packet loss needs HTB and the BPF classifier in the kernel: without them the run goes
    // on without that fault, and says so.
    let loss_available = match net.lose(1, 1) {
        Ok(()) => true,
        Err(why) => {
            report.note(&format!("packet loss unavailable here, not drawn: {why}"));
            false
        }
    };
    net.stop_losses();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut counts = BTreeMap::new();
    let mut steps = 0;
    // When each step ended (its faults undone, restarted nodes serving): how long writes
    // take to be acknowledged again.
    let mut undone_at = Vec::new();
    while Instant::now() < deadline {
        let before = acked();
        let mut rig = Rig {
            cluster: &mut cluster,
            quorum: &links,
            data: &data,
            net: &net,
            disks: &disks,
            bootstrap: &bootstrap,
            loss_available,
        };
        let what = step(&mut dice, &mut rig, &mut counts);
        steps += 1;
        let line = report.note(&format!(
            "{what}; {} writes acknowledged meanwhile",
            acked() - before
        ));
        undone_at.push((Instant::now(), line));
        std::thread::sleep(dice.millis(1_000, 3_000));
    }
    links.clear();
    data.clear();
    net.heal();
    net.stop_losses();
    report.note(&format!(
        "{} faults in {steps} steps ({counts:?}); healing: every replica back in sync",
        counts.values().sum::<usize>()
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
    for member in members {
        member.join().unwrap();
    }

    let log = read_everything(&bootstrap);
    let mut violations = Vec::new();
    // What consumers were given must be in the log where they read it.
    let at: BTreeMap<(i32, i64), u64> = log
        .iter()
        .flat_map(|(p, records)| records.iter().map(move |(o, seq)| ((*p, *o), *seq)))
        .collect();
    let seen = seen.lock().unwrap();
    for ((partition, offset), seq) in seen.iter() {
        let found = at.get(&(*partition, *offset));
        if found != Some(seq) {
            violations.push(format!(
                "a consumer read {seq} at {partition}/{offset}; the log has {found:?} there"
            ));
        }
    }
    let committed = committed_offsets(&bootstrap, COMMIT_GROUP);
    for partition in 0..PARTITIONS {
        let offset = committed.get(&partition).copied().unwrap_or(-1);
        let acked = commit_acked.get(&partition).copied();
        if acked.is_some_and(|acked| offset < acked) || offset > commit_tried {
            violations.push(format!(
                "partition {partition}: committed offset {offset}, acknowledged commits reached \
                 {acked:?} (last tried {commit_tried})"
            ));
        }
    }
    // The group: what its members were given is in the log where they read it; below each
    // committed offset, nothing was skipped (they commit only what they were given); no
    // committed offset went behind an acknowledged commit.
    let group = group.lock().unwrap();
    for ((partition, offset), seq) in &group.delivered {
        let found = at.get(&(*partition, *offset));
        if found != Some(seq) {
            violations.push(format!(
                "group member given {seq} at {partition}/{offset}; the log has {found:?} there"
            ));
        }
    }
    let group_committed = committed_offsets(&bootstrap, MEMBER_GROUP);
    for (partition, records) in &log {
        let committed = group_committed.get(partition).copied().unwrap_or(0);
        let skipped: Vec<i64> = records
            .iter()
            .filter(|(offset, _)| {
                *offset < committed && !group.delivered.contains_key(&(*partition, *offset))
            })
            .map(|(offset, _)| *offset)
            .collect();
        if !skipped.is_empty() {
            violations.push(format!(
                "group: partition {partition} committed at {committed}, {} records below it \
                 never given to a member (first {:?})",
                skipped.len(),
                &skipped[..skipped.len().min(5)]
            ));
        }
        let acked = group.acked_commits.get(partition).copied().unwrap_or(-1);
        if committed < acked {
            violations.push(format!(
                "group: partition {partition} committed at {committed}, behind an acknowledged \
                 commit of {acked}"
            ));
        }
    }
    // The brokers themselves: none panicked or died of what was done to it.
    cluster.note_running_panics();
    violations.extend(cluster.problems.iter().cloned());
    if group.commits == 0 || group.delivered.is_empty() {
        violations.push(format!(
            "the group's checks checked nothing: {} records given, {} commits acknowledged",
            group.delivered.len(),
            group.commits
        ));
    }
    let ledger = ledger.lock().unwrap();
    // Availability, not checked: from each undo to the next acknowledged write.
    let mut recoveries: Vec<(Duration, &str)> = undone_at
        .iter()
        .filter_map(|(undone, line)| {
            let next = ledger.acked_at.partition_point(|at| at < undone);
            ledger
                .acked_at
                .get(next)
                .map(|at| (*at - *undone, line.as_str()))
        })
        .collect();
    recoveries.sort_unstable();
    if let (Some(first), Some(last)) = (recoveries.first(), recoveries.last()) {
        let at = |q: usize| recoveries[(recoveries.len() - 1) * q / 100].0;
        report.note(&format!(
            "writes acknowledged again after each step's faults were undone: min {:?}, \
             p50 {:?}, p90 {:?}, p99 {:?}, max {:?} ({} steps); the slowest:",
            first.0,
            at(50),
            at(90),
            at(99),
            last.0,
            recoveries.len()
        ));
        for (took, line) in recoveries.iter().rev().take(SLOWEST_RECOVERIES) {
            report.note(&format!(
                "  {took:?} after the step at {}",
                line.trim_start()
            ));
        }
    }
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
        "checked: {} acknowledged writes ({} records in the log, {} writes of unknown \
         outcome), {} records read by a consumer during the run, committed offsets \
         {committed:?} (acknowledged commits up to {commit_acked:?}, tried up to \
         {commit_tried}); group of two: {} records given, {} acknowledged commits, committed \
         {group_committed:?}; violations: {}",
        ledger.acknowledged.len(),
        at.len(),
        ledger.uncertain.len(),
        seen.len(),
        group.delivered.len(),
        group.commits,
        violations.len()
    ));
    for violation in &violations {
        report.note(&format!("VIOLATION: {violation}"));
    }
    cluster.stop_all();
    drop(disks);
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
}
