//! `sluice bench cleaner`: log compaction on the disk it runs on.
//!
//! Fills a compacted log with `keys` keys each updated `updates` times, then measures:
//! 1. one cleaning pass alone: MB/s of dirty log processed (offset map + rewrite + swap);
//! 2. appends (no fsync, 1 KiB records in 100-record batches) to another partition of the
//!    same log manager, first with the cleaner idle, then while a cleaning pass of a freshly
//!    dirtied log runs beside them: the produce throughput the cleaner costs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_log::{
    CleanerSettings, CleanupPolicy, FlushPolicy, Log, LogConfig, LogManager, ManagerConfig,
    TopicPartition,
};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

use crate::size::{format_size, parse_size};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice bench cleaner --dir /var/lib/sluice/bench --keys 100000 --updates 20"
)]
pub struct CleanerBenchArgs {
    /// Directory for the benchmark's files, on the disk to measure; removed afterwards.
    #[arg(long, default_value = "./sluice-bench-data")]
    dir: PathBuf,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Versions written per key.
    #[arg(long, default_value_t = 20)]
    updates: u64,
    /// Value size of each record.
    #[arg(long, default_value = "100B", value_parser = parse_size)]
    value_size: u64,
    /// Codec of the written batches: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    codec: String,
    /// segment.bytes of the compacted log.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    segment_bytes: u64,
    /// Cleaner I/O budget (log.cleaner.io.max.bytes.per.second); unlimited by default.
    #[arg(long, value_parser = parse_size)]
    throttle: Option<u64>,
    /// Print one JSON object per measurement instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &CleanerBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.keys > 0 && args.updates > 0,
        "--keys and --updates must be positive"
    );
    anyhow::ensure!(
        args.segment_bytes >= 1024 && args.segment_bytes <= i32::MAX as u64,
        "--segment-bytes must be in [1KiB, 2GiB)"
    );
    let codec = Compression::ALL
        .into_iter()
        .find(|c| c.name() == args.codec)
        .with_context(|| {
            format!(
                "unknown codec {:?}: none, gzip, snappy, lz4, zstd",
                args.codec
            )
        })?;
    if args.dir.exists() {
        anyhow::bail!(
            "{} exists; give a directory that does not (it is removed afterwards)",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let result = run_all(args, codec);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn manager(dir: &Path, segment_bytes: u32) -> anyhow::Result<LogManager> {
    let mut config = ManagerConfig::new(dir);
    config.flush_policy = FlushPolicy::Interval;
    config.flush_interval = Duration::from_secs(3600);
    config.cleaner_enabled = false;
    config.default_log_config = LogConfig {
        segment_bytes,
        retention_ms: -1,
        max_message_bytes: 64 << 20,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        ..LogConfig::default()
    };
    Ok(LogManager::open(config)?)
}

/// Writes every key `updates` times (keys in order, 100 records per batch), then one batch
/// past `segment.bytes` so that all of it is in inactive segments. Returns bytes written.
fn fill(log: &Log, args: &CleanerBenchArgs, codec: Compression, round: u64) -> anyhow::Result<u64> {
    let value = vec![b'v'; args.value_size as usize];
    let mut bytes = 0u64;
    for update in 0..args.updates {
        let mut key = 0;
        while key < args.keys {
            let mut builder = BatchBuilder::new(codec);
            for k in key..(key + 100).min(args.keys) {
                let mut v = value.clone();
                let tag = format!("{round}-{update}-");
                let n = tag.len().min(v.len());
                v[..n].copy_from_slice(&tag.as_bytes()[..n]);
                builder.push(OwnedRecord::new(
                    Some(format!("key-{k:012}").into_bytes()),
                    Some(v),
                    1_700_000_000_000,
                ));
            }
            key += 100;
            let mut batch = builder.build()?;
            bytes += batch.len() as u64;
            log.append(&mut batch, 0)?;
        }
    }
    // Two batches over half a segment each: the second always lands in a new segment.
    for _ in 0..2 {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(OwnedRecord::new(
            Some(b"roll".to_vec()),
            Some(vec![0; log.config().segment_bytes as usize / 2 + 1]),
            1_700_000_000_000,
        ));
        log.append(&mut builder.build()?, 0)?;
    }
    Ok(bytes)
}

/// Appends 100 x 1 KiB batches to `log` until `stop`; returns messages per second.
fn append_until(log: &Log, stop: &AtomicBool, at_least: Duration) -> anyhow::Result<(f64, f64)> {
    let mut builder = BatchBuilder::new(Compression::None);
    for i in 0..100u32 {
        builder.push(OwnedRecord::new(
            Some(i.to_be_bytes().to_vec()),
            Some(vec![b'p'; 1024]),
            1_700_000_000_000,
        ));
    }
    let batch = builder.build()?;
    let started = Instant::now();
    let mut messages = 0u64;
    let mut bytes = 0u64;
    while !stop.load(Ordering::SeqCst) || started.elapsed() < at_least {
        let mut copy = batch.clone();
        log.append(&mut copy, 0)?;
        messages += 100;
        bytes += batch.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((messages as f64 / seconds, bytes as f64 / seconds / 1e6))
}

fn sync_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn run_all(args: &CleanerBenchArgs, codec: Compression) -> anyhow::Result<()> {
    let manager = Arc::new(manager(&args.dir, args.segment_bytes as u32)?);
    let settings = CleanerSettings {
        io_max_bytes_per_second: args.throttle.map_or(f64::INFINITY, |t| t as f64),
        ..CleanerSettings::default()
    };
    let compacted = manager.get_or_create(&TopicPartition::new("compacted", 0))?;
    let written = fill(&compacted, args, codec, 0)?;
    let before = compacted.offsets().size_bytes;
    let never = || false;
    let report = compacted
        .clean(true, &settings, &never)?
        .context("the filled log had nothing to clean")?;
    let after = compacted.offsets().size_bytes;
    let clean_mb_s = report.dirty_bytes as f64 / report.elapsed.as_secs_f64() / 1e6;

    // Produce beside an idle cleaner, then beside a cleaning pass.
    // Each produce phase starts with no dirty pages left (writeback throttling would
    // otherwise penalise whichever phase comes second) and lasts about as long as a pass.
    let target = manager.get_or_create(&TopicPartition::new("produce", 0))?;
    let idle_stop = AtomicBool::new(true);
    let phase = report.elapsed.max(Duration::from_secs(1));
    sync_disk();
    let (idle_msgs, idle_mb) = append_until(&target, &idle_stop, phase)?;
    fill(&compacted, args, codec, 1)?;
    sync_disk();
    let stop = Arc::new(AtomicBool::new(false));
    let cleaner = {
        let (compacted, stop) = (compacted.clone(), stop.clone());
        std::thread::spawn(move || {
            let never = || false;
            let result = compacted.clean(true, &settings, &never);
            stop.store(true, Ordering::SeqCst);
            result
        })
    };
    let (busy_msgs, busy_mb) = append_until(&target, &stop, Duration::ZERO)?;
    let second = cleaner
        .join()
        .map_err(|_| anyhow::anyhow!("cleaner thread panicked"))??
        .context("second pass had nothing to clean")?;

    if args.json {
        println!(
            "{{\"bench\":\"cleaner\",\"keys\":{},\"updates\":{},\"value_size\":{},\"codec\":\"{}\",\"dirty_bytes\":{},\"seconds\":{:.4},\"clean_mb_per_s\":{clean_mb_s:.1},\"size_before\":{before},\"size_after\":{after},\"records_removed\":{},\"produce_idle_msgs_per_s\":{idle_msgs:.0},\"produce_while_cleaning_msgs_per_s\":{busy_msgs:.0},\"second_pass_seconds\":{:.4}}}",
            args.keys,
            args.updates,
            args.value_size,
            codec.name(),
            report.dirty_bytes,
            report.elapsed.as_secs_f64(),
            report.records_removed,
            second.elapsed.as_secs_f64(),
        );
        return Ok(());
    }
    println!(
        "sluice bench cleaner: {} keys x {} updates, {} values, {} ({} written) in {} ({} cores)",
        args.keys,
        args.updates,
        format_size(args.value_size),
        codec.name(),
        format_size(written),
        args.dir.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  cleaning pass            {clean_mb_s:>9.1} MB/s of dirty log  ({} in {:.2} s, {} records removed, {} -> {})",
        format_size(report.dirty_bytes),
        report.elapsed.as_secs_f64(),
        report.records_removed,
        format_size(before),
        format_size(after)
    );
    println!("  produce, cleaner idle    {idle_msgs:>9.0} msgs/s  {idle_mb:>7.1} MB/s");
    println!(
        "  produce, while cleaning  {busy_msgs:>9.0} msgs/s  {busy_mb:>7.1} MB/s  ({:.0}% of idle; the pass took {:.2} s)",
        100.0 * busy_msgs / idle_msgs,
        second.elapsed.as_secs_f64()
    );
    Ok(())
}
