//! `GET /metrics`: every metric in the Prometheus text format, written with the shared
//! [`crate::prometheus::TextWriter`]: the broker's counters, partition sizes and offsets,
//! group commit, the cleaner, group lag and the process's memory.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sluice_log::{CleaningReport, LogOffsets, TopicPartition};

use super::AdminState;
use crate::broker::Broker;
use crate::handlers::APIS;
use crate::prometheus::{Kind, TextWriter};

pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    let broker = state.broker.clone();
    let text = tokio::task::spawn_blocking(move || render_metrics(&broker))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Every metric in Prometheus text format.
pub fn render_metrics(broker: &Broker) -> String {
    let mut out = TextWriter::new();
    broker
        .metrics()
        .render(&mut out, APIS.iter().map(|api| api.key));
    partitions(broker, &mut out);
    out.single(
        "sluice_stray_partition_dirs",
        Kind::Gauge,
        "Partition directories the metadata does not name, set aside at startup and kept.",
        broker.partitions().stray_dirs().len(),
    );
    let sessions = broker.fetch_sessions();
    out.single(
        "sluice_fetch_sessions",
        Kind::Gauge,
        "Fetch sessions (KIP-227) in the cache.",
        sessions.len(),
    );
    out.single(
        "sluice_fetch_sessions_opened_total",
        Kind::Counter,
        "Fetch sessions opened.",
        sessions.opened(),
    );
    out.single(
        "sluice_fetch_sessions_evicted_total",
        Kind::Counter,
        "Fetch sessions evicted to make room for new ones (max.incremental.fetch.session.cache.slots).",
        sessions.evicted(),
    );
    quorum(broker, &mut out);
    group_commit(broker, &mut out);
    cleaner(&broker.partitions().cleaner_reports(), &mut out);
    group_lag(broker, &mut out);
    if let Some(rss) = resident_bytes() {
        out.single(
            "sluice_process_resident_memory_bytes",
            Kind::Gauge,
            "Resident set size.",
            rss,
        );
    }
    out.finish()
}

/// The metadata quorum as this node sees it.
fn quorum(broker: &Broker, out: &mut TextWriter) {
    let status = broker.quorum_status();
    out.single(
        "sluice_quorum_leader",
        Kind::Gauge,
        "Node id of the metadata quorum's leader (the active controller); -1 when none is known.",
        status.leader.unwrap_or(-1),
    );
    out.single(
        "sluice_quorum_is_leader",
        Kind::Gauge,
        "1 when this node leads the metadata quorum.",
        u8::from(status.leader == Some(broker.config().node_id)),
    );
    out.single(
        "sluice_quorum_term",
        Kind::Gauge,
        "The metadata quorum's term (KRaft's leader epoch).",
        status.term,
    );
    out.single(
        "sluice_quorum_commit_index",
        Kind::Gauge,
        "Highest metadata log index known committed (the quorum's high watermark).",
        status.commit_index,
    );
    out.single(
        "sluice_quorum_applied_index",
        Kind::Gauge,
        "Highest metadata log index applied to this node's image.",
        status.applied,
    );
    let name = "sluice_quorum_voter_lag";
    out.family(
        name,
        Kind::Gauge,
        "On the leader: entries each voter lacks (leader's log end minus the voter's).",
    );
    for (voter, log_end) in &status.voters {
        let lag = status.log_end.saturating_sub(*log_end);
        out.sample(name, &[("voter", &voter.to_string())], lag);
    }
    let image = broker.image();
    let name = "sluice_cluster_brokers";
    out.family(
        name,
        Kind::Gauge,
        "Registered brokers by state: live (serving) or fenced (missed heartbeats, or stopped).",
    );
    let fenced = image.brokers.values().filter(|b| b.fenced).count();
    out.sample(name, &[("state", "live")], image.brokers.len() - fenced);
    out.sample(name, &[("state", "fenced")], fenced);
    out.single(
        "sluice_cluster_offline_partitions",
        Kind::Gauge,
        "Partitions without a leader (every replica's broker is fenced).",
        image
            .topics
            .values()
            .flat_map(|t| &t.states)
            .filter(|s| s.leader == crate::metadata::NO_LEADER)
            .count(),
    );
    out.single(
        "sluice_cluster_under_replicated_partitions",
        Kind::Gauge,
        "Partitions with fewer in-sync replicas than replicas (Kafka's UnderReplicatedPartitions, cluster-wide).",
        image
            .topics
            .values()
            .flat_map(|t| &t.states)
            .filter(|s| s.isr.len() < s.replicas.len())
            .count(),
    );
    let led: Vec<_> = broker
        .partitions()
        .all()
        .into_iter()
        .filter(|p| p.is_leader())
        .collect();
    out.single(
        "sluice_replication_uncommitted_records",
        Kind::Gauge,
        "On the partitions this broker leads: records appended but not yet held by every in-sync replica (log end minus high watermark), summed.",
        led.iter()
            .map(|p| {
                let o = p.offsets();
                u64::try_from(o.log_end_offset - o.high_watermark).unwrap_or(0)
            })
            .sum::<u64>(),
    );
}

fn partitions(broker: &Broker, out: &mut TextWriter) {
    let offsets: Vec<(TopicPartition, LogOffsets)> = broker
        .partitions()
        .all()
        .iter()
        .map(|p| (p.topic_partition().clone(), p.offsets()))
        .collect();
    type Field = fn(&LogOffsets) -> u64;
    let series: [(&str, &str, Field); 4] = [
        (
            "sluice_partition_size_bytes",
            "Bytes of the partition's segments.",
            |o| o.size_bytes,
        ),
        (
            "sluice_partition_log_start_offset",
            "First offset still in the log.",
            |o| o.log_start_offset as u64,
        ),
        (
            "sluice_partition_log_end_offset",
            "Offset the next record gets.",
            |o| o.log_end_offset as u64,
        ),
        (
            "sluice_partition_segments",
            "Segment files of the partition.",
            |o| o.segments as u64,
        ),
    ];
    for (name, help, field) in series {
        out.family(name, Kind::Gauge, help);
        for (tp, o) in &offsets {
            let partition = tp.partition.to_string();
            out.sample(
                name,
                &[("topic", &tp.topic), ("partition", &partition)],
                field(o),
            );
        }
    }
}

fn group_commit(broker: &Broker, out: &mut TextWriter) {
    let flush = broker.partitions().flush_stats();
    out.single(
        "sluice_fsyncs_total",
        Kind::Counter,
        "fdatasync and syncfs calls (group commit and periodic flushes).",
        flush.fdatasyncs + flush.syncfs_calls,
    );
    out.single(
        "sluice_fsync_seconds_total",
        Kind::Counter,
        "Time spent syncing.",
        flush.sync_nanos as f64 / 1e9,
    );
    out.single(
        "sluice_sync_rounds_total",
        Kind::Counter,
        "Sync rounds (one partition synced, or one syncfs).",
        flush.rounds,
    );
    out.single(
        "sluice_durable_waits_total",
        Kind::Counter,
        "Appends that waited for durability (acks=all).",
        flush.durable_waits,
    );
    out.single(
        "sluice_batches_per_fsync",
        Kind::Gauge,
        "Durable waits per sync round, since start.",
        if flush.rounds == 0 {
            0.0
        } else {
            flush.durable_waits as f64 / flush.rounds as f64
        },
    );
}

fn cleaner(reports: &[CleaningReport], out: &mut TextWriter) {
    type Report = fn(&CleaningReport) -> f64;
    let series: [(&str, &str, Report); 5] = [
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
    for (name, help, field) in series {
        out.family(name, Kind::Gauge, help);
        for report in reports {
            let partition = report.partition.partition.to_string();
            out.sample(
                name,
                &[
                    ("topic", &report.partition.topic),
                    ("partition", &partition),
                ],
                field(report),
            );
        }
    }
}

fn group_lag(broker: &Broker, out: &mut TextWriter) {
    let name = "sluice_group_lag";
    out.family(
        name,
        Kind::Gauge,
        "Log end offset minus the group's committed offset.",
    );
    let groups = broker.groups();
    for (group, _, _) in groups.list() {
        for lag in groups.lag(&group).unwrap_or_default() {
            let partition = lag.partition.to_string();
            out.sample(
                name,
                &[
                    ("group", &group),
                    ("topic", &lag.topic),
                    ("partition", &partition),
                ],
                lag.lag,
            );
        }
    }
}

/// Resident memory from `/proc/self/statm` (pages × page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
