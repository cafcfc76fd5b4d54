//! Append latency while the log does its slow maintenance: a compaction pass swapping
//! cleaned segments in, or DeleteRecords deleting segments. One thread appends a small batch
//! every `--interval-us` and times each `append` call; another runs the maintenance. The
//! figures show how long appends wait on the partition lock (docs/BENCHMARKS.md).
//!
//!     cargo run --release -p sluice-log --example append_latency -- [--dir D] [--rounds N]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sluice_log::{CleanupPolicy, LogConfig, LogManager, ManagerConfig, TopicPartition};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

const SEGMENT_BYTES: u32 = 8 << 20;
const KEYS: u32 = 20_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut rounds = 3u32;
    let mut interval = Duration::from_micros(200);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next(),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N");
            }
            "--interval-us" => {
                interval = Duration::from_micros(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--interval-us N"),
                );
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let base = match dir {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("sluice-append-latency-{}", std::process::id())),
    };
    for (name, compact) in [("compaction swap", true), ("DeleteRecords", false)] {
        let mut all = Vec::new();
        for round in 0..rounds {
            let dir = base.join(format!(
                "{}-{round}",
                if compact { "compact" } else { "delete" }
            ));
            let _ = std::fs::remove_dir_all(&dir);
            all.extend(run(&dir, compact, interval));
            let _ = std::fs::remove_dir_all(&dir);
        }
        report(name, &mut all);
    }
}

fn log_config(compact: bool) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        cleanup_policy: CleanupPolicy {
            delete: !compact,
            compact,
        },
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn batch(first_key: u32, records: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..records {
        let key = (first_key + i) % KEYS;
        builder.push(OwnedRecord::new(
            Some(format!("key-{key:08}").into_bytes()),
            Some(vec![b'v'; 100]),
            1_700_000_000_000,
        ));
    }
    builder.build().expect("batch")
}

/// Fills a log with segments to clean or delete, then times appends while the maintenance
/// runs. Returns the append latencies observed during the maintenance.
fn run(dir: &std::path::Path, compact: bool, interval: Duration) -> Vec<Duration> {
    let mut config = ManagerConfig::new(dir);
    config.default_log_config = log_config(compact);
    config.cleaner_enabled = false;
    let manager = Arc::new(LogManager::open(config).expect("open"));
    let tp = TopicPartition::new("latency", 0);
    let log = manager.get_or_create(&tp).expect("log");
    // ~12 segments; every key written many times, so that cleaning rewrites everything.
    let mut key = 0;
    while log.offsets().size_bytes < 12 * u64::from(SEGMENT_BYTES) {
        let mut bytes = batch(key, 100);
        log.append(&mut bytes, 0).expect("append");
        key += 100;
    }
    log.flush().expect("flush");
    let done = Arc::new(AtomicBool::new(false));
    let appender = {
        let log = log.clone();
        let done = done.clone();
        thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut key = 0;
            while !done.load(Ordering::SeqCst) {
                let mut bytes = batch(key, 10);
                key += 10;
                let started = Instant::now();
                log.append(&mut bytes, 0).expect("append");
                latencies.push(started.elapsed());
                thread::sleep(interval);
            }
            latencies
        })
    };
    thread::sleep(Duration::from_millis(100));
    if compact {
        manager.clean_now(true);
    } else {
        let end = log.offsets().log_end_offset;
        for step in 1..=10 {
            manager
                .delete_records(&tp, end * step / 12)
                .expect("delete records");
            thread::sleep(Duration::from_millis(20));
        }
    }
    done.store(true, Ordering::SeqCst);
    let latencies = appender.join().expect("appender");
    drop(log);
    manager.shutdown().expect("shutdown");
    latencies
}

fn report(name: &str, latencies: &mut [Duration]) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let over_1ms = latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(1))
        .count();
    println!(
        "{name}: {} appends, p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}, over 1 ms: {over_1ms}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or_default(),
    );
}
