//! `sluice topic reassign` (AlterPartitionReassignments, and ListPartitionReassignments to
//! show or wait for the moves) and `sluice topic elect-leaders` (ElectLeaders, preferred).

use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Connection;
use super::wire::{Wire, failure};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Parses `1,2,3` into broker ids.
pub fn parse_replicas(text: &str) -> anyhow::Result<Vec<i32>> {
    let ids: Vec<i32> = text
        .split(',')
        .map(|id| {
            id.trim()
                .parse::<i32>()
                .map_err(|_| anyhow::anyhow!("--replicas: {id:?} is not a broker id"))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!ids.is_empty(), "--replicas names no broker");
    Ok(ids)
}

/// Starts (or with `replicas: None` cancels) the move of `topic`'s `partitions`; with
/// `wait`, returns once no move of them is in progress.
pub fn reassign(
    connection: &Connection,
    topic: &str,
    partitions: &[i32],
    replicas: Option<&[i32]>,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let mut wire = Wire::connect(&connection.bootstrap)?;
    let target = replicas.map(|ids| ids.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>());
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ReassignablePartition::default()
                                .with_partition_index(*p)
                                .with_replicas(target.clone())
                        })
                        .collect(),
                ),
        ]);
    let (_, response): (_, AlterPartitionReassignmentsResponse) =
        wire.call(ApiKey::AlterPartitionReassignments, 0..=1, &request)?;
    if let Some(why) = failure(response.error_code, response.error_message.as_ref()) {
        anyhow::bail!("cannot reassign {topic}: {why}");
    }
    let mut failed = 0;
    for result in response.responses.iter().flat_map(|t| &t.partitions) {
        let p = result.partition_index;
        match failure(result.error_code, result.error_message.as_ref()) {
            None if replicas.is_some() => crate::say!("{topic}-{p}: moving to {replicas:?}"),
            None => crate::say!("{topic}-{p}: move cancelled"),
            Some(why) => {
                eprintln!("error: {topic}-{p}: {why}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} partition(s) not reassigned");
    let Some(within) = wait else {
        return Ok(());
    };
    let deadline = Instant::now() + within;
    loop {
        let ongoing = in_progress(&mut wire, topic, partitions)?;
        if ongoing.is_empty() {
            crate::say!("{topic}: every move done");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}: still moving after {within:?}: {ongoing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A move in progress: partition, replicas, adding, removing.
type Ongoing = (i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// The partitions of `topic` being moved.
fn in_progress(wire: &mut Wire, topic: &str, partitions: &[i32]) -> anyhow::Result<Vec<Ongoing>> {
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(Some(vec![
            ListPartitionReassignmentsTopics::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(partitions.to_vec()),
        ]));
    let (_, response): (_, ListPartitionReassignmentsResponse) =
        wire.call(ApiKey::ListPartitionReassignments, 0..=0, &request)?;
    if let Some(why) = failure(response.error_code, response.error_message.as_ref()) {
        anyhow::bail!("cannot list reassignments: {why}");
    }
    let ids = |ids: &[BrokerId]| ids.iter().map(|b| b.0).collect::<Vec<_>>();
    Ok(response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            )
        })
        .collect())
}

/// Moves `topic`'s partitions (all of them when none are named) to their preferred leader.
pub fn elect_leaders(
    connection: &Connection,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<()> {
    let mut wire = Wire::connect(&connection.bootstrap)?;
    let partitions = if partitions.is_empty() {
        let (_, metadata): (_, kafka_protocol::messages::MetadataResponse) = wire.call(
            ApiKey::Metadata,
            1..=12,
            &kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(topic_name(topic))),
            ])),
        )?;
        metadata
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
            .collect()
    } else {
        partitions.to_vec()
    };
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(30_000)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions),
        ]));
    let (_, response): (_, ElectLeadersResponse) =
        wire.call(ApiKey::ElectLeaders, 0..=2, &request)?;
    if let Some(why) = failure(response.error_code, None) {
        anyhow::bail!("cannot elect leaders: {why}");
    }
    for result in response
        .replica_election_results
        .iter()
        .flat_map(|t| &t.partition_result)
    {
        let p = result.partition_id;
        match failure(result.error_code, result.error_message.as_ref()) {
            None => crate::say!("{topic}-{p}: led by its preferred replica now"),
            Some(why) => crate::say!("{topic}-{p}: {why}"),
        }
    }
    Ok(())
}
