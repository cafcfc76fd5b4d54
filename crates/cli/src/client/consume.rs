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
    after_help = "Examples:\n  sluice consume demo --from-beginning --exit-at-end\n  sluice consume orders --from -10 --exit-at-end            # the last 10 of each partition\n  sluice consume orders --group billing --format json\n  sluice consume orders --from timestamp:2026-12-01T09:00:00Z --count 10\n  sluice consume orders --partition 0 --from offset:42\n  sluice consume orders -e --format '%p/%o %k=%v %h\\n'   # like kcat -f\n\nFormat placeholders: %t topic, %p partition, %o offset, %k key, %v value, %h headers\n(k=v,...), %T timestamp (ms), %K / %S key / value size, %% a percent sign; \\n and \\t are\nnewline and tab. A null key or value (a tombstone) prints as <null>."
)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    /// Where to start: beginning (or start, earliest), end (or latest), offset:N, -N or
    /// offset:-N (the last N messages of each partition), timestamp:MS (epoch
    /// milliseconds) or timestamp:DATE-TIME (RFC 3339, or Kafka's YYYY-MM-DDTHH:MM:SS, UTC).
    /// With --group, only where the group has no committed offset (beginning or end).
    #[arg(long, default_value = "end", allow_hyphen_values = true)]
    from: String,
    /// The same as --from beginning (Kafka's console consumer flag).
    #[arg(long, conflicts_with = "from")]
    from_beginning: bool,
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
    /// offset, timestamp, key, value and headers (null for a tombstone); or a template
    /// with %-placeholders (see below).
    #[arg(long, default_value = "value")]
    format: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    /// The last N messages of each partition.
    Last(i64),
    Timestamp(i64),
}

const FROM_FORMS: &str =
    "expected beginning, end, offset:N, -N, timestamp:MS or timestamp:YYYY-MM-DDTHH:MM:SSZ";

fn parse_start(text: &str) -> anyhow::Result<Start> {
    let number = |digits: &str| -> anyhow::Result<i64> {
        digits
            .parse()
            .with_context(|| format!("--from {text:?}: {digits:?} is not a number ({FROM_FORMS})"))
    };
    Ok(match text {
        "beginning" | "earliest" | "start" => Start::Beginning,
        "end" | "latest" => Start::End,
        other if other.starts_with('-') => Start::Last(-number(other)?),
        other => {
            let (kind, value) = other
                .split_once(':')
                .with_context(|| format!("--from {other:?}: {FROM_FORMS}"))?;
            match kind {
                "offset" if value.starts_with('-') => Start::Last(-number(value)?),
                "offset" => Start::Offset(number(value)?),
                "timestamp" if value.bytes().all(|b| b.is_ascii_digit()) => {
                    Start::Timestamp(number(value)?)
                }
                "timestamp" => Start::Timestamp(
                    super::parse_date_time_ms(value)
                        .map_err(|why| anyhow::anyhow!("--from {other:?}: {why}"))?,
                ),
                _ => anyhow::bail!("--from {other:?}: {FROM_FORMS}"),
            }
        }
    })
}

pub fn run(args: &ConsumeArgs) -> anyhow::Result<()> {
    let start = if args.from_beginning {
        Start::Beginning
    } else {
        parse_start(&args.from)?
    };
    let format = Format::parse(&args.format)?;
    let mut config = args.connection.config()?;
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
                Start::Last(n) => {
                    let (low, high) = consumer
                        .fetch_watermarks(&args.topic, p, TIMEOUT)
                        .context("cannot read the partition's offsets")?;
                    Offset::Offset(high.saturating_sub(n).max(low))
                }
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
    let mut hinted = false;
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
                let all_at_end = partitions.iter().all(|p| at_end.contains(p));
                if args.exit_at_end && all_at_end {
                    break;
                }
                if all_at_end && !hinted {
                    hinted = true;
                    eprintln!(
                        "at the end of {}: waiting for new messages (Ctrl-C to stop; --from beginning reads what is there, -e stops at the end)",
                        args.topic
                    );
                }
                continue;
            }
            Err(err) => anyhow::bail!("consume failed: {err}"),
        };
        at_end.remove(&message.partition());
        match print_message(&mut out, &message, &format) {
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

/// How each message is printed.
enum Format {
    Value,
    Json,
    Template(Vec<Piece>),
}

enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    Timestamp,
    KeySize,
    ValueSize,
}

/// What a null key or value (a tombstone) prints as in text.
const NULL: &[u8] = b"<null>";

impl Format {
    fn parse(text: &str) -> anyhow::Result<Format> {
        match text {
            "value" => return Ok(Format::Value),
            "json" => return Ok(Format::Json),
            _ => {}
        }
        anyhow::ensure!(
            text.contains('%') || text.contains('\\'),
            "--format {text:?}: expected value, json or a template with %-placeholders (%k %v %h %p %o %T %t %K %S)"
        );
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => match chars.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('h') => Piece::Headers,
                    Some('T') => Piece::Timestamp,
                    Some('K') => Piece::KeySize,
                    Some('S') => Piece::ValueSize,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    other => anyhow::bail!(
                        "--format {text:?}: unknown placeholder %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                },
                '\\' => {
                    match chars.next() {
                        Some('n') => literal.push(b'\n'),
                        Some('t') => literal.push(b'\t'),
                        Some('\\') => literal.push(b'\\'),
                        Some(other) => {
                            literal.push(b'\\');
                            literal.extend(other.to_string().as_bytes());
                        }
                        None => literal.push(b'\\'),
                    }
                    continue;
                }
                other => {
                    literal.extend(other.to_string().as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Format::Template(pieces))
    }
}

fn print_message(
    out: &mut impl Write,
    message: &BorrowedMessage<'_>,
    format: &Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
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
            writeln!(out, "{line}")
        }
        Format::Value => {
            out.write_all(message.payload().unwrap_or(NULL))?;
            out.write_all(b"\n")
        }
        Format::Template(pieces) => {
            for piece in pieces {
                match piece {
                    Piece::Text(bytes) => out.write_all(bytes)?,
                    Piece::Topic => out.write_all(message.topic().as_bytes())?,
                    Piece::Partition => write!(out, "{}", message.partition())?,
                    Piece::Offset => write!(out, "{}", message.offset())?,
                    Piece::Key => out.write_all(message.key().unwrap_or(NULL))?,
                    Piece::Value => out.write_all(message.payload().unwrap_or(NULL))?,
                    Piece::Timestamp => {
                        write!(out, "{}", message.timestamp().to_millis().unwrap_or(-1))?;
                    }
                    Piece::KeySize => {
                        write!(out, "{}", message.key().map_or(-1, |k| k.len() as i64))?;
                    }
                    Piece::ValueSize => {
                        write!(out, "{}", message.payload().map_or(-1, |v| v.len() as i64))?;
                    }
                    Piece::Headers => {
                        if let Some(headers) = message.headers() {
                            for (i, header) in headers.iter().enumerate() {
                                if i > 0 {
                                    out.write_all(b",")?;
                                }
                                out.write_all(header.key.as_bytes())?;
                                out.write_all(b"=")?;
                                out.write_all(header.value.unwrap_or(NULL))?;
                            }
                        }
                    }
                }
            }
            Ok(())
        }
    }
}
