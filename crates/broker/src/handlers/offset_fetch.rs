//! OffsetFetch: committed offsets of one group (v1-v7) or several (v8+). Partitions without
//! a committed offset answer -1. v9's member id and epoch belong to KIP-848 consumer
//! groups; every group here is a classic group, which does not check them.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready, str_bytes, topic_name};
use crate::broker::Broker;
use crate::groups::group::Committed;

pub(super) struct OffsetFetch;

impl Handler for OffsetFetch {
    const API: ApiKey = ApiKey::OffsetFetch;
    const VERSIONS: (i16, i16) = (1, 9);
    type Request = OffsetFetchRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: OffsetFetchRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

type Fetched = Vec<(String, i32, Option<Committed>)>;

fn fetch(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, ResponseError> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    broker.groups().coordinates(group)?;
    Ok(broker.groups().fetch_offsets(group, wanted))
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &OffsetFetchRequest,
) -> Option<Response> {
    let leader_epochs = ctx.version >= 5;
    let partition_fields = |c: &Option<Committed>| match c {
        Some(c) => (
            c.offset,
            if leader_epochs { c.leader_epoch } else { -1 },
            c.metadata.clone(),
        ),
        None => (-1, -1, String::new()),
    };
    if ctx.version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch(broker, &g.group_id.0, wanted) {
                    Err(error) => group.with_error_code(error.code()),
                    Ok(fetched) => {
                        let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
                        for (topic, partition, committed) in fetched {
                            let (offset, epoch, metadata) = partition_fields(&committed);
                            let p = OffsetFetchResponsePartitions::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(str_bytes(&metadata)));
                            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                                Some(t) => t.partitions.push(p),
                                None => topics.push(
                                    OffsetFetchResponseTopics::default()
                                        .with_name(topic_name(&topic))
                                        .with_partitions(vec![p]),
                                ),
                            }
                        }
                        group.with_topics(topics)
                    }
                }
            })
            .collect();
        return ctx.respond(&OffsetFetchResponse::default().with_groups(groups));
    }
    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let mut response = OffsetFetchResponse::default();
    match fetch(broker, &request.group_id.0, wanted) {
        Err(error) if ctx.version >= 2 => response = response.with_error_code(error.code()),
        Err(_) => {}
        Ok(fetched) => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (topic, partition, committed) in fetched {
                let (offset, epoch, metadata) = partition_fields(&committed);
                let mut p = OffsetFetchResponsePartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_metadata(Some(str_bytes(&metadata)));
                if leader_epochs {
                    p = p.with_committed_leader_epoch(epoch);
                }
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(topic_name(&topic))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            response = response.with_topics(topics);
        }
    }
    ctx.respond(&response)
}
