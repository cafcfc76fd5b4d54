//! DescribeProducers (KIP-664): the idempotent producers with state in each partition (id,
//! epoch, last sequence, last timestamp). No transactions exist yet, so no producer has an
//! open one: coordinator epoch and transaction start offset are -1.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, message, ready};
use crate::broker::Broker;

pub(super) struct DescribeProducers;

impl Handler for DescribeProducers {
    const API: ApiKey = ApiKey::DescribeProducers;
    const VERSIONS: (i16, i16) = (0, 0);
    type Request = DescribeProducersRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: DescribeProducersRequest,
    ) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeProducersRequest,
) -> Option<Response> {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    let Some(partition) = broker.partition(&topic.name.0, index) else {
                        return response
                            .with_error_code(broker.not_served(&topic.name.0, index).code())
                            .with_error_message(message(format!(
                                "no partition {}-{index}",
                                &*topic.name.0
                            )));
                    };
                    let producers = partition
                        .active_producers()
                        .into_iter()
                        .map(|(id, epoch, last_sequence, last_timestamp)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last_sequence)
                                .with_last_timestamp(last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(-1)
                        })
                        .collect();
                    response.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&DescribeProducersResponse::default().with_topics(topics))
}
