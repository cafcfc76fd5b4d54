//! InitProducerId for idempotent producers: a fresh producer id, epoch 0. Transactional
//! producers (a transactional id) are refused until transactions exist.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later};
use crate::broker::Broker;

pub(super) struct InitProducerId;

impl Handler for InitProducerId {
    const API: ApiKey = ApiKey::InitProducerId;
    const VERSIONS: (i16, i16) = (0, 5);
    type Request = InitProducerIdRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: InitProducerIdRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> Option<Response> {
    let response = if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty())
    {
        tracing::info!(client = ?ctx.client_id, "transactional producer refused: transactions are not supported yet");
        InitProducerIdResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    } else {
        match broker.controller().allocate_producer_id().await {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(err) => InitProducerIdResponse::default()
                .with_error_code(err.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        }
    };
    ctx.respond(&response)
}
