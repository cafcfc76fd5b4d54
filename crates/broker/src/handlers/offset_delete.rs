//! OffsetDelete: drop committed offsets of partitions the group does not consume.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, topic_name};
use crate::broker::Broker;

pub(super) struct OffsetDelete;

impl Handler for OffsetDelete {
    const API: ApiKey = ApiKey::OffsetDelete;
    const VERSIONS: (i16, i16) = (0, 0);
    type Request = OffsetDeleteRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: OffsetDeleteRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: OffsetDeleteRequest,
) -> Option<Response> {
    let partitions = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let response = match broker
        .groups()
        .delete_offsets(&request.group_id.0, partitions)
        .await
    {
        Err(error) => OffsetDeleteResponse::default().with_error_code(error.code()),
        Ok(results) => {
            let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
            for (topic, partition, error) in results {
                let p = OffsetDeleteResponsePartition::default()
                    .with_partition_index(partition)
                    .with_error_code(error.map_or(0, |e| e.code()));
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        OffsetDeleteResponseTopic::default()
                            .with_name(topic_name(&topic))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            OffsetDeleteResponse::default().with_topics(topics)
        }
    };
    ctx.respond(&response)
}
