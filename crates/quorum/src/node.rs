//! One voter of the quorum: raft-rs's `RawNode` driven by the caller, with its log and hard
//! state on a [`StableStore`].
//!
//! The caller owns time and the network. It calls [`QuorumNode::tick`] at a fixed interval
//! of its own clock (the election and heartbeat timeouts are counted in ticks), hands every
//! message from a peer to [`QuorumNode::step`], proposes with [`QuorumNode::propose`], and
//! after any of these calls [`QuorumNode::process`], which persists what Raft asks for,
//! syncs, and only then returns the messages to send and the entries now committed, in
//! index order. So a vote or an acknowledgement never leaves before what it promises is
//! durable, and nothing is reported committed that a crash of this node could take back.
//!
//! Elections: pre-vote (a node cut off cannot disrupt the quorum when it returns) and
//! check-quorum (a leader that stops hearing from a majority steps down, so it stops
//! accepting proposals). With `election_jitter_ticks`, the election timeout is drawn anew
//! whenever the term or role changes, from `election_ticks + 2 + (k * voters + rank) *
//! spacing` (`rank`: this voter's place among the voters; `k` from the node's own generator,
//! seeded by `NodeConfig::seed`; `spacing` up to 3 ticks): two voters' timeouts are at least
//! `spacing` ticks apart, so the first one's vote request, fsync included, reaches the other
//! before it times out too and splits the vote (raft-rs's own draw could; its priority-based
//! tie-break panics in 0.7). raft-rs's own draw (thread-local) happens first, so the jittered
//! timeouts are not deterministic; with no jitter the timeout is fixed and the node is
//! deterministic, as the simulator needs: its voters are given different fixed timeouts.

use std::collections::BTreeSet;

use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{Config, RawNode, StateRole};

use crate::log_view::LogView;
use crate::storage::{Disk, StableStore, StorageError};

/// How one voter is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This voter's id (Kafka's `node.id`), > 0.
    pub id: u64,
    /// Every voter's id, this one included (`controller.quorum.voters`).
    pub voters: BTreeSet<u64>,
    /// Ticks without hearing from a leader before this node starts an election, at least
    /// `2 * heartbeat_ticks + 1`.
    pub election_ticks: usize,
    /// Up to this many more ticks, drawn at random after each election (0: fixed timeout).
    pub election_jitter_ticks: usize,
    /// Seeds the draw of election timeouts (a simulator replays it; a broker picks one).
    pub seed: u64,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
}

/// An entry the quorum committed: its position and the proposer's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// The state machine as of `index`, from a snapshot: the caller replaces its state with
/// `data` before applying the committed entries that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
    /// Sent by the leader (this node was too far behind), rather than read at startup.
    pub from_leader: bool,
}

impl Restore {
    fn of(snapshot: &Snapshot, from_leader: bool) -> Self {
        Restore {
            index: snapshot.get_metadata().index,
            term: snapshot.get_metadata().term,
            data: snapshot.data.to_vec(),
            from_leader,
        }
    }
}

/// What [`QuorumNode::process`] hands back to the caller.
#[derive(Debug, Default)]
pub struct Output {
    /// A snapshot to restore first: at startup, when the log was compacted, or when this
    /// node was too far behind and the leader sent its snapshot.
    pub restore: Option<Restore>,
    /// To send to the peers named in each message's `to`; losing some is fine (Raft
    /// retries), reordering and duplicates too.
    pub messages: Vec<Message>,
    /// Newly committed entries, in index order without gaps. An entry with empty data is
    /// Raft's own (a new leader commits one to learn what is committed); the state machine
    /// skips it.
    pub committed: Vec<Committed>,
}

/// Why a proposal was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is this node's best knowledge of it.
    #[error("not the quorum leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("proposal refused: {0}")]
    Refused(String),
}

/// Why the node cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("invalid quorum configuration: {0}")]
    Config(String),
}

/// One voter. See the module documentation for how it is driven.
pub struct QuorumNode<D: Disk> {
    raw: RawNode<LogView>,
    store: StableStore<D>,
    id: u64,
    /// The last index handed out as committed (entries at or below it are never reported
    /// again).
    applied: u64,
    /// The stored snapshot, to hand to the caller at the first `process` after opening.
    restore_at_open: Option<Restore>,
    /// Drawing election timeouts: this voter's rank among the voters, their number, the
    /// generator's state, and the (term, role) the current timeout was drawn for.
    election_draw: Option<ElectionDraw>,
    /// A deliberate bug for the simulator's own test: acknowledge without syncing.
    #[cfg(test)]
    pub(crate) skip_sync: bool,
}

/// Ticks between two possible election timeouts: up to 3 (30 ms with the broker's 10 ms
/// ticks: a vote's fsync and a loopback round trip with room to spare), fewer when the jitter
/// leaves no room for a slot per voter.
fn election_spacing(config: &NodeConfig) -> usize {
    let room = config.election_jitter_ticks.saturating_sub(2) / config.voters.len().max(1);
    room.clamp(1, 3)
}

/// See [`QuorumNode::draw_election_timeout`].
#[derive(Debug)]
struct ElectionDraw {
    rank: usize,
    voters: usize,
    /// The smallest and the largest timeout raft-rs accepts.
    base: usize,
    max: usize,
    slots: usize,
    /// Ticks between two voters' possible timeouts: enough for the first to time out to
    /// persist its vote and ask the others before the next one times out too (a vote split
    /// costs a whole new round).
    spacing: usize,
    state: u64,
    drawn_for: Option<(u64, StateRole)>,
    /// The timeout last set.
    set: usize,
}

impl<D: Disk> std::fmt::Debug for QuorumNode<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumNode")
            .field("id", &self.id)
            .field("role", &self.raw.raft.state)
            .field("term", &self.raw.raft.term)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl<D: Disk> QuorumNode<D> {
    /// Opens the voter on `disk`, replaying what it stored. `applied` is the last index the
    /// caller's state machine already holds (0 for none): committed entries after it are
    /// reported again by [`QuorumNode::process`].
    pub fn open(config: &NodeConfig, disk: D, applied: u64) -> Result<Self, NodeError> {
        if config.id == 0 || !config.voters.contains(&config.id) {
            return Err(NodeError::Config(format!(
                "node id {} must be one of the voters {:?}",
                config.id, config.voters
            )));
        }
        if config.heartbeat_ticks == 0 || config.election_ticks <= 2 * config.heartbeat_ticks {
            return Err(NodeError::Config(format!(
                "election ticks ({}) must exceed twice the heartbeat ticks ({})",
                config.election_ticks, config.heartbeat_ticks
            )));
        }
        let (store, stored) = StableStore::open(disk)?;
        let mut view = LogView::new(ConfState {
            voters: config.voters.iter().copied().collect(),
            ..ConfState::default()
        });
        view.set_hard_state(stored.hard_state.clone());
        let snapshot_index = stored.snapshot.get_metadata().index;
        let restore_at_open =
            (snapshot_index > applied).then(|| Restore::of(&stored.snapshot, false));
        if snapshot_index > 0 {
            view.install(stored.snapshot.clone());
        }
        view.append(&stored.entries).map_err(NodeError::Config)?;
        let mut hard_state = view.hard_state().clone();
        // The stored commit may be ahead of the entries a crash left (a hard state written
        // after entries that were cut); Raft learns the rest from the leader.
        hard_state.commit = hard_state.commit.min(view.last()).max(snapshot_index);
        view.set_hard_state(hard_state);
        let commit = view.hard_state().commit;
        let applied = applied.max(snapshot_index).min(commit);
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            // One possible value: the timeout is the configured one, not a random draw, so
            // a run replays exactly under a simulator.
            // With jitter, at least two ticks past the timeout: a voter that heard the same
            // last heartbeat a tick later than this one must see its leader lease expired
            // when this one asks for votes, or the election waits another round.
            min_election_tick: config.election_ticks + config.election_jitter_ticks.min(2),
            max_election_tick: config.election_ticks + config.election_jitter_ticks + 1,
            applied,
            // No election priorities: raft-rs 0.7 panics when it rejects a vote for priority
            // (its rejection carries no term); ties are made rare by drawing timeouts instead.
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, view, &logger)?;
        Ok(QuorumNode {
            raw,
            store,
            id: config.id,
            applied,
            restore_at_open,
            election_draw: (config.election_jitter_ticks > 0).then(|| ElectionDraw {
                rank: config
                    .voters
                    .iter()
                    .position(|v| *v == config.id)
                    .unwrap_or(0),
                voters: config.voters.len().max(1),
                base: config.election_ticks + config.election_jitter_ticks.min(2),
                max: config.election_ticks + config.election_jitter_ticks,
                slots: (config.election_jitter_ticks.saturating_sub(2)
                    / (config.voters.len().max(1) * election_spacing(config)))
                .max(1),
                spacing: election_spacing(config),
                state: config.seed,
                drawn_for: None,
                set: 0,
            }),
            #[cfg(test)]
            skip_sync: false,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Advances this node's clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Hands a message from a peer to Raft. Messages for another node are ignored.
    pub fn step(&mut self, message: Message) -> Result<(), NodeError> {
        if message.to != self.id {
            return Ok(());
        }
        match self.raw.step(message) {
            // A message from a node not in the configuration, or for a stale step: Raft
            // drops it; nothing to report.
            Ok(()) | Err(raft::Error::StepPeerNotFound | raft::Error::StepLocalMsg) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Starts an election now instead of waiting for the timeout (a voter alone in its
    /// quorum becomes leader at once).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        Ok(self.raw.campaign()?)
    }

    /// The caller knows the leader is gone (its address refuses connections) and has not
    /// heard from it for `silent_ticks`: this follower stops counting the leader's lease
    /// (it grants votes at once) and moves its election timer on, so that it stands within
    /// a few ticks instead of a whole timeout, voters a rank apart (as
    /// `draw_election_timeout` spaces them) so that the first request reaches the others
    /// before they stand too. Returns whether the timer moved. Timing never decides safety
    /// in Raft, only when an election starts: a wrong guess costs one election.
    pub fn leader_gone(&mut self, silent_ticks: usize) -> bool {
        let delay = self
            .election_draw
            .as_ref()
            .map_or(1, |draw| 1 + draw.rank * draw.spacing);
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Follower
            || raft.leader_id == raft::INVALID_ID
            || raft.election_elapsed < silent_ticks
        {
            return false;
        }
        raft.leader_id = raft::INVALID_ID;
        let timeout = raft.randomized_election_timeout();
        raft.election_elapsed = raft.election_elapsed.max(timeout.saturating_sub(delay));
        debug_assert!(
            raft.election_elapsed < timeout,
            "the election is still to come"
        );
        true
    }

    /// The index of the last entry in this node's log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Proposes `data` for the log. Accepted only by the leader; returns the index the entry
    /// takes. It is committed (reported by [`QuorumNode::process`] with this index and the
    /// current term) or lost, if the leader changes first (another entry, of a later term,
    /// is then committed at that index).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        self.raw.propose(Vec::new(), data).map_err(|e| match e {
            raft::Error::ProposalDropped => ProposeError::NotLeader {
                leader: self.leader(),
            },
            other => ProposeError::Refused(other.to_string()),
        })?;
        Ok(self.last_index())
    }

    /// Proposes `data` from any voter: the leader appends it and returns its index (as
    /// [`QuorumNode::propose`]); a follower forwards it to the leader it knows and returns
    /// `None`. A forwarded proposal may be lost on the way or in a leader change, unseen by
    /// the follower: the caller must recognise its entry when it commits (by its content)
    /// and give up on it after a deadline.
    pub fn propose_anywhere(&mut self, data: Vec<u8>) -> Result<Option<u64>, ProposeError> {
        if self.is_leader() {
            return self.propose(data).map(Some);
        }
        if self.leader().is_none() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        self.raw.propose(Vec::new(), data).map_err(|e| match e {
            raft::Error::ProposalDropped => ProposeError::NotLeader {
                leader: self.leader(),
            },
            other => ProposeError::Refused(other.to_string()),
        })?;
        Ok(None)
    }

    /// This voter's Raft role, for logs.
    pub fn role(&self) -> &'static str {
        match self.raw.raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// As leader: each voter's id and the highest index known replicated on it (its own:
    /// the last index). Empty on a follower, which does not track the others.
    pub fn voter_progress(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut progress: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, pr)| {
                let matched = if *id == self.id {
                    self.last_index()
                } else {
                    pr.matched
                };
                (*id, matched)
            })
            .collect();
        progress.sort_unstable();
        progress
    }

    /// The highest index this node knows committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The index of the latest snapshot (0: the log was never compacted).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Compacts the log: `data` is the caller's state machine as of `index` (at most
    /// [`QuorumNode::applied`]); entries up to `index` are dropped, and a follower too far
    /// behind receives this snapshot instead. Durable when it returns.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), NodeError> {
        if index > self.applied {
            return Err(NodeError::Config(format!(
                "cannot compact to {index}: only {} is applied",
                self.applied
            )));
        }
        let view = self.raw.store();
        let (snapshot, rest) = view
            .prepare_compaction(index, data)
            .map_err(NodeError::Config)?;
        let hard_state = view.hard_state().clone();
        self.store.replace(&snapshot, &hard_state, &rest)?;
        let view = self.raw.mut_store();
        view.install(snapshot);
        view.append(&rest).map_err(NodeError::Config)?;
        Ok(())
    }

    /// Stops the node and gives its disk back (a simulator crashes and reopens it).
    pub fn into_disk(self) -> D {
        self.store.into_disk()
    }

    /// Persists what Raft produced since the last call (entries, hard state), syncs, and
    /// returns the messages to send and the newly committed entries. Call after every
    /// tick, step and proposal.
    pub fn process(&mut self) -> Result<Output, NodeError> {
        let mut output = Output {
            restore: self.restore_at_open.take(),
            ..Output::default()
        };
        if !self.raw.has_ready() {
            return Ok(output);
        }
        let mut ready = self.raw.ready();
        // Everything is sent after the sync below, so the leader's own messages wait for its
        // write too: simpler, and its acknowledgement of its own entries is then honest.
        output.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // The leader's snapshot replaces this node's log (it was too far behind).
            let snapshot = ready.snapshot().clone();
            let mut hard_state = ready
                .hs()
                .cloned()
                .unwrap_or_else(|| self.raw.store().hard_state().clone());
            let index = snapshot.get_metadata().index;
            hard_state.commit = hard_state.commit.max(index);
            self.store.replace(&snapshot, &hard_state, &[])?;
            let view = self.raw.mut_store();
            view.set_hard_state(hard_state);
            view.install(snapshot.clone());
            output.restore = Some(Restore::of(&snapshot, true));
            self.applied = index;
        }
        let committed = ready.take_committed_entries();
        if !ready.entries().is_empty() {
            self.store.append(ready.entries())?;
            self.raw
                .mut_store()
                .append(ready.entries())
                .map_err(NodeError::Config)?;
        }
        if let Some(hard_state) = ready.hs() {
            self.store.save_hard_state(hard_state)?;
            self.raw.mut_store().set_hard_state(hard_state.clone());
        }
        #[cfg(test)]
        let sync = !self.skip_sync;
        #[cfg(not(test))]
        let sync = true;
        if sync {
            self.store.sync()?;
        }
        self.collect(committed, &mut output);
        output.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let view = self.raw.mut_store();
            let mut hard_state = view.hard_state().clone();
            hard_state.commit = commit;
            view.set_hard_state(hard_state.clone());
            // The commit index need not be durable for safety (Raft relearns it), but
            // storing it lets a restart report committed entries without a leader.
            self.store.save_hard_state(&hard_state)?;
        }
        output.messages.extend(light.take_messages());
        self.collect(light.take_committed_entries(), &mut output);
        self.raw.advance_apply();
        // A snapshot handed to the network may be lost; telling Raft it was sent moves the
        // follower to probing, so a lost one is noticed (the follower's next answer shows it
        // still lacks the entries) and sent again, instead of waiting forever.
        for message in &output.messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.raw
                    .report_snapshot(message.to, raft::SnapshotStatus::Finish);
            }
        }
        self.draw_election_timeout();
        self.assert_invariants();
        Ok(output)
    }

    /// Draws a new election timeout when the term or role changed since the last draw.
    fn draw_election_timeout(&mut self) {
        let raft = &mut self.raw.raft;
        let Some(draw) = self.election_draw.as_mut() else {
            return;
        };
        // raft-rs redraws (from its own generator) at every reset: a changed term or role,
        // or a timeout that is no longer the one set here, means it did.
        let now = (raft.term, raft.state);
        if draw.drawn_for == Some(now) && draw.set == raft.randomized_election_timeout() {
            return;
        }
        draw.drawn_for = Some(now);
        // SplitMix64.
        draw.state = draw.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = draw.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let slot = (z % draw.slots as u64) as usize;
        let class = slot * draw.voters + draw.rank;
        let timeout = (draw.base + class * draw.spacing).clamp(draw.base, draw.max);
        raft.set_randomized_election_timeout(timeout);
        draw.set = timeout;
    }

    fn collect(&mut self, entries: Vec<Entry>, output: &mut Output) {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            assert_eq!(
                entry.index,
                self.applied + 1,
                "committed entries are reported in order without gaps"
            );
            self.applied = entry.index;
            if entry.get_entry_type() == EntryType::EntryNormal {
                output.committed.push(Committed {
                    index: entry.index,
                    term: entry.term,
                    data: entry.data.to_vec(),
                });
            }
        }
    }

    fn assert_invariants(&self) {
        let raft = &self.raw.raft;
        assert!(
            self.applied <= raft.raft_log.committed,
            "applied {} beyond the commit index {}",
            self.applied,
            raft.raft_log.committed
        );
        assert!(
            raft.raft_log.committed <= raft.raft_log.last_index(),
            "commit index beyond the log"
        );
        if raft.state == StateRole::Leader {
            assert_eq!(raft.leader_id, self.id, "a leader knows itself as leader");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileDisk;

    fn single_voter() -> NodeConfig {
        NodeConfig {
            id: 1,
            voters: [1].into(),
            election_ticks: 5,
            election_jitter_ticks: 0,
            seed: 0,
            heartbeat_ticks: 1,
        }
    }

    /// Ticks until the node leads, collecting what it commits.
    fn lead(node: &mut QuorumNode<FileDisk>, committed: &mut Vec<Committed>) {
        for _ in 0..50 {
            node.tick();
            committed.extend(node.process().unwrap().committed);
            if node.is_leader() {
                return;
            }
        }
        panic!("a single voter elects itself");
    }

    #[test]
    fn a_voter_on_real_files_keeps_its_log_and_snapshot_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut committed = Vec::new();
        {
            let mut node =
                QuorumNode::open(&single_voter(), FileDisk::open(dir.path()).unwrap(), 0).unwrap();
            assert_eq!(
                node.propose(b"early".to_vec()),
                Err(ProposeError::NotLeader { leader: None })
            );
            lead(&mut node, &mut committed);
            for value in ["a", "b", "c"] {
                node.propose(value.as_bytes().to_vec()).unwrap();
                committed.extend(node.process().unwrap().committed);
            }
            let values: Vec<&[u8]> = committed
                .iter()
                .filter(|c| !c.data.is_empty())
                .map(|c| c.data.as_slice())
                .collect();
            assert_eq!(values, [b"a", b"b", b"c"]);
            let at_b = committed.iter().find(|c| c.data == b"b").unwrap().index;
            node.compact(at_b, b"state up to b".to_vec()).unwrap();
            assert_eq!(node.snapshot_index(), at_b);
            assert!(node.compact(node.applied() + 1, Vec::new()).is_err());
        }
        let mut node =
            QuorumNode::open(&single_voter(), FileDisk::open(dir.path()).unwrap(), 0).unwrap();
        let output = node.process().unwrap();
        let restore = output.restore.expect("the snapshot comes first");
        assert_eq!(restore.data, b"state up to b");
        assert!(!restore.from_leader);
        let mut after = output.committed;
        lead(&mut node, &mut after);
        assert!(
            after.iter().any(|c| c.data == b"c"),
            "the entry after the snapshot is reported again: {after:?}"
        );
        assert!(after.iter().all(|c| c.index > restore.index));
    }
}
