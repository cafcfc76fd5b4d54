//! A group's invariants as code. [`Group::check_invariants`] checks all of them; every public
//! operation that changes a group ends with [`Group::assert_invariants`] in debug builds (and
//! so in every test), and the model test calls the check after each step.

use super::{Group, GroupState};

impl Group {
    /// Every invariant of the state machine:
    /// - `Empty` and `Dead` groups have no members, no leader and no waiting member;
    /// - a member waits in a join only while the group prepares a rebalance, and in a sync
    ///   only while it completes one;
    /// - from `CompletingRebalance` on, the leader is a member and a protocol was chosen;
    /// - each deadline is set exactly in the state that uses it (rebalance: preparing; sync:
    ///   completing);
    /// - `static_members` maps each group.instance.id to a member carrying that id, and every
    ///   static member is in it; ids handed out with MEMBER_ID_REQUIRED are not members yet;
    /// - an empty group knows when it became empty (offset retention counts from then).
    pub fn check_invariants(&self) -> Result<(), String> {
        let fail = |what: String| Err(format!("group {}: {what} ({:?})", self.id, self.state));
        let waiting_join = self.members.values().any(|m| m.join_waiter.is_some());
        let waiting_sync = self.members.values().any(|m| m.sync_waiter.is_some());
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                if !self.members.is_empty() || self.leader.is_some() {
                    return fail("members or a leader in a group without members".into());
                }
            }
            GroupState::PreparingRebalance => {
                if self.rebalance_deadline.is_none() {
                    return fail("a rebalance without a deadline".into());
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let Some(leader) = &self.leader else {
                    return fail("no leader after a join completed".into());
                };
                if !self.members.contains_key(leader) {
                    return fail(format!("leader {leader} is not a member"));
                }
                if self.protocol.is_none() || self.members.is_empty() {
                    return fail("no protocol or no member after a join completed".into());
                }
            }
        }
        if waiting_join && self.state != GroupState::PreparingRebalance {
            return fail("a member waits in a join outside a rebalance".into());
        }
        if waiting_sync && self.state != GroupState::CompletingRebalance {
            return fail("a member waits for its assignment outside CompletingRebalance".into());
        }
        if self.rebalance_deadline.is_some() != (self.state == GroupState::PreparingRebalance) {
            return fail("rebalance deadline set outside PreparingRebalance, or missing".into());
        }
        if self.sync_deadline.is_some() != (self.state == GroupState::CompletingRebalance) {
            return fail("sync deadline set outside CompletingRebalance, or missing".into());
        }
        for (instance, owner) in &self.static_members {
            match self.members.get(owner) {
                Some(member) if member.group_instance_id.as_deref() == Some(instance.as_str()) => {}
                _ => {
                    return fail(format!(
                        "static member {instance} maps to {owner}, not a member with that instance id"
                    ));
                }
            }
        }
        for member in self.members.values() {
            if let Some(instance) = &member.group_instance_id
                && self.static_members.get(instance) != Some(&member.member_id)
            {
                return fail(format!(
                    "member {} with instance {instance} is not the instance's owner",
                    member.member_id
                ));
            }
        }
        if let Some(id) = self
            .pending
            .keys()
            .find(|id| self.members.contains_key(*id))
        {
            return fail(format!("pending member id {id} is already a member"));
        }
        if self.state == GroupState::Empty && self.empty_since_ms.is_none() {
            return fail("an empty group without the time it became empty".into());
        }
        Ok(())
    }

    /// Panics when an invariant does not hold, or when the generation went back from
    /// `generation_before`. Debug builds only: the check walks every member.
    pub(crate) fn assert_invariants(&self, generation_before: i32) {
        if cfg!(debug_assertions) {
            if let Err(what) = self.check_invariants() {
                panic!("{what}");
            }
            assert!(
                self.generation >= generation_before,
                "group {}: generation went back from {generation_before} to {}",
                self.id,
                self.generation
            );
        }
    }
}
