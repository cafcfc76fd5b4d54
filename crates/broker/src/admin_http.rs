//! The admin HTTP endpoint (`admin.http.listener`, `sluice broker --http`): health checks,
//! Prometheus metrics, a read-only JSON API over topics, messages, groups and brokers, and
//! the web console (one HTML page with its script, embedded in the binary, served at `/`).
//! Documented in `docs/HTTP_API.md`.
//!
//! Everything here reads state the broker already keeps (metadata image, logs, group
//! coordinator, counters); nothing on the Kafka request path waits for it.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use serde_json::{Value, json};
use sluice_log::TopicPartition;

use crate::broker::Broker;
use crate::metrics::escape;

/// How often the console's charts get a sample, and how many are kept (10 minutes).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES_KEPT: usize = 120;
/// Most messages one browse request returns.
const MAX_BROWSE: usize = 500;

/// Samples for the console's charts.
#[derive(Debug, Default)]
struct History {
    /// (unix ms, bytes in, bytes out, messages in) totals over all topics.
    totals: VecDeque<(u64, u64, u64, u64)>,
    /// Per group: (unix ms, total lag).
    lag: HashMap<String, VecDeque<(u64, i64)>>,
}

#[derive(Debug, Clone)]
struct AdminState {
    broker: Arc<Broker>,
    history: Arc<Mutex<History>>,
}

/// Serves the endpoint on `listener` until `stop` changes.
pub async fn serve(
    broker: Arc<Broker>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = AdminState {
        broker,
        history: Arc::new(Mutex::new(History::default())),
    };
    let sampler = tokio::spawn(sample(state.clone(), stop.clone()));
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
        .route("/metrics", get(metrics))
        .route("/api/v1/brokers", get(brokers))
        .route("/api/v1/throughput", get(throughput))
        .route("/api/v1/topics", get(topics))
        .route("/api/v1/topics/{name}", get(topic))
        .route("/api/v1/topics/{name}/messages", get(messages))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{id}", get(group))
        .route("/api/v1/groups/{id}/lag-history", get(lag_history))
        .with_state(state)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every `SAMPLE_EVERY`: traffic totals and each group's lag, for the charts.
async fn sample(state: AdminState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let broker = state.broker.clone();
        let Ok((totals, lags)) = tokio::task::spawn_blocking(move || {
            let totals = broker.metrics.totals();
            let lags: Vec<(String, i64)> = broker
                .groups
                .list()
                .into_iter()
                .map(|(group, _, _)| {
                    let lag = broker.groups.lag(&broker, &group).unwrap_or_default();
                    (group, lag.iter().map(|l| l.lag).sum())
                })
                .collect();
            (totals, lags)
        })
        .await
        else {
            continue;
        };
        let now = unix_ms();
        let mut history = state.history.lock().unwrap_or_else(|e| e.into_inner());
        history
            .totals
            .push_back((now, totals.0, totals.1, totals.2));
        if history.totals.len() > SAMPLES_KEPT {
            history.totals.pop_front();
        }
        let live: Vec<String> = lags.iter().map(|(g, _)| g.clone()).collect();
        history.lag.retain(|group, _| live.contains(group));
        for (group, lag) in lags {
            let series = history.lag.entry(group).or_default();
            series.push_back((now, lag));
            if series.len() > SAMPLES_KEPT {
                series.pop_front();
            }
        }
    }
}

/// The web console: one page, its script inline; no build step, no network at run time.
async fn console() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("console/index.html"),
    )
        .into_response()
}

/// Rates between consecutive samples: `{"samples": [{t, bytes_in_per_s, ...}]}`.
async fn throughput(State(state): State<AdminState>) -> Response {
    let history = state.history.lock().unwrap_or_else(|e| e.into_inner());
    let samples: Vec<Value> = history
        .totals
        .iter()
        .zip(history.totals.iter().skip(1))
        .map(|(a, b)| {
            let seconds = (b.0.saturating_sub(a.0)).max(1) as f64 / 1000.0;
            json!({
                "t": b.0,
                "bytes_in_per_s": b.1.saturating_sub(a.1) as f64 / seconds,
                "bytes_out_per_s": b.2.saturating_sub(a.2) as f64 / seconds,
                "messages_in_per_s": b.3.saturating_sub(a.3) as f64 / seconds,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "samples": samples }))
}

async fn lag_history(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let history = state.history.lock().unwrap_or_else(|e| e.into_inner());
    let samples: Vec<Value> = history
        .lag
        .get(&id)
        .map(|s| {
            s.iter()
                .map(|(t, lag)| json!({ "t": t, "lag": lag }))
                .collect()
        })
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({ "group_id": id, "samples": samples }),
    )
}

/// Text (when UTF-8) and hex of some bytes, for the console's three display modes.
fn bytes_json(bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": text, "hex": hex }),
        Err(_) => json!({ "hex": hex }),
    }
}

/// `?partition=P&offset=O` or `&timestamp=MS`, `&limit=N`: messages from there on.
async fn messages(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let broker = state.broker.clone();
    let result = tokio::task::spawn_blocking(move || browse(&broker, &name, &query)).await;
    match result {
        Ok(Ok(value)) => json_response(StatusCode::OK, &value),
        Ok(Err((status, message))) => json_response(status, &json!({ "error": message })),
        Err(err) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": err.to_string() }),
        ),
    }
}

fn browse(
    broker: &Broker,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Value, (StatusCode, String)> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let number = |key: &str| -> Result<Option<i64>, (StatusCode, String)> {
        query
            .get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("{key} must be an integer, got {v:?}")))
            })
            .transpose()
    };
    let partition = number("partition")?.unwrap_or(0);
    let limit = number("limit")?.unwrap_or(50).clamp(1, MAX_BROWSE as i64) as usize;
    let partition = i32::try_from(partition).map_err(|_| bad("partition out of range".into()))?;
    let target = broker.partition(name, partition).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("no partition {name}-{partition}"),
        )
    })?;
    let offsets = target.log.offsets();
    let start = match number("timestamp")? {
        Some(ms) => target
            .log
            .offset_for_timestamp(ms)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_or(offsets.log_end_offset, |found| found.offset),
        None => number("offset")?.unwrap_or(offsets.log_start_offset),
    }
    .clamp(offsets.log_start_offset, offsets.log_end_offset);
    let mut out = Vec::new();
    let mut offset = start;
    while out.len() < limit && offset < offsets.log_end_offset {
        let read = target
            .log
            .read(offset, 1 << 20)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let Some(region) = read.region else { break };
        let bytes = region
            .read_to_vec()
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut advanced = false;
        for batch in sluice_record::Batches::new(&bytes) {
            let Ok(batch) = batch else { break };
            let next = batch.next_offset();
            if batch.header().is_control() {
                offset = offset.max(next);
                advanced = true;
                continue;
            }
            let records = batch
                .records(64 << 20)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            for record in records.iter().filter(|r| r.offset >= start) {
                if out.len() >= limit {
                    break;
                }
                out.push(json!({
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                    "key": bytes_json(record.key),
                    "value": bytes_json(record.value),
                    "headers": record.headers.iter().map(|h| json!({
                        "key": String::from_utf8_lossy(h.key),
                        "value": bytes_json(h.value),
                    })).collect::<Vec<_>>(),
                }));
            }
            offset = offset.max(next);
            advanced = true;
        }
        if !advanced {
            break;
        }
    }
    Ok(json!({
        "topic": name,
        "partition": partition,
        "start_offset": start,
        "log_start_offset": offsets.log_start_offset,
        "log_end_offset": offsets.log_end_offset,
        "messages": out,
    }))
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
async fn readyz(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let offline: Vec<String> = broker
        .logs
        .logs()
        .iter()
        .filter(|log| log.is_offline())
        .map(|log| log.topic_partition().to_string())
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

async fn metrics(State(state): State<AdminState>) -> Response {
    let broker = state.broker.clone();
    let text = tokio::task::spawn_blocking(move || render_metrics(&broker))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Every metric in Prometheus text format.
pub fn render_metrics(broker: &Broker) -> String {
    let mut out = String::new();
    broker.metrics.render(&mut out);

    // Partition logs.
    let mut logs = broker.logs.logs();
    logs.sort_by(|a, b| a.topic_partition().cmp(b.topic_partition()));
    type Field = fn(&sluice_log::LogOffsets) -> u64;
    let series: [(&str, &str, &str, Field); 4] = [
        (
            "sluice_partition_size_bytes",
            "gauge",
            "Bytes of the partition's segments.",
            |o| o.size_bytes,
        ),
        (
            "sluice_partition_log_start_offset",
            "gauge",
            "First offset still in the log.",
            |o| o.log_start_offset as u64,
        ),
        (
            "sluice_partition_log_end_offset",
            "gauge",
            "Offset the next record gets.",
            |o| o.log_end_offset as u64,
        ),
        (
            "sluice_partition_segments",
            "gauge",
            "Segment files of the partition.",
            |o| o.segments as u64,
        ),
    ];
    let offsets: Vec<_> = logs
        .iter()
        .map(|log| (log.topic_partition().clone(), log.offsets()))
        .collect();
    for (name, kind, help, field) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (tp, o) in &offsets {
            let _ = writeln!(out, "{name}{{{}}} {}", tp_labels(tp), field(o));
        }
    }

    // Group commit.
    let flush = broker.logs.flush_stats();
    let syncs = flush.fdatasyncs + flush.syncfs_calls;
    let _ = writeln!(
        out,
        "# HELP sluice_fsyncs_total fdatasync and syncfs calls (group commit and periodic flushes).\n# TYPE sluice_fsyncs_total counter\nsluice_fsyncs_total {syncs}"
    );
    let _ = writeln!(
        out,
        "# HELP sluice_fsync_seconds_total Time spent syncing.\n# TYPE sluice_fsync_seconds_total counter\nsluice_fsync_seconds_total {}",
        flush.sync_nanos as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "# HELP sluice_sync_rounds_total Sync rounds (one partition synced, or one syncfs).\n# TYPE sluice_sync_rounds_total counter\nsluice_sync_rounds_total {}",
        flush.rounds
    );
    let _ = writeln!(
        out,
        "# HELP sluice_durable_waits_total Appends that waited for durability (acks=all).\n# TYPE sluice_durable_waits_total counter\nsluice_durable_waits_total {}",
        flush.durable_waits
    );
    let _ = writeln!(
        out,
        "# HELP sluice_batches_per_fsync Durable waits per sync round, since start.\n# TYPE sluice_batches_per_fsync gauge\nsluice_batches_per_fsync {}",
        if flush.rounds == 0 {
            0.0
        } else {
            flush.durable_waits as f64 / flush.rounds as f64
        }
    );

    // Cleaner.
    let reports = broker.logs.cleaner_reports();
    type Report = fn(&sluice_log::CleaningReport) -> f64;
    let cleaner: [(&str, &str, Report); 5] = [
        (
            "sluice_cleaner_last_dirty_bytes",
            "Dirty bytes the last cleaning pass read.",
            |r| r.dirty_bytes as f64,
        ),
        (
            "sluice_cleaner_last_bytes_written",
            "Bytes the last cleaning pass wrote.",
            |r| r.bytes_written as f64,
        ),
        (
            "sluice_cleaner_last_records_removed",
            "Records the last cleaning pass removed.",
            |r| r.records_removed as f64,
        ),
        (
            "sluice_cleaner_last_duration_seconds",
            "Duration of the last cleaning pass.",
            |r| r.elapsed.as_secs_f64(),
        ),
        (
            "sluice_cleaner_last_run_timestamp_seconds",
            "When the last cleaning pass ended.",
            |r| r.finished_at_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, field) in cleaner {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for report in &reports {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                tp_labels(&report.partition),
                field(report)
            );
        }
    }

    // Consumer group lag.
    let _ = writeln!(
        out,
        "# HELP sluice_group_lag Log end offset minus the group's committed offset.\n# TYPE sluice_group_lag gauge"
    );
    for (group, _, _) in broker.groups.list() {
        for lag in broker.groups.lag(broker, &group).unwrap_or_default() {
            let _ = writeln!(
                out,
                "sluice_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(&group),
                escape(&lag.topic),
                lag.partition,
                lag.lag
            );
        }
    }

    // Process.
    if let Some(rss) = resident_bytes() {
        let _ = writeln!(
            out,
            "# HELP sluice_process_resident_memory_bytes Resident set size.\n# TYPE sluice_process_resident_memory_bytes gauge\nsluice_process_resident_memory_bytes {rss}"
        );
    }
    out
}

fn tp_labels(tp: &TopicPartition) -> String {
    format!(
        "topic=\"{}\",partition=\"{}\"",
        escape(&tp.topic),
        tp.partition
    )
}

/// Resident memory from `/proc/self/statm` (pages × page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

async fn brokers(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let (host, port) = &broker.config.advertised;
    json_response(
        StatusCode::OK,
        &json!({
            "cluster_id": broker.cluster_id,
            "controller_id": broker.config.node_id,
            "brokers": [{
                "node_id": broker.config.node_id,
                "host": host,
                "port": port,
                "connections": broker.metrics.connections.load(Ordering::Relaxed),
                "partitions": broker.logs.partitions().len(),
            }],
        }),
    )
}

fn partition_json(broker: &Broker, topic: &str, partition: i32) -> Value {
    let Some(target) = broker.partition(topic, partition) else {
        return json!({ "partition": partition, "error": "not loaded" });
    };
    let o = target.log.offsets();
    json!({
        "partition": partition,
        "leader": broker.config.node_id,
        "replicas": [broker.config.node_id],
        "log_start_offset": o.log_start_offset,
        "log_end_offset": o.log_end_offset,
        "high_watermark": o.high_watermark,
        "size_bytes": o.size_bytes,
        "segments": o.segments,
    })
}

async fn topics(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let image = broker.image();
    let topics: Vec<Value> = image
        .topics
        .values()
        .map(|t| {
            let (mut size, mut messages) = (0u64, 0i64);
            for p in 0..t.partitions {
                if let Some(target) = broker.partition(&t.name, p) {
                    let o = target.log.offsets();
                    size += o.size_bytes;
                    messages += o.log_end_offset - o.log_start_offset;
                }
            }
            json!({
                "name": t.name,
                "id": t.id.to_string(),
                "partitions": t.partitions,
                "internal": Broker::is_internal(&t.name),
                "size_bytes": size,
                "offsets_in_log": messages,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "topics": topics }))
}

async fn topic(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let broker = &state.broker;
    let image = broker.image();
    let Some(t) = image.topic(&name) else {
        return not_found(&format!("no topic {name:?}"));
    };
    let configs: serde_json::Map<String, Value> =
        crate::topic_config::describe(&broker.config, &t.configs)
            .into_iter()
            .map(|(key, value, source)| {
                (
                    key,
                    json!({ "value": value, "source": format!("{source:?}") }),
                )
            })
            .collect();
    let partitions: Vec<Value> = (0..t.partitions)
        .map(|p| partition_json(broker, &t.name, p))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "name": t.name,
            "id": t.id.to_string(),
            "internal": Broker::is_internal(&t.name),
            "partitions": partitions,
            "configs": configs,
        }),
    )
}

async fn groups(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let groups: Vec<Value> = broker
        .groups
        .list()
        .into_iter()
        .map(|(id, protocol_type, state)| {
            let members = broker.groups.describe(&id).map_or(0, |d| d.members.len());
            json!({
                "group_id": id,
                "protocol_type": protocol_type,
                "state": state.name(),
                "members": members,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "groups": groups }))
}

/// The partitions of a consumer-protocol assignment, if it is one.
fn assigned_partitions(assignment: &Bytes) -> Option<Vec<Value>> {
    let mut buf = assignment.clone();
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    let decoded = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(
        decoded
            .assigned_partitions
            .iter()
            .map(|tp| json!({ "topic": tp.topic.0.to_string(), "partitions": tp.partitions }))
            .collect(),
    )
}

async fn group(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let broker = &state.broker;
    let Some(description) = broker.groups.describe(&id) else {
        return not_found(&format!("no group {id:?}"));
    };
    let members: Vec<Value> = description
        .members
        .iter()
        .map(|(member_id, instance_id, client_id, host, _, assignment)| {
            json!({
                "member_id": member_id,
                "group_instance_id": instance_id,
                "client_id": client_id,
                "client_host": host,
                "assignment": assigned_partitions(assignment),
            })
        })
        .collect();
    let offsets: Vec<Value> = broker
        .groups
        .lag(broker, &id)
        .unwrap_or_default()
        .into_iter()
        .map(|l| {
            json!({
                "topic": l.topic,
                "partition": l.partition,
                "committed_offset": l.committed,
                "log_end_offset": l.log_end_offset,
                "lag": l.lag,
            })
        })
        .collect();
    let total_lag: i64 = offsets.iter().filter_map(|o| o["lag"].as_i64()).sum();
    json_response(
        StatusCode::OK,
        &json!({
            "group_id": id,
            "state": description.state.name(),
            "protocol_type": description.protocol_type,
            "protocol": description.protocol,
            "members": members,
            "offsets": offsets,
            "total_lag": total_lag,
        }),
    )
}
