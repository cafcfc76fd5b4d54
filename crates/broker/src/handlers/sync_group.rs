//! SyncGroup: the leader hands in the assignment; every member gets its part.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, str_bytes};
use crate::broker::Broker;
use crate::groups::group::SyncOutcome;

pub(super) struct SyncGroup;

impl Handler for SyncGroup {
    const API: ApiKey = ApiKey::SyncGroup;
    const VERSIONS: (i16, i16) = (0, 5);
    type Request = SyncGroupRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: SyncGroupRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: SyncGroupRequest,
) -> Option<Response> {
    let group_id = request.group_id.0.to_string();
    let outcome = if group_id.is_empty() {
        SyncOutcome::error(ResponseError::InvalidGroupId)
    } else {
        let assignments = request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        broker
            .groups()
            .sync(
                &group_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                request.protocol_type.as_deref(),
                request.protocol_name.as_deref(),
                assignments,
            )
            .await
    };
    let mut response = SyncGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_assignment(outcome.assignment);
    if ctx.version >= 5 {
        response = response
            .with_protocol_type(outcome.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(outcome.protocol_name.as_deref().map(str_bytes));
    }
    ctx.respond(&response)
}
