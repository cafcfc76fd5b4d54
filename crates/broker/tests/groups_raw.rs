//! The group coordinator over raw protocol: every group API at every advertised version,
//! and the state machine's rules (join completion, member ids, session expiry, static
//! membership, durable offsets, group deletion).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{RawClient, start_broker, start_broker_with_clock};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_log::{Clock, ManualClock, SystemClock};

const FAST_GROUPS: &[(&str, &str)] = &[
    ("group.initial.rebalance.delay.ms", "0"),
    ("group.min.session.timeout.ms", "500"),
    ("offsets.topic.num.partitions", "5"),
];

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, min, max) = sluice_broker::advertised_apis()
        .find(|(k, _, _)| *k == key)
        .expect("advertised");
    min.max(key.valid_versions().min)..=max
}

fn create_topic(c: &mut RawClient, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_num_partitions(partitions)
            .with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, 0);
}

fn find_coordinator(c: &mut RawClient, group: &str) {
    let response: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]),
    );
    assert_eq!(response.coordinators[0].error_code, 0);
}

fn join_request(
    member_id: &str,
    instance: Option<&str>,
    session_ms: i32,
    rebalance_ms: i32,
    metadata: &[u8],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(rebalance_ms)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::copy_from_slice(metadata)),
        ])
}

/// A member that completes the KIP-394 round trip and joins; returns the join response.
fn join(c: &mut RawClient, instance: Option<&str>, session_ms: i32) -> JoinGroupResponse {
    let first: JoinGroupResponse = c.call(
        ApiKey::JoinGroup,
        9,
        &join_request("", instance, session_ms, 60_000, b"m"),
    );
    if first.error_code == 79 {
        c.call(
            ApiKey::JoinGroup,
            9,
            &join_request(&first.member_id, instance, session_ms, 60_000, b"m"),
        )
    } else {
        first
    }
}

fn sync(
    c: &mut RawClient,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member_id))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        );
    c.call(ApiKey::SyncGroup, 5, &request)
}

fn heartbeat(c: &mut RawClient, generation: i32, member_id: &str) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member_id));
    let response: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &request);
    response.error_code
}

fn commit(
    c: &mut RawClient,
    generation: i32,
    member_id: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member_id))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(s("meta"))),
                ]),
        ]);
    let response: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
    response.topics[0].partitions[0].error_code
}

fn fetch_offset(c: &mut RawClient, topic: &str, partition: i32) -> i64 {
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(vec![partition]),
            ])),
    ]);
    let response: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &request);
    response.groups[0].topics[0].partitions[0].committed_offset
}

async fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_api_at_every_advertised_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST_GROUPS).await;
    let addr = broker.local_addr;
    on_thread(move || {
        let mut c = RawClient::connect(addr);
        create_topic(&mut c, "t", 2);
        // A share group's coordinator (key type 2, v6) is not served.
        let share: FindCoordinatorResponse = c.call(
            ApiKey::FindCoordinator,
            6,
            &FindCoordinatorRequest::default()
                .with_key_type(2)
                .with_coordinator_keys(vec![s("g")]),
        );
        assert_eq!(
            share.coordinators[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        for v in versions(ApiKey::FindCoordinator) {
            let request = if v >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])
            } else {
                FindCoordinatorRequest::default().with_key(s("g"))
            };
            let response: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, v, &request);
            let (error, port) = if v >= 4 {
                (
                    response.coordinators[0].error_code,
                    response.coordinators[0].port,
                )
            } else {
                (response.error_code, response.port)
            };
            assert_eq!((error, port), (0, i32::from(addr.port())), "v{v}");
        }

        for v in versions(ApiKey::JoinGroup) {
            let session = 10_000;
            let mut request = join_request("", None, session, 10_000, b"sub");
            let mut response: JoinGroupResponse = c.call(ApiKey::JoinGroup, v, &request);
            if v >= 4 {
                assert_eq!(response.error_code, 79, "v{v}: MEMBER_ID_REQUIRED");
                request = request.with_member_id(response.member_id.clone());
                response = c.call(ApiKey::JoinGroup, v, &request);
            }
            assert_eq!(response.error_code, 0, "v{v}");
            assert_eq!(
                response.leader, response.member_id,
                "v{v}: the only member leads"
            );
            assert_eq!(response.members.len(), 1);
            assert_eq!(
                &response.members[0].metadata[..],
                b"sub",
                "v{v}: metadata relayed byte-exact"
            );
            let generation = response.generation_id;
            let member = response.member_id.to_string();

            let sv = *versions(ApiKey::SyncGroup).end().min(&v.min(5));
            let request = SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(generation)
                .with_member_id(s(&member))
                .with_assignments(vec![
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(&member))
                        .with_assignment(Bytes::from_static(b"assign")),
                ]);
            let synced: SyncGroupResponse = c.call(ApiKey::SyncGroup, sv, &request);
            assert_eq!(
                (synced.error_code, &synced.assignment[..]),
                (0, &b"assign"[..]),
                "sync v{sv}"
            );

            for hv in versions(ApiKey::Heartbeat) {
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_generation_id(generation)
                    .with_member_id(s(&member));
                let hb: HeartbeatResponse = c.call(ApiKey::Heartbeat, hv, &request);
                assert_eq!(hb.error_code, 0, "heartbeat v{hv}");
            }
            for cv in versions(ApiKey::OffsetCommit) {
                let request = OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(s(&member))
                    .with_topics(vec![
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(1)
                                    .with_committed_offset(i64::from(cv) * 10),
                            ]),
                    ]);
                let committed: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, cv, &request);
                assert_eq!(
                    committed.topics[0].partitions[0].error_code, 0,
                    "commit v{cv}"
                );
            }
            let last_commit = i64::from(*versions(ApiKey::OffsetCommit).end()) * 10;
            for fv in versions(ApiKey::OffsetFetch) {
                let offset = if fv >= 8 {
                    let request = OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(s("g")))
                            .with_topics(None),
                    ]);
                    let response: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, fv, &request);
                    response.groups[0].topics[0].partitions[0].committed_offset
                } else {
                    let request = OffsetFetchRequest::default()
                        .with_group_id(GroupId(s("g")))
                        .with_topics(Some(vec![
                            OffsetFetchRequestTopic::default()
                                .with_name(TopicName(s("t")))
                                .with_partition_indexes(vec![0, 1]),
                        ]));
                    let response: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, fv, &request);
                    let partitions = &response.topics[0].partitions;
                    assert_eq!(
                        partitions[0].committed_offset, -1,
                        "fetch v{fv}: nothing committed for partition 0"
                    );
                    partitions[1].committed_offset
                };
                assert_eq!(offset, last_commit, "fetch v{fv}");
            }
            for lv in versions(ApiKey::ListGroups) {
                let request = if lv >= 4 {
                    ListGroupsRequest::default().with_states_filter(vec![s("Stable")])
                } else {
                    ListGroupsRequest::default()
                };
                let listed: ListGroupsResponse = c.call(ApiKey::ListGroups, lv, &request);
                assert_eq!(listed.groups.len(), 1, "list v{lv}");
                assert_eq!(listed.groups[0].group_id.0.as_str(), "g");
                if lv >= 5 {
                    assert_eq!(listed.groups[0].group_type.as_str(), "classic");
                    for (types, expected) in [("Classic", 1), ("consumer", 0)] {
                        let filtered: ListGroupsResponse = c.call(
                            ApiKey::ListGroups,
                            lv,
                            &ListGroupsRequest::default().with_types_filter(vec![s(types)]),
                        );
                        assert_eq!(filtered.groups.len(), expected, "types filter {types}");
                    }
                }
            }
            for dv in versions(ApiKey::DescribeGroups) {
                let described: DescribeGroupsResponse = c.call(
                    ApiKey::DescribeGroups,
                    dv,
                    &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("nobody"))]),
                );
                let g = &described.groups[0];
                assert_eq!(g.group_state.as_str(), "Dead", "describe v{dv}");
                // From v6 an unknown group is GROUP_ID_NOT_FOUND with a message (KIP-1043).
                let expected = if dv >= 6 {
                    ResponseError::GroupIdNotFound.code()
                } else {
                    0
                };
                assert_eq!(g.error_code, expected, "describe v{dv}");
                assert_eq!(g.error_message.is_some(), dv >= 6);
            }
            for dv in versions(ApiKey::DescribeGroups) {
                let described: DescribeGroupsResponse = c.call(
                    ApiKey::DescribeGroups,
                    dv,
                    &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
                );
                let g = &described.groups[0];
                assert_eq!(
                    (
                        g.group_state.as_str(),
                        g.protocol_data.as_str(),
                        g.members.len()
                    ),
                    ("Stable", "range", 1),
                    "describe v{dv}"
                );
                assert_eq!(&g.members[0].member_assignment[..], b"assign");
            }
            let lv = v.min(*versions(ApiKey::LeaveGroup).end());
            let request = if lv >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_members(vec![MemberIdentity::default().with_member_id(s(&member))])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_member_id(s(&member))
            };
            let left: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, lv, &request);
            let error = if lv >= 3 {
                left.members[0].error_code
            } else {
                left.error_code
            };
            assert_eq!(error, 0, "leave v{lv}");
        }

        // The group is now empty: offsets stay, OffsetDelete and DeleteGroups work.
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]);
        let deleted: OffsetDeleteResponse = c.call(ApiKey::OffsetDelete, 0, &request);
        assert_eq!(
            (
                deleted.error_code,
                deleted.topics[0].partitions[0].error_code
            ),
            (0, 0)
        );
        assert_eq!(
            fetch_offset(&mut c, "t", 1),
            i64::from(*versions(ApiKey::OffsetCommit).end()) * 10,
            "offsets of an empty group are kept"
        );
        for v in versions(ApiKey::DeleteGroups) {
            let response: DeleteGroupsResponse = c.call(
                ApiKey::DeleteGroups,
                v,
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
            );
            let expected = if v == 0 { 0 } else { 69 }; // then GROUP_ID_NOT_FOUND
            assert_eq!(response.results[0].error_code, expected, "delete v{v}");
        }
        assert_eq!(fetch_offset(&mut c, "t", 1), -1, "deleted with the group");
    })
    .await;
    broker.shutdown().await.unwrap();
}

/// Reads JoinGroup responses for a request sent earlier (pipelined on its own connection).
fn send_join(
    addr: SocketAddr,
    member_id: String,
    instance: Option<String>,
) -> std::thread::JoinHandle<(JoinGroupResponse, RawClient)> {
    std::thread::spawn(move || {
        let mut c = RawClient::connect(addr);
        let response: JoinGroupResponse = c.call(
            ApiKey::JoinGroup,
            9,
            &join_request(&member_id, instance.as_deref(), 10_000, 120_000, b"m"),
        );
        (response, c)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_completes_when_every_member_has_rejoined() {
    // On a clock that never moves, no rebalance timeout can fire: a join that completes did
    // so because every member rejoined, however slow the machine.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let broker = start_broker_with_clock(dir.path(), FAST_GROUPS, clock).await;
    let addr = broker.local_addr;
    on_thread(move || {
        let mut a = RawClient::connect(addr);
        create_topic(&mut a, "t", 4);
        find_coordinator(&mut a, "g");
        let ja = join(&mut a, None, 10_000);
        let gen1 = ja.generation_id;
        let member_a = ja.member_id.to_string();
        sync(&mut a, gen1, &member_a, &[(&member_a, b"all")]);
        assert_eq!(heartbeat(&mut a, gen1, &member_a), 0);

        // B arrives (rebalance timeout 120 s): A learns from its heartbeat and rejoins; the
        // join then completes at once, long before the timeout.
        let mut b = RawClient::connect(addr);
        let first: JoinGroupResponse = b.call(
            ApiKey::JoinGroup,
            9,
            &join_request("", None, 10_000, 120_000, b"m"),
        );
        let b_join = send_join(addr, first.member_id.to_string(), None);
        let started = Instant::now();
        while heartbeat(&mut a, gen1, &member_a) != 27 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "A never told to rebalance"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let a_join = send_join(addr, member_a.clone(), None);
        let (ra, _a2) = a_join.join().unwrap();
        let (rb, mut b2) = b_join.join().unwrap();
        assert_eq!((ra.error_code, rb.error_code), (0, 0));
        assert_eq!(ra.generation_id, gen1 + 1);
        assert_eq!(ra.leader.as_str(), member_a, "the leader stays the leader");
        assert_eq!(ra.members.len(), 2, "the leader sees both members");
        assert!(rb.members.is_empty(), "followers see no members");

        // Old generation is refused.
        assert_eq!(
            heartbeat(&mut b2, gen1, &rb.member_id),
            22,
            "ILLEGAL_GENERATION"
        );
        assert_eq!(commit(&mut b2, gen1, &rb.member_id, "t", 0, 5), 22);
        assert_eq!(
            heartbeat(&mut b2, ra.generation_id, "nobody"),
            25,
            "UNKNOWN_MEMBER_ID"
        );
    })
    .await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_removed_after_its_session_timeout() {
    // Sessions expire on the broker's injected clock: real time passing changes nothing,
    // moving the clock past the session expires the member.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let broker = start_broker_with_clock(dir.path(), FAST_GROUPS, clock.clone()).await;
    let addr = broker.local_addr;
    let state = move |c: &mut RawClient| {
        let described: DescribeGroupsResponse = c.call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
        );
        described.groups[0].group_state.to_string()
    };
    on_thread(move || {
        let mut a = RawClient::connect(addr);
        create_topic(&mut a, "t", 2);
        find_coordinator(&mut a, "g");
        let ja = join(&mut a, None, 800);
        let member_a = ja.member_id.to_string();
        sync(&mut a, ja.generation_id, &member_a, &[(&member_a, b"x")]);
        // Too short and too long sessions are refused.
        let bad: JoinGroupResponse = a.call(
            ApiKey::JoinGroup,
            9,
            &join_request("", None, 100, 1000, b"m"),
        );
        assert_eq!(bad.error_code, 26, "INVALID_SESSION_TIMEOUT");
        // A stops heartbeating. Real time passes (the coordinator checks deadlines every
        // 100 ms), the clock does not: A stays.
        std::thread::sleep(Duration::from_millis(1_500));
        assert_eq!(state(&mut a), "Stable", "expired without the clock moving");
        // The clock passes A's 800 ms session: the next deadline check removes A.
        clock.advance(801);
        let deadline = Instant::now() + Duration::from_secs(30);
        while state(&mut a) != "Empty" {
            assert!(Instant::now() < deadline, "member never expired");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(heartbeat(&mut a, ja.generation_id, &member_a), 25);
    })
    .await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_gets_its_assignment_back_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST_GROUPS).await;
    let addr = broker.local_addr;
    on_thread(move || {
        let mut a = RawClient::connect(addr);
        create_topic(&mut a, "t", 2);
        find_coordinator(&mut a, "g");
        let ja = join(&mut a, Some("worker-a"), 10_000);
        let member_a = ja.member_id.to_string();
        let mut b = RawClient::connect(addr);
        let b_join = send_join(addr, String::new(), Some("worker-b".into()));
        // A rejoins for the rebalance B caused.
        while heartbeat(&mut a, ja.generation_id, &member_a) == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let a_join = send_join(addr, member_a.clone(), Some("worker-a".into()));
        let (ra, _) = a_join.join().unwrap();
        let (rb, _) = b_join.join().unwrap();
        let generation = ra.generation_id;
        let member_b = rb.member_id.to_string();
        let b_sync = {
            let member_b = member_b.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(addr);
                sync(&mut c, generation, &member_b, &[])
            })
        };
        sync(
            &mut a,
            generation,
            &member_a,
            &[(&member_a, b"for-a"), (&member_b, b"for-b")],
        );
        assert_eq!(&b_sync.join().unwrap().assignment[..], b"for-b");

        // B restarts: a new process, no member id, same instance id.
        let restarted: JoinGroupResponse = b.call(
            ApiKey::JoinGroup,
            9,
            &join_request("", Some("worker-b"), 10_000, 60_000, b"m"),
        );
        assert_eq!(restarted.error_code, 0);
        assert_eq!(
            restarted.generation_id, generation,
            "no rebalance for a static member"
        );
        assert_ne!(restarted.member_id.as_str(), member_b);
        let resynced = sync(&mut b, generation, &restarted.member_id, &[]);
        assert_eq!(&resynced.assignment[..], b"for-b", "same assignment");
        assert_eq!(
            heartbeat(&mut a, generation, &member_a),
            0,
            "A is undisturbed"
        );
        // The old incarnation is fenced.
        let old = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(&member_b))
            .with_group_instance_id(Some(s("worker-b")));
        let fenced: HeartbeatResponse = b.call(ApiKey::Heartbeat, 4, &old);
        assert_eq!(fenced.error_code, 82, "FENCED_INSTANCE_ID");
    })
    .await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_offsets_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST_GROUPS).await;
    let addr = broker.local_addr;
    let (generation, member) = on_thread(move || {
        let mut a = RawClient::connect(addr);
        create_topic(&mut a, "t", 2);
        find_coordinator(&mut a, "g");
        let ja = join(&mut a, None, 30_000);
        let member = ja.member_id.to_string();
        sync(&mut a, ja.generation_id, &member, &[(&member, b"mine")]);
        assert_eq!(commit(&mut a, ja.generation_id, &member, "t", 0, 41), 0);
        assert_eq!(commit(&mut a, ja.generation_id, &member, "t", 1, 7), 0);
        assert_eq!(
            commit(&mut a, ja.generation_id, &member, "missing", 0, 7),
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        // Clients may not truncate the offsets topic: every partition refuses.
        let wipe = DeleteRecordsRequest::default()
            .with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(TopicName(s("__consumer_offsets")))
                    .with_partitions(
                        (0..5)
                            .map(|p| {
                                delete_records_request::DeleteRecordsPartition::default()
                                    .with_partition_index(p)
                                    .with_offset(-1)
                            })
                            .collect(),
                    ),
            ])
            .with_timeout_ms(10_000);
        let refused: DeleteRecordsResponse = a.call(ApiKey::DeleteRecords, 2, &wipe);
        for p in &refused.topics[0].partitions {
            assert_eq!(
                p.error_code, 17,
                "INVALID_TOPIC_EXCEPTION for partition {}",
                p.partition_index
            );
        }
        (ja.generation_id, member)
    })
    .await;
    // An unclean stop: nothing is flushed or marked clean.
    broker.abort().await;
    let broker = start_broker(
        dir.path(),
        &[FAST_GROUPS, &[("listeners", &addr.to_string())]].concat(),
    )
    .await;
    on_thread(move || {
        let mut a = RawClient::connect(addr);
        assert_eq!(fetch_offset(&mut a, "t", 0), 41);
        assert_eq!(fetch_offset(&mut a, "t", 1), 7);
        // The member was restored with its generation and keeps going.
        assert_eq!(heartbeat(&mut a, generation, &member), 0);
        let described: DescribeGroupsResponse = a.call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
        );
        assert_eq!(
            &described.groups[0].members[0].member_assignment[..],
            b"mine"
        );
    })
    .await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_committed_offset_against_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), FAST_GROUPS).await;
    let addr = broker.local_addr;
    on_thread(move || {
        let mut c = RawClient::connect(addr);
        create_topic(&mut c, "t", 2);
        find_coordinator(&mut c, "g");
        let mut builder = sluice_record::BatchBuilder::new(sluice_record::Compression::None);
        for i in 0..10u8 {
            builder.push(sluice_record::OwnedRecord::new(None, Some(vec![i]), 0));
        }
        let request = ProduceRequest::default().with_acks(1).with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(s("t")))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(builder.build().unwrap()))),
                ]),
        ]);
        let _: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
        // A standalone consumer (assign(), no membership) commits.
        assert_eq!(commit(&mut c, -1, "", "t", 0, 4), 0);
    })
    .await;
    let lag = broker.broker.groups().lag("g").expect("group exists");
    assert_eq!(
        lag,
        vec![sluice_broker::groups::PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed: 4,
            log_end_offset: 10,
            lag: 6
        }]
    );
    assert!(broker.broker.groups().lag("nobody").is_none());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ids_and_counts_are_bounded_and_empty_groups_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let settings: Vec<(&str, &str)> = [
        FAST_GROUPS,
        &[
            ("group.id.max.bytes", "10"),
            ("group.max.count", "2"),
            ("offsets.retention.check.interval.ms", "1000"),
        ],
    ]
    .concat();
    let broker = start_broker_with_clock(dir.path(), &settings, clock.clone()).await;
    let addr = broker.local_addr;
    on_thread(move || {
        let mut c = RawClient::connect(addr);
        find_coordinator(&mut c, "a");
        let first_join = |c: &mut RawClient, group: &str| -> i16 {
            let request =
                join_request("", None, 10_000, 10_000, b"m").with_group_id(GroupId(s(group)));
            let response: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &request);
            response.error_code
        };
        let listed = |c: &mut RawClient| -> Vec<String> {
            let response: ListGroupsResponse =
                c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
            let mut ids: Vec<String> = response
                .groups
                .iter()
                .map(|g| g.group_id.to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            first_join(&mut c, "a"),
            79,
            "MEMBER_ID_REQUIRED: group a exists"
        );
        assert_eq!(first_join(&mut c, "b"), 79);
        assert_eq!(
            first_join(&mut c, &"x".repeat(11)),
            24,
            "INVALID_GROUP_ID: id too long"
        );
        assert_eq!(
            first_join(&mut c, "c"),
            15,
            "COORDINATOR_NOT_AVAILABLE: group.max.count"
        );
        assert_eq!(listed(&mut c), ["a", "b"]);
        // a and b stay empty and never commit: once the clock passes the check interval
        // they are forgotten, and c finds room.
        clock.advance(1_001);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listed(&mut c).is_empty() {
            assert!(Instant::now() < deadline, "empty groups never expired");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(first_join(&mut c, "c"), 79);
    })
    .await;
    broker.shutdown().await.unwrap();
}

/// What a commit in flight while its topic is deleted can leave behind if the broker then
/// crashes: an offset record for a partition the metadata no longer names, after the
/// deletion's tombstones. The restart drops it (durably); the other offsets stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_left_for_a_deleted_topic_is_dropped_at_restart() {
    use sluice_broker::groups::records::{OffsetValue, RecordKey, partition_for};
    use sluice_broker::partition::Origin;
    use sluice_record::{BatchBuilder, Compression, OwnedRecord};

    let dir = tempfile::tempdir().unwrap();
    let handle = start_broker(dir.path(), FAST_GROUPS).await;
    let addr = handle.local_addr;
    on_thread(move || {
        let mut c = RawClient::connect(addr);
        create_topic(&mut c, "kept", 1);
        find_coordinator(&mut c, "g");
        assert_eq!(commit(&mut c, -1, "", "kept", 0, 5), 0);
    })
    .await;
    let key = RecordKey::Offset {
        group: "g".into(),
        topic: "gone".into(),
        partition: 0,
    };
    let value = OffsetValue {
        offset: 7,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: SystemClock.now_ms(),
    };
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(OwnedRecord::new(
        Some(key.encode()),
        Some(value.encode()),
        SystemClock.now_ms(),
    ));
    let mut bytes = batch.build().unwrap();
    let offsets = handle
        .broker
        .partition("__consumer_offsets", partition_for("g", 5))
        .unwrap();
    let appended = offsets
        .append(&mut bytes, Origin::Coordinator, true)
        .unwrap();
    appended.durable().await.unwrap();
    drop(offsets);
    handle.shutdown().await.unwrap();

    for round in 0..2 {
        let handle = start_broker(dir.path(), FAST_GROUPS).await;
        let addr = handle.local_addr;
        let found = on_thread(move || {
            let mut c = RawClient::connect(addr);
            find_coordinator(&mut c, "g");
            drop(c);
            all_offsets_at(addr)
        })
        .await;
        assert_eq!(found, vec![("kept".to_string(), 5)], "restart {round}");
        handle.shutdown().await.unwrap();
    }
}

/// Every committed offset of group `g`, by topic (first partition).
fn all_offsets_at(addr: SocketAddr) -> Vec<(String, i64)> {
    let mut c = RawClient::connect(addr);
    let request = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(None),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &request);
        let group = &response.groups[0];
        // The coordinator answers COORDINATOR_LOAD_IN_PROGRESS while it replays.
        if group.error_code == 0 {
            return group
                .topics
                .iter()
                .map(|t| (t.name.0.to_string(), t.partitions[0].committed_offset))
                .collect();
        }
        assert!(Instant::now() < deadline, "error {}", group.error_code);
        std::thread::sleep(Duration::from_millis(50));
    }
}
