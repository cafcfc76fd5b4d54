//! CreatePartitions: raise a topic's partition count.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, message};
use crate::broker::Broker;
use crate::errors::ApiError;

pub(super) struct CreatePartitions;

impl Handler for CreatePartitions {
    const API: ApiKey = ApiKey::CreatePartitions;
    const VERSIONS: (i16, i16) = (0, 3);
    type Request = CreatePartitionsRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: CreatePartitionsRequest,
    ) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> Option<Response> {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let foreign = topic
            .assignments
            .iter()
            .flatten()
            .any(|a| a.broker_ids.iter().any(|b| b.0 != broker.config().node_id));
        let outcome = if foreign {
            Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                "assignment names a broker that does not exist",
            ))
        } else {
            broker
                .create_partitions(&name, topic.count, request.validate_only)
                .await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(err) => result
                .with_error_code(err.code())
                .with_error_message(message(err.message)),
        });
    }
    ctx.respond(&CreatePartitionsResponse::default().with_results(results))
}
