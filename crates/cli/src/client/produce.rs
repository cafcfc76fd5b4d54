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
        for line in input.lines() {
            let line = line.context("cannot read input")?;
            let (key, value) = match &args.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_string()), v.to_string()),
                    None => (None, line.clone()),
                },
                None => (args.key.clone(), line.clone()),
            };
            let mut owned = OwnedHeaders::new();
            for (k, v) in &headers {
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
