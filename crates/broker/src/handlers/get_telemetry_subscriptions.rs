//! GetTelemetrySubscriptions (KIP-714): clients that push their metrics to the broker ask
//! what to send. This broker collects none, so the answer is a subscription with no
//! requested metrics, which tells the client not to push (and PushTelemetry is not
//! advertised). Answering, rather than not advertising the API, keeps clients that probe
//! for it from logging errors. A client without an instance id gets one.

use std::sync::Arc;

use kafka_protocol::messages::{
    ApiKey, GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse,
};
use sluice_protocol::response::Response;
use uuid::Uuid;

use super::{Handler, Reply, RequestContext, ready};
use crate::broker::Broker;

/// How often a client would push, were it asked for metrics (Kafka's default).
const PUSH_INTERVAL_MS: i32 = 300_000;

pub(super) struct GetTelemetrySubscriptions;

impl Handler for GetTelemetrySubscriptions {
    const API: ApiKey = ApiKey::GetTelemetrySubscriptions;
    const VERSIONS: (i16, i16) = (0, 0);
    type Request = GetTelemetrySubscriptionsRequest;

    fn handle(
        _broker: &Arc<Broker>,
        ctx: RequestContext,
        request: GetTelemetrySubscriptionsRequest,
    ) -> Reply {
        ready(respond(&ctx, &request))
    }
}

fn respond(ctx: &RequestContext, request: &GetTelemetrySubscriptionsRequest) -> Option<Response> {
    let instance = if request.client_instance_id.is_nil() {
        Uuid::new_v4()
    } else {
        request.client_instance_id
    };
    ctx.respond(
        &GetTelemetrySubscriptionsResponse::default()
            .with_client_instance_id(instance)
            .with_subscription_id(0)
            .with_accepted_compression_types(Vec::new())
            .with_push_interval_ms(PUSH_INTERVAL_MS)
            .with_telemetry_max_bytes(1 << 20)
            .with_delta_temporality(true)
            .with_requested_metrics(Vec::new()),
    )
}
