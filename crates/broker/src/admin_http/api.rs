//! The read-only JSON API over brokers, topics and groups.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

use super::{AdminState, json_response, not_found};
use crate::broker::Broker;
use crate::internal_topics;

pub(super) async fn brokers(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let image = broker.image();
    let me = broker.config().node_id;
    let brokers: Vec<Value> = image
        .brokers
        .values()
        .map(|b| {
            let leads = image
                .topics
                .values()
                .flat_map(|t| &t.states)
                .filter(|s| s.leader == b.id)
                .count();
            let mut described = json!({
                "node_id": b.id,
                "host": b.host,
                "port": b.port,
                "fenced": b.fenced,
                "leader_of": leads,
            });
            if b.id == me {
                // Only this broker's own counters are known here.
                described["connections"] =
                    json!(broker.metrics().connections.load(Ordering::Relaxed));
                described["partitions"] = json!(broker.partitions().len());
            }
            described
        })
        .collect();
    let quorum = broker.quorum_status();
    let leader_end = quorum.voters.iter().map(|(_, end)| *end).max().unwrap_or(0);
    let voters: Vec<Value> = quorum
        .voters
        .iter()
        .map(|(id, end)| json!({ "node_id": id, "log_end": end, "lag": leader_end - end }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "cluster_id": broker.cluster_id(),
            "controller_id": quorum.leader,
            "node_id": me,
            "brokers": brokers,
            "quorum": {
                "leader": quorum.leader,
                "epoch": quorum.term,
                "commit_index": quorum.commit_index,
                // Each voter's progress, known on the leader only.
                "voters": voters,
            },
        }),
    )
}

fn partition_json(broker: &Broker, topic: &str, partition: i32) -> Value {
    let image = broker.image();
    let state = image.partition(topic, partition);
    let leader = state.map(|s| s.leader);
    let replicas = state.map(|s| s.replicas.clone()).unwrap_or_default();
    let Some(target) = broker.partition(topic, partition) else {
        return json!({
            "partition": partition,
            "leader": leader,
            "replicas": replicas,
            "error": "not served by this broker",
        });
    };
    let o = target.offsets();
    json!({
        "partition": partition,
        "leader": leader,
        "replicas": replicas,
        "log_start_offset": o.log_start_offset,
        "log_end_offset": o.log_end_offset,
        "high_watermark": o.high_watermark,
        "size_bytes": o.size_bytes,
        "segments": o.segments,
    })
}

pub(super) async fn topics(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let image = broker.image();
    let topics: Vec<Value> = image
        .topics
        .values()
        .map(|t| {
            let (mut size, mut messages) = (0u64, 0i64);
            for p in 0..t.partitions {
                if let Some(target) = broker.partition(&t.name, p) {
                    let o = target.offsets();
                    size += o.size_bytes;
                    messages += o.log_end_offset - o.log_start_offset;
                }
            }
            json!({
                "name": t.name,
                "id": t.id.to_string(),
                "partitions": t.partitions,
                "internal": internal_topics::is_internal(&t.name),
                "size_bytes": size,
                "offsets_in_log": messages,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "topics": topics }))
}

pub(super) async fn topic(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let broker = &state.broker;
    let image = broker.image();
    let Some(t) = image.topic(&name) else {
        return not_found(&format!("no topic {name:?}"));
    };
    let configs: serde_json::Map<String, Value> =
        crate::topic_config::describe(broker.config(), &t.configs)
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
            "internal": internal_topics::is_internal(&t.name),
            "partitions": partitions,
            "configs": configs,
        }),
    )
}

pub(super) async fn groups(State(state): State<AdminState>) -> Response {
    let broker = &state.broker;
    let groups: Vec<Value> = broker
        .groups()
        .list()
        .into_iter()
        .map(|(id, protocol_type, state)| {
            let members = broker.groups().describe(&id).map_or(0, |d| d.members.len());
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

pub(super) async fn group(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let broker = &state.broker;
    let Some(description) = broker.groups().describe(&id) else {
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
        .groups()
        .lag(&id)
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
