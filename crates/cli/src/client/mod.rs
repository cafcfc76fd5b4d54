//! Client-side commands (`sluice topic|produce|consume|group`): they talk to any
//! Kafka-compatible cluster through librdkafka (the `rdkafka` crate), never to Sluice's
//! internals. Errors are one line for the user; the exit code is non-zero.

pub mod cluster;
pub mod consume;
pub mod group;
mod log_dirs;
pub mod produce;
mod reassign;
pub mod topic;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

/// How long a command waits for the cluster before giving up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the cluster is.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Bootstrap broker(s), HOST:PORT[,HOST:PORT...].
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        env = "SLUICE_BOOTSTRAP",
        default_value = "localhost:9092"
    )]
    pub bootstrap: String,
    /// A librdkafka client property, KEY=VALUE (kcat's -X); repeatable, applied after
    /// --command-config.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A file of client properties (Java .properties format, as Kafka's tools take).
    #[arg(long, value_name = "FILE")]
    pub command_config: Option<std::path::PathBuf>,
}

impl Connection {
    /// The client configuration: these defaults, then --command-config, then -X.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "sluice-cli")
            // Fail fast on an unreachable cluster instead of retrying for minutes.
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("message.timeout.ms", "30000");
        for (key, value) in self.client_properties()? {
            config.set(key, value);
        }
        Ok(config)
    }

    /// The properties of --command-config, then -X, in that order.
    pub fn client_properties(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut props = Vec::new();
        if let Some(path) = &self.command_config {
            let file = sluice_broker::config::read_properties_file(path)?;
            props.extend(file);
        }
        props.extend(parse_pairs(&self.properties, "-X")?);
        Ok(props)
    }

    pub fn admin(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        self.config()?
            .create()
            .context("cannot create a Kafka client")
    }

    /// A consumer for metadata, offsets and group queries (no subscription).
    pub fn query_consumer(&self, group: Option<&str>) -> anyhow::Result<BaseConsumer> {
        let mut config = self.config()?;
        config.set("enable.auto.commit", "false");
        config.set("group.id", group.unwrap_or("sluice-cli"));
        config.create().context("cannot create a Kafka client")
    }

    /// Cluster metadata (all topics, or one); the first call also proves the cluster is
    /// reachable, with a message that says so when it is not.
    pub fn metadata(
        &self,
        consumer: &BaseConsumer,
        topic: Option<&str>,
    ) -> anyhow::Result<Metadata> {
        consumer
            .fetch_metadata(topic, TIMEOUT)
            .map_err(|e| anyhow::anyhow!("cannot reach a broker at {}: {e}", self.bootstrap))
    }
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(TIMEOUT))
}

/// Runs an admin future on a small runtime.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Set once the user presses Ctrl-C (or the process gets SIGTERM).
pub fn interrupted() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        });
        set.store(true, Ordering::SeqCst);
    });
    flag
}

/// `key=value` pairs from repeated flags.
/// A date-time in RFC 3339 (`2026-12-01T09:00:00Z`, `...+02:00`) or in Kafka tools' form
/// without a zone (`2026-12-01T09:00:00`, `2026-12-01T09:00:00.000`), read as UTC; in epoch
/// milliseconds.
pub fn parse_date_time_ms(text: &str) -> Result<i64, String> {
    let micros = sluice_pipeline::rfc3339::parse_micros(text).or_else(|why| {
        let has_zone = text.len() > 19 && text[19..].contains(['Z', 'z', '+', '-']);
        if has_zone {
            Err(why)
        } else {
            sluice_pipeline::rfc3339::parse_micros(&format!("{text}Z"))
        }
    });
    micros
        .map(|us| us.div_euclid(1000))
        .map_err(|why| format!("{why} (e.g. 2026-12-01T09:00:00Z)"))
}

pub fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("{what} {pair:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// `--format` of the list and describe commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Text,
    /// One JSON object for scripts: fields, and each table as an array of objects keyed by
    /// its column names (snake_case); numbers are numbers and "-" is null.
    Json,
}

/// A named table: its column names and rows.
type Table = (&'static str, Vec<&'static str>, Vec<Vec<String>>);

/// What a list or describe command prints: a title line, tables and closing lines as text,
/// or fields and tables as one JSON object.
#[derive(Default)]
pub struct Report {
    title: Option<String>,
    fields: Vec<(&'static str, serde_json::Value)>,
    tables: Vec<Table>,
    footer: Vec<String>,
}

impl Report {
    pub fn title(&mut self, text: String) -> &mut Self {
        self.title = Some(text);
        self
    }

    pub fn field(&mut self, key: &'static str, value: impl Into<serde_json::Value>) -> &mut Self {
        self.fields.push((key, value.into()));
        self
    }

    /// A table; in text an empty "members" table is left out, any other is printed.
    pub fn table(
        &mut self,
        name: &'static str,
        header: &[&'static str],
        rows: Vec<Vec<String>>,
    ) -> &mut Self {
        self.tables.push((name, header.to_vec(), rows));
        self
    }

    pub fn footer(&mut self, text: String) -> &mut Self {
        self.footer.push(text);
        self
    }

    pub fn print(&self, format: OutputFormat) {
        match format {
            OutputFormat::Text => {
                if let Some(title) = &self.title {
                    crate::say!("{title}");
                }
                let mut first = true;
                for (name, header, rows) in &self.tables {
                    if *name == "members" && rows.is_empty() {
                        continue;
                    }
                    if !first {
                        crate::say!();
                    }
                    first = false;
                    print_table(header, rows);
                }
                for line in &self.footer {
                    crate::say!("{line}");
                }
            }
            OutputFormat::Json => {
                let mut object = serde_json::Map::new();
                for (key, value) in &self.fields {
                    object.insert((*key).to_string(), value.clone());
                }
                for (name, header, rows) in &self.tables {
                    let keys: Vec<String> = header.iter().map(|h| snake_case(h)).collect();
                    let rows: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|row| {
                            let cells = keys.iter().cloned().zip(row.iter().map(|c| cell(c)));
                            serde_json::Value::Object(cells.collect())
                        })
                        .collect();
                    object.insert((*name).to_string(), serde_json::Value::Array(rows));
                }
                crate::say!("{}", serde_json::Value::Object(object));
            }
        }
    }
}

/// `END OFFSET` → `end_offset`, `SIZE (BYTES)` → `size_bytes`.
fn snake_case(header: &str) -> String {
    header
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// A table cell as JSON: integers as numbers, "-" as null, the rest as text.
fn cell(text: &str) -> serde_json::Value {
    if text == "-" {
        return serde_json::Value::Null;
    }
    text.parse::<i64>()
        .map_or_else(|_| serde_json::Value::from(text), serde_json::Value::from)
}

/// Prints rows as left-aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        crate::say!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
