//! Samples for the console's charts: traffic totals and each group's lag every 5 s,
//! 10 minutes kept, and the JSON views of them.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{AdminState, json_response};

/// How often the console's charts get a sample, and how many are kept (10 minutes).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES_KEPT: usize = 120;

/// Samples for the console's charts.
#[derive(Debug, Default)]
pub(super) struct History {
    /// (unix ms, bytes in, bytes out, messages in) totals over all topics.
    totals: VecDeque<(u64, u64, u64, u64)>,
    /// Per group: (unix ms, total lag).
    lag: HashMap<String, VecDeque<(u64, i64)>>,
}

/// Every `SAMPLE_EVERY`: traffic totals and each group's lag, for the charts.
pub(super) async fn sample(state: AdminState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let broker = state.broker.clone();
        let Ok((totals, lags)) = tokio::task::spawn_blocking(move || {
            let totals = broker.metrics().totals();
            let groups = broker.groups();
            let lags: Vec<(String, i64)> = groups
                .list()
                .into_iter()
                .map(|(group, _, _)| {
                    let lag = groups.lag(&group).unwrap_or_default();
                    (group, lag.iter().map(|l| l.lag).sum())
                })
                .collect();
            (totals, lags)
        })
        .await
        else {
            continue;
        };
        let now = state.broker.clock().now_ms().max(0) as u64;
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

/// Rates between consecutive samples: `{"samples": [{t, bytes_in_per_s, ...}]}`.
pub(super) async fn throughput(State(state): State<AdminState>) -> Response {
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

pub(super) async fn lag_history(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
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
