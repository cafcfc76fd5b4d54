//! Crash safety with a real process kill: a child process appends with group commit from
//! several threads and prints every batch once it is reported durable; the parent kills it
//! with SIGKILL at a random moment, reopens the directory (recovery) and checks that every
//! batch reported durable is present, intact and at its offset, that offsets are contiguous
//! and that nothing corrupt is served. Repeated over many rounds on the same directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{batch, read_all, tag_of, tp};
use sluice_log::{LogConfig, LogManager, ManagerConfig, SystemClock};
use sluice_record::RecordBatch;

const CHILD_DIR_ENV: &str = "SLUICE_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "SLUICE_CRASH_CHILD_ROUND";
const ROUNDS: u64 = 24;
const PARTITIONS: i32 = 2;
const WRITERS: u64 = 4;

fn log_config() -> LogConfig {
    // Small segments so that kills also land around segment rolls.
    LogConfig {
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    }
}

/// Tag layout: round (16 bits) | writer (8 bits) | sequence (32 bits).
fn tag(round: u64, writer: u64, seq: u64) -> u64 {
    (round << 40) | (writer << 32) | seq
}

#[test]
#[ignore = "child process of sigkill_never_loses_a_durable_batch, which runs it"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("started by the parent test");
    let round: u64 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let mut config = ManagerConfig::new(&dir);
    config.default_log_config = log_config();
    let manager = LogManager::open_with_clock(config, Arc::new(SystemClock)).unwrap();
    let logs: Vec<_> = (0..PARTITIONS)
        .map(|p| manager.get_or_create(&tp(p)).unwrap())
        .collect();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    writeln!(out.lock().unwrap(), "ready").unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = logs[(writer % PARTITIONS as u64) as usize].clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    let records = 1 + (seq % 7) as usize;
                    let value_len = 50 + ((seq * 37) % 1500) as usize;
                    let mut b = batch(records, value_len, 0, tag(round, writer, seq));
                    let info = log.append(&mut b, 0).unwrap();
                    log.wait_durable(info.last_offset + 1).wait().unwrap();
                    let partition = log.topic_partition().partition;
                    let line = format!(
                        "durable {partition} {} {} {}",
                        tag(round, writer, seq),
                        info.first_offset,
                        info.last_offset
                    );
                    writeln!(out.lock().unwrap(), "{line}").unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[derive(Debug, Clone, Copy)]
struct Durable {
    partition: i32,
    tag: u64,
    first: i64,
    last: i64,
}

fn parse_durable(line: &str) -> Option<Durable> {
    let mut fields = line.strip_prefix("durable ")?.split(' ');
    Some(Durable {
        partition: fields.next()?.parse().ok()?,
        tag: fields.next()?.parse().ok()?,
        first: fields.next()?.parse().ok()?,
        last: fields.next()?.parse().ok()?,
    })
}

fn run_child_until_killed(dir: &std::path::Path, round: u64, run_for: Duration) -> Vec<Durable> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // libtest prints its own lines first.
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.ends_with("ready") => break,
            Ok(_) => {}
            Err(err) => panic!("round {round}: child did not start: {err}"),
        }
    }
    std::thread::sleep(run_for);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "round {round}: child exited by itself: {status}"
    );
    reader.join().unwrap();
    lines
        .try_iter()
        .filter_map(|line| parse_durable(&line))
        .collect()
}

/// Reopens the directory (recovering it) and checks every durable batch.
fn verify(dir: &std::path::Path, durable: &[Durable], round: u64) {
    let mut config = ManagerConfig::new(dir);
    config.default_log_config = log_config();
    let manager = LogManager::open_with_clock(config, Arc::new(SystemClock)).unwrap();
    for partition in 0..PARTITIONS {
        let log = manager.get(&tp(partition)).unwrap();
        let mut by_offset = std::collections::HashMap::new();
        let mut next = 0;
        let mut last_seq_of_writer = std::collections::HashMap::new();
        for bytes in read_all(&log) {
            let b = RecordBatch::parse(&bytes).unwrap();
            assert_eq!(
                b.base_offset(),
                next,
                "round {round}: gap or overlap in partition {partition}"
            );
            next = b.next_offset();
            let tag = tag_of(&b);
            by_offset.insert(b.base_offset(), (tag, b.last_offset()));
            let writer = tag >> 32;
            if let Some(previous) = last_seq_of_writer.insert(writer, tag) {
                assert!(
                    tag > previous,
                    "round {round}: writer {writer} out of order"
                );
            }
        }
        assert_eq!(log.log_end_offset(), next);
        for d in durable.iter().filter(|d| d.partition == partition) {
            assert_eq!(
                by_offset.get(&d.first),
                Some(&(d.tag, d.last)),
                "round {round}: durable batch {d:?} missing or different after recovery"
            );
        }
    }
    // Dropped without shutdown: the next child recovers again.
}

#[test]
fn sigkill_never_loses_a_durable_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::rng();
    let mut durable = Vec::new();
    for round in 0..ROUNDS {
        let run_for = Duration::from_millis(20 + rng.below(300));
        let reported = run_child_until_killed(dir.path(), round, run_for);
        durable.extend(reported);
        verify(dir.path(), &durable, round);
    }
    assert!(
        durable.len() as u64 >= ROUNDS * 10,
        "only {} batches were reported durable: the test exercised too little",
        durable.len()
    );
}

#[test]
fn the_durable_line_format_parses() {
    let d = parse_durable("durable 1 77 10 12").unwrap();
    assert_eq!((d.partition, d.tag, d.first, d.last), (1, 77, 10, 12));
    assert!(parse_durable("ready").is_none());
}
