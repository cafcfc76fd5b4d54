//! The message browser: `GET /api/v1/topics/{name}/messages`, records decoded from a
//! partition through the partition layer's scanner, off the async threads.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{AdminState, json_response};
use crate::broker::Broker;

/// Most messages one browse request returns.
const MAX_BROWSE: usize = 500;

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
pub(super) async fn messages(
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
    let offsets = target.offsets();
    let start = match number("timestamp")? {
        Some(ms) => target
            .offset_for_timestamp(ms)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_or(offsets.log_end_offset, |found| found.offset),
        None => number("offset")?.unwrap_or(offsets.log_start_offset),
    }
    .clamp(offsets.log_start_offset, offsets.log_end_offset);
    let mut out = Vec::new();
    let internal_error =
        |e: sluice_log::LogError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    for stored in target.records_from(start) {
        if out.len() >= limit {
            break;
        }
        let stored = stored.map_err(internal_error)?;
        // What consumers may see: nothing above the high watermark.
        if stored.base_offset() >= offsets.high_watermark {
            break;
        }
        if stored.is_control() {
            continue;
        }
        let records = stored.records().map_err(internal_error)?;
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
