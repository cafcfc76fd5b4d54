//! OffsetForLeaderEpoch: for each partition, the largest leader epoch at or below the one
//! asked for, and the offset where it ends (where the next epoch starts, or the log end for
//! the current epoch). A follower truncates its log with it after a leader change; a
//! consumer uses it to detect truncation (KIP-320).
//!
//! The answer comes from the partition's leader-epoch history (`sluice_log::LeaderEpochs`,
//! checkpointed in `leader-epoch-checkpoint`): the current epoch ends at the log end, an
//! older one where the next began, an epoch newer than the partition's has no answer (epoch
//! and offset -1), as in Kafka. The request's current leader epoch is checked first
//! (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH).

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready};
use crate::broker::Broker;

pub(super) struct OffsetForLeaderEpoch;

impl Handler for OffsetForLeaderEpoch {
    const API: ApiKey = ApiKey::OffsetForLeaderEpoch;
    const VERSIONS: (i16, i16) = (2, 4);
    type Request = OffsetForLeaderEpochRequest;

    fn handle(
        broker: &Arc<Broker>,
        ctx: RequestContext,
        request: OffsetForLeaderEpochRequest,
    ) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

/// No epoch, or no offset: what a partition without an answer reports.
const UNDEFINED: i32 = -1;

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &OffsetForLeaderEpochRequest,
) -> Option<Response> {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = EpochEndOffset::default().with_partition(p.partition);
                    let Some(partition) = broker.partition(&topic.topic.0, p.partition) else {
                        return answer
                            .with_error_code(broker.not_served(&topic.topic.0, p.partition).code())
                            .with_leader_epoch(UNDEFINED)
                            .with_end_offset(i64::from(UNDEFINED));
                    };
                    if let Err(error) = partition.check_leader_epoch(p.current_leader_epoch) {
                        return answer
                            .with_error_code(error.code())
                            .with_leader_epoch(UNDEFINED)
                            .with_end_offset(i64::from(UNDEFINED));
                    }
                    let (epoch, end) = partition
                        .end_offset_for_epoch(p.leader_epoch)
                        .unwrap_or((UNDEFINED, i64::from(UNDEFINED)));
                    answer.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}
