//! The real log on a [`SimulatedDisk`]: power lost at every storage call of a workload,
//! failing calls (EIO, ENOSPC) at every call, and flipped bits. After each fault the data
//! directory is reopened as a restarted broker would, and a checker reads everything back:
//! every acknowledged write (appended, then flushed without error) is there at its offsets
//! with its content and leader epoch; the log is valid (whole intact batches, increasing
//! offsets); an idempotent producer's acknowledged last batch is still recognised as a
//! duplicate (producer snapshots and their rebuild); a log start made durable by
//! DeleteRecords holds; a compacted log still has every key's latest acknowledged value; the
//! log takes writes again.
//!
//! The workload, per seed: appends (plain and idempotent) to two partitions of 1 KiB
//! segments (rolls, index writes, producer snapshots), flushes (fdatasync, epoch checkpoints,
//! directory syncs), leader epoch changes, truncations (`truncate_to`, a follower's), and
//! DeleteRecords with the manager's checkpoints. Everything runs on the test's thread, so a
//! seed makes the same storage calls every time and a crash point is a call number.
//!
//! The default run takes every 2nd call of the first seed as a crash point (every 4th of
//! the cleaning passes), every 7th of two more seeds. `SLUICE_POWER_LOSS_SEEDS=N` is the
//! long run: N seeds, every call of each (docs/TESTING.md has its figures).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Rng, read_all, small_segments_config};
use sluice_log::{
    CleanupPolicy, LogConfig, LogError, LogManager, ManagerConfig, ManualClock, SimulatedDisk,
    SimulatedFault, Storage, TopicPartition,
};
use sluice_record::{BatchBuilder, Compression, OwnedRecord, RecordBatch};

const T0: i64 = 1_700_000_000_000;
const OPS: usize = 160;
const PARTITIONS: i32 = 2;
const PRODUCER: i64 = 4242;

/// The long run's seed count, if asked for.
fn long_run() -> Option<u64> {
    std::env::var("SLUICE_POWER_LOSS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
}

fn seeds() -> u64 {
    long_run().unwrap_or(3)
}

/// Every how many calls a crash point is taken: all of them in the long run.
fn step(seed: u64, default_first: usize, default_rest: usize) -> usize {
    match (long_run(), seed) {
        (Some(_), _) => 1,
        (None, 0) => default_first,
        (None, _) => default_rest,
    }
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("power", partition)
}

fn log_config(compacted: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy {
            delete: !compacted,
            compact: compacted,
        },
        ..small_segments_config()
    }
}

fn open(dir: &Path, storage: Arc<dyn Storage>, compacted: bool) -> Result<LogManager, LogError> {
    let mut config = ManagerConfig::new(dir);
    config.default_log_config = log_config(compacted);
    config.storage = storage;
    // Nothing runs in the background: the test's thread makes every call.
    config.cleaner_enabled = false;
    config.retention_check_interval = Duration::from_secs(3600);
    config.checkpoint_interval = Duration::from_secs(3600);
    config.flush_interval = Duration::from_secs(3600);
    LogManager::open_with_clock(config, Arc::new(ManualClock::new(T0)))
}

/// A batch the checker can recognise: `tag` as every record's value prefix, `key` as key.
fn batch(tag: u64, records: usize, key: Option<u64>, producer: Option<i32>) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    if let Some(sequence) = producer {
        builder = builder.producer(PRODUCER, 0, sequence);
    }
    for i in 0..records {
        let mut value = format!("{tag}:{i}:").into_bytes();
        value.resize(40, b'v');
        let key = key.map_or_else(|| tag.to_be_bytes().to_vec(), |k| k.to_be_bytes().to_vec());
        builder.push(OwnedRecord::new(Some(key), Some(value), T0));
    }
    builder.build().expect("non-empty batch")
}

fn tag_of(batch: &RecordBatch<'_>) -> u64 {
    let records = batch.records(1 << 20).expect("decodable");
    let value = records
        .iter()
        .next()
        .expect("a record")
        .value
        .expect("value");
    let text = std::str::from_utf8(value).expect("utf-8");
    text.split(':').next().unwrap().parse().expect("tag")
}

/// A batch the log acknowledged, as the checker expects to find it.
#[derive(Debug, Clone)]
struct Written {
    base: i64,
    last: i64,
    tag: u64,
    epoch: i32,
    /// An idempotent batch's bytes, to retry it after the restart.
    retry: Option<Vec<u8>>,
}

/// What the workload was told, per partition.
#[derive(Debug, Default)]
struct Ledger {
    /// Acknowledged batches by base offset.
    acked: BTreeMap<i64, Written>,
    /// Appended since the last successful flush.
    pending: Vec<Written>,
    /// A log start DeleteRecords made durable.
    durable_start: i64,
    epoch: i32,
    sequence: i32,
    /// Batches acknowledged over the run (some later truncated or deleted).
    acknowledged_total: usize,
    /// The idempotent producer's latest append, acknowledged or not.
    last_idempotent: Option<u64>,
    /// The latest acknowledged value's tag of each key (compacted runs).
    latest: BTreeMap<u64, u64>,
    pending_latest: Vec<(u64, u64)>,
}

impl Ledger {
    fn flushed(&mut self) {
        self.acknowledged_total += self.pending.len();
        for written in self.pending.drain(..) {
            self.acked.insert(written.base, written);
        }
        for (key, tag) in self.pending_latest.drain(..) {
            self.latest.insert(key, tag);
        }
    }

    /// Batches at or after `offset` may be gone (a truncation, done or not).
    fn cut(&mut self, offset: i64) {
        self.acked.retain(|_, w| w.last < offset);
        self.pending.retain(|w| w.last < offset);
    }

    /// Batches wholly below `start` may be gone (DeleteRecords, done or not).
    fn cut_below(&mut self, start: i64) {
        self.acked.retain(|_, w| w.last >= start);
        self.pending.retain(|w| w.last >= start);
    }
}

/// Runs the seeded workload until it ends or a call fails in a way that stops the machine
/// (power gone, or a log offline). With `compacted`, the partitions are compacted topics
/// whose batches overwrite 12 keys, and no truncation or DeleteRecords runs.
fn workload(manager: &LogManager, seed: u64, compacted: bool) -> Vec<Ledger> {
    let mut rng = Rng::seeded(seed);
    let mut ledgers: Vec<Ledger> = (0..PARTITIONS).map(|_| Ledger::default()).collect();
    let mut next_tag = 1u64;
    let logs: Vec<_> = match (0..PARTITIONS)
        .map(|p| manager.get_or_create(&tp(p)))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(logs) => logs,
        Err(_) => return ledgers,
    };
    for _ in 0..OPS {
        let p = rng.below(PARTITIONS as u64) as usize;
        let log = &logs[p];
        let ledger = &mut ledgers[p];
        if log.is_offline() {
            break;
        }
        match rng.below(100) {
            0..=59 => {
                let records = 1 + rng.below(4) as usize;
                let key = compacted.then(|| rng.below(12));
                let idempotent = !compacted && rng.below(3) == 0;
                let tag = next_tag;
                next_tag += 1;
                let sequence = idempotent.then_some(ledger.sequence);
                let mut bytes = batch(tag, records, key, sequence);
                let retry = idempotent.then(|| bytes.clone());
                match log.append(&mut bytes, ledger.epoch) {
                    Ok(info) => {
                        assert!(!info.duplicate);
                        if idempotent {
                            ledger.sequence += records as i32;
                            ledger.last_idempotent = Some(tag);
                        }
                        ledger.pending.push(Written {
                            base: info.first_offset,
                            last: info.last_offset,
                            tag,
                            epoch: ledger.epoch,
                            retry,
                        });
                        if let Some(key) = key {
                            ledger.pending_latest.push((key, tag));
                        }
                    }
                    Err(_) if log.is_offline() => break,
                    // Refused and rolled back (ENOSPC): not written; a producer would
                    // retry the same sequence. The workload goes on.
                    Err(_) => {}
                }
            }
            60..=79 => match log.flush() {
                Ok(()) => ledger.flushed(),
                Err(_) => break,
            },
            80..=86 => {
                let epoch = ledger.epoch + 1;
                if log.begin_leader_epoch(epoch).is_ok() {
                    ledger.epoch = epoch;
                }
            }
            87..=92 if !compacted => {
                let end = log.log_end_offset();
                let start = log.offsets().log_start_offset;
                if end > start {
                    let to = start + rng.below((end - start) as u64 + 1) as i64;
                    ledger.cut(to);
                    if log.truncate_to(to).is_err() && log.is_offline() {
                        break;
                    }
                    ledger.sequence = next_sequence(log);
                }
            }
            93..=96 if !compacted => {
                let end = log.high_watermark();
                let start = log.offsets().log_start_offset;
                if end > start {
                    let to = start + rng.below((end - start) as u64 + 1) as i64;
                    ledger.cut_below(to);
                    match manager.delete_records(&tp(p as i32), to) {
                        Ok(start) => ledger.durable_start = ledger.durable_start.max(start),
                        Err(_) if log.is_offline() => break,
                        Err(_) => {}
                    }
                    ledger.sequence = next_sequence(log);
                }
            }
            _ => {
                if manager.write_checkpoints().is_err() {
                    break;
                }
            }
        }
    }
    ledgers
}

/// The sequence the log expects next from the idempotent producer (0 once it forgot it).
fn next_sequence(log: &sluice_log::Log) -> i32 {
    log.producer_states()
        .get(PRODUCER)
        .and_then(|entry| entry.batches.back())
        .map_or(0, |batch| batch.last_sequence + 1)
}

/// Reopens the directory and checks every partition against its ledger. Returns the
/// number of acknowledged batches checked.
fn check(
    dir: &Path,
    storage: Arc<dyn Storage>,
    ledgers: &[Ledger],
    compacted: bool,
    what: &str,
) -> usize {
    let manager = open(dir, storage, compacted).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    let mut checked = 0;
    for (p, ledger) in ledgers.iter().enumerate() {
        let Some(log) = manager.get(&tp(p as i32)) else {
            assert!(
                ledger.acked.is_empty(),
                "{what}: partition {p} lost with acknowledged writes"
            );
            continue;
        };
        // DeleteRecords may have named records that were never synced (the high watermark of
        // a lone log is its end): the log start then ends where the surviving log does.
        let offsets = log.offsets();
        assert!(
            offsets.log_start_offset >= ledger.durable_start.min(offsets.log_end_offset),
            "{what}: partition {p}: log start {} below the durable DeleteRecords point {}",
            offsets.log_start_offset,
            ledger.durable_start
        );
        let mut found = BTreeMap::new();
        let mut latest = BTreeMap::new();
        let mut previous_end = offsets.log_start_offset;
        for bytes in read_all(&log) {
            let stored = RecordBatch::parse(&bytes).expect("a whole batch");
            assert!(
                stored.header().base_offset() >= previous_end || found.is_empty(),
                "{what}: partition {p}: offsets go back"
            );
            previous_end = stored.next_offset();
            let header = stored.header();
            found.insert(
                header.base_offset(),
                (
                    stored.next_offset() - 1,
                    tag_of(&stored),
                    header.partition_leader_epoch(),
                ),
            );
            if compacted {
                for record in stored.records(1 << 20).unwrap().iter() {
                    let key = u64::from_be_bytes(record.key.unwrap().try_into().unwrap());
                    latest.insert(key, tag_of(&stored));
                }
            }
        }
        for written in ledger.acked.values() {
            if compacted {
                continue; // compaction may drop superseded batches: keys are checked below
            }
            let at = found.get(&written.base);
            assert_eq!(
                at,
                Some(&(written.last, written.tag, written.epoch)),
                "{what}: partition {p}: acknowledged batch {written:?} is not there as written"
            );
            checked += 1;
        }
        if compacted {
            for (key, tag) in &ledger.latest {
                assert_eq!(
                    latest.get(key),
                    Some(tag),
                    "{what}: partition {p}: key {key} lost its latest acknowledged value"
                );
                checked += 1;
            }
        }
        // The idempotent producer's last acknowledged batch is still known: a retry of it
        // is answered with its original offsets, not written again.
        if let Some(last) = ledger
            .acked
            .values()
            .find(|w| w.retry.is_some() && Some(w.tag) == ledger.last_idempotent)
            .filter(|w| w.base >= log.offsets().log_start_offset)
        {
            let mut retry = last.retry.clone().unwrap();
            let info = log
                .append(&mut retry, last.epoch.max(ledger.epoch))
                .unwrap_or_else(|e| {
                    panic!("{what}: partition {p}: retry of the last idempotent batch: {e}")
                });
            assert!(
                info.duplicate && info.first_offset == last.base,
                "{what}: partition {p}: the last acknowledged idempotent batch was not recognised: {info:?}"
            );
        }
        // The log takes writes again.
        let end = log.log_end_offset();
        let mut more = batch(u64::MAX / 2, 1, Some(0), None);
        let info = log
            .append(&mut more, log.latest_epoch().unwrap_or(0))
            .unwrap_or_else(|e| panic!("{what}: partition {p}: append after recovery: {e}"));
        assert_eq!(info.first_offset, end);
        log.flush().unwrap();
    }
    manager
        .shutdown()
        .unwrap_or_else(|e| panic!("{what}: clean shutdown: {e}"));
    checked
}

/// The number of storage calls the workload of `seed` makes, run to its end.
fn calls_of(seed: u64, compacted: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimulatedDisk::new(dir.path(), seed).unwrap();
    let manager = open(dir.path(), disk.clone(), compacted).unwrap();
    let ledgers = workload(&manager, seed, compacted);
    assert!(
        ledgers.iter().map(|l| l.acknowledged_total).sum::<usize>() > 10,
        "the workload acknowledges writes"
    );
    drop(manager);
    disk.calls()
}

/// One crash: the workload with the power gone at call `at`, then a restart and the checker.
fn power_loss_at(seed: u64, at: u64, compacted: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimulatedDisk::new(dir.path(), seed ^ at.wrapping_mul(0x9e37)).unwrap();
    disk.power_off_at(at);
    let ledgers = match open(dir.path(), disk.clone(), compacted) {
        Ok(manager) => {
            let ledgers = workload(&manager, seed, compacted);
            disk.power_off();
            drop(manager); // the process dies with the power: nothing is closed
            ledgers
        }
        Err(_) => Vec::new(),
    };
    disk.restart().unwrap();
    check(
        dir.path(),
        disk,
        &ledgers,
        compacted,
        &format!("seed {seed}, power lost at call {at}"),
    )
}

#[test]
fn acknowledged_writes_survive_power_loss_at_every_call() {
    let (mut crashes, mut checked, mut torn) = (0u64, 0usize, 0u64);
    for seed in 0..seeds() {
        let calls = calls_of(seed, false);
        for at in (0..calls).step_by(step(seed, 2, 7)) {
            checked += power_loss_at(seed, at, false);
            crashes += 1;
        }
        torn += calls;
    }
    eprintln!(
        "{crashes} power losses over {} seeds ({torn} storage calls in the full runs), \
         {checked} acknowledged batches checked",
        seeds()
    );
    assert!(
        checked > crashes as usize,
        "the crashes came after acknowledged writes"
    );
}

#[test]
fn a_compacted_log_keeps_every_latest_value_through_power_loss_during_cleaning() {
    let mut crashes = 0u64;
    for seed in 0..long_run().unwrap_or(1) {
        // The writes, then cleaning passes with the power going at each of their calls.
        let dir = tempfile::tempdir().unwrap();
        let disk = SimulatedDisk::new(dir.path(), seed).unwrap();
        let manager = open(dir.path(), disk.clone(), true).unwrap();
        let mut ledgers = workload(&manager, seed, true);
        for log in manager.logs() {
            log.flush().unwrap();
        }
        for ledger in &mut ledgers {
            ledger.flushed();
        }
        manager.shutdown().unwrap();
        drop(manager);
        let template = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), template.path());
        let cleaning_calls = {
            let disk = SimulatedDisk::new(dir.path(), seed).unwrap();
            let manager = open(dir.path(), disk.clone(), true).unwrap();
            let before = disk.calls();
            let reports = manager.clean_now(true);
            assert!(
                reports.iter().any(|r| r.records_removed > 0),
                "cleaning happened: {reports:?}"
            );
            drop(manager);
            disk.calls() - before
        };
        for crash in (0..cleaning_calls).step_by(step(seed, 4, 4)) {
            let run = tempfile::tempdir().unwrap();
            copy_dir(template.path(), run.path());
            let disk = SimulatedDisk::new(run.path(), seed ^ crash).unwrap();
            let manager = open(run.path(), disk.clone(), true).unwrap();
            disk.power_off_at(disk.calls() + crash);
            let _ = manager.clean_now(true);
            disk.power_off();
            drop(manager);
            disk.restart().unwrap();
            check(
                run.path(),
                disk,
                &ledgers,
                true,
                &format!("seed {seed}, power lost at cleaning call {crash}"),
            );
            crashes += 1;
        }
    }
    eprintln!("{crashes} power losses during cleaning passes");
    assert!(crashes > 10);
}

#[test]
fn a_failing_call_loses_no_acknowledged_write() {
    let mut faults = 0u64;
    let seed = 11;
    let calls = calls_of(seed, false);
    for at in (0..calls).step_by(step(0, 4, 4)) {
        for fault in [SimulatedFault::Io, SimulatedFault::NoSpace] {
            let dir = tempfile::tempdir().unwrap();
            let disk = SimulatedDisk::new(dir.path(), seed ^ at).unwrap();
            disk.fail_call(at, fault);
            let ledgers = match open(dir.path(), disk.clone(), false) {
                Ok(manager) => {
                    let ledgers = workload(&manager, seed, false);
                    drop(manager); // a crash after the fault (the page cache survives)
                    ledgers
                }
                Err(_) => Vec::new(),
            };
            check(
                dir.path(),
                disk,
                &ledgers,
                false,
                &format!("seed {seed}, {fault:?} at call {at}"),
            );
            faults += 1;
        }
    }
    eprintln!("{faults} failing calls");
}

#[test]
fn flipped_bits_are_cut_off_by_recovery_and_the_rest_is_intact() {
    for seed in 0..seeds() * 4 {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimulatedDisk::new(dir.path(), seed).unwrap();
        let manager = open(dir.path(), disk.clone(), false).unwrap();
        let log = manager.get_or_create(&tp(0)).unwrap();
        let mut written = Vec::new();
        for tag in 1..=40u64 {
            let mut bytes = batch(tag, 2, None, None);
            written.push(log.append(&mut bytes, 0).unwrap());
        }
        log.flush().unwrap();
        drop(log);
        drop(manager); // unclean: recovery scans every segment
        let segments = common::segment_bases(&dir.path().join(tp(0).dir_name()));
        let mut rng = Rng::seeded(seed);
        let victim = segments[rng.below(segments.len() as u64) as usize];
        let path = dir
            .path()
            .join(tp(0).dir_name())
            .join(format!("{victim:020}.log"));
        // A bit the batch CRC covers, or the magic byte: the leader epoch (bytes 12-15)
        // is outside the CRC in Kafka's format, as the base offset and length are checked
        // by other means.
        let content = std::fs::read(&path).unwrap();
        let mut starts = Vec::new();
        let mut position = 0usize;
        while position < content.len() {
            starts.push(position);
            position += RecordBatch::parse(&content[position..])
                .unwrap()
                .as_bytes()
                .len();
        }
        let start = starts[rng.below(starts.len() as u64) as usize];
        let len = RecordBatch::parse(&content[start..])
            .unwrap()
            .as_bytes()
            .len();
        let at = (start + 16 + rng.below(len as u64 - 16) as usize) as u64;
        disk.flip_bits(&path, at..at + 1, 1).unwrap();
        let manager = open(dir.path(), disk.clone(), false).unwrap();
        let log = manager.get(&tp(0)).unwrap();
        let batches = read_all(&log);
        // Whatever is left is a prefix of what was written, every batch intact.
        for (stored, info) in batches.iter().zip(&written) {
            let stored = RecordBatch::parse(stored).unwrap();
            assert_eq!(stored.header().base_offset(), info.first_offset);
        }
        assert!(
            batches.len() < written.len(),
            "seed {seed}: a flipped bit at {victim}+{at} went unnoticed"
        );
        manager.shutdown().unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
