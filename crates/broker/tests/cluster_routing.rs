//! Three brokers of one cluster in this process, spoken to with a raw protocol client: every
//! broker tells the same story (brokers, controller, leaders), DescribeQuorum sent to a
//! follower is forwarded to the controller, a change made through any broker is seen by all,
//! and a broker that does not lead a partition refuses it with NOT_LEADER_OR_FOLLOWER (the
//! client's cue to refresh its metadata) while its leader takes it. A broker-only node joins
//! the cluster, receives partitions, comes back after a restart, and is fenced when it
//! stops fetching.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{RawClient, free_port, start_broker};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_broker::BrokerHandle;
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn metadata(c: &mut RawClient, topic: &str) -> MetadataResponse {
    c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
        ])),
    )
}

fn produce(c: &mut RawClient, topic: &str, partition: i32) -> i16 {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(OwnedRecord::new(
        None,
        Some(b"v".to_vec()),
        1_700_000_000_000,
    ));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(builder.build().unwrap()))),
                ]),
        ]);
    let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].error_code
}

/// The `controller.quorum.voters` of a cluster of three with these controller ports.
fn voters_of(controller_ports: &[u16]) -> String {
    controller_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

async fn start_cluster(root: &std::path::Path) -> Vec<BrokerHandle> {
    start_cluster_on(root, &(0..3).map(|_| free_port()).collect::<Vec<_>>(), None).await
}

/// Three voters on `controller_ports`, combined nodes but for `controller_only` (an index),
/// which only votes.
async fn start_cluster_on(
    root: &std::path::Path,
    controller_ports: &[u16],
    controller_only: Option<usize>,
) -> Vec<BrokerHandle> {
    let voters = voters_of(controller_ports);
    let starts = (0..3).map(|i| {
        let dir = root.join(format!("node-{}", i + 1));
        let node_id = (i + 1).to_string();
        let (roles, listeners) = if controller_only == Some(i) {
            (
                "controller",
                format!("CONTROLLER://127.0.0.1:{}", controller_ports[i]),
            )
        } else {
            (
                "broker,controller",
                format!(
                    "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    free_port(),
                    controller_ports[i]
                ),
            )
        };
        let voters = voters.clone();
        async move {
            start_broker(
                &dir,
                &[
                    ("node.id", node_id.as_str()),
                    ("process.roles", roles),
                    ("controller.quorum.voters", voters.as_str()),
                    ("listeners", listeners.as_str()),
                    ("controller.listener.names", "CONTROLLER"),
                    ("broker.session.timeout.ms", "3000"),
                    ("broker.heartbeat.interval.ms", "500"),
                ],
            )
            .await
        }
    });
    // Each waits for a quorum of the others: they start together.
    futures_join_all(starts.collect()).await
}

/// Runs the futures concurrently (tokio tasks) and returns their results in order.
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_routes_clients_to_leaders_and_the_controller() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path()).await;
    let addrs: Vec<_> = brokers.iter().map(|b| b.local_addr).collect();
    tokio::task::spawn_blocking(move || {
        let mut clients: Vec<RawClient> = addrs.iter().map(|a| RawClient::connect(*a)).collect();

        // A topic created through the third broker.
        let created: CreateTopicsResponse = clients[2].call(
            ApiKey::CreateTopics,
            5,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(topic_name("routed"))
                        .with_num_partitions(6)
                        .with_replication_factor(1),
                ]),
        );
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");

        // Every broker lists the three brokers, the same controller and the same leaders
        // (once each has applied the change).
        let deadline = Instant::now() + Duration::from_secs(20);
        let views: Vec<MetadataResponse> = loop {
            let views: Vec<MetadataResponse> =
                clients.iter_mut().map(|c| metadata(c, "routed")).collect();
            let settled = views.iter().all(|v| {
                v.brokers.len() == 3
                    && v.controller_id.0 > 0
                    && v.topics[0].error_code == 0
                    && v.topics[0].partitions.iter().all(|p| p.leader_id.0 > 0)
            });
            if settled {
                break views;
            }
            assert!(Instant::now() < deadline, "brokers disagree: {views:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let leaders = |v: &MetadataResponse| {
            let mut l: Vec<(i32, i32)> = v.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            l.sort_unstable();
            l
        };
        for v in &views[1..] {
            assert_eq!(v.controller_id, views[0].controller_id);
            assert_eq!(leaders(v), leaders(&views[0]));
        }
        let controller = views[0].controller_id.0;

        // Each partition: its leader takes a write; the two others refuse it with the
        // retriable NOT_LEADER_OR_FOLLOWER.
        for (partition, leader) in leaders(&views[0]) {
            for (i, client) in clients.iter_mut().enumerate() {
                let code = produce(client, "routed", partition);
                if i as i32 + 1 == leader {
                    assert_eq!(code, 0, "leader {leader} of partition {partition}");
                } else {
                    assert_eq!(
                        code,
                        ResponseError::NotLeaderOrFollower.code(),
                        "broker {} for partition {partition} led by {leader}",
                        i + 1
                    );
                }
            }
        }
        // A partition that does not exist is unknown everywhere.
        assert_eq!(
            produce(&mut clients[0], "routed", 6),
            ResponseError::UnknownTopicOrPartition.code()
        );

        // DescribeQuorum through any broker: the controller's own answer, with every voter.
        let request = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(topic_name("__cluster_metadata"))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        for client in &mut clients {
            let response: DescribeQuorumResponse = client.call(ApiKey::DescribeQuorum, 2, &request);
            let partition = &response.topics[0].partitions[0];
            assert_eq!(partition.error_code, 0, "{response:?}");
            assert_eq!(partition.leader_id.0, controller);
            assert_eq!(partition.current_voters.len(), 3, "{response:?}");
        }
    })
    .await
    .unwrap();
    for broker in brokers {
        broker.shutdown().await.unwrap();
    }
}

/// A broker-only node (`process.roles=broker`) following the cluster's quorum.
async fn start_broker_only(dir: &std::path::Path, voters: &str, port: u16) -> BrokerHandle {
    let listeners = format!("PLAINTEXT://127.0.0.1:{port}");
    start_broker(
        dir,
        &[
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", voters),
            ("listeners", listeners.as_str()),
        ],
    )
    .await
}

fn create(c: &mut RawClient, topic: &str, partitions: i32) -> i16 {
    create_with(c, topic, partitions, 1, &[])
}

/// CreateTopics of `topic` with `replication` replicas and topic `configs`; its error code.
fn create_with(
    c: &mut RawClient,
    topic: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> i16 {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let created: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic_name(topic))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication)
                    .with_configs(configs),
            ]),
    );
    created.topics[0].error_code
}

/// Partition → leader once `c` names a live leader for every partition of `topic` and
/// lists `brokers` brokers.
fn settled_leaders(c: &mut RawClient, topic: &str, brokers: usize) -> Vec<(i32, i32)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = metadata(c, topic);
        if view.brokers.len() == brokers
            && view.topics[0].error_code == 0
            && view.topics[0].partitions.iter().all(|p| p.leader_id.0 > 0)
        {
            let mut leaders: Vec<(i32, i32)> = view.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            leaders.sort_unstable();
            return leaders;
        }
        assert!(Instant::now() < deadline, "not settled: {view:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_joins_gets_partitions_and_rejoins_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = voters_of(&controller_ports);
    let brokers = start_cluster_on(root.path(), &controller_ports, None).await;
    let fourth_port = free_port();
    let fourth_dir = root.path().join("node-4");
    let fourth = start_broker_only(&fourth_dir, &voters, fourth_port).await;
    let first = brokers[0].local_addr;
    let at_fourth = fourth.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c1 = RawClient::connect(first);
        let mut c4 = RawClient::connect(at_fourth);
        // Through the new broker: a topic whose partitions land on all four.
        assert_eq!(create(&mut c4, "fourth", 8), 0);
        let leaders = settled_leaders(&mut c1, "fourth", 4);
        let on_fourth: Vec<i32> = leaders
            .iter()
            .filter(|(_, l)| *l == 4)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(on_fourth.len(), 2, "{leaders:?}");
        assert_eq!(settled_leaders(&mut c4, "fourth", 4), leaders);
        for partition in &on_fourth {
            assert_eq!(produce(&mut c4, "fourth", *partition), 0);
            assert_eq!(
                produce(&mut c1, "fourth", *partition),
                ResponseError::NotLeaderOrFollower.code()
            );
        }
        // It names the same controller as the voters.
        let view = metadata(&mut c4, "fourth");
        assert_eq!(
            view.controller_id,
            metadata(&mut c1, "fourth").controller_id
        );
        assert!(
            view.controller_id.0 > 0 && view.controller_id.0 <= 3,
            "{view:?}"
        );
    })
    .await
    .unwrap();

    // A clean stop fences it: its partitions go offline; restarted on its data, it
    // registers again and leads them again.
    fourth.shutdown().await.unwrap();
    let fourth = start_broker_only(&fourth_dir, &voters, fourth_port).await;
    let at_fourth = fourth.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c1 = RawClient::connect(first);
        let leaders = settled_leaders(&mut c1, "fourth", 4);
        let mut c4 = RawClient::connect(at_fourth);
        for (partition, leader) in leaders {
            if leader == 4 {
                assert_eq!(produce(&mut c4, "fourth", partition), 0);
            }
        }
    })
    .await
    .unwrap();
    // A broker-only node that stops fetching (a crash) misses its heartbeats: the
    // controller fences it and its partitions go offline.
    fourth.abort().await;
    tokio::task::spawn_blocking(move || {
        let mut c1 = RawClient::connect(first);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let view = metadata(&mut c1, "fourth");
            let offline = view.topics[0]
                .partitions
                .iter()
                .filter(|p| p.error_code == ResponseError::LeaderNotAvailable.code())
                .count();
            if view.brokers.len() == 3 && offline == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the crashed broker is not fenced: {view:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    for broker in brokers {
        broker.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_only_voter_serves_the_quorum_and_no_client() {
    let root = tempfile::tempdir().unwrap();
    // Node 3 only votes.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes = start_cluster_on(root.path(), &ports, Some(2)).await;
    let first = nodes[0].local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c1 = RawClient::connect(first);
        assert_eq!(create(&mut c1, "two-brokers", 4), 0);
        // Two brokers listed, partitions on them only, and a controller id clients can
        // reach (a broker) whichever voter leads.
        let leaders = settled_leaders(&mut c1, "two-brokers", 2);
        assert!(
            leaders.iter().all(|(_, l)| *l == 1 || *l == 2),
            "{leaders:?}"
        );
        let view = metadata(&mut c1, "two-brokers");
        assert!(
            view.brokers.iter().any(|b| b.node_id == view.controller_id),
            "{view:?}"
        );
        for (partition, leader) in leaders {
            if leader == 1 {
                assert_eq!(produce(&mut c1, "two-brokers", partition), 0);
            }
        }
    })
    .await
    .unwrap();
    // The controller-only node serves no Kafka client: nothing listens for one.
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// ListOffsets LATEST (the high watermark) of one partition, asked of `c`.
fn latest_offset(c: &mut RawClient, topic: &str, partition: i32) -> (i16, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(-1),
                ]),
        ]);
    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 4, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

fn reassign(c: &mut RawClient, topic: &str, target: Option<Vec<i32>>) -> i16 {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    };
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(target.map(|t| t.into_iter().map(BrokerId).collect())),
                ]),
        ]);
    let response: AlterPartitionReassignmentsResponse =
        c.call(ApiKey::AlterPartitionReassignments, 0, &request);
    assert_eq!(response.error_code, 0, "{response:?}");
    response.responses[0].partitions[0].error_code
}

fn moves_in_progress(c: &mut RawClient) -> usize {
    use kafka_protocol::messages::{
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    };
    let response: ListPartitionReassignmentsResponse = c.call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000),
    );
    response.topics.iter().map(|t| t.partitions.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_other_brokers_online_with_its_records() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path()).await;
    let addrs: Vec<_> = brokers.iter().map(|b| b.local_addr).collect();
    tokio::task::spawn_blocking(move || {
        let mut clients: Vec<RawClient> = addrs.iter().map(|a| RawClient::connect(*a)).collect();
        assert_eq!(create(&mut clients[0], "moving", 1), 0);
        let from = settled_leaders(&mut clients[0], "moving", 3)[0].1;
        let leader = (from - 1) as usize;
        for _ in 0..20 {
            assert_eq!(produce(&mut clients[leader], "moving", 0), 0);
        }
        assert_eq!(latest_offset(&mut clients[leader], "moving", 0), (0, 20));
        let c = &mut clients[0];
        assert_eq!(
            reassign(c, "moving", None),
            ResponseError::NoReassignmentInProgress.code()
        );
        assert_eq!(
            reassign(c, "moving", Some(vec![from, 9])),
            ResponseError::InvalidReplicaAssignment.code(),
            "an unknown broker"
        );
        // Away from its only replica to the two other brokers (replication factor 1 → 2).
        let target: Vec<i32> = (1..=3).filter(|b| *b != from).collect();
        assert_eq!(reassign(c, "moving", Some(target.clone())), 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let moved = loop {
            let view = metadata(c, "moving");
            let p = &view.topics[0].partitions[0];
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            isr.sort_unstable();
            if moves_in_progress(c) == 0 && replicas == target && isr == target {
                break p.leader_id.0;
            }
            assert!(Instant::now() < deadline, "not moved: {p:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(target.contains(&moved), "led by {moved}");
        // The new leader has every record; the old broker no longer serves the partition.
        let at = (moved - 1) as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        while latest_offset(&mut clients[at], "moving", 0) != (0, 20) {
            assert!(Instant::now() < deadline, "the records did not move");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            produce(&mut clients[leader], "moving", 0),
            ResponseError::NotLeaderOrFollower.code()
        );
        assert_eq!(produce(&mut clients[at], "moving", 0), 0);
        assert_eq!(latest_offset(&mut clients[at], "moving", 0), (0, 21));
    })
    .await
    .unwrap();
    for broker in brokers {
        broker.shutdown().await.unwrap();
    }
}

/// Partition 0's leader and ISR as `c` sees them.
fn leader_and_isr(c: &mut RawClient, topic: &str) -> (i32, Vec<i32>) {
    let view = metadata(c, topic);
    let p = &view.topics[0].partitions[0];
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort_unstable();
    (p.leader_id.0, isr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_needs_min_insync_replicas_in_sync() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path()).await;
    let addrs: Vec<_> = brokers.iter().map(|b| b.local_addr).collect();
    let (leaders, stopped) = tokio::task::spawn_blocking(move || {
        let mut clients: Vec<RawClient> = addrs.iter().map(|a| RawClient::connect(*a)).collect();
        assert_eq!(
            create_with(
                &mut clients[0],
                "strict",
                1,
                3,
                &[("min.insync.replicas", "3")]
            ),
            0
        );
        assert_eq!(
            create_with(
                &mut clients[0],
                "lenient",
                1,
                3,
                &[("min.insync.replicas", "2")]
            ),
            0
        );
        let mut leaders = Vec::new();
        for topic in ["strict", "lenient"] {
            let deadline = Instant::now() + Duration::from_secs(20);
            let leader = loop {
                let (leader, isr) = leader_and_isr(&mut clients[0], topic);
                if leader > 0 && isr == vec![1, 2, 3] {
                    break leader;
                }
                assert!(Instant::now() < deadline, "{topic}: not in sync");
                std::thread::sleep(Duration::from_millis(50));
            };
            // All three in sync: acks=all is answered.
            assert_eq!(produce(&mut clients[(leader - 1) as usize], topic, 0), 0);
            leaders.push(leader);
        }
        // A broker that leads neither partition stops.
        let stopped = (1..=3).find(|b| !leaders.contains(b)).unwrap_or(3);
        (leaders, stopped)
    })
    .await
    .unwrap();
    brokers
        .remove((stopped - 1) as usize)
        .shutdown()
        .await
        .unwrap();
    let addrs: Vec<_> = brokers.iter().map(|b| b.local_addr).collect();
    let ids: Vec<i32> = (1..=3).filter(|b| *b != stopped).collect();
    tokio::task::spawn_blocking(move || {
        let client_of = |id: i32| {
            let at = ids.iter().position(|b| *b == id).expect("a running broker");
            RawClient::connect(addrs[at])
        };
        let mut c = client_of(ids[0]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while leader_and_isr(&mut c, "strict").1.len() != 2 {
            assert!(
                Instant::now() < deadline,
                "the stopped broker is still in sync"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Two in sync: a topic that wants three refuses acks=all before appending; one that
        // wants two takes it.
        let mut strict = client_of(leaders[0]);
        assert_eq!(
            produce(&mut strict, "strict", 0),
            ResponseError::NotEnoughReplicas.code()
        );
        let mut lenient = client_of(leaders[1]);
        assert_eq!(produce(&mut lenient, "lenient", 0), 0);
    })
    .await
    .unwrap();
    for broker in brokers {
        broker.shutdown().await.unwrap();
    }
}

/// A voter whose data directory belongs to the cluster, started with `metadata.log.dir`
/// pointing at an empty directory, is refused before it joins the quorum: it would start
/// with no term and no vote, and could vote twice in one term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_without_its_metadata_log_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes = start_cluster_on(root.path(), &ports, None).await;
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    let empty = root.path().join("empty-metadata");
    let props: BTreeMap<String, String> = [
        ("node.id", "1".to_string()),
        ("process.roles", "broker,controller".to_string()),
        ("controller.quorum.voters", voters_of(&ports)),
        (
            "listeners",
            format!(
                "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                free_port(),
                ports[0]
            ),
        ),
        ("controller.listener.names", "CONTROLLER".to_string()),
        ("log.dirs", root.path().join("node-1").display().to_string()),
        ("metadata.log.dir", empty.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = sluice_broker::BrokerConfig::from_overrides(props).unwrap();
    let refused = sluice_broker::start(config).await;
    let reason = format!("{:?}", refused.expect_err("refused"));
    assert!(reason.contains("holds no metadata log"), "{reason}");
}
