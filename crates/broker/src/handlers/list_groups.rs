//! ListGroups, with the state filter of v4+.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready, str_bytes};
use crate::broker::Broker;

pub(super) struct ListGroups;

impl Handler for ListGroups {
    const API: ApiKey = ApiKey::ListGroups;
    const VERSIONS: (i16, i16) = (0, 5);
    type Request = ListGroupsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: ListGroupsRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

/// The group type of every group this broker keeps (KIP-848's consumer groups are not
/// served yet).
const CLASSIC: &str = "classic";

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &ListGroupsRequest,
) -> Option<Response> {
    let filter: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    // Every group here is a classic group (KIP-1043's types filter, v5).
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == CLASSIC) {
        return ctx.respond(&ListGroupsResponse::default());
    }
    let groups = broker
        .groups()
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            filter.is_empty() || filter.contains(&state.name().to_ascii_lowercase())
        })
        .map(|(id, protocol_type, state)| {
            let group = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type));
            let group = if ctx.version >= 4 {
                group.with_group_state(str_bytes(state.name()))
            } else {
                group
            };
            if ctx.version >= 5 {
                group.with_group_type(str_bytes("classic"))
            } else {
                group
            }
        })
        .collect();
    ctx.respond(&ListGroupsResponse::default().with_groups(groups))
}
