//! ListPartitionReassignments (KIP-455), v0: the partitions being moved (of the topics and
//! partitions named, or all), with their replicas and those being added and removed.

use std::sync::Arc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{Handler, Reply, RequestContext, ready, topic_name};
use crate::broker::Broker;

pub(super) struct ListPartitionReassignments;

impl Handler for ListPartitionReassignments {
    const API: ApiKey = ApiKey::ListPartitionReassignments;
    const VERSIONS: (i16, i16) = (0, 0);
    type Request = ListPartitionReassignmentsRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: ListPartitionReassignmentsRequest,
    ) -> Reply {
        let image = broker.image();
        let ids = |ids: &[i32]| ids.iter().map(|r| BrokerId(*r)).collect::<Vec<_>>();
        let wanted: Vec<(String, Vec<i32>)> = match &request.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect(),
            None => image
                .topics
                .values()
                .map(|t| (t.name.clone(), (0..t.partitions).collect()))
                .collect(),
        };
        let mut topics = Vec::new();
        for (name, partitions) in wanted {
            let ongoing: Vec<OngoingPartitionReassignment> = partitions
                .iter()
                .filter_map(|p| {
                    let state = image.partition(&name, *p)?;
                    state.reassigning().then(|| {
                        OngoingPartitionReassignment::default()
                            .with_partition_index(*p)
                            .with_replicas(ids(&state.replicas))
                            .with_adding_replicas(ids(&state.adding))
                            .with_removing_replicas(ids(&state.removing))
                    })
                })
                .collect();
            if !ongoing.is_empty() {
                topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(topic_name(&name))
                        .with_partitions(ongoing),
                );
            }
        }
        ready(ctx.respond(&ListPartitionReassignmentsResponse::default().with_topics(topics)))
    }
}
