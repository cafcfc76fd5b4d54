//! DescribeTopicPartitions (KIP-966): topic and partition metadata, paginated. Topics come
//! in name order (all of them when none is named); a response holds at most
//! `response_partition_limit` partitions (capped at [`MAX_PARTITIONS`], Kafka's
//! `max.request.partition.size.limit` default) and, when it stops short, a cursor naming
//! the next topic and partition. This node leads every partition and is its only replica
//! and ISR; eligible leader replicas are not kept (empty).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready, topic_name};
use crate::broker::Broker;
use crate::internal_topics;
use crate::metadata::{NO_LEADER, PartitionState};

pub(super) struct DescribeTopicPartitions;

impl Handler for DescribeTopicPartitions {
    const API: ApiKey = ApiKey::DescribeTopicPartitions;
    const VERSIONS: (i16, i16) = (0, 0);
    type Request = DescribeTopicPartitionsRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: DescribeTopicPartitionsRequest,
    ) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

/// Most partitions in one response, whatever the client asks.
pub const MAX_PARTITIONS: usize = 2000;
/// Authorized operations were not asked for (no ACLs yet).
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeTopicPartitionsRequest,
) -> Option<Response> {
    let image = broker.image();
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort_unstable();
    names.dedup();
    let (start_topic, start_partition) = match &request.cursor {
        Some(cursor) => (
            cursor.topic_name.0.to_string(),
            cursor.partition_index.max(0),
        ),
        None => (String::new(), 0),
    };
    let limit = usize::try_from(request.response_partition_limit)
        .unwrap_or(MAX_PARTITIONS)
        .clamp(1, MAX_PARTITIONS);
    let mut budget = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.iter().filter(|n| **n >= start_topic) {
        let first = if *name == start_topic {
            start_partition
        } else {
            0
        };
        let Some(topic) = image.topic(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_name(Some(topic_name(name)))
                    .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(first),
            );
            break;
        }
        let end = topic
            .partitions
            .min(first.saturating_add(i32::try_from(budget).unwrap_or(i32::MAX)));
        let partitions: Vec<_> = (first..end)
            .map(|index| {
                let state = topic
                    .state(index)
                    .cloned()
                    .unwrap_or(PartitionState::UNASSIGNED);
                let isr = state.isr.iter().map(|r| BrokerId(*r)).collect();
                let offline = state
                    .replicas
                    .iter()
                    .filter(|r| image.live_broker(**r).is_none())
                    .map(|r| BrokerId(*r))
                    .collect();
                let partition = DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(index)
                    .with_leader_id(BrokerId(state.leader))
                    .with_leader_epoch(state.leader_epoch.max(0))
                    .with_replica_nodes(state.replicas.iter().map(|r| BrokerId(*r)).collect())
                    .with_isr_nodes(isr)
                    .with_offline_replicas(offline)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()));
                if state.leader == NO_LEADER {
                    partition.with_error_code(ResponseError::LeaderNotAvailable.code())
                } else {
                    partition
                }
            })
            .collect();
        budget -= partitions.len();
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(topic.id)
                .with_is_internal(internal_topics::is_internal(name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
        );
        if end < topic.partitions {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(end),
            );
            break;
        }
    }
    ctx.respond(
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}
