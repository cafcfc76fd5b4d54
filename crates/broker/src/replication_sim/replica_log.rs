//! A replica's log as the replication simulation drives it: [`ModelLog`], a vector that
//! keeps written and synced apart (fast: thousands of seeds a minute), or [`RealLog`], the
//! broker's own `sluice_log::Log` on a `SimulatedDisk` of its own, where a power loss keeps
//! or loses each unsynced sector and recovery is the real one (the epoch checkpoint, torn
//! batches cut, segments rebuilt).
//!
//! Records are one per batch, so that an offset is an entry and a batch boundary is every
//! offset (`truncate_to` cuts whole batches).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_log::{
    CleanupPolicy, LeaderEpochs, Log, LogConfig, LogManager, ManagerConfig, ManualClock,
    ReplicatedRecords, SimulatedDisk, TopicPartition,
};
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord};

/// One record of the simulation: the leader epoch that wrote it and a unique value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub epoch: i32,
    pub value: u64,
}

/// What the simulation does to a replica's log. Every error is a finding: the simulated
/// disks never fail a call, they only lose power.
pub(super) trait ReplicaLog {
    /// What a fetch carries from the leader's log to a follower's.
    type Copied;

    fn leo(&self) -> i64;
    /// Everything below this offset is on stable storage.
    fn synced(&self) -> i64;
    fn epochs(&self) -> LeaderEpochs;
    /// The newest epoch that wrote here (a follower's "last fetched epoch").
    fn latest_epoch(&self) -> Option<i32> {
        self.epochs().latest().map(|e| e.epoch)
    }
    /// `OffsetForLeaderEpoch` on this log.
    fn end_for(&self, epoch: i32, leo: i64) -> Option<(i32, i64)> {
        self.epochs().end_offset_for(epoch, leo)
    }
    /// A leader's write, at the log end.
    fn append(&mut self, entry: Entry) -> Result<(), String>;
    /// This replica leads in `epoch` from its log end on.
    fn begin_epoch(&mut self, epoch: i32) -> Result<(), String>;
    /// Everything from `offset` to the log end (`offset` ≤ the log end).
    fn read_from(&self, offset: i64) -> Result<Self::Copied, String>;
    /// What [`ReplicaLog::read_from`] gave, at this log's end, offsets and epochs kept.
    fn append_copied(&mut self, copied: Self::Copied) -> Result<(), String>;
    /// Entries from `to` on go, and epochs begun at or after it.
    fn truncate(&mut self, to: i64) -> Result<(), String>;
    fn sync(&mut self) -> Result<(), String>;
    /// Power lost and back: what was not synced may be gone; the log recovers.
    fn power_loss(&mut self) -> Result<(), String>;
    /// The replica no longer hosts the partition: its copy goes (a move back starts empty).
    fn clear(&mut self) -> Result<(), String>;
    /// The whole log (offset = index).
    fn entries(&self) -> Result<Vec<Entry>, String>;
    fn entry_at(&self, offset: i64) -> Result<Option<Entry>, String>;
}

/// The model: entries in memory, the synced prefix, the epoch history.
#[derive(Default)]
pub(super) struct ModelLog {
    log: Vec<Entry>,
    synced: usize,
    epochs: LeaderEpochs,
}

impl ReplicaLog for ModelLog {
    type Copied = Vec<Entry>;

    fn leo(&self) -> i64 {
        self.log.len() as i64
    }

    fn synced(&self) -> i64 {
        self.synced as i64
    }

    fn epochs(&self) -> LeaderEpochs {
        self.epochs.clone()
    }

    fn end_for(&self, epoch: i32, leo: i64) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, leo)
    }

    fn append(&mut self, entry: Entry) -> Result<(), String> {
        self.epochs.assign(entry.epoch, self.leo());
        self.log.push(entry);
        Ok(())
    }

    fn begin_epoch(&mut self, epoch: i32) -> Result<(), String> {
        self.epochs.assign(epoch, self.leo());
        Ok(())
    }

    fn read_from(&self, offset: i64) -> Result<Vec<Entry>, String> {
        Ok(self.log[offset as usize..].to_vec())
    }

    fn append_copied(&mut self, copied: Vec<Entry>) -> Result<(), String> {
        for entry in copied {
            self.append(entry)?;
        }
        Ok(())
    }

    fn truncate(&mut self, to: i64) -> Result<(), String> {
        let to = to.max(0);
        let keep = usize::try_from(to).unwrap_or(0).min(self.log.len());
        self.log.truncate(keep);
        self.synced = self.synced.min(keep);
        self.epochs.truncate_from_end(to);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.synced = self.log.len();
        Ok(())
    }

    /// Only synced entries remain; recovery rebuilds the epoch history from them.
    fn power_loss(&mut self) -> Result<(), String> {
        self.log.truncate(self.synced);
        let mut epochs = LeaderEpochs::default();
        for (offset, entry) in self.log.iter().enumerate() {
            epochs.assign(entry.epoch, offset as i64);
        }
        self.epochs = epochs;
        Ok(())
    }

    fn clear(&mut self) -> Result<(), String> {
        *self = ModelLog::default();
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, String> {
        Ok(self.log.clone())
    }

    fn entry_at(&self, offset: i64) -> Result<Option<Entry>, String> {
        let index = usize::try_from(offset).map_err(|e| e.to_string())?;
        Ok(self.log.get(index).copied())
    }
}

const T0: i64 = 1_700_000_000_000;

fn partition() -> TopicPartition {
    TopicPartition::new(super::TOPIC, 0)
}

/// The broker's log on a simulated disk of its own (a node of its own).
pub(super) struct RealLog {
    disk: Arc<SimulatedDisk>,
    dir: std::path::PathBuf,
    manager: Option<LogManager>,
    log: Arc<Log>,
}

fn open(dir: &Path, disk: &Arc<SimulatedDisk>) -> Result<(LogManager, Arc<Log>), String> {
    let mut config = ManagerConfig::new(dir);
    config.default_log_config = LogConfig {
        // Small segments: appends roll, truncations and recovery cross segments.
        segment_bytes: 2048,
        index_interval_bytes: 256,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy {
            delete: true,
            compact: false,
        },
        ..LogConfig::default()
    };
    config.storage = disk.clone();
    // Nothing in the background: the simulation makes every call, so a seed replays.
    config.cleaner_enabled = false;
    config.retention_check_interval = Duration::from_secs(3600);
    config.checkpoint_interval = Duration::from_secs(3600);
    config.flush_interval = Duration::from_secs(3600);
    let manager = LogManager::open_with_clock(config, Arc::new(ManualClock::new(T0)))
        .map_err(|e| format!("open the log manager: {e}"))?;
    let log = manager
        .get_or_create(&partition())
        .map_err(|e| format!("open the partition's log: {e}"))?;
    // The simulation keeps the high watermark (`ReplicaSet`); the log is read to its end.
    log.set_high_watermark_follows_end(true);
    Ok((manager, log))
}

impl RealLog {
    /// A log in `dir` (created), on a disk whose torn writes `seed` decides.
    pub(super) fn create(dir: &Path, seed: u64) -> Result<RealLog, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let disk = SimulatedDisk::new(dir, seed).map_err(|e| e.to_string())?;
        let (manager, log) = open(dir, &disk)?;
        Ok(RealLog {
            disk,
            dir: dir.to_path_buf(),
            manager: Some(manager),
            log,
        })
    }

    fn check(&self) -> Result<(), String> {
        self.log
            .check_invariants()
            .map_err(|e| format!("log invariants: {e}"))
    }
}

fn err(what: &str) -> impl Fn(sluice_log::LogError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl ReplicaLog for RealLog {
    type Copied = Vec<u8>;

    fn leo(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// The log's recovery point. After a power loss it is where the last checkpoint put
    /// it (none is written here: 0), not the recovered end as in the model: what survived
    /// counts as synced only after the next flush. Fewer acknowledgements, never more.
    fn synced(&self) -> i64 {
        self.log.offsets().recovery_point
    }

    fn epochs(&self) -> LeaderEpochs {
        self.log.leader_epochs()
    }

    fn end_for(&self, epoch: i32, _leo: i64) -> Option<(i32, i64)> {
        self.log.end_offset_for_epoch(epoch)
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.log.latest_epoch()
    }

    fn append(&mut self, entry: Entry) -> Result<(), String> {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(OwnedRecord::new(
            None,
            Some(entry.value.to_be_bytes().to_vec()),
            T0,
        ));
        let mut bytes = builder.build().map_err(|e| e.to_string())?;
        let expected = self.leo();
        let info = self
            .log
            .append(&mut bytes, entry.epoch)
            .map_err(err("append"))?;
        if info.first_offset != expected {
            return Err(format!(
                "append at {} where the log ended at {expected}",
                info.first_offset
            ));
        }
        self.check()
    }

    fn begin_epoch(&mut self, epoch: i32) -> Result<(), String> {
        self.log
            .begin_leader_epoch(epoch)
            .map_err(err("begin_leader_epoch"))
    }

    fn read_from(&self, offset: i64) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        let mut at = offset;
        while at < self.leo() {
            let read = self
                .log
                .read_for_replica(at, 64 * 1024)
                .map_err(err("read_for_replica"))?;
            let Some(region) = read.region else {
                return Err(format!(
                    "read_for_replica at {at} gave nothing; the log ends at {}",
                    self.leo()
                ));
            };
            let chunk = region.read_to_vec().map_err(|e| e.to_string())?;
            for batch in Batches::new(&chunk) {
                let batch = batch.map_err(|e| format!("a torn batch at {at}: {e}"))?;
                at = batch.next_offset();
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    fn append_copied(&mut self, copied: Vec<u8>) -> Result<(), String> {
        if copied.is_empty() {
            return Ok(());
        }
        let records = ReplicatedRecords::validate(&copied).map_err(err("copied records"))?;
        self.log
            .append_replicated(&records)
            .map_err(err("append_replicated"))?;
        self.check()
    }

    fn truncate(&mut self, to: i64) -> Result<(), String> {
        self.log
            .truncate_to(to.max(0))
            .map_err(err("truncate_to"))?;
        self.check()
    }

    fn sync(&mut self) -> Result<(), String> {
        self.log.flush().map_err(err("flush"))
    }

    fn power_loss(&mut self) -> Result<(), String> {
        self.disk.power_off();
        // What a process killed with its machine leaves: nothing more reaches the disk.
        drop(self.manager.take());
        self.disk.restart().map_err(|e| e.to_string())?;
        let (manager, log) = open(&self.dir, &self.disk)?;
        self.manager = Some(manager);
        self.log = log;
        self.check()
    }

    fn clear(&mut self) -> Result<(), String> {
        self.log.restart_at(0).map_err(err("restart_at"))?;
        self.check()
    }

    fn entries(&self) -> Result<Vec<Entry>, String> {
        let start = self.log.offsets().log_start_offset;
        if start != 0 {
            return Err(format!("the log starts at {start}, not 0"));
        }
        decode(&self.read_from(start)?)
    }

    fn entry_at(&self, offset: i64) -> Result<Option<Entry>, String> {
        if offset >= self.leo() {
            return Ok(None);
        }
        let read = self
            .log
            .read_for_replica(offset, 1)
            .map_err(err("read_for_replica"))?;
        let Some(region) = read.region else {
            return Ok(None);
        };
        let bytes = region.read_to_vec().map_err(|e| e.to_string())?;
        Ok(decode(&bytes)?.first().copied())
    }
}

/// The entries of whole batches (one record each).
fn decode(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for batch in Batches::new(bytes) {
        let batch = batch.map_err(|e| format!("a torn batch: {e}"))?;
        let epoch = batch.partition_leader_epoch();
        let records = batch
            .records(1 << 20)
            .map_err(|e| format!("undecodable batch at {}: {e}", batch.base_offset()))?;
        for record in records.iter() {
            let value = record
                .value
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .ok_or_else(|| format!("a record at {} without its value", batch.base_offset()))?;
            entries.push(Entry {
                epoch,
                value: u64::from_be_bytes(value),
            });
        }
    }
    Ok(entries)
}
