//! DeleteGroups: groups without members, with their committed offsets.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later};
use crate::broker::Broker;

pub(super) struct DeleteGroups;

impl Handler for DeleteGroups {
    const API: ApiKey = ApiKey::DeleteGroups;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = DeleteGroupsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DeleteGroupsRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DeleteGroupsRequest,
) -> Option<Response> {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in request.groups_names {
        let error = if id.0.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            broker.groups().delete_group(&id.0).await
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    ctx.respond(&DeleteGroupsResponse::default().with_results(results))
}
