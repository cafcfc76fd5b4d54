//! The sink: a consumer-group member that writes the topic's metrics into PostgreSQL.
//!
//! Per batch, in this order: invalid messages go to the dead-letter topic (acknowledged),
//! valid ones are inserted in one transaction, and only then are the batch's offsets
//! committed. A crash anywhere before the commit replays the batch; the primary key
//! (topic, partition, offset) turns the replay into no new rows. So delivery into the table
//! is at-least-once and duplicates are never visible. Database and dead-letter failures are
//! retried with backoff without committing anything (at most one further batch is read
//! meanwhile, and held).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sluice_broker::clock::{Clock, SystemClock};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::kafka;
use crate::metric::{self, TimePolicy};
use crate::stats::SinkStats;
use crate::store::{self, Row, Writer};

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub bootstrap: String,
    pub topic: String,
    /// Partitions of the topic and its dead-letter topic if the sink creates them.
    pub partitions: i32,
    pub group: String,
    /// Static membership (`group.instance.id`): a restarted sink gets its partitions back
    /// at once instead of after the session timeout.
    pub instance_id: Option<String>,
    pub database_url: String,
    pub table: String,
    /// `<topic>.dlq` unless set.
    pub dead_letter_topic: String,
    /// Most messages per batch (one offset commit).
    pub batch_max: usize,
    /// PostgreSQL connections; a batch is split over them, one transaction each.
    pub database_connections: usize,
    /// How long a batch waits to fill once it has its first message.
    pub batch_linger: Duration,
    /// How often the stats line is logged and the lag measured.
    pub stats_interval: Duration,
    /// librdkafka properties applied over the consumer's and the dead-letter producer's
    /// defaults.
    pub client_properties: Vec<(String, String)>,
    /// Largest dead letter, key and headers included; `None`: the dead-letter topic's
    /// `max.message.bytes`, read at start.
    pub dead_letter_max_bytes: Option<usize>,
    /// Where the sink reads time (dead letters' `dlq.failed.at`, the end-to-end delay).
    pub clock: Arc<dyn Clock>,
}

impl SinkConfig {
    pub fn new(bootstrap: &str, database_url: &str) -> SinkConfig {
        SinkConfig {
            bootstrap: bootstrap.to_string(),
            topic: "metrics".into(),
            partitions: 8,
            group: "sluice-sink".into(),
            instance_id: None,
            database_url: database_url.to_string(),
            table: "metrics".into(),
            dead_letter_topic: "metrics.dlq".into(),
            batch_max: 10_000,
            database_connections: 2,
            batch_linger: Duration::from_millis(50),
            stats_interval: Duration::from_secs(10),
            client_properties: Vec::new(),
            dead_letter_max_bytes: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// What one poll loop gathered.
struct Batch {
    /// When its first message arrived.
    started: Instant,
    rows: Vec<Row>,
    /// The Kafka timestamp of each row's message (the gateway's receipt time).
    received_micros: Vec<i64>,
    dead_letters: Vec<DeadLetter>,
    /// Per partition, the offset after the last message read.
    next_offsets: HashMap<i32, i64>,
    messages: u64,
}

/// Runs until `shutdown` turns true, then finishes the batch in hand, commits it and leaves
/// the group.
pub async fn run(
    mut config: SinkConfig,
    stats: Arc<SinkStats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    store::check_table_name(&config.table).map_err(anyhow::Error::msg)?;
    kafka::check_not_reserved(&config.client_properties, RESERVED_CLIENT_PROPERTIES)?;
    kafka::ensure_topics(
        &config.bootstrap,
        &config.client_properties,
        &[
            (config.topic.as_str(), config.partitions),
            (config.dead_letter_topic.as_str(), config.partitions),
        ],
    )
    .await?;
    if config.dead_letter_max_bytes.is_none() {
        let max = kafka::max_message_bytes(
            &config.bootstrap,
            &config.client_properties,
            &config.dead_letter_topic,
        )
        .await;
        config.dead_letter_max_bytes = Some(max.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES));
    }
    let mut writers = Vec::with_capacity(config.database_connections);
    while writers.len() < config.database_connections {
        let Some(writer) = connect_with_retry(&config, &stats, &mut shutdown).await else {
            return Ok(());
        };
        writers.push(writer);
    }
    let consumer = Arc::new(consumer(&config)?);
    consumer
        .subscribe(&[&config.topic])
        .context("cannot subscribe")?;
    let dead_letters = dead_letter_producer(&config)?;
    tracing::info!(topic = %config.topic, group = %config.group, table = %config.table, "sink started");
    let reporter = tokio::spawn(report(
        consumer.clone(),
        stats.clone(),
        config.stats_interval,
    ));

    let mut errors = ConsumerErrors::default();
    // Two batches at a time: while one is written (PostgreSQL busy), the next is read and
    // parsed (this process busy). Writes and commits stay in batch order.
    let mut collecting = shutdown.clone();
    let mut in_hand = next_batch(&consumer, &config, &stats, &mut errors, &mut collecting).await;
    while let Some(batch) = in_hand {
        let write = async {
            let written = write_batch(
                &config,
                &stats,
                &mut writers,
                &dead_letters,
                &batch,
                &mut shutdown,
            )
            .await;
            if written {
                commit(&consumer, &config.topic, &batch, &stats);
                record_batch(&stats, &batch, config.clock.as_ref());
            }
            written
        };
        let read = async {
            if stopping(&collecting) {
                None
            } else {
                next_batch(&consumer, &config, &stats, &mut errors, &mut collecting).await
            }
        };
        let (written, next) = tokio::join!(write, read);
        if !written {
            tracing::warn!(
                messages = batch.messages,
                "stopping with a batch not written; it will be read again"
            );
            break;
        }
        in_hand = next;
    }

    reporter.abort();
    let _ = reporter.await;
    consumer.unsubscribe();
    // Dropping the consumer closes it: it leaves the group, which hands its partitions to
    // the other sinks at once. Closing polls, so it runs off the async threads.
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    tracing::info!("sink stopped");
    Ok(())
}

/// Client properties the sink owns: offsets are committed by hand, after the database.
pub const RESERVED_CLIENT_PROPERTIES: &[&str] = &[
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "acks",
    "request.required.acks",
    "enable.idempotence",
];

fn consumer(config: &SinkConfig) -> anyhow::Result<StreamConsumer> {
    kafka::check_not_reserved(&config.client_properties, RESERVED_CLIENT_PROPERTIES)?;
    let mut client = kafka::client_config(&config.bootstrap, "sluice-sink", &[]);
    client
        .set("group.id", &config.group)
        // Offsets are committed by hand, after the database commit.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A crashed sink's partitions move to the others after 10 s, not librdkafka's 45 s.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // A database outage stops polling; leave room for it before the group evicts us.
        .set("max.poll.interval.ms", "600000")
        .set("fetch.wait.max.ms", "100");
    if let Some(id) = &config.instance_id {
        client.set("group.instance.id", id);
    }
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client.create().context("cannot create the Kafka consumer")
}

fn dead_letter_producer(config: &SinkConfig) -> anyhow::Result<FutureProducer> {
    let mut client = kafka::client_config(&config.bootstrap, "sluice-sink-dlq", &[]);
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000");
    for (key, value) in &config.client_properties {
        client.set(key, value);
    }
    client
        .create()
        .context("cannot create the dead-letter producer")
}

/// Waits for the first message (or shutdown), then gathers more until the batch is full or
/// its linger time is over.
async fn next_batch(
    consumer: &StreamConsumer,
    config: &SinkConfig,
    stats: &SinkStats,
    errors: &mut ConsumerErrors,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Batch> {
    let mut batch = Batch {
        started: Instant::now(),
        rows: Vec::new(),
        received_micros: Vec::new(),
        dead_letters: Vec::new(),
        next_offsets: HashMap::new(),
        messages: 0,
    };
    loop {
        tokio::select! {
            biased;
            () = stopped(shutdown) => return None,
            message = consumer.recv() => match message {
                Ok(message) => {
                    batch.started = Instant::now();
                    add(&mut batch, &message, config, stats);
                    break;
                }
                Err(err) => {
                    errors.report(&err);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + config.batch_linger;
    while batch.messages < config.batch_max as u64 && !stopping(shutdown) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => add(&mut batch, &message, config, stats),
            Ok(Err(err)) => errors.report(&err),
            Err(_elapsed) => break,
        }
    }
    Some(batch)
}

fn add(batch: &mut Batch, message: &BorrowedMessage<'_>, config: &SinkConfig, stats: &SinkStats) {
    batch.messages += 1;
    stats.consumed.fetch_add(1, Ordering::Relaxed);
    let partition = message.partition();
    let offset = message.offset();
    let next = batch.next_offsets.entry(partition).or_insert(offset + 1);
    *next = (*next).max(offset + 1);
    let received_micros = message
        .timestamp()
        .to_millis()
        .unwrap_or(0)
        .saturating_mul(1000);
    let parsed = match message.payload() {
        None => Err("empty message (no value)".to_string()),
        Some(payload) => metric::parse_one(
            payload,
            TimePolicy {
                default_micros: received_micros,
                range: None,
            },
        )
        .map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(metric) => {
            batch.rows.push(Row {
                metric,
                partition,
                offset,
            });
            batch.received_micros.push(received_micros);
        }
        Err(error) => {
            stats.invalid.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(partition, offset, %error, "invalid message to the dead-letter topic");
            batch.dead_letters.push(dead_letter(
                message,
                &config.topic,
                &error,
                config.clock.as_ref(),
                config
                    .dead_letter_max_bytes
                    .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            ));
        }
    }
}

/// Kafka's default `max.message.bytes`, assumed when the topic's cannot be read.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;
/// librdkafka's default `message.max.bytes`: the producer refuses larger messages itself.
const PRODUCER_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// Room kept for the record batch and record framing around a letter.
const FRAMING_BYTES: usize = 512;
/// Longest `dlq.error` text kept.
const MAX_ERROR_BYTES: usize = 1024;

/// A message that failed validation, on its way to the dead-letter topic: the original
/// key, value and headers, cut to fit, plus `dlq.*` headers saying what was wrong, where it
/// came from and what was cut.
struct DeadLetter {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The original headers (dropped if they did not fit).
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// The `dlq.*` headers, always sent.
    about: Vec<(&'static str, String)>,
}

impl DeadLetter {
    /// What the letter weighs in a record batch, framing included (an upper bound).
    fn size(&self) -> usize {
        FRAMING_BYTES
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| header_bytes(k, v.as_deref()))
                .sum::<usize>()
            + self
                .about
                .iter()
                .map(|(k, v)| header_bytes(k, Some(v.as_bytes())))
                .sum::<usize>()
    }

    fn record_headers(&self, minimal: bool) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len() + self.about.len());
        if !minimal {
            for (key, value) in &self.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
        }
        for (key, value) in &self.about {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        headers
    }
}

/// The bytes a header adds to a record, framing included.
fn header_bytes(key: &str, value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + 10
}

/// The original key, value and headers, plus headers saying what was wrong and where the
/// message came from; the whole cut to `max_bytes` (the dead-letter topic's
/// `max.message.bytes`, and never above what the producer sends), or the write could never
/// succeed and would stall the partition. What gives way, in order: the value (cut, with
/// `dlq.truncated.from`), the original headers (dropped, with `dlq.headers.dropped`), the
/// key (cut to a quarter of the room, with `dlq.key.truncated.from`).
fn dead_letter(
    message: &BorrowedMessage<'_>,
    topic: &str,
    error: &str,
    clock: &dyn Clock,
    max_bytes: usize,
) -> DeadLetter {
    let mut error = error.to_string();
    if error.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
    }
    let mut about: Vec<(&'static str, String)> = vec![
        ("dlq.error", error),
        ("dlq.source.topic", topic.to_string()),
        ("dlq.source.partition", message.partition().to_string()),
        ("dlq.source.offset", message.offset().to_string()),
        (
            "dlq.source.timestamp",
            message.timestamp().to_millis().unwrap_or(-1).to_string(),
        ),
        ("dlq.failed.at", clock.now_ms().to_string()),
    ];
    // rdkafka panics on a header name that is not UTF-8; such a message still goes to the
    // dead-letter topic, with a header saying its headers were dropped.
    let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut headers = Vec::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers.push((header.key.to_string(), header.value.map(<[u8]>::to_vec)));
            }
        }
        headers
    }));
    let headers = copied.unwrap_or_else(|_| {
        about.push(("dlq.headers.dropped", "a header name is not UTF-8".into()));
        Vec::new()
    });
    fit_letter(
        message.key().map(<[u8]>::to_vec),
        message.payload().map(<[u8]>::to_vec),
        headers,
        about,
        max_bytes,
    )
}

/// Cuts a dead letter to `max_bytes` (see [`dead_letter`]).
fn fit_letter(
    mut key: Option<Vec<u8>>,
    mut payload: Option<Vec<u8>>,
    mut headers: Vec<(String, Option<Vec<u8>>)>,
    mut about: Vec<(&'static str, String)>,
    max_bytes: usize,
) -> DeadLetter {
    // Room for the markers this function may add, whatever their values.
    let markers = 3 * header_bytes("dlq.key.truncated.from", Some(b"18446744073709551615"));
    let fixed: usize = about
        .iter()
        .map(|(k, v)| header_bytes(k, Some(v.as_bytes())))
        .sum::<usize>()
        + markers;
    let room = max_bytes
        .min(PRODUCER_MAX_MESSAGE_BYTES)
        .saturating_sub(FRAMING_BYTES + fixed);
    if let Some(bytes) = &mut key
        && bytes.len() > room / 4
    {
        about.push(("dlq.key.truncated.from", bytes.len().to_string()));
        bytes.truncate(room / 4);
    }
    let room = room - key.as_ref().map_or(0, Vec::len);
    let original: usize = headers
        .iter()
        .map(|(k, v)| header_bytes(k, v.as_deref()))
        .sum();
    if original > room / 2 {
        about.push((
            "dlq.headers.dropped",
            format!("{} headers of {original} bytes did not fit", headers.len()),
        ));
        headers.clear();
    }
    let room = room
        - headers
            .iter()
            .map(|(k, v)| header_bytes(k, v.as_deref()))
            .sum::<usize>();
    if let Some(bytes) = &mut payload
        && bytes.len() > room
    {
        about.push(("dlq.truncated.from", bytes.len().to_string()));
        bytes.truncate(room);
    }
    let letter = DeadLetter {
        key,
        payload,
        headers,
        about,
    };
    assert!(
        letter.size() <= max_bytes.min(PRODUCER_MAX_MESSAGE_BYTES)
            || letter.size() <= fixed + FRAMING_BYTES,
        "a dead letter fits its topic unless its own headers do not"
    );
    letter
}

fn record_batch(stats: &SinkStats, batch: &Batch, clock: &dyn Clock) {
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.batch_latency.observe(batch.started.elapsed());
    let now = clock.now_micros();
    for received in &batch.received_micros {
        stats.end_to_end.observe(Duration::from_micros(
            now.saturating_sub(*received).max(0) as u64
        ));
    }
}

/// Dead letters first (acknowledged), then the rows; each step retried with backoff until it
/// succeeds. Returns false if shutdown came while a step was still failing.
async fn write_batch(
    config: &SinkConfig,
    stats: &SinkStats,
    writers: &mut [Writer],
    producer: &FutureProducer,
    batch: &Batch,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut backoff = Backoff::new();
    // After a size refusal (the topic's limit went down since the letters were cut) the
    // letters go without their original key, value and headers: the `dlq.*` headers still
    // say where each message is in the source topic.
    let mut minimal = false;
    while let Err(err) =
        send_dead_letters(producer, &config.dead_letter_topic, batch, minimal).await
    {
        minimal |= is_size_refusal(&err);
        stats.dead_letter_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, topic = %config.dead_letter_topic, "dead-letter write failed; retrying");
        if !backoff.wait(shutdown).await {
            return false;
        }
    }
    stats
        .dead_lettered
        .fetch_add(batch.dead_letters.len() as u64, Ordering::Relaxed);
    // Split over the connections: concurrent transactions on disjoint keys, so PostgreSQL
    // uses more than one core. The batch counts as written only when every part is.
    let parts = writers
        .len()
        .min(batch.rows.len() / MIN_ROWS_PER_CONNECTION)
        .max(1);
    let chunk = batch.rows.len().div_ceil(parts).max(1);
    let mut backoff = Backoff::new();
    loop {
        if let Err(err) = reconnect(config, &mut writers[..parts]).await {
            stats.database_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %store::describe(&err), "database unreachable; retrying");
            if !backoff.wait(shutdown).await {
                return false;
            }
            continue;
        }
        let inserts = writers
            .iter()
            .zip(batch.rows.chunks(chunk))
            .map(|(writer, rows)| writer.insert(&config.topic, rows));
        let mut inserted = 0;
        let mut failure = None;
        for result in futures_util::future::join_all(inserts).await {
            match result {
                Ok(n) => inserted += n,
                Err(err) => failure = Some(err),
            }
        }
        match failure {
            None => {
                stats.inserted.fetch_add(inserted, Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add(batch.rows.len() as u64 - inserted, Ordering::Relaxed);
                return true;
            }
            // Parts that did commit are skipped by the primary key on the retry.
            Some(err) => {
                stats.database_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, rows = batch.rows.len(), "insert failed; retrying");
                if !backoff.wait(shutdown).await {
                    return false;
                }
            }
        }
    }
}

/// Each connection gets at least this many rows of a batch (smaller batches use one).
const MIN_ROWS_PER_CONNECTION: usize = 1000;

/// Replaces closed connections.
async fn reconnect(
    config: &SinkConfig,
    writers: &mut [Writer],
) -> Result<(), tokio_postgres::Error> {
    for writer in writers {
        if writer.is_closed() {
            *writer = Writer::connect(&config.database_url, &config.table).await?;
            tracing::info!("reconnected to the database");
        }
    }
    Ok(())
}

fn is_size_refusal(err: &rdkafka::error::KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord)
    )
}

async fn send_dead_letters(
    producer: &FutureProducer,
    topic: &str,
    batch: &Batch,
    minimal: bool,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut deliveries = Vec::with_capacity(batch.dead_letters.len());
    for letter in &batch.dead_letters {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(letter.record_headers(minimal));
        if !minimal {
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            if let Some(payload) = &letter.payload {
                record = record.payload(payload);
            }
        }
        deliveries.push(producer.send_result(record).map_err(|(err, _)| err)?);
    }
    for delivery in futures_util::future::join_all(deliveries).await {
        match delivery {
            Ok(Ok(_)) => {}
            Ok(Err((err, _))) => return Err(err),
            Err(_canceled) => return Err(rdkafka::error::KafkaError::Canceled),
        }
    }
    Ok(())
}

/// Commits the batch's offsets for the partitions still assigned to us (a partition that
/// moved away meanwhile is its new owner's to commit). A refused commit only means the
/// batch is read again, which the primary key makes harmless.
fn commit(consumer: &StreamConsumer, topic: &str, batch: &Batch, stats: &SinkStats) {
    let assigned = consumer.assignment().unwrap_or_default();
    let mut offsets = TopicPartitionList::new();
    for (&partition, &next) in &batch.next_offsets {
        if assigned.find_partition(topic, partition).is_some()
            && let Err(err) = offsets.add_partition_offset(topic, partition, Offset::Offset(next))
        {
            tracing::warn!(error = %err, "cannot build the offset commit");
        }
    }
    if offsets.count() == 0 {
        return;
    }
    // Synchronous: the stats and the shutdown path must know the commit happened.
    let result = tokio::task::block_in_place(|| consumer.commit(&offsets, CommitMode::Sync));
    if let Err(err) = result {
        stats.commit_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %err, "offset commit failed; the batch will be read again");
    }
}

async fn connect_with_retry(
    config: &SinkConfig,
    stats: &SinkStats,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Writer> {
    let mut backoff = Backoff::new();
    loop {
        match Writer::connect(&config.database_url, &config.table).await {
            Ok(writer) => return Some(writer),
            Err(err) => {
                stats.database_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %store::describe(&err), "cannot reach the database; retrying");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Consumer errors (mostly a broker going away, which librdkafka retries by itself) are
/// logged when they change or every 30 s, not five times a second.
#[derive(Default)]
struct ConsumerErrors {
    last: Option<(String, Instant)>,
    repeated: u64,
}

impl ConsumerErrors {
    fn report(&mut self, err: &rdkafka::error::KafkaError) {
        let text = err.to_string();
        match &self.last {
            Some((last, at)) if *last == text && at.elapsed() < Duration::from_secs(30) => {
                self.repeated += 1;
            }
            _ => {
                tracing::warn!(error = %text, repeated = self.repeated, "consumer error");
                self.last = Some((text, Instant::now()));
                self.repeated = 0;
            }
        }
    }
}

/// 100 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    /// Sleeps; false if shutdown came first.
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        tokio::select! {
            () = stopped(shutdown) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Every `interval`: measures the lag of the assigned partitions and logs one stats line.
async fn report(consumer: Arc<StreamConsumer>, stats: Arc<SinkStats>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let mut last = (Instant::now(), stats.inserted.load(Ordering::Relaxed));
    loop {
        ticker.tick().await;
        let measuring = consumer.clone();
        if let Ok(Some(lag)) = tokio::task::spawn_blocking(move || lag(&measuring)).await {
            stats.lag.store(lag, Ordering::Relaxed);
        }
        let inserted = stats.inserted.load(Ordering::Relaxed);
        let rate = (inserted - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), inserted);
        tracing::info!(
            consumed = stats.consumed.load(Ordering::Relaxed),
            inserted,
            duplicates = stats.duplicates.load(Ordering::Relaxed),
            failed = stats.invalid.load(Ordering::Relaxed),
            dlq = stats.dead_lettered.load(Ordering::Relaxed),
            db_errors = stats.database_errors.load(Ordering::Relaxed),
            rate = format!("{rate:.0} rows/s"),
            lag = stats.lag.load(Ordering::Relaxed),
            "sink stats"
        );
    }
}

/// Messages not yet read in the assigned partitions: high watermark − position.
fn lag(consumer: &StreamConsumer) -> Option<i64> {
    let positions = consumer.position().ok()?;
    let mut total = 0;
    for element in positions.elements() {
        let (low, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(2))
            .ok()?;
        let position = match element.offset() {
            Offset::Offset(n) => n,
            _ => low,
        };
        total += (high - position).max(0);
    }
    Some(total)
}

/// Resolves once shutdown is asked for.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The value is a lock guard: drop it here, never hold it in a select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Whether shutdown was asked for (the guard is dropped before any await).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}

/// Serves `/metrics` (Prometheus) and `/healthz` for a sink running on its own.
pub async fn serve_metrics(
    listen: std::net::SocketAddr,
    stats: Arc<SinkStats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<std::net::SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let mut out = sluice_broker::prometheus::TextWriter::new();
                stats.render(&mut out);
                out.finish()
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped(&mut shutdown).await })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "sink metrics endpoint failed");
        }
    });
    Ok(local_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about() -> Vec<(&'static str, String)> {
        vec![
            ("dlq.error", "x".repeat(MAX_ERROR_BYTES)),
            ("dlq.source.topic", "metrics".into()),
            ("dlq.source.offset", "123456789".into()),
        ]
    }

    fn header(key: &str, len: usize) -> (String, Option<Vec<u8>>) {
        (key.to_string(), Some(vec![b'h'; len]))
    }

    fn marker<'a>(letter: &'a DeadLetter, key: &str) -> Option<&'a str> {
        letter
            .about
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_letter_that_fits_is_kept_whole() {
        let letter = fit_letter(
            Some(b"key".to_vec()),
            Some(vec![b'p'; 10_000]),
            vec![header("origin", 10)],
            about(),
            1_048_588,
        );
        assert_eq!(letter.payload.as_ref().unwrap().len(), 10_000);
        assert_eq!(letter.headers.len(), 1);
        assert_eq!(letter.about.len(), 3, "no cut marker");
    }

    #[test]
    fn key_headers_and_value_give_way_until_the_letter_fits() {
        for max in [1_048_588, 1_000_000, 100_000, 8_192] {
            // What a source topic at 1 MiB can hold: a big key, big headers, a big value.
            let letter = fit_letter(
                Some(vec![b'k'; 200_000]),
                Some(vec![b'p'; 600_000]),
                vec![header("a", 100_000), header("b", 100_000)],
                about(),
                max,
            );
            assert!(letter.size() <= max, "{max}: {}", letter.size());
            assert_eq!(marker(&letter, "dlq.truncated.from"), Some("600000"));
            assert_eq!(marker(&letter, "dlq.source.offset"), Some("123456789"));
            if max < 1_000_000 {
                assert_eq!(marker(&letter, "dlq.key.truncated.from"), Some("200000"));
                assert!(marker(&letter, "dlq.headers.dropped").is_some());
            }
        }
    }

    #[test]
    fn a_limit_below_the_letters_own_headers_leaves_only_those() {
        let letter = fit_letter(
            Some(vec![b'k'; 100]),
            Some(vec![b'p'; 100]),
            vec![header("a", 100)],
            about(),
            1_000,
        );
        assert!(letter.key.as_ref().is_none_or(Vec::is_empty));
        assert!(letter.payload.as_ref().is_none_or(Vec::is_empty));
        assert!(letter.headers.is_empty());
    }
}
