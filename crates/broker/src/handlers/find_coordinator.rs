//! FindCoordinator: a group's coordinator is the broker leading the group's partition of
//! `__consumer_offsets`. The first group lookup creates the topic, as in Kafka. Transaction
//! coordinators do not exist yet.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, message, str_bytes};
use crate::broker::Broker;
use crate::groups::OFFSETS_TOPIC;
use crate::groups::records::partition_for;
use crate::metadata::{BrokerImage, NO_LEADER};

pub(super) struct FindCoordinator;

impl Handler for FindCoordinator {
    const API: ApiKey = ApiKey::FindCoordinator;
    const VERSIONS: (i16, i16) = (0, 6);
    type Request = FindCoordinatorRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: FindCoordinatorRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

const GROUP: i8 = 0;

/// The live broker leading `group`'s partition of `__consumer_offsets`.
fn coordinator_of(broker: &Broker, group: &str) -> Result<BrokerImage, (ResponseError, String)> {
    let image = broker.image();
    let unavailable = |why: String| (ResponseError::CoordinatorNotAvailable, why);
    let topic = image
        .topic(OFFSETS_TOPIC)
        .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC} does not exist yet")))?;
    let partition = partition_for(group, topic.partitions);
    let leader = topic.state(partition).map_or(NO_LEADER, |s| s.leader);
    image.live_broker(leader).cloned().ok_or_else(|| {
        unavailable(format!(
            "{OFFSETS_TOPIC}-{partition} has no live leader (broker {leader})"
        ))
    })
}
const TRANSACTION: i8 = 1;

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> Option<Response> {
    let keys: Vec<StrBytes> = if ctx.version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = if request.key_type == TRANSACTION {
            Err((
                ResponseError::CoordinatorNotAvailable,
                "transaction coordinators are not supported yet".to_string(),
            ))
        } else if request.key_type != GROUP {
            // 2 is a share group (v6, KIP-932): not served.
            Err((
                ResponseError::InvalidRequest,
                format!("coordinator key type {} is not supported", request.key_type),
            ))
        } else if key.is_empty() {
            Err((ResponseError::InvalidGroupId, "empty group id".to_string()))
        } else {
            match broker.ensure_offsets_topic().await {
                Ok(()) => coordinator_of(broker, &key),
                Err(e) => Err((ResponseError::CoordinatorNotAvailable, e.message)),
            }
        };
        let coordinator = Coordinator::default().with_key(key);
        coordinators.push(match outcome {
            Ok(found) => coordinator
                .with_node_id(BrokerId(found.id))
                .with_host(str_bytes(&found.host))
                .with_port(i32::from(found.port)),
            Err((code, text)) => coordinator
                .with_error_code(code.code())
                .with_error_message(message(text))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        });
    }
    let response = if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let c = coordinators.pop().expect("one key");
        let response = FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port);
        if ctx.version >= 1 {
            response.with_error_message(c.error_message)
        } else {
            response
        }
    };
    ctx.respond(&response)
}
