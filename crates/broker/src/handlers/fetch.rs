//! Fetch: whole batches from each requested partition (through the partition layer), as
//! file chunks that the connection's writer sends with `sendfile` or copies, as configured.
//! When less than `min_bytes` is available the request waits, woken by appends to any of
//! its partitions (never by polling), until `max_wait_ms`.
//!
//! Fetch sessions (KIP-227) are not kept: every request is served as a full fetch and the
//! response carries session id 0, which tells clients to keep sending full requests.

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

use super::{Handler, Reply, RequestContext, later};
use crate::broker::Broker;
use crate::errors::log_error_code;
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

struct Wanted {
    topic: String,
    partition: i32,
    target: Option<Arc<Partition>>,
    offset: i64,
    max_bytes: usize,
}

async fn run(broker: Arc<Broker>, ctx: RequestContext, request: FetchRequest) -> Option<Response> {
    if request.session_id != 0 {
        let data = FetchResponseData {
            error_code: ResponseError::FetchSessionIdNotFound.code(),
            ..FetchResponseData::default()
        };
        return Some(encode_fetch_response(
            ctx.version,
            ctx.correlation_id,
            &data,
        ));
    }
    let wanted: Vec<Wanted> = request
        .topics
        .iter()
        .flat_map(|topic| {
            let name = topic.topic.0.to_string();
            let broker = &broker;
            topic.partitions.iter().map(move |p| Wanted {
                topic: name.clone(),
                partition: p.partition,
                target: broker.partition(&name, p.partition),
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            })
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
    loop {
        // Listen before reading, so that an append between the read and the wait wakes us.
        let mut listeners: Vec<_> = wanted
            .iter()
            .filter_map(|w| w.target.as_ref())
            .map(|p| Box::pin(p.next_append()))
            .collect();
        for listener in &mut listeners {
            listener.as_mut().enable();
        }
        let (data, bytes, failed) = read_all(&wanted, max_bytes, read_committed);
        let now = Instant::now();
        if bytes >= min_bytes || failed || now >= deadline || listeners.is_empty() {
            count_fetched(&wanted, &data);
            return Some(encode_fetch_response(
                ctx.version,
                ctx.correlation_id,
                &data,
            ));
        }
        tokio::select! {
            _ = select_all(listeners) => {}
            _ = tokio::time::sleep_until(deadline) => {}
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

/// Reads every wanted partition once. Returns the response data, the record bytes it holds
/// and whether any partition failed (an error is answered at once, not waited on).
fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
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
        };
        match &w.target {
            None => {
                fetched.error_code = ResponseError::UnknownTopicOrPartition.code();
                failed = true;
            }
            Some(partition) => {
                // Within the partition's and the response's limits; the log returns at least
                // one batch, so the response's first batch may exceed them (KIP-74), and a
                // later partition's first batch that does not fit is left out below.
                let budget = w.max_bytes.min(max_bytes.saturating_sub(total));
                match partition.read(w.offset, budget.max(1)) {
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
            Some(topic) if topic.name == w.topic => topic.partitions.push(fetched),
            _ => topics.push(FetchedTopic {
                name: w.topic.clone(),
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
