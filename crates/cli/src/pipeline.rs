//! `sluice ingest`, `sluice sink`, `sluice pipeline`: the metrics pipeline's commands. The
//! work is in `sluice-pipeline`; this file turns flags into its configs and runs them until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_pipeline::embedded::{self, PipelineConfig};
use sluice_pipeline::gateway::{self, GatewayConfig, PartitionBy};
use sluice_pipeline::kafka::parse_properties;
use sluice_pipeline::sink::{self, SinkConfig};
use sluice_pipeline::stats::SinkStats;
use tokio::sync::watch;

use crate::client::Connection;
use crate::signals::ShutdownSignals;
use crate::size::parse_size;

/// What the gateway and the sink agree on.
#[derive(Debug, Clone, clap::Args)]
pub struct SharedArgs {
    /// The metrics topic.
    #[arg(long, default_value = "metrics")]
    topic: String,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// PostgreSQL, e.g. postgres://user:password@127.0.0.1:5432/metrics.
    #[arg(long, env = "SLUICE_DATABASE_URL")]
    database_url: Option<String>,
    /// The table the sink writes and the gateway reads back.
    #[arg(long, default_value = "metrics")]
    table: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// HTTP address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long a request waits for the cluster's acknowledgement before answering 503.
    #[arg(long, default_value_t = 10_000)]
    delivery_timeout_ms: u64,
    /// Largest request body (413 beyond), e.g. 8MiB.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    max_body: u64,
    /// Most metrics in one request (413 beyond).
    #[arg(long, default_value_t = 50_000)]
    max_metrics_per_request: usize,
    /// Metrics waiting for acknowledgement before requests get 503.
    #[arg(long, default_value_t = 500_000)]
    buffer_messages: usize,
    /// Requests served at once (POST and GET); beyond it requests get 503.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_requests: usize,
    /// How long a client may take to send its request body before it gets 408.
    #[arg(long, default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Partition by series (name + labels) or by the X-Client-Id header.
    #[arg(long, value_enum, default_value = "series")]
    partition_by: PartitionByArg,
    /// A librdkafka producer property, KEY=VALUE; repeatable.
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PartitionByArg {
    Series,
    Client,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// Consumer group; run several sinks with one group to share the partitions.
    #[arg(long, default_value = "sluice-sink")]
    group: String,
    /// Static group membership: a restarted sink takes its partitions back at once.
    #[arg(long)]
    instance_id: Option<String>,
    /// Where invalid messages go; default `<topic>.dlq`.
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Most messages per database transaction.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_size: u32,
    /// PostgreSQL connections per sink; a large batch is split over them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    database_connections: u16,
    /// How long a batch waits to fill once it has a message.
    #[arg(long, default_value_t = 50)]
    batch_linger_ms: u64,
    /// How often the stats line is logged.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    stats_interval_ms: u64,
    /// A librdkafka consumer property, KEY=VALUE; repeatable.
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    consumer_properties: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sluice ingest -b localhost:9092 --listen 0.0.0.0:8080\n  curl -X POST localhost:8080/api/v1/metrics -d '{\"name\":\"cpu_usage\",\"value\":85.5,\"labels\":{\"host\":\"server-01\"}}'\n  curl 'localhost:8080/api/v1/metrics?name=cpu_usage&limit=10'   # needs --database-url"
)]
pub struct IngestArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    shared: SharedArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sluice sink -b localhost:9092 --database-url postgres://sluice:sluice@127.0.0.1/sluice\n  sluice sink --instance-id sink-1 --metrics-listen 127.0.0.1:9101"
)]
pub struct SinkCommandArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    shared: SharedArgs,
    #[command(flatten)]
    sink: SinkArgs,
    /// Serve /metrics (Prometheus) and /healthz here, HOST:PORT.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sluice pipeline --embedded --data-dir ./pipeline-data --database-url postgres://sluice:sluice@127.0.0.1/sluice\n  sluice pipeline -b kafka-1:9092 --database-url postgres://... --listen 0.0.0.0:8080"
)]
pub struct PipelineArgs {
    /// Run the broker inside this process (no cluster needed); its log goes to --data-dir.
    /// --bootstrap-server (and SLUICE_BOOTSTRAP) are then ignored.
    #[arg(long)]
    embedded: bool,
    /// The embedded broker's data directory.
    #[arg(long, requires = "embedded", default_value = "./pipeline-data")]
    data_dir: PathBuf,
    /// A property of the embedded broker (as `sluice broker --set`), KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "embedded")]
    broker_properties: Vec<String>,
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    shared: SharedArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    sink: SinkArgs,
}

fn gateway_config(
    bootstrap: &str,
    shared: &SharedArgs,
    args: &GatewayArgs,
) -> anyhow::Result<GatewayConfig> {
    sluice_pipeline::store::check_table_name(&shared.table).map_err(anyhow::Error::msg)?;
    let mut config = GatewayConfig::new(bootstrap);
    config.listen = args.listen;
    config.topic.clone_from(&shared.topic);
    config.partitions = shared.partitions;
    config.database_url.clone_from(&shared.database_url);
    config.table.clone_from(&shared.table);
    config.delivery_timeout = Duration::from_millis(args.delivery_timeout_ms.max(1));
    config.max_body_bytes = usize::try_from(args.max_body).context("--max-body is too large")?;
    config.max_metrics_per_request = args.max_metrics_per_request.max(1);
    config.buffer_messages = args.buffer_messages.max(1);
    config.max_concurrent_requests = args.max_concurrent_requests.max(1);
    config.body_timeout = Duration::from_millis(args.body_timeout_ms.max(1));
    config.partition_by = match args.partition_by {
        PartitionByArg::Series => PartitionBy::Series,
        PartitionByArg::Client => PartitionBy::Client,
    };
    config.producer_properties = parse_properties(&args.producer_properties)?;
    Ok(config)
}

fn sink_config(
    bootstrap: &str,
    shared: &SharedArgs,
    args: &SinkArgs,
) -> anyhow::Result<SinkConfig> {
    let url = shared
        .database_url
        .as_deref()
        .context("the sink needs --database-url (or SLUICE_DATABASE_URL)")?;
    sluice_pipeline::store::check_table_name(&shared.table).map_err(anyhow::Error::msg)?;
    let mut config = SinkConfig::new(bootstrap, url);
    config.topic.clone_from(&shared.topic);
    config.partitions = shared.partitions;
    config.table.clone_from(&shared.table);
    config.group.clone_from(&args.group);
    config.instance_id.clone_from(&args.instance_id);
    config.dead_letter_topic = args
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{}.dlq", shared.topic));
    config.batch_max = args.batch_size as usize;
    config.database_connections = usize::from(args.database_connections);
    config.batch_linger = Duration::from_millis(args.batch_linger_ms);
    config.stats_interval = Duration::from_millis(args.stats_interval_ms);
    config.client_properties = parse_properties(&args.consumer_properties)?;
    Ok(config)
}

/// Runs `work` on a multi-threaded runtime with a shutdown channel that SIGINT/SIGTERM
/// turn true.
fn run_until_signal<F, Fut>(work: F) -> anyhow::Result<()>
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut signals = ShutdownSignals::install()?;
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            signals.recv().await;
            let _ = stop.send(true);
            // Keep the sender alive: receivers treat a dropped sender as an error.
            std::future::pending::<()>().await;
        });
        work(shutdown).await
    })
}

pub fn run_ingest(args: &IngestArgs) -> anyhow::Result<()> {
    let config = gateway_config(&args.connection.bootstrap, &args.shared, &args.gateway)?;
    run_until_signal(|shutdown| async move {
        let handle = gateway::start(config, None, shutdown).await?;
        crate::say!("ingest gateway listening on http://{}", handle.local_addr);
        handle.join().await
    })
}

pub fn run_sink(args: &SinkCommandArgs) -> anyhow::Result<()> {
    let config = sink_config(&args.connection.bootstrap, &args.shared, &args.sink)?;
    let metrics_listen = args.metrics_listen;
    run_until_signal(|shutdown| async move {
        let stats = Arc::new(SinkStats::default());
        if let Some(listen) = metrics_listen {
            let addr = sink::serve_metrics(listen, stats.clone(), shutdown.clone()).await?;
            tracing::info!(listen = %addr, "sink metrics endpoint listening");
        }
        crate::say!(
            "sink: topic {} into table {} (group {})",
            config.topic,
            config.table,
            config.group
        );
        sink::run(config, stats, shutdown).await
    })
}

pub fn run_pipeline(args: &PipelineArgs) -> anyhow::Result<()> {
    let bootstrap = &args.connection.bootstrap;
    let config = PipelineConfig {
        embedded_data_dir: args.embedded.then(|| args.data_dir.clone()),
        broker_properties: parse_properties(&args.broker_properties)?,
        gateway: gateway_config(bootstrap, &args.shared, &args.gateway)?,
        sink: sink_config(bootstrap, &args.shared, &args.sink)?,
    };
    run_until_signal(|shutdown| async move {
        let handle = embedded::start(config, shutdown).await?;
        crate::say!(
            "pipeline: ingest on http://{}, log at {}",
            handle.http_addr,
            handle.bootstrap
        );
        handle.join().await
    })
}
