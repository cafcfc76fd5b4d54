//! The network server: accepts connections and runs each as a reader and a writer.
//!
//! The reader decodes frames in order and dispatches them; handlers do their ordered work
//! (appends) at once and return a future of the response. The writer polls all pending
//! futures concurrently (so one acks=all wait or one long-poll fetch does not stall the
//! others' progress) and writes the responses strictly in request order.
//!
//! Limits: at most `max.connections` connections, `max.connections.per.ip` from one address
//! (a connection over either is closed at once, and counted); a frame larger than
//! `socket.request.max.bytes` closes the connection; frames whose responses are not yet
//! written may not exceed `socket.max.inflight.bytes` in total nor `queued.max.requests` in
//! number (the reader stops reading until they drain); a connection with nothing in flight
//! for `connections.max.idle.ms` is closed. Nothing a client sends makes the broker allocate
//! beyond those bounds.
//!
//! - this file: start, stop, the accept loop and admission;
//! - `connection`: one connection's reader and writer.

mod connection;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, StartError};
use crate::config::BrokerConfig;

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the controller to take this broker's leaderships.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    pub broker: Arc<Broker>,
    pub local_addr: SocketAddr,
    /// Where the admin HTTP endpoint listens, if configured.
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

/// Opens the data directory, binds the listener and starts serving.
pub async fn start(mut config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    for key in &config.ignored {
        tracing::warn!(property = %key, "ignored: a Kafka setting with no Sluice equivalent");
    }
    // A controller-only node serves no client: no Kafka listener (its address is the
    // quorum's, which the metadata store binds).
    let listener = if config.cluster.roles.broker {
        Some(
            TcpListener::bind(config.listen)
                .await
                .map_err(|e| StartError::Listen {
                    addr: config.listen,
                    reason: e.to_string(),
                })?,
        )
    } else {
        None
    };
    let local_addr = match &listener {
        Some(listener) => listener.local_addr().map_err(|e| StartError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?,
        None => config.listen,
    };
    if config.advertised.1 == 0 {
        config.advertised.1 = local_addr.port();
    }
    let http_listener = match config.http_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Listen {
                    addr,
                    reason: format!("admin HTTP: {e}"),
                })?,
        ),
        None => None,
    };
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await
        .map_err(|e| StartError::DataDir {
            path: Default::default(),
            reason: e.to_string(),
        })??;
    tracing::info!(
        listen = %local_addr,
        advertised = %format!("{}:{}", broker.config().advertised.0, broker.config().advertised.1),
        data_dir = %broker.config().data_dir.display(),
        cluster_id = %broker.cluster_id(),
        node_id = broker.config().node_id,
        "broker started"
    );
    let (stop, stopped) = watch::channel(false);
    let (coordinator, stop_coordinator) = (broker.clone(), stopped.clone());
    tokio::spawn(async move { coordinator.groups().run(stop_coordinator).await });
    let (member, stop_member) = (broker.clone(), stopped.clone());
    tokio::spawn(async move { member.run_membership(stop_member).await });
    let (leader, stop_isr) = (broker.clone(), stopped.clone());
    tokio::spawn(async move { leader.run_isr_checks(stop_isr).await });
    let (keeper, stop_storage) = (broker.clone(), stopped.clone());
    tokio::spawn(async move { keeper.run_storage_checks(stop_storage).await });
    let (follower, stop_fetchers) = (broker.clone(), stopped.clone());
    tokio::spawn(async move { crate::replica_fetcher::run(follower, stop_fetchers).await });
    let mut http_addr = None;
    if let Some(http) = http_listener {
        http_addr = http.local_addr().ok();
        tracing::info!(http = ?http_addr, "admin HTTP endpoint and console started");
        let (broker, stop_http) = (broker.clone(), stopped.clone());
        tokio::spawn(async move {
            if let Err(err) = crate::admin_http::serve(broker, http, stop_http).await {
                tracing::warn!(error = %err, "admin HTTP endpoint failed");
            }
        });
    }
    let server = match listener {
        Some(listener) => tokio::spawn(accept_loop(broker.clone(), listener, stopped)),
        None => tokio::spawn(async move {
            let mut stopped = stopped;
            let _ = stopped.changed().await;
        }),
    };
    Ok(BrokerHandle {
        broker,
        local_addr,
        http_addr,
        stop,
        server,
    })
}

impl BrokerHandle {
    /// Resolves, with the reason, if the broker can no longer run: its metadata quorum
    /// thread stopped on an error (its metadata log cannot be written). Kafka halts a
    /// broker whose metadata log directory fails; so does `sluice broker`.
    pub async fn failed(&self) -> String {
        self.broker.metadata_failed().await
    }

    /// Stops serving the way a crash would, for tests: connections are cut, nothing is synced
    /// or marked clean. Storage is released once every task holding the broker has ended,
    /// so that another broker can open the same directory.
    pub async fn abort(self) {
        let _ = self.stop.send(true);
        self.server.abort();
        let _ = self.server.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.broker) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let broker = self.broker;
        let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
    }

    /// Graceful shutdown: stop accepting, let connections finish what they started, then
    /// sync and close every log and leave the clean-shutdown marker.
    pub async fn shutdown(self) -> Result<(), sluice_log::LogError> {
        self.broker
            .controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT)
            .await;
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let broker = self.broker;
        let result = tokio::task::spawn_blocking(move || broker.shutdown())
            .await
            .unwrap_or_else(|e| {
                Err(sluice_log::LogError::Io(std::io::Error::other(
                    e.to_string(),
                )))
            });
        tracing::info!(clean = result.is_ok(), "broker stopped");
        result
    }
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let admission = Arc::new(Admission::new(broker.config()));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match admission.admit(&broker, peer.ip()) {
                    Ok(slot) => {
                        connections.spawn(connection::serve(broker.clone(), stream, peer, slot, stopped.clone()));
                    }
                    Err(limit) => {
                        broker.metrics().connections_refused.fetch_add(1, Ordering::Relaxed);
                        if admission.should_log_refusal() {
                            tracing::warn!(%peer, limit, "connection refused: over the limit (further refusals logged at most once a second)");
                        }
                        drop(stream);
                    }
                },
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections did not finish in time; closing them"
        );
        connections.shutdown().await;
    }
}

/// Connection slots: how many are open, in total and per client address.
#[derive(Debug)]
struct Admission {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    last_refusal_log: Mutex<Option<Instant>>,
}

/// An admitted connection's slot, given back (and the open-connections gauge lowered) when
/// the connection ends.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    broker: Arc<Broker>,
}

impl Admission {
    fn new(config: &BrokerConfig) -> Self {
        Admission {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            open: Mutex::new((0, HashMap::new())),
            last_refusal_log: Mutex::new(None),
        }
    }

    /// A slot for a connection from `ip`, or the name of the limit it is over.
    fn admit(self: &Arc<Self>, broker: &Arc<Broker>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= self.max_total {
            return Err("max.connections");
        }
        let from_ip = open.1.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err("max.connections.per.ip");
        }
        *from_ip += 1;
        open.0 += 1;
        let metrics = broker.metrics();
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            admission: self.clone(),
            ip,
            broker: broker.clone(),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if let Some(from_ip) = open.1.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                open.1.remove(&ip);
            }
        }
    }

    /// At most one refusal line a second: a flood must not become a flood of log lines.
    fn should_log_refusal(&self) -> bool {
        let mut last = self
            .last_refusal_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.ip);
        let metrics = self.broker.metrics();
        metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
