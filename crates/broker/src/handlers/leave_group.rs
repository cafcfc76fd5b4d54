//! LeaveGroup: one member (v0-v2) or a batch identified by member or instance id (v3+).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready, str_bytes};
use crate::broker::Broker;

pub(super) struct LeaveGroup;

impl Handler for LeaveGroup {
    const API: ApiKey = ApiKey::LeaveGroup;
    const VERSIONS: (i16, i16) = (0, 5);
    type Request = LeaveGroupRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: LeaveGroupRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &LeaveGroupRequest,
) -> Option<Response> {
    let leaving: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let outcome = if request.group_id.0.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        broker.groups().leave(&request.group_id.0, &leaving)
    };
    let response = match outcome {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(results) if ctx.version >= 3 => LeaveGroupResponse::default().with_members(
            leaving
                .iter()
                .zip(results)
                .map(|((member_id, instance), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member_id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default()
            .with_error_code(results.first().copied().flatten().map_or(0, |e| e.code())),
    };
    ctx.respond(&response)
}
