//! A deterministic simulator of a whole quorum, and the checker of its histories.
//!
//! One seed decides everything: which messages are lost, delayed, duplicated or reordered,
//! when the network splits and heals, when a node loses power (its disk keeps only what it
//! synced, plus a torn prefix of the rest) and comes back, when a node compacts its log into
//! a snapshot (so that a node far behind is sent the snapshot), and when clients propose.
//! Time is the step counter: every live node ticks once per step. A failing seed replays
//! exactly.
//!
//! Each node's state machine is the list of entries it applied; its snapshot is that list
//! encoded, so a restored snapshot is checked entry by entry like a committed entry.
//!
//! Checked at every step, then after a final calm phase:
//! - **election safety**: at most one leader per term;
//! - **state machine safety**: no two nodes ever report different entries committed at the
//!   same index, and each node reports its committed entries in order, once;
//! - **durability**: every proposal acknowledged (reported committed by the leader it was
//!   proposed to) is in the final log, exactly once;
//! - **liveness**: once faults stop and the network heals, a leader is elected, a new
//!   proposal commits, and every node catches up, within a bounded number of steps.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::Message;
use crate::node::{NodeConfig, QuorumNode};
use crate::storage::SimDisk;

/// What a run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Voters (3 or 5 make sense).
    pub nodes: u64,
    /// Steps with faults, before the calm phase.
    pub steps: u64,
    /// Whether to inject faults at all (a run without them checks the happy path).
    pub faults: bool,
    /// The simulator's own test: nodes that acknowledge without syncing, which the checker
    /// must catch.
    #[cfg(test)]
    pub skip_sync: bool,
}

/// What a run did (for reports and to see that faults really happened).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SimReport {
    pub proposals: u64,
    pub acknowledged: u64,
    pub final_log_len: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub compactions: u64,
    /// Snapshots restored: at a restart after compaction, or sent by a leader.
    pub restores: u64,
    /// Of which sent by a leader to a node too far behind.
    pub snapshots_from_leader: u64,
    /// Followers that took their leader for gone and stood early
    /// ([`QuorumNode::leader_gone`]).
    pub early_elections: u64,
}

/// A broken invariant, with the seed and step that replay it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed}, step {step}: {what}")]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub what: String,
}

/// Steps the calm phase may take to elect, commit and catch everyone up.
const CALM_STEPS: u64 = 3_000;
const HEARTBEAT_TICKS: usize = 2;

/// SplitMix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct SimNode {
    config: NodeConfig,
    node: Option<QuorumNode<SimDisk>>,
    /// The disk while the node is down.
    disk: Option<SimDisk>,
    /// Step at which a crashed node restarts.
    restart_at: u64,
    /// The last index this node's state machine holds.
    applied: u64,
    /// The state machine: every entry applied, as (index, term, data).
    state: Vec<(u64, u64, Vec<u8>)>,
}

struct Simulation {
    config: SimConfig,
    rng: SimRng,
    step: u64,
    nodes: Vec<SimNode>,
    /// In flight: (delivery step, message).
    network: Vec<(u64, Message)>,
    /// Partition group of each node; messages cross groups only when equal.
    groups: Vec<u64>,
    heal_at: u64,
    /// What the cluster committed, by index: (term, data).
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    leaders: HashMap<u64, u64>,
    /// Proposals in flight: data → the node it was proposed to.
    pending: HashMap<Vec<u8>, u64>,
    acknowledged: BTreeSet<Vec<u8>>,
    next_value: u64,
    report: SimReport,
}

/// Runs one seed. `Ok` with what happened, or the first violation.
pub fn run(config: &SimConfig) -> Result<SimReport, Violation> {
    let mut sim = Simulation::new(config.clone());
    let fault_steps = config.steps;
    while sim.step < fault_steps {
        sim.faults_and_proposals(config.faults)?;
        sim.advance()?;
    }
    sim.calm()?;
    Ok(sim.report)
}

impl Simulation {
    fn new(config: SimConfig) -> Self {
        let mut rng = SimRng::new(config.seed);
        let voters: BTreeSet<u64> = (1..=config.nodes).collect();
        // Distinct election timeouts, drawn from the seed, as the broker draws its own.
        let base = 2 * HEARTBEAT_TICKS + 6;
        let mut timeouts: Vec<usize> = (0..config.nodes as usize).map(|i| base + 3 * i).collect();
        for i in (1..timeouts.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            timeouts.swap(i, j);
        }
        let nodes = voters
            .iter()
            .zip(timeouts)
            .map(|(&id, election_ticks)| {
                let node_config = NodeConfig {
                    id,
                    voters: voters.clone(),
                    election_ticks,
                    election_jitter_ticks: 0,
                    seed: 0,
                    heartbeat_ticks: HEARTBEAT_TICKS,
                };
                #[allow(unused_mut)]
                let mut node = QuorumNode::open(&node_config, SimDisk::default(), 0)
                    .expect("a fresh node opens");
                #[cfg(test)]
                {
                    node.skip_sync = config.skip_sync;
                }
                SimNode {
                    config: node_config,
                    node: Some(node),
                    disk: None,
                    restart_at: 0,
                    applied: 0,
                    state: Vec::new(),
                }
            })
            .collect();
        Simulation {
            groups: vec![0; config.nodes as usize],
            config,
            rng,
            step: 0,
            nodes,
            network: Vec::new(),
            heal_at: 0,
            committed: BTreeMap::new(),
            leaders: HashMap::new(),
            pending: HashMap::new(),
            acknowledged: BTreeSet::new(),
            next_value: 0,
            report: SimReport::default(),
        }
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.config.seed,
            step: self.step,
            what,
        }
    }

    fn compact(&mut self, index: usize) -> Result<(), Violation> {
        let sim_node = &mut self.nodes[index];
        let Some(node) = sim_node.node.as_mut() else {
            return Ok(());
        };
        if sim_node.applied <= node.snapshot_index() {
            return Ok(());
        }
        let data = encode_state(&sim_node.state);
        let result = node.compact(sim_node.applied, data);
        let id = node.id();
        result.map_err(|e| self.violation(format!("node {id} cannot compact: {e}")))?;
        self.report.compactions += 1;
        Ok(())
    }

    fn faults_and_proposals(&mut self, faults: bool) -> Result<(), Violation> {
        if faults {
            // Power loss of a live node, now and then; it returns some steps later.
            if self.rng.chance(4) {
                let victim = self.rng.below(self.config.nodes) as usize;
                let torn = self.rng.below(64) as usize;
                let down_for = 20 + self.rng.below(200);
                self.crash(victim, torn, down_for);
            }
            // A network split into two random groups, healed later.
            // A node compacts its log up to what it applied.
            if self.rng.chance(8) {
                let index = self.rng.below(self.config.nodes) as usize;
                self.compact(index)?;
            }
            if self.step >= self.heal_at && self.rng.chance(3) {
                for group in &mut self.groups {
                    *group = self.rng.below(2);
                }
                self.heal_at = self.step + 30 + self.rng.below(300);
                self.report.partitions += 1;
            }
        }
        if self.step == self.heal_at {
            self.groups.iter_mut().for_each(|g| *g = 0);
        }
        if self.rng.chance(80) {
            self.propose();
        }
        Ok(())
    }

    fn crash(&mut self, index: usize, torn: usize, down_for: u64) {
        let sim_node = &mut self.nodes[index];
        let Some(node) = sim_node.node.take() else {
            return;
        };
        let mut disk = node.into_disk();
        disk.crash(torn);
        sim_node.disk = Some(disk);
        sim_node.restart_at = self.step + down_for;
        self.report.crashes += 1;
        // Proposals made to it are neither acknowledged nor retried: they may or may not
        // commit, which the checker allows.
        self.pending.retain(|_, to| *to != sim_node.config.id);
    }

    fn propose(&mut self) {
        let value = format!("v{}", self.next_value).into_bytes();
        let leader = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.node.as_mut())
            .find(|n| n.is_leader());
        if let Some(node) = leader
            && node.propose(value.clone()).is_ok()
        {
            self.pending.insert(value, node.id());
            self.next_value += 1;
            self.report.proposals += 1;
        }
    }

    /// One step: restarts, ticks, deliveries, then every node processes.
    fn advance(&mut self) -> Result<(), Violation> {
        self.step += 1;
        for i in 0..self.nodes.len() {
            let sim_node = &mut self.nodes[i];
            if sim_node.node.is_none() && self.step >= sim_node.restart_at {
                let disk = sim_node.disk.take().expect("a down node keeps its disk");
                #[allow(unused_mut)]
                let mut node = QuorumNode::open(&sim_node.config, disk, 0)
                    .map_err(|e| self.violation(format!("node {} cannot restart: {e}", i + 1)))?;
                #[cfg(test)]
                {
                    node.skip_sync = self.config.skip_sync;
                }
                let sim_node = &mut self.nodes[i];
                sim_node.node = Some(node);
                sim_node.applied = 0;
                sim_node.state.clear();
            }
        }
        self.take_leaders_for_gone();
        for sim_node in &mut self.nodes {
            if let Some(node) = sim_node.node.as_mut() {
                node.tick();
            }
        }
        let now = self.step;
        let (due, later): (Vec<_>, Vec<_>) = self.network.drain(..).partition(|(at, _)| *at <= now);
        self.network = later;
        for (_, message) in due {
            let (from, to) = (message.from as usize - 1, message.to as usize - 1);
            let node = self.nodes.get_mut(to).and_then(|n| n.node.as_mut());
            match node {
                Some(node) if self.groups[from] == self.groups[to] => {
                    self.report.messages_delivered += 1;
                    node.step(message).map_err(|e| {
                        self.violation(format!("node {} failed a step: {e}", to + 1))
                    })?;
                }
                _ => self.report.messages_dropped += 1,
            }
        }
        for i in 0..self.nodes.len() {
            self.process(i)?;
        }
        self.check_leaders()
    }

    /// A follower whose leader is down stands early, as the broker's does when the
    /// leader's address refuses connections; now and then one does so wrongly (a stale
    /// refusal, a leader that is merely cut off): safety must not depend on the guess.
    fn take_leaders_for_gone(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(leader) = self.nodes[i].node.as_ref().and_then(|n| n.leader()) else {
                continue;
            };
            let down = self
                .nodes
                .get(leader as usize - 1)
                .is_some_and(|n| n.node.is_none());
            let guess = (down && self.rng.chance(300)) || self.rng.chance(2);
            if guess
                && self.nodes[i]
                    .node
                    .as_mut()
                    .is_some_and(|n| n.leader_gone(3))
            {
                self.report.early_elections += 1;
            }
        }
    }

    fn process(&mut self, index: usize) -> Result<(), Violation> {
        let Some(node) = self.nodes[index].node.as_mut() else {
            return Ok(());
        };
        let id = node.id();
        let output = node
            .process()
            .map_err(|e| format!("node {id} failed: {e}"))
            .map_err(|what| Violation {
                seed: self.config.seed,
                step: self.step,
                what,
            })?;
        for message in output.messages {
            let faulty = self.config.faults;
            if faulty && self.rng.chance(20) {
                self.report.messages_dropped += 1;
                continue;
            }
            let delay = 1 + if faulty { self.rng.below(4) } else { 0 };
            if faulty && self.rng.chance(10) {
                self.network.push((self.step + delay + 1, message.clone()));
            }
            self.network.push((self.step + delay, message));
        }
        if let Some(restore) = output.restore {
            let Some(state) = decode_state(&restore.data) else {
                return Err(self.violation(format!("node {id}: undecodable snapshot")));
            };
            if state.last().map_or(0, |e| e.0) != restore.index {
                return Err(self.violation(format!(
                    "node {id}: snapshot at {} holds entries up to {:?}",
                    restore.index,
                    state.last().map(|e| e.0)
                )));
            }
            for (entry_index, term, data) in &state {
                self.check_committed(id, *entry_index, *term, data)?;
            }
            let sim_node = &mut self.nodes[index];
            sim_node.state = state;
            sim_node.applied = restore.index;
            self.report.restores += 1;
            self.report.snapshots_from_leader += u64::from(restore.from_leader);
        }
        for entry in output.committed {
            let applied = self.nodes[index].applied;
            if entry.index != applied + 1 {
                return Err(self.violation(format!(
                    "node {id} reported index {} after {applied}",
                    entry.index
                )));
            }
            self.check_committed(id, entry.index, entry.term, &entry.data)?;
            let sim_node = &mut self.nodes[index];
            sim_node.applied = entry.index;
            sim_node
                .state
                .push((entry.index, entry.term, entry.data.clone()));
            if self.pending.get(&entry.data) == Some(&id) {
                self.pending.remove(&entry.data);
                self.acknowledged.insert(entry.data);
                self.report.acknowledged += 1;
            }
        }
        Ok(())
    }

    /// State machine safety: what a node says is committed at `index` is what every other
    /// node said.
    fn check_committed(
        &mut self,
        id: u64,
        index: u64,
        term: u64,
        data: &[u8],
    ) -> Result<(), Violation> {
        match self.committed.get(&index) {
            Some((known_term, known)) if (*known_term, known.as_slice()) != (term, data) => {
                Err(self.violation(format!(
                    "node {id} committed {:?}@{term} at index {index}, the quorum had {:?}@{known_term}",
                    String::from_utf8_lossy(data),
                    String::from_utf8_lossy(known)
                )))
            }
            Some(_) => Ok(()),
            None => {
                self.committed.insert(index, (term, data.to_vec()));
                Ok(())
            }
        }
    }

    fn check_leaders(&mut self) -> Result<(), Violation> {
        let leaders: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .filter(|n| n.is_leader())
            .map(|n| (n.term(), n.id()))
            .collect();
        for (term, id) in leaders {
            match self.leaders.insert(term, id) {
                Some(other) if other != id => {
                    return Err(self.violation(format!(
                        "two leaders in term {term}: nodes {other} and {id}"
                    )));
                }
                Some(_) => {}
                None => self.report.leaders_elected += 1,
            }
        }
        Ok(())
    }

    /// Heals everything, restarts every node, and requires the quorum to elect, commit a
    /// new proposal and bring every node up to date.
    fn calm(&mut self) -> Result<(), Violation> {
        self.groups.iter_mut().for_each(|g| *g = 0);
        self.heal_at = u64::MAX;
        for sim_node in &mut self.nodes {
            sim_node.restart_at = sim_node.restart_at.min(self.step + 1);
        }
        let deadline = self.step + CALM_STEPS;
        // The proposal that must commit; proposed again (under a new name, so that an
        // earlier attempt committing too is no duplicate) when the leader it went to lost
        // its leadership.
        let mut attempt: Option<(Vec<u8>, u64)> = None;
        let mut attempts = 0;
        while self.step < deadline {
            let stale = attempt.as_ref().is_some_and(|(value, to)| {
                !self.acknowledged.contains(value)
                    && !self.nodes[*to as usize - 1]
                        .node
                        .as_ref()
                        .is_some_and(QuorumNode::is_leader)
            });
            if attempt.is_none() || stale {
                let value = format!("final-{attempts}").into_bytes();
                let leader = self
                    .nodes
                    .iter_mut()
                    .filter_map(|n| n.node.as_mut())
                    .find(|n| n.is_leader());
                if let Some(node) = leader
                    && node.propose(value.clone()).is_ok()
                {
                    self.pending.insert(value.clone(), node.id());
                    attempt = Some((value, node.id()));
                    attempts += 1;
                }
            }
            self.advance()?;
            let last = self.committed.keys().next_back().copied().unwrap_or(0);
            let caught_up = attempt
                .as_ref()
                .is_some_and(|(value, _)| self.acknowledged.contains(value))
                && self
                    .nodes
                    .iter()
                    .all(|n| n.node.as_ref().is_some_and(|node| node.applied() >= last));
            if caught_up {
                return self.check_final_log();
            }
        }
        Err(self.violation(format!(
            "no progress after healing: committed {}, nodes at {:?}, leaders {:?}",
            self.committed.len(),
            self.nodes
                .iter()
                .map(|n| n.node.as_ref().map(|n| (n.applied(), n.term(), n.leader())))
                .collect::<Vec<_>>(),
            self.nodes
                .iter()
                .filter_map(|n| n.node.as_ref())
                .filter(|n| n.is_leader())
                .map(|n| n.id())
                .collect::<Vec<_>>()
        )))
    }

    fn check_final_log(&mut self) -> Result<(), Violation> {
        let indexes: Vec<u64> = self.committed.keys().copied().collect();
        if let Some(gap) = indexes
            .iter()
            .enumerate()
            .find(|(i, index)| **index != *i as u64 + 1)
        {
            return Err(self.violation(format!("the committed log has a gap at {}", gap.1)));
        }
        let mut seen = BTreeSet::new();
        for (_, data) in self.committed.values() {
            if !data.is_empty() && !seen.insert(data.clone()) {
                return Err(self.violation(format!(
                    "{:?} committed twice",
                    String::from_utf8_lossy(data)
                )));
            }
        }
        if let Some(lost) = self.acknowledged.iter().find(|v| !seen.contains(*v)) {
            return Err(self.violation(format!(
                "acknowledged {:?} is not in the final log",
                String::from_utf8_lossy(lost)
            )));
        }
        self.report.final_log_len = self.committed.len() as u64;
        Ok(())
    }
}

fn encode_state(state: &[(u64, u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, term, data) in state {
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn decode_state(mut bytes: &[u8]) -> Option<Vec<(u64, u64, Vec<u8>)>> {
    let mut state = Vec::new();
    while !bytes.is_empty() {
        let index = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let term = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let len = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?) as usize;
        state.push((index, term, bytes.get(20..20 + len)?.to_vec()));
        bytes = &bytes[20 + len..];
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calm_quorum_elects_and_commits() {
        let report = run(&SimConfig {
            seed: 1,
            nodes: 3,
            steps: 300,
            faults: false,
            skip_sync: false,
        })
        .unwrap();
        assert!(report.acknowledged > 10, "{report:?}");
        assert_eq!(report.crashes, 0);
        assert_eq!(report.leaders_elected, 1, "{report:?}");
    }

    #[test]
    fn the_same_seed_replays_the_same_run() {
        let config = SimConfig {
            seed: 42,
            nodes: 5,
            steps: 1_000,
            faults: true,
            skip_sync: false,
        };
        assert_eq!(run(&config), run(&config));
    }

    /// Seeds for the default run; `SLUICE_SIM_SEEDS` asks for more (the long run is the
    /// `simulate` example in release mode).
    fn seeds() -> u64 {
        std::env::var("SLUICE_SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60)
    }

    #[test]
    fn quorums_of_three_and_five_under_faults_break_no_invariant() {
        for nodes in [3, 5] {
            let (mut acknowledged, mut crashes, mut partitions) = (0, 0, 0);
            let (mut restores, mut from_leader, mut early) = (0, 0, 0);
            for seed in 0..seeds() {
                let report = run(&SimConfig {
                    seed,
                    nodes,
                    steps: 1_500,
                    faults: true,
                    skip_sync: false,
                })
                .unwrap_or_else(|v| panic!("{nodes} nodes: {v}"));
                acknowledged += report.acknowledged;
                crashes += report.crashes;
                partitions += report.partitions;
                restores += report.restores;
                from_leader += report.snapshots_from_leader;
                early += report.early_elections;
            }
            assert!(
                restores > seeds(),
                "{nodes} nodes: snapshots restored: {restores}"
            );
            assert!(
                from_leader > seeds() / 4,
                "{nodes} nodes: snapshots sent by a leader: {from_leader}"
            );
            assert!(acknowledged > seeds() * 50, "{nodes} nodes: {acknowledged}");
            assert!(
                crashes > seeds() && partitions > seeds() && early > seeds(),
                "{nodes} nodes: the faults happened ({crashes} crashes, {partitions} partitions, \
                 {early} early elections)"
            );
        }
    }

    #[test]
    fn the_checker_catches_acknowledgements_before_sync() {
        let caught = (0..50).any(|seed| {
            let config = SimConfig {
                seed,
                nodes: 3,
                steps: 1_500,
                faults: true,
                skip_sync: true,
            };
            // raft-rs itself panics when a node's log lost what it acknowledged: also caught.
            std::panic::catch_unwind(|| run(&config)).map_or(true, |result| result.is_err())
        });
        assert!(
            caught,
            "a quorum that acknowledges unsynced writes went unnoticed"
        );
    }
}
