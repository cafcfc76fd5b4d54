//! Helpers shared by the log's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_log::{Clock, Log, LogConfig, LogManager, ManagerConfig, TopicPartition};
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord, RecordBatch};

/// A batch of `records` records whose values encode `tag` and the record index, so that a
/// reader can tell batches apart.
pub fn batch(records: usize, value_len: usize, timestamp: i64, tag: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..records {
        let mut value = format!("{tag}:{i}:").into_bytes();
        value.resize(value_len.max(value.len()), b'x');
        builder.push(OwnedRecord::new(
            Some(tag.to_be_bytes().to_vec()),
            Some(value),
            timestamp,
        ));
    }
    builder.build().expect("non-empty batch")
}

/// The tag a batch built by [`batch`] carries.
pub fn tag_of(batch: &RecordBatch<'_>) -> u64 {
    let records = batch.records(1 << 24).expect("decodable batch");
    let first = records.iter().next().expect("non-empty batch");
    u64::from_be_bytes(first.key.expect("key").try_into().expect("8-byte key"))
}

pub fn manager_config(dir: &Path, log_config: LogConfig) -> ManagerConfig {
    let mut config = ManagerConfig::new(dir);
    config.default_log_config = log_config;
    // Background work is driven explicitly by the tests.
    config.retention_check_interval = Duration::from_secs(3600);
    config.checkpoint_interval = Duration::from_secs(3600);
    config.flush_interval = Duration::from_secs(3600);
    config
}

pub fn open(dir: &Path, log_config: LogConfig, clock: Arc<dyn Clock>) -> LogManager {
    LogManager::open_with_clock(manager_config(dir, log_config), clock).expect("open manager")
}

pub fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("test-topic", partition)
}

/// Every batch from the log start to the log end, as stored.
pub fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.offsets().log_start_offset;
    loop {
        let result = log.read(offset, 64 * 1024).expect("read");
        let Some(region) = result.region else { break };
        let bytes = region.read_to_vec().expect("region readable");
        for batch in Batches::new(&bytes) {
            let batch = batch.expect("whole batches");
            batch.validate().expect("intact batch");
            offset = batch.next_offset();
            out.push(batch.as_bytes().to_vec());
        }
    }
    out
}

/// Base offsets of the segment files in a partition directory.
pub fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .expect("partition dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".log")?;
            stem.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// xorshift64*: enough randomness for fault injection without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        // xorshift never leaves 0; mixed so that neighbouring seeds differ at once.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A generator seeded from `SLUICE_TEST_SEED` or the clock; the seed is printed so that a
/// failure can be replayed.
pub fn rng() -> Rng {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("SLUICE_TEST_SEED={seed}");
    Rng(seed)
}

/// Segments of 4 KiB with an index entry every 256 bytes: a few batches roll a segment.
pub fn small_segments_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}
