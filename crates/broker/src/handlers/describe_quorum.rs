//! DescribeQuorum (KIP-595, KIP-836): the metadata quorum as this node sees it: the leader
//! (the active controller), its epoch (the Raft term), the high watermark (the commit
//! index), and each voter's log end as far as the leader knows. The quorum's log is the
//! partition `__cluster_metadata-0`, as in KRaft; Raft indexes are reported as offsets
//! (index - 1 is the offset of an entry). A node that is not the leader forwards the request
//! to the leader's broker listener (as Kafka's brokers forward it to the active controller:
//! admin tools bootstrap from any broker), and answers NOT_LEADER_OR_FOLLOWER for the
//! partition if the leader is unknown or does not answer (as Kafka's controllers do); a
//! single node is always its own leader.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, ready, str_bytes};
use crate::broker::Broker;
use crate::metadata::METADATA_TOPIC;

pub(super) struct DescribeQuorum;

impl Handler for DescribeQuorum {
    const API: ApiKey = ApiKey::DescribeQuorum;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = DescribeQuorumRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DescribeQuorumRequest) -> Reply {
        let status = broker.quorum_status();
        let forwarded_here =
            ctx.client_id.as_deref() == Some(crate::peer_client::FORWARDED_CLIENT_ID);
        let leader = status
            .leader
            .filter(|l| *l != broker.config().node_id && !forwarded_here)
            .and_then(|l| broker.image().live_broker(l).cloned());
        let Some(leader) = leader else {
            return ready(respond(broker, &ctx, &request));
        };
        let broker = broker.clone();
        later(async move {
            let forwarded = crate::peer_client::call::<_, DescribeQuorumResponse>(
                &leader.host,
                leader.port,
                ApiKey::DescribeQuorum,
                ctx.version,
                &request,
            )
            .await;
            match forwarded {
                Ok(response) => ctx.respond(&response),
                Err(reason) => {
                    tracing::debug!(leader = leader.id, %reason, "DescribeQuorum not forwarded");
                    respond(&broker, &ctx, &request)
                }
            }
        })
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeQuorumRequest,
) -> Option<Response> {
    let status = broker.quorum_status();
    let node = broker.config().node_id;
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = PartitionData::default().with_partition_index(p.partition_index);
                    if &*topic.topic_name.0 != METADATA_TOPIC || p.partition_index != 0 {
                        return answer
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(
                                "the quorum's log is __cluster_metadata-0",
                            )));
                    }
                    if status.leader != Some(node) {
                        return answer
                            .with_error_code(ResponseError::NotLeaderOrFollower.code())
                            .with_leader_id(BrokerId(status.leader.unwrap_or(-1)))
                            .with_leader_epoch(status.term as i32);
                    }
                    let voters = status
                        .voters
                        .iter()
                        .map(|(id, log_end)| {
                            ReplicaState::default()
                                .with_replica_id(BrokerId(*id))
                                .with_log_end_offset(*log_end as i64 - 1)
                                .with_last_fetch_timestamp(-1)
                                .with_last_caught_up_timestamp(-1)
                        })
                        .collect();
                    answer
                        .with_leader_id(BrokerId(node))
                        .with_leader_epoch(status.term as i32)
                        .with_high_watermark(status.commit_index as i64)
                        .with_current_voters(voters)
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let nodes = broker
        .config()
        .cluster
        .controller_listener()
        .map(|listener| {
            vec![
                Node::default()
                    .with_node_id(BrokerId(node))
                    .with_listeners(vec![
                        Listener::default()
                            .with_name(str_bytes(&listener.name))
                            .with_host(str_bytes(&listener.host))
                            .with_port(listener.port),
                    ]),
            ]
        })
        .unwrap_or_default();
    ctx.respond(
        &DescribeQuorumResponse::default()
            .with_topics(topics)
            .with_nodes(nodes),
    )
}
