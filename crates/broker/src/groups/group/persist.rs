//! A group as `__consumer_offsets` records it (written when a rebalance settles or the group
//! empties, read back at startup), and what its members' subscriptions say.

use std::collections::HashSet;
use std::time::Duration;

use super::{Group, GroupState, Member, Now};
use crate::groups::records::{GroupValue, MemberValue};

impl Group {
    /// The record that describes the group in `__consumer_offsets`.
    pub fn to_record(&self, now_ms: i64) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores a group from its record (at startup). Members get a full session to show up.
    pub fn restore(&mut self, value: GroupValue, now: Now) {
        self.generation = value.generation;
        self.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        self.protocol = value.protocol.clone();
        self.leader = value.leader;
        self.members.clear();
        self.static_members.clear();
        let protocol = value.protocol.unwrap_or_default();
        for (seq, m) in value.members.into_iter().enumerate() {
            let session_timeout = Duration::from_millis(m.session_timeout_ms.max(0) as u64);
            if let Some(instance) = &m.group_instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    session_timeout,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    deadline: now.instant + session_timeout,
                    joined_seq: seq as u64,
                },
            );
        }
        self.next_seq = self.members.len() as u64;
        self.pending.clear();
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.sync_deadline = None;
        if self.members.is_empty() {
            self.become_empty(now);
        } else {
            self.state = GroupState::Stable;
            self.empty_since_ms = None;
        }
        if let Err(what) = self.check_invariants() {
            // A record this broker did not write, or damaged: the members rejoin instead.
            tracing::warn!(group = %self.id, %what, "group record inconsistent; restoring the group empty");
            self.members.clear();
            self.static_members.clear();
            self.leader = None;
            self.become_empty(now);
        }
        self.assert_invariants(self.generation);
    }

    /// Member subscriptions of a consumer-protocol group: the topics any member consumes.
    pub fn subscribed_topics(&self) -> HashSet<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let mut topics = HashSet::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        for member in self.members.values() {
            let mut metadata = member.metadata_for(&protocol);
            if metadata.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            bytes::Buf::advance(&mut metadata, 2);
            if let Ok(subscription) =
                ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3))
            {
                topics.extend(subscription.topics.iter().map(|t| t.to_string()));
            }
        }
        topics
    }
}
