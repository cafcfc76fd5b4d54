//! CreateTopics: validated topic creation (or validation only), with the effective
//! configuration in the answer (v5+).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, message, str_bytes};
use crate::broker::Broker;
use crate::controller::NewTopic;
use crate::errors::ApiError;
use crate::topic_config;

pub(super) struct CreateTopics;

impl Handler for CreateTopics {
    const API: ApiKey = ApiKey::CreateTopics;
    const VERSIONS: (i16, i16) = (2, 7);
    type Request = CreateTopicsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: CreateTopicsRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: CreateTopicsRequest,
) -> Option<Response> {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let outcome = if duplicates.contains(&name) {
            Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("topic {name} appears more than once in the request"),
            ))
        } else {
            let mut configs = BTreeMap::new();
            let mut bad = None;
            for config in &topic.configs {
                match &config.value {
                    Some(value) => {
                        configs.insert(config.name.to_string(), value.to_string());
                    }
                    None => bad = Some(format!("config {} has no value", config.name.as_str())),
                }
            }
            let partitions = if topic.assignments.is_empty() {
                topic.num_partitions
            } else {
                topic.assignments.len() as i32
            };
            let replication_factor = match topic.assignments.first() {
                Some(a) => a.broker_ids.len() as i16,
                None => topic.replication_factor,
            };
            match bad {
                Some(m) => Err(ApiError::new(ResponseError::InvalidConfig, m)),
                None => {
                    let spec = NewTopic {
                        name: name.clone(),
                        partitions,
                        replication_factor,
                        configs,
                        assignments: topic
                            .assignments
                            .iter()
                            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                            .collect(),
                    };
                    broker.create_topic(spec, request.validate_only).await
                }
            }
        };
        results.push(match outcome {
            Ok(created) => {
                let configs = topic_config::describe(broker.config(), &created.configs)
                    .into_iter()
                    .map(|(key, value, source)| {
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(&key))
                            .with_value(Some(str_bytes(&value)))
                            .with_config_source(source as i8)
                    })
                    .collect();
                let result = if ctx.version >= 7 {
                    result.with_topic_id(created.id)
                } else {
                    result
                };
                if ctx.version >= 5 {
                    result
                        .with_num_partitions(created.partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(configs))
                } else {
                    result
                }
            }
            Err(err) => result
                .with_error_code(err.code())
                .with_error_message(message(err.message)),
        });
    }
    ctx.respond(&CreateTopicsResponse::default().with_topics(results))
}
