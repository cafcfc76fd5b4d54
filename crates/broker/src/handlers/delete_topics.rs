//! DeleteTopics, by name (v1-v5) or by name or id (v6).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use sluice_protocol::response::Response;
use uuid::Uuid;

use super::{Handler, Reply, RequestContext, later, message, topic_name};
use crate::broker::Broker;

pub(super) struct DeleteTopics;

impl Handler for DeleteTopics {
    const API: ApiKey = ApiKey::DeleteTopics;
    const VERSIONS: (i16, i16) = (1, 6);
    type Request = DeleteTopicsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DeleteTopicsRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
) -> Option<Response> {
    let targets: Vec<(Option<String>, Uuid)> = if ctx.version >= 6 {
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut results = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| broker.image().topic_names_by_id.get(&id).cloned());
        let result = DeletableTopicResult::default();
        let result = if ctx.version >= 6 {
            result.with_topic_id(id)
        } else {
            result
        };
        let Some(name) = name else {
            results.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        let result = result.with_name(Some(topic_name(&name)));
        results.push(match broker.delete_topic(&name).await {
            Ok(id) if ctx.version >= 6 => result.with_topic_id(id),
            Ok(_) => result,
            Err(err) if ctx.version >= 5 => result
                .with_error_code(err.code())
                .with_error_message(message(err.message)),
            Err(err) => result.with_error_code(err.code()),
        });
    }
    ctx.respond(&DeleteTopicsResponse::default().with_responses(results))
}
