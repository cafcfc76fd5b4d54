//! Model-based test of one consumer group's state machine (`groups::group::Group`), the way
//! `crates/log/tests/model.rs` tests the log: random sequences of what clients do (join,
//! sync, heartbeat, leave, static members restarting) and of time passing, run against the
//! real state machine on a hand-driven clock. After every step the group's invariants must
//! hold; across the run, what clients were told must agree with itself:
//! - every member told it joined generation g hears the same leader and protocol, and the
//!   leader's member list for g holds every such member (for a static member: its instance,
//!   since a restarted static member takes its old place under a new member id, KIP-345);
//! - a member's assignment for g is exactly what the leader of g assigned to it (to its
//!   instance, for a static member);
//! - generations only grow, and a member never hears of two different memberships of the
//!   same generation;
//! - no request is left waiting forever: once time passes every deadline, every join and
//!   sync that was parked has its answer.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use sluice_broker::groups::group::{
    Group, GroupLimits, GroupState, JoinOutcome, JoinRequest, Now, Reply, SyncOutcome,
};
use tokio::sync::oneshot;

const CLIENTS: usize = 4;
const SESSION: Duration = Duration::from_millis(10_000);
const REBALANCE: Duration = Duration::from_millis(20_000);

fn limits(initial_delay_ms: u64) -> GroupLimits {
    GroupLimits {
        min_session_timeout: Duration::from_millis(1_000),
        max_session_timeout: Duration::from_millis(60_000),
        initial_rebalance_delay: Duration::from_millis(initial_delay_ms),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    /// A static client (odd index) restarts: it forgets its member id and joins again.
    Restart(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    prop_oneof![
        4 => client.clone().prop_map(Op::Join),
        4 => client.clone().prop_map(Op::Sync),
        2 => client.clone().prop_map(Op::Heartbeat),
        1 => client.clone().prop_map(Op::Leave),
        1 => client.prop_map(|c| Op::Restart(c | 1)),
        3 => prop_oneof![Just(100u64), Just(3_000), Just(12_000), Just(25_000)].prop_map(Op::Advance),
    ]
}

/// What one client knows and is waiting for.
#[derive(Debug, Default)]
struct Client {
    member_id: String,
    /// The generation it joined last, and whether it leads it.
    joined: Option<(i32, bool)>,
    join_wait: Option<oneshot::Receiver<JoinOutcome>>,
    sync_wait: Option<(i32, oneshot::Receiver<SyncOutcome>)>,
}

/// What the group said about one generation.
#[derive(Debug, Default)]
struct Generation {
    leader: Option<String>,
    protocol: Option<String>,
    /// The leader's member list: (member id, instance id).
    members: Option<Vec<(String, Option<String>)>>,
    /// Members told they joined it, by identity (instance id if static, else member id).
    joined: Vec<String>,
    /// The leader's assignment.
    assignments: Option<BTreeMap<String, Bytes>>,
}

struct Harness {
    group: Group,
    limits: GroupLimits,
    origin: Instant,
    elapsed_ms: u64,
    clients: Vec<Client>,
    generations: HashMap<i32, Generation>,
    highest_generation: i32,
}

impl Harness {
    fn new(initial_delay_ms: u64) -> Self {
        Harness {
            group: Group::new("g", 0),
            limits: limits(initial_delay_ms),
            origin: Instant::now(),
            elapsed_ms: 0,
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            generations: HashMap::new(),
            highest_generation: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: self.origin + Duration::from_millis(self.elapsed_ms),
            ms: 1_700_000_000_000 + self.elapsed_ms as i64,
        }
    }

    /// Static members are the odd clients; each has its own instance id.
    fn instance(client: usize) -> Option<String> {
        (client % 2 == 1).then(|| format!("instance-{client}"))
    }

    fn join_request(&self, client: usize) -> JoinRequest {
        JoinRequest {
            member_id: self.clients[client].member_id.clone(),
            group_instance_id: Self::instance(client),
            client_id: format!("client-{client}"),
            client_host: "/127.0.0.1".into(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from(format!("metadata-{client}")))],
            require_known_member_id: true,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now();
        match *op {
            Op::Join(c) => {
                if self.clients[c].join_wait.is_some() {
                    return Ok(()); // a client has one join in flight
                }
                let reply = self.group.join(self.join_request(c), &self.limits, now);
                match reply {
                    Reply::Now(outcome) => self.joined(c, outcome)?,
                    Reply::Later(rx) => self.clients[c].join_wait = Some(rx),
                }
            }
            Op::Restart(c) => {
                let client = &mut self.clients[c];
                *client = Client::default();
                let reply = self.group.join(self.join_request(c), &self.limits, now);
                match reply {
                    Reply::Now(outcome) => self.joined(c, outcome)?,
                    Reply::Later(rx) => self.clients[c].join_wait = Some(rx),
                }
            }
            Op::Sync(c) => {
                let Some((generation, leader)) = self.clients[c].joined else {
                    return Ok(());
                };
                if self.clients[c].sync_wait.is_some() {
                    return Ok(());
                }
                let assignments: Vec<(String, Bytes)> = if leader {
                    let members = self.generations[&generation]
                        .members
                        .clone()
                        .unwrap_or_default();
                    let given: BTreeMap<String, Bytes> = members
                        .iter()
                        .map(|(m, _)| (m.clone(), Bytes::from(format!("{generation}:{m}"))))
                        .collect();
                    self.generations.get_mut(&generation).unwrap().assignments =
                        Some(given.clone());
                    given.into_iter().collect()
                } else {
                    Vec::new()
                };
                let member_id = self.clients[c].member_id.clone();
                let instance = Self::instance(c);
                let reply = self.group.sync(
                    &member_id,
                    instance.as_deref(),
                    generation,
                    Some("consumer"),
                    Some("range"),
                    assignments,
                    now,
                );
                match reply {
                    Reply::Now(outcome) => self.synced(c, generation, &outcome)?,
                    Reply::Later(rx) => self.clients[c].sync_wait = Some((generation, rx)),
                }
            }
            Op::Heartbeat(c) => {
                if let Some((generation, _)) = self.clients[c].joined {
                    let member_id = self.clients[c].member_id.clone();
                    let instance = Self::instance(c);
                    let _ = self
                        .group
                        .heartbeat(&member_id, instance.as_deref(), generation, now);
                }
            }
            Op::Leave(c) => {
                let member_id = self.clients[c].member_id.clone();
                if !member_id.is_empty() {
                    let _ = self
                        .group
                        .leave(&[(member_id, Self::instance(c))], &self.limits, now);
                    self.clients[c].joined = None;
                    self.clients[c].member_id.clear();
                }
            }
            Op::Advance(ms) => {
                self.elapsed_ms += ms;
                let now = self.now();
                self.group.tick(&self.limits, now);
            }
        }
        self.collect()?;
        if let Err(violation) = self.group.check_invariants() {
            return Err(TestCaseError::fail(format!("after {op:?}: {violation}")));
        }
        prop_assert!(self.group.generation >= self.highest_generation);
        self.highest_generation = self.group.generation;
        Ok(())
    }

    /// Takes every answer that arrived for a parked join or sync.
    fn collect(&mut self) -> Result<(), TestCaseError> {
        for c in 0..CLIENTS {
            if let Some(mut rx) = self.clients[c].join_wait.take() {
                match rx.try_recv() {
                    Ok(outcome) => self.joined(c, outcome)?,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.clients[c].join_wait = Some(rx);
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {
                        self.clients[c].joined = None;
                    }
                }
            }
            if let Some((generation, mut rx)) = self.clients[c].sync_wait.take() {
                match rx.try_recv() {
                    Ok(outcome) => self.synced(c, generation, &outcome)?,
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.clients[c].sync_wait = Some((generation, rx));
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {}
                }
            }
        }
        Ok(())
    }

    fn joined(&mut self, c: usize, outcome: JoinOutcome) -> Result<(), TestCaseError> {
        let client = &mut self.clients[c];
        if outcome.error == Some(kafka_protocol::ResponseError::MemberIdRequired) {
            // KIP-394: join again with the id handed out.
            client.member_id = outcome.member_id;
            return Ok(());
        }
        if outcome.error.is_some() {
            client.joined = None;
            if matches!(
                outcome.error,
                Some(kafka_protocol::ResponseError::UnknownMemberId)
                    | Some(kafka_protocol::ResponseError::FencedInstanceId)
            ) {
                client.member_id.clear();
            }
            return Ok(());
        }
        client.member_id = outcome.member_id.clone();
        let identity = Self::instance(c).unwrap_or_else(|| outcome.member_id.clone());
        let leads = outcome.leader == outcome.member_id;
        client.joined = Some((outcome.generation, leads));
        let generation = self.generations.entry(outcome.generation).or_default();
        match &generation.leader {
            None => generation.leader = Some(outcome.leader.clone()),
            Some(leader) => prop_assert_eq!(leader, &outcome.leader, "one leader per generation"),
        }
        match &generation.protocol {
            None => generation.protocol = outcome.protocol_name.clone(),
            Some(p) => prop_assert_eq!(Some(p), outcome.protocol_name.as_ref()),
        }
        if leads {
            let members: Vec<(String, Option<String>)> = outcome
                .members
                .iter()
                .map(|(m, instance, _)| (m.clone(), instance.clone()))
                .collect();
            for (member, _, metadata) in &outcome.members {
                prop_assert!(!metadata.is_empty(), "the leader gets {member}'s metadata");
            }
            if let Some(earlier) = &generation.members {
                prop_assert_eq!(earlier, &members, "the leader's member list is stable");
            }
            generation.members = Some(members);
        }
        generation.joined.push(identity);
        Ok(())
    }

    fn synced(
        &mut self,
        c: usize,
        generation: i32,
        outcome: &SyncOutcome,
    ) -> Result<(), TestCaseError> {
        if outcome.error.is_some() {
            return Ok(());
        }
        let member_id = &self.clients[c].member_id;
        let record = &self.generations[&generation];
        let assigned = record
            .assignments
            .as_ref()
            .ok_or_else(|| TestCaseError::fail("a sync succeeded before the leader assigned"))?;
        // A static member is assigned under the member id its instance had in the leader's
        // list, which a restart since may have replaced.
        let listed_as = match Self::instance(c) {
            Some(instance) => record
                .members
                .iter()
                .flatten()
                .find(|(_, i)| i.as_deref() == Some(instance.as_str()))
                .map(|(m, _)| m.clone()),
            None => Some(member_id.clone()),
        };
        let expected = listed_as
            .and_then(|m| assigned.get(&m).cloned())
            .unwrap_or_default();
        prop_assert_eq!(
            &outcome.assignment,
            &expected,
            "member {} of generation {} got another member's assignment",
            member_id,
            generation
        );
        Ok(())
    }

    /// Every generation's joined members are in its leader's list.
    fn check_memberships(&self) -> Result<(), TestCaseError> {
        for (generation, record) in &self.generations {
            if let Some(members) = &record.members {
                for joined in &record.joined {
                    let listed = members
                        .iter()
                        .any(|(m, instance)| instance.as_ref().unwrap_or(m) == joined);
                    prop_assert!(
                        listed,
                        "generation {generation}: {joined} joined but the leader was not told"
                    );
                }
            }
        }
        Ok(())
    }

    /// Lets time pass every deadline: nothing may still be parked afterwards.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..6 {
            self.apply(&Op::Advance(
                REBALANCE.as_millis() as u64 + SESSION.as_millis() as u64,
            ))?;
        }
        for (c, client) in self.clients.iter().enumerate() {
            prop_assert!(
                client.join_wait.is_none(),
                "client {c}'s join never answered"
            );
            prop_assert!(
                client.sync_wait.is_none(),
                "client {c}'s sync never answered"
            );
        }
        prop_assert!(
            self.group.members.is_empty() && self.group.state == GroupState::Empty,
            "silent members expire: {:?} with {} members",
            self.group.state,
            self.group.members.len()
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_group_state_machine_keeps_its_promises(
        initial_delay in prop_oneof![Just(0u64), Just(3_000)],
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut harness = Harness::new(initial_delay);
        for op in &ops {
            harness.apply(op)?;
        }
        harness.check_memberships()?;
        harness.drain()?;
        harness.check_memberships()?;
    }
}

/// The harness itself: a plain rebalance of three members reaches Stable with everyone
/// assigned, so the properties above are checked on runs that do get somewhere.
#[test]
fn three_members_rebalance_to_stable() {
    let mut h = Harness::new(0);
    for c in 0..3 {
        h.apply(&Op::Join(c)).unwrap(); // MEMBER_ID_REQUIRED or a static join
    }
    for c in 0..3 {
        h.apply(&Op::Join(c)).unwrap();
    }
    h.apply(&Op::Advance(100)).unwrap();
    let joined: Vec<_> = h.clients[..3].iter().map(|c| c.joined).collect();
    assert!(joined.iter().all(Option::is_some), "{joined:?}");
    for c in 0..3 {
        h.apply(&Op::Sync(c)).unwrap();
    }
    assert_eq!(h.group.state, GroupState::Stable);
    assert!(h.clients.iter().all(|c| c.sync_wait.is_none()));
    h.check_memberships().unwrap();
}

/// Found in review: a LeaveGroup naming nobody, or a pending member id leaving, must not
/// start a rebalance of a settled group (Kafka answers UNKNOWN_MEMBER_ID and changes nothing).
#[test]
fn leaving_with_an_unknown_id_changes_nothing() {
    let mut h = Harness::new(0);
    for c in [0, 2, 0, 2] {
        h.apply(&Op::Join(c)).unwrap(); // MEMBER_ID_REQUIRED round, then the joins
    }
    h.apply(&Op::Advance(100)).unwrap();
    for c in [0, 2] {
        h.apply(&Op::Sync(c)).unwrap();
    }
    assert_eq!(h.group.state, GroupState::Stable);
    let generation = h.group.generation;
    let limits = h.limits.clone();
    let results = h.group.leave(&[("nobody".into(), None)], &limits, h.now());
    assert_eq!(
        results,
        vec![Some(kafka_protocol::ResponseError::UnknownMemberId)]
    );
    assert_eq!(
        (h.group.state, h.group.generation),
        (GroupState::Stable, generation)
    );
    // A MEMBER_ID_REQUIRED id handed out and then given up does not disturb it either.
    let mut pending_join = h.join_request(2);
    pending_join.member_id.clear();
    let reply = h.group.join(pending_join, &limits, h.now());
    let Reply::Now(outcome) = reply else {
        panic!("MEMBER_ID_REQUIRED is immediate")
    };
    assert_eq!(
        outcome.error,
        Some(kafka_protocol::ResponseError::MemberIdRequired)
    );
    let before = (h.group.state, h.group.generation);
    let results = h
        .group
        .leave(&[(outcome.member_id, None)], &limits, h.now());
    assert_eq!(results, vec![None]);
    assert_eq!((h.group.state, h.group.generation), before);
    h.group.check_invariants().unwrap();
}

/// Found in review: a MEMBER_ID_REQUIRED id rejoining with another member's instance id is
/// fenced, not given the instance (which would leave the old owner inconsistent).
#[test]
fn a_pending_id_cannot_take_another_members_instance() {
    let mut h = Harness::new(0);
    h.apply(&Op::Join(1)).unwrap(); // static member, instance-1
    h.apply(&Op::Advance(100)).unwrap();
    let limits = h.limits.clone();
    let mut stranger = h.join_request(0);
    stranger.member_id.clear();
    let Reply::Now(first) = h.group.join(stranger.clone(), &limits, h.now()) else {
        panic!("MEMBER_ID_REQUIRED is immediate")
    };
    stranger.member_id = first.member_id;
    stranger.group_instance_id = Harness::instance(1);
    match h.group.join(stranger, &limits, h.now()) {
        Reply::Now(outcome) => assert_eq!(
            outcome.error,
            Some(kafka_protocol::ResponseError::FencedInstanceId)
        ),
        Reply::Later(_) => panic!("the stranger was let in"),
    }
    h.group.check_invariants().unwrap();
}
