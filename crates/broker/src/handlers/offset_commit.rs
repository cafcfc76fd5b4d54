//! OffsetCommit: durable before it is acknowledged.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, topic_name};
use crate::broker::Broker;
use crate::groups::OffsetToCommit;

pub(super) struct OffsetCommit;

impl Handler for OffsetCommit {
    const API: ApiKey = ApiKey::OffsetCommit;
    const VERSIONS: (i16, i16) = (2, 9);
    type Request = OffsetCommitRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: OffsetCommitRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: OffsetCommitRequest,
) -> Option<Response> {
    let offsets: Vec<OffsetToCommit> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| OffsetToCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect();
    let results = if request.group_id.0.is_empty() {
        offsets
            .iter()
            .map(|o| {
                (
                    o.topic.clone(),
                    o.partition,
                    Some(ResponseError::InvalidGroupId),
                )
            })
            .collect()
    } else {
        broker
            .groups()
            .commit(
                &request.group_id.0,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id_or_member_epoch,
                offsets,
            )
            .await
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (topic, partition, error) in results {
        let partition = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(error.map_or(0, |e| e.code()));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ctx.respond(&OffsetCommitResponse::default().with_topics(topics))
}
