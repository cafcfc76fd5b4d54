//! The follower side of replication (Kafka's `ReplicaFetcherThread`): for every leader this
//! broker follows partitions of, one task sends that leader Fetch requests as a replica
//! (`replica_id` = this node, Kafka's wire format), appends what comes back to the local
//! logs with the leader's offsets and epochs, makes it durable before the next fetch (so
//! that the offset a follower asks from is what it holds durably: the leader's high
//! watermark counts only durable copies), truncates a suffix the leader does not have when
//! the leader answers with a diverging epoch, and takes the leader's high watermark.
//!
//! Which partitions follow which leader comes from the partitions themselves
//! ([`Partition::followed_leader`], set from the metadata); a supervisor re-reads it
//! every few milliseconds and starts a task per leader.
//!
//! Depends on the partition layer, the peer client and the broker's image; must not depend
//! on handlers or the group coordinator.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_log::{LogError, ReplicatedRecords};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::partition::{Partition, replication};
use crate::peer_client::Connection;

/// Fetch v12: topics by name, `last_fetched_epoch` for divergence, `replica_id` in the body.
const FETCH_VERSION: i16 = 12;
/// How often the supervisor looks for partitions that changed leader.
const SUPERVISE_EVERY: Duration = Duration::from_millis(50);
/// After a failed fetch (leader unreachable, refused), before the next attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// The most record bytes one fetch asks for, per partition and in all. A round costs a
/// round trip and a group commit whatever it carries, so a follower under load takes
/// large bites (1 MiB per partition capped RF 3 at about 30 MB/s here).
const PARTITION_MAX_BYTES: i32 = 8 << 20;
const RESPONSE_MAX_BYTES: i32 = 32 << 20;
/// A response larger than this is refused (the leader keeps to the limits above).
const MAX_RESPONSE: usize = 64 << 20;

type Followed = Arc<Mutex<HashMap<i32, Vec<Arc<Partition>>>>>;

/// Keeps one fetching task per followed leader until `stop`.
pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let followed: Followed = Arc::default();
    let mut tasks: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(SUPERVISE_EVERY) => {}
        }
        let mut by_leader: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        for partition in broker.partitions().all() {
            // A copy whose storage is failing fetches nothing until a probe finds the disk
            // writable again (`Broker::run_storage_checks`): caught up on an idle partition,
            // it would be taken back into the ISR at once.
            if partition.storage_failing() {
                continue;
            }
            if let Some(leader) = partition.followed_leader() {
                by_leader.entry(leader).or_default().push(partition);
            }
        }
        tasks.retain(|_, task| !task.is_finished());
        for leader in by_leader.keys() {
            if !tasks.contains_key(leader) {
                let (broker, followed, stop) = (broker.clone(), followed.clone(), stop.clone());
                let leader = *leader;
                tasks.insert(
                    leader,
                    tokio::spawn(async move { follow(broker, leader, followed, stop).await }),
                );
            }
        }
        *followed.lock().unwrap_or_else(|e| e.into_inner()) = by_leader;
    }
    for task in tasks.into_values() {
        task.abort();
    }
}

/// Fetches from `leader` for as long as this broker follows partitions it leads.
async fn follow(
    broker: Arc<Broker>,
    leader: i32,
    followed: Followed,
    mut stop: watch::Receiver<bool>,
) {
    let mut connection: Option<Connection> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let partitions = followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&leader)
            .cloned()
            .unwrap_or_default();
        if partitions.is_empty() {
            return;
        }
        let outcome = tokio::select! {
            _ = stop.changed() => return,
            outcome = fetch_once(&broker, leader, &partitions, &mut connection) => outcome,
        };
        if let Err(reason) = outcome {
            tracing::debug!(leader, %reason, "replica fetch failed; retrying");
            connection = None;
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(RETRY_BACKOFF) => {}
            }
        }
    }
}

/// One fetch round: asks `leader` for what follows each partition's log end and takes in
/// the answer. An error means the connection is to be opened again.
async fn fetch_once(
    broker: &Arc<Broker>,
    leader: i32,
    partitions: &[Arc<Partition>],
    connection: &mut Option<Connection>,
) -> Result<(), String> {
    let image = broker.image();
    let Some(address) = image.live_broker(leader).map(|b| (b.host.clone(), b.port)) else {
        return Err(format!("leader {leader} is not a live broker"));
    };
    if connection.is_none() {
        *connection = Some(Connection::open(&address.0, address.1, MAX_RESPONSE).await?);
    }
    let request = fetch_request(broker, partitions);
    let wait = broker.config().replica_fetch_wait_max;
    let call = connection
        .as_mut()
        .expect("opened above")
        .call::<_, FetchResponse>(ApiKey::Fetch, FETCH_VERSION, &request);
    let response = tokio::time::timeout(wait + Duration::from_secs(10), call)
        .await
        .map_err(|_| format!("no answer from leader {leader}"))??;
    if response.error_code != 0 {
        return Err(format!(
            "leader {leader} refused the fetch: error {}",
            response.error_code
        ));
    }
    let by_name: BTreeMap<(&str, i32), &Arc<Partition>> = partitions
        .iter()
        .map(|p| {
            let tp = p.topic_partition();
            ((tp.topic.as_str(), tp.partition), p)
        })
        .collect();
    let mut appended = Vec::new();
    let mut refused = false;
    for topic in &response.responses {
        for data in &topic.partitions {
            let Some(partition) = by_name.get(&(&*topic.topic.0, data.partition_index)) else {
                continue;
            };
            match take_in(partition, data) {
                Ok(Some(next)) => appended.push(((*partition).clone(), next, data.high_watermark)),
                Ok(None) => partition.set_follower_high_watermark(data.high_watermark),
                Err(reason) => {
                    refused = true;
                    tracing::debug!(partition = %partition.topic_partition(), leader, %reason, "replica fetch refused");
                }
            }
        }
    }
    // The next fetch tells the leader these offsets are held: make them durable first
    // (unless `replica.sync.before.fetch` is off: then the sync is only started).
    let sync_first = broker.config().replica_sync_before_fetch;
    for (partition, next, leader_hw) in appended {
        let durable = partition.log().wait_durable(next);
        if sync_first && let Err(err) = durable.await {
            tracing::warn!(partition = %partition.topic_partition(), error = %err, "replica could not make copied records durable");
            continue;
        }
        partition.set_follower_high_watermark(leader_hw);
    }
    if refused {
        // Most refusals (a leader epoch not known yet on one side) clear once the metadata
        // is in step: do not spin on them.
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
    Ok(())
}

fn fetch_request(broker: &Broker, partitions: &[Arc<Partition>]) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for partition in partitions {
        let log = partition.log();
        let tp = partition.topic_partition();
        topics.entry(tp.topic.as_str()).or_default().push(
            FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(partition.leader_epoch())
                .with_fetch_offset(log.log_end_offset())
                .with_last_fetched_epoch(log.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(log.offsets().log_start_offset)
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        );
    }
    let wait_ms = broker.config().replica_fetch_wait_max.as_millis();
    FetchRequest::default()
        .with_replica_id(BrokerId(broker.config().node_id))
        .with_max_wait_ms(i32::try_from(wait_ms).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Takes one partition's part of a fetch response: truncates where the leader says the
/// logs diverged, restarts the log where the leader's begins when this one is behind it,
/// appends copied batches. Returns the new log end when records were appended.
fn take_in(partition: &Partition, data: &PartitionData) -> Result<Option<i64>, String> {
    let log = partition.log();
    let tp = partition.topic_partition();
    match ResponseError::try_from_code(data.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) if log.log_end_offset() < data.log_start_offset => {
            // The leader no longer has what this replica would fetch next (retention or
            // DeleteRecords passed it): start over where the leader's log starts.
            let start = partition
                .storage_outcome(log.restart_at(data.log_start_offset))
                .map_err(|e| e.to_string())?;
            tracing::warn!(partition = %tp, log_start_offset = start, "replica restarted at the leader's log start");
            return Ok(None);
        }
        Some(error) => return Err(format!("{error:?}")),
    }
    if data.log_start_offset > log.offsets().log_start_offset {
        // The leader's log starts later (retention, DeleteRecords): so does this copy, or a
        // failover would bring deleted records back.
        partition
            .storage_outcome(
                log.delete_records_before(data.log_start_offset.min(log.log_end_offset())),
            )
            .map_err(|e| e.to_string())?;
    }
    if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 {
        let diverging = &data.diverging_epoch;
        let target = replication::truncation_offset(
            log.end_offset_for_epoch(diverging.epoch),
            (diverging.epoch, diverging.end_offset),
        );
        let end = partition
            .storage_outcome(log.truncate_to(target))
            .map_err(|e| e.to_string())?;
        tracing::info!(partition = %tp, epoch = diverging.epoch, leader_end = diverging.end_offset, log_end_offset = end, "truncated a suffix the leader does not have");
        return Ok(None);
    }
    let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let copied = ReplicatedRecords::validate(records).map_err(|e| e.to_string())?;
    match partition.storage_outcome(log.append_replicated(&copied)) {
        Ok(info) => Ok(Some(info.last_offset + 1)),
        // A response to an earlier fetch position (the log moved meanwhile): the next
        // fetch asks again from the log end.
        Err(LogError::OutOfOrder(reason)) => Err(reason),
        Err(err) => Err(err.to_string()),
    }
}
