//! Fetch: whole batches from each requested partition (through the partition layer), as
//! file chunks that the connection's writer sends with `sendfile` or copies, as configured.
//! When less than `min_bytes` is available the request waits, woken by appends to any of
//! its partitions (never by polling), until `max_wait_ms`.
//!
//! From v13 topics are named by ID (KIP-516): an ID the metadata does not know is
//! UNKNOWN_TOPIC_ID. From v7 a client may open a fetch session (KIP-227,
//! [`crate::fetch_sessions`]): epoch 0 opens one with a full fetch, later requests carry
//! only what changed and get only partitions with something new; epoch -1 (or no session)
//! is a full fetch without one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest};
use sluice_log::LogError;
use sluice_protocol::fetch::{
    self, FetchResponseData, FetchedPartition, FetchedTopic, RecordData, encode_fetch_response,
};
use sluice_protocol::response::{FileChunk, Response};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Handler, Reply, RequestContext, later};
use crate::broker::Broker;
use crate::errors::log_error_code;
use crate::fetch_sessions::{
    Changes, FINAL_EPOCH, INITIAL_EPOCH, NOT_SENT, SessionError, SessionPartition,
};
use crate::metadata::MetadataImage;
use crate::partition::Partition;

pub(super) struct Fetch;

impl Handler for Fetch {
    const API: ApiKey = ApiKey::Fetch;
    const VERSIONS: (i16, i16) = (fetch::MIN_VERSION, fetch::MAX_VERSION);
    type Request = FetchRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: FetchRequest) -> Reply {
        later(run(broker.clone(), ctx, request))
    }
}

const READ_COMMITTED: i8 = 1;
/// Fetch sessions came with v7.
const SESSIONS_VERSION: i16 = 7;
/// Topics are named by ID from v13.
const TOPIC_ID_VERSION: i16 = 13;

struct Wanted {
    topic: Arc<str>,
    topic_id: Uuid,
    partition: i32,
    target: Option<Arc<Partition>>,
    /// Why the partition cannot be read, when the request named it wrongly.
    refused: Option<ResponseError>,
    offset: i64,
    max_bytes: usize,
    /// The leader epoch the client believes current (-1: none).
    leader_epoch: i32,
    /// The epoch of the last record the client fetched (-1: none).
    last_fetched_epoch: i32,
    /// In an incremental session: what the last response said about the partition; it is
    /// left out of this response unless something changed.
    sent: Option<(i64, i64, i64)>,
}

/// What the request does with fetch sessions.
enum Mode {
    /// A full fetch, no session.
    Sessionless,
    /// A full fetch that opens a session.
    Open,
    /// An incremental fetch in this session.
    Incremental(i32),
}

/// The broker a follower's fetch comes from (`replica_id` up to v14, `replica_state` from
/// v15), `None` for a consumer's. Only a broker's own client id is taken at its word: a
/// client claiming a replica id would otherwise move the high watermark (until
/// authentication says who is a broker, issue "security").
fn fetching_replica(ctx: &RequestContext, request: &FetchRequest) -> Option<i32> {
    if ctx.client_id.as_deref() != Some(crate::peer_client::FORWARDED_CLIENT_ID) {
        return None;
    }
    [request.replica_id.0, request.replica_state.replica_id.0]
        .into_iter()
        .find(|id| *id >= 0)
}

async fn run(broker: Arc<Broker>, ctx: RequestContext, request: FetchRequest) -> Option<Response> {
    let by_id = ctx.version >= TOPIC_ID_VERSION;
    let replica = fetching_replica(&ctx, &request);
    let image = broker.image();
    let requested = requested_partitions(&image, &request, by_id);
    let (session_id, epoch) = (request.session_id, request.session_epoch);
    let cache = broker.fetch_sessions();
    let mode = if ctx.version < SESSIONS_VERSION {
        Mode::Sessionless
    } else {
        match epoch {
            FINAL_EPOCH | INITIAL_EPOCH => {
                // Any session named by a full fetch ends.
                if session_id != 0 {
                    cache.close(session_id);
                }
                if epoch == FINAL_EPOCH {
                    Mode::Sessionless
                } else {
                    Mode::Open
                }
            }
            _ => Mode::Incremental(session_id),
        }
    };
    let session_partitions = match mode {
        Mode::Incremental(id) => {
            let changes = Changes {
                upserts: requested,
                forgotten: forgotten_partitions(&request, by_id),
                by_id,
            };
            match cache.update(id, epoch, changes) {
                Ok(partitions) => partitions,
                Err(error) => {
                    let code = match error {
                        SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                        SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
                    };
                    let data = FetchResponseData {
                        error_code: code.code(),
                        ..FetchResponseData::default()
                    };
                    return Some(encode_fetch_response(
                        ctx.version,
                        ctx.correlation_id,
                        &data,
                    ));
                }
            }
        }
        Mode::Sessionless | Mode::Open => requested,
    };
    let incremental = matches!(mode, Mode::Incremental(_));
    let wanted: Vec<Wanted> = session_partitions
        .into_iter()
        .map(|p| {
            let target = broker.partition(&p.topic, p.partition);
            let refused = by_id
                .then(|| topic_id_refusal(&p.topic, p.topic_id, target.as_deref()))
                .flatten()
                .or_else(|| {
                    // A partition led elsewhere: the client goes there.
                    let missing = target
                        .is_none()
                        .then(|| broker.not_served(&p.topic, p.partition));
                    missing.filter(|e| *e == ResponseError::NotLeaderOrFollower)
                });
            Wanted {
                target,
                topic: p.topic,
                topic_id: p.topic_id,
                partition: p.partition,
                refused,
                offset: p.fetch_offset,
                max_bytes: p.max_bytes.max(0) as usize,
                leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                sent: incremental.then_some(p.sent),
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    // The broker's fetch.max.bytes caps what a client may ask for.
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    }
    .min(broker.config().fetch_max_bytes);
    let read_committed = request.isolation_level == READ_COMMITTED;
    if let Some(follower) = replica {
        // Where the follower's log ends is what it asks from: the high watermark may move
        // before this response reports it.
        record_follower_progress(&broker, follower, &wanted);
    }
    // The first read does not listen: most fetches are answered at once, and a listener per
    // partition costs more than the read. A fetch that has to wait listens, then reads again
    // before waiting, so that an append between that read and the wait wakes it.
    let mut listening = false;
    loop {
        let mut listeners: Vec<_> = if listening {
            wanted
                .iter()
                .filter_map(|w| w.target.as_ref())
                .map(|p| Box::pin(p.next_append()))
                .collect()
        } else {
            Vec::new()
        };
        for listener in &mut listeners {
            listener.as_mut().enable();
        }
        let (mut data, bytes, failed) = read_all(&wanted, max_bytes, read_committed, replica);
        let now = Instant::now();
        let nothing_to_wait_for = wanted.iter().all(|w| w.target.is_none());
        if bytes >= min_bytes || failed || now >= deadline || nothing_to_wait_for {
            count_fetched(&wanted, &data);
            remember(&broker, &mode, by_id, &wanted, &mut data);
            return Some(encode_fetch_response(
                ctx.version,
                ctx.correlation_id,
                &data,
            ));
        }
        if !listening {
            listening = true;
            continue;
        }
        tokio::select! {
            _ = select_all(listeners) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The partitions a request lists, resolved against the metadata: by name up to v12, by
/// topic ID from v13 (an unknown ID leaves the name empty).
fn requested_partitions(
    image: &MetadataImage,
    request: &FetchRequest,
    by_id: bool,
) -> Vec<SessionPartition> {
    let mut requested = Vec::new();
    for topic in &request.topics {
        let (name, topic_id) = if by_id {
            let name: Arc<str> = image
                .topic_names_by_id
                .get(&topic.topic_id)
                .map_or_else(|| Arc::from(""), |name| Arc::from(name.as_str()));
            (name, topic.topic_id)
        } else {
            let name: Arc<str> = Arc::from(&*topic.topic.0);
            let id = image.topic(&name).map_or(Uuid::nil(), |t| t.id);
            (name, id)
        };
        for p in &topic.partitions {
            requested.push(SessionPartition {
                topic: name.clone(),
                topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                sent: NOT_SENT,
            });
        }
    }
    requested
}

/// Why a partition requested by topic ID cannot be served: the ID names no topic
/// (UNKNOWN_TOPIC_ID; `topic` is empty), or the partition found by the ID's name belongs to
/// another topic of that name, deleted and recreated meanwhile (INCONSISTENT_TOPIC_ID).
fn topic_id_refusal(
    topic: &str,
    topic_id: Uuid,
    target: Option<&Partition>,
) -> Option<ResponseError> {
    if topic.is_empty() {
        return Some(ResponseError::UnknownTopicId);
    }
    target
        .filter(|partition| partition.topic_id() != topic_id)
        .map(|_| ResponseError::InconsistentTopicId)
}

/// The partitions an incremental request drops from its session.
fn forgotten_partitions(request: &FetchRequest, by_id: bool) -> Vec<(String, Uuid, i32)> {
    request
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| {
            let name = if by_id {
                String::new()
            } else {
                topic.topic.0.to_string()
            };
            topic
                .partitions
                .iter()
                .map(move |p| (name.clone(), topic.topic_id, *p))
        })
        .collect()
}

/// Updates the fetch session with what the response tells the client, and for an
/// incremental fetch leaves out the partitions where nothing changed. A full fetch that
/// asked for a session opens one here (its id goes in the response; 0 if the cache had no
/// room, and the client goes on with full fetches).
fn remember(
    broker: &Broker,
    mode: &Mode,
    by_id: bool,
    wanted: &[Wanted],
    data: &mut FetchResponseData,
) {
    let cache = broker.fetch_sessions();
    let state = |p: &FetchedPartition| (p.high_watermark, p.last_stable_offset, p.log_start_offset);
    match mode {
        Mode::Sessionless => {}
        Mode::Open => {
            let fetched = data.topics.iter().flat_map(|t| t.partitions.iter());
            let mut quiet = Vec::new();
            let mut busy = Vec::new();
            for (w, p) in wanted.iter().zip(fetched) {
                let partition = SessionPartition {
                    topic: w.topic.clone(),
                    topic_id: w.topic_id,
                    partition: w.partition,
                    fetch_offset: w.offset,
                    max_bytes: w.max_bytes.min(i32::MAX as usize) as i32,
                    current_leader_epoch: w.leader_epoch,
                    last_fetched_epoch: w.last_fetched_epoch,
                    sent: state(p),
                };
                // Partitions that returned records go last next time (rotation).
                if p.records.is_empty() {
                    quiet.push(partition);
                } else {
                    busy.push(partition);
                }
            }
            if !quiet.is_empty() || !busy.is_empty() {
                quiet.extend(busy);
                data.session_id = cache.open(quiet);
            }
        }
        Mode::Incremental(id) => {
            data.session_id = *id;
            let mut sent = Vec::new();
            let mut index = 0;
            for topic in &mut data.topics {
                topic.partitions.retain(|p| {
                    let w = &wanted[index];
                    index += 1;
                    let changed = !p.records.is_empty()
                        || p.error_code != 0
                        || p.diverging_epoch.is_some()
                        || w.sent != Some(state(p));
                    if changed {
                        let key_topic = if by_id { "" } else { &*w.topic };
                        sent.push((
                            (key_topic, w.topic_id, w.partition),
                            state(p),
                            !p.records.is_empty(),
                        ));
                    }
                    changed
                });
            }
            data.topics.retain(|t| !t.partitions.is_empty());
            cache.record_sent(*id, &sent);
        }
    }
}

/// Adds what the response carries to the partitions' topic counters. The response lists
/// partitions in the order they were wanted; unknown partitions have no counters, so clients
/// cannot create series by asking for made-up names.
fn count_fetched(wanted: &[Wanted], data: &FetchResponseData) {
    let fetched = data.topics.iter().flat_map(|t| t.partitions.iter());
    for (w, p) in wanted.iter().zip(fetched) {
        if let Some(target) = &w.target {
            target.count_fetched(p.records.len() as u64, p.error_code != 0);
        }
    }
}

/// A follower's fetch tells its leader where the follower's log ends: the high watermark may
/// move, and a follower that caught up asks to join the ISR (sent to the controller in the
/// background; the answer arrives as metadata).
fn record_follower_progress(broker: &Arc<Broker>, follower: i32, wanted: &[Wanted]) {
    let now_ms = broker.config().clock.now_ms();
    for w in wanted {
        let Some(partition) = &w.target else { continue };
        if w.refused.is_some() || partition.check_leader_epoch(w.leader_epoch).is_err() {
            continue;
        }
        // A diverged follower is not counted (it truncates first, the response tells it
        // where): `Partition::follower_fetched` decides.
        let asked = partition.follower_fetched(follower, w.offset, w.last_fetched_epoch, now_ms);
        if let Some(request) = asked {
            broker.request_isr_change(partition.clone(), request);
        }
    }
}

/// Reads every wanted partition once. Returns the response data, the record bytes it holds
/// and whether any partition failed (an error is answered at once, not waited on). A
/// follower (`replica`) reads to the log end, a consumer to the high watermark.
fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
    replica: Option<i32>,
) -> (FetchResponseData, usize, bool) {
    let mut topics: Vec<FetchedTopic> = Vec::new();
    let mut total = 0usize;
    let mut failed = false;
    for w in wanted {
        let mut fetched = FetchedPartition {
            partition: w.partition,
            error_code: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: read_committed.then(Vec::new),
            records: RecordData::None,
            diverging_epoch: None,
        };
        // A request that named the topic wrongly, or a leader epoch that is not the
        // partition's, is answered with the error instead of records.
        let refused = w.refused.or_else(|| {
            w.target
                .as_ref()
                .and_then(|p| p.check_leader_epoch(w.leader_epoch).err())
        });
        // A fetcher that says which epoch its last record had (v12+) and whose log diverged
        // from this one is told where to truncate instead of getting records.
        let diverging = match (&w.target, refused) {
            (Some(partition), None) if w.last_fetched_epoch >= 0 => {
                partition.diverging_epoch(w.last_fetched_epoch, w.offset)
            }
            _ => None,
        };
        match (&w.target, refused) {
            (_, Some(error)) => {
                fetched.error_code = error.code();
                failed = true;
            }
            (None, None) => {
                fetched.error_code = ResponseError::UnknownTopicOrPartition.code();
                failed = true;
            }
            (Some(partition), None) if diverging.is_some() => {
                // It truncates to the answer and fetches again (KIP-595's check in Fetch,
                // instead of OffsetForLeaderEpoch).
                fetched.diverging_epoch = diverging;
                let offsets = partition.offsets();
                fetched.high_watermark = offsets.high_watermark;
                fetched.last_stable_offset = offsets.high_watermark;
                fetched.log_start_offset = offsets.log_start_offset;
            }
            (Some(partition), None) => {
                // Within the partition's and the response's limits; the log returns at least
                // one batch, so the response's first batch may exceed them (KIP-74), and a
                // later partition's first batch that does not fit is left out below.
                let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
                let read = if replica.is_some() {
                    partition.read_for_replica(w.offset, budget.max(1))
                } else {
                    partition.read(w.offset, budget.max(1))
                };
                match read {
                    Ok(read) => {
                        fetched.high_watermark = read.high_watermark;
                        fetched.last_stable_offset = read.high_watermark;
                        fetched.log_start_offset = read.log_start_offset;
                        // Only the response's first batch may exceed the budget (KIP-74): a
                        // later partition whose first batch does not fit is returned empty.
                        let fits = |len: u64| total == 0 || len as usize <= budget;
                        if let Some(region) = read.region.filter(|r| fits(r.len())) {
                            total += region.len() as usize;
                            fetched.records = RecordData::File(FileChunk::new(
                                region.shared_file().clone(),
                                region.position(),
                                region.len(),
                            ));
                        }
                    }
                    Err(err) => {
                        if let LogError::OffsetOutOfRange {
                            log_start_offset,
                            log_end_offset,
                            ..
                        } = &err
                        {
                            fetched.high_watermark = *log_end_offset;
                            fetched.last_stable_offset = *log_end_offset;
                            fetched.log_start_offset = *log_start_offset;
                        }
                        fetched.error_code = log_error_code(&err).code();
                        failed = true;
                    }
                }
            }
        }
        match topics.last_mut() {
            Some(topic) if *topic.name == *w.topic && topic.topic_id == w.topic_id => {
                topic.partitions.push(fetched);
            }
            _ => topics.push(FetchedTopic {
                name: w.topic.to_string(),
                topic_id: w.topic_id,
                partitions: vec![fetched],
            }),
        }
    }
    (
        FetchResponseData {
            topics,
            ..FetchResponseData::default()
        },
        total,
        failed,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_log::{LogManager, ManagerConfig, TopicPartition};
    use uuid::Uuid;

    use super::topic_id_refusal;
    use crate::metrics::TopicCounters;
    use crate::partition::Partition;
    use kafka_protocol::ResponseError;

    #[test]
    fn a_topic_id_must_name_the_topic_the_partition_belongs_to() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::open(ManagerConfig::new(dir.path())).unwrap();
        let tp = TopicPartition::new("orders", 0);
        let current = Uuid::from_u128(7);
        let partition = Partition::new(
            tp.clone(),
            current,
            false,
            logs.get_or_create(&tp).unwrap(),
            Arc::new(TopicCounters::default()),
            1,
        );
        assert_eq!(topic_id_refusal("orders", current, Some(&partition)), None);
        assert_eq!(
            topic_id_refusal("orders", Uuid::from_u128(6), Some(&partition)),
            Some(ResponseError::InconsistentTopicId),
            "the name now belongs to a recreated topic"
        );
        assert_eq!(
            topic_id_refusal("", Uuid::from_u128(6), None),
            Some(ResponseError::UnknownTopicId)
        );
        assert_eq!(
            topic_id_refusal("orders", current, None),
            None,
            "a missing partition is reported by the read (UNKNOWN_TOPIC_OR_PARTITION)"
        );
        logs.shutdown().unwrap();
    }
}
