//! JoinGroup: enter a rebalance; answered when it completes (or at once for the
//! member-id-required round trip and for members whose join changes nothing).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, str_bytes};
use crate::broker::Broker;
use crate::groups::group::{JoinOutcome, JoinRequest};

pub(super) struct JoinGroup;

impl Handler for JoinGroup {
    const API: ApiKey = ApiKey::JoinGroup;
    const VERSIONS: (i16, i16) = (0, 9);
    type Request = JoinGroupRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: JoinGroupRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: JoinGroupRequest,
) -> Option<Response> {
    let group_id = request.group_id.0.to_string();
    let outcome = if group_id.is_empty() {
        JoinOutcome::error(ResponseError::InvalidGroupId, &request.member_id)
    } else {
        let session = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
        let rebalance = if ctx.version >= 1 {
            Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        };
        let join = JoinRequest {
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: ctx.client_id.clone().unwrap_or_default(),
            client_host: ctx.client_host.clone(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: ctx.version >= 4,
        };
        broker.groups().join(&group_id, join).await
    };
    let members = outcome
        .members
        .into_iter()
        .map(|(member_id, instance, metadata)| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&member_id))
                .with_metadata(metadata);
            if ctx.version >= 5 {
                member.with_group_instance_id(instance.map(|i| str_bytes(&i)))
            } else {
                member
            }
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_generation_id(outcome.generation)
        .with_leader(str_bytes(&outcome.leader))
        .with_member_id(str_bytes(&outcome.member_id))
        .with_members(members);
    let protocol_name = outcome.protocol_name.as_deref().map(str_bytes);
    if ctx.version >= 7 {
        response = response
            .with_protocol_type(outcome.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(protocol_name);
    } else {
        response = response.with_protocol_name(Some(protocol_name.unwrap_or_default()));
    }
    ctx.respond(&response)
}
