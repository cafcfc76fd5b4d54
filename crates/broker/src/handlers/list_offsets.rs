//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local
//! (-4, v8: every segment is local here, so the earliest), latest tiered (-5, v9: nothing
//! is tiered, so no offset), or the first offset at or after a timestamp. A request naming
//! a current leader epoch (v4+) is checked against the partition's (FENCED_LEADER_EPOCH,
//! UNKNOWN_LEADER_EPOCH). v10's timeout is met at once: a single node waits for nothing.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready};
use crate::broker::Broker;
use crate::errors::log_error_code;

pub(super) struct ListOffsets;

impl Handler for ListOffsets {
    const API: ApiKey = ApiKey::ListOffsets;
    const VERSIONS: (i16, i16) = (1, 10);
    type Request = ListOffsetsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: ListOffsetsRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &ListOffsetsRequest,
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
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let Some(partition) = broker.partition(&name, p.partition_index) else {
                        return response
                            .with_error_code(broker.not_served(&name, p.partition_index).code());
                    };
                    if ctx.version >= 4
                        && let Err(error) = partition.check_leader_epoch(p.current_leader_epoch)
                    {
                        return response.with_error_code(error.code());
                    }
                    let log = &partition;
                    let found = match p.timestamp {
                        LATEST => Ok(Some((log.offsets().high_watermark, -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((log.offsets().log_start_offset, -1))),
                        LATEST_TIERED => Ok(None),
                        MAX_TIMESTAMP => log
                            .max_timestamp_offset()
                            .map(|f| f.map(|f| (f.offset, f.timestamp))),
                        ts if ts >= 0 => log
                            .offset_for_timestamp(ts)
                            .map(|f| f.map(|f| (f.offset, f.timestamp))),
                        _ => {
                            return response.with_error_code(ResponseError::InvalidRequest.code());
                        }
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            let response = response.with_offset(offset).with_timestamp(timestamp);
                            if ctx.version >= 4 {
                                response.with_leader_epoch(partition.leader_epoch())
                            } else {
                                response
                            }
                        }
                        Ok(None) => response.with_offset(-1).with_timestamp(-1),
                        Err(err) => response.with_error_code(log_error_code(&err).code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&ListOffsetsResponse::default().with_topics(topics))
}
