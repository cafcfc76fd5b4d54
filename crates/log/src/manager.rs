//! The log manager: every partition log of one data directory, and the background work
//! that spans them (group commit, periodic flush, retention, checkpoints).
//!
//! The data directory holds, besides one directory per partition:
//! - `.lock`, held with an exclusive lock while a manager has the directory open;
//! - `.kafka_cleanshutdown`, written last by a clean shutdown and removed at open, so that
//!   its presence proves every log was synced and closed;
//! - `recovery-point-offset-checkpoint`: per partition, the offset below which everything
//!   was synced (recovery after a crash starts there);
//! - `log-start-offset-checkpoint`: per partition, the log start offset (moved by
//!   DeleteRecords and retention);
//! - `cleaner-offset-checkpoint`: per compacted partition, the offset below which the
//!   cleaner has compacted it (the start of its dirty part).
//!
//! Partition lookups take a read lock on the partition map; appends and reads then use only
//! their own log's lock.
//!
//! Background threads: the sync workers (group commit), a scheduler (periodic flush,
//! retention, checkpoints) and, unless disabled, one cleaner that compacts the dirtiest
//! compacted log, one pass at a time (`crate::cleaner`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::checkpoint;
use crate::clock::{Clock, SystemClock};
use crate::file_cache::FileCache;
use crate::flush::{FlushStatsSnapshot, Flusher};
use crate::storage::Storage;
use crate::{
    CleaningReport, Log, LogConfig, LogError, ManagerConfig, Result, RetentionReport,
    TopicPartition,
};

/// Name of the clean-shutdown marker, as Kafka names it.
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
const LOCK_FILE: &str = ".lock";
const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
const LOG_START_FILE: &str = "log-start-offset-checkpoint";
const CLEANER_FILE: &str = "cleaner-offset-checkpoint";
const DELETE_SUFFIX: &str = "-delete";
/// Suffix of a partition directory set aside: kept on disk, never opened again.
pub const STRAY_SUFFIX: &str = "-stray";
/// Sync workers only call into the kernel; a small stack keeps many of them cheap.
const SYNC_WORKER_STACK: usize = 256 * 1024;

#[derive(Debug)]
struct Shared {
    config: ManagerConfig,
    clock: Arc<dyn Clock>,
    cache: Arc<FileCache>,
    flusher: Arc<Flusher>,
    logs: RwLock<HashMap<TopicPartition, Arc<Log>>>,
    stopping: Mutex<bool>,
    stop_signal: Condvar,
    /// Polled by a cleaning pass between steps, so shutdown does not wait for a whole pass.
    cleaner_stop: AtomicBool,
    checkpoint_lock: Mutex<()>,
    _dir_lock: File,
}

/// Owns the logs of one data directory. Dropping it without [`LogManager::shutdown`] stops
/// its threads but leaves the directory as a crash would (no marker, no final sync).
#[derive(Debug)]
pub struct LogManager {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl LogManager {
    /// Opens the data directory with the system clock.
    pub fn open(config: ManagerConfig) -> Result<Self> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens the data directory, recovering every partition found in it, and starts the
    /// background threads.
    pub fn open_with_clock(config: ManagerConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        config.default_log_config.validate()?;
        let dir = &config.data_dir;
        let storage = &*config.storage;
        storage.create_dir_all(dir)?;
        // The lock file's content never matters: opened directly, not through the storage.
        let dir_lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        if dir_lock.try_lock().is_err() {
            return Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "data directory {} is in use by another process",
                    dir.display()
                ),
            )));
        }
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = marker.exists();
        if clean_shutdown {
            // From here on, a crash must be seen as one.
            storage.remove_file(&marker)?;
            storage.sync_dir(dir)?;
        }
        let recovery_points = checkpoint::read(&dir.join(RECOVERY_POINT_FILE));
        let log_starts = checkpoint::read(&dir.join(LOG_START_FILE));
        let cleaner_points = checkpoint::read(&dir.join(CLEANER_FILE));

        let flusher = Arc::new(Flusher::new(
            config.flush_policy,
            config.syncfs_threshold,
            File::open(dir)?,
            config.storage.clone(),
        ));
        let cache = Arc::new(FileCache::new(
            config.max_open_segments,
            config.storage.clone(),
        ));
        let started = Instant::now();
        let partitions = discover_partitions(storage, dir)?;
        let opener = |tp: &TopicPartition| {
            Log::open(
                tp.clone(),
                dir.join(tp.dir_name()),
                config.log_config_for(&tp.topic),
                clock.clone(),
                cache.clone(),
                flusher.clone(),
                config.blocking.clone(),
                clean_shutdown,
                recovery_points.get(tp).copied(),
                log_starts.get(tp).copied(),
                cleaner_points.get(tp).copied(),
            )
            .map(Arc::new)
        };
        let logs = open_in_parallel(&partitions, opener)?;
        tracing::info!(
            dir = %dir.display(),
            partitions = logs.len(),
            clean_shutdown,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log manager opened"
        );

        let shared = Arc::new(Shared {
            config,
            clock,
            cache,
            flusher,
            logs: RwLock::new(logs),
            stopping: Mutex::new(false),
            stop_signal: Condvar::new(),
            cleaner_stop: AtomicBool::new(false),
            checkpoint_lock: Mutex::new(()),
            _dir_lock: dir_lock,
        });
        let mut threads = Vec::new();
        for i in 0..shared.config.sync_threads.max(1) {
            let flusher = shared.flusher.clone();
            let worker = std::thread::Builder::new()
                .name(format!("sluice-sync-{i}"))
                .stack_size(SYNC_WORKER_STACK)
                .spawn(move || flusher.run_worker())?;
            threads.push(worker);
        }
        let background = shared.clone();
        threads.push(spawn("sluice-log-scheduler", move || {
            background.run_scheduler();
        })?);
        if shared.config.cleaner_enabled {
            let cleaner = shared.clone();
            threads.push(spawn("sluice-log-cleaner", move || cleaner.run_cleaner())?);
        }
        Ok(LogManager {
            shared,
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.config.data_dir
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Log>> {
        self.shared
            .logs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tp)
            .cloned()
    }

    /// The log of `tp`, created with its topic's configuration if absent.
    pub fn get_or_create(&self, tp: &TopicPartition) -> Result<Arc<Log>> {
        if let Some(log) = self.get(tp) {
            return Ok(log);
        }
        let config = self.shared.config.log_config_for(&tp.topic);
        self.create(tp, config)
    }

    /// Creates the log of `tp` with `config`, or returns the existing one unchanged.
    pub fn create(&self, tp: &TopicPartition, config: LogConfig) -> Result<Arc<Log>> {
        let shared = &self.shared;
        let mut logs = shared.logs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = logs.get(tp) {
            return Ok(log.clone());
        }
        let dir = shared.config.data_dir.join(tp.dir_name());
        let log = Arc::new(Log::open(
            tp.clone(),
            dir,
            config,
            shared.clock.clone(),
            shared.cache.clone(),
            shared.flusher.clone(),
            shared.config.blocking.clone(),
            false,
            None,
            None,
            None,
        )?);
        shared.config.storage.sync_dir(&shared.config.data_dir)?;
        logs.insert(tp.clone(), log.clone());
        Ok(log)
    }

    /// Deletes the log of `tp`: it stops serving at once, its directory is renamed to
    /// `<topic>-<partition>.<id>-delete` and removed in the background. Returns whether it
    /// existed.
    pub fn delete(&self, tp: &TopicPartition) -> Result<bool> {
        let Some(doomed) = self.take_out(tp, DELETE_SUFFIX)? else {
            return Ok(false);
        };
        let storage = self.shared.config.storage.clone();
        std::thread::Builder::new()
            .name("sluice-log-delete".into())
            .spawn(move || remove_dir_logged(&*storage, &doomed))?;
        tracing::info!(partition = %tp, "deleted log");
        Ok(true)
    }

    /// Sets the log of `tp` aside instead of deleting it (Kafka's stray partitions): it stops
    /// serving at once, and its directory is renamed `<topic>-<partition>.<id>-stray` and
    /// kept, for an operator to inspect or remove. Returns the new path, if it existed.
    pub fn set_aside(&self, tp: &TopicPartition) -> Result<Option<PathBuf>> {
        self.take_out(tp, STRAY_SUFFIX)
    }

    /// Stops serving `tp` and renames its directory `<dir>.<id><suffix>` (made durable).
    /// Returns the new path, if the log existed.
    fn take_out(&self, tp: &TopicPartition, suffix: &str) -> Result<Option<PathBuf>> {
        let Some(log) = self
            .shared
            .logs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tp)
        else {
            return Ok(None);
        };
        log.mark_deleted();
        let data_dir = &self.shared.config.data_dir;
        let renamed = data_dir.join(format!("{}.{}{suffix}", tp.dir_name(), unique_id()));
        let storage = &*self.shared.config.storage;
        storage.rename(log.dir(), &renamed)?;
        storage.sync_dir(data_dir)?;
        Ok(Some(renamed))
    }

    /// The directories set aside in the data directory ([`LogManager::set_aside`]).
    pub fn stray_dirs(&self) -> Vec<PathBuf> {
        stray_dirs(&self.shared.config.data_dir)
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.shared
            .logs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn logs(&self) -> Vec<Arc<Log>> {
        self.shared.logs()
    }

    /// DeleteRecords on one partition; the new log start offset is checkpointed before
    /// this returns, so it survives a crash.
    pub fn delete_records(&self, tp: &TopicPartition, offset: i64) -> Result<i64> {
        let log = self.get(tp).ok_or(LogError::Deleted)?;
        let start = log.delete_records_before(offset)?;
        self.shared.write_checkpoints()?;
        Ok(start)
    }

    /// One retention pass over every log (the background thread runs it periodically).
    pub fn enforce_retention(&self) -> RetentionReport {
        self.shared.enforce_retention()
    }

    /// Runs one cleaning pass over every compacted log that needs one (with `force`, over
    /// every compacted log with inactive segments), on the calling thread, and writes the
    /// cleaner checkpoint. The background cleaner does the same, one log at a time.
    pub fn clean_now(&self, force: bool) -> Vec<CleaningReport> {
        let mut reports = Vec::new();
        for log in self.logs() {
            if let Some(report) = self.shared.clean_one(&log, force) {
                reports.push(report);
            }
        }
        reports
    }

    /// The last cleaning pass of every log cleaned since the manager opened.
    pub fn cleaner_reports(&self) -> Vec<CleaningReport> {
        self.logs()
            .iter()
            .filter_map(|log| log.last_cleaning())
            .collect()
    }

    /// Queues every log with unflushed data for the sync workers (the background thread
    /// does this periodically).
    pub fn flush_all(&self) {
        self.shared.flush_all();
    }

    pub fn write_checkpoints(&self) -> Result<()> {
        self.shared.write_checkpoints()
    }

    pub fn flush_stats(&self) -> FlushStatsSnapshot {
        self.shared.flusher.stats.snapshot()
    }

    /// Inactive segments whose file is open right now.
    pub fn open_segment_files(&self) -> usize {
        self.shared.cache.open_count()
    }

    /// Clean shutdown: stops background work, writes active indexes, syncs every log,
    /// writes checkpoints, and finally the clean-shutdown marker. If any log could not be
    /// closed cleanly the marker is not written, so the next open recovers.
    pub fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.stop_threads();
        let mut first_error = None;
        for log in self.logs() {
            if let Err(err) = log.close() {
                tracing::error!(partition = %log.topic_partition(), error = %err, "unclean close");
                first_error.get_or_insert(err);
            }
        }
        self.shared.write_checkpoints()?;
        if let Some(err) = first_error {
            return Err(err);
        }
        let dir = &self.shared.config.data_dir;
        let storage = &*self.shared.config.storage;
        let marker = crate::storage::create_truncated(storage, &dir.join(CLEAN_SHUTDOWN_FILE))?;
        storage.sync_all(&marker)?;
        storage.sync_dir(dir)?;
        tracing::info!(dir = %dir.display(), "log manager shut down cleanly");
        Ok(())
    }

    fn stop_threads(&self) {
        *self
            .shared
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.cleaner_stop.store(true, Ordering::SeqCst);
        self.shared.stop_signal.notify_all();
        self.shared.flusher.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.stop_threads();
        }
    }
}

impl Shared {
    fn logs(&self) -> Vec<Arc<Log>> {
        self.logs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn flush_all(&self) {
        self.flusher.flush_in_background(self.logs());
    }

    fn enforce_retention(&self) -> RetentionReport {
        let mut total = RetentionReport::default();
        for log in self.logs() {
            match log.enforce_retention() {
                Ok(report) => {
                    total.segments_deleted += report.segments_deleted;
                    total.bytes_deleted += report.bytes_deleted;
                }
                Err(LogError::Deleted) => {}
                Err(err) => {
                    tracing::warn!(partition = %log.topic_partition(), error = %err, "retention failed");
                }
            }
        }
        total
    }

    fn write_checkpoints(&self) -> Result<()> {
        let _serial = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut recovery_points = Vec::new();
        let mut log_starts = Vec::new();
        let mut cleaner_points = Vec::new();
        for log in self.logs() {
            let offsets = log.offsets();
            let tp = log.topic_partition().clone();
            if let Some(first_dirty) = log.cleaner_first_dirty_offset() {
                cleaner_points.push((tp.clone(), first_dirty));
            }
            recovery_points.push((tp.clone(), offsets.recovery_point));
            log_starts.push((tp, offsets.log_start_offset));
        }
        let dir = &self.config.data_dir;
        let storage = &*self.config.storage;
        checkpoint::write(storage, &dir.join(RECOVERY_POINT_FILE), &recovery_points)?;
        checkpoint::write(storage, &dir.join(LOG_START_FILE), &log_starts)?;
        checkpoint::write(storage, &dir.join(CLEANER_FILE), &cleaner_points)?;
        Ok(())
    }

    /// One cleaning pass over `log` if it needs one; the cleaner checkpoint is written after
    /// a pass so that a restart does not clean the same range again.
    fn clean_one(&self, log: &Arc<Log>, force: bool) -> Option<CleaningReport> {
        let stop = || self.cleaner_stop.load(Ordering::SeqCst);
        match log.clean(force, &self.config.cleaner_settings(), &stop) {
            Ok(Some(report)) => {
                if let Err(err) = self.write_checkpoints() {
                    tracing::warn!(error = %err, "cleaner checkpoint write failed");
                }
                Some(report)
            }
            Ok(None) | Err(LogError::Deleted) => None,
            Err(LogError::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(partition = %log.topic_partition(), error = %err, "cleaning skipped");
                None
            }
            Err(err) => {
                tracing::warn!(partition = %log.topic_partition(), error = %err, "cleaning failed");
                None
            }
        }
    }

    /// The background cleaner: every `log.cleaner.backoff.ms`, cleans the logs that need it,
    /// overdue ones first, then the dirtiest; each at most once per round.
    fn run_cleaner(&self) {
        loop {
            {
                let stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
                if *stopping {
                    return;
                }
                let (stopping, _) = self
                    .stop_signal
                    .wait_timeout(stopping, self.config.cleaner_backoff)
                    .unwrap_or_else(|e| e.into_inner());
                if *stopping {
                    return;
                }
            }
            let mut done: Vec<TopicPartition> = Vec::new();
            loop {
                if self.cleaner_stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut best: Option<(bool, f64, Arc<Log>)> = None;
                for log in self.logs() {
                    if done.contains(log.topic_partition()) {
                        continue;
                    }
                    let Ok(Some(candidate)) = log.cleaning_candidate(false) else {
                        continue;
                    };
                    let key = (candidate.overdue, candidate.dirty_ratio);
                    if best
                        .as_ref()
                        .is_none_or(|(o, r, _)| (u8::from(key.0), key.1) > (u8::from(*o), *r))
                    {
                        best = Some((key.0, key.1, log));
                    }
                }
                let Some((_, _, log)) = best else { break };
                done.push(log.topic_partition().clone());
                self.clean_one(&log, false);
            }
        }
    }

    /// Periodic work, until the manager stops. Uses real time for scheduling; retention
    /// decisions use the injected clock.
    fn run_scheduler(&self) {
        let config = &self.config;
        type Task = fn(&Shared);
        let tasks: [(Duration, Task); 3] = [
            (config.flush_interval, Shared::flush_all),
            (config.retention_check_interval, |s| {
                s.enforce_retention();
            }),
            (config.checkpoint_interval, |s| {
                if let Err(err) = s.write_checkpoints() {
                    tracing::warn!(error = %err, "checkpoint write failed");
                }
            }),
        ];
        let start = Instant::now();
        let mut due: Vec<Instant> = tasks.iter().map(|(every, _)| start + *every).collect();
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopping {
                return;
            }
            let next = *due.iter().min().expect("tasks");
            let now = Instant::now();
            if next > now {
                let (guard, _) = self
                    .stop_signal
                    .wait_timeout(stopping, next - now)
                    .unwrap_or_else(|e| e.into_inner());
                stopping = guard;
            }
            if *stopping {
                return;
            }
            drop(stopping);
            let now = Instant::now();
            for ((every, task), due) in tasks.iter().zip(due.iter_mut()) {
                if *due <= now {
                    task(self);
                    *due = Instant::now() + *every;
                }
            }
            stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new().name(name.into()).spawn(f)?)
}

/// Partition directories of the data directory; removes the remains of deleted logs.
fn discover_partitions(storage: &dyn Storage, dir: &Path) -> Result<Vec<TopicPartition>> {
    let mut partitions = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(DELETE_SUFFIX) {
            remove_dir_logged(storage, &entry.path());
            continue;
        }
        match TopicPartition::from_dir_name(name) {
            Some(tp) => partitions.push(tp),
            None => tracing::debug!(dir = name, "ignoring directory that is not a partition"),
        }
    }
    partitions.sort();
    Ok(partitions)
}

/// The stray partition directories of a data directory (`*-stray`), sorted.
pub fn stray_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(STRAY_SUFFIX))
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

/// Opens logs on as many threads as there are cores: recovery is CPU (CRC) and I/O bound.
fn open_in_parallel(
    partitions: &[TopicPartition],
    open: impl Fn(&TopicPartition) -> Result<Arc<Log>> + Sync,
) -> Result<HashMap<TopicPartition, Arc<Log>>> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(partitions.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(partitions.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(tp) = partitions.get(i) else { break };
                    let opened = open(tp);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((tp.clone(), opened));
                }
            });
        }
    });
    let mut logs = HashMap::with_capacity(partitions.len());
    for (tp, opened) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let log = opened.map_err(|err| match err {
            LogError::Io(io) => LogError::Io(std::io::Error::new(io.kind(), format!("{tp}: {io}"))),
            other => other,
        })?;
        logs.insert(tp, log);
    }
    Ok(logs)
}

fn remove_dir_logged(storage: &dyn Storage, path: &Path) {
    if let Err(err) = storage.remove_dir_all(path) {
        tracing::warn!(dir = %path.display(), error = %err, "could not remove deleted log");
    }
}

fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:024x}{:08x}",
        nanos ^ u128::from(std::process::id()) << 96,
        count
    )
}
