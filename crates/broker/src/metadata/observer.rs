//! Broker-only nodes (`process.roles=broker`): they follow the metadata log without voting
//! (KRaft's observers). A voter keeps the committed log since its last snapshot in a
//! [`Feed`]; an observer fetches from the quorum's leader (a voter that does not lead answers
//! with the leader's id), on a connection of its own to the leader's controller listener,
//! and proposes its changes on a second one (forwarded into the leader's quorum like a
//! follower's, recognised by proposer and sequence when they come back committed). Its
//! fetches are its heartbeats: the leader notes each one, and fences an observer that stops
//! fetching, as it does a silent voter.
//!
//! Wire, after the `SLO2` handshake (magic, mode byte, node id u32, cluster id as in
//! `SLQ2`; the same accepted/refused answer):
//! - fetch mode: observer `after u64`; leader `1 | commit u64 | count u32 | {index u64 |
//!   length u32 | entry}*` (at most [`MAX_ENTRIES`], after waiting up to [`LONG_POLL`] for
//!   one), or `2 | index u64 | length u32 | snapshot` when `after` is below what the leader
//!   keeps, or `3 | leader i32` from a voter that does not lead (-1: unknown).
//! - propose mode: observer `sequence u64 | length u32 | entry` (an entry as
//!   `entry::encode` writes it), no answer.
//!
//! An observer keeps no metadata on disk: at each start it fetches the leader's snapshot
//! and the entries after it (the image is small next to the partitions it describes).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use sluice_log::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Change, Command, Inner, MetadataError, QuorumStatus, Reply, apply_entry, entry};

/// Most entries in one fetch answer.
pub const MAX_ENTRIES: usize = 256;
/// How long the leader holds a fetch that has nothing new: an observer fetches at least
/// this often, which is its heartbeat.
pub const LONG_POLL: Duration = Duration::from_millis(100);
/// Largest entry or snapshot accepted from the wire.
const MAX_FRAME: usize = 64 << 20;

pub const MAGIC: &[u8; 4] = b"SLO2";
pub const MODE_FETCH: u8 = 1;
pub const MODE_PROPOSE: u8 = 2;
const ENTRIES: u8 = 1;
const SNAPSHOT: u8 = 2;
const NOT_LEADER: u8 = 3;

/// What a voter keeps for observers: the latest snapshot and the committed entries after
/// it, and whether it leads.
#[derive(Debug, Default)]
pub struct Feed {
    state: std::sync::Mutex<FeedState>,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct FeedState {
    /// (index, the snapshot's bytes).
    snapshot: Option<(u64, Arc<Vec<u8>>)>,
    /// Committed entries after the snapshot, in index order without gaps.
    entries: VecDeque<(u64, Arc<Vec<u8>>)>,
    commit: u64,
    /// This voter leads; else the leader's node id, if known.
    leading: bool,
    leader: Option<i32>,
}

/// A fetch's answer.
#[derive(Debug)]
pub enum Fetched {
    Entries {
        commit: u64,
        entries: Vec<(u64, Arc<Vec<u8>>)>,
    },
    Snapshot {
        index: u64,
        data: Arc<Vec<u8>>,
    },
    NotLeader {
        leader: Option<i32>,
    },
}

impl Feed {
    fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A committed entry (empty data: Raft's own, skipped by observers but kept so that
    /// indexes have no gaps).
    pub fn committed(&self, index: u64, data: &[u8]) {
        let mut state = self.state();
        if let Some((last, _)) = state.entries.back() {
            assert_eq!(
                index,
                last + 1,
                "committed entries come in order without gaps"
            );
        }
        state.entries.push_back((index, Arc::new(data.to_vec())));
        state.commit = index;
        drop(state);
        self.changed.notify_waiters();
    }

    /// The image as of `index` replaces everything up to it.
    pub fn snapshot(&self, index: u64, data: Vec<u8>) {
        let mut state = self.state();
        while state.entries.front().is_some_and(|(i, _)| *i <= index) {
            state.entries.pop_front();
        }
        state.snapshot = Some((index, Arc::new(data)));
        state.commit = state.commit.max(index);
        drop(state);
        self.changed.notify_waiters();
    }

    pub fn set_leadership(&self, leading: bool, leader: Option<i32>) {
        let mut state = self.state();
        if (state.leading, state.leader) != (leading, leader) {
            state.leading = leading;
            state.leader = leader;
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// What an observer that holds everything up to `after` is sent now, if anything.
    fn answer(&self, after: u64) -> Option<Fetched> {
        let state = self.state();
        if !state.leading {
            return Some(Fetched::NotLeader {
                leader: state.leader,
            });
        }
        let first = state
            .entries
            .front()
            .map_or(state.commit + 1, |(index, _)| *index);
        if after.saturating_add(1) < first
            && let Some((index, data)) = &state.snapshot
            && *index > after
        {
            return Some(Fetched::Snapshot {
                index: *index,
                data: data.clone(),
            });
        }
        let entries: Vec<(u64, Arc<Vec<u8>>)> = state
            .entries
            .iter()
            .filter(|(index, _)| *index > after)
            .take(MAX_ENTRIES)
            .cloned()
            .collect();
        (!entries.is_empty()).then_some(Fetched::Entries {
            commit: state.commit,
            entries,
        })
    }

    /// Waits up to [`LONG_POLL`] for something to send an observer that holds everything up
    /// to `after`; an empty answer after that.
    pub async fn fetch(&self, after: u64) -> Fetched {
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        loop {
            let changed = self.changed.notified();
            if let Some(answer) = self.answer(after) {
                return answer;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Fetched::Entries {
                    commit: self.state().commit,
                    entries: Vec::new(),
                };
            }
        }
    }
}

/// Serves one observer's fetch connection (after the handshake): each fetch is also the
/// observer's heartbeat (`heard`).
pub async fn serve_fetches(
    stream: &mut tokio::net::TcpStream,
    feed: &Feed,
    heard: impl Fn(),
) -> Result<(), String> {
    loop {
        let after = stream.read_u64().await.map_err(|e| e.to_string())?;
        let answer = feed.fetch(after).await;
        if !matches!(answer, Fetched::NotLeader { .. }) {
            heard();
        }
        let mut out = Vec::new();
        match answer {
            Fetched::NotLeader { leader } => {
                out.push(NOT_LEADER);
                out.extend_from_slice(&leader.unwrap_or(-1).to_be_bytes());
            }
            Fetched::Snapshot { index, data } => {
                out.push(SNAPSHOT);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&(data.len() as u32).to_be_bytes());
                out.extend_from_slice(&data);
            }
            Fetched::Entries { commit, entries } => {
                out.push(ENTRIES);
                out.extend_from_slice(&commit.to_be_bytes());
                out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (index, data) in entries {
                    out.extend_from_slice(&index.to_be_bytes());
                    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
                    out.extend_from_slice(&data);
                }
            }
        }
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
    }
}

/// Serves one observer's propose connection: each proposal is handed to `propose`.
pub async fn serve_proposals(
    stream: &mut tokio::net::TcpStream,
    propose: impl Fn(u64, Vec<u8>) -> bool,
) -> Result<(), String> {
    loop {
        let sequence = stream.read_u64().await.map_err(|e| e.to_string())?;
        let len = stream.read_u32().await.map_err(|e| e.to_string())? as usize;
        if len > MAX_FRAME {
            return Err(format!("a proposal of {len} bytes"));
        }
        let mut entry = vec![0u8; len];
        stream
            .read_exact(&mut entry)
            .await
            .map_err(|e| e.to_string())?;
        if !propose(sequence, entry) {
            return Ok(());
        }
    }
}

/// The observer's side of a fetch connection (blocking; the observer's own thread).
pub struct FetchConnection {
    stream: TcpStream,
}

impl FetchConnection {
    pub fn new(stream: TcpStream) -> Self {
        FetchConnection { stream }
    }

    /// Asks for what follows `after` and reads the answer.
    pub fn fetch(&mut self, after: u64) -> std::io::Result<Fetched> {
        self.stream.write_all(&after.to_be_bytes())?;
        let mut kind = [0u8; 1];
        self.stream.read_exact(&mut kind)?;
        match kind[0] {
            NOT_LEADER => {
                let leader = self.read_i32()?;
                Ok(Fetched::NotLeader {
                    leader: (leader >= 0).then_some(leader),
                })
            }
            SNAPSHOT => {
                let index = self.read_u64()?;
                let data = self.read_bytes()?;
                Ok(Fetched::Snapshot {
                    index,
                    data: Arc::new(data),
                })
            }
            ENTRIES => {
                let commit = self.read_u64()?;
                let count = self.read_u32()? as usize;
                if count > MAX_ENTRIES {
                    return Err(invalid(format!("{count} entries in one answer")));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let index = self.read_u64()?;
                    entries.push((index, Arc::new(self.read_bytes()?)));
                }
                Ok(Fetched::Entries { commit, entries })
            }
            other => Err(invalid(format!("answer kind {other}"))),
        }
    }

    fn read_u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.stream.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn read_u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.stream.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_i32(&mut self) -> std::io::Result<i32> {
        let mut b = [0u8; 4];
        self.stream.read_exact(&mut b)?;
        Ok(i32::from_be_bytes(b))
    }

    fn read_bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let len = self.read_u32()? as usize;
        if len > MAX_FRAME {
            return Err(invalid(format!("{len} bytes")));
        }
        let mut data = vec![0u8; len];
        self.stream.read_exact(&mut data)?;
        Ok(data)
    }
}

/// Writes one proposal on an observer's propose connection.
pub fn send_proposal(stream: &mut TcpStream, sequence: u64, entry: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(entry.len() + 12);
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(entry);
    stream.write_all(&out)
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

/// How long an observer's proposal may wait for its commit (as a voter's).
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Between attempts to reach the leader.
const RETRY: Duration = Duration::from_millis(100);
/// A fetch answer the observer waits for at most (the leader holds one for [`LONG_POLL`]).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The observer's side: its own thread, following the leader's committed log into the
/// store's image and carrying the store's proposals to the leader.
pub struct Follower {
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
    raft_id: u64,
    /// Every voter: node id, host and port of its controller listener.
    voters: Vec<(i32, String, u16)>,
    /// The voter to try next when no leader is known.
    next_voter: usize,
    /// The leader, as a voter named it.
    hint: Option<i32>,
    /// The voter connected to, and whether it answered a fetch as the leader.
    connected: Option<i32>,
    following: Option<i32>,
    fetch: Option<FetchConnection>,
    propose: Option<TcpStream>,
    /// This node's proposals waiting for their entry, by sequence number.
    pending: BTreeMap<u64, (std::time::Instant, Reply)>,
    next_sequence: u64,
    applied: u64,
    commit: u64,
}

impl Follower {
    pub fn new(
        inner: Arc<Inner>,
        clock: Arc<dyn Clock>,
        raft_id: u64,
        voters: Vec<(i32, String, u16)>,
    ) -> Self {
        assert!(!voters.is_empty(), "an observer follows a quorum");
        Follower {
            inner,
            clock,
            raft_id,
            voters,
            next_voter: 0,
            hint: None,
            connected: None,
            following: None,
            fetch: None,
            propose: None,
            pending: BTreeMap::new(),
            next_sequence: uuid::Uuid::new_v4().as_u64_pair().0 >> 1,
            applied: 0,
            commit: 0,
        }
    }

    pub fn run(mut self, commands: &mpsc::Receiver<Command>) {
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Command::Propose {
                        leader_only: true,
                        reply,
                        ..
                    }) => {
                        // A broker-only node never leads the quorum.
                        let _ = reply.send(Err(MetadataError::NotController { leader: None }));
                    }
                    Ok(Command::Propose { entry, reply, .. }) => self.send_proposal(&entry, reply),
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                        self.fail_pending("the metadata quorum stopped");
                        return;
                    }
                    Ok(_) => {}
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.expire_proposals();
            if let Err(reason) = self.step() {
                tracing::debug!(%reason, "following the metadata quorum");
                self.disconnect();
                std::thread::sleep(RETRY);
            }
            self.publish_status();
        }
    }

    /// One fetch from the leader (connecting first if needed), applied.
    fn step(&mut self) -> Result<(), String> {
        if self.fetch.is_none()
            && let Err(reason) = self.connect()
        {
            // The named leader cannot be reached: ask the voters in turn.
            self.hint = None;
            return Err(reason);
        }
        let fetch = self.fetch.as_mut().expect("connected above");
        match fetch.fetch(self.applied).map_err(|e| e.to_string())? {
            Fetched::NotLeader { leader } => {
                self.hint = leader;
                Err(format!("not the leader (leader: {leader:?})"))
            }
            Fetched::Snapshot { index, data } => {
                self.following = self.connected;
                let image = Arc::new(entry::decode_snapshot(&data)?);
                self.inner.set_image(image.clone());
                if let Some(id) = &image.cluster_id {
                    self.inner.identity.learn(id);
                }
                if let Some(listener) = self.inner.listener.get()
                    && let Err(reason) = listener(Change::Restored, &image)
                {
                    tracing::warn!(index, %reason, "the fetched metadata could not be carried out in full");
                }
                self.applied = index;
                self.commit = self.commit.max(index);
                Ok(())
            }
            Fetched::Entries { commit, entries } => {
                self.following = self.connected;
                self.commit = commit;
                for (index, data) in entries {
                    if index != self.applied + 1 {
                        return Err(format!(
                            "entry {index} after {}: a gap in the fetched log",
                            self.applied
                        ));
                    }
                    let settled =
                        apply_entry(&self.inner, true, index, &data).map_err(|e| e.to_string())?;
                    self.applied = index;
                    if let Some(((proposer, sequence), outcome)) = settled
                        && proposer == self.raft_id
                        && let Some((_, reply)) = self.pending.remove(&sequence)
                    {
                        let _ = reply.send(outcome);
                    }
                }
                Ok(())
            }
        }
    }

    /// The voter to follow: the leader named last, else the next one in turn.
    fn target(&self) -> Option<(i32, String, u16)> {
        let named = self
            .hint
            .and_then(|leader| self.voters.iter().find(|(id, _, _)| *id == leader));
        named
            .or_else(|| self.voters.get(self.next_voter % self.voters.len()))
            .cloned()
    }

    fn connect(&mut self) -> Result<(), String> {
        let (id, host, port) = self.target().expect("voters are given");
        if self.hint.is_none() {
            self.next_voter += 1;
        }
        let fetch = self.introduce(&host, port, MODE_FETCH)?;
        let propose = self.introduce(&host, port, MODE_PROPOSE)?;
        tracing::debug!(voter = id, "following the metadata quorum from this voter");
        self.fetch = Some(FetchConnection::new(fetch));
        self.propose = Some(propose);
        self.connected = Some(id);
        Ok(())
    }

    fn introduce(&self, host: &str, port: u16, mode: u8) -> Result<TcpStream, String> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("{host}:{port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}:{port}: no address"))?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut hello = MAGIC.to_vec();
        hello.push(mode);
        hello.extend_from_slice(&(self.raft_id as u32).to_be_bytes());
        let ours = self.inner.identity.known().unwrap_or_default();
        hello.extend_from_slice(&(ours.len() as u16).to_be_bytes());
        hello.extend_from_slice(ours.as_bytes());
        stream.write_all(&hello).map_err(|e| e.to_string())?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
        match answer[0] {
            0 => Ok(stream),
            1 => {
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).map_err(|e| e.to_string())?;
                let mut theirs = vec![0u8; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut theirs).map_err(|e| e.to_string())?;
                let theirs = String::from_utf8_lossy(&theirs).to_string();
                self.inner
                    .identity
                    .refused_by(raft_id_of(&self.voters, host, port), &theirs);
                Err(format!("the voter belongs to cluster {theirs}"))
            }
            other => Err(format!("introduction answered with {other}")),
        }
    }

    fn disconnect(&mut self) {
        self.fetch = None;
        self.propose = None;
        self.connected = None;
        self.following = None;
    }

    fn send_proposal(&mut self, entry: &[u8], reply: Reply) {
        let Some(stream) = self.propose.as_mut() else {
            let _ = reply.send(Err(MetadataError::NotController { leader: None }));
            return;
        };
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        if let Err(err) = send_proposal(stream, sequence, entry) {
            let _ = reply.send(Err(MetadataError::Quorum(format!(
                "could not reach the leader: {err}; retry"
            ))));
            self.disconnect();
            return;
        }
        let deadline = self.clock.now() + PROPOSAL_TIMEOUT;
        self.pending.insert(sequence, (deadline, reply));
    }

    fn expire_proposals(&mut self) {
        let now = self.clock.now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in expired {
            let (_, reply) = self.pending.remove(&sequence).expect("listed above");
            let _ = reply.send(Err(MetadataError::Quorum(format!(
                "the change did not commit within {PROPOSAL_TIMEOUT:?} (it may still); retry"
            ))));
        }
    }

    fn fail_pending(&mut self, reason: &str) {
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(MetadataError::Quorum(reason.to_string())));
        }
    }

    fn publish_status(&self) {
        self.inner.set_status(QuorumStatus {
            leader: self.following,
            term: 0,
            commit_index: self.commit,
            applied: self.applied,
            log_end: self.applied + 1,
            voters: Vec::new(),
            heard: Vec::new(),
        });
    }
}

/// The quorum id of the voter at `host:port` (for the log of a refusal).
fn raft_id_of(voters: &[(i32, String, u16)], host: &str, port: u16) -> u64 {
    voters
        .iter()
        .find(|(_, h, p)| h == host && *p == port)
        .map_or(0, |(id, _, _)| super::raft_id(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_feed_answers_with_entries_a_snapshot_or_the_leader() {
        let feed = Feed::default();
        assert!(matches!(
            feed.fetch(0).await,
            Fetched::NotLeader { leader: None }
        ));
        feed.set_leadership(true, Some(1));
        for index in 1..=5 {
            feed.committed(index, format!("e{index}").as_bytes());
        }
        match feed.fetch(2).await {
            Fetched::Entries { commit, entries } => {
                assert_eq!(commit, 5);
                assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4, 5]);
            }
            other => panic!("{other:?}"),
        }
        // Compacted up to 4: an observer at 2 needs the snapshot, one at 4 the rest.
        feed.snapshot(4, b"image".to_vec());
        assert!(matches!(
            feed.fetch(2).await,
            Fetched::Snapshot { index: 4, .. }
        ));
        assert!(matches!(
            feed.fetch(4).await,
            Fetched::Entries { ref entries, .. } if entries.len() == 1
        ));
        // Nothing new: an empty answer after the long poll.
        assert!(matches!(
            feed.fetch(5).await,
            Fetched::Entries { ref entries, .. } if entries.is_empty()
        ));
    }
}
