//! DescribeGroups: state, protocol and members with their metadata and assignment. An
//! unknown group is described as Dead, as Kafka does.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, message, ready, str_bytes};
use crate::broker::Broker;

pub(super) struct DescribeGroups;

impl Handler for DescribeGroups {
    const API: ApiKey = ApiKey::DescribeGroups;
    const VERSIONS: (i16, i16) = (0, 6);
    type Request = DescribeGroupsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DescribeGroupsRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeGroupsRequest,
) -> Option<Response> {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let group = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(i32::MIN);
            if id.0.is_empty() {
                return group.with_error_code(ResponseError::InvalidGroupId.code());
            }
            if let Err(error) = broker.groups().coordinates(&id.0) {
                return group.with_error_code(error.code());
            }
            let Some(described) = broker.groups().describe(&id.0) else {
                // From v6 an unknown group is an error (KIP-1043), before it was "Dead".
                let group = group.with_group_state(str_bytes("Dead"));
                return if ctx.version >= 6 {
                    group
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(message(format!("Group {} not found.", &*id.0)))
                } else {
                    group
                };
            };
            let members = described
                .members
                .into_iter()
                .map(
                    |(member_id, instance, client_id, client_host, metadata, assignment)| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(str_bytes(&member_id))
                            .with_client_id(str_bytes(&client_id))
                            .with_client_host(str_bytes(&client_host))
                            .with_member_metadata(metadata)
                            .with_member_assignment(assignment);
                        if ctx.version >= 4 {
                            member.with_group_instance_id(instance.as_deref().map(str_bytes))
                        } else {
                            member
                        }
                    },
                )
                .collect();
            group
                .with_group_state(str_bytes(described.state.name()))
                .with_protocol_type(str_bytes(&described.protocol_type))
                .with_protocol_data(str_bytes(&described.protocol))
                .with_members(members)
        })
        .collect();
    ctx.respond(&DescribeGroupsResponse::default().with_groups(groups))
}
