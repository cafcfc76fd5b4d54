//! Produce: validate and append each partition's record set in request order, then answer:
//! acks=0 never, acks=1 once appended, acks=all once every appended batch is durable
//! (group commit). A partition whose durability wait fails is answered with
//! KAFKA_STORAGE_ERROR: nothing that might be lost is acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_log::{DurableWait, LogError};
use sluice_record::{Batches, RecordError};

use super::{Dispatch, RequestContext, message};
use crate::broker::{Broker, LEADER_EPOCH};
use crate::errors::ApiError;

enum Outcome {
    Appended {
        base_offset: i64,
        log_append_time: i64,
        log_start_offset: i64,
        durable: Option<DurableWait>,
    },
    Failed(ApiError),
}

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: ProduceRequest) -> Dispatch {
    let acks = request.acks;
    let mut results: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Outcome)>)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let outcome = if request.transactional_id.is_some() {
                Outcome::Failed(ApiError::new(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "transactions are not supported yet",
                ))
            } else if !matches!(acks, -1..=1) {
                Outcome::Failed(ApiError::new(
                    ResponseError::InvalidRequiredAcks,
                    format!("acks={acks}"),
                ))
            } else {
                append(
                    broker,
                    &name,
                    data.index,
                    data.records.as_deref(),
                    acks == -1,
                )
            };
            partitions.push((data.index, outcome));
        }
        results.push((topic.name, partitions));
    }
    if acks == 0 {
        return Dispatch::Respond(Box::pin(std::future::ready(None)));
    }
    Dispatch::Respond(Box::pin(async move { respond(&ctx, results).await }))
}

fn append(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    records: Option<&[u8]>,
    durable: bool,
) -> Outcome {
    if Broker::is_internal(topic) {
        return Outcome::Failed(ApiError::new(
            ResponseError::InvalidTopicException,
            format!("cannot write to internal topic {topic}"),
        ));
    }
    let Some(target) = broker.partition(topic, partition) else {
        return Outcome::Failed(ApiError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {topic}-{partition}"),
        ));
    };
    let Some(records) = records else {
        return Outcome::Failed(ApiError::new(ResponseError::CorruptMessage, "no records"));
    };
    // Control batches are written by the transaction coordinator, never by clients.
    for batch in Batches::new(records).flatten() {
        if batch.is_control() {
            return Outcome::Failed(ApiError::new(
                ResponseError::InvalidRecord,
                "clients may not write control batches",
            ));
        }
    }
    // The log patches offsets into the batch, so it needs its own copy of the bytes.
    let mut bytes = BytesMut::from(records);
    let counters = &target.counters;
    match target.log.append(&mut bytes, LEADER_EPOCH) {
        Ok(info) => {
            if !info.duplicate {
                target.appended.notify_waiters();
                counters
                    .bytes_in
                    .fetch_add(info.bytes as u64, Ordering::Relaxed);
                counters.messages_in.fetch_add(
                    (info.last_offset - info.first_offset + 1) as u64,
                    Ordering::Relaxed,
                );
            }
            Outcome::Appended {
                base_offset: info.first_offset,
                log_append_time: info.log_append_time,
                log_start_offset: info.log_start_offset,
                durable: durable.then(|| target.log.wait_durable(info.last_offset + 1)),
            }
        }
        Err(err) => {
            counters.produce_errors.fetch_add(1, Ordering::Relaxed);
            if !matches!(err, LogError::InvalidBatch(RecordError::CrcMismatch { .. })) {
                tracing::debug!(partition = %target.tp, error = %err, "produce refused");
            }
            Outcome::Failed(ApiError::from(&err))
        }
    }
}

fn failed(
    ctx: &RequestContext,
    response: PartitionProduceResponse,
    err: &ApiError,
) -> PartitionProduceResponse {
    let response = response.with_error_code(err.code()).with_base_offset(-1);
    if ctx.version >= 8 {
        response.with_error_message(message(err.message.clone()))
    } else {
        response
    }
}

async fn respond(
    ctx: &RequestContext,
    results: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Outcome)>)>,
) -> Option<sluice_protocol::response::Response> {
    let mut topics = Vec::with_capacity(results.len());
    for (name, partitions) in results {
        let mut responses = Vec::with_capacity(partitions.len());
        for (index, outcome) in partitions {
            let response = PartitionProduceResponse::default().with_index(index);
            responses.push(match outcome {
                Outcome::Appended {
                    base_offset,
                    log_append_time,
                    log_start_offset,
                    durable,
                } => {
                    let synced = match durable {
                        Some(wait) => wait.await,
                        None => Ok(()),
                    };
                    match synced {
                        Ok(()) => {
                            let response = response
                                .with_base_offset(base_offset)
                                .with_log_append_time_ms(log_append_time);
                            if ctx.version >= 5 {
                                response.with_log_start_offset(log_start_offset)
                            } else {
                                response
                            }
                        }
                        Err(err) => failed(ctx, response, &ApiError::from(&err)),
                    }
                }
                Outcome::Failed(err) => failed(ctx, response, &err),
            });
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(responses),
        );
    }
    ctx.respond(&ProduceResponse::default().with_responses(topics))
}
