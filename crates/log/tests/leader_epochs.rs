//! The leader-epoch history: kept as appends stamp epochs, cut by DeleteRecords, written to
//! `leader-epoch-checkpoint` in Kafka's format, and rebuilt at startup whether the file is
//! current, behind, ahead of a truncated log, or missing.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{batch, open, small_segments_config, tp};
use sluice_log::{LEADER_EPOCH_CHECKPOINT, LogError, LogManager, ManualClock};

const T0: i64 = 1_700_000_000_000;

fn open_log(dir: &Path) -> LogManager {
    open(dir, small_segments_config(), Arc::new(ManualClock::new(T0)))
}

fn history(manager: &LogManager) -> Vec<(i32, i64)> {
    let log = manager.get(&tp(0)).expect("log exists");
    log.check_invariants().unwrap();
    log.leader_epochs()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

/// Five two-record batches at each of epochs 0, 2 and 5: offsets 0-9, 10-19, 20-29.
fn write_three_epochs(manager: &LogManager) {
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut tag = 0;
    for epoch in [0, 2, 5] {
        for _ in 0..5 {
            log.append(&mut batch(2, 300, T0, tag), epoch).unwrap();
            tag += 1;
        }
    }
    assert_eq!(log.log_end_offset(), 30);
}

fn checkpoint_path(dir: &Path) -> std::path::PathBuf {
    dir.join("test-topic-0").join(LEADER_EPOCH_CHECKPOINT)
}

#[test]
fn the_history_is_checkpointed_and_answers_offset_for_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let manager = open_log(dir.path());
        write_three_epochs(&manager);
        assert_eq!(history(&manager), [(0, 0), (2, 10), (5, 20)]);
        let log = manager.get(&tp(0)).unwrap();
        assert!(matches!(
            log.append(&mut batch(1, 10, T0, 99), 4),
            Err(LogError::StaleLeaderEpoch {
                epoch: 4,
                latest: 5
            })
        ));
        assert_eq!(log.log_end_offset(), 30, "the stale append wrote nothing");
        manager.shutdown().unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(checkpoint_path(dir.path())).unwrap(),
        "0\n3\n0 0\n2 10\n5 20\n"
    );
    let manager = open_log(dir.path());
    assert_eq!(history(&manager), [(0, 0), (2, 10), (5, 20)]);
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 10)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 20)));
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 20)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 30)));
    assert_eq!(log.end_offset_for_epoch(6), None);
}

#[test]
fn a_flush_writes_the_checkpoint_and_delete_records_moves_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_log(dir.path());
    write_three_epochs(&manager);
    let log = manager.get(&tp(0)).unwrap();
    assert!(!checkpoint_path(dir.path()).exists());
    log.flush().unwrap();
    assert_eq!(
        std::fs::read_to_string(checkpoint_path(dir.path())).unwrap(),
        "0\n3\n0 0\n2 10\n5 20\n"
    );
    manager.delete_records(&tp(0), 15).unwrap();
    assert_eq!(history(&manager), [(2, 15), (5, 20)]);
    manager.delete_records(&tp(0), 30).unwrap();
    assert_eq!(
        history(&manager),
        [(5, 30)],
        "an empty log keeps its current epoch, starting at the log end"
    );
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 30)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 30)));
    log.flush().unwrap();
    assert_eq!(
        std::fs::read_to_string(checkpoint_path(dir.path())).unwrap(),
        "0\n1\n5 30\n"
    );
    drop(log);
    drop(manager);
    let manager = open_log(dir.path());
    assert_eq!(history(&manager), [(5, 30)]);
}

#[test]
fn recovery_rebuilds_what_the_checkpoint_has_not_seen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let manager = open_log(dir.path());
        write_three_epochs(&manager);
        // Dropped without a clean shutdown: recovery re-reads the batches.
    }
    // The checkpoint of a sync round that ran before epoch 5 wrote anything.
    std::fs::write(checkpoint_path(dir.path()), "0\n2\n0 0\n2 10\n").unwrap();
    std::fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).ok();
    let manager = open_log(dir.path());
    assert_eq!(history(&manager), [(0, 0), (2, 10), (5, 20)]);
}

#[test]
fn a_checkpoint_ahead_of_the_log_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let manager = open_log(dir.path());
        write_three_epochs(&manager);
        manager.shutdown().unwrap();
    }
    // Epoch 9 was checkpointed, then the records it wrote were lost (never synced).
    std::fs::write(checkpoint_path(dir.path()), "0\n4\n0 0\n2 10\n5 20\n9 30\n").unwrap();
    let manager = open_log(dir.path());
    assert_eq!(history(&manager), [(0, 0), (2, 10), (5, 20)]);
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(
        log.end_offset_for_epoch(9),
        None,
        "an epoch newer than ours"
    );
    log.flush().unwrap();
    assert_eq!(
        std::fs::read_to_string(checkpoint_path(dir.path())).unwrap(),
        "0\n3\n0 0\n2 10\n5 20\n",
        "the corrected history is written back"
    );
}

#[test]
fn a_missing_or_damaged_checkpoint_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let manager = open_log(dir.path());
        write_three_epochs(&manager);
    }
    // A directory from before the checkpoint existed, recovered from the start.
    std::fs::remove_file(checkpoint_path(dir.path())).ok();
    std::fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).ok();
    {
        let manager = open_log(dir.path());
        assert_eq!(history(&manager), [(0, 0), (2, 10), (5, 20)]);
        manager.shutdown().unwrap();
    }
    std::fs::write(checkpoint_path(dir.path()), "0\n2\n5 0\n2 10\n").unwrap();
    let manager = open_log(dir.path());
    let rebuilt = history(&manager);
    assert_eq!(
        rebuilt.first(),
        Some(&(0, 0)),
        "seeded from the first batch of each segment: {rebuilt:?}"
    );
    assert_eq!(rebuilt.last().map(|e| e.0), Some(5));
}
