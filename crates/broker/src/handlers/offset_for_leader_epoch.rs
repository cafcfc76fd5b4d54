//! OffsetForLeaderEpoch: for each partition, the largest leader epoch at or below the one
//! asked for, and the offset where it ends (where the next epoch starts, or the log end for
//! the current epoch). A follower truncates its log with it after a leader change; a
//! consumer uses it to detect truncation (KIP-320).
//!
//! A single node has led every partition since its creation: the epoch history is one entry,
//! [`INITIAL_LEADER_EPOCH`] from offset 0, as soon as anything was written. So epoch 0 (or
//! any epoch above it that the client does not know to be newer) ends at the log end; an
//! epoch newer than the partition's, or a partition never written, has no answer (epoch and
//! offset -1), as in Kafka. The request's current leader epoch is checked first
//! (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready};
use crate::broker::Broker;
use crate::partition::{INITIAL_LEADER_EPOCH, Partition};

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
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_epoch(UNDEFINED)
                            .with_end_offset(i64::from(UNDEFINED));
                    };
                    if let Err(error) = partition.check_leader_epoch(p.current_leader_epoch) {
                        return answer
                            .with_error_code(error.code())
                            .with_leader_epoch(UNDEFINED)
                            .with_end_offset(i64::from(UNDEFINED));
                    }
                    let (epoch, end) = end_of_epoch(&partition, p.leader_epoch);
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

/// The largest epoch at or below `requested` and where it ends.
fn end_of_epoch(partition: &Partition, requested: i32) -> (i32, i64) {
    let log_end = partition.offsets().log_end_offset;
    let written = log_end > 0;
    let current = partition.leader_epoch();
    debug_assert_eq!(
        current, INITIAL_LEADER_EPOCH,
        "one epoch per partition on one node"
    );
    if !written || requested < INITIAL_LEADER_EPOCH || requested > current {
        return (UNDEFINED, i64::from(UNDEFINED));
    }
    (current, log_end)
}
