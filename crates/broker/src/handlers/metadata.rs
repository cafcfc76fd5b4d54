//! Metadata: the live brokers, the active controller (the quorum's leader), topics and
//! partitions with their leaders; creates missing topics when the client allows it and
//! `auto.create.topics.enable` is on.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, str_bytes, topic_name};
use crate::broker::Broker;
use crate::controller::NewTopic;
use crate::internal_topics;
use crate::metadata::{MetadataImage, NO_LEADER, TopicImage};
use crate::topic_config::validate_topic_name;

pub(super) struct Metadata;

impl Handler for Metadata {
    const API: ApiKey = ApiKey::Metadata;
    const VERSIONS: (i16, i16) = (0, 13);
    type Request = MetadataRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: MetadataRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

/// "Authorized operations not requested" (Kafka's INT32_MIN sentinel).
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: MetadataRequest,
) -> Option<Response> {
    let mut topics = Vec::new();
    let image = broker.image();
    // v0 sends an empty list for "all topics"; later versions send null.
    let all = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && ctx.version == 0,
    };
    if all {
        for topic in image.topics.values() {
            topics.push(describe(topic, &image, ctx.version));
        }
    } else {
        let allow_create = ctx.version < 4 || request.allow_auto_topic_creation;
        for requested in request.topics.unwrap_or_default() {
            let image = broker.image();
            let name = match &requested.name {
                Some(name) => name.0.to_string(),
                None => match image.topic_names_by_id.get(&requested.topic_id) {
                    Some(name) => name.clone(),
                    None => {
                        topics.push(
                            MetadataResponseTopic::default()
                                .with_topic_id(requested.topic_id)
                                .with_error_code(ResponseError::UnknownTopicId.code())
                                .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
                        );
                        continue;
                    }
                },
            };
            if let Some(topic) = image.topic(&name) {
                topics.push(describe(topic, &image, ctx.version));
                continue;
            }
            let error = if validate_topic_name(&name).is_err() {
                ResponseError::InvalidTopicException
            } else if allow_create && broker.config().auto_create_topics {
                let spec = NewTopic {
                    name: name.clone(),
                    partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                    assignments: Vec::new(),
                };
                match broker.create_topic(spec, false).await {
                    Ok(created) => {
                        topics.push(describe(&created, &broker.image(), ctx.version));
                        continue;
                    }
                    // Created concurrently by another request.
                    Err(err) if err.code == ResponseError::TopicAlreadyExists => {
                        let image = broker.image();
                        match image.topic(&name) {
                            Some(topic) => {
                                topics.push(describe(topic, &image, ctx.version));
                                continue;
                            }
                            None => ResponseError::UnknownTopicOrPartition,
                        }
                    }
                    Err(err) => err.code,
                }
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            topics.push(
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(error.code())
                    .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
            );
        }
    }
    let image = broker.image();
    let brokers = image
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics)
        .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED);
    if ctx.version >= 1 {
        response = response.with_controller_id(BrokerId(broker.controller_for_clients()));
    }
    if ctx.version >= 2 {
        response = response.with_cluster_id(Some(str_bytes(broker.cluster_id())));
    }
    ctx.respond(&response)
}

fn describe(topic: &TopicImage, image: &MetadataImage, version: i16) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .zip(&topic.states)
        .map(|(index, state)| {
            let ids = |ids: &mut dyn Iterator<Item = i32>| ids.map(BrokerId).collect::<Vec<_>>();
            let live = |id: &i32| image.live_broker(*id).is_some();
            let isr = ids(&mut state.isr.iter().copied());
            let mut partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(state.leader))
                .with_replica_nodes(ids(&mut state.replicas.iter().copied()))
                .with_isr_nodes(isr);
            if state.leader == NO_LEADER {
                partition = partition.with_error_code(ResponseError::LeaderNotAvailable.code());
            }
            if version >= 5 {
                partition = partition.with_offline_replicas(ids(&mut state
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !live(r))));
            }
            if version >= 7 {
                partition.with_leader_epoch(state.leader_epoch.max(0))
            } else {
                partition
            }
        })
        .collect();
    let described = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_is_internal(version >= 1 && internal_topics::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED);
    if version >= 10 {
        described.with_topic_id(topic.id)
    } else {
        described
    }
}
