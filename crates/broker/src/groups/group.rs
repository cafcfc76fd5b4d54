//! One consumer group of the classic protocol: members, generations and the state machine
//!
//! ```text
//!  Empty ──join──► PreparingRebalance ──all joined / timeout──► CompletingRebalance
//!    ▲                 ▲      ▲                                      │ leader's SyncGroup
//!    │ last member     │      └──── member joins, leaves, dies ──────┤
//!    │ leaves / dies   └──── member joins, leaves, dies ─── Stable ◄─┘
//!  Dead: deleted (DeleteGroups), never reused.
//! ```
//!
//! All methods run under the group's mutex and never block: a request that must wait (a
//! JoinGroup until the rebalance completes, a follower's SyncGroup until the leader's
//! assignment) gets a oneshot receiver to await after the lock is released. Deadlines
//! (session, rebalance, initial delay) are checked by [`Group::tick`], which the coordinator
//! calls periodically.
//!
//! Invariants (checked after every public operation in debug builds, see `invariants.rs`):
//! a member has at most one pending join and one pending sync, and waits only in the state
//! that answers it; `generation` only grows; from CompletingRebalance on the leader is a
//! member; `static_members` maps each group.instance.id to the member id that owns it.

mod invariants;
mod join;
mod outcome;
mod persist;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

pub use crate::config::GroupLimits;
pub use outcome::{JoinOutcome, JoinRequest, Reply, SyncOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The time a group operation runs at: a monotonic instant for deadlines, and wall-clock
/// milliseconds for what is recorded (when the group became empty, for offset retention).
/// Both come from the coordinator's injected clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub ms: i64,
}

impl Now {
    pub fn from_clock(clock: &dyn sluice_log::Clock) -> Self {
        Now {
            instant: clock.now(),
            ms: clock.now_ms(),
        }
    }
}

#[derive(Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: Duration,
    pub session_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    /// Session expiry; not applied while the member waits in a join or sync.
    deadline: Instant,
    /// Order of first join, to pick the leader.
    joined_seq: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

/// A committed offset, with the position of its record in `__consumer_offsets` so that a
/// later commit is never overwritten by an earlier one that completed late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    pub record_offset: i64,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used, with their expiry.
    pending: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    pub offsets: HashMap<(String, i32), Committed>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
    sync_deadline: Option<Instant>,
    next_seq: u64,
    /// Wall-clock ms when the group last became Empty (offset retention, KIP-211).
    pub empty_since_ms: Option<i64>,
    /// Offset commits appended but not yet durable and applied: while any is, the group is
    /// neither expired nor deleted (its tombstone would land after the commit's record and
    /// take the acknowledged commit with it at replay).
    pub pending_commits: u32,
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            offsets: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            next_seq: 0,
            empty_since_ms: Some(now_ms),
            pending_commits: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> HashSet<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return HashSet::new();
        };
        let mut candidates: HashSet<String> =
            first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for member in members {
            let theirs: HashSet<String> = member.protocols.iter().map(|(n, _)| n.clone()).collect();
            candidates.retain(|c| theirs.contains(c));
        }
        candidates
    }

    /// The protocol most members prefer among those all support.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = Vec::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n))
            {
                match votes.iter_mut().find(|(n, _)| n == name) {
                    Some((_, count)) => *count += 1,
                    None => votes.push((name.clone(), 1)),
                }
            }
        }
        let most = votes.iter().map(|(_, c)| *c).max()?;
        votes.into_iter().find(|(_, c)| *c == most).map(|(n, _)| n)
    }

    fn current_join_outcome(&self, member_id: &str, for_leader: bool) -> JoinOutcome {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if for_leader {
            self.members
                .values()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Starts a rebalance: members must rejoin within the rebalance timeout.
    fn prepare_rebalance(&mut self, limits: &GroupLimits, now: Now) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state == GroupState::Empty && !limits.initial_rebalance_delay.is_zero() {
            // Let the members of a starting fleet arrive together (group.initial.rebalance.delay.ms).
            self.initial_delay_until =
                Some(now.instant + limits.initial_rebalance_delay.min(longest));
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now.instant + longest);
        self.sync_deadline = None;
        self.empty_since_ms = None;
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn try_complete_join(&mut self, now: Now) {
        let delayed = self
            .initial_delay_until
            .is_some_and(|until| now.instant < until);
        if self.state == GroupState::PreparingRebalance && self.all_joined() && !delayed {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation starts
    /// and every joined member gets its answer.
    fn complete_join(&mut self, now: Now) {
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in missing {
            self.remove_member(&member_id);
        }
        self.pending.clear();
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty(now);
            return;
        }
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.joined_seq)
                .map(|m| m.member_id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.sync_deadline = Some(now.instant + longest);
        let leader = self.leader.clone().unwrap_or_default();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in ids {
            let outcome = self.current_join_outcome(&member_id, member_id == leader);
            let member = self.members.get_mut(&member_id).expect("listed");
            member.deadline = now.instant + member.session_timeout;
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(outcome);
            }
        }
    }

    fn become_empty(&mut self, now: Now) {
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol = None;
        self.sync_deadline = None;
        self.rebalance_deadline = None;
        self.empty_since_ms = Some(now.ms);
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(mut member) = self.members.remove(member_id) {
            if let Some(instance) = &member.group_instance_id
                && self.static_members.get(instance).map(String::as_str) == Some(member_id)
            {
                self.static_members.remove(instance);
            }
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinOutcome::error(
                    ResponseError::UnknownMemberId,
                    member_id,
                ));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncOutcome::error(ResponseError::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// After members left or died: the group rebalances, or becomes empty.
    fn after_departure(&mut self, limits: &GroupLimits, now: Now) {
        match self.state {
            _ if self.members.is_empty() && self.pending.is_empty() => {
                if self.state != GroupState::Empty {
                    self.generation += 1;
                    self.become_empty(now);
                }
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(limits, now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Checks a member's identity for SyncGroup, Heartbeat and OffsetCommit.
    fn check_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance
            && self
                .static_members
                .get(instance)
                .is_some_and(|owner| owner != member_id)
        {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a SyncGroup. The leader's assignments are stored and sent to every member.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Now,
    ) -> Reply<SyncOutcome> {
        let generation_before = self.generation;
        let outcome = self.sync_unchecked(
            member_id,
            instance,
            generation,
            protocol_type,
            protocol_name,
            assignments,
            now,
        );
        self.assert_invariants(generation_before);
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_unchecked(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Now,
    ) -> Reply<SyncOutcome> {
        let fail = |error| Reply::Now(SyncOutcome::error(error));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(error) = self.check_member(member_id, instance, generation) {
            return fail(error);
        }
        let type_ok = protocol_type.is_none_or(|t| self.protocol_type.as_deref() == Some(t));
        let name_ok = protocol_name.is_none_or(|n| self.protocol.as_deref() == Some(n));
        if !type_ok || !name_ok {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let member = self.members.get_mut(member_id).expect("checked");
        member.deadline = now.instant + member.session_timeout;
        match self.state {
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => Reply::Now(self.sync_outcome(member_id)),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                member.sync_waiter = Some(tx);
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = given.remove(&member.member_id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let outcome = self.sync_outcome(&id);
                        if let Some(waiter) =
                            self.members.get_mut(&id).and_then(|m| m.sync_waiter.take())
                        {
                            let _ = waiter.send(outcome);
                        }
                    }
                }
                Reply::Later(rx)
            }
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
        }
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Handles a Heartbeat; `None` is success.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Now,
    ) -> Option<ResponseError> {
        let generation_before = self.generation;
        let outcome = self.heartbeat_unchecked(member_id, instance, generation, now);
        self.assert_invariants(generation_before);
        outcome
    }

    fn heartbeat_unchecked(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Now,
    ) -> Option<ResponseError> {
        if self.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if self.state == GroupState::Empty {
            return Some(ResponseError::UnknownMemberId);
        }
        if let Err(error) = self.check_member(member_id, instance, generation) {
            return Some(error);
        }
        let member = self.members.get_mut(member_id).expect("checked");
        member.deadline = now.instant + member.session_timeout;
        (self.state == GroupState::PreparingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    /// Handles a LeaveGroup; one result per member (`None` is success).
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        limits: &GroupLimits,
        now: Now,
    ) -> Vec<Option<ResponseError>> {
        let generation_before = self.generation;
        let outcome = self.leave_unchecked(leaving, limits, now);
        self.assert_invariants(generation_before);
        outcome
    }

    fn leave_unchecked(
        &mut self,
        leaving: &[(String, Option<String>)],
        limits: &GroupLimits,
        now: Now,
    ) -> Vec<Option<ResponseError>> {
        let mut results = Vec::with_capacity(leaving.len());
        let (mut members_left, mut pending_left) = (false, false);
        for (member_id, instance) in leaving {
            let target = match instance {
                Some(instance) => match self.static_members.get(instance) {
                    Some(owner) if member_id.is_empty() || owner == member_id => {
                        Some(owner.clone())
                    }
                    Some(_) => {
                        results.push(Some(ResponseError::FencedInstanceId));
                        continue;
                    }
                    None => None,
                },
                None => Some(member_id.clone()),
            };
            match target {
                Some(id) if self.members.contains_key(&id) => {
                    self.remove_member(&id);
                    members_left = true;
                    results.push(None);
                }
                Some(id) if self.pending.remove(&id).is_some() => {
                    pending_left = true;
                    results.push(None);
                }
                _ => results.push(Some(ResponseError::UnknownMemberId)),
            }
        }
        // Only a member's departure changes the membership; an unknown id changes nothing,
        // and a pending id only matters to a join that waits for it.
        if members_left {
            self.after_departure(limits, now);
        } else if pending_left {
            self.try_complete_join(now);
        }
        results
    }

    /// Applies deadlines: expired sessions and pending ids, the rebalance timeout, the
    /// initial delay and the sync timeout. Returns whether anything changed.
    pub fn tick(&mut self, limits: &GroupLimits, now: Now) -> bool {
        let generation_before = self.generation;
        let outcome = self.tick_unchecked(limits, now);
        self.assert_invariants(generation_before);
        outcome
    }

    fn tick_unchecked(&mut self, limits: &GroupLimits, now: Now) -> bool {
        let mut changed = false;
        let before = self.pending.len();
        self.pending.retain(|_, expiry| *expiry > now.instant);
        changed |= self.pending.len() != before;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && m.sync_waiter.is_none() && m.deadline <= now.instant
            })
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &expired {
            tracing::info!(group = %self.id, member = %member_id, "member session expired");
            self.remove_member(member_id);
        }
        if !expired.is_empty() {
            self.after_departure(limits, now);
            changed = true;
        } else if changed {
            // Expired pending ids: a join waiting for them may complete now.
            self.try_complete_join(now);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if self.rebalance_deadline.is_some_and(|d| d <= now.instant) {
                    self.complete_join(now);
                    changed = true;
                } else if self.initial_delay_until.is_some_and(|d| d <= now.instant) {
                    self.initial_delay_until = None;
                    self.try_complete_join(now);
                    changed = true;
                }
            }
            GroupState::CompletingRebalance
                if self.sync_deadline.is_some_and(|d| d <= now.instant) =>
            {
                // The leader never sent the assignment: members who did not sync are dropped.
                let silent: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                for member_id in silent {
                    self.remove_member(&member_id);
                }
                self.after_departure(limits, now);
                changed = true;
            }
            _ => {}
        }
        changed
    }

    /// Whether the group accepts an offset commit from this member and generation.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Dead => Err(ResponseError::CoordinatorNotAvailable),
            // A group without members takes commits from standalone consumers (assign()).
            GroupState::Empty if generation < 0 && member_id.is_empty() => Ok(()),
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance => {
                match self.check_member(member_id, instance, generation) {
                    Err(error) => Err(error),
                    Ok(()) => Err(ResponseError::RebalanceInProgress),
                }
            }
            GroupState::PreparingRebalance | GroupState::Stable => {
                self.check_member(member_id, instance, generation)
            }
        }
    }

    /// Marks the group deleted: waiters are told, nothing joins it again.
    pub fn mark_dead(&mut self) {
        let generation = self.generation;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.sync_deadline = None;
        self.state = GroupState::Dead;
        self.assert_invariants(generation);
    }
}
