//! `sluice consume TOPIC`: prints messages until `--count` is reached, the end of the
//! partitions with `--exit-at-end`, or Ctrl-C.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::{Connection, TIMEOUT, interrupted};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sluice consume demo --from beginning --exit-at-end\n  sluice consume orders --group billing --format json\n  sluice consume orders --from timestamp:1700000000000 --count 10\n  sluice consume orders --partition 0 --from offset:42"
)]
pub struct ConsumeArgs {
    topic: String,
    /// Where to start: beginning, end, offset:N or timestamp:MS (epoch milliseconds). With
    /// --group, only where the group has no committed offset (beginning or end).
    #[arg(long, default_value = "end")]
    from: String,
    /// Consume as a member of this group, committing what was printed.
    #[arg(long, short)]
    group: Option<String>,
    /// Only this partition (default: all).
    #[arg(long, short)]
    partition: Option<i32>,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop at the end of every partition instead of waiting for more.
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// value: the value as text; json: one JSON object per line with topic, partition,
    /// offset, timestamp, key, value and headers.
    #[arg(long, default_value = "value", value_parser = ["value", "json"])]
    format: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

fn parse_start(text: &str) -> anyhow::Result<Start> {
    Ok(match text {
        "beginning" | "earliest" => Start::Beginning,
        "end" | "latest" => Start::End,
        other => {
            let (kind, number) = other.split_once(':').with_context(|| {
                format!("--from {other:?}: expected beginning, end, offset:N or timestamp:MS")
            })?;
            let number: i64 = number
                .parse()
                .with_context(|| format!("--from {other:?}: {number:?} is not a number"))?;
            match kind {
                "offset" => Start::Offset(number),
                "timestamp" => Start::Timestamp(number),
                _ => anyhow::bail!(
                    "--from {other:?}: expected beginning, end, offset:N or timestamp:MS"
                ),
            }
        }
    })
}

pub fn run(args: &ConsumeArgs) -> anyhow::Result<()> {
    let start = parse_start(&args.from)?;
    let mut config = args.connection.config();
    config
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set(
            "auto.offset.reset",
            if matches!(start, Start::Beginning) {
                "earliest"
            } else {
                "latest"
            },
        );
    config.set(
        "group.id",
        args.group.as_deref().unwrap_or("sluice-cli-consume"),
    );
    let consumer: BaseConsumer = config.create().context("cannot create a consumer")?;
    let metadata = args.connection.metadata(&consumer, Some(&args.topic))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic && t.error().is_none() && !t.partitions().is_empty())
        .with_context(|| format!("unknown topic {}", args.topic))?;
    let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    if let Some(p) = args.partition {
        anyhow::ensure!(
            partitions.contains(&p),
            "topic {} has no partition {p}",
            args.topic
        );
        partitions = vec![p];
    }

    if args.group.is_some() && args.partition.is_none() {
        anyhow::ensure!(
            matches!(start, Start::Beginning | Start::End),
            "--from offset/timestamp needs --partition, or no --group (use `sluice group reset-offsets`)"
        );
        consumer
            .subscribe(&[&args.topic])
            .context("cannot subscribe")?;
    } else {
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            let offset = match start {
                Start::Beginning => Offset::Beginning,
                Start::End => Offset::End,
                Start::Offset(n) => Offset::Offset(n),
                Start::Timestamp(ms) => {
                    let mut query = TopicPartitionList::new();
                    query.add_partition_offset(&args.topic, p, Offset::Offset(ms))?;
                    let found = consumer
                        .offsets_for_times(query, TIMEOUT)
                        .context("cannot look offsets up by timestamp")?;
                    found
                        .find_partition(&args.topic, p)
                        .map_or(Offset::End, |e| match e.offset() {
                            Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                            _ => Offset::End,
                        })
                }
            };
            assignment.add_partition_offset(&args.topic, p, offset)?;
        }
        consumer
            .assign(&assignment)
            .context("cannot assign partitions")?;
    }

    let stop = interrupted();
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut at_end = std::collections::HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match result {
            Ok(message) => message,
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
                if args.exit_at_end && partitions.iter().all(|p| at_end.contains(p)) {
                    break;
                }
                continue;
            }
            Err(err) => anyhow::bail!("consume failed: {err}"),
        };
        at_end.remove(&message.partition());
        match print_message(&mut out, &message, &args.format) {
            Ok(()) => {}
            // The reader went away (`| head`): stop like any filter does.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(err) => return Err(err).context("cannot write to standard output"),
        }
        printed += 1;
        if args.group.is_some() {
            consumer
                .commit_message(&message, CommitMode::Async)
                .context("cannot commit")?;
        }
    }
    let _ = out.flush();
    if args.group.is_some() {
        // Make the last commits durable before leaving the group.
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
    }
    eprintln!("{printed} message(s) consumed");
    Ok(())
}

fn text(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        },
    }
}

fn print_message(
    out: &mut impl Write,
    message: &BorrowedMessage<'_>,
    format: &str,
) -> std::io::Result<()> {
    if format == "json" {
        let headers: Vec<serde_json::Value> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| json!({ "key": h.key, "value": text(h.value) }))
                    .collect()
            })
            .unwrap_or_default();
        let line = json!({
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "timestamp": message.timestamp().to_millis(),
            "key": text(message.key()),
            "value": text(message.payload()),
            "headers": headers,
        });
        writeln!(out, "{line}")?;
    } else {
        out.write_all(message.payload().unwrap_or_default())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
