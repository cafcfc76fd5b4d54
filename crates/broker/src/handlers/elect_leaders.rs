//! ElectLeaders (KIP-460), v0-v2: moves partitions (all of them when the request names
//! none) to their preferred leader, the first replica, where it is live and in sync.
//! Unclean election is refused: an out-of-sync replica never leads here (it would give up
//! acknowledged writes), so each partition is answered ELIGIBLE_LEADERS_NOT_AVAILABLE, or
//! ELECTION_NOT_NEEDED when it has a leader.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, later, message, topic_name};
use crate::broker::Broker;
use crate::controller::{NoElection, PartitionKey};

/// A partition not elected: the error, and a message when there is more to say.
type Refusal = (ResponseError, Option<String>);
use crate::metadata::NO_LEADER;

pub(super) struct ElectLeaders;

/// Kafka's election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

impl Handler for ElectLeaders {
    const API: ApiKey = ApiKey::ElectLeaders;
    const VERSIONS: (i16, i16) = (0, 2);
    type Request = ElectLeadersRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: ElectLeadersRequest) -> Reply {
        let broker = broker.clone();
        later(async move { run(&broker, &ctx, request).await })
    }
}

async fn run(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ElectLeadersRequest,
) -> Option<Response> {
    let named: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    // v0 has only preferred elections (no type field).
    let election = if ctx.version == 0 {
        PREFERRED
    } else {
        request.election_type
    };
    let mut outcome: BTreeMap<PartitionKey, Refusal> = BTreeMap::new();
    let image = broker.image();
    match election {
        PREFERRED => match broker
            .controller()
            .elect_preferred_leaders(named.clone())
            .await
        {
            Ok(left) => {
                for (partition, why) in left {
                    let error = match why {
                        NoElection::NotNeeded => ResponseError::ElectionNotNeeded,
                        NoElection::PreferredNotAvailable => {
                            ResponseError::PreferredLeaderNotAvailable
                        }
                        NoElection::Unknown => ResponseError::UnknownTopicOrPartition,
                    };
                    outcome.insert(partition, (error, None));
                }
            }
            Err(err) => {
                let response = ElectLeadersResponse::default()
                    .with_error_code(err.code())
                    .with_replica_election_results(Vec::new());
                return ctx.respond(&response);
            }
        },
        UNCLEAN => {
            for (topic, partition) in named.clone().unwrap_or_default() {
                let error = match image.partition(&topic, partition) {
                    None => ResponseError::UnknownTopicOrPartition,
                    Some(state) if state.leader != NO_LEADER => ResponseError::ElectionNotNeeded,
                    Some(_) => ResponseError::EligibleLeadersNotAvailable,
                };
                let reason =
                    "unclean leader election is not supported: only an in-sync replica leads";
                outcome.insert((topic, partition), (error, Some(reason.to_string())));
            }
        }
        other => {
            let response = ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_replica_election_results(Vec::new());
            tracing::debug!(election_type = other, "unknown election type");
            return ctx.respond(&response);
        }
    }
    // Kafka answers every named partition (an elected one without error); with none
    // named, only the partitions it did not elect.
    let elected: Vec<_> = named
        .iter()
        .flatten()
        .filter(|p| !outcome.contains_key(*p))
        .map(|p| (p.clone(), None))
        .collect();
    let answers: BTreeMap<PartitionKey, Option<Refusal>> = outcome
        .into_iter()
        .map(|(p, failed)| (p, Some(failed)))
        .chain(elected)
        .collect();
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, partition), failed) in answers {
        let result = PartitionResult::default().with_partition_id(partition);
        let result = match failed {
            None => result,
            Some((error, reason)) => result
                .with_error_code(error.code())
                .with_error_message(reason.and_then(message)),
        };
        by_topic.entry(topic).or_default().push(result);
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(topic_name(&topic))
                .with_partition_result(partitions)
        })
        .collect();
    ctx.respond(&ElectLeadersResponse::default().with_replica_election_results(results))
}
