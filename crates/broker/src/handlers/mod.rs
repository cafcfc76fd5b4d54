//! One module per Kafka API. Each decodes nothing itself: [`dispatch`] decodes the body
//! with the codec and hands the typed request to the handler, which returns a future of the
//! response. Work that must happen in request order (appends) is done before the future is
//! returned; waiting (durability, long polls) happens inside it.

mod alter_configs;
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
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod sync_group;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::Encodable;
use sluice_protocol::header::Request;
use sluice_protocol::response::{self, Response};
use sluice_protocol::versions;

use crate::broker::Broker;

/// The eventual response to a request; `None` when the request gets no response
/// (Produce with acks=0).
pub type ResponseFuture = Pin<Box<dyn Future<Output = Option<Response>> + Send>>;

/// What the connection does with a request.
pub enum Dispatch {
    Respond(ResponseFuture),
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

fn ready(response: Option<Response>) -> Dispatch {
    Dispatch::Respond(Box::pin(std::future::ready(response)))
}

fn later(future: impl Future<Output = Option<Response>> + Send + 'static) -> Dispatch {
    Dispatch::Respond(Box::pin(future))
}

/// Routes a request to its handler.
pub fn dispatch(broker: &Arc<Broker>, request: &Request, peer: std::net::SocketAddr) -> Dispatch {
    let ctx = RequestContext {
        api_key: request.api_key,
        version: request.api_version,
        correlation_id: request.correlation_id,
        client_id: request.client_id.clone(),
        client_host: format!("/{}", peer.ip()),
    };
    if !versions::servable(ctx.api_key, ctx.version) {
        if ctx.api_key == ApiKey::ApiVersions {
            // KIP-511: answer with the supported range so the client can retry lower.
            return ready(api_versions::unsupported_version(&ctx));
        }
        return Dispatch::Close(format!(
            "{:?} v{} is not supported (client {:?})",
            ctx.api_key, ctx.version, ctx.client_id
        ));
    }
    let kind = match request.decode_body() {
        Ok(kind) => kind,
        Err(err) => return Dispatch::Close(format!("{err} (client {:?})", ctx.client_id)),
    };
    let broker = broker.clone();
    match kind {
        RequestKind::ApiVersions(req) => ready(api_versions::handle(&ctx, &req)),
        RequestKind::Metadata(req) => {
            later(async move { metadata::handle(&broker, &ctx, req).await })
        }
        RequestKind::Produce(req) => produce::handle(&broker, ctx, req),
        RequestKind::Fetch(req) => later(fetch::handle(broker, ctx, req)),
        RequestKind::ListOffsets(req) => ready(list_offsets::handle(&broker, &ctx, &req)),
        RequestKind::CreateTopics(req) => {
            later(async move { create_topics::handle(&broker, &ctx, req).await })
        }
        RequestKind::DeleteTopics(req) => {
            later(async move { delete_topics::handle(&broker, &ctx, req).await })
        }
        RequestKind::CreatePartitions(req) => {
            later(async move { create_partitions::handle(&broker, &ctx, req).await })
        }
        RequestKind::DescribeConfigs(req) => ready(describe_configs::handle(&broker, &ctx, &req)),
        RequestKind::AlterConfigs(req) => {
            later(async move { alter_configs::handle(&broker, &ctx, req).await })
        }
        RequestKind::IncrementalAlterConfigs(req) => {
            later(async move { incremental_alter_configs::handle(&broker, &ctx, req).await })
        }
        RequestKind::DeleteRecords(req) => ready(delete_records::handle(&broker, &ctx, &req)),
        RequestKind::DescribeCluster(req) => ready(describe_cluster::handle(&broker, &ctx, &req)),
        RequestKind::DescribeLogDirs(req) => ready(describe_log_dirs::handle(&broker, &ctx, &req)),
        RequestKind::InitProducerId(req) => {
            later(async move { init_producer_id::handle(&broker, &ctx, req).await })
        }
        RequestKind::FindCoordinator(req) => {
            later(async move { find_coordinator::handle(&broker, &ctx, req).await })
        }
        RequestKind::JoinGroup(req) => {
            later(async move { join_group::handle(&broker, &ctx, req).await })
        }
        RequestKind::SyncGroup(req) => {
            later(async move { sync_group::handle(&broker, &ctx, req).await })
        }
        RequestKind::Heartbeat(req) => ready(heartbeat::handle(&broker, &ctx, &req)),
        RequestKind::LeaveGroup(req) => ready(leave_group::handle(&broker, &ctx, &req)),
        RequestKind::OffsetCommit(req) => {
            later(async move { offset_commit::handle(&broker, &ctx, req).await })
        }
        RequestKind::OffsetFetch(req) => ready(offset_fetch::handle(&broker, &ctx, &req)),
        RequestKind::ListGroups(req) => ready(list_groups::handle(&broker, &ctx, &req)),
        RequestKind::DescribeGroups(req) => ready(describe_groups::handle(&broker, &ctx, &req)),
        RequestKind::DeleteGroups(req) => {
            later(async move { delete_groups::handle(&broker, &ctx, req).await })
        }
        RequestKind::OffsetDelete(req) => {
            later(async move { offset_delete::handle(&broker, &ctx, req).await })
        }
        other => Dispatch::Close(format!(
            "{:?} is advertised but has no handler: {other:?}",
            ctx.api_key
        )),
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
