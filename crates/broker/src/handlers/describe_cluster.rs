//! DescribeCluster: the registered brokers (fenced ones too when v2 asks, flagged) and the
//! active controller (the metadata quorum's leader).

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready, str_bytes};
use crate::broker::Broker;

pub(super) struct DescribeCluster;

impl Handler for DescribeCluster {
    const API: ApiKey = ApiKey::DescribeCluster;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = DescribeClusterRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DescribeClusterRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeClusterRequest,
) -> Option<Response> {
    let image = broker.image();
    let with_fenced = ctx.version >= 2 && request.include_fenced_brokers;
    let brokers = image
        .brokers
        .values()
        .filter(|b| with_fenced || !b.fenced)
        .map(|b| {
            let described = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port));
            if ctx.version >= 2 {
                described.with_is_fenced(b.fenced)
            } else {
                described
            }
        })
        .collect();
    let controller = broker.controller_for_clients();
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(BrokerId(controller))
        .with_endpoint_type(request.endpoint_type)
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN);
    ctx.respond(&response)
}
