//! `sluice broker`: runs a broker (a single node, or a node of a cluster) until SIGINT or
//! SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use sluice_broker::BrokerConfig;
use sluice_broker::config::{PROPERTIES, read_config_file, read_env};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sluice broker\n  sluice broker --data-dir /var/lib/sluice --listen 0.0.0.0:9092 --advertised-listener kafka.example.com:9092\n  sluice broker --config server.properties --set log.retention.hours=24\n  sluice broker --config sluice.toml --print-config   # every property, its value and where it came from\n  sluice broker --http 127.0.0.1:8080    # /metrics, /healthz, /api/v1/...\n\nEvery Kafka-named property can also be set as SLUICE_<NAME> in the environment,\ne.g. SLUICE_NUM_PARTITIONS=6; an unknown SLUICE_ variable is refused like an unknown\nproperty. Precedence: flags > environment > config file > defaults."
)]
pub struct BrokerArgs {
    /// Kafka-named properties: a Java .properties file (Kafka's server.properties:
    /// `num.partitions=3`) or TOML (`num.partitions = 3`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print every property with its value and where it came from (default, file,
    /// environment, flag), then exit without starting.
    #[arg(long)]
    print_config: bool,
    /// Data directory (log.dirs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on (listeners), HOST:PORT.
    #[arg(long)]
    listen: Option<String>,
    /// Address clients are told to connect to (advertised.listeners), HOST:PORT.
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Serve health checks, Prometheus metrics and the JSON API here (admin.http.listener),
    /// HOST:PORT, e.g. 127.0.0.1:8080. Off unless given.
    #[arg(long)]
    http: Option<String>,
    /// This broker's id (node.id).
    #[arg(long)]
    node_id: Option<i32>,
    /// Any property, KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// The properties set, each with where it was set.
fn properties(args: &BrokerArgs) -> anyhow::Result<BTreeMap<String, (String, &'static str)>> {
    let mut props: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    if let Some(path) = &args.config {
        for (key, value) in read_config_file(path)? {
            props.insert(key, (value, "file"));
        }
    }
    for (key, value) in read_env()? {
        props.insert(key, (value, "environment"));
    }
    let mut flag = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            props.insert(key.to_string(), (value, "flag"));
        }
    };
    flag(
        "log.dirs",
        args.data_dir.as_ref().map(|d| d.display().to_string()),
    );
    flag("listeners", args.listen.clone());
    flag("advertised.listeners", args.advertised_listener.clone());
    flag("node.id", args.node_id.map(|n| n.to_string()));
    flag("admin.http.listener", args.http.clone());
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        props.insert(key.trim().to_string(), (value.trim().to_string(), "flag"));
    }
    Ok(props)
}

/// Every property, with its value and source, one per line.
fn print_config(set: &BTreeMap<String, (String, &'static str)>) {
    let width = PROPERTIES.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:width$}  {:30}  SOURCE", "PROPERTY", "VALUE");
    for (key, default) in PROPERTIES {
        let (value, source) = match set.get(*key) {
            Some((value, source)) => (value.as_str(), *source),
            None => (*default, "default"),
        };
        println!("{key:width$}  {value:30}  {source}");
    }
}

/// Lets a broker with thousands of partitions keep one file open per partition.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %err, "could not raise the open-file limit");
        }
    }
}

pub fn run(args: &BrokerArgs) -> anyhow::Result<()> {
    let set = properties(args)?;
    let config = BrokerConfig::from_overrides(
        set.iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect(),
    )?;
    if args.print_config {
        print_config(&set);
        return Ok(());
    }
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-net")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut signals = crate::signals::ShutdownSignals::install()?;
        let handle = sluice_broker::start(config).await?;
        let failure = tokio::select! {
            () = signals.recv() => None,
            reason = handle.failed() => Some(reason),
        };
        match failure {
            None => {
                handle.shutdown().await?;
                Ok(())
            }
            Some(reason) => {
                tracing::error!(%reason, "the metadata log failed: stopping the broker");
                // Whatever can still be synced is; the outcome does not change the exit.
                let _ = handle.shutdown().await;
                anyhow::bail!("the metadata log failed ({reason}): the broker stopped")
            }
        }
    })
}
