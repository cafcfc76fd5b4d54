//! `sluice bench log`: the storage engine against the disk it runs on.
//!
//! For each batch size, in one run and on the same directory: a plain sequential `write()`
//! loop (the ceiling), log appends without fsync, log appends with group commit for N
//! concurrent writers (each waits until its batch is durable before sending the next), and a
//! sequential read of the appended log from the page cache.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_log::{FlushPolicy, LogConfig, LogManager, ManagerConfig, TopicPartition};
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord};

use crate::size::{format_size, parse_size};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice bench log --dir /var/lib/sluice/bench --total 1GiB --writers 1,8,64"
)]
pub struct LogBenchArgs {
    /// Directory for the benchmark's files, on the disk to measure; removed afterwards.
    #[arg(long, default_value = "./sluice-bench-data")]
    dir: PathBuf,
    /// Bytes written by each measurement.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    total: u64,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "16KiB,1MiB", value_parser = parse_size)]
    batch_sizes: Vec<u64>,
    /// Concurrent writer counts for the group-commit runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    writers: Vec<usize>,
    /// All writers append to one partition (default: one partition per writer).
    #[arg(long)]
    shared_partition: bool,
    /// Group-commit rounds covering at least this many partitions use one syncfs (0: never).
    #[arg(long, default_value_t = 0)]
    syncfs_threshold: usize,
    /// Sync worker threads (concurrent fdatasyncs).
    #[arg(long, default_value_t = 64)]
    sync_threads: usize,
    /// Runs of the write() loop and of the no-fsync append, alternated; the median is shown.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Also measure appends as an idempotent producer against the same appends without a
    /// producer id (both rewrite sequence and CRC per batch), alternated, median shown.
    #[arg(long)]
    idempotent: bool,
    /// Print one JSON object per measurement instead of a table.
    #[arg(long)]
    json: bool,
}

struct Measurement {
    name: String,
    bytes: u64,
    elapsed: Duration,
    detail: String,
    json_extra: String,
}

impl Measurement {
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

pub fn run(args: &LogBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.total > 0, "--total must be positive");
    anyhow::ensure!(
        !args.batch_sizes.is_empty(),
        "--batch-sizes needs at least one size"
    );
    if args.dir.exists() {
        anyhow::bail!(
            "{} exists; give a directory that does not (it is removed afterwards)",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let result = run_all(args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn run_all(args: &LogBenchArgs) -> anyhow::Result<()> {
    if !args.json {
        println!(
            "sluice bench log: {} per run in {} ({} cores)",
            format_size(args.total),
            args.dir.display(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    for &batch_size in &args.batch_sizes {
        let batch = make_batch(batch_size as usize)?;
        let count = (args.total / batch.len() as u64).max(1);
        if !args.json {
            println!(
                "\nbatch {} ({} bytes, {} batches per run)",
                format_size(batch_size),
                batch.len(),
                count
            );
        }
        // First-touch page allocation (expensive on a VM) must not bias whichever runs first.
        plain_write_loop(&args.dir, &batch, count)?;
        let mut plains = Vec::new();
        let mut appends = Vec::new();
        let mut read = None;
        for _ in 0..args.repeat.max(1) {
            plains.push(plain_write_loop(&args.dir, &batch, count)?);
            let (append, read_back) = append_without_fsync(&args.dir, &batch, count)?;
            appends.push(append);
            read = Some(read_back);
        }
        let plain = median(plains);
        let append = median(appends);
        report(args, batch_size, &plain, None);
        report(
            args,
            batch_size,
            &append,
            Some((&plain, "of write() loop", 85.0)),
        );
        for &writers in &args.writers {
            let raw = raw_durable_writes(&args.dir, &batch, count, writers)?;
            report(args, batch_size, &raw, None);
            let group = group_commit(args, &batch, count, writers)?;
            report(
                args,
                batch_size,
                &group,
                Some((&append, "of no-fsync append", 60.0)),
            );
        }
        if let Some(read) = read {
            report(args, batch_size, &read, None);
        }
        if args.idempotent {
            let mut plain = Vec::new();
            let mut idempotent = Vec::new();
            for _ in 0..args.repeat.max(1) {
                plain.push(sequenced_appends(
                    &args.dir,
                    batch_size as usize,
                    count,
                    false,
                )?);
                idempotent.push(sequenced_appends(
                    &args.dir,
                    batch_size as usize,
                    count,
                    true,
                )?);
            }
            let plain = median(plain);
            report(args, batch_size, &plain, None);
            report(
                args,
                batch_size,
                &median(idempotent),
                Some((&plain, "of the same without producer id", 95.0)),
            );
        }
    }
    Ok(())
}

/// The run with the median throughput.
fn median(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by(|a, b| a.mb_per_sec().total_cmp(&b.mb_per_sec()));
    let total = runs.len();
    let (low, high) = (runs[0].mb_per_sec(), runs[total - 1].mb_per_sec());
    let mut chosen = runs.swap_remove(total / 2);
    if total > 1 {
        chosen.detail = format!("  [median of {total}, range {low:.0}-{high:.0}]");
    }
    chosen
}

fn report(
    args: &LogBenchArgs,
    batch_size: u64,
    m: &Measurement,
    against: Option<(&Measurement, &str, f64)>,
) {
    let ratio = against.map(|(base, _, _)| 100.0 * m.mb_per_sec() / base.mb_per_sec());
    if args.json {
        println!(
            "{{\"bench\":\"log\",\"batch_size\":{batch_size},\"measurement\":\"{}\",\"bytes\":{},\"seconds\":{:.4},\"mb_per_s\":{:.1}{}{}}}",
            m.name,
            m.bytes,
            m.elapsed.as_secs_f64(),
            m.mb_per_sec(),
            ratio.map_or(String::new(), |r| format!(
                ",\"percent_of_baseline\":{r:.1}"
            )),
            m.json_extra,
        );
        return;
    }
    let comparison = match (against, ratio) {
        (Some((_, what, goal)), Some(r)) => format!("{r:5.1}% {what} (goal >= {goal}%)"),
        _ => String::new(),
    };
    println!(
        "  {:<34} {:>9.1} MB/s  {comparison}{}",
        m.name,
        m.mb_per_sec(),
        m.detail
    );
}

/// A batch of about `size` bytes of incompressible 1000-byte records.
fn make_batch(size: usize) -> anyhow::Result<Vec<u8>> {
    make_producer_batch(size, None)
}

/// Like [`make_batch`], written by `producer` (id, epoch) when given.
fn make_producer_batch(size: usize, producer: Option<(i64, i16)>) -> anyhow::Result<Vec<u8>> {
    let records = (size / 1010).max(1);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut builder = BatchBuilder::new(Compression::None);
    if let Some((id, epoch)) = producer {
        builder = builder.producer(id, epoch, 0);
    }
    for _ in 0..records {
        let value: Vec<u8> = (0..1000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        builder.push(OwnedRecord::new(None, Some(value), 1_700_000_000_000));
    }
    Ok(builder.build()?)
}

fn sync_disk() {
    // Start every run with no dirty pages left by the previous one.
    let _ = std::process::Command::new("sync").status();
}

fn plain_write_loop(dir: &Path, batch: &[u8], count: u64) -> anyhow::Result<Measurement> {
    sync_disk();
    let path = dir.join("plain-write-loop.bin");
    let mut file = File::create(&path)?;
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(batch)?;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Measurement {
        name: "write() loop".into(),
        bytes: count * batch.len() as u64,
        elapsed,
        detail: String::new(),
        json_extra: String::new(),
    })
}

/// The disk's own capability for the same pattern: each writer appends to its own file with
/// write() and waits for fdatasync, no log involved.
fn raw_durable_writes(
    dir: &Path,
    batch: &[u8],
    count: u64,
    writers: usize,
) -> anyhow::Result<Measurement> {
    sync_disk();
    let remaining = Arc::new(AtomicI64::new(count as i64));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let path = dir.join(format!("raw-{w}.bin"));
            let remaining = remaining.clone();
            let batch = batch.to_vec();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut file = File::create(&path)?;
                while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                    file.write_all(&batch)?;
                    file.sync_data()?;
                }
                drop(file);
                std::fs::remove_file(&path)?;
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(Measurement {
        name: format!(
            "write()+fdatasync loop, {writers} file{}",
            if writers == 1 { "" } else { "s" }
        ),
        bytes: count * batch.len() as u64,
        elapsed: start.elapsed(),
        detail: String::new(),
        json_extra: format!(",\"writers\":{writers}"),
    })
}

fn manager(
    dir: &Path,
    policy: FlushPolicy,
    syncfs_threshold: usize,
    sync_threads: usize,
) -> anyhow::Result<LogManager> {
    let mut config = ManagerConfig::new(dir);
    config.flush_policy = policy;
    config.syncfs_threshold = syncfs_threshold;
    config.sync_threads = sync_threads;
    // Keep background flushes out of the measurement.
    config.flush_interval = Duration::from_secs(3600);
    config.default_log_config = LogConfig {
        max_message_bytes: 64 << 20,
        ..LogConfig::default()
    };
    Ok(LogManager::open(config)?)
}

/// Appends without fsync, every batch with the next sequence number and a new CRC: as an
/// idempotent producer (producer id 1, so every append goes through the sequence check) or
/// with no producer id (same rewriting, no check). The difference is what idempotence costs
/// the append path.
fn sequenced_appends(
    dir: &Path,
    batch_size: usize,
    count: u64,
    idempotent: bool,
) -> anyhow::Result<Measurement> {
    sync_disk();
    let data = dir.join("sequenced");
    let manager = manager(&data, FlushPolicy::Interval, 0, 1)?;
    let log = manager.get_or_create(&TopicPartition::new("bench", 0))?;
    let mut buf = make_producer_batch(batch_size, idempotent.then_some((1, 0)))?;
    let records = i32::try_from((batch_size / 1010).max(1))?;
    let mut sequence = 0i32;
    let start = Instant::now();
    for _ in 0..count {
        sluice_record::set_base_sequence(&mut buf, if idempotent { sequence } else { -1 });
        let info = log.append(&mut buf, 0)?;
        anyhow::ensure!(!info.duplicate, "sequence {sequence} taken for a duplicate");
        // Sequences wrap from i32::MAX to 0, as producers do.
        sequence = ((i64::from(sequence) + i64::from(records)) % (i64::from(i32::MAX) + 1)) as i32;
    }
    let elapsed = start.elapsed();
    drop(log);
    drop(manager);
    std::fs::remove_dir_all(&data)?;
    Ok(Measurement {
        name: if idempotent {
            "append, idempotent producer".into()
        } else {
            "append, sequence rewritten, no pid".into()
        },
        bytes: count * buf.len() as u64,
        elapsed,
        detail: String::new(),
        json_extra: String::new(),
    })
}

fn append_without_fsync(
    dir: &Path,
    batch: &[u8],
    count: u64,
) -> anyhow::Result<(Measurement, Measurement)> {
    sync_disk();
    let data = dir.join("append");
    let manager = manager(&data, FlushPolicy::Interval, 0, 1)?;
    let log = manager.get_or_create(&TopicPartition::new("bench", 0))?;
    let mut buf = batch.to_vec();
    let start = Instant::now();
    for _ in 0..count {
        log.append(&mut buf, 0)?;
    }
    let elapsed = start.elapsed();
    let bytes = count * batch.len() as u64;
    let append = Measurement {
        name: "log append, no fsync".into(),
        bytes,
        elapsed,
        detail: String::new(),
        json_extra: String::new(),
    };

    // Sequential read of what was just written, from the page cache.
    let mut read_buf = vec![0u8; 2 << 20];
    let mut offset = 0;
    let mut read_bytes = 0u64;
    let start = Instant::now();
    while let Some(region) = log.read(offset, 1 << 20)?.region {
        let len = region.len() as usize;
        if read_buf.len() < len {
            read_buf.resize(len, 0);
        }
        region
            .file()
            .read_exact_at(&mut read_buf[..len], region.position())?;
        for batch in Batches::new(&read_buf[..len]) {
            offset = batch?.next_offset();
        }
        read_bytes += len as u64;
    }
    let read_elapsed = start.elapsed();
    anyhow::ensure!(
        read_bytes == bytes,
        "read back {read_bytes} of {bytes} bytes"
    );
    let read = Measurement {
        name: "sequential read (page cache)".into(),
        bytes: read_bytes,
        elapsed: read_elapsed,
        detail: String::new(),
        json_extra: String::new(),
    };
    drop(log);
    drop(manager);
    std::fs::remove_dir_all(&data)?;
    Ok((append, read))
}

fn group_commit(
    args: &LogBenchArgs,
    batch: &[u8],
    count: u64,
    writers: usize,
) -> anyhow::Result<Measurement> {
    sync_disk();
    let data = args.dir.join(format!("group-commit-{writers}"));
    let manager = manager(
        &data,
        FlushPolicy::GroupCommit,
        args.syncfs_threshold,
        args.sync_threads,
    )?;
    let partitions = if args.shared_partition { 1 } else { writers };
    let logs = (0..partitions)
        .map(|p| manager.get_or_create(&TopicPartition::new("bench", p as i32)))
        .collect::<Result<Vec<_>, _>>()?;
    let remaining = Arc::new(AtomicI64::new(count as i64));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let log = logs[w % partitions].clone();
            let remaining = remaining.clone();
            let mut buf = batch.to_vec();
            std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
                let mut latencies = Vec::new();
                while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                    let began = Instant::now();
                    let info = log.append(&mut buf, 0)?;
                    log.wait_durable(info.last_offset + 1).wait()?;
                    latencies.push(began.elapsed().as_micros() as u32);
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??,
        );
    }
    let elapsed = start.elapsed();
    let stats = manager.flush_stats();
    drop(logs);
    drop(manager);
    std::fs::remove_dir_all(&data)?;
    latencies.sort_unstable();
    let percentile =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let per_round = stats.durable_waits as f64 / stats.rounds.max(1) as f64;
    let sync_kind = if stats.syncfs_calls > 0 {
        "syncfs"
    } else {
        "fdatasync"
    };
    let name = format!(
        "group commit, {writers} writer{}{}",
        if writers == 1 { "" } else { "s" },
        if args.shared_partition {
            " (1 partition)"
        } else {
            ""
        }
    );
    Ok(Measurement {
        name,
        bytes: count * batch.len() as u64,
        elapsed,
        detail: format!(
            "  [{per_round:.1} batches/round, {sync_kind}, latency p50 {:.2} ms p99 {:.2} ms]",
            percentile(0.5),
            percentile(0.99)
        ),
        json_extra: format!(
            ",\"writers\":{writers},\"batches_per_round\":{per_round:.2},\"rounds\":{},\"syncfs_calls\":{},\"fdatasyncs\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3}",
            stats.rounds,
            stats.syncfs_calls,
            stats.fdatasyncs,
            percentile(0.5),
            percentile(0.99)
        ),
    })
}
