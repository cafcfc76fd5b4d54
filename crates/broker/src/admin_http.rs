//! The admin HTTP endpoint (`admin.http.listener`, `sluice broker --http`): health checks,
//! Prometheus metrics and a read-only JSON API over topics, groups and brokers. Documented
//! in `docs/HTTP_API.md`.
//!
//! Everything here reads state the broker already keeps (metadata image, logs, group
//! coordinator, counters); nothing on the Kafka request path waits for it.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
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

/// The routes, bound to `broker`.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/brokers", get(brokers))
        .route("/api/v1/topics", get(topics))
        .route("/api/v1/topics/{name}", get(topic))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{id}", get(group))
        .with_state(broker)
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
async fn readyz(State(broker): State<Arc<Broker>>) -> Response {
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

async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
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

async fn brokers(State(broker): State<Arc<Broker>>) -> Response {
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

async fn topics(State(broker): State<Arc<Broker>>) -> Response {
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

async fn topic(State(broker): State<Arc<Broker>>, Path(name): Path<String>) -> Response {
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
        .map(|p| partition_json(&broker, &t.name, p))
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

async fn groups(State(broker): State<Arc<Broker>>) -> Response {
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

async fn group(State(broker): State<Arc<Broker>>, Path(id): Path<String>) -> Response {
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
        .lag(&broker, &id)
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
