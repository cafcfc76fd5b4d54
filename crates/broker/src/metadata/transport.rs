//! The metadata quorum's network: Raft messages between voters over TCP, on the
//! controller listener.
//!
//! A connection starts with `SLQ2`, the sender's node id (u32) and the cluster id it knows
//! (u16 length + UTF-8, empty if none); the receiver answers one byte, 0 to go on, or 1
//! followed by its own cluster id (same encoding) when the two differ: a node holding another
//! cluster's data must never exchange Raft messages with this one (its log would be taken
//! for this cluster's). Then the connection carries frames of
//! `length u32 | Raft message (protobuf)`. Each peer has one outbound connection, opened
//! lazily and reopened after a failure with a backoff; messages queued for a peer that is
//! down are dropped when the queue is full, which Raft tolerates (it retries). Inbound
//! messages must come from a voter and be addressed to this node; anything else closes the
//! connection. Nothing here decides anything: the driver thread owns the node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use sluice_quorum::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc as async_mpsc;
use tokio::sync::watch;

use super::Command;
use super::observer::{self, Feed};

const MAGIC: &[u8; 4] = b"SLQ2";
const HELLO_ACCEPTED: u8 = 0;
const HELLO_FOREIGN: u8 = 1;
/// A Raft message larger than this is refused (snapshots of the metadata image are far
/// smaller; the quorum's own limit on a record is 64 MiB).
const MAX_FRAME: usize = 64 << 20;
/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this long between attempts to reach a peer that is down: a vote request waits
/// for the next attempt, so a long backoff would delay elections after a peer returns.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// The cluster id this node knows (from its data, or once the metadata has one), and the
/// first peer met that belongs to another cluster.
#[derive(Debug, Default)]
pub struct ClusterIdentity {
    ours: std::sync::RwLock<Option<String>>,
    /// The id this node brings if the metadata has none: its data's, or a new one.
    initial: String,
    foreign: std::sync::Mutex<Option<String>>,
    /// Peers (raft ids) whose address refuses connections, since when: nothing listens
    /// there (the process died or stopped), as opposed to a peer that is merely silent
    /// (paused, or a cut link: connections time out instead). Cleared by a connection.
    refusing: std::sync::Mutex<HashMap<u64, std::time::Instant>>,
}

impl ClusterIdentity {
    pub fn new(known: Option<&str>) -> Self {
        ClusterIdentity {
            ours: std::sync::RwLock::new(known.map(str::to_string)),
            initial: known
                .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string),
            foreign: std::sync::Mutex::new(None),
            refusing: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn connection_refused(&self, peer: u64) {
        self.refusing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(peer)
            .or_insert_with(std::time::Instant::now);
    }

    fn connected(&self, peer: u64) {
        self.refusing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }

    /// The peers that refuse connections, and since when.
    pub fn refusing(&self) -> Vec<(u64, std::time::Instant)> {
        let refusing = self.refusing.lock().unwrap_or_else(|e| e.into_inner());
        refusing
            .iter()
            .map(|(peer, since)| (*peer, *since))
            .collect()
    }

    pub fn initial(&self) -> String {
        self.initial.clone()
    }

    pub fn known(&self) -> Option<String> {
        self.ours.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn learn(&self, id: &str) {
        *self.ours.write().unwrap_or_else(|e| e.into_inner()) = Some(id.to_string());
    }

    pub fn foreign(&self) -> Option<String> {
        self.foreign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A voter refused this node as belonging to cluster `theirs`: remembered as admits
    /// does.
    pub fn refused_by(&self, peer: u64, theirs: &str) {
        self.admits(peer, theirs);
    }

    /// Whether a peer claiming `theirs` may talk to this node; remembers the first that may
    /// not.
    fn admits(&self, peer: u64, theirs: &str) -> bool {
        match self.known() {
            Some(ours) if !theirs.is_empty() && ours != theirs => {
                let mut foreign = self.foreign.lock().unwrap_or_else(|e| e.into_inner());
                if foreign.is_none() {
                    tracing::error!(
                        peer = peer.saturating_sub(1),
                        their_cluster = theirs,
                        our_cluster = %ours,
                        "a quorum peer belongs to another cluster: refused"
                    );
                    *foreign = Some(format!(
                        "voter {} belongs to cluster {theirs}, this node's data to cluster {ours}",
                        peer.saturating_sub(1)
                    ));
                }
                false
            }
            _ => true,
        }
    }
}

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
        identity: Arc<ClusterIdentity>,
        feed: Arc<Feed>,
    ) -> std::io::Result<(Transport, SocketAddr)> {
        let listener = TcpListener::bind(listen).await?;
        let bound = listener.local_addr()?;
        let voters: Vec<u64> = peers.iter().map(|p| p.raft_id).collect();
        let (stop, stopped) = watch::channel(());
        tokio::spawn(accept(
            listener,
            self_id,
            voters,
            inbound,
            stopped,
            identity.clone(),
            feed,
        ));
        let mut senders = HashMap::new();
        for peer in peers {
            if peer.raft_id == self_id {
                continue;
            }
            let (sender, receiver) = async_mpsc::channel(QUEUE);
            tokio::spawn(send_to(peer.clone(), self_id, receiver, identity.clone()));
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
    identity: Arc<ClusterIdentity>,
    feed: Arc<Feed>,
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
        let identity = identity.clone();
        let feed = feed.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = receive_from(stream, self_id, &voters, &inbound, &identity, &feed) => {
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
    identity: &ClusterIdentity,
    feed: &Feed,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut magic = [0u8; 4];
    stream
        .read_exact(&mut magic)
        .await
        .map_err(|e| e.to_string())?;
    if &magic == observer::MAGIC {
        return serve_observer(stream, voters, inbound, identity, feed).await;
    }
    if &magic != MAGIC {
        return Err("not a quorum peer".into());
    }
    let from = u64::from(stream.read_u32().await.map_err(|e| e.to_string())?);
    if !voters.contains(&from) {
        return Err(format!("raft id {from} is not a voter"));
    }
    answer_introduction(&mut stream, from, identity).await?;
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

/// A broker-only node's connection: after the introduction, its fetches (each one its
/// heartbeat) or its proposals.
async fn serve_observer(
    mut stream: TcpStream,
    voters: &[u64],
    inbound: &mpsc::Sender<Command>,
    identity: &ClusterIdentity,
    feed: &Feed,
) -> Result<(), String> {
    let mode = stream.read_u8().await.map_err(|e| e.to_string())?;
    let from = u64::from(stream.read_u32().await.map_err(|e| e.to_string())?);
    if voters.contains(&from) {
        return Err(format!("raft id {from} is a voter, not an observer"));
    }
    answer_introduction(&mut stream, from, identity).await?;
    match mode {
        observer::MODE_FETCH => {
            observer::serve_fetches(&mut stream, feed, || {
                let _ = inbound.send(Command::Heard(from));
            })
            .await
        }
        observer::MODE_PROPOSE => {
            observer::serve_proposals(&mut stream, |sequence, entry| {
                inbound
                    .send(Command::ProposeFor {
                        proposer: from,
                        sequence,
                        entry,
                    })
                    .is_ok()
            })
            .await
        }
        other => Err(format!("observer mode {other}")),
    }
}

/// Reads the cluster id a connecting node (raft id `from`) claims and answers: accepted, or
/// refused with this node's cluster id when the two differ.
async fn answer_introduction(
    stream: &mut TcpStream,
    from: u64,
    identity: &ClusterIdentity,
) -> Result<(), String> {
    let theirs = read_cluster_id(stream).await?;
    if !identity.admits(from, &theirs) {
        let mut refusal = vec![HELLO_FOREIGN];
        put_cluster_id(&mut refusal, &identity.known().unwrap_or_default());
        let _ = stream.write_all(&refusal).await;
        return Err(format!("raft id {from} belongs to cluster {theirs}"));
    }
    stream
        .write_all(&[HELLO_ACCEPTED])
        .await
        .map_err(|e| e.to_string())
}

async fn read_cluster_id(stream: &mut TcpStream) -> Result<String, String> {
    let len = stream.read_u16().await.map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut bytes)
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "a cluster id that is not UTF-8".to_string())
}

fn put_cluster_id(out: &mut Vec<u8>, id: &str) {
    let id = &id.as_bytes()[..id.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id);
}

/// Introduces this node to a peer: Ok if the peer accepts it.
async fn introduce(
    stream: &mut TcpStream,
    self_id: u64,
    peer: u64,
    identity: &ClusterIdentity,
) -> Result<(), String> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&(self_id as u32).to_be_bytes());
    put_cluster_id(&mut hello, &identity.known().unwrap_or_default());
    stream.write_all(&hello).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, stream.read_u8())
        .await
        .map_err(|_| "no answer to the introduction".to_string())?
        .map_err(|e| e.to_string())?;
    match answer {
        HELLO_ACCEPTED => Ok(()),
        HELLO_FOREIGN => {
            let theirs = read_cluster_id(stream).await?;
            identity.admits(peer, &theirs);
            Err(format!("the peer belongs to cluster {theirs}"))
        }
        other => Err(format!("introduction answered with {other}")),
    }
}

async fn send_to(
    peer: Peer,
    self_id: u64,
    mut queue: async_mpsc::Receiver<Vec<u8>>,
    identity: Arc<ClusterIdentity>,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((peer.host.as_str(), peer.port)),
        )
        .await;
        let introduced = match connected {
            Ok(Ok(mut stream)) => {
                identity.connected(peer.raft_id);
                introduce(&mut stream, self_id, peer.raft_id, &identity)
                    .await
                    .map(|()| stream)
            }
            Ok(Err(err)) => {
                if err.kind() == std::io::ErrorKind::ConnectionRefused {
                    identity.connection_refused(peer.raft_id);
                }
                Err(err.to_string())
            }
            Err(_) => Err("connect timed out".into()),
        };
        let Ok(stream) = introduced else {
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
        let (mut closed, writer) = stream.into_split();
        let mut writer = BufWriter::new(writer);
        loop {
            // The peer never writes on this connection: a read returns only when it closed
            // (its process died or restarted). Reconnect then, before anything is written
            // into the dead connection and lost: the first message after a peer restarts is
            // often a vote, and losing it costs an election round.
            let mut byte = [0u8; 1];
            let frame = tokio::select! {
                frame = queue.recv() => frame,
                _ = closed.read(&mut byte) => break,
            };
            let Some(frame) = frame else {
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

async fn write_frame(
    writer: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_u32(frame.len() as u32).await?;
    writer.write_all(frame).await
}
