//! `sluice bench produce|consume|e2e`: load against any Kafka-compatible cluster through
//! librdkafka, the tool with which Sluice is compared to other brokers in the same run.
//!
//! produce: N producer threads send fixed-size messages (optionally at a target rate) and
//! measure latency from send to acknowledgement. consume: M consumers in one group read the
//! topic from the beginning. e2e: producers stamp each message with the wall clock, a
//! consumer measures the time until it reads it. Live progress on stderr (when it is a
//! terminal), then msgs/s, MB/s and latency percentiles; `--json` for scripts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::ClientContext;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::client::{Connection, admin_options, block_on};
use crate::size::parse_size;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Topic to use; created with --partitions if it does not exist.
    #[arg(long, short, default_value = "sluice-bench")]
    topic: String,
    /// Partitions of the topic when the benchmark creates it.
    #[arg(long, short, default_value_t = 1)]
    partitions: i32,
    /// Size of each message value.
    #[arg(long, short = 's', default_value = "100B", value_parser = parse_size)]
    message_size: u64,
    /// Messages to send (or read) in total; ignored with --duration.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    count: u64,
    /// Run for this many seconds instead of a message count.
    #[arg(long, short)]
    duration: Option<f64>,
    /// Target send rate, messages per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// all, 1 or 0.
    #[arg(long, default_value = "1", value_parser = ["all", "-1", "1", "0"])]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    /// Producer batch.size in bytes.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    batch_size: u64,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Producer threads (one client each).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer threads (one group member each).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Consumers assign themselves partitions (consumer i reads partitions p with
    /// p % consumers == i) instead of joining a group: for clusters without group support,
    /// and to leave the group protocol out of the measurement.
    #[arg(long)]
    assign: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    EndToEnd,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds since the Unix epoch (end-to-end stamps cross processes).
fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct Counters {
    start: Instant,
    messages: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    /// When the first and the last message were read, µs after `start`: consume throughput
    /// leaves out the group join before the first.
    first_micros: AtomicU64,
    last_micros: AtomicU64,
}

impl Counters {
    fn new() -> Arc<Self> {
        Arc::new(Counters {
            start: Instant::now(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_micros: AtomicU64::new(u64::MAX),
            last_micros: AtomicU64::new(0),
        })
    }

    fn mark_first(&self) {
        let now = self.start.elapsed().as_micros() as u64;
        self.first_micros.fetch_min(now, Ordering::Relaxed);
    }

    /// Publishes messages read since the last call.
    fn add(&self, messages: u64, bytes: u64) {
        if messages == 0 {
            return;
        }
        let now = self.start.elapsed().as_micros() as u64;
        self.last_micros.fetch_max(now, Ordering::Relaxed);
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// From the first to the last message read.
    fn reading_time(&self) -> Option<Duration> {
        let first = self.first_micros.load(Ordering::Relaxed);
        let last = self.last_micros.load(Ordering::Relaxed);
        (first != u64::MAX && last > first).then(|| Duration::from_micros(last - first))
    }
}

/// Records send→ack latency per message (the opaque is the send time in µs since `start`).
struct DeliveryTimer {
    start: Instant,
    latency: Mutex<Histogram<u64>>,
    counters: Arc<Counters>,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTimer {}

impl ProducerContext for DeliveryTimer {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_micros: usize) {
        match result {
            Ok(message) => {
                let now = self.start.elapsed().as_micros() as u64;
                let _ = self
                    .latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(now.saturating_sub(sent_micros as u64).max(1));
                self.counters.messages.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(message.payload_len() as u64, Ordering::Relaxed);
            }
            Err((err, _)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| err.to_string());
            }
        }
    }
}

fn ensure_topic(args: &LoadArgs) -> anyhow::Result<()> {
    let consumer = args.connection.query_consumer(None)?;
    let metadata = args.connection.metadata(&consumer, None)?;
    if metadata.topics().iter().any(|t| t.name() == args.topic) {
        return Ok(());
    }
    let admin = args.connection.admin()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    for result in block_on(admin.create_topics(&[topic], &admin_options()))?
        .map_err(|e| anyhow::anyhow!("cannot create topic {}: {e}", args.topic))?
    {
        result.map_err(|(name, code)| anyhow::anyhow!("cannot create topic {name}: {code}"))?;
    }
    Ok(())
}

/// Sends until `quota` messages are sent or `stop`; stamps values for end to end.
fn produce_loop(
    args: &LoadArgs,
    quota: u64,
    rate: f64,
    stop: &AtomicBool,
    counters: Arc<Counters>,
) -> anyhow::Result<(Histogram<u64>, Option<String>, Instant)> {
    let timer = DeliveryTimer {
        start: Instant::now(),
        latency: Mutex::new(histogram()),
        counters,
        first_error: Mutex::new(None),
    };
    let producer: ThreadedProducer<DeliveryTimer> = args
        .connection
        .config()?
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("batch.size", args.batch_size.to_string())
        .set("linger.ms", args.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(timer)
        .context("cannot create a producer")?;
    let mut value = vec![b'x'; args.message_size as usize];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < quota && !stop.load(Ordering::Relaxed) {
        if rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
                continue;
            }
        }
        if value.len() >= 8 {
            value[..8].copy_from_slice(&wall_micros().to_be_bytes());
        }
        let opaque = producer.context().start.elapsed().as_micros() as usize;
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&args.topic, opaque).payload(value.as_slice());
        loop {
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((err, _)) => anyhow::bail!("send failed: {err}"),
            }
        }
        sent += 1;
    }
    producer
        .flush(Duration::from_secs(120))
        .context("messages still unacknowledged after 120 s")?;
    let context = producer.context();
    let latency = context
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let error = context
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok((latency, error, Instant::now()))
}

/// Reads until `quota` messages, `stop`, or 10 s without a message; for end to end,
/// records the stamp-to-read latency.
#[allow(clippy::too_many_arguments)]
fn consume_loop(
    args: &LoadArgs,
    group: &str,
    index: usize,
    from_end: bool,
    quota: u64,
    stop: &AtomicBool,
    counters: &Counters,
    ready: &AtomicU64,
) -> anyhow::Result<Histogram<u64>> {
    let consumer: BaseConsumer = args
        .connection
        .config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_end { "latest" } else { "earliest" },
        )
        .set("fetch.max.bytes", "52428800")
        .set("queued.min.messages", "1000000")
        .create()
        .context("cannot create a consumer")?;
    if args.assign {
        let metadata = args.connection.metadata(&consumer, Some(&args.topic))?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        let start = if from_end {
            rdkafka::Offset::End
        } else {
            rdkafka::Offset::Beginning
        };
        for topic in metadata.topics().iter().filter(|t| t.name() == args.topic) {
            for p in topic.partitions() {
                if p.id() as usize % args.consumers == index {
                    assignment.add_partition_offset(&args.topic, p.id(), start)?;
                }
            }
        }
        consumer
            .assign(&assignment)
            .context("cannot assign partitions")?;
    } else {
        consumer
            .subscribe(&[&args.topic])
            .context("cannot subscribe")?;
    }
    let mut latency = histogram();
    let mut assigned = false;
    // Counted locally and published every 1024 messages: per-message atomics and clock
    // reads would make this loop, not the broker, the limit at small message sizes.
    let (mut pending_messages, mut pending_bytes) = (0u64, 0u64);
    let mut seen_first = false;
    let mut idle_since: Option<Instant> = None;
    loop {
        if counters.messages.load(Ordering::Relaxed) + pending_messages >= quota
            || stop.load(Ordering::Relaxed)
        {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                idle_since = None;
                let payload = message.payload().unwrap_or_default();
                // Reading from the log end means end to end: the stamps are fresh.
                if from_end && payload.len() >= 8 {
                    let stamp = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    let _ = latency.record(wall_micros().saturating_sub(stamp).max(1));
                }
                if !seen_first {
                    seen_first = true;
                    counters.mark_first();
                }
                pending_messages += 1;
                pending_bytes += payload.len() as u64;
                if pending_messages >= 1024 {
                    counters.add(pending_messages, pending_bytes);
                    (pending_messages, pending_bytes) = (0, 0);
                }
            }
            Some(Err(err)) => anyhow::bail!("consume failed: {err}"),
            None => {
                counters.add(pending_messages, pending_bytes);
                (pending_messages, pending_bytes) = (0, 0);
                if !assigned && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    assigned = true;
                    ready.fetch_add(1, Ordering::SeqCst);
                }
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) && (!from_end || assigned) {
                    break;
                }
            }
        }
        if !assigned && consumer.assignment().is_ok_and(|a| a.count() > 0) {
            assigned = true;
            ready.fetch_add(1, Ordering::SeqCst);
        }
    }
    counters.add(pending_messages, pending_bytes);
    Ok(latency)
}

pub fn run(args: &LoadArgs, mode: Mode) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.producers > 0 && args.consumers > 0,
        "--producers and --consumers must be at least 1"
    );
    if mode == Mode::EndToEnd {
        anyhow::ensure!(
            args.message_size >= 8,
            "end to end needs --message-size of at least 8 bytes"
        );
    }
    ensure_topic(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = crate::client::interrupted();
    let quota = if args.duration.is_some() {
        u64::MAX
    } else {
        args.count
    };
    let sent = Counters::new();
    let read = Counters::new();
    let ready = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let group = format!("sluice-bench-{}-{}", std::process::id(), wall_micros());

    let mut consumers = Vec::new();
    if mode != Mode::Produce {
        for index in 0..args.consumers {
            let (args, stop, read, ready, group) = (
                args.clone(),
                stop.clone(),
                read.clone(),
                ready.clone(),
                group.clone(),
            );
            consumers.push(std::thread::spawn(move || {
                consume_loop(
                    &args,
                    &group,
                    index,
                    mode == Mode::EndToEnd,
                    quota,
                    &stop,
                    &read,
                    &ready,
                )
            }));
        }
        if mode == Mode::EndToEnd {
            // Producing before the consumers own their partitions would lose the first stamps.
            let deadline = Instant::now() + Duration::from_secs(30);
            while ready.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let mut producers = Vec::new();
    if mode != Mode::Consume {
        let per_producer = quota / args.producers as u64;
        let rate = args.rate as f64 / args.producers as f64;
        for i in 0..args.producers {
            let extra = u64::from((i as u64) < quota % args.producers as u64);
            let (args, stop, sent) = (args.clone(), stop.clone(), sent.clone());
            producers.push(std::thread::spawn(move || {
                produce_loop(&args, per_producer.saturating_add(extra), rate, &stop, sent)
            }));
        }
    }

    // Progress until done, the duration is up, or Ctrl-C.
    let progress = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    let watched = if mode == Mode::Produce { &sent } else { &read };
    let measure_start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let done_producing = producers.iter().all(|p| p.is_finished());
        let done_consuming = consumers.iter().all(|c| c.is_finished());
        let n = watched.messages.load(Ordering::Relaxed);
        let seconds = measure_start.elapsed().as_secs_f64();
        progress.set_message(format!(
            "{n} messages, {:.0} msgs/s",
            n as f64 / seconds.max(1e-9)
        ));
        progress.tick();
        let timed_out = args.duration.is_some_and(|d| seconds >= d);
        if interrupted.load(Ordering::SeqCst) || timed_out {
            stop.store(true, Ordering::SeqCst);
        }
        if done_producing && done_consuming {
            break;
        }
        if mode == Mode::EndToEnd && done_producing && n >= sent.messages.load(Ordering::Relaxed) {
            stop.store(true, Ordering::SeqCst);
        }
    }
    progress.finish_and_clear();
    // The progress loop wakes every 200 ms; the producers' own end times are exact.
    let mut elapsed = started.elapsed();

    let mut latency = histogram();
    let mut first_error = None;
    let mut last_ack: Option<Instant> = None;
    for p in producers {
        let (h, error, done) = p
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        last_ack = Some(last_ack.map_or(done, |t| t.max(done)));
        if mode == Mode::Produce {
            latency.add(&h).ok();
        }
        first_error = first_error.or(error);
    }
    for c in consumers {
        let h = c
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        if mode == Mode::EndToEnd {
            latency.add(&h).ok();
        }
    }
    let counters = if mode == Mode::Produce { &sent } else { &read };
    let messages = counters.messages.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let failed = sent.failed.load(Ordering::Relaxed);
    if mode == Mode::Produce
        && let Some(done) = last_ack
    {
        elapsed = done - started;
    }
    let elapsed = match mode {
        Mode::Consume | Mode::EndToEnd => read.reading_time().unwrap_or(elapsed),
        Mode::Produce => elapsed,
    };
    report(args, mode, messages, bytes, failed, elapsed, &latency);
    if let Some(err) = first_error {
        anyhow::bail!("{failed} message(s) failed, first: {err}");
    }
    anyhow::ensure!(
        messages > 0,
        "no message was {}",
        if mode == Mode::Produce {
            "acknowledged"
        } else {
            "read"
        }
    );
    Ok(())
}

fn report(
    args: &LoadArgs,
    mode: Mode,
    messages: u64,
    bytes: u64,
    failed: u64,
    elapsed: Duration,
    latency: &Histogram<u64>,
) {
    let seconds = elapsed.as_secs_f64();
    let msgs_per_s = messages as f64 / seconds;
    // What was read, for consume (the topic may hold another size than --message-size).
    let message_size = match mode {
        Mode::Consume if messages > 0 => bytes / messages,
        _ => args.message_size,
    };
    let mb_per_s = bytes as f64 / seconds / 1e6;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let name = match mode {
        Mode::Produce => "produce",
        Mode::Consume => "consume",
        Mode::EndToEnd => "e2e",
    };
    if args.json {
        let latency_json = if latency.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({
                "p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99), "p99_9": ms(0.999),
                "max": latency.max() as f64 / 1000.0,
            })
        };
        let line = serde_json::json!({
            "bench": name, "topic": args.topic, "bootstrap": args.connection.bootstrap,
            "message_size": message_size, "acks": args.acks, "compression": args.compression,
            "producers": args.producers, "consumers": args.consumers,
            "messages": messages, "failed": failed, "seconds": seconds,
            "msgs_per_s": msgs_per_s, "mb_per_s": mb_per_s, "latency_ms": latency_json,
        });
        crate::say!("{line}");
        return;
    }
    crate::say!(
        "{name}: {messages} messages of {message_size} bytes in {seconds:.2} s: {msgs_per_s:.0} msgs/s, {mb_per_s:.1} MB/s{}",
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    if !latency.is_empty() {
        let what = if mode == Mode::Produce {
            "send to ack"
        } else {
            "send to read"
        };
        crate::say!(
            "latency ({what}), ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(0.999),
            latency.max() as f64 / 1000.0
        );
    }
}
