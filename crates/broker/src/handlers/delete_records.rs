//! DeleteRecords: move a partition's log start offset (-1 means the high watermark). The
//! work (segment deletions, the checkpoint's fsync) runs on a blocking thread, never on the
//! connection's task. Internal topics refuse it (INVALID_TOPIC_EXCEPTION), as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later};
use crate::broker::Broker;
use crate::partition::Origin;

pub(super) struct DeleteRecords;

impl Handler for DeleteRecords {
    const API: ApiKey = ApiKey::DeleteRecords;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = DeleteRecordsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DeleteRecordsRequest) -> Reply {
        let broker = broker.clone();
        later(async move {
            tokio::task::spawn_blocking(move || respond(&broker, &ctx, &request))
                .await
                .unwrap_or_else(|err| {
                    tracing::error!(error = %err, "DeleteRecords failed");
                    None
                })
        })
    }
}

const HIGH_WATERMARK: i64 = -1;

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DeleteRecordsRequest,
) -> Option<Response> {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    let Some(partition) = broker.partition(&name, p.partition_index) else {
                        return result
                            .with_error_code(broker.not_served(&name, p.partition_index).code())
                            .with_low_watermark(-1);
                    };
                    let offset = if p.offset == HIGH_WATERMARK {
                        partition.high_watermark()
                    } else {
                        p.offset
                    };
                    let deleted =
                        broker
                            .partitions()
                            .delete_records(&partition, offset, Origin::Client);
                    match deleted {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(err) => result.with_error_code(err.code()).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&DeleteRecordsResponse::default().with_topics(topics))
}
