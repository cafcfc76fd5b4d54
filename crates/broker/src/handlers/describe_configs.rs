//! DescribeConfigs for topics (effective values with their source, and synonyms on request)
//! and for this broker (its static configuration, read-only).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, message, ready, str_bytes};
use crate::broker::Broker;
use crate::config::PROPERTIES;
use crate::topic_config::{self, ConfigSource, TOPIC_PROPERTIES};

pub(super) struct DescribeConfigs;

impl Handler for DescribeConfigs {
    const API: ApiKey = ApiKey::DescribeConfigs;
    const VERSIONS: (i16, i16) = (1, 4);
    type Request = DescribeConfigsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DescribeConfigsRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigType for a property, from its name.
fn config_type(key: &str) -> i8 {
    match key {
        "auto.create.topics.enable" | "fetch.zero.copy.enable" | "log.cleaner.enable" => 1, // BOOLEAN
        "min.cleanable.dirty.ratio" | "log.cleaner.min.cleanable.ratio" => 6, // DOUBLE
        "log.cleaner.io.max.bytes.per.second" => 6,
        "log.cleaner.dedupe.buffer.size" => 5, // LONG
        "cleanup.policy"
        | "log.cleanup.policy"
        | "log.dirs"
        | "listeners"
        | "advertised.listeners" => 7, // LIST
        k if k.ends_with(".ms")
            || k.ends_with("retention.bytes")
            || k.ends_with("inflight.bytes") =>
        {
            5
        } // LONG
        k if k.ends_with(".bytes")
            || k.ends_with("partitions")
            || k == "node.id"
            || k.ends_with(".threads") =>
        {
            3
        } // INT
        "default.replication.factor" => 4,     // SHORT
        _ => 2,                                // STRING
    }
}

fn wanted(keys: &Option<Vec<kafka_protocol::protocol::StrBytes>>, key: &str) -> bool {
    keys.as_ref()
        .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == key))
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeConfigsRequest,
) -> Option<Response> {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    let image = broker.image();
                    let Some(topic) = image.topic(name) else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(message(format!("no topic {name}")));
                    };
                    let configs = topic_config::describe(broker.config(), &topic.configs)
                        .into_iter()
                        .filter(|(key, _, _)| wanted(&resource.configuration_keys, key))
                        .map(|(key, value, source)| {
                            let mut entry = entry(&key, &value, source, false, ctx.version);
                            if request.include_synonyms {
                                entry = entry.with_synonyms(topic_synonyms(
                                    broker,
                                    &key,
                                    topic.configs.get(&key),
                                ));
                            }
                            entry
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER
                    if name.is_empty() || name == broker.config().node_id.to_string() =>
                {
                    let configs = PROPERTIES
                        .iter()
                        .filter(|(key, _)| wanted(&resource.configuration_keys, key))
                        .map(|(key, _)| {
                            let source = if broker.config().overridden.contains_key(*key) {
                                ConfigSource::StaticBroker
                            } else {
                                ConfigSource::Default
                            };
                            entry(
                                key,
                                &broker.config().properties[*key],
                                source,
                                true,
                                ctx.version,
                            )
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(format!(
                        "this is broker {}, not {name}",
                        broker.config().node_id
                    ))),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(format!("resource type {other} is not supported"))),
            }
        })
        .collect();
    ctx.respond(&DescribeConfigsResponse::default().with_results(results))
}

fn entry(
    key: &str,
    value: &str,
    source: ConfigSource,
    read_only: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(key))
        .with_value(Some(str_bytes(value)))
        .with_read_only(read_only)
        .with_config_source(source as i8);
    if version >= 3 {
        entry.with_config_type(config_type(key))
    } else {
        entry
    }
}

/// The values that could apply to a topic property, highest precedence first.
fn topic_synonyms(
    broker: &Broker,
    key: &str,
    topic_value: Option<&String>,
) -> Vec<DescribeConfigsSynonym> {
    let mut synonyms = Vec::new();
    if let Some(value) = topic_value {
        synonyms.push(synonym(key, value, ConfigSource::DynamicTopic));
    }
    let broker_key = TOPIC_PROPERTIES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, b)| *b)
        .unwrap_or("");
    if !broker_key.is_empty() {
        if let Some(value) = broker.config().overridden.get(broker_key) {
            synonyms.push(synonym(broker_key, value, ConfigSource::StaticBroker));
        }
        if let Some((_, default)) = PROPERTIES.iter().find(|(k, _)| *k == broker_key) {
            synonyms.push(synonym(broker_key, default, ConfigSource::Default));
        }
    }
    synonyms
}

fn synonym(key: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(key))
        .with_value(Some(str_bytes(value)))
        .with_source(source as i8)
}
