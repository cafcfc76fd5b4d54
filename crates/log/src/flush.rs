//! Group commit: making appended data durable with as few syncs as possible.
//!
//! A producer that needs durability (acks=all) appends, then waits on
//! [`Log::wait_durable`](crate::Log::wait_durable). The first waiter of a partition queues
//! the partition with the [`Flusher`]; the flusher thread takes everything queued, syncs it in
//! one round and releases every waiter whose batch the round covered. While a round's syncs
//! run, new appends queue up for the next round, so under load one sync covers many batches.
//!
//! Correctness rests on one ordering: a partition's `queued` flag is cleared *before* its log
//! end offset is read for a round. A writer whose append finished before that read is covered
//! by the round; a writer whose append finished after it finds the flag clear and queues the
//! partition again. Either way nobody waits for a round that will not come.
//!
//! A round syncs its partitions with concurrent fdatasyncs (up to `sync_threads` at once), so
//! that the filesystem folds them into one journal commit and one device flush. Optionally a
//! round with many partitions issues a single `syncfs` on the data directory's filesystem
//! instead; see `ManagerConfig::syncfs_threshold`.
//!
//! A failed sync means the kernel may have dropped dirty pages: every log in the round goes
//! offline and its waiters get an error. Nothing that might be lost is ever acknowledged.

use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
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
    wake: Wake,
}

/// Per-log durability state: what has been synced and who waits for more.
#[derive(Debug)]
pub(crate) struct Durability {
    /// Every offset below this is on stable storage.
    flushed: AtomicI64,
    /// The log sits in the flusher's queue (or a round has taken it but not yet read its end).
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
            if waiter.target <= flushed {
                wake(&waiter.wake);
                false
            } else {
                true
            }
        });
    }

    /// Wakes every waiter, for them to observe an error state.
    pub fn wake_all(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for waiter in waiters.drain(..) {
            wake(&waiter.wake);
        }
    }

    fn register(&self, id: u64, target: i64, wake_by: Wake) {
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

    pub(crate) fn new(log: Arc<Log>, target: i64) -> Self {
        DurableWait {
            log: Some(log),
            target,
            id: NEXT_WAITER_ID.fetch_add(1, Ordering::Relaxed),
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
            log.durability()
                .register(self.id, self.target, Wake::Thread(std::thread::current()));
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
            .register(self.id, self.target, Wake::Task(cx.waker().clone()));
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
    logs: Vec<Arc<Log>>,
    stopped: bool,
}

/// Runs sync rounds: on demand for waiters (group commit) and for the periodic flush.
#[derive(Debug)]
pub(crate) struct Flusher {
    policy: FlushPolicy,
    syncfs_threshold: usize,
    sync_threads: usize,
    /// An open handle on the data directory, the target of `syncfs`.
    data_dir: File,
    queue: Mutex<Queue>,
    wake: Condvar,
    pub stats: FlushStats,
}

impl Flusher {
    pub fn new(
        policy: FlushPolicy,
        syncfs_threshold: usize,
        sync_threads: usize,
        data_dir: File,
    ) -> Self {
        Flusher {
            policy,
            syncfs_threshold,
            sync_threads,
            data_dir,
            queue: Mutex::default(),
            wake: Condvar::new(),
            stats: FlushStats::default(),
        }
    }

    pub fn policy(&self) -> FlushPolicy {
        self.policy
    }

    pub fn enqueue(&self, log: Arc<Log>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.logs.push(log);
        drop(queue);
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.wake.notify_all();
    }

    /// The group-commit thread: one round per wake-up, covering everything queued.
    pub fn run(&self) {
        loop {
            let logs = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                while queue.logs.is_empty() && !queue.stopped {
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::take(&mut queue.logs)
            };
            if logs.is_empty() {
                // Stopped with nothing queued.
                return;
            }
            self.sync_round(&logs);
        }
    }

    /// Syncs `logs` in one round and releases their waiters.
    pub fn sync_round(&self, logs: &[Arc<Log>]) {
        let started = Instant::now();
        let use_syncfs = self.syncfs_threshold > 0 && logs.len() >= self.syncfs_threshold;
        if use_syncfs {
            let prepared: Vec<_> = logs
                .iter()
                .map(|log| {
                    log.durability().release_queue_slot();
                    log.prepare_sync()
                })
                .collect();
            self.stats.syncfs_calls.fetch_add(1, Ordering::Relaxed);
            match syncfs(&self.data_dir) {
                Ok(()) => {
                    for (log, prepared) in logs.iter().zip(prepared) {
                        if let Some(prepared) = prepared {
                            log.complete_sync(&prepared);
                        }
                    }
                }
                Err(err) => {
                    for log in logs {
                        log.fail_sync(&err);
                    }
                }
            }
        } else {
            // Concurrent fdatasyncs let the filesystem share one journal commit among them.
            let workers = logs.len().min(self.sync_threads).max(1);
            let next = AtomicUsize::new(0);
            let sync_next = || {
                while let Some(log) = logs.get(next.fetch_add(1, Ordering::SeqCst)) {
                    self.sync_one(log);
                }
            };
            if workers == 1 {
                sync_next();
            } else {
                std::thread::scope(|scope| {
                    for _ in 0..workers {
                        scope.spawn(sync_next);
                    }
                });
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
}

impl Flusher {
    fn sync_one(&self, log: &Log) {
        log.durability().release_queue_slot();
        if let Some(prepared) = log.prepare_sync() {
            let files = prepared.files.len() as u64;
            match prepared.sync_files() {
                Ok(()) => log.complete_sync(&prepared),
                Err(err) => log.fail_sync(&err),
            }
            self.stats.fdatasyncs.fetch_add(files, Ordering::Relaxed);
        }
    }
}

fn syncfs(dir: &File) -> std::io::Result<()> {
    rustix::fs::syncfs(dir).map_err(std::io::Error::from)
}
