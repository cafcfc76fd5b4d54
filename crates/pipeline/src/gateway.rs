//! The ingest gateway: `POST /api/v1/metrics` validates, writes each metric to the topic with
//! acks=all and answers 202 only once every one of them is acknowledged — so a 202 means
//! the metrics are durable in the log. Anything else is a 4xx (the client's fault, retrying
//! will not help) or a 503 with `Retry-After` (retry later). Also `GET /api/v1/metrics`
//! (read back from PostgreSQL), `GET /healthz`, `GET /metrics` (Prometheus).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_broker::clock::{Clock, SystemClock};
use sluice_broker::prometheus::TextWriter;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};

use crate::metric::{self, BodyError, TimePolicy};
use crate::stats::{GatewayStats, SinkStats};
use crate::{kafka, rfc3339, store};

/// Most rows `GET /api/v1/metrics` returns.
pub const MAX_QUERY_LIMIT: i64 = 1000;
/// Connections `GET /api/v1/metrics` holds to PostgreSQL at most: a burst of queries waits
/// for one of them rather than opening a connection each.
pub const QUERY_POOL_SIZE: usize = 4;
/// How long a read-back query may take, the wait for a pooled connection included. The
/// connection's `statement_timeout` is a second longer, so that PostgreSQL stops working on
/// a query the gateway gave up on.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The header naming the sending client, for `--partition-by client`.
pub const CLIENT_ID_HEADER: &str = "x-client-id";

/// How metrics are spread over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    /// Name and labels: one series stays in one partition, in order.
    Series,
    /// The `X-Client-Id` header (series when absent): one client's metrics stay in order.
    Client,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub bootstrap: String,
    pub topic: String,
    /// Partitions of the topic if the gateway creates it.
    pub partitions: i32,
    /// For `GET /api/v1/metrics`; without it that endpoint answers 503.
    pub database_url: Option<String>,
    pub table: String,
    /// How long a metric may wait for the cluster's acknowledgement before the request gets
    /// a 503 (librdkafka's `message.timeout.ms`).
    pub delivery_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_metrics_per_request: usize,
    /// Metrics the producer may hold unacknowledged; beyond it requests get 503.
    pub buffer_messages: usize,
    pub partition_by: PartitionBy,
    /// librdkafka producer properties applied over the defaults.
    pub producer_properties: Vec<(String, String)>,
    /// Requests (POST and GET) served at once; beyond it requests get 503 at once.
    pub max_concurrent_requests: usize,
    /// How long a client may take to send its request body (408 beyond).
    pub body_timeout: Duration,
    /// Where the gateway reads time: receipt times and the accepted timestamp range.
    pub clock: Arc<dyn Clock>,
}

impl GatewayConfig {
    pub fn new(bootstrap: &str) -> GatewayConfig {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            bootstrap: bootstrap.to_string(),
            topic: "metrics".into(),
            partitions: 8,
            database_url: None,
            table: "metrics".into(),
            delivery_timeout: Duration::from_secs(10),
            max_body_bytes: 8 << 20,
            max_metrics_per_request: 50_000,
            buffer_messages: 500_000,
            partition_by: PartitionBy::Series,
            producer_properties: Vec::new(),
            max_concurrent_requests: 1024,
            body_timeout: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

/// One request's metrics on their way to the cluster: counts the delivery reports down and
/// wakes the request when the last one arrives. One allocation per request, not a future per
/// metric.
struct PendingRequest {
    remaining: AtomicUsize,
    /// The first delivery error, if any.
    failure: std::sync::OnceLock<KafkaError>,
    done: Notify,
}

/// Routes librdkafka's delivery reports to their [`PendingRequest`].
struct DeliveryReports;

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Arc<PendingRequest>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<PendingRequest>) {
        if let Err((err, _)) = result {
            let _ = pending.failure.set(err.clone());
        }
        if pending.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit if the request is not waiting yet: it cannot miss the wake-up.
            pending.done.notify_one();
        }
    }
}

type MetricsProducer = ThreadedProducer<DeliveryReports>;

struct Gateway {
    producer: MetricsProducer,
    config: GatewayConfig,
    stats: Arc<GatewayStats>,
    /// Shown on `/metrics` too when the sink runs in this process.
    sink_stats: Option<Arc<SinkStats>>,
    /// Idle read-back connections; `query_permits` bounds those in use.
    idle_queries: std::sync::Mutex<Vec<tokio_postgres::Client>>,
    query_permits: Semaphore,
    /// Requests being served ([`GatewayConfig::max_concurrent_requests`]).
    request_permits: Semaphore,
}

/// A running gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    pub local_addr: SocketAddr,
    pub stats: Arc<GatewayStats>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl GatewayHandle {
    /// Waits until the gateway has stopped (after `shutdown` turned true): in-flight
    /// requests answered, the producer flushed.
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await.context("gateway task")?
    }
}

/// Creates the topic if needed, binds `config.listen` and serves until `shutdown` is true.
pub async fn start(
    config: GatewayConfig,
    sink_stats: Option<Arc<SinkStats>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<GatewayHandle> {
    kafka::check_not_reserved(&config.producer_properties, RESERVED_PRODUCER_PROPERTIES)?;
    kafka::ensure_topics(
        &config.bootstrap,
        &config.producer_properties,
        &[(config.topic.as_str(), config.partitions)],
    )
    .await?;
    let producer = producer(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(GatewayStats::default());
    let max_concurrent_requests = config.max_concurrent_requests.max(1);
    let gateway = Arc::new(Gateway {
        producer,
        config,
        stats: stats.clone(),
        sink_stats,
        idle_queries: std::sync::Mutex::new(Vec::new()),
        query_permits: Semaphore::new(QUERY_POOL_SIZE),
        request_permits: Semaphore::new(max_concurrent_requests),
    });
    let app = Router::new()
        .route("/api/v1/metrics", get(query_metrics).post(post_metrics))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .with_state(gateway.clone());
    tracing::info!(listen = %local_addr, topic = %gateway.config.topic, "ingest gateway listening");
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
            .context("HTTP server")?;
        // Every 202 already waited for its acknowledgement; what is left belongs to
        // requests that got a 503 and may still land.
        let flushing = gateway.clone();
        tokio::task::spawn_blocking(move || flushing.producer.flush(Duration::from_secs(5)))
            .await?
            .ok();
        tracing::info!("ingest gateway stopped");
        Ok(())
    });
    Ok(GatewayHandle {
        local_addr,
        stats,
        task,
    })
}

/// Producer properties the gateway owns: a 202 means acks=all, no duplicates from
/// librdkafka's retries, and an answer within the delivery timeout.
pub const RESERVED_PRODUCER_PROPERTIES: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

fn producer(config: &GatewayConfig) -> anyhow::Result<MetricsProducer> {
    let mut client = kafka::client_config(&config.bootstrap, "sluice-ingest", &[]);
    client
        // acks=all + idempotence: a 202 means every replica in sync has it and no retry
        // of librdkafka's duplicated it.
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        // A few milliseconds of batching turn thousands of small requests into a few
        // produce requests, which is where the throughput comes from.
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set(
            "queue.buffering.max.messages",
            config.buffer_messages.to_string(),
        )
        .set("queue.buffering.max.kbytes", "1048576")
        // The Java client's partitioner: a series lands in the same partition whichever
        // client wrote it.
        .set("partitioner", "murmur2_random");
    for (key, value) in &config.producer_properties {
        client.set(key, value);
    }
    client
        .create_with_context(DeliveryReports)
        .context("cannot create the Kafka producer")
}

fn error_response(status: StatusCode, error: &str, field: Option<&str>, message: &str) -> Response {
    let mut body = json!({ "error": error, "message": message });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn post_metrics(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&gateway.stats);
    let response = match gateway.request_permits.try_acquire() {
        Ok(_permit) => gateway.ingest(&headers, body).await,
        Err(_) => too_busy(),
    };
    gateway.stats.latency.observe(started.elapsed());
    let counter = match response.status() {
        StatusCode::ACCEPTED => &gateway.stats.accepted_requests,
        StatusCode::PAYLOAD_TOO_LARGE => &gateway.stats.rejected_too_large,
        StatusCode::SERVICE_UNAVAILABLE => &gateway.stats.rejected_unavailable,
        _ => &gateway.stats.rejected_invalid,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    response
}

/// Counts a request in flight until dropped — also when the client hangs up and the
/// request's future is dropped before it answers.
struct InFlight<'a>(&'a GatewayStats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a GatewayStats) -> InFlight<'a> {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gateway {
    async fn ingest(&self, headers: &HeaderMap, body: Body) -> Response {
        let limit = self.config.max_body_bytes;
        let too_large = || {
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too large",
                None,
                &format!("the body exceeds {limit} bytes"),
            )
        };
        // A declared length over the limit is refused before reading any of the body.
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return too_large();
        }
        // Fails when a chunked body passes the limit, or when the client goes away (then
        // nobody reads the answer). A client that sends slowly is cut off.
        let body =
            match tokio::time::timeout(self.config.body_timeout, axum::body::to_bytes(body, limit))
                .await
            {
                Ok(Ok(body)) => body,
                Ok(Err(_)) => return too_large(),
                Err(_) => {
                    return error_response(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        None,
                        &format!(
                            "the body did not arrive within {} s",
                            self.config.body_timeout.as_secs_f64()
                        ),
                    );
                }
            };
        let now = self.config.clock.now_micros();
        let metrics = match metric::parse_body(
            &body,
            TimePolicy::gateway(now),
            self.config.max_metrics_per_request,
        ) {
            Ok(metrics) => metrics,
            Err(err @ BodyError::TooMany { .. }) => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too large",
                    None,
                    &err.to_string(),
                );
            }
            Err(BodyError::Invalid(invalid)) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid metric",
                    Some(&invalid.field),
                    &invalid.message,
                );
            }
            Err(err @ BodyError::Json(_)) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid JSON",
                    None,
                    &err.to_string(),
                );
            }
        };
        // Refuse the whole request up front rather than half of it when the buffer is full.
        let buffered = self.producer.in_flight_count().max(0) as usize;
        if buffered + metrics.len() > self.config.buffer_messages {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
                "the producer buffer is full; retry later",
            );
        }
        let client_key = match self.config.partition_by {
            PartitionBy::Client => headers.get(CLIENT_ID_HEADER).map(|v| v.as_bytes().to_vec()),
            PartitionBy::Series => None,
        };
        let timestamp_ms = now / 1000;
        // Payloads and keys of the whole request in two buffers (librdkafka copies them).
        let mut payloads = Vec::with_capacity(body.len() + 64 * metrics.len());
        let mut keys = Vec::with_capacity(32 * metrics.len());
        let mut spans = Vec::with_capacity(metrics.len());
        for metric in &metrics {
            let (payload_start, key_start) = (payloads.len(), keys.len());
            metric.write_json(&mut payloads);
            match &client_key {
                Some(key) => keys.extend_from_slice(key),
                None => metric.write_series_key(&mut keys),
            }
            spans.push((payload_start..payloads.len(), key_start..keys.len()));
        }
        let pending = Arc::new(PendingRequest {
            remaining: AtomicUsize::new(metrics.len()),
            failure: std::sync::OnceLock::new(),
            done: Notify::new(),
        });
        for (payload, key) in spans {
            let record = BaseRecord::with_opaque_to(&self.config.topic, pending.clone())
                .key(&keys[key])
                .payload(&payloads[payload])
                .timestamp(timestamp_ms);
            if let Err((err, _)) = self.producer.send(record) {
                // What was enqueued goes on; the client is told to retry the whole request.
                return unavailable(&err);
            }
        }
        let deadline = self.config.delivery_timeout + Duration::from_secs(5);
        if tokio::time::timeout(deadline, pending.done.notified())
            .await
            .is_err()
        {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
                "the cluster did not acknowledge in time",
            );
        }
        if let Some(err) = pending.failure.get() {
            return unavailable(err);
        }
        self.stats
            .accepted_metrics
            .fetch_add(metrics.len() as u64, Ordering::Relaxed);
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "accepted": metrics.len() })),
        )
            .into_response()
    }
}

fn too_busy() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        None,
        "too many requests in progress; retry later",
    )
}

fn unavailable(err: &KafkaError) -> Response {
    let message = match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => "the producer buffer is full; retry later".to_string(),
        Some(RDKafkaErrorCode::MessageTimedOut) => {
            "the cluster did not acknowledge in time (is the broker up?)".to_string()
        }
        _ => format!("the topic did not take the metrics: {err}"),
    };
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        None,
        &message,
    )
}

async fn query_metrics(
    State(gateway): State<Arc<Gateway>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    gateway.stats.queries.fetch_add(1, Ordering::Relaxed);
    let Ok(_permit) = gateway.request_permits.try_acquire() else {
        return too_busy();
    };
    for key in params.keys() {
        if !matches!(key.as_str(), "name" | "since" | "limit") {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad query",
                Some(key),
                "unknown parameter; use name, since, limit",
            );
        }
    }
    let since = match params.get("since").map(|s| rfc3339::parse_micros(s)) {
        None => None,
        Some(Ok(micros)) => Some(micros),
        Some(Err(why)) => {
            return error_response(StatusCode::BAD_REQUEST, "bad query", Some("since"), why);
        }
    };
    let limit = match params.get("limit").map(|s| s.parse::<i64>()) {
        None => 100,
        Some(Ok(n)) if n >= 1 => n.min(MAX_QUERY_LIMIT),
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad query",
                Some("limit"),
                "must be a positive integer",
            );
        }
    };
    let name = params.get("name").map(String::as_str);
    match gateway.query(name, since, limit).await {
        Ok(metrics) => {
            axum::Json(json!({ "count": metrics.len(), "metrics": metrics })).into_response()
        }
        Err(message) => {
            gateway.stats.query_errors.fetch_add(1, Ordering::Relaxed);
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                None,
                &message,
            )
        }
    }
}

impl Gateway {
    async fn query(
        &self,
        name: Option<&str>,
        since: Option<i64>,
        limit: i64,
    ) -> Result<Vec<store::StoredMetric>, String> {
        let Some(url) = &self.config.database_url else {
            return Err("no database configured (--database-url)".into());
        };
        let query = async {
            let _permit = self
                .query_permits
                .acquire()
                .await
                .map_err(|_| "the gateway is stopping".to_string())?;
            let pooled = {
                let mut idle = self.idle_queries.lock().unwrap_or_else(|e| e.into_inner());
                idle.retain(|client| !client.is_closed());
                idle.pop()
            };
            let client = match pooled {
                Some(client) => client,
                None => connect_for_queries(url)
                    .await
                    .map_err(|e| format!("cannot reach the database: {}", store::describe(&e)))?,
            };
            let rows = store::query(&client, &self.config.table, name, since, limit)
                .await
                .map_err(|e| {
                    if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
                        took_too_long()
                    } else {
                        format!("query failed: {}", store::describe(&e))
                    }
                })?;
            // Only a connection that just answered goes back; a failed one is dropped.
            self.idle_queries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(client);
            Ok(rows)
        };
        // Timing out drops the connection in use: its query is not waited for, and the
        // server's statement_timeout ends it there.
        tokio::time::timeout(QUERY_TIMEOUT, query)
            .await
            .unwrap_or_else(|_| Err(took_too_long()))
    }
}

fn took_too_long() -> String {
    format!("the query took longer than {} s", QUERY_TIMEOUT.as_secs())
}

/// A read-back connection: its statements end server-side after [`QUERY_TIMEOUT`].
async fn connect_for_queries(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let client = store::connect(url).await?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            (QUERY_TIMEOUT + Duration::from_secs(1)).as_millis()
        ))
        .await?;
    Ok(client)
}

async fn healthz(State(gateway): State<Arc<Gateway>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "topic": gateway.config.topic,
        "buffered": gateway.producer.in_flight_count(),
    }))
    .into_response()
}

async fn prometheus(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut out = TextWriter::new();
    gateway.stats.render(&mut out);
    if let Some(sink) = &gateway.sink_stats {
        sink.render(&mut out);
    }
    let text = out.finish();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
