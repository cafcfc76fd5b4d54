//! `sluice pipeline`: gateway and sink in one process, against a cluster or — with an
//! embedded data directory — against a Sluice broker started inside the process on a
//! loopback port, so one command runs the whole pipeline with nothing else to deploy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::gateway::{self, GatewayConfig};
use crate::sink::{self, SinkConfig};
use crate::stats::SinkStats;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Run a broker in this process with its log here; `gateway.bootstrap` and
    /// `sink.bootstrap` are then replaced by its address.
    pub embedded_data_dir: Option<PathBuf>,
    /// Broker properties for the embedded broker (Kafka names, as `sluice broker --set`).
    pub broker_properties: Vec<(String, String)>,
    pub gateway: GatewayConfig,
    pub sink: SinkConfig,
}

/// A running pipeline; stopped by turning the `shutdown` channel given to [`start`] true.
#[derive(Debug)]
pub struct PipelineHandle {
    pub http_addr: std::net::SocketAddr,
    pub bootstrap: String,
    gateway: gateway::GatewayHandle,
    sink: tokio::task::JoinHandle<anyhow::Result<()>>,
    broker: Option<sluice_broker::BrokerHandle>,
}

pub async fn start(
    mut config: PipelineConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<PipelineHandle> {
    let broker = match &config.embedded_data_dir {
        Some(dir) => {
            let mut props: BTreeMap<String, String> =
                config.broker_properties.iter().cloned().collect();
            props.insert("listeners".into(), "127.0.0.1:0".into());
            props.insert("log.dirs".into(), dir.display().to_string());
            let broker_config = sluice_broker::BrokerConfig::from_overrides(props)?;
            let broker = sluice_broker::start(broker_config)
                .await
                .context("starting the embedded broker")?;
            let bootstrap = broker.local_addr.to_string();
            tracing::info!(%bootstrap, data_dir = %dir.display(), "embedded broker started");
            config.gateway.bootstrap.clone_from(&bootstrap);
            config.sink.bootstrap = bootstrap;
            Some(broker)
        }
        None => None,
    };
    let bootstrap = config.gateway.bootstrap.clone();
    // Our own stop signal: the caller's, or the sink ending on its own (an error, a panic).
    // A gateway answering 202 while nothing reaches the database would hide the failure.
    let (stop, stopping) = watch::channel(false);
    let stop = Arc::new(stop);
    let mut outside = shutdown;
    let relay = stop.clone();
    tokio::spawn(async move {
        let _ = outside.wait_for(|stop| *stop).await;
        let _ = relay.send(true);
    });
    let sink_stats = Arc::new(SinkStats::default());
    let gateway =
        gateway::start(config.gateway, Some(sink_stats.clone()), stopping.clone()).await?;
    let sink_task = tokio::spawn(sink::run(config.sink, sink_stats, stopping));
    let sink = tokio::spawn(async move {
        let result = match sink_task.await {
            Ok(result) => result,
            Err(panic) => Err(anyhow::anyhow!("the sink failed: {panic}")),
        };
        if !*stop.borrow() {
            tracing::error!(
                error = ?result.as_ref().err(),
                "the sink stopped on its own; stopping the pipeline"
            );
            let _ = stop.send(true);
        }
        result
    });
    Ok(PipelineHandle {
        http_addr: gateway.local_addr,
        bootstrap,
        gateway,
        sink,
        broker,
    })
}

impl PipelineHandle {
    /// Waits for the stop: the gateway answers what it has in flight, the sink finishes its
    /// batch and leaves the group, then the embedded broker shuts down cleanly.
    pub async fn join(self) -> anyhow::Result<()> {
        let gateway = self.gateway.join().await;
        let sink = self.sink.await.context("sink task");
        if let Some(broker) = self.broker {
            broker
                .shutdown()
                .await
                .context("stopping the embedded broker")?;
        }
        gateway?;
        sink?
    }
}
