//! DescribeCluster: this single node is the whole cluster and its controller (never fenced,
//! so v2's `include_fenced_brokers` changes nothing).

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
    let node = BrokerId(broker.config().node_id);
    let (host, port) = &broker.config().advertised;
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(node)
        .with_endpoint_type(request.endpoint_type)
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(node)
                .with_host(str_bytes(host))
                .with_port(i32::from(*port)),
        ])
        .with_cluster_authorized_operations(i32::MIN);
    ctx.respond(&response)
}
