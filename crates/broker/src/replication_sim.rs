//! Deterministic simulation of replication: three replicas of one partition, the
//! controller's decisions and the leader's ISR bookkeeping run as the broker runs them
//! (`controller::{fencing, registration, isr_update}`, the metadata image's checks,
//! `ReplicaSet`, `LeaderEpochs`, the divergence and truncation rules), around a model of each
//! replica's log that keeps written and synced apart. One seed decides every step:
//! produce (to a node that believes it leads), follower fetches (a response may be lost),
//! group commits, ISR requests reaching the controller late or never, lag checks, nodes
//! applying metadata late, crashes that lose everything not synced, fencing of dead nodes
//! and of live ones (a pause: the node learns it late, then registers again), restarts,
//! reassignments to 2 or 3 of the brokers and their cancellation.
//!
//! Checked: every write acknowledged (below the leader's high watermark and synced on it)
//! is, after a calm phase where every node returns and catches up, at its offset in the
//! leader's log and in every in-sync replica's; the in-sync replicas' logs agree up to the
//! high watermark; every decision the controller makes applies to the image.
//!
//! Each replica's log is a model ([`replica_log::ModelLog`]: thousands of seeds a minute) or
//! the broker's own `Log` on a simulated disk of its own ([`replica_log::RealLog`]: a power
//! loss keeps or loses each unsynced sector, recovery is the real one); an error from the
//! real log is a violation too.
//!
//! A failing seed replays exactly: `SLUICE_REPLICATION_SIM_FIRST=<seed>` with
//! `SLUICE_REPLICATION_SIM_SEEDS=1` (`SLUICE_REPLICATION_SIM_REAL_SEEDS` for the real logs).

mod replica_log;

use std::collections::BTreeMap;

use replica_log::{Entry, ModelLog, RealLog, ReplicaLog};
use uuid::Uuid;

use crate::controller::{fencing, first_placement, isr_update, reassignment, registration};
use crate::metadata::{BrokerImage, MetadataImage, MetadataRecord, NO_LEADER};
use crate::partition::replication::{
    IsrRequest, ReplicaSet, counts_as_progress, diverging, truncation_offset,
};

const TOPIC: &str = "t";
const NODES: i32 = 3;
const MIN_INSYNC: usize = 2;
/// `replica.lag.time.max.ms` of the simulation (a step is 10 ms; a follower fetches about
/// every 10 steps).
const MAX_LAG_MS: i64 = 2_000;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One replica: its log, its high watermark and, as leader, its view of the followers.
struct Node<L> {
    id: i32,
    alive: bool,
    incarnation: u128,
    log: L,
    hw: i64,
    set: ReplicaSet,
    /// The partition's leader epoch and partition epoch as this node last applied them.
    applied: (i32, i32),
    leading: bool,
}

impl<L: ReplicaLog> Node<L> {
    fn new(id: i32, log: L) -> Node<L> {
        Node {
            id,
            alive: true,
            incarnation: 1,
            log,
            hw: 0,
            set: ReplicaSet::new(id),
            applied: (-1, -1),
            leading: false,
        }
    }

    fn leo(&self) -> i64 {
        self.log.leo()
    }

    fn end_for(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.end_for(epoch, self.leo())
    }

    fn append(&mut self, entry: Entry) -> Result<(), String> {
        self.log.append(entry)?;
        if self.set.alone() {
            self.hw = self.leo();
        }
        Ok(())
    }

    /// `Log::truncate_to`: whole entries from `to`, and epochs begun at or after it.
    fn truncate(&mut self, to: i64) -> Result<(), String> {
        self.log.truncate(to)?;
        self.hw = self.hw.min(self.leo());
        Ok(())
    }

    /// Power loss and restart: what was not synced may be gone; recovery rebuilds the
    /// epoch history; nothing is known committed yet.
    fn crash(&mut self) -> Result<(), String> {
        self.alive = false;
        let recovered = self.log.power_loss();
        self.hw = 0;
        self.set = ReplicaSet::new(self.id);
        self.applied = (-1, -1);
        self.leading = false;
        recovered
    }

    fn advance_hw(&mut self) {
        if let Some(hw) = self.set.high_watermark(self.leo())
            && hw > self.hw
        {
            self.hw = hw;
        }
    }

    /// `Partition::apply_state`.
    fn apply_metadata(&mut self, image: &MetadataImage, now_ms: i64) -> Result<(), String> {
        let Some(state) = image.partition(TOPIC, 0) else {
            return Ok(());
        };
        if state.leader_epoch < self.applied.0
            || (state.leader_epoch, state.partition_epoch) == self.applied
        {
            return Ok(());
        }
        if !state.replicas.contains(&self.id) {
            // Reassigned away: the broker drops its copy (a later move back starts empty).
            let cleared = self.log.clear();
            self.hw = 0;
            self.set = ReplicaSet::new(self.id);
            self.applied = (state.leader_epoch, state.partition_epoch);
            self.leading = false;
            return cleared;
        }
        let leading = state.leader == self.id;
        if leading && (state.leader_epoch > self.applied.0 || !self.leading) {
            self.log.begin_epoch(state.leader_epoch.max(0))?;
        }
        self.set.apply(
            &state.replicas,
            &state.isr,
            state.leader,
            state.leader_epoch,
            state.partition_epoch,
            now_ms,
        );
        self.applied = (state.leader_epoch, state.partition_epoch);
        self.leading = leading;
        if self.set.alone() {
            self.hw = self.leo();
        }
        self.advance_hw();
        Ok(())
    }
}

/// A produce waiting for its acknowledgement.
struct Pending {
    leader: i32,
    epoch: i32,
    offset: i64,
    value: u64,
}

struct World<L> {
    rng: Rng,
    /// Acknowledge once the leader has synced, without waiting for the ISR: the bug the
    /// checker must catch.
    ack_before_replication: bool,
    /// No message is lost (the end of the calm phase).
    reliable: bool,
    /// Reassignments happen (every other seed: the others keep all three replicas and
    /// acknowledge more).
    moving: bool,
    nodes: Vec<Node<L>>,
    image: MetadataImage,
    now_ms: i64,
    next_value: u64,
    pending: Vec<Pending>,
    /// ISR changes on their way to the controller.
    requests: Vec<(i32, IsrRequest)>,
    /// value → offset it was acknowledged at.
    acknowledged: BTreeMap<u64, i64>,
    /// Reassignments started (or cancelled).
    moves: usize,
    /// Power losses.
    crashes: usize,
    /// What a replica's log refused or got wrong: each a violation.
    errors: Vec<String>,
}

fn broker<L>(node: &Node<L>) -> BrokerImage {
    BrokerImage {
        id: node.id,
        incarnation: Uuid::from_u128(node.incarnation),
        host: format!("n{}", node.id),
        port: 9092,
        fenced: false,
    }
}

impl<L: ReplicaLog> World<L> {
    /// Three replicas on `logs` (empty).
    fn new(seed: u64, logs: Vec<L>) -> World<L> {
        assert_eq!(logs.len(), NODES as usize, "a log per node");
        let mut world = World {
            ack_before_replication: false,
            reliable: false,
            moving: seed.is_multiple_of(2),
            rng: Rng(seed | 1),
            nodes: (1..=NODES)
                .zip(logs)
                .map(|(id, log)| Node::new(id, log))
                .collect(),
            image: MetadataImage::default(),
            now_ms: 0,
            next_value: 1,
            pending: Vec::new(),
            requests: Vec::new(),
            acknowledged: BTreeMap::new(),
            moves: 0,
            crashes: 0,
            errors: Vec::new(),
        };
        for i in 0..world.nodes.len() {
            let records = registration(&world.image, &broker(&world.nodes[i]), false);
            world.commit(&records);
        }
        world.commit(&[
            MetadataRecord::CreateTopic {
                name: TOPIC.into(),
                id: Uuid::from_u128(7),
                partitions: 1,
                configs: BTreeMap::new(),
            },
            first_placement(TOPIC, 0, (1..=NODES).collect()),
        ]);
        for i in 0..world.nodes.len() {
            let applied = world.nodes[i].apply_metadata(&world.image, 0);
            world.found(applied);
        }
        world
    }

    /// Keeps what a log got wrong as a violation.
    fn found(&mut self, result: Result<(), String>) {
        if let Err(error) = result {
            self.errors.push(format!("at {} ms: {error}", self.now_ms));
        }
    }

    /// Every live node applies the image (the calm phase).
    fn apply_everywhere(&mut self) {
        let (image, now) = (self.image.clone(), self.now_ms);
        for i in 0..self.nodes.len() {
            let applied = self.nodes[i].apply_metadata(&image, now);
            self.found(applied);
        }
    }

    /// Every record the controller decides must apply to the image it was computed from.
    fn commit(&mut self, records: &[MetadataRecord]) {
        for record in records {
            if let Err(err) = self.image.apply(record) {
                panic!("the controller's decision does not apply: {err:?}: {record:?}");
            }
        }
    }

    fn node(&mut self, id: i32) -> &mut Node<L> {
        &mut self.nodes[(id - 1) as usize]
    }

    fn pick_alive(&mut self) -> Option<i32> {
        let alive: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.id)
            .collect();
        (!alive.is_empty()).then(|| alive[self.rng.below(alive.len() as u64) as usize])
    }

    fn step(&mut self, faults: bool) {
        self.now_ms += 10;
        match self.rng.below(100) {
            0..=19 if faults => self.produce(),
            20..=49 => self.fetch(),
            50..=59 => {
                if let Some(id) = self.pick_alive() {
                    let synced = self.node(id).log.sync();
                    self.found(synced);
                }
            }
            60..=69 => self.settle_acks(),
            70..=76 => self.deliver_isr_request(),
            77..=80 => self.lag_check(),
            81..=89 => {
                if let Some(id) = self.pick_alive() {
                    self.reregister_if_fenced(id);
                    let (image, now) = (self.image.clone(), self.now_ms);
                    let applied = self.node(id).apply_metadata(&image, now);
                    self.found(applied);
                }
            }
            90 if faults => {
                // A pause or a cut link: the controller fences a node that is alive and
                // does not know it yet (it may go on believing it leads).
                if let Some(id) = self.pick_alive() {
                    let incarnation = self.nodes[(id - 1) as usize].incarnation;
                    let records = fencing(&self.image, id, Uuid::from_u128(incarnation));
                    self.commit(&records);
                }
            }
            91..=93 if faults => {
                if let Some(id) = self.pick_alive() {
                    self.crashes += 1;
                    let recovered = self.node(id).crash();
                    self.found(recovered);
                }
            }
            94..=96 => self.fence_dead(),
            97..=98 => self.restart_one(),
            99 if faults && self.moving && self.rng.chance(40) => self.reassign(),
            _ => {}
        }
    }

    /// A client writes to a node that believes it leads (it may be deposed already).
    fn produce(&mut self) {
        let leaders: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.alive && n.leading)
            .map(|n| n.id)
            .collect();
        if leaders.is_empty() {
            return;
        }
        let id = leaders[self.rng.below(leaders.len() as u64) as usize];
        let value = self.next_value;
        self.next_value += 1;
        let node = self.node(id);
        if node.set.in_sync() < MIN_INSYNC {
            return;
        }
        let epoch = node.applied.0;
        let offset = node.leo();
        if let Err(error) = node.append(Entry { epoch, value }) {
            self.found(Err(error));
            return;
        }
        self.pending.push(Pending {
            leader: id,
            epoch,
            offset,
            value,
        });
    }

    /// `Appended::durable` → `Replication::wait_committed`.
    fn settle_acks(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let node = &self.nodes[(p.leader - 1) as usize];
            let deposed = !node.alive || !node.leading || node.applied.0 != p.epoch;
            if deposed {
                continue;
            }
            let replicated = node.hw > p.offset || self.ack_before_replication;
            let committed = replicated && node.log.synced() > p.offset;
            if committed && node.set.in_sync() >= MIN_INSYNC {
                let found = node.log.entry_at(p.offset).map(|e| e.map(|e| e.value));
                if found != Ok(Some(p.value)) {
                    self.errors.push(format!(
                        "leader {} acknowledges {} at {} where its log has {found:?}",
                        p.leader, p.value, p.offset
                    ));
                }
                self.acknowledged.insert(p.value, p.offset);
            } else if committed {
                // NOT_ENOUGH_REPLICAS_AFTER_APPEND: not acknowledged (may be in the log).
            } else {
                self.pending.push(p);
            }
        }
    }

    /// A follower fetches from the leader it knows; the response may be lost.
    fn fetch(&mut self) {
        let Some(f) = self.pick_alive() else { return };
        self.fetch_by(f);
    }

    fn fetch_by(&mut self, f: i32) {
        let follower = &self.nodes[(f - 1) as usize];
        let leader = follower.set.leader;
        if follower.leading
            || leader == NO_LEADER
            || leader == f
            || !follower.set.replicas.contains(&f)
        {
            return;
        }
        let l = &self.nodes[(leader - 1) as usize];
        // check_leader_epoch: both must be in the same leader epoch.
        if !l.alive || !l.leading || l.applied.0 != follower.applied.0 {
            return;
        }
        let fetch_offset = follower.leo();
        let last = follower.log.latest_epoch().unwrap_or(-1);
        // `Partition::follower_fetched`: the leader counts the position, unless it diverged.
        let now = self.now_ms;
        let counts = counts_as_progress(l.end_for(last), last, fetch_offset, l.leo());
        let l = self.node(leader);
        if counts {
            let epoch_start = l.end_for(l.applied.0 - 1).map_or(0, |(_, end)| end);
            let (leo, hw) = (l.leo(), l.hw);
            if let Some(request) =
                l.set
                    .follower_fetched(f, fetch_offset, leo, hw, epoch_start, now)
            {
                self.requests.push((leader, request));
            }
        }
        // The fetch handler: a diverged follower is told where to truncate.
        let follower = &self.nodes[(f - 1) as usize];
        let l = &self.nodes[(leader - 1) as usize];
        let div = (last >= 0)
            .then(|| diverging(l.end_for(last), last, fetch_offset))
            .flatten();
        if let Some(div) = div {
            let to = truncation_offset(follower.end_for(div.0), div);
            let truncated = self.node(f).truncate(to);
            self.found(truncated);
            return;
        }
        assert!(
            fetch_offset <= self.nodes[(leader - 1) as usize].leo(),
            "follower {f} at {fetch_offset} past leader {leader}'s end without divergence"
        );
        let l = self.node(leader);
        l.advance_hw();
        let records = l.log.read_from(fetch_offset);
        let leader_hw = l.hw;
        let records = match records {
            Ok(records) => records,
            Err(error) => return self.found(Err(error)),
        };
        if !self.reliable && self.rng.chance(10) {
            return;
        }
        let follower = self.node(f);
        let mut copied = follower.log.append_copied(records);
        if copied.is_ok() {
            // replica.sync.before.fetch: what the next fetch claims is on disk.
            copied = follower.log.sync();
        }
        follower.hw = leader_hw.min(follower.leo());
        self.found(copied);
    }

    fn deliver_isr_request(&mut self) {
        if self.requests.is_empty() {
            return;
        }
        let (leader, request) = self
            .requests
            .remove(self.rng.below(self.requests.len() as u64) as usize);
        if !self.reliable && self.rng.chance(20) {
            // Lost on the way: the leader hears nothing and asks again later.
            self.node(leader)
                .set
                .request_failed(request.partition_epoch);
            return;
        }
        let change = isr_update(
            &self.image,
            TOPIC,
            0,
            leader,
            request.leader_epoch,
            request.partition_epoch,
            &request.isr,
        );
        match change {
            Some(record) => self.commit(&[record]),
            None => self
                .node(leader)
                .set
                .request_failed(request.partition_epoch),
        }
    }

    fn lag_check(&mut self) {
        let now = self.now_ms;
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if node.alive
                && node.leading
                && let Some(request) = node.set.lagging(now, MAX_LAG_MS)
            {
                let id = node.id;
                self.requests.push((id, request));
            }
        }
    }

    /// The controller fences a dead node still registered (its session expired).
    fn fence_dead(&mut self) {
        let dead: Vec<(i32, u128)> = self
            .nodes
            .iter()
            .filter(|n| !n.alive)
            .map(|n| (n.id, n.incarnation))
            .collect();
        for (id, incarnation) in dead {
            let records = fencing(&self.image, id, Uuid::from_u128(incarnation));
            self.commit(&records);
        }
    }

    fn restart_one(&mut self) {
        let dead: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| !n.alive)
            .map(|n| n.id)
            .collect();
        if dead.is_empty() {
            return;
        }
        let id = dead[self.rng.below(dead.len() as u64) as usize];
        // Fenced first (a restart is noticed as a new incarnation).
        self.fence_dead_one(id);
        let node = self.node(id);
        node.alive = true;
        node.incarnation += 1;
        let records = registration(&self.image, &broker(&self.nodes[(id - 1) as usize]), false);
        self.commit(&records);
        let (image, now) = (self.image.clone(), self.now_ms);
        let applied = self.node(id).apply_metadata(&image, now);
        self.found(applied);
    }

    /// An operator moves the partition to 2 or 3 of the brokers, or cancels the move in
    /// progress (`controller::reassignment`; refusals are the request's).
    fn reassign(&mut self) {
        let target: Option<Vec<i32>> = match self.rng.below(4) {
            0 => None,
            _ => {
                let mut ids: Vec<i32> = (1..=NODES).collect();
                let keep = 2 + self.rng.below(2) as usize;
                for i in (1..ids.len()).rev() {
                    ids.swap(i, self.rng.below(i as u64 + 1) as usize);
                }
                ids.truncate(keep);
                Some(ids)
            }
        };
        if let Ok(record) = reassignment(&self.image, TOPIC, 0, target.as_deref()) {
            self.commit(&[record]);
            self.moves += 1;
        }
    }

    /// `Broker::run_membership`: a live node that finds itself fenced registers again.
    fn reregister_if_fenced(&mut self, id: i32) {
        let node = &self.nodes[(id - 1) as usize];
        let live = self
            .image
            .live_broker(id)
            .is_some_and(|b| b.incarnation == Uuid::from_u128(node.incarnation));
        if !live {
            let records = registration(&self.image, &broker(node), false);
            self.commit(&records);
        }
    }

    fn fence_dead_one(&mut self, id: i32) {
        let incarnation = self.nodes[(id - 1) as usize].incarnation;
        let records = fencing(&self.image, id, Uuid::from_u128(incarnation));
        self.commit(&records);
    }

    /// Everyone back, no more faults or writes: replication catches up.
    fn calm(&mut self, steps: usize) {
        while self.nodes.iter().any(|n| !n.alive) {
            self.restart_one();
        }
        for _ in 0..steps {
            self.step(false);
            // Metadata reaches everyone in the calm phase.
            for id in 1..=NODES {
                self.reregister_if_fenced(id);
            }
            self.apply_everywhere();
        }
        // Then rounds where every follower fetches and every ISR request arrives: what is
        // still on its way settles.
        self.reliable = true;
        for _ in 0..20 {
            self.now_ms += 10;
            for f in 1..=NODES {
                self.fetch_by(f);
            }
            while !self.requests.is_empty() {
                self.deliver_isr_request();
            }
            self.apply_everywhere();
            self.settle_acks();
        }
    }

    /// The violations found, as messages (empty: none).
    fn violations(&self, seed: u64) -> Vec<String> {
        let mut found: Vec<String> = self
            .errors
            .iter()
            .map(|error| format!("seed {seed}: a replica's log: {error}"))
            .collect();
        let state = self.image.partition(TOPIC, 0).expect("the partition");
        if state.leader == NO_LEADER {
            found.push(format!("seed {seed}: no leader after the calm phase"));
            return found;
        }
        // Liveness: with every node up and no faults, every replica catches up and is in
        // sync (a follower stuck truncating or fetching forever would not be), and a move
        // in progress completes.
        let mut isr = state.isr.clone();
        let mut replicas = state.replicas.clone();
        isr.sort_unstable();
        replicas.sort_unstable();
        if isr != replicas || state.reassigning() {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: alive {} leading {} applied {:?} leo {} hw {} epochs {:?} set {:?}",
                        n.id,
                        n.alive,
                        n.leading,
                        n.applied,
                        n.leo(),
                        n.hw,
                        n.log.epochs(),
                        n.set
                    )
                })
                .collect();
            found.push(format!(
                "seed {seed}: ISR {:?} after the calm phase; state {state:?}; nodes {nodes:#?}; requests {:?}",
                state.isr, self.requests
            ));
        }
        let logs: BTreeMap<i32, Vec<Entry>> = self
            .nodes
            .iter()
            .map(|n| {
                let entries = n.log.entries().unwrap_or_else(|error| {
                    found.push(format!(
                        "seed {seed}: replica {}'s log unreadable: {error}",
                        n.id
                    ));
                    Vec::new()
                });
                (n.id, entries)
            })
            .collect();
        let leader = &self.nodes[(state.leader - 1) as usize];
        let leader_log = &logs[&leader.id];
        for (value, offset) in &self.acknowledged {
            for member in &state.isr {
                let log = &logs[member];
                if log.get(*offset as usize).map(|e| e.value) != Some(*value) {
                    found.push(format!(
                        "seed {seed}: acknowledged {value} at {offset} is not in replica {member}'s log (ISR {:?}, leader {})",
                        state.isr, state.leader
                    ));
                }
            }
        }
        let upto = usize::try_from(leader.hw)
            .unwrap_or(0)
            .min(leader_log.len());
        for member in &state.isr {
            let log = &logs[member];
            if log[..upto.min(log.len())] != leader_log[..upto] {
                found.push(format!(
                    "seed {seed}: replica {member} disagrees with leader {} below the high watermark {upto}",
                    state.leader
                ));
            }
        }
        found
    }
}

/// What one seed did.
struct Outcome {
    acknowledged: usize,
    moves: usize,
    crashes: usize,
    violations: Vec<String>,
}

/// Runs `seed` for `steps` steps of faults, then a calm phase, on model logs.
fn run(seed: u64, steps: usize, ack_before_replication: bool) -> Outcome {
    let logs = (0..NODES).map(|_| ModelLog::default()).collect();
    run_on(seed, steps, ack_before_replication, logs)
}

/// [`run`] on the broker's logs, each on a simulated disk of its own under `root`.
fn run_on_real_logs(seed: u64, steps: usize, root: &std::path::Path) -> Outcome {
    let logs = (1..=NODES)
        .map(|id| {
            RealLog::create(&root.join(format!("node-{id}")), seed ^ (id as u64) << 32)
                .unwrap_or_else(|e| panic!("seed {seed}: node {id}'s log: {e}"))
        })
        .collect();
    run_on(seed, steps, false, logs)
}

fn run_on<L: ReplicaLog>(
    seed: u64,
    steps: usize,
    ack_before_replication: bool,
    logs: Vec<L>,
) -> Outcome {
    let mut world = World::new(seed, logs);
    world.ack_before_replication = ack_before_replication;
    for _ in 0..steps {
        world.step(true);
    }
    world.calm(3_000);
    Outcome {
        acknowledged: world.acknowledged.len(),
        moves: world.moves,
        crashes: world.crashes,
        violations: world.violations(seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    #[test]
    fn acknowledged_writes_survive_crashes_lost_messages_and_late_metadata() {
        let first = env("SLUICE_REPLICATION_SIM_FIRST", 1);
        let seeds = env("SLUICE_REPLICATION_SIM_SEEDS", 300);
        let (mut acknowledged, mut moves) = (0, 0);
        for seed in first..first + seeds {
            let outcome = run(seed, 2_000, false);
            assert!(outcome.violations.is_empty(), "{:#?}", outcome.violations);
            acknowledged += outcome.acknowledged;
            moves += outcome.moves;
        }
        assert!(acknowledged > 0, "the workload acknowledged nothing");
        assert!(moves > 0, "no reassignment was started");
        eprintln!(
            "{seeds} seeds: {acknowledged} acknowledged writes checked, {moves} reassignments started or cancelled"
        );
    }

    /// The same on the broker's logs and simulated disks: fewer seeds (real files), each
    /// power loss losing unsynced sectors one by one.
    #[test]
    fn acknowledged_writes_survive_on_real_logs_and_simulated_disks() {
        let first = env("SLUICE_REPLICATION_SIM_FIRST", 1);
        let seeds = env("SLUICE_REPLICATION_SIM_REAL_SEEDS", 12);
        let (mut acknowledged, mut moves, mut crashes) = (0, 0, 0);
        for seed in first..first + seeds {
            let root = tempfile::tempdir().unwrap();
            let outcome = run_on_real_logs(seed, 2_000, root.path());
            assert!(outcome.violations.is_empty(), "{:#?}", outcome.violations);
            acknowledged += outcome.acknowledged;
            moves += outcome.moves;
            crashes += outcome.crashes;
        }
        assert!(acknowledged > 0, "the workload acknowledged nothing");
        assert!(crashes > 0, "no power was lost");
        eprintln!(
            "{seeds} seeds on real logs: {acknowledged} acknowledged writes checked, {crashes} \
             power losses, {moves} reassignments"
        );
    }

    #[test]
    fn the_checker_catches_acknowledgements_before_replication() {
        let caught = (1..=100).find(|seed| !run(*seed, 2_000, true).violations.is_empty());
        assert!(
            caught.is_some(),
            "100 seeds and no lost acknowledged write found"
        );
    }
}
