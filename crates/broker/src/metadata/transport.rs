//! The metadata quorum's network: Raft messages between voters over TCP, on the
//! controller listener.
//!
//! A connection starts with `SLQ1` and the sender's node id (u32), then carries frames of
//! `length u32 | Raft message (protobuf)`. Each peer has one outbound connection, opened
//! lazily and reopened after a failure with a backoff; messages queued for a peer that is
//! down are dropped when the queue is full, which Raft tolerates (it retries). Inbound
//! messages must come from a voter and be addressed to this node; anything else closes the
//! connection. Nothing here decides anything: the driver thread owns the node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use sluice_quorum::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc as async_mpsc;
use tokio::sync::watch;

use super::Command;

const MAGIC: &[u8; 4] = b"SLQ1";
/// A Raft message larger than this is refused (snapshots of the metadata image are far
/// smaller; the quorum's own limit on a record is 64 MiB).
const MAX_FRAME: usize = 64 << 20;
/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this long between attempts to reach a peer that is down: a vote request waits
/// for the next attempt, so a long backoff would delay elections after a peer returns.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// A voter's address for Raft messages.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The quorum's id of the voter (its node id + 1: Raft ids start at 1).
    pub raft_id: u64,
    pub host: String,
    pub port: u16,
}

/// Sends Raft messages to peers; owned by the driver thread. Dropping it stops the
/// listener, the connections and the sender tasks.
#[derive(Debug)]
pub(crate) struct Transport {
    peers: HashMap<u64, async_mpsc::Sender<Vec<u8>>>,
    _stop: watch::Sender<()>,
}

impl Transport {
    /// Listens on `listen` for peers' messages (handed to the driver as commands) and starts
    /// one sender task per peer, on `runtime`.
    pub async fn start(
        self_id: u64,
        peers: Vec<Peer>,
        listen: SocketAddr,
        inbound: mpsc::Sender<Command>,
    ) -> std::io::Result<(Transport, SocketAddr)> {
        let listener = TcpListener::bind(listen).await?;
        let bound = listener.local_addr()?;
        let voters: Vec<u64> = peers.iter().map(|p| p.raft_id).collect();
        let (stop, stopped) = watch::channel(());
        tokio::spawn(accept(listener, self_id, voters, inbound, stopped));
        let mut senders = HashMap::new();
        for peer in peers {
            if peer.raft_id == self_id {
                continue;
            }
            let (sender, receiver) = async_mpsc::channel(QUEUE);
            tokio::spawn(send_to(peer.clone(), self_id, receiver));
            senders.insert(peer.raft_id, sender);
        }
        Ok((
            Transport {
                peers: senders,
                _stop: stop,
            },
            bound,
        ))
    }

    /// Queues `message` for its recipient; dropped if the queue is full or the peer unknown.
    pub fn send(&self, message: &Message) {
        if let Some(peer) = self.peers.get(&message.to) {
            let _ = peer.try_send(sluice_quorum::encode_message(message));
        }
    }
}

async fn accept(
    listener: TcpListener,
    self_id: u64,
    voters: Vec<u64>,
    inbound: mpsc::Sender<Command>,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let inbound = inbound.clone();
        let voters = voters.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = receive_from(stream, self_id, &voters, &inbound) => {
                    if let Err(reason) = result {
                        tracing::debug!(%peer, %reason, "quorum connection closed");
                    }
                }
                _ = stopped.changed() => {}
            }
        });
    }
}

async fn receive_from(
    mut stream: TcpStream,
    self_id: u64,
    voters: &[u64],
    inbound: &mpsc::Sender<Command>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut hello = [0u8; 8];
    stream
        .read_exact(&mut hello)
        .await
        .map_err(|e| e.to_string())?;
    if &hello[..4] != MAGIC {
        return Err("not a quorum peer".into());
    }
    let from = u64::from(u32::from_be_bytes(hello[4..].try_into().expect("4 bytes")));
    if !voters.contains(&from) {
        return Err(format!("raft id {from} is not a voter"));
    }
    let mut buf = Vec::new();
    loop {
        let len = stream.read_u32().await.map_err(|e| e.to_string())? as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes"));
        }
        buf.resize(len, 0);
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        let message = sluice_quorum::decode_message(&buf).ok_or("undecodable message")?;
        if message.from != from || message.to != self_id {
            return Err(format!(
                "message from {} to {} on the connection of {from}",
                message.from, message.to
            ));
        }
        if inbound.send(Command::Message(Box::new(message))).is_err() {
            return Ok(()); // the driver stopped
        }
    }
}

async fn send_to(peer: Peer, self_id: u64, mut queue: async_mpsc::Receiver<Vec<u8>>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((peer.host.as_str(), peer.port)),
        )
        .await;
        let Ok(Ok(stream)) = connected else {
            // While the peer is unreachable, what was queued for it is stale: drop it.
            while queue.try_recv().is_ok() {}
            if queue.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = Duration::from_millis(10);
        let _ = stream.set_nodelay(true);
        let mut writer = BufWriter::new(stream);
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&(self_id as u32).to_be_bytes());
        if writer.write_all(&hello).await.is_err() {
            continue;
        }
        loop {
            let Some(frame) = queue.recv().await else {
                return;
            };
            if write_frame(&mut writer, &frame).await.is_err() {
                break;
            }
            // Send what else is queued in the same write, then flush.
            let mut failed = false;
            while let Ok(frame) = queue.try_recv() {
                if write_frame(&mut writer, &frame).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || writer.flush().await.is_err() {
                break;
            }
        }
    }
}

async fn write_frame(writer: &mut BufWriter<TcpStream>, frame: &[u8]) -> std::io::Result<()> {
    writer.write_u32(frame.len() as u32).await?;
    writer.write_all(frame).await
}
