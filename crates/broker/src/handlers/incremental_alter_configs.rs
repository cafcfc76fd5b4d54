//! IncrementalAlterConfigs for topics: SET, DELETE, APPEND and SUBTRACT (list values).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use sluice_protocol::response::Response;

use super::alter_configs::static_broker_config;
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{Handler, Reply, RequestContext, later, message};
use crate::broker::Broker;
use crate::errors::ApiError;

pub(super) struct IncrementalAlterConfigs;

impl Handler for IncrementalAlterConfigs {
    const API: ApiKey = ApiKey::IncrementalAlterConfigs;
    const VERSIONS: (i16, i16) = (0, 1);
    type Request = IncrementalAlterConfigsRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: IncrementalAlterConfigsRequest,
    ) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> Option<Response> {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let name = resource.resource_name.to_string();
                match changes(broker, &name, &resource.configs) {
                    Ok(changes) => {
                        broker
                            .alter_topic_configs(&name, changes, false, request.validate_only)
                            .await
                    }
                    Err(err) => Err(err),
                }
            }
            RESOURCE_BROKER => Err(static_broker_config()),
            other => Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        };
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(err) => response
                .with_error_code(err.code())
                .with_error_message(message(err.message)),
        });
    }
    ctx.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}

/// Turns the operations into new values, reading list values from the current overrides
/// (or the broker default) for APPEND and SUBTRACT.
fn changes(
    broker: &Broker,
    topic: &str,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let image = broker.image();
    let current = image
        .topic(topic)
        .map(|t| t.configs.clone())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        let list = |key: &str| -> Vec<String> {
            let effective = crate::topic_config::describe(broker.config(), &current)
                .into_iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, v, _)| v)
                .unwrap_or_default();
            effective
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let new_value = match op.config_operation {
            SET => Some(value.ok_or_else(|| {
                ApiError::new(
                    ResponseError::InvalidConfig,
                    format!("{key}: SET needs a value"),
                )
            })?),
            DELETE => None,
            APPEND | SUBTRACT if key != "cleanup.policy" => {
                return Err(ApiError::new(
                    ResponseError::InvalidConfig,
                    format!("{key} is not a list"),
                ));
            }
            APPEND => {
                let mut items = list(&key);
                for item in value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                Some(items.join(","))
            }
            SUBTRACT => {
                let remove: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect();
                Some(
                    list(&key)
                        .into_iter()
                        .filter(|i| !remove.contains(i))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            }
            other => {
                return Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other}"),
                ));
            }
        };
        out.push((key, new_value));
    }
    Ok(out)
}
