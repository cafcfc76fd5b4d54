//! JoinGroup: new members (dynamic, with MEMBER_ID_REQUIRED, and static ones taking over
//! their instance's place), rejoining members, and the start of a rebalance.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::{
    Group, GroupLimits, GroupState, JoinOutcome, JoinRequest, Member, Now, Reply, SyncOutcome,
    new_member_id,
};

impl Group {
    /// Handles a JoinGroup.
    pub fn join(&mut self, req: JoinRequest, limits: &GroupLimits, now: Now) -> Reply<JoinOutcome> {
        let generation_before = self.generation;
        let outcome = self.join_unchecked(req, limits, now);
        self.assert_invariants(generation_before);
        outcome
    }

    fn join_unchecked(
        &mut self,
        req: JoinRequest,
        limits: &GroupLimits,
        now: Now,
    ) -> Reply<JoinOutcome> {
        let fail = |error| Reply::Now(JoinOutcome::error(error, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if req.session_timeout < limits.min_session_timeout
            || req.session_timeout > limits.max_session_timeout
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            let same_type = self
                .protocol_type
                .as_deref()
                .is_none_or(|t| t == req.protocol_type);
            let candidates = self.candidate_protocols();
            let overlaps = req.protocols.iter().any(|(n, _)| candidates.contains(n));
            if !same_type || !overlaps {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }

        if req.member_id.is_empty() {
            return match req.group_instance_id.clone() {
                Some(instance) => self.join_static_unknown(req, &instance, limits, now),
                None if req.require_known_member_id => {
                    let member_id = new_member_id(&req.client_id);
                    self.pending
                        .insert(member_id.clone(), now.instant + req.session_timeout);
                    Reply::Now(JoinOutcome::error(
                        ResponseError::MemberIdRequired,
                        &member_id,
                    ))
                }
                None => {
                    let member_id = new_member_id(&req.client_id);
                    self.add_member_and_rebalance(member_id, req, limits, now)
                }
            };
        }

        // An instance id another member owns is fenced, whatever id the request carries
        // (also one handed out with MEMBER_ID_REQUIRED).
        if let Some(instance) = &req.group_instance_id
            && self
                .static_members
                .get(instance)
                .is_some_and(|owner| *owner != req.member_id)
        {
            return fail(ResponseError::FencedInstanceId);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let member_id = req.member_id.clone();
            return self.add_member_and_rebalance(member_id, req, limits, now);
        }
        let Some(member) = self.members.get(&req.member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let unchanged = member.same_protocols(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::CompletingRebalance if unchanged => {
                // The member lost our answer: repeat it.
                Reply::Now(self.current_join_outcome(&req.member_id, is_leader))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Reply::Now(self.current_join_outcome(&req.member_id, false))
            }
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            _ => {
                let member_id = req.member_id.clone();
                self.update_member_and_rebalance(&member_id, req, limits, now)
            }
        }
    }

    /// A static member (group.instance.id) joining without a member id: a new member, or a
    /// restarted one taking over its instance's place.
    fn join_static_unknown(
        &mut self,
        req: JoinRequest,
        instance: &str,
        limits: &GroupLimits,
        now: Now,
    ) -> Reply<JoinOutcome> {
        let member_id = new_member_id(instance);
        let Some(old_id) = self.static_members.get(instance).cloned() else {
            self.static_members
                .insert(instance.to_string(), member_id.clone());
            return self.add_member_and_rebalance(member_id, req, limits, now);
        };
        // Fence the previous incarnation and move its place to the new member id.
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .insert(instance.to_string(), member_id.clone());
            return self.add_member_and_rebalance(member_id, req, limits, now);
        };
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinOutcome::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncOutcome::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.same_protocols(&req.protocols);
        member.member_id = member_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.deadline = now.instant + req.session_timeout;
        self.static_members
            .insert(instance.to_string(), member_id.clone());
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(member_id.clone());
        }
        self.members.insert(member_id.clone(), member);
        if self.state == GroupState::Stable && unchanged && !was_leader {
            // KIP-345: the restarted member gets its old assignment back, no rebalance.
            return Reply::Now(self.current_join_outcome(&member_id, false));
        }
        self.update_member_and_rebalance(&member_id, req, limits, now)
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        req: JoinRequest,
        limits: &GroupLimits,
        now: Now,
    ) -> Reply<JoinOutcome> {
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = member_id.clone();
        self.members.insert(
            key.clone(),
            Member {
                member_id,
                group_instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                rebalance_timeout: req.rebalance_timeout,
                session_timeout: req.session_timeout,
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                join_waiter: None,
                sync_waiter: None,
                deadline: now.instant + req.session_timeout,
                joined_seq: seq,
            },
        );
        self.update_member_and_rebalance(&key, req, limits, now)
    }

    fn update_member_and_rebalance(
        &mut self,
        member_id: &str,
        req: JoinRequest,
        limits: &GroupLimits,
        now: Now,
    ) -> Reply<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        let member = self.members.get_mut(member_id).expect("member present");
        member.protocols = req.protocols;
        member.protocol_type = req.protocol_type;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinOutcome::error(
                ResponseError::UnknownMemberId,
                member_id,
            ));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(limits, now);
        }
        self.try_complete_join(now);
        Reply::Later(rx)
    }
}
