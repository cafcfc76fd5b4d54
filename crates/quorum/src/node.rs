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
//! accepting proposals). Each node's election timeout is fixed at construction
//! (`election_ticks`), which keeps the node deterministic under a simulator; callers give
//! voters different values (the broker draws one at startup) so that elections settle.

use std::collections::BTreeSet;

use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

use crate::storage::{Disk, StableStore, StorageError};

/// How one voter is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This voter's id (Kafka's `node.id`), > 0.
    pub id: u64,
    /// Every voter's id, this one included (`controller.quorum.voters`).
    pub voters: BTreeSet<u64>,
    /// Ticks without hearing from a leader before this node starts an election. Give each
    /// voter a different value in `[2 * heartbeat_ticks + 1, ..)`.
    pub election_ticks: usize,
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

/// What [`QuorumNode::process`] hands back to the caller.
#[derive(Debug, Default)]
pub struct Output {
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
    raw: RawNode<MemStorage>,
    store: StableStore<D>,
    id: u64,
    /// The last index handed out as committed (entries at or below it are never reported
    /// again).
    applied: u64,
    /// A deliberate bug for the simulator's own test: acknowledge without syncing.
    #[cfg(test)]
    pub(crate) skip_sync: bool,
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
        let memory = MemStorage::new();
        {
            let mut core = memory.wl();
            core.set_conf_state(ConfState {
                voters: config.voters.iter().copied().collect(),
                ..ConfState::default()
            });
            core.append(&stored.entries)?;
            let mut hard_state = stored.hard_state.clone();
            // The stored commit may be ahead of the entries a crash left (a hard state
            // written after entries that were cut); Raft learns the rest from the leader.
            let last = stored.entries.last().map_or(0, |e| e.index);
            hard_state.commit = hard_state.commit.min(last);
            core.set_hardstate(hard_state);
        }
        let commit = memory.rl().hard_state().commit;
        let applied = applied.min(commit);
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            // One possible value: the timeout is the configured one, not a random draw, so
            // a run replays exactly under a simulator.
            min_election_tick: config.election_ticks,
            max_election_tick: config.election_ticks + 1,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, memory, &logger)?;
        Ok(QuorumNode {
            raw,
            store,
            id: config.id,
            applied,
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

    /// Proposes `data` for the log. Accepted only by the leader; committed (or lost, if the
    /// leader changes first) later, reported by [`QuorumNode::process`].
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ProposeError> {
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
        })
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

    /// The highest index this node knows committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Stops the node and gives its disk back (a simulator crashes and reopens it).
    pub fn into_disk(self) -> D {
        self.store.into_disk()
    }

    /// Persists what Raft produced since the last call (entries, hard state), syncs, and
    /// returns the messages to send and the newly committed entries. Call after every
    /// tick, step and proposal.
    pub fn process(&mut self) -> Result<Output, NodeError> {
        let mut output = Output::default();
        if !self.raw.has_ready() {
            return Ok(output);
        }
        let mut ready = self.raw.ready();
        // Everything is sent after the sync below, so the leader's own messages wait for its
        // write too: simpler, and its acknowledgement of its own entries is then honest.
        output.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            return Err(NodeError::Config(
                "snapshots are not supported yet".to_string(),
            ));
        }
        let committed = ready.take_committed_entries();
        if !ready.entries().is_empty() {
            self.store.append(ready.entries())?;
            self.raw.mut_store().wl().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.store.save_hard_state(hard_state)?;
            self.raw.mut_store().wl().set_hardstate(hard_state.clone());
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
            let mut core = self.raw.mut_store().wl();
            let mut hard_state = core.hard_state().clone();
            hard_state.commit = commit;
            core.set_hardstate(hard_state.clone());
            drop(core);
            // The commit index need not be durable for safety (Raft relearns it), but
            // storing it lets a restart report committed entries without a leader.
            self.store.save_hard_state(&hard_state)?;
        }
        output.messages.extend(light.take_messages());
        self.collect(light.take_committed_entries(), &mut output);
        self.raw.advance_apply();
        self.assert_invariants();
        Ok(output)
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
