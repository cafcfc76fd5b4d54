//! `sluice produce TOPIC`: one message per input line.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Connection, block_on, parse_pairs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  echo hello | sluice produce demo\n  sluice produce orders --file orders.txt --key-separator : --acks all --compression zstd\n  sluice produce demo --header source=cli --partition 2\n  echo 'user-7:' | sluice produce users -K : -Z      # a tombstone for key user-7\n  sluice produce orders --key customer-42 < lines.txt\n\nA topic that does not exist is created if the cluster creates topics on first use\n(auto.create.topics.enable); otherwise create it with `sluice topic create`."
)]
pub struct ProduceArgs {
    /// The topic to write to.
    topic: String,
    /// Read lines from this file instead of standard input.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (lines without it have no key).
    #[arg(long, short = 'K', value_name = "SEP", conflicts_with = "key")]
    key_separator: Option<String>,
    /// The key of every message.
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// How each input line splits into key, value and headers, e.g. '%k\t%v' or
    /// '%k|%h|%v': %k key, %v value, %h headers as k=v,k=v; text between placeholders
    /// separates them (the last placeholder takes the rest of the line). A line that does
    /// not match stops the command with its line number.
    #[arg(long, value_name = "TEMPLATE", conflicts_with_all = ["key_separator", "key"])]
    input_format: Option<String>,
    /// Send an empty value as null: a tombstone, which deletes the key from a compacted
    /// topic (kcat's -Z).
    #[arg(long = "tombstone", short = 'Z')]
    tombstone: bool,
    /// Header on every message, KEY=VALUE; repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Partition to write to (default: by key, or spread).
    #[arg(long, short)]
    partition: Option<i32>,
    /// all, 1 or 0.
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1", "0"])]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    #[command(flatten)]
    connection: Connection,
}

pub fn run(args: &ProduceArgs) -> anyhow::Result<()> {
    let headers = parse_pairs(&args.headers, "--header")?;
    let template = args
        .input_format
        .as_deref()
        .map(InputFormat::parse)
        .transpose()?;
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let producer: FutureProducer = args
        .connection
        .config()?
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", "5")
        .set("allow.auto.create.topics", "true")
        .create()
        .context("cannot create a producer")?;
    // Prove the cluster and the topic exist before reading any input. A producer's metadata
    // request lets a cluster that auto-creates topics create this one.
    let known = |producer: &FutureProducer| -> anyhow::Result<bool> {
        let metadata = producer
            .client()
            .fetch_metadata(Some(&args.topic), super::TIMEOUT)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach a broker at {}: {e}",
                    args.connection.bootstrap
                )
            })?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == args.topic && t.error().is_none() && !t.partitions().is_empty()))
    };
    // The first answer may come before the creation; the second sees the topic.
    anyhow::ensure!(
        known(&producer)? || known(&producer)?,
        "unknown topic {}, and the cluster does not create topics on first use (create it with `sluice topic create`)",
        args.topic
    );
    let (sent, failed) = block_on(async {
        let mut pending = Vec::new();
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut first_error: Option<String> = None;
        let settle =
            |results: Vec<_>, sent: &mut u64, failed: &mut u64, first: &mut Option<String>| {
                for result in results {
                    match result {
                        Ok(Ok(_)) => *sent += 1,
                        Ok(Err((err, _))) => {
                            *failed += 1;
                            first.get_or_insert_with(|| format!("{err}"));
                        }
                        Err(_) => {
                            *failed += 1;
                            first.get_or_insert_with(|| "delivery cancelled".to_string());
                        }
                    }
                }
            };
        let mut bad_line = None;
        for (number, line) in input.lines().enumerate() {
            let line = line.context("cannot read input")?;
            let mut line_headers = Vec::new();
            let (key, value) = match (&template, &args.key_separator) {
                (Some(template), _) => {
                    let Some(parsed) = template.split(&line) else {
                        // What was sent before goes out; the command then fails here.
                        bad_line = Some(format!(
                            "line {}: does not match --input-format {:?}",
                            number + 1,
                            args.input_format.as_deref().unwrap_or_default()
                        ));
                        break;
                    };
                    line_headers = parsed.headers;
                    (parsed.key, parsed.value.unwrap_or_default())
                }
                (None, Some(sep)) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_string()), v.to_string()),
                    None => (None, line.clone()),
                },
                (None, None) => (args.key.clone(), line.clone()),
            };
            let mut owned = OwnedHeaders::new();
            for (k, v) in headers.iter().chain(&line_headers) {
                owned = owned.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::to(&args.topic).headers(owned);
            if !(args.tombstone && value.is_empty()) {
                record = record.payload(&value);
            }
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(partition) = args.partition {
                record = record.partition(partition);
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The client's queue is full: wait for what is in flight, then retry.
                        let results = futures_join(std::mem::take(&mut pending)).await;
                        settle(results, &mut sent, &mut failed, &mut first_error);
                        record = back;
                    }
                    Err((err, _)) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{err}"));
                        break;
                    }
                }
            }
            if pending.len() >= 10_000 {
                let results = futures_join(std::mem::take(&mut pending)).await;
                settle(results, &mut sent, &mut failed, &mut first_error);
            }
        }
        let results = futures_join(pending).await;
        settle(results, &mut sent, &mut failed, &mut first_error);
        producer.flush(Duration::from_secs(30)).ok();
        if let Some(err) = first_error {
            eprintln!("error: {failed} message(s) failed, first: {err}");
        }
        if let Some(why) = bad_line {
            eprintln!("{sent} message(s) written to {}", args.topic);
            anyhow::bail!(why);
        }
        anyhow::Ok((sent, failed))
    })??;
    eprintln!("{sent} message(s) written to {}", args.topic);
    anyhow::ensure!(failed == 0, "{failed} message(s) were not written");
    Ok(())
}

/// Awaits futures in order (delivery reports).
async fn futures_join<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for future in futures {
        out.push(future.await);
    }
    out
}

/// `--input-format`: placeholders and the text that separates them.
struct InputFormat {
    pieces: Vec<InputPiece>,
}

#[derive(Debug, Clone, PartialEq)]
enum InputPiece {
    Text(String),
    Key,
    Value,
    Headers,
}

/// One input line split by an [`InputFormat`].
#[derive(Debug, Default)]
struct ParsedLine {
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, String)>,
}

impl InputFormat {
    fn parse(text: &str) -> anyhow::Result<InputFormat> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => match chars.next() {
                    Some('k') => InputPiece::Key,
                    Some('v') => InputPiece::Value,
                    Some('h') => InputPiece::Headers,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    other => anyhow::bail!(
                        "--input-format {text:?}: unknown placeholder %{} (use %k, %v, %h)",
                        other.map(String::from).unwrap_or_default()
                    ),
                },
                '\\' => {
                    match chars.next() {
                        Some('t') => literal.push('\t'),
                        Some('n') => literal.push('\n'),
                        Some(other) => {
                            literal.push('\\');
                            literal.push(other);
                        }
                        None => literal.push('\\'),
                    }
                    continue;
                }
                other => {
                    literal.push(other);
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(InputPiece::Text(std::mem::take(&mut literal)));
            } else if pieces
                .last()
                .is_some_and(|p| !matches!(p, InputPiece::Text(_)))
            {
                anyhow::bail!(
                    "--input-format {text:?}: two placeholders need text between them to separate them"
                );
            }
            anyhow::ensure!(
                !pieces.contains(&piece),
                "--input-format {text:?}: each placeholder at most once"
            );
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(InputPiece::Text(literal));
        }
        anyhow::ensure!(
            pieces.contains(&InputPiece::Value),
            "--input-format {text:?}: needs %v"
        );
        Ok(InputFormat { pieces })
    }

    /// Splits a line: each placeholder takes the text up to the next separator (the last
    /// one, the rest of the line, less any trailing text of the template).
    fn split(&self, line: &str) -> Option<ParsedLine> {
        let mut parsed = ParsedLine::default();
        let mut rest = line;
        let mut pending: Option<&InputPiece> = None;
        for piece in &self.pieces {
            match piece {
                InputPiece::Text(separator) => match pending.take() {
                    None => rest = rest.strip_prefix(separator.as_str())?,
                    Some(placeholder) => {
                        let (taken, after) = rest.split_once(separator.as_str())?;
                        fill(&mut parsed, placeholder, taken)?;
                        rest = after;
                    }
                },
                placeholder => pending = Some(placeholder),
            }
        }
        match pending {
            Some(placeholder) => fill(&mut parsed, placeholder, rest)?,
            None if !rest.is_empty() => return None,
            None => {}
        }
        Some(parsed)
    }
}

fn fill(parsed: &mut ParsedLine, placeholder: &InputPiece, text: &str) -> Option<()> {
    match placeholder {
        InputPiece::Key => parsed.key = Some(text.to_string()),
        InputPiece::Value => parsed.value = Some(text.to_string()),
        InputPiece::Headers => {
            for pair in text.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=')?;
                parsed.headers.push((k.to_string(), v.to_string()));
            }
        }
        InputPiece::Text(_) => unreachable!("only placeholders are filled"),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_formats_split_lines_or_refuse_them() {
        let tab = InputFormat::parse("%k\\t%v").unwrap();
        let line = tab.split("user-1\thello\tworld").unwrap();
        assert_eq!(line.key.as_deref(), Some("user-1"));
        assert_eq!(
            line.value.as_deref(),
            Some("hello\tworld"),
            "the last takes the rest"
        );
        assert!(tab.split("no tab here").is_none());
        let full = InputFormat::parse("[%k|%h] %v").unwrap();
        let line = full.split("[k7|a=1,b=2] the value").unwrap();
        assert_eq!(line.key.as_deref(), Some("k7"));
        assert_eq!(
            line.headers,
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(line.value.as_deref(), Some("the value"));
        assert!(
            full.split("k7|a=1] v").is_none(),
            "the leading text must match"
        );
        assert!(InputFormat::parse("%k%v").is_err());
        assert!(InputFormat::parse("%k:%k").is_err());
        assert!(InputFormat::parse("%k").is_err());
        assert!(InputFormat::parse("%x %v").is_err());
    }
}
