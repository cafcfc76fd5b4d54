//! The network server: accepts connections and runs each as a reader and a writer.
//!
//! The reader decodes frames in order and dispatches them; handlers do their ordered work
//! (appends) at once and return a future of the response. The writer polls all pending
//! futures concurrently (so one acks=all wait or one long-poll fetch does not stall the
//! others' progress) and writes the responses strictly in request order.
//!
//! Limits: a frame larger than `socket.request.max.bytes` closes the connection; frames
//! whose responses are not yet written may not exceed `socket.max.inflight.bytes` in total
//! (the reader stops reading until they drain) nor [`MAX_PIPELINED`] in number. Nothing a
//! client sends makes the broker allocate beyond those bounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use sluice_protocol::frame::{FrameError, read_frame_body, read_frame_size};
use sluice_protocol::header::parse_request;
use sluice_protocol::writer::{FileTransfer, write_response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::broker::{Broker, StartError};
use crate::config::BrokerConfig;
use crate::handlers::{Dispatch, ResponseFuture, dispatch};

/// Requests read but not yet answered, per connection.
pub const MAX_PIPELINED: usize = 512;
/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    let local_addr = listener.local_addr().map_err(|e| StartError::Listen {
        addr: config.listen,
        reason: e.to_string(),
    })?;
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
    let server = tokio::spawn(accept_loop(broker.clone(), listener, stopped));
    Ok(BrokerHandle {
        broker,
        local_addr,
        http_addr,
        stop,
        server,
    })
}

impl BrokerHandle {
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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(broker.clone(), stream, peer, stopped.clone()));
                }
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

/// Counts a connection as open until dropped.
struct ConnectionGauge(Arc<Broker>);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.metrics().connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let metrics = broker.metrics();
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    let _open = ConnectionGauge(broker.clone());
    let (mut reader, mut writer) = stream.into_split();
    let max_frame = broker.config().max_request_bytes;
    let budget = broker.config().max_inflight_bytes.min(u64::from(u32::MAX)) as u32;
    let inflight = Arc::new(Semaphore::new(budget as usize));
    let (queue, mut pending) =
        mpsc::channel::<(ResponseFuture, tokio::sync::OwnedSemaphorePermit)>(MAX_PIPELINED);
    // The one place that decides how file chunks reach the socket.
    let transfer = if broker.config().zero_copy_fetch {
        FileTransfer::Sendfile
    } else {
        FileTransfer::Copy
    };

    let writer_task = tokio::spawn(async move {
        let mut ordered = FuturesOrdered::new();
        let mut copy_buffer = Vec::new();
        let mut reader_done = false;
        loop {
            tokio::select! {
                item = pending.recv(), if !reader_done => match item {
                    Some((future, permit)) => ordered.push_back(async move { (future.await, permit) }),
                    None => reader_done = true,
                },
                Some((response, permit)) = ordered.next(), if !ordered.is_empty() => {
                    if let Some(response) = response
                        && let Err(err) = write_response(&mut writer, &response, transfer, &mut copy_buffer).await
                    {
                        tracing::debug!(%peer, error = %err, "write failed; closing connection");
                        return;
                    }
                    drop(permit);
                }
                else => return,
            }
            if reader_done && ordered.is_empty() {
                return;
            }
        }
    });

    loop {
        let size = tokio::select! {
            size = read_frame_size(&mut reader, max_frame) => size,
            _ = stopped.changed() => break,
        };
        let size = match size {
            Ok(Some(size)) => size,
            Ok(None) => break,
            Err(FrameError::TooLarge { size, limit }) => {
                tracing::warn!(%peer, size, limit, "request larger than socket.request.max.bytes; closing connection");
                break;
            }
            Err(err) => {
                tracing::debug!(%peer, error = %err, "closing connection");
                break;
            }
        };
        let Ok(permit) = inflight.clone().acquire_many_owned(size.min(budget)).await else {
            break;
        };
        let body = match read_frame_body(&mut reader, size).await {
            Ok(body) => body,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "closing connection");
                break;
            }
        };
        let request = match parse_request(body.freeze()) {
            Ok(request) => {
                tracing::trace!(%peer, api = ?request.api_key, version = request.api_version, correlation = request.correlation_id, "request");
                request
            }
            Err(err) => {
                tracing::warn!(%peer, error = %err, "bad request header; closing connection");
                break;
            }
        };
        match dispatch(&broker, &request, peer) {
            Dispatch::Respond(future) => {
                let (api, arrived, timed) = (request.api_key, Instant::now(), broker.clone());
                let future: ResponseFuture = Box::pin(async move {
                    let response = future.await;
                    timed.metrics().observe_request(api, arrived.elapsed());
                    response
                });
                if queue.send((future, permit)).await.is_err() {
                    break;
                }
            }
            Dispatch::Close(reason) => {
                tracing::warn!(%peer, %reason, "closing connection");
                break;
            }
        }
    }
    drop(queue);
    let _ = writer_task.await;
}
