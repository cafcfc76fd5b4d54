//! CreatePartitions: raise a topic's partition count.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, message};
use crate::broker::Broker;

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
        let assignments: Vec<Vec<i32>> = topic
            .assignments
            .iter()
            .flatten()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        let outcome = broker
            .create_partitions_placed(&name, topic.count, &assignments, request.validate_only)
            .await;
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
