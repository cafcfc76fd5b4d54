//! Group commit: making appended data durable with as few syncs as possible.
//!
//! A producer that needs durability (acks=all) appends, then waits on
//! [`Log::wait_durable`](crate::Log::wait_durable). The first waiter of a partition queues
//! the partition with the [`Flusher`]; a sync worker takes it, issues one fdatasync and
//! releases every waiter of that partition the sync covered. While it runs, new appends to
//! the partition queue it again, so under load one sync covers many batches. Workers sync
//! different partitions concurrently, and the filesystem folds concurrent fdatasyncs into
//! shared journal commits; there is no round barrier between partitions.
//!
//! Correctness rests on one ordering. A waiter registers itself, then tries to take the
//! partition's `queued` slot (and queues the partition if it got it). A worker holds the slot
//! from the moment it takes the partition until its sync is done, then releases it and
//! looks for registered waiters that the sync did not cover; if there are any and it can
//! take the slot back, it syncs again. A waiter that found the slot taken registered before
//! the release, so the worker sees it; a waiter that came later takes the slot itself.
//! Either way nobody waits for a sync that will not come, and one partition never has two
//! syncs in flight.
//!
//! Optionally, when at least `syncfs_threshold` partitions are queued, a worker takes them all
//! and issues a single `syncfs` on the data directory's filesystem instead (one journal commit
//! and one device flush for all); see `ManagerConfig::syncfs_threshold`.
//!
//! A failed sync means the kernel may have dropped dirty pages: every log it covered goes
//! offline and its waiters get an error. Nothing that might be lost is ever acknowledged.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Instant;

use crate::{FlushPolicy, Log, LogError};

/// Counters of the flusher since the manager opened.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Sync rounds run for waiters (group commit) or by the periodic flush.
    pub rounds: AtomicU64,
    /// Partitions synced, summed over rounds.
    pub partitions_synced: AtomicU64,
    /// fdatasync calls on segment files.
    pub fdatasyncs: AtomicU64,
    /// syncfs calls.
    pub syncfs_calls: AtomicU64,
    /// Waiters that asked for durability.
    pub durable_waits: AtomicU64,
    /// Time spent in sync calls, nanoseconds.
    pub sync_nanos: AtomicU64,
}

/// A point-in-time copy of [`FlushStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStatsSnapshot {
    pub rounds: u64,
    pub partitions_synced: u64,
    pub fdatasyncs: u64,
    pub syncfs_calls: u64,
    pub durable_waits: u64,
    pub sync_nanos: u64,
}

impl FlushStats {
    pub fn snapshot(&self) -> FlushStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FlushStatsSnapshot {
            rounds: get(&self.rounds),
            partitions_synced: get(&self.partitions_synced),
            fdatasyncs: get(&self.fdatasyncs),
            syncfs_calls: get(&self.syncfs_calls),
            durable_waits: get(&self.durable_waits),
            sync_nanos: get(&self.sync_nanos),
        }
    }
}

#[derive(Debug)]
enum Wake {
    Thread(Thread),
    Task(Waker),
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    target: i64,
    /// `None` until the wait is first polled: registration comes before the wait queues its
    /// log, so that a sync worker finishing a round always sees it (see `Flusher::sync_one`).
    wake: Option<Wake>,
}

/// Per-log durability state: what has been synced and who waits for more.
#[derive(Debug)]
pub(crate) struct Durability {
    /// Every offset below this is on stable storage.
    flushed: AtomicI64,
    /// The log is in the flusher's queue or being synced by a worker: at most one sync of a
    /// log is in flight, so concurrent waiters coalesce into it.
    queued: AtomicBool,
    waiters: Mutex<Vec<Waiter>>,
}

static NEXT_WAITER_ID: AtomicU64 = AtomicU64::new(1);

impl Durability {
    pub fn new(flushed: i64) -> Self {
        Durability {
            flushed: AtomicI64::new(flushed),
            queued: AtomicBool::new(false),
            waiters: Mutex::default(),
        }
    }

    pub fn flushed(&self) -> i64 {
        self.flushed.load(Ordering::SeqCst)
    }

    /// Marks the log queued; true if the caller must put it in the queue.
    pub fn claim_queue_slot(&self) -> bool {
        !self.queued.swap(true, Ordering::SeqCst)
    }

    pub fn release_queue_slot(&self) {
        self.queued.store(false, Ordering::SeqCst);
    }

    /// Records that everything below `offset` is durable and wakes who that satisfies.
    pub fn advance(&self, offset: i64) {
        self.flushed.fetch_max(offset, Ordering::SeqCst);
        let flushed = self.flushed();
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|waiter| {
            if waiter.target > flushed {
                return true;
            }
            if let Some(how) = &waiter.wake {
                wake(how);
            }
            false
        });
    }

    /// The log was truncated to end at `offset`: what was durable above it is gone.
    pub fn truncate(&self, offset: i64) {
        self.flushed.fetch_min(offset, Ordering::SeqCst);
    }

    /// Whether somebody waits for an offset not yet durable.
    pub fn has_pending_waiters(&self) -> bool {
        let flushed = self.flushed();
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.iter().any(|waiter| waiter.target > flushed)
    }

    /// Wakes every waiter, for them to observe an error state.
    pub fn wake_all(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for waiter in waiters.drain(..) {
            if let Some(how) = &waiter.wake {
                wake(how);
            }
        }
    }

    fn register(&self, id: u64, target: i64, wake_by: Option<Wake>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        match waiters.iter_mut().find(|w| w.id == id) {
            Some(existing) => existing.wake = wake_by,
            None => waiters.push(Waiter {
                id,
                target,
                wake: wake_by,
            }),
        }
    }

    fn unregister(&self, id: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|w| w.id != id);
    }
}

fn wake(how: &Wake) {
    match how {
        Wake::Thread(thread) => thread.unpark(),
        Wake::Task(waker) => waker.wake_by_ref(),
    }
}

/// Waits until a log is durable up to an offset. Use [`DurableWait::wait`] from a thread,
/// or `.await` it from async code.
#[derive(Debug)]
pub struct DurableWait {
    log: Option<Arc<Log>>,
    target: i64,
    id: u64,
}

impl DurableWait {
    pub(crate) fn ready() -> Self {
        DurableWait {
            log: None,
            target: 0,
            id: 0,
        }
    }

    /// Registers the waiter at once, before the caller queues the log: a sync worker that
    /// finishes meanwhile must see it (see `Flusher::release_or_keep`), or the wait would
    /// only end with the next sync somebody else asks for.
    pub(crate) fn new(log: Arc<Log>, target: i64) -> Self {
        let id = NEXT_WAITER_ID.fetch_add(1, Ordering::Relaxed);
        log.durability().register(id, target, None);
        DurableWait {
            log: Some(log),
            target,
            id,
        }
    }

    fn check(&self) -> Option<Result<(), LogError>> {
        let log = self.log.as_ref()?;
        if let Err(err) = log.check_usable() {
            return Some(Err(err));
        }
        (log.durability().flushed() >= self.target).then_some(Ok(()))
    }

    /// Blocks the calling thread until the data is durable or the log failed.
    pub fn wait(self) -> Result<(), LogError> {
        let Some(log) = &self.log else { return Ok(()) };
        loop {
            if let Some(result) = self.check() {
                return result;
            }
            log.durability().register(
                self.id,
                self.target,
                Some(Wake::Thread(std::thread::current())),
            );
            if let Some(result) = self.check() {
                return result;
            }
            std::thread::park();
        }
    }
}

impl Future for DurableWait {
    type Output = Result<(), LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(log) = &self.log else {
            return Poll::Ready(Ok(()));
        };
        if let Some(result) = self.check() {
            return Poll::Ready(result);
        }
        log.durability()
            .register(self.id, self.target, Some(Wake::Task(cx.waker().clone())));
        match self.check() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

impl Drop for DurableWait {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.durability().unregister(self.id);
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    logs: VecDeque<Arc<Log>>,
    stopped: bool,
}

/// Syncs queued logs on a pool of threads: for waiters (group commit) and for the periodic
/// flush.
#[derive(Debug)]
pub(crate) struct Flusher {
    policy: FlushPolicy,
    syncfs_threshold: usize,
    /// An open handle on the data directory, the target of `syncfs`.
    data_dir: File,
    storage: Arc<dyn crate::Storage>,
    queue: Mutex<Queue>,
    wake: Condvar,
    pub stats: FlushStats,
}

impl Flusher {
    pub fn new(
        policy: FlushPolicy,
        syncfs_threshold: usize,
        data_dir: File,
        storage: Arc<dyn crate::Storage>,
    ) -> Self {
        Flusher {
            policy,
            syncfs_threshold,
            data_dir,
            storage,
            queue: Mutex::default(),
            wake: Condvar::new(),
            stats: FlushStats::default(),
        }
    }

    pub fn policy(&self) -> FlushPolicy {
        self.policy
    }

    /// Queues `log` for a sync unless it is queued already; the caller passes the result of
    /// the log's `claim_queue_slot`, so a log is in the queue at most once.
    pub fn enqueue(&self, log: Arc<Log>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.logs.push_back(log);
        drop(queue);
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.wake.notify_all();
    }

    /// A sync worker. Workers take queued logs one at a time, so a slow fdatasync of one
    /// partition never holds up another, and concurrent fdatasyncs share journal commits.
    /// One fdatasync of a partition releases every waiter of that partition it covers.
    pub fn run_worker(&self) {
        loop {
            let logs: Vec<Arc<Log>> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                while queue.logs.is_empty() && !queue.stopped {
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                if queue.logs.is_empty() {
                    return;
                }
                if self.syncfs_threshold > 0 && queue.logs.len() >= self.syncfs_threshold {
                    queue.logs.drain(..).collect()
                } else {
                    queue.logs.pop_front().into_iter().collect()
                }
            };
            self.sync_round(&logs);
        }
    }

    /// Queues every log that has unflushed data (the periodic flush).
    pub fn flush_in_background(&self, logs: impl IntoIterator<Item = Arc<Log>>) {
        for log in logs {
            if log.has_unflushed_data() && log.durability().claim_queue_slot() {
                self.enqueue(log);
            }
        }
    }

    /// Syncs `logs` now, on the calling thread, and releases their waiters.
    fn sync_round(&self, logs: &[Arc<Log>]) {
        let started = Instant::now();
        if logs.len() > 1 {
            let prepared: Vec<_> = logs
                .iter()
                .map(|log| {
                    let prepared = log.prepare_sync()?;
                    Some(prepared.write_checkpoints().map(|()| prepared))
                })
                .collect();
            self.stats.syncfs_calls.fetch_add(1, Ordering::Relaxed);
            let result = self.storage.sync_filesystem(&self.data_dir);
            for (log, prepared) in logs.iter().zip(prepared) {
                match (&result, prepared) {
                    (Ok(()), Some(Ok(prepared))) => log.complete_sync(&prepared),
                    (Ok(()), None) => {}
                    (Ok(()), Some(Err(err))) => log.fail_sync(&err),
                    (Err(err), _) => log.fail_sync(err),
                }
                if self.release_or_keep(log) {
                    self.enqueue(log.clone());
                }
            }
        } else {
            for log in logs {
                self.sync_one(log);
            }
        }
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .partitions_synced
            .fetch_add(logs.len() as u64, Ordering::Relaxed);
        self.stats
            .sync_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Syncs one log, again and again while waiters arrived during the previous sync. The
    /// caller holds the log's queue slot.
    fn sync_one(&self, log: &Log) {
        loop {
            if let Some(prepared) = log.prepare_sync() {
                let files = prepared.files.len() as u64;
                match prepared.sync_files() {
                    Ok(()) => log.complete_sync(&prepared),
                    Err(err) => log.fail_sync(&err),
                }
                self.stats.fdatasyncs.fetch_add(files, Ordering::Relaxed);
            }
            if !self.release_or_keep(log) {
                return;
            }
            self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives up the log's queue slot after a sync, unless a waiter registered meanwhile still
    /// needs a sync and the slot could be taken back: then returns true and the caller syncs
    /// again. A waiter registers before it tries to take the slot, so after the release
    /// either it took the slot itself or this check sees it.
    fn release_or_keep(&self, log: &Log) -> bool {
        let durability = log.durability();
        durability.release_queue_slot();
        durability.has_pending_waiters() && durability.claim_queue_slot()
    }
}
