//! ApiVersions: the handler table ([`super::APIS`]), as advertised ranges.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::response::Response;

use super::{APIS, Handler, Reply, RequestContext, ready};
use crate::broker::Broker;

pub(super) struct ApiVersions;

impl Handler for ApiVersions {
    const API: ApiKey = ApiKey::ApiVersions;
    const VERSIONS: (i16, i16) = (0, 4);
    type Request = ApiVersionsRequest;

    fn handle(_broker: &Arc<Broker>, ctx: RequestContext, request: ApiVersionsRequest) -> Reply {
        if ctx.version >= 3 {
            tracing::debug!(
                client = ?ctx.client_id,
                software = %request.client_software_name.as_str(),
                version = %request.client_software_version.as_str(),
                "client connected"
            );
        }
        ready(ctx.respond(&ApiVersionsResponse::default().with_api_keys(table())))
    }
}

fn table() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}

/// The answer to an ApiVersions request of a version we do not know: error code and the
/// table, in the v0 layout every client can read (KIP-511).
pub fn unsupported_version(ctx: &RequestContext) -> Option<Response> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table());
    let downgraded = RequestContext {
        api_key: ApiKey::ApiVersions,
        version: 0,
        ..ctx.clone()
    };
    downgraded.respond(&body)
}
