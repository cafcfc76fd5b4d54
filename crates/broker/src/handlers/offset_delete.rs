//! OffsetDelete: drop committed offsets of partitions the group does not consume.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use sluice_protocol::response::Response;

use super::{RequestContext, topic_name};
use crate::broker::Broker;

pub async fn handle(
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
        .groups
        .delete_offsets(broker, &request.group_id.0, partitions)
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
