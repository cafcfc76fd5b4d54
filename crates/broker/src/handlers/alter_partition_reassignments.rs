//! AlterPartitionReassignments (KIP-455), v0-v1: moves partitions to new replicas online,
//! or cancels a move in progress (`replicas: null`). The controller adds the new replicas at
//! once (they copy the leader as followers) and drops the old ones when every target replica
//! is in sync; ListPartitionReassignments shows the moves in progress. v1's
//! `allow_replication_factor_change=false` refuses a target of another size
//! (INVALID_REPLICATION_FACTOR, KIP-860).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey,
};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, message};
use crate::broker::Broker;
use crate::errors::ApiError;

pub(super) struct AlterPartitionReassignments;

/// A partition of the request, and its outcome when it was refused before the controller.
type Entry = (String, i32, Option<Result<(), ApiError>>);

impl Handler for AlterPartitionReassignments {
    const API: ApiKey = ApiKey::AlterPartitionReassignments;
    const VERSIONS: (i16, i16) = (0, 1);
    type Request = AlterPartitionReassignmentsRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: AlterPartitionReassignmentsRequest,
    ) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> Option<Response> {
    let keep_factor = ctx.version >= 1 && !request.allow_replication_factor_change;
    let image = broker.image();
    // Refused before the controller sees them: a changed replication factor when the
    // client forbids it.
    let mut outcomes: Vec<Entry> = Vec::new();
    let mut wanted = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        for p in &topic.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let current = image
                .partition(&name, p.partition_index)
                .map(|s| s.target().len());
            let resized = matches!((&target, current), (Some(t), Some(n)) if t.len() != n);
            if keep_factor && resized {
                let refused = ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    "the reassignment changes the replication factor",
                );
                outcomes.push((name.clone(), p.partition_index, Some(Err(refused))));
            } else {
                outcomes.push((name.clone(), p.partition_index, None));
                wanted.push((name.clone(), p.partition_index, target));
            }
        }
    }
    let decided = match broker.controller().alter_reassignments(wanted).await {
        Ok(decided) => decided,
        Err(err) => {
            let response = AlterPartitionReassignmentsResponse::default()
                .with_error_code(err.code())
                .with_error_message(message(err.message))
                .with_allow_replication_factor_change(!keep_factor);
            return ctx.respond(&response);
        }
    };
    let mut decided = decided.into_iter();
    let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
    for (name, partition, outcome) in outcomes {
        let outcome = outcome.or_else(|| decided.next()).unwrap_or_else(|| {
            Err(ApiError::new(
                ResponseError::UnknownServerError,
                "no outcome",
            ))
        });
        let result = ReassignablePartitionResponse::default().with_partition_index(partition);
        let result = match outcome {
            Ok(()) => result,
            Err(err) => result
                .with_error_code(err.code())
                .with_error_message(message(err.message)),
        };
        match topics.last_mut() {
            Some(topic) if *topic.name.0 == *name => topic.partitions.push(result),
            _ => topics.push(
                ReassignableTopicResponse::default()
                    .with_name(super::topic_name(&name))
                    .with_partitions(vec![result]),
            ),
        }
    }
    ctx.respond(
        &AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(!keep_factor)
            .with_responses(topics),
    )
}
