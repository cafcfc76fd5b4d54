//! Cluster metadata as a log of records applied to an in-memory image (DESIGN.md §5),
//! ordered by the metadata quorum (`sluice-quorum`, Raft).
//!
//! One change (the records a request makes) is one quorum entry. A change is proposed to
//! the quorum, and once committed (durable on a majority of voters; on a single node, on its
//! own disk) it is applied to the image and handed to the listener (the broker's publisher,
//! which opens and removes partitions), in commit order, by the quorum's driver thread,
//! whatever the requester does meanwhile. So a requester that disconnects cannot leave an
//! entry in the log that the image lacks, and a retry sees the change applied. Records are
//! encoded (and refused if a field does not fit) before anything is proposed, so replay
//! reads back every entry this store wrote.
//!
//! The quorum's log lives in `<data>/metadata/raft.log`; every `COMPACT_EVERY` entries it
//! is compacted into a snapshot of the image, so a restart replays at most that many
//! entries after the snapshot. A single node is a quorum of one voter: it elects itself at
//! startup. A data directory written before the quorum existed (records in the
//! `__cluster_metadata-0` log under `metadata/`) is imported once, as the first entry,
//! and the old log removed.
//!
//! - [`record`]: the records and their encoding;
//! - [`image`]: the image and how a record applies to it;
//! - `entry`: a change as a quorum entry, and an image as a snapshot.

mod entry;
pub mod image;
mod observer;
pub mod record;
mod transport;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use sluice_log::{Clock, Log, LogConfig, LogManager, ManagerConfig, TopicPartition};
use sluice_quorum::{FileDisk, Message, NodeConfig, Output, ProposeError, QuorumNode};
use tokio::sync::oneshot;

use transport::{ClusterIdentity, Peer, Transport};

pub use image::{ApplyError, BrokerImage, MetadataImage, NO_LEADER, PartitionState, TopicImage};
pub use record::{EncodeError, MetadataRecord};

/// The metadata log's partition, named as in KRaft (the pre-quorum log, imported once).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// How often the quorum's clock ticks; election and heartbeat timeouts count ticks. Fine
/// enough that voters rarely draw the same election timeout (a tie costs another round).
const TICK: Duration = Duration::from_millis(10);
/// How long a voter's quorum address must refuse connections, with nothing heard from it,
/// before it is taken for dead: a restarting process rebinds well within it.
pub(crate) const REFUSED_GRACE: Duration = Duration::from_millis(300);
/// Most ticks made up at once after the driver fell behind the clock.
const MAX_CATCH_UP_TICKS: usize = 5;
/// Most commands handled between two looks at the clock.
const MAX_DRAINED_COMMANDS: usize = 4096;
/// A leader's heartbeat interval, in ticks (100 ms).
const HEARTBEAT_TICKS: usize = 10;
/// Entries between two snapshots of the image.
const COMPACT_EVERY: u64 = 1024;
/// The node id of a single node's one-voter quorum.
const SINGLE_VOTER: u64 = 1;

/// Why a metadata change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Log(#[from] sluice_log::LogError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("corrupt metadata log at offset {offset}: {reason}")]
    Corrupt { offset: i64, reason: String },
    #[error("metadata quorum: {0}")]
    Quorum(String),
    /// Committed, but computed from an image that was not the latest: it did not apply, on
    /// any node. Computing it again from the current image may succeed.
    #[error("the change no longer applies: {0}; retry")]
    Stale(String),
    /// Not committed: another entry took its place in a leader change. Proposing it again
    /// cannot apply it twice.
    #[error("the change was lost in a leader change; retry")]
    Lost,
    /// Only the quorum's leader (the active controller) takes changes.
    #[error("not the active controller (leader: {leader:?})")]
    NotController { leader: Option<i32> },
    #[error("metadata commit task failed: {0}")]
    Task(String),
}

impl From<sluice_quorum::NodeError> for MetadataError {
    fn from(err: sluice_quorum::NodeError) -> Self {
        MetadataError::Quorum(err.to_string())
    }
}

/// A change made durable, applied and published: what the listener said of it (`Err`: it
/// could not carry the change out, e.g. a log it could not create; the change itself is
/// durable and is carried out again at the next start), and the value the change computed.
#[derive(Debug)]
pub struct Committed<T> {
    pub published: Result<(), String>,
    pub value: T,
}

impl<T> Committed<T> {
    /// A change of no records: nothing to commit or publish.
    fn unchanged(value: T) -> Self {
        Committed {
            published: Ok(()),
            value,
        }
    }
}

/// What the listener is told, for each committed change: first `Opening`, before the image
/// that includes it is visible (what serves the change, a partition this node now leads,
/// is ready before anyone is told it exists), then `Records`, once it is visible (what
/// must follow the image: a deleted topic's offsets are forgotten once no commit can see the
/// topic any more). `Restored`: the image was replaced whole (a snapshot from the leader:
/// this node was too far behind for entries).
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Opening(&'a [MetadataRecord]),
    Records(&'a [MetadataRecord]),
    Restored,
}

/// Called with every committed change, in commit order, before the next change starts.
pub type Listener = Box<dyn Fn(Change<'_>, &MetadataImage) -> Result<(), String> + Send + Sync>;

/// What the proposer of a change hears back: the listener's verdict once the change is
/// committed and applied.
pub(crate) type Reply = oneshot::Sender<ReplyValue>;
pub(crate) type ReplyValue = Result<Result<(), String>, MetadataError>;

pub(crate) enum Command {
    /// `entry`: the change as [`entry::encode`] wrote it. `leader_only`: refused
    /// (NotController) unless this node leads the quorum, never forwarded.
    Propose {
        entry: Vec<u8>,
        reply: Reply,
        leader_only: bool,
    },
    /// A broker-only node's change (its proposer recognises it when it commits).
    ProposeFor {
        proposer: u64,
        sequence: u64,
        entry: Vec<u8>,
    },
    /// A broker-only node fetched from this leader: its heartbeat.
    Heard(u64),
    /// Nothing came: time to look at the clock.
    Tick,
    Message(Box<Message>),
    Stop,
}

/// Reports a panicking quorum thread as its failure ([`MetadataStore::failed`]).
struct ReportPanic(Arc<Inner>);

impl Drop for ReportPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .failure
                .send_replace(Some("the metadata quorum thread panicked".into()));
        }
    }
}

/// A quorum of several voters: this node's place in it.
#[derive(Debug, Clone)]
pub struct QuorumSetup {
    pub node_id: i32,
    /// Every voter: node id, host and port of its controller listener.
    pub voters: Vec<(i32, String, u16)>,
    /// Where this node listens for its peers.
    pub listen: std::net::SocketAddr,
    /// `controller.quorum.election.timeout.ms`: each voter waits between one and two of
    /// these without a leader before it stands for election.
    pub election_timeout: Duration,
}

/// How long a proposal may wait for its commit. A proposal forwarded to the leader can be
/// lost without a trace (the leader fails before appending it); its proposer is told to
/// retry after this long (the change may still commit: a retry sees it applied).
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What this node knows of the quorum, refreshed by the driver after every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The leader's node id (the active controller), if known.
    pub leader: Option<i32>,
    pub term: u64,
    pub commit_index: u64,
    pub applied: u64,
    /// This node's log end (the index after its last entry).
    pub log_end: u64,
    /// As leader: each voter's node id and log end as far as the leader knows.
    pub voters: Vec<(i32, u64)>,
    /// As leader: when each other voter was last heard from (on the injected clock; a
    /// voter not heard since this node became leader counts from then).
    pub heard: Vec<(i32, std::time::Instant)>,
}

pub(crate) struct Inner {
    image: RwLock<Arc<MetadataImage>>,
    /// Bumped after every new image: what a request waiting for this node to catch up
    /// with the quorum waits on.
    image_changed: tokio::sync::watch::Sender<u64>,
    /// Serialises changes: each is validated against the image it will apply to, and is
    /// held until the change is applied and published.
    writer: Arc<tokio::sync::Mutex<()>>,
    listener: OnceLock<Listener>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    driver: Mutex<Option<std::thread::JoinHandle<()>>>,
    status: RwLock<QuorumStatus>,
    /// Where the quorum listens for peers (a quorum of several voters only).
    quorum_addr: Option<std::net::SocketAddr>,
    /// The cluster id as this node knows it, and whether a peer belongs to another cluster.
    identity: Arc<ClusterIdentity>,
    /// The committed log kept for broker-only nodes (a voter's; unused on an observer).
    feed: Arc<observer::Feed>,
    /// Why this voter's quorum thread stopped on an error (its metadata log could not be
    /// written, a committed change could not be applied); `None` while it runs.
    failure: tokio::sync::watch::Sender<Option<String>>,
}

/// The metadata quorum's log and the image it produces.
pub struct MetadataStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("topics", &self.image().topics.len())
            .finish_non_exhaustive()
    }
}

impl MetadataStore {
    /// Opens (or creates) the metadata quorum's log under `dir`, replays it into the image
    /// (importing a pre-quorum log once), and starts the quorum's driver thread.
    pub fn open(
        dir: &Path,
        sync_threads: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, MetadataError> {
        Self::open_with(dir, sync_threads, clock, 0, None, None)
    }

    /// Opens the store as one voter of a quorum of several (`quorum`), or of one (`None`:
    /// `node_id` is then what the status reports as the leader).
    /// With several voters it must run on a thread of a tokio runtime that is not an async
    /// worker (the broker opens it in `spawn_blocking`): the network runs on that runtime.
    ///
    /// `cluster_id` is the id this node's data belongs to, if it knows one: peers of another
    /// cluster are refused, and the first active controller records it as the cluster's
    /// (a new one if no voter knew one) when the metadata has none yet.
    pub fn open_with(
        dir: &Path,
        sync_threads: usize,
        clock: Arc<dyn Clock>,
        node_id: i32,
        quorum: Option<&QuorumSetup>,
        cluster_id: Option<&str>,
    ) -> Result<Self, MetadataError> {
        std::fs::create_dir_all(dir).map_err(quorum_io)?;
        let identity = Arc::new(ClusterIdentity::new(cluster_id));
        let feed = Arc::new(observer::Feed::default());
        let (sender, receiver) = mpsc::channel();
        let (config, transport, quorum_addr) = match quorum {
            None => (
                NodeConfig {
                    id: SINGLE_VOTER,
                    voters: [SINGLE_VOTER].into(),
                    election_ticks: 2 * HEARTBEAT_TICKS + 1,
                    election_jitter_ticks: 0,
                    seed: 0,
                    heartbeat_ticks: HEARTBEAT_TICKS,
                },
                None,
                None,
            ),
            Some(setup) => {
                let base = (setup.election_timeout.as_millis() / TICK.as_millis())
                    .max(2 * HEARTBEAT_TICKS as u128 + 1) as usize;
                // Drawn anew after each election within [1, 1.5) timeouts: distinct voters
                // settle an election quickly, and a failover stays within 2 timeouts.
                let config = NodeConfig {
                    id: raft_id(setup.node_id),
                    voters: setup.voters.iter().map(|(id, _, _)| raft_id(*id)).collect(),
                    election_ticks: base,
                    election_jitter_ticks: (base / 2).max(2),
                    seed: uuid::Uuid::new_v4().as_u128() as u64,
                    heartbeat_ticks: HEARTBEAT_TICKS,
                };
                let peers = setup
                    .voters
                    .iter()
                    .map(|(id, host, port)| Peer {
                        raft_id: raft_id(*id),
                        host: host.clone(),
                        port: *port,
                    })
                    .collect();
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    MetadataError::Quorum("a quorum of several voters needs a runtime".into())
                })?;
                let (transport, bound) = runtime
                    .block_on(Transport::start(
                        config.id,
                        peers,
                        setup.listen,
                        sender.clone(),
                        identity.clone(),
                        feed.clone(),
                    ))
                    .map_err(|e| {
                        MetadataError::Quorum(format!(
                            "cannot listen for the quorum on {}: {e}",
                            setup.listen
                        ))
                    })?;
                (config, Some(transport), Some(bound))
            }
        };
        let node = QuorumNode::open(&config, FileDisk::open(dir).map_err(quorum_io)?, 0)?;
        let inner = Arc::new(Inner {
            image: RwLock::new(Arc::new(MetadataImage::default())),
            image_changed: tokio::sync::watch::Sender::new(0),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            listener: OnceLock::new(),
            commands: Mutex::new(None),
            driver: Mutex::new(None),
            status: RwLock::new(QuorumStatus::default()),
            quorum_addr,
            identity,
            feed,
            failure: tokio::sync::watch::Sender::new(None),
        });
        let mut driver = Driver {
            node,
            inner: inner.clone(),
            clock,
            pending: BTreeMap::new(),
            next_sequence: uuid::Uuid::new_v4().as_u64_pair().0 >> 1,
            publish: false,
            transport,
            single_node: node_id,
            heard: BTreeMap::new(),
            led_term: None,
            cluster_id_proposed: None,
            logged_role: None,
        };
        driver.replay()?;
        if driver.transport.is_none() {
            import_legacy_log(dir, sync_threads, &mut driver)?;
            if driver.inner.image().cluster_id.is_none() {
                let id = driver.inner.identity.initial();
                driver.commit_now(entry::encode(&[MetadataRecord::ClusterId { id }])?)?;
            }
        }
        driver.learn_cluster_id();
        driver.publish = true;
        let image = inner.image();
        tracing::info!(
            topics = image.topics.len(),
            applied = driver.node.applied(),
            snapshot = driver.node.snapshot_index(),
            "metadata loaded"
        );
        let thread = std::thread::Builder::new()
            .name("sluice-quorum".into())
            .spawn(move || driver.run(&receiver))
            .map_err(quorum_io)?;
        *inner.commands.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
        *inner.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(MetadataStore { inner })
    }

    /// Opens the store of a broker-only node (`process.roles=broker`): it follows the
    /// quorum's committed log from the leader among `voters` (node id, host and port of
    /// their controller listeners) and proposes through it; it keeps nothing on disk.
    pub fn open_observer(
        clock: Arc<dyn Clock>,
        node_id: i32,
        voters: Vec<(i32, String, u16)>,
        cluster_id: Option<&str>,
    ) -> Result<Self, MetadataError> {
        let (sender, receiver) = mpsc::channel();
        let inner = Arc::new(Inner {
            image: RwLock::new(Arc::new(MetadataImage::default())),
            image_changed: tokio::sync::watch::Sender::new(0),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            listener: OnceLock::new(),
            commands: Mutex::new(Some(sender)),
            driver: Mutex::new(None),
            status: RwLock::new(QuorumStatus::default()),
            quorum_addr: None,
            identity: Arc::new(ClusterIdentity::new(cluster_id)),
            feed: Arc::new(observer::Feed::default()),
            failure: tokio::sync::watch::Sender::new(None),
        });
        let follower = observer::Follower::new(inner.clone(), clock, raft_id(node_id), voters);
        let thread = std::thread::Builder::new()
            .name("sluice-observer".into())
            .spawn(move || follower.run(&receiver))
            .map_err(quorum_io)?;
        *inner.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(MetadataStore { inner })
    }

    /// Sets the listener that carries out each committed change (once, at startup).
    pub fn set_listener(&self, listener: Listener) {
        if self.inner.listener.set(listener).is_err() {
            panic!("the metadata listener is set once");
        }
    }

    /// The current image; cheap to take, never changes under the caller.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image()
    }

    /// Marks each new image: subscribe, then read the image, then wait for a change.
    pub fn image_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.image_changed.subscribe()
    }

    /// Resolves, with the reason, if this voter's quorum thread stops on an error: the node
    /// can no longer take part in the metadata quorum nor learn its changes, and must not
    /// go on serving from a frozen image.
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.failure.subscribe();
        let reason = match failure.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The store is gone: nothing will be reported.
            None => std::future::pending().await,
        }
    }

    /// What this node knows of the quorum (leader, term, commit).
    pub fn quorum_status(&self) -> QuorumStatus {
        self.inner
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where this voter listens for its peers (several voters only).
    pub fn quorum_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.quorum_addr
    }

    /// Computes records from the current image with `change`, then commits them through the
    /// quorum: durable, applied, published. `change` runs with writes serialised, so its
    /// checks hold when the records land. From the moment `change` returns records, the
    /// commit runs to its end even if the caller stops waiting.
    ///
    /// Any voter takes changes: a follower's are forwarded to the leader. A change computed
    /// from an image that was not the latest is committed but does not apply (the records
    /// check it), and its proposer is told to retry.
    pub async fn update<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<Result<Committed<T>, E>, MetadataError> {
        self.update_from(change, false).await
    }

    /// [`MetadataStore::update`] of a decision only the active controller may make (fencing a
    /// silent broker): proposed only while this node leads the quorum, never forwarded. A
    /// node that no longer leads but has not learned it yet (resumed from a pause) appends it
    /// in its old term, where it can never commit.
    pub async fn update_as_leader<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<Result<Committed<T>, E>, MetadataError> {
        self.update_from(change, true).await
    }

    async fn update_from<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
        leader_only: bool,
    ) -> Result<Result<Committed<T>, E>, MetadataError> {
        let serial = self.inner.writer.clone().lock_owned().await;
        let (value, answer) = match self.propose(change, leader_only)? {
            Err(err) => return Ok(Err(err)),
            Ok((value, None)) => return Ok(Ok(Committed::unchanged(value))),
            Ok((value, Some(answer))) => (value, answer),
        };
        let commit = tokio::spawn(async move {
            let _serial = serial;
            answer
                .await
                .map_err(|_| MetadataError::Quorum("the metadata quorum stopped".into()))?
        });
        let published = commit
            .await
            .map_err(|e| MetadataError::Task(e.to_string()))??;
        Ok(Ok(Committed { published, value }))
    }

    /// [`MetadataStore::update`] for a thread that may block (startup). It polls instead of
    /// blocking on tokio's primitives, which refuse to block a runtime's thread: a broker
    /// may be opened from one.
    pub fn update_blocking<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
    ) -> Result<Result<Committed<T>, E>, MetadataError> {
        const POLL: Duration = Duration::from_millis(1);
        let _serial = loop {
            match self.inner.writer.try_lock() {
                Ok(serial) => break serial,
                Err(_) => std::thread::sleep(POLL),
            }
        };
        let (value, answer) = match self.propose(change, false)? {
            Err(err) => return Ok(Err(err)),
            Ok((value, None)) => return Ok(Ok(Committed::unchanged(value))),
            Ok((value, Some(answer))) => (value, answer),
        };
        let mut answer = answer;
        let published = loop {
            match answer.try_recv() {
                Ok(outcome) => break outcome?,
                Err(oneshot::error::TryRecvError::Empty) => std::thread::sleep(POLL),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(MetadataError::Quorum("the metadata quorum stopped".into()));
                }
            }
        };
        Ok(Ok(Committed { published, value }))
    }

    /// Computes a change against the current image (with writes serialised by the caller),
    /// checks that it applies, and hands it to the quorum: the answer comes once it commits.
    /// No records: nothing to propose.
    #[allow(clippy::type_complexity)]
    fn propose<E, T>(
        &self,
        change: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), E>,
        leader_only: bool,
    ) -> Result<Result<(T, Option<oneshot::Receiver<ReplyValue>>), E>, MetadataError> {
        let current = self.image();
        let (records, value) = match change(&current) {
            Ok(result) => result,
            Err(err) => return Ok(Err(err)),
        };
        if records.is_empty() {
            return Ok(Ok((value, None)));
        }
        let mut next = (*current).clone();
        for record in &records {
            next.apply(record)?;
        }
        let entry = entry::encode(&records)?;
        let (reply, answer) = oneshot::channel();
        self.inner.send(Command::Propose {
            entry,
            reply,
            leader_only,
        })?;
        Ok(Ok((value, Some(answer))))
    }

    /// The voters (node ids) whose quorum address refuses connections, and since when:
    /// nothing listens there, so the node is down (not merely silent).
    pub fn refusing_voters(&self) -> Vec<(i32, std::time::Instant)> {
        self.inner
            .identity
            .refusing()
            .into_iter()
            .map(|(raft, since)| (node_id(raft), since))
            .collect()
    }

    /// A peer of another cluster, if one was met: this node's data and the quorum's do not
    /// belong together.
    pub fn foreign_peer(&self) -> Option<String> {
        self.inner.identity.foreign()
    }

    /// Stops the quorum's driver thread (its log is durable at every step).
    pub fn shutdown(&self) -> Result<(), sluice_log::LogError> {
        let _ = self.inner.send(Command::Stop);
        let thread = self
            .inner
            .driver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            return Err(sluice_log::LogError::Io(std::io::Error::other(
                "the metadata quorum thread panicked",
            )));
        }
        Ok(())
    }
}

impl Drop for MetadataStore {
    fn drop(&mut self) {
        // The same as shutdown: the log is durable at every step, so this only stops the
        // thread (and a reopened store never races the old one for its file).
        let _ = self.shutdown();
    }
}

impl Inner {
    fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_image(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|e| e.into_inner()) = image;
        self.image_changed.send_modify(|version| *version += 1);
    }

    fn set_status(&self, status: QuorumStatus) {
        let mut current = self.status.write().unwrap_or_else(|e| e.into_inner());
        if *current != status {
            *current = status;
        }
    }

    fn send(&self, command: Command) -> Result<(), MetadataError> {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        commands
            .as_ref()
            .and_then(|sender| sender.send(command).ok())
            .ok_or_else(|| MetadataError::Quorum("the metadata quorum stopped".into()))
    }
}

#[allow(clippy::needless_pass_by_value)] // the shape `map_err` hands it
fn quorum_io(err: std::io::Error) -> MetadataError {
    MetadataError::Quorum(err.to_string())
}

/// A proposal waiting for its entry to commit.
struct Pending {
    /// Where the leader put it (index, term); unknown for a proposal forwarded by a follower.
    placed: Option<(u64, u64)>,
    /// Given up on (told to retry) after this.
    deadline: std::time::Instant,
    reply: Reply,
}

/// Owns the quorum node on its own thread: ticks it, hands it proposals, applies what it
/// commits. Fsyncs happen here, never on the async workers.
struct Driver {
    node: QuorumNode<FileDisk>,
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
    /// This node's proposals waiting for their entry, by sequence number.
    pending: BTreeMap<u64, Pending>,
    /// The sequence number of the next proposal (started at random: an entry proposed by an
    /// earlier run of this node is never taken for one of this run).
    next_sequence: u64,
    /// Whether committed changes go to the listener (not while replaying at startup: the
    /// broker opens partitions from the image it finds).
    publish: bool,
    /// The network to the other voters (none for a single voter).
    transport: Option<Transport>,
    /// A single voter's node id (its Raft id is always 1).
    single_node: i32,
    /// As leader: when each voter was last heard from.
    heard: BTreeMap<u64, std::time::Instant>,
    /// The term this node last led (its `heard` times start with it).
    led_term: Option<u64>,
    /// The term in which this node proposed the cluster id (once per term it leads).
    cluster_id_proposed: Option<u64>,
    /// The (term, role, leader) last logged.
    logged_role: Option<(u64, &'static str, Option<u64>)>,
}

/// Raft ids start at 1; Kafka node ids at 0.
pub(crate) fn raft_id(node_id: i32) -> u64 {
    u64::try_from(node_id).unwrap_or(0) + 1
}

pub(crate) fn node_id(raft_id: u64) -> i32 {
    raft_id.saturating_sub(1) as i32
}

impl Driver {
    fn node_of(&self, raft_id: u64) -> i32 {
        if self.transport.is_none() {
            self.single_node
        } else {
            node_id(raft_id)
        }
    }

    /// Applies everything the log holds, then (a single voter) elects itself and applies
    /// what was appended but not known committed.
    fn replay(&mut self) -> Result<(), MetadataError> {
        let output = self.node.process()?;
        self.handle(output)?;
        if self.transport.is_some() {
            // Several voters: what is known committed is applied; the rest comes with the
            // leader, once elected.
            return Ok(());
        }
        self.node.campaign()?;
        for _ in 0..64 {
            let output = self.node.process()?;
            self.handle(output)?;
            if self.node.is_leader() && self.node.applied() == self.node.last_index() {
                return Ok(());
            }
        }
        Err(MetadataError::Quorum(format!(
            "the single-voter quorum did not settle: applied {} of {}",
            self.node.applied(),
            self.node.last_index()
        )))
    }

    /// Proposes `entry` and runs the node until it is applied (startup only).
    fn commit_now(&mut self, entry: Vec<u8>) -> Result<(), MetadataError> {
        let index = self
            .node
            .propose(entry)
            .map_err(|e| MetadataError::Quorum(e.to_string()))?;
        for _ in 0..64 {
            let output = self.node.process()?;
            self.handle(output)?;
            if self.node.applied() >= index {
                return Ok(());
            }
        }
        Err(MetadataError::Quorum(format!(
            "entry {index} did not commit"
        )))
    }

    /// Proposes a change on behalf of a requester, from this node whatever its role.
    fn propose(&mut self, entry: &[u8], reply: Reply, leader_only: bool) {
        if leader_only && !self.node.is_leader() {
            let leader = self.node.leader().map(|raft| self.node_of(raft));
            let _ = reply.send(Err(MetadataError::NotController { leader }));
            return;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let proposal = entry::as_proposal(entry, (self.node.id(), sequence));
        match self.node.propose_anywhere(proposal) {
            Ok(index) => {
                let placed = index.map(|index| (index, self.node.term()));
                let deadline = self.clock.now() + PROPOSAL_TIMEOUT;
                self.pending.insert(
                    sequence,
                    Pending {
                        placed,
                        deadline,
                        reply,
                    },
                );
            }
            Err(ProposeError::NotLeader { leader }) => {
                let leader = leader.map(|raft| self.node_of(raft));
                let _ = reply.send(Err(MetadataError::NotController { leader }));
            }
            Err(err) => {
                let _ = reply.send(Err(MetadataError::Quorum(err.to_string())));
            }
        }
    }

    fn run(mut self, commands: &mpsc::Receiver<Command>) {
        // A panic stops the quorum thread as surely as an error: reported the same way.
        let _panic_reporter = ReportPanic(self.inner.clone());
        let mut next_tick = self.clock.now() + TICK;
        // A voter alone in its quorum has no election to hold and no one to send heartbeats
        // to: it waits for commands only, so an idle broker's quorum thread stays asleep.
        let ticking = self.transport.is_some();
        loop {
            let received = if ticking {
                let wait = next_tick.saturating_duration_since(self.clock.now());
                commands.recv_timeout(wait)
            } else {
                commands.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let first = match received {
                Ok(command) => command,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => Command::Tick,
            };
            // What else already arrived is handled before the clock moves on: a heartbeat
            // queued behind a slow step resets the election timer before the missed ticks
            // are counted.
            let mut stop = !self.handle_command(first);
            for _ in 0..MAX_DRAINED_COMMANDS {
                if stop {
                    break;
                }
                match commands.try_recv() {
                    Ok(command) => stop = !self.handle_command(command),
                    Err(_) => break,
                }
            }
            if stop {
                break;
            }
            // Ticks follow the clock, not the channel's idleness: a steady stream of
            // messages must not hold back elections and heartbeats.
            if ticking {
                let now = self.clock.now();
                let mut ticks = 0;
                // Missed ticks are made up only a few at a time: a node whose thread was
                // starved (a slow fsync, a busy machine) lets its timers run slow rather than
                // time out a leader that was merely not heard during the stall.
                while now >= next_tick && ticks < MAX_CATCH_UP_TICKS {
                    self.node.tick();
                    next_tick += TICK;
                    ticks += 1;
                }
                if now >= next_tick {
                    next_tick = now + TICK;
                }
                if ticks > 0 {
                    self.expire_proposals();
                    self.notice_dead_leader(now);
                }
            }
            let result = self
                .node
                .process()
                .map_err(MetadataError::from)
                .and_then(|output| self.handle(output));
            if let Err(err) = result {
                tracing::error!(error = %err, "metadata quorum stopped");
                self.inner.failure.send_replace(Some(err.to_string()));
                break;
            }
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(Err(MetadataError::Quorum(
                "the metadata quorum stopped".into(),
            )));
        }
    }

    /// A follower whose leader's address has refused connections for
    /// [`REFUSED_GRACE`], with nothing heard from it meanwhile, stands for election within
    /// a few ticks rather than after the election timeout: the leader's process is gone
    /// (a paused or cut-off leader, whose address does not refuse, gets the whole timeout).
    fn notice_dead_leader(&mut self, now: std::time::Instant) {
        let Some(leader) = self.node.leader().filter(|l| *l != self.node.id()) else {
            return;
        };
        let refused_since = self
            .inner
            .identity
            .refusing()
            .into_iter()
            .find_map(|(peer, since)| (peer == leader).then_some(since));
        let gone = refused_since
            .is_some_and(|since| now.saturating_duration_since(since) >= REFUSED_GRACE);
        let silent_ticks = (REFUSED_GRACE.as_millis() / TICK.as_millis()) as usize;
        if gone && self.node.leader_gone(silent_ticks) {
            tracing::info!(
                leader = self.node_of(leader),
                "the quorum leader's address refuses connections: standing for election now"
            );
        }
    }

    /// Carries out one command; false to stop.
    fn handle_command(&mut self, command: Command) -> bool {
        match command {
            Command::Propose {
                entry,
                reply,
                leader_only,
            } => self.propose(&entry, reply, leader_only),
            Command::ProposeFor {
                proposer,
                sequence,
                entry,
            } => {
                // A proposal from the network is checked before it can reach the log: an
                // entry no node can decode would stop every node's quorum thread.
                if let Err(reason) = entry::decode(&entry) {
                    tracing::warn!(proposer, %reason, "an observer's proposal is not a metadata change: dropped");
                } else if let Err(err) = self
                    .node
                    .propose_anywhere(entry::as_proposal(&entry, (proposer, sequence)))
                {
                    tracing::debug!(proposer, error = %err, "an observer's proposal was dropped");
                }
            }
            Command::Heard(raft) => {
                self.heard.insert(raft, self.clock.now());
            }
            Command::Message(message) => {
                self.heard.insert(message.from, self.clock.now());
                if let Err(err) = self.node.step(*message) {
                    tracing::warn!(error = %err, "quorum message refused");
                }
            }
            Command::Tick => {}
            Command::Stop => return false,
        }
        true
    }

    /// Proposals past their deadline are answered: retry.
    fn expire_proposals(&mut self) {
        let now = self.clock.now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in expired {
            let pending = self.pending.remove(&sequence).expect("listed above");
            let _ = pending.reply.send(Err(MetadataError::Quorum(format!(
                "the change did not commit within {PROPOSAL_TIMEOUT:?} (it may still); retry"
            ))));
        }
    }

    /// The cluster id, once applied, is what this node's transport checks peers against.
    fn learn_cluster_id(&self) {
        if let Some(id) = &self.inner.image().cluster_id {
            self.inner.identity.learn(id);
        }
    }

    /// A leader whose image has no cluster id yet (a new cluster) records one, once it has
    /// applied everything its predecessors committed.
    fn propose_cluster_id(&mut self) {
        let term = self.node.term();
        if !self.node.is_leader()
            || self.cluster_id_proposed == Some(term)
            || self.node.applied() < self.node.last_index()
            || self.inner.image().cluster_id.is_some()
        {
            return;
        }
        self.cluster_id_proposed = Some(term);
        let id = self.inner.identity.initial();
        match entry::encode(&[MetadataRecord::ClusterId { id: id.clone() }]) {
            Ok(entry) => {
                if let Err(err) = self.node.propose(entry) {
                    tracing::warn!(error = %err, "could not propose the cluster id");
                } else {
                    tracing::info!(cluster_id = %id, "recording the cluster id");
                }
            }
            Err(err) => tracing::warn!(error = %err, "cluster id"),
        }
    }

    fn publish_status(&mut self) {
        let seen = (self.node.term(), self.node.role(), self.node.leader());
        if self.logged_role != Some(seen) {
            if self.transport.is_some() {
                tracing::info!(
                    term = seen.0,
                    role = seen.1,
                    leader = ?seen.2.map(|raft| self.node_of(raft)),
                    "metadata quorum"
                );
            }
            self.logged_role = Some(seen);
        }
        if self.node.is_leader() && self.led_term != Some(self.node.term()) {
            // A new leader has heard from no one yet: everyone (voters, and the broker-only
            // nodes an earlier leader heard from) counts from now.
            self.led_term = Some(self.node.term());
            let now = self.clock.now();
            for (raft, _) in self.node.voter_progress() {
                self.heard.insert(raft, now);
            }
            for heard in self.heard.values_mut() {
                *heard = now;
            }
        }
        self.inner.feed.set_leadership(
            self.node.is_leader(),
            self.node.leader().map(|raft| self.node_of(raft)),
        );
        let voters = self
            .node
            .voter_progress()
            .into_iter()
            .map(|(raft, matched)| (self.node_of(raft), matched + 1))
            .collect();
        let heard = if self.node.is_leader() && self.transport.is_some() {
            // Every registered broker counts: one this leader never heard from (a broker-only
            // node that died under the previous leader) counts from this leader's election.
            let led_since = self.heard.get(&self.node.id()).copied();
            for broker in self.inner.image().brokers.keys() {
                if let Some(since) = led_since {
                    self.heard.entry(raft_id(*broker)).or_insert(since);
                }
            }
            self.heard
                .iter()
                .filter(|(raft, _)| **raft != self.node.id())
                .map(|(raft, at)| (self.node_of(*raft), *at))
                .collect()
        } else {
            Vec::new()
        };
        self.inner.set_status(QuorumStatus {
            leader: self.node.leader().map(|raft| self.node_of(raft)),
            term: self.node.term(),
            commit_index: self.node.commit_index(),
            applied: self.node.applied(),
            log_end: self.node.last_index() + 1,
            voters,
            heard,
        });
    }

    /// Applies a node's output: a snapshot to restore, committed changes to apply and
    /// publish, proposals to answer; then compacts when enough entries accumulated.
    fn handle(&mut self, output: Output) -> Result<(), MetadataError> {
        // The status first: a proposer answered below may ask for it at once (a client that
        // created a topic and then describes the quorum must see its commit).
        self.publish_status();
        if let Some(transport) = &self.transport {
            for message in &output.messages {
                transport.send(message);
            }
        }
        if let Some(restore) = output.restore {
            let image = Arc::new(entry::decode_snapshot(&restore.data).map_err(|reason| {
                MetadataError::Quorum(format!("snapshot at {}: {reason}", restore.index))
            })?);
            self.inner.set_image(image.clone());
            if self.transport.is_some() {
                self.inner
                    .feed
                    .snapshot(restore.index, restore.data.clone());
            }
            self.learn_cluster_id();
            if let (true, Some(listener)) = (self.publish, self.inner.listener.get())
                && let Err(reason) = listener(Change::Restored, &image)
            {
                tracing::warn!(index = restore.index, %reason, "the restored metadata could not be carried out in full");
            }
        }
        for committed in output.committed {
            self.apply(&committed)?;
        }
        self.propose_cluster_id();
        let applied = self.node.applied();
        if applied >= self.node.snapshot_index() + COMPACT_EVERY {
            let snapshot = entry::encode(&entry::image_records(&self.inner.image()))?;
            if self.transport.is_some() {
                self.inner.feed.snapshot(applied, snapshot.clone());
            }
            self.node.compact(applied, snapshot)?;
        }
        Ok(())
    }

    /// Applies one committed entry and answers the proposal it settles.
    fn apply(&mut self, committed: &sluice_quorum::Committed) -> Result<(), MetadataError> {
        if self.transport.is_some() {
            // Kept for broker-only nodes, which reach a voter through its transport.
            self.inner.feed.committed(committed.index, &committed.data);
        }
        let mut answered = None;
        if let Some(((proposer, sequence), outcome)) =
            apply_entry(&self.inner, self.publish, committed.index, &committed.data)?
            && proposer == self.node.id()
            && let Some(pending) = self.pending.remove(&sequence)
        {
            let _ = pending.reply.send(outcome);
            answered = Some(sequence);
        }
        // A proposal the leader placed at or below this index and that is not this entry was
        // replaced by another (the leadership changed before it committed).
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(sequence, p)| {
                Some(**sequence) != answered
                    && p.placed.is_some_and(|(index, _)| index <= committed.index)
            })
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in lost {
            let pending = self.pending.remove(&sequence).expect("listed above");
            let _ = pending.reply.send(Err(MetadataError::Lost));
        }
        Ok(())
    }
}

/// Applies one committed entry to the image (publishing it, with `publish`, in its two
/// steps): the proposal it settles, if it names one, with the outcome its proposer hears.
/// Raft's own empty entries change nothing.
pub(crate) fn apply_entry(
    inner: &Inner,
    publish: bool,
    index: u64,
    data: &[u8],
) -> Result<Option<(entry::ProposalId, ReplyValue)>, MetadataError> {
    if data.is_empty() {
        return Ok(None);
    }
    let (proposal, records) = entry::decode_proposal(data)
        .map_err(|reason| MetadataError::Quorum(format!("entry {index}: {reason}")))?;
    let mut next = (*inner.image()).clone();
    let outcome = match records.iter().try_for_each(|record| next.apply(record)) {
        Ok(()) => {
            let next = Arc::new(next);
            let listener = inner.listener.get().filter(|_| publish);
            let opened = listener.map_or(Ok(()), |l| l(Change::Opening(&records), &next));
            inner.set_image(next.clone());
            if let Some(id) = &next.cluster_id {
                inner.identity.learn(id);
            }
            let published = listener.map_or(Ok(()), |l| l(Change::Records(&records), &next));
            Ok(opened.and(published))
        }
        // Proposed against an image that was not the latest (a follower's view, or a new
        // leader's first moments): every node skips it alike, all or nothing.
        Err(err) => {
            tracing::info!(index, error = %err, "committed metadata change computed from a stale image: skipped (its proposer computes it again)");
            Err(MetadataError::Stale(err.to_string()))
        }
    };
    Ok(proposal.map(|proposal| (proposal, outcome)))
}

/// Imports a metadata log written before the quorum existed: its image becomes the quorum's
/// first entry, then the old log is removed. Runs before anything else is committed.
fn import_legacy_log(
    dir: &Path,
    sync_threads: usize,
    driver: &mut Driver,
) -> Result<(), MetadataError> {
    let legacy = dir.join(format!("{METADATA_TOPIC}-0"));
    if !legacy.exists() {
        return Ok(());
    }
    let mut config = ManagerConfig::new(dir);
    config.default_log_config = LogConfig {
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    };
    config.sync_threads = sync_threads.clamp(1, 4);
    config.cleaner_enabled = false;
    let manager = LogManager::open_with_clock(config, driver.clock.clone())?;
    let log = manager.get_or_create(&TopicPartition::new(METADATA_TOPIC, 0))?;
    let image = replay(&log)?;
    drop(log);
    manager.shutdown()?;
    drop(manager);
    let current = driver.inner.image();
    if !current.topics.is_empty() || current.producer_ids_end > 0 {
        tracing::warn!(
            dir = %legacy.display(),
            "a pre-quorum metadata log next to a quorum log that has metadata: keeping the quorum's"
        );
    } else {
        let records = entry::image_records(&image);
        if !records.is_empty() {
            driver.commit_now(entry::encode(&records)?)?;
        }
        tracing::info!(
            topics = image.topics.len(),
            "imported the pre-quorum metadata log"
        );
    }
    remove_legacy_files(dir, &legacy).map_err(quorum_io)
}

/// Removes the old log's directory and the log manager's files around it.
fn remove_legacy_files(dir: &Path, legacy: &PathBuf) -> std::io::Result<()> {
    std::fs::remove_dir_all(legacy)?;
    for name in [
        "recovery-point-offset-checkpoint",
        "log-start-offset-checkpoint",
        "cleaner-offset-checkpoint",
        sluice_log::CLEAN_SHUTDOWN_FILE,
    ] {
        match std::fs::remove_file(dir.join(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

fn replay(log: &Log) -> Result<MetadataImage, MetadataError> {
    let mut image = MetadataImage::default();
    let corrupt = |offset: i64, reason: String| MetadataError::Corrupt { offset, reason };
    let start = log.offsets().log_start_offset;
    for stored in log.records_from(start) {
        let stored = stored.map_err(|e| corrupt(start, e.to_string()))?;
        let records = stored
            .records()
            .map_err(|e| corrupt(stored.base_offset(), e.to_string()))?;
        for record in records.iter() {
            let value = record.value.unwrap_or_default();
            let decoded =
                MetadataRecord::decode(value).map_err(|reason| corrupt(record.offset, reason))?;
            image.apply(&decoded)?;
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    #[test]
    fn records_roundtrip() {
        let records = [
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                partitions: 3,
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
            },
            MetadataRecord::SetPartitionCount {
                name: "t".into(),
                partitions: 5,
            },
            MetadataRecord::SetTopicConfig {
                name: "t".into(),
                key: "k".into(),
                value: Some("v".into()),
            },
            MetadataRecord::SetTopicConfig {
                name: "t".into(),
                key: "k".into(),
                value: None,
            },
            MetadataRecord::PartitionChange {
                topic: "t".into(),
                partition: 2,
                replicas: vec![3, 1, 2],
                isr: vec![1, 3],
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 9,
                adding: vec![2],
                removing: vec![3],
            },
            MetadataRecord::DeleteTopic { name: "t".into() },
            MetadataRecord::ProducerIdBlock { end: 1000 },
        ];
        let mut image = MetadataImage::default();
        for record in &records {
            assert_eq!(
                &MetadataRecord::decode(&record.encode().unwrap()).unwrap(),
                record
            );
            image.apply(record).unwrap();
        }
        assert!(image.topics.is_empty());
        assert!(MetadataRecord::decode(&[0, 9]).is_err());
        // A partition change written before the ISR was kept: every replica in sync.
        let mut legacy = vec![0, 6, 0, 1, b't'];
        for field in [[0, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 3], [0, 0, 0, 5]] {
            legacy.extend(field);
        }
        legacy.splice(9..9, [0, 1]);
        assert_eq!(
            MetadataRecord::decode(&legacy).unwrap(),
            MetadataRecord::PartitionChange {
                topic: "t".into(),
                partition: 2,
                replicas: vec![0],
                isr: vec![0],
                leader: 3,
                leader_epoch: 5,
                partition_epoch: 5,
                adding: Vec::new(),
                removing: Vec::new(),
            }
        );
        assert!(MetadataRecord::decode(&[0, 4, 0, 5, b'a']).is_err());
        // A value longer than its length prefix can say is refused, not written short.
        let long = MetadataRecord::SetTopicConfig {
            name: "t".into(),
            key: "retention.ms".into(),
            value: Some("1".repeat(70_000)),
        };
        let err = long.encode().unwrap_err();
        assert_eq!((err.what, err.len), ("configuration value", 70_000));
    }

    #[tokio::test]
    async fn a_pre_quorum_log_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            // What the store wrote before the quorum: records in a log of its own.
            let manager = LogManager::open(ManagerConfig::new(dir.path())).unwrap();
            let log = manager
                .get_or_create(&TopicPartition::new(METADATA_TOPIC, 0))
                .unwrap();
            let mut builder = sluice_record::BatchBuilder::new(sluice_record::Compression::None);
            for record in [
                MetadataRecord::CreateTopic {
                    name: "old".into(),
                    id,
                    partitions: 3,
                    configs: BTreeMap::new(),
                },
                MetadataRecord::ProducerIdBlock { end: 5000 },
            ] {
                builder.push(sluice_record::OwnedRecord::new(
                    None,
                    Some(record.encode().unwrap()),
                    0,
                ));
            }
            log.append(&mut builder.build().unwrap(), 0).unwrap();
            drop(log);
            manager.shutdown().unwrap();
        }
        for _ in 0..2 {
            let store =
                MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
            let image = store.image();
            assert_eq!(
                image.topic("old").map(|t| (t.id, t.partitions)),
                Some((id, 3))
            );
            assert_eq!(image.producer_ids_end, 5000);
            assert!(!dir.path().join(format!("{METADATA_TOPIC}-0")).exists());
            store.shutdown().unwrap();
        }
    }

    #[tokio::test]
    async fn many_changes_compact_into_a_snapshot_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store =
                MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
            for end in 1..=(COMPACT_EVERY as i64 + 10) {
                store
                    .update(|_| Ok::<_, ()>((vec![MetadataRecord::ProducerIdBlock { end }], ())))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        let raft_log = std::fs::metadata(dir.path().join("raft.log"))
            .unwrap()
            .len();
        assert!(raft_log < 4096, "compacted: {raft_log} bytes");
        let store = MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
        assert_eq!(store.image().producer_ids_end, COMPACT_EVERY as i64 + 10);
    }

    #[tokio::test]
    async fn changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let store =
                MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
            let created = store
                .update(|_| {
                    Ok::<_, ()>((
                        vec![MetadataRecord::CreateTopic {
                            name: "a".into(),
                            id,
                            partitions: 2,
                            configs: BTreeMap::new(),
                        }],
                        (),
                    ))
                })
                .await
                .unwrap();
            assert!(created.is_ok());
            store
                .update(|_| {
                    Ok::<_, ()>((
                        vec![MetadataRecord::SetPartitionCount {
                            name: "a".into(),
                            partitions: 4,
                        }],
                        (),
                    ))
                })
                .await
                .unwrap()
                .unwrap();
            // No clean shutdown: the records were durable when update returned.
        }
        let store = MetadataStore::open(dir.path(), 1, Arc::new(sluice_log::SystemClock)).unwrap();
        let topic = store.image().topic("a").cloned().unwrap();
        assert_eq!((topic.id, topic.partitions), (id, 4));
    }
}
