//! One connection: the reader (this task) reads frames in order, parses headers and
//! dispatches (first waiting, reading nothing more, while a request is held until this
//! broker's metadata catches up with what its client knows); the writer task polls the
//! pending responses concurrently and writes them in request order, with `sendfile` or by
//! copying (the one place that chooses).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use sluice_protocol::frame::{FrameError, read_frame_body, read_frame_size};
use sluice_protocol::header::parse_request;
use sluice_protocol::writer::{FileTransfer, write_response};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};

use super::Slot;
use crate::broker::Broker;
use crate::handlers::{Attempt, Dispatch, ResponseFuture, dispatch};

/// Requests handed from the reader to the writer but not yet taken by it.
const HANDOFF: usize = 16;

/// Serves one connection: a reader task (this one) and a writer task.
pub(super) async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let max_queued = broker.config().queued_max_requests;
    let idle = broker.config().connections_max_idle;
    let (mut reader, mut writer) = stream.into_split();
    let max_frame = broker.config().max_request_bytes;
    let budget = broker.config().max_inflight_bytes.min(u64::from(u32::MAX)) as u32;
    let inflight = Arc::new(Semaphore::new(budget as usize));
    let (queue, mut pending) =
        mpsc::channel::<(ResponseFuture, tokio::sync::OwnedSemaphorePermit)>(HANDOFF);
    // The one place that decides how file chunks reach the socket.
    let transfer = if broker.config().zero_copy_fetch {
        FileTransfer::Sendfile
    } else {
        FileTransfer::Copy
    };

    // Aborted with this task: if the server gives up on a connection at shutdown, no
    // response future (an offset commit, say) goes on running after the logs are closed.
    let writer_task = AbortOnDrop::new(tokio::spawn(async move {
        let mut ordered = FuturesOrdered::new();
        let mut copy_buffer = Vec::new();
        let mut reader_done = false;
        loop {
            tokio::select! {
                // At most `queued.max.requests` unanswered: beyond, the reader waits.
                item = pending.recv(), if !reader_done && ordered.len() < max_queued => match item {
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
    }));

    loop {
        let size = tokio::select! {
            size = read_frame_size(&mut reader, max_frame) => size,
            _ = stopped.changed() => break,
            () = idle_for(idle, &inflight, budget) => {
                tracing::debug!(%peer, "idle for connections.max.idle.ms; closing connection");
                break;
            }
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
        // A client that announces a frame and stalls is idle too, and stopping does not
        // wait for it.
        let body = tokio::select! {
            body = read_frame_body(&mut reader, size) => body,
            _ = stopped.changed() => break,
            () = tokio::time::sleep(idle) => {
                tracing::debug!(%peer, "a request's body stalled for connections.max.idle.ms; closing connection");
                break;
            }
        };
        let body = match body {
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
        broker
            .metrics()
            .count_request_version(request.api_key, request.api_version);
        let mut dispatched = dispatch(&broker, &request, peer, Attempt::First);
        if let Dispatch::Hold(hold) = dispatched {
            tokio::select! {
                () = hold => {}
                _ = stopped.changed() => break,
            }
            dispatched = dispatch(&broker, &request, peer, Attempt::AfterHold);
        }
        match dispatched {
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
            Dispatch::Hold(_) => unreachable!("a request is held once"),
        }
    }
    drop(queue);
    writer_task.join().await;
}

/// Completes once the connection has had nothing in flight (every permit back) for a whole
/// `idle` period, checked at the end of each period: a long poll or a slow acks=all is not
/// idleness.
async fn idle_for(idle: Duration, inflight: &Semaphore, budget: u32) {
    loop {
        tokio::time::sleep(idle).await;
        if inflight.available_permits() == budget as usize {
            return;
        }
    }
}

/// A task aborted when its handle is dropped (unless it was joined).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn new(handle: tokio::task::JoinHandle<()>) -> Self {
        AbortOnDrop(Some(handle))
    }

    async fn join(mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
