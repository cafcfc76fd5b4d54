//! One module per Kafka API, and the table that serves them.
//!
//! Each handler file declares what it serves with one [`Handler`] implementation: the API
//! key, the advertised version range, the request type, and one `handle` function with the
//! same signature everywhere. [`APIS`] lists the handlers; ApiVersions and [`dispatch`] are
//! derived from it, so an API is served exactly when it is advertised.
//!
//! A handler does the work that must happen in request order (appends) before it returns;
//! waiting (durability, long polls, rebalances) happens in the future it returns.

mod alter_configs;
mod alter_partition_reassignments;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_quorum;
mod describe_topic_partitions;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod get_telemetry_subscriptions;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_protocol::header::Request;
use sluice_protocol::response::{self, Response};

use crate::broker::Broker;

/// The eventual response to a request; `None` when the request gets no response
/// (Produce with acks=0).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<Response>> + Send>>;

/// What a handler answers: a response ready now, or one to wait for.
pub type Reply = ResponseFuture;

/// A response that is ready.
pub fn ready(response: Option<Response>) -> Reply {
    Box::pin(std::future::ready(response))
}

/// A response that takes waiting.
pub fn later(future: impl Future<Output = Option<Response>> + Send + 'static) -> Reply {
    Box::pin(future)
}

/// Completes when a held request may be dispatched again (see [`Dispatch::Hold`]).
pub type HoldFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the connection does with a request.
pub enum Dispatch {
    Respond(ResponseFuture),
    /// The request names what this broker does not know yet but its client learned from a
    /// broker further ahead in the metadata log: the connection reads nothing more until
    /// the future completes, then dispatches the request again with
    /// [`Attempt::AfterHold`] (served whatever it names), so that the connection's
    /// requests still take effect in the order they were sent.
    Hold(HoldFuture),
    /// Close the connection; the reason is logged.
    Close(String),
}

/// Identifies the request a handler answers.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's address as Kafka reports it in group descriptions: `/ip`.
    pub client_host: String,
}

impl RequestContext {
    /// Encodes `body` as this request's response.
    pub fn respond<T: Encodable>(&self, body: &T) -> Option<Response> {
        match response::encode(self.api_key, self.version, self.correlation_id, body) {
            Ok(response) => Some(response),
            Err(err) => {
                // A value the version cannot carry: a bug. The client times out rather than
                // receiving a frame it cannot parse.
                tracing::error!(error = %err, "response encoding failed");
                None
            }
        }
    }
}

/// Whether a request may still be held (see [`Dispatch::Hold`]): once only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    First,
    AfterHold,
}

/// One Kafka API, as its handler file declares it.
pub(crate) trait Handler {
    const API: ApiKey;
    /// The advertised range, lowest and highest. Served are the advertised versions the
    /// codec can also decode (Produce v0-v2 are advertised, not served: see `produce.rs`).
    const VERSIONS: (i16, i16);
    /// `Encodable + Default` only so that the table test can check the codec reads every
    /// advertised version.
    type Request: Decodable + Encodable + Default + Send + 'static;
    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: Self::Request) -> Reply;

    /// Asked before a request's first `handle`: `Some` holds it (see [`Dispatch::Hold`]).
    /// Only a request whose effects are ordered (Produce) has a reason to.
    fn hold(
        _broker: &Arc<Broker>,
        _ctx: &RequestContext,
        _request: &Self::Request,
    ) -> Option<HoldFuture> {
        None
    }
}

/// A row of the table: an API and how to serve it.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    serve: fn(&Arc<Broker>, RequestContext, &Request, Attempt) -> Dispatch,
    /// Whether the codec's request type has this version (the crate's `ApiKey` ranges can
    /// run ahead of its message types: kafka-protocol 0.18 lists OffsetCommit v10, whose
    /// request it cannot read). A unit test checks it for every advertised version, so
    /// dispatch does not pay for it on every request.
    #[cfg(test)]
    codec_reads: fn(i16) -> bool,
}

impl Api {
    /// Whether this version is served: advertised, and decodable by the codec.
    pub fn serves(&self, version: i16) -> bool {
        let codec = self.key.valid_versions();
        (self.min_version..=self.max_version).contains(&version)
            && (codec.min..=codec.max).contains(&version)
    }
}

fn serve<H: Handler>(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    request: &Request,
    attempt: Attempt,
) -> Dispatch {
    let decoded = match request.decode::<H::Request>() {
        Ok(decoded) => decoded,
        Err(err) => return Dispatch::Close(format!("{err} (client {:?})", ctx.client_id)),
    };
    if attempt == Attempt::First
        && let Some(hold) = H::hold(broker, &ctx, &decoded)
    {
        return Dispatch::Hold(hold);
    }
    Dispatch::Respond(H::handle(broker, ctx, decoded))
}

const fn api<H: Handler>() -> Api {
    Api {
        key: H::API,
        min_version: H::VERSIONS.0,
        max_version: H::VERSIONS.1,
        serve: serve::<H>,
        #[cfg(test)]
        codec_reads: codec_reads::<H::Request>,
    }
}

#[cfg(test)]
fn codec_reads<R: Encodable + Default>(version: i16) -> bool {
    R::default()
        .encode(&mut bytes::BytesMut::new(), version)
        .is_ok()
}

/// Every API the broker serves. ApiVersions advertises exactly these.
pub const APIS: &[Api] = &[
    api::<produce::Produce>(),
    api::<fetch::Fetch>(),
    api::<list_offsets::ListOffsets>(),
    api::<metadata::Metadata>(),
    api::<api_versions::ApiVersions>(),
    api::<create_topics::CreateTopics>(),
    api::<delete_topics::DeleteTopics>(),
    api::<delete_records::DeleteRecords>(),
    api::<describe_configs::DescribeConfigs>(),
    api::<alter_configs::AlterConfigs>(),
    api::<describe_log_dirs::DescribeLogDirs>(),
    api::<create_partitions::CreatePartitions>(),
    api::<incremental_alter_configs::IncrementalAlterConfigs>(),
    api::<describe_cluster::DescribeCluster>(),
    api::<describe_quorum::DescribeQuorum>(),
    api::<find_coordinator::FindCoordinator>(),
    api::<join_group::JoinGroup>(),
    api::<sync_group::SyncGroup>(),
    api::<heartbeat::Heartbeat>(),
    api::<leave_group::LeaveGroup>(),
    api::<offset_commit::OffsetCommit>(),
    api::<offset_fetch::OffsetFetch>(),
    api::<list_groups::ListGroups>(),
    api::<describe_groups::DescribeGroups>(),
    api::<delete_groups::DeleteGroups>(),
    api::<offset_delete::OffsetDelete>(),
    api::<init_producer_id::InitProducerId>(),
    api::<offset_for_leader_epoch::OffsetForLeaderEpoch>(),
    api::<describe_producers::DescribeProducers>(),
    api::<describe_topic_partitions::DescribeTopicPartitions>(),
    api::<elect_leaders::ElectLeaders>(),
    api::<alter_partition_reassignments::AlterPartitionReassignments>(),
    api::<list_partition_reassignments::ListPartitionReassignments>(),
    api::<get_telemetry_subscriptions::GetTelemetrySubscriptions>(),
];

/// The table row of `key`, if the broker serves that API at all.
pub fn find(key: ApiKey) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}

/// Every API with its advertised (lowest, highest) version, as ApiVersions answers.
pub fn advertised_apis() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    APIS.iter()
        .map(|api| (api.key, api.min_version, api.max_version))
}

/// Whether a request of this key and version is served.
pub fn servable(key: ApiKey, version: i16) -> bool {
    find(key).is_some_and(|api| api.serves(version))
}

/// Routes a request to its handler.
pub fn dispatch(
    broker: &Arc<Broker>,
    request: &Request,
    peer: std::net::SocketAddr,
    attempt: Attempt,
) -> Dispatch {
    let ctx = RequestContext {
        api_key: request.api_key,
        version: request.api_version,
        correlation_id: request.correlation_id,
        client_id: request.client_id.clone(),
        client_host: format!("/{}", peer.ip()),
    };
    match find(ctx.api_key) {
        Some(api) if api.serves(ctx.version) => (api.serve)(broker, ctx, request, attempt),
        // KIP-511: answer with the supported range so the client can retry lower.
        _ if ctx.api_key == ApiKey::ApiVersions => {
            Dispatch::Respond(ready(api_versions::unsupported_version(&ctx)))
        }
        _ => Dispatch::Close(format!(
            "{:?} v{} is not supported (client {:?})",
            ctx.api_key, ctx.version, ctx.client_id
        )),
    }
}

/// Serves one request frame (without its length prefix) as a connection does: header, version
/// check, handler. `None` when the connection would be closed, or the request gets no
/// response. For the handler fuzz target and its smoke test: one call per input, no socket.
#[doc(hidden)]
pub async fn serve_frame(
    broker: &Arc<Broker>,
    frame: bytes::Bytes,
    peer: std::net::SocketAddr,
) -> Option<Response> {
    let request = sluice_protocol::header::parse_request(frame).ok()?;
    let mut dispatched = dispatch(broker, &request, peer, Attempt::First);
    if let Dispatch::Hold(_) = dispatched {
        // Not waited for: the metadata will not change between two inputs.
        dispatched = dispatch(broker, &request, peer, Attempt::AfterHold);
    }
    match dispatched {
        Dispatch::Respond(reply) => reply.await,
        Dispatch::Close(_) | Dispatch::Hold(_) => None,
    }
}

/// `Some(StrBytes)` from a message, for `error_message` fields.
pub(crate) fn message(text: impl Into<String>) -> Option<kafka_protocol::protocol::StrBytes> {
    Some(kafka_protocol::protocol::StrBytes::from_string(text.into()))
}

pub(crate) fn str_bytes(text: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(text.to_string())
}

pub(crate) fn topic_name(text: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent_with_the_codec() {
        for (i, api) in APIS.iter().enumerate() {
            assert!(
                APIS[..i].iter().all(|other| other.key != api.key),
                "{:?} listed twice",
                api.key
            );
            let codec = api.key.valid_versions();
            assert!(api.min_version <= api.max_version, "{:?}", api.key);
            assert!(
                api.max_version <= codec.max,
                "{:?} advertises v{} beyond the codec",
                api.key,
                api.max_version
            );
            let served_from = if api.key == ApiKey::Produce {
                3
            } else {
                api.min_version
            };
            for version in served_from..=api.max_version {
                assert!(
                    (api.codec_reads)(version),
                    "{:?} advertises v{version}, which the codec cannot read",
                    api.key
                );
            }
            if api.key != ApiKey::Produce {
                assert!(
                    api.min_version >= codec.min,
                    "{:?} advertises v{} below the codec",
                    api.key,
                    api.min_version
                );
            }
        }
        assert!(servable(ApiKey::Produce, 3));
        assert!(!servable(ApiKey::Produce, 2));
        assert!(servable(ApiKey::Fetch, 18));
        assert!(!servable(ApiKey::Fetch, 19));
        assert!(servable(ApiKey::JoinGroup, 5));
        assert!(servable(ApiKey::InitProducerId, 0));
        assert!(!servable(ApiKey::AddPartitionsToTxn, 0));
    }
}
