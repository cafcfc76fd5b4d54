//! AlterConfigs (the legacy, replace-everything form) for topics. The broker's own
//! configuration is static: it is set in its config file.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use sluice_protocol::response::Response;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{Handler, Reply, RequestContext, later, message};
use crate::broker::Broker;
use crate::errors::ApiError;

pub(super) struct AlterConfigs;

impl Handler for AlterConfigs {
    const API: ApiKey = ApiKey::AlterConfigs;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = AlterConfigsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: AlterConfigsRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: AlterConfigsRequest,
) -> Option<Response> {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => {
                let changes = resource
                    .configs
                    .iter()
                    .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect();
                broker
                    .alter_topic_configs(
                        resource.resource_name.as_str(),
                        changes,
                        true,
                        request.validate_only,
                    )
                    .await
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
    ctx.respond(&AlterConfigsResponse::default().with_responses(responses))
}

pub(super) fn static_broker_config() -> ApiError {
    ApiError::new(
        ResponseError::InvalidConfig,
        "broker configuration is static in Sluice: set it in the config file, environment or flags and restart",
    )
}
