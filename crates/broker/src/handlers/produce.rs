//! Produce: each partition's record set goes to the partition layer in request order
//! (validation, append, waking fetches, counting), then the answer: acks=0 never, acks=1
//! once appended, acks=all once every appended batch is durable here (group commit) and
//! held by every in-sync replica (below the high watermark), within the request's
//! `timeout_ms`. A partition whose durability wait fails is answered with
//! KAFKA_STORAGE_ERROR, one whose ISR is below `min.insync.replicas` with
//! NOT_ENOUGH_REPLICAS: nothing that might be lost is acknowledged.
//!
//! A request naming a partition this broker's metadata does not have yet (its client heard
//! of a new topic from a broker further ahead) is held until the metadata arrives, for at
//! most [`METADATA_CATCH_UP`]: answered at once, it would be retried by the client after
//! batches sent behind it had been appended, out of order for a producer without
//! idempotence.
//!
//! Advertised from v0 although the codec decodes only v3+ (v0-v2 are refused on use):
//! librdkafka disables compression when a broker's Produce range does not start at v0.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::response::Response;
use uuid::Uuid;

use super::{Handler, HoldFuture, Reply, RequestContext, later, message, ready};
use crate::broker::Broker;
use crate::errors::ApiError;
use crate::metadata::MetadataImage;
use crate::partition::{Appended, Origin};

/// Each partition's append, by partition index, per topic.
/// A topic as the request named it (name up to v12, ID from v13), and each partition's
/// outcome.
type TopicOutcome = (TopicName, Uuid, Vec<(i32, Result<Appended, ApiError>)>);

/// Topics are named by ID from v13 (KIP-516).
const TOPIC_ID_VERSION: i16 = 13;

/// How long a request naming partitions this broker's metadata lacks waits for them. Brokers
/// apply a committed change within milliseconds of each other when all is well; a broker
/// still without them after this is far behind, or the topic is gone, and the client is
/// answered UNKNOWN_TOPIC_OR_PARTITION.
const METADATA_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// A topic as a request names it (the name shares the request's buffer).
enum TopicRef {
    Name(StrBytes),
    Id(Uuid),
}

impl TopicRef {
    fn has_partition(&self, image: &MetadataImage, partition: i32) -> bool {
        let name = match self {
            TopicRef::Name(name) => Some(name.as_str()),
            TopicRef::Id(id) => image.topic_names_by_id.get(id).map(String::as_str),
        };
        name.is_some_and(|name| image.partition(name, partition).is_some())
    }
}

pub(super) struct Produce;

impl Handler for Produce {
    const API: ApiKey = ApiKey::Produce;
    const VERSIONS: (i16, i16) = (0, 13);
    type Request = ProduceRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: ProduceRequest) -> Reply {
        let acks = request.acks;
        // How long acks=all waits for the in-sync replicas (Kafka's `timeout_ms`).
        let timeout =
            std::time::Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0))
                .max(std::time::Duration::from_millis(1));
        let mut results: Vec<TopicOutcome> = Vec::new();
        let image = (ctx.version >= TOPIC_ID_VERSION).then(|| broker.image());
        for topic in request.topic_data {
            let name = match &image {
                Some(image) => image.topic_names_by_id.get(&topic.topic_id).cloned(),
                None => Some(topic.name.0.to_string()),
            };
            let expected_id = image.is_some().then_some(topic.topic_id);
            let mut partitions = Vec::with_capacity(topic.partition_data.len());
            for data in topic.partition_data {
                let outcome = if request.transactional_id.is_some() {
                    Err(ApiError::new(
                        ResponseError::TransactionalIdAuthorizationFailed,
                        "transactions are not supported yet",
                    ))
                } else if !matches!(acks, -1..=1) {
                    Err(ApiError::new(
                        ResponseError::InvalidRequiredAcks,
                        format!("acks={acks}"),
                    ))
                } else if let Some(name) = &name {
                    append(
                        broker,
                        name,
                        expected_id,
                        data.index,
                        data.records.as_deref(),
                        acks == -1,
                    )
                    .map(|appended| appended.with_timeout(timeout))
                } else {
                    Err(ApiError::new(
                        ResponseError::UnknownTopicId,
                        format!("no topic with ID {}", topic.topic_id),
                    ))
                };
                partitions.push((data.index, outcome));
            }
            results.push((topic.name, topic.topic_id, partitions));
        }
        if acks == 0 {
            return ready(None);
        }
        later(async move { respond(&ctx, results).await })
    }

    fn hold(
        broker: &Arc<Broker>,
        ctx: &RequestContext,
        request: &ProduceRequest,
    ) -> Option<HoldFuture> {
        // A quorum of one applies each change before any client can hear of it.
        if !broker.config().cluster.has_peers() {
            return None;
        }
        let image = broker.image();
        let mut missing = Vec::new();
        for topic in &request.topic_data {
            let named = if ctx.version >= TOPIC_ID_VERSION {
                TopicRef::Id(topic.topic_id)
            } else {
                TopicRef::Name(topic.name.0.clone())
            };
            let absent: Vec<i32> = topic
                .partition_data
                .iter()
                .map(|data| data.index)
                .filter(|index| !named.has_partition(&image, *index))
                .collect();
            if !absent.is_empty() {
                missing.push((named, absent));
            }
        }
        if missing.is_empty() {
            return None;
        }
        let broker = broker.clone();
        let client = ctx.client_id.clone();
        Some(Box::pin(async move {
            let arrived = broker
                .await_image(METADATA_CATCH_UP, |image| {
                    missing.iter().all(|(topic, partitions)| {
                        partitions.iter().all(|p| topic.has_partition(image, *p))
                    })
                })
                .await;
            if !arrived {
                tracing::debug!(
                    ?client,
                    "a produce named partitions this broker's metadata still lacks"
                );
            }
        }))
    }
}

/// `topic_id` is the ID a v13+ request named the topic by: the partition found under the
/// ID's name must still belong to it (the topic may have been recreated since the lookup).
fn append(
    broker: &Broker,
    topic: &str,
    topic_id: Option<Uuid>,
    partition: i32,
    records: Option<&[u8]>,
    durable: bool,
) -> Result<Appended, ApiError> {
    let target = broker.partition(topic, partition).ok_or_else(|| {
        let refusal = broker.not_served(topic, partition);
        let reason = if refusal == ResponseError::NotLeaderOrFollower {
            "this broker does not lead"
        } else {
            "no"
        };
        ApiError::new(refusal, format!("{reason} partition {topic}-{partition}"))
    })?;
    if let Some(id) = topic_id
        && id != target.topic_id()
    {
        return Err(ApiError::new(
            ResponseError::UnknownTopicId,
            format!("topic {topic} was recreated: ID {id} is gone"),
        ));
    }
    let records =
        records.ok_or_else(|| ApiError::new(ResponseError::CorruptMessage, "no records"))?;
    // The log patches offsets into the batches, so it needs its own copy of the bytes (the
    // request buffer is shared by every partition of the request).
    let mut bytes = BytesMut::from(records);
    target.append(&mut bytes, Origin::Client, durable)
}

fn failed(
    ctx: &RequestContext,
    response: PartitionProduceResponse,
    err: &ApiError,
) -> PartitionProduceResponse {
    let response = response.with_error_code(err.code()).with_base_offset(-1);
    if ctx.version < 8 {
        return response;
    }
    // KIP-467: name the record at fault, so that a client can fail only it.
    let record_errors = err
        .record
        .map(|index| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(index)
                .with_batch_index_error_message(message(err.message.clone()))
        })
        .into_iter()
        .collect();
    response
        .with_error_message(message(err.message.clone()))
        .with_record_errors(record_errors)
}

async fn respond(ctx: &RequestContext, results: Vec<TopicOutcome>) -> Option<Response> {
    let mut topics = Vec::with_capacity(results.len());
    for (name, topic_id, partitions) in results {
        let mut responses = Vec::with_capacity(partitions.len());
        for (index, outcome) in partitions {
            let response = PartitionProduceResponse::default().with_index(index);
            let durable = match outcome {
                Ok(appended) => appended.durable().await,
                Err(err) => Err(err),
            };
            responses.push(match durable {
                Ok(info) => {
                    let response = response
                        .with_base_offset(info.first_offset)
                        .with_log_append_time_ms(info.log_append_time);
                    if ctx.version >= 5 {
                        response.with_log_start_offset(info.log_start_offset)
                    } else {
                        response
                    }
                }
                Err(err) => failed(ctx, response, &err),
            });
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(responses),
        );
    }
    ctx.respond(&ProduceResponse::default().with_responses(topics))
}
