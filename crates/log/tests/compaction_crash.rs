//! Crash safety of compaction with real process deaths: a child process cleans a compacted
//! log in a loop and dies, either by SIGKILL at a random moment or by aborting itself at one
//! of the swap protocol's steps (fault injection). The parent reopens the directory after
//! every death and checks that the partition is consistent (every batch intact, offsets
//! increasing, log end unchanged) and still replays to the latest value of every key: no
//! record that compaction should keep was lost, and no replaced segment came back beside its
//! replacement.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read_all, tp};
use sluice_log::{
    CleanupPolicy, CrashPoint, LogConfig, LogManager, ManagerConfig, SystemClock, set_crash_point,
};
use sluice_record::{BatchBuilder, Compression, OwnedRecord, RecordBatch};

const CHILD_DIR_ENV: &str = "SLUICE_CLEANER_CRASH_DIR";
const CHILD_POINT_ENV: &str = "SLUICE_CLEANER_CRASH_POINT";
const CHILD_SKIP_ENV: &str = "SLUICE_CLEANER_CRASH_SKIP";
const ROUNDS: u64 = 30;
const KEYS: u64 = 300;
const WRITES_PER_ROUND: u64 = 1_500;
/// How long a child may take to start and recover before it reports ready.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(120);

const POINTS: [Option<CrashPoint>; 6] = [
    None,
    Some(CrashPoint::CleanedWritten),
    Some(CrashPoint::SwapEndWritten),
    Some(CrashPoint::Committed),
    Some(CrashPoint::OldPartlyDeleted),
    Some(CrashPoint::LogLive),
];

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        retention_ms: -1,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        ..LogConfig::default()
    }
}

fn manager_config(dir: &std::path::Path) -> ManagerConfig {
    let mut config = common::manager_config(dir, log_config());
    config.cleaner_enabled = false;
    config
}

#[test]
#[ignore = "child process of sigkill_during_cleaning_keeps_the_log_consistent, which runs it"]
fn cleaner_crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("started by the parent test");
    let point: usize = std::env::var(CHILD_POINT_ENV).unwrap().parse().unwrap();
    let manager =
        LogManager::open_with_clock(manager_config(dir.as_ref()), Arc::new(SystemClock)).unwrap();
    let skip: u32 = std::env::var(CHILD_SKIP_ENV).unwrap().parse().unwrap();
    // Every other child dies only while merging several segments into one, the case where
    // a half-done swap could leave old and new side by side.
    let min_group = if skip.is_multiple_of(2) { 2 } else { 1 };
    set_crash_point(POINTS[point], skip / 2, min_group);
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    loop {
        let reports = manager.clean_now(true);
        writeln!(out, "pass {}", reports.len()).unwrap();
    }
}

type Model = BTreeMap<String, Option<String>>;

fn append_round(manager: &LogManager, round: u64, rng: &mut common::Rng, model: &mut Model) {
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut written = 0;
    while written < WRITES_PER_ROUND {
        let count = 1 + rng.below(20);
        let codec = Compression::ALL[rng.below(5) as usize];
        let mut builder = BatchBuilder::new(codec);
        for i in 0..count {
            let key = format!("key-{}", rng.below(KEYS));
            let value =
                (rng.below(10) != 0).then(|| format!("r{round}-{written}-{i}-{}", "v".repeat(20)));
            model.insert(key.clone(), value.clone());
            builder.push(OwnedRecord::new(
                Some(key.into_bytes()),
                value.map(String::into_bytes),
                1_700_000_000_000,
            ));
        }
        let mut bytes = builder.build().unwrap();
        log.append(&mut bytes, 0).unwrap();
        written += count;
    }
    log.flush().unwrap();
}

/// Reopens (recovering) and checks the partition against the model.
fn verify(dir: &std::path::Path, model: &Model, end: i64, round: u64) -> LogManager {
    let manager = LogManager::open_with_clock(manager_config(dir), Arc::new(SystemClock)).unwrap();
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(log.log_end_offset(), end, "round {round}: log end moved");
    assert_eq!(
        log.offsets().log_start_offset,
        0,
        "round {round}: compaction moved the log start"
    );
    let mut replayed = Model::new();
    let mut last = -1;
    for bytes in read_all(&log) {
        let batch = RecordBatch::parse(&bytes).unwrap();
        for record in batch.records(1 << 24).unwrap().iter() {
            assert!(
                record.offset > last,
                "round {round}: offset {} after {last}",
                record.offset
            );
            last = record.offset;
            replayed.insert(
                String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            );
        }
    }
    assert_eq!(
        &replayed, model,
        "round {round}: log no longer replays to the model"
    );
    // The segment files themselves, in base-offset order, must hold increasing offsets: a
    // replaced segment left beside its replacement would overlap it (reads would hide that).
    let mut previous_end = -1;
    for base in common::segment_bases(log.dir()) {
        let path = log.dir().join(format!("{base:020}.log"));
        let bytes = std::fs::read(&path).unwrap();
        for batch in sluice_record::Batches::new(&bytes) {
            let batch = batch.unwrap();
            assert!(
                batch.base_offset() >= base && batch.base_offset() > previous_end,
                "round {round}: segment {base} overlaps the one before it (batch at {}, previous end {previous_end})",
                batch.base_offset()
            );
            previous_end = batch.last_offset();
        }
    }
    let leftovers: Vec<String> = std::fs::read_dir(log.dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".swap") || n.ends_with(".cleaned") || n.ends_with(".swapend"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "round {round}: recovery left {leftovers:?}"
    );
    manager
}

/// Runs the child until it dies; returns whether it aborted at its crash point by itself.
fn run_child(dir: &std::path::Path, point: usize, skip: u64, kill_after: Duration) -> bool {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "cleaner_crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_POINT_ENV, point.to_string())
        .env(CHILD_SKIP_ENV, skip.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut passes = 0;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("ready") {
                let _ = ready_tx.send(());
            }
            passes += usize::from(line.starts_with("pass"));
        }
        passes
    });
    // The kill timer starts when the child is ready, not at spawn: on a loaded machine the
    // child's start-up (exec, opening and recovering the log) alone can take longer than
    // the timer, and a child killed before it cleaned anything tests nothing.
    let ready = ready_rx.recv_timeout(CHILD_START_TIMEOUT).is_ok();
    if !ready {
        let _ = child.kill();
        let status = child.wait().unwrap();
        panic!("child never reported ready within {CHILD_START_TIMEOUT:?} (status {status})");
    }
    let deadline = Instant::now() + kill_after;
    let aborted = loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "child exited by itself: {status}");
            break true;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _passes = reader.join().unwrap();
    aborted
}

#[test]
fn sigkill_during_cleaning_keeps_the_log_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::rng();
    let mut model = Model::new();
    let mut aborted_at_point = 0;
    let mut manager =
        LogManager::open_with_clock(manager_config(dir.path()), Arc::new(SystemClock)).unwrap();
    for round in 0..ROUNDS {
        append_round(&manager, round, &mut rng, &mut model);
        let end = manager.get(&tp(0)).unwrap().log_end_offset();
        drop(manager); // no clean shutdown: the child recovers too
        let point = (round % POINTS.len() as u64) as usize;
        let kill_after = if point == 0 {
            Duration::from_millis(30 + rng.below(400))
        } else {
            // Ample time to reach the crash point on a loaded machine (it is usually reached
            // well within a second of the child being ready).
            Duration::from_secs(10)
        };
        // Crash at a random swap of the child's passes, not always the first (later swaps
        // merge several small cleaned segments into one).
        let skip = rng.below(8);
        if run_child(dir.path(), point, skip, kill_after) {
            aborted_at_point += 1;
        }
        manager = verify(dir.path(), &model, end, round);
    }
    assert!(
        aborted_at_point >= (ROUNDS as usize / POINTS.len()) * 3,
        "only {aborted_at_point} children reached their crash point: the test exercised too little"
    );
    // A final, uninterrupted pass compacts everything below the active segment.
    manager.clean_now(true);
    let log = manager.get(&tp(0)).unwrap();
    let first_dirty = log.cleaner_first_dirty_offset().unwrap();
    let mut keys = std::collections::HashSet::new();
    for bytes in read_all(&log) {
        let batch = RecordBatch::parse(&bytes).unwrap();
        for record in batch.records(1 << 24).unwrap().iter() {
            if record.offset < first_dirty {
                assert!(
                    keys.insert(record.key.unwrap().to_vec()),
                    "key twice after full cleaning"
                );
            }
        }
    }
}
