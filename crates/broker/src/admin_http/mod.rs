//! The admin HTTP endpoint (`admin.http.listener`, `sluice broker --http`): health checks,
//! Prometheus metrics, a read-only JSON API over topics, messages, groups and brokers, and
//! the web console (one HTML page with its script, embedded in the binary, served at `/`).
//! Documented in `docs/HTTP_API.md`.
//!
//! - this file: the routes, health and readiness, the console page;
//! - [`metrics`]: `/metrics` in the Prometheus text format;
//! - `api`: the JSON API over brokers, topics and groups;
//! - `browse`: the message browser;
//! - `sampler`: the samples behind the console's charts.
//!
//! Everything here reads state the broker already keeps (metadata image, partitions, group
//! coordinator, counters); nothing on the Kafka request path waits for it.

mod api;
mod browse;
pub mod metrics;
mod sampler;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::broker::Broker;

pub use metrics::render_metrics;

#[derive(Debug, Clone)]
struct AdminState {
    broker: Arc<Broker>,
    history: Arc<Mutex<sampler::History>>,
}

/// Serves the endpoint on `listener` until `stop` changes.
pub async fn serve(
    broker: Arc<Broker>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = AdminState {
        broker,
        history: Arc::new(Mutex::new(sampler::History::default())),
    };
    let sampler = tokio::spawn(sampler::sample(state.clone(), stop.clone()));
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    result
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/brokers", get(api::brokers))
        .route("/api/v1/throughput", get(sampler::throughput))
        .route("/api/v1/topics", get(api::topics))
        .route("/api/v1/topics/{name}", get(api::topic))
        .route("/api/v1/topics/{name}/messages", get(browse::messages))
        .route("/api/v1/groups", get(api::groups))
        .route("/api/v1/groups/{id}", get(api::group))
        .route("/api/v1/groups/{id}/lag-history", get(sampler::lag_history))
        .with_state(state)
}

/// The web console: one page, its script inline; no build step, no network at run time.
async fn console() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("console/index.html"),
    )
        .into_response()
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({ "error": what }))
}

/// The process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready for clients: every partition log is usable (none went offline after a storage
/// failure). 503 with the offline partitions otherwise.
async fn readyz(axum::extract::State(state): axum::extract::State<AdminState>) -> Response {
    let offline: Vec<String> = state
        .broker
        .partitions()
        .all()
        .iter()
        .filter(|p| p.is_offline())
        .map(|p| p.topic_partition().to_string())
        .collect();
    if offline.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": "partitions offline", "partitions": offline }),
        )
    }
}
