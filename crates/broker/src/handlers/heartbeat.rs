//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready};
use crate::broker::Broker;

pub(super) struct Heartbeat;

impl Handler for Heartbeat {
    const API: ApiKey = ApiKey::Heartbeat;
    const VERSIONS: (i16, i16) = (0, 4);
    type Request = HeartbeatRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: HeartbeatRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &HeartbeatRequest,
) -> Option<Response> {
    let error = if request.group_id.0.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else {
        broker.groups().heartbeat(
            &request.group_id.0,
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
        )
    };
    ctx.respond(&HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code())))
}
