//! What a replicated partition does to its log: a follower copies a leader's batches with
//! their offsets and epochs, truncates a divergent suffix (at batch boundaries, across
//! segments, with the epoch history, producers and durable point following), and readers
//! never see past the high watermark.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{batch, open, read_all, small_segments_config, tag_of, tp};
use sluice_log::{LogError, LogManager, ManualClock, ReplicatedRecords};
use sluice_record::{BatchBuilder, Batches, Compression, OwnedRecord, RecordBatch};

const T0: i64 = 1_700_000_000_000;

fn open_log(dir: &Path) -> LogManager {
    open(dir, small_segments_config(), Arc::new(ManualClock::new(T0)))
}

/// Everything the leader's log holds from `from`, as a follower's fetch would copy it.
fn leader_bytes(leader: &sluice_log::Log, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = leader.read_for_replica(offset, 1 << 20).unwrap();
        let Some(region) = read.region else { break };
        let bytes = region.read_to_vec().unwrap();
        for b in Batches::new(&bytes) {
            offset = b.unwrap().next_offset();
        }
        out.extend(bytes);
    }
    out
}

fn tags(log: &sluice_log::Log) -> Vec<u64> {
    read_all(log)
        .iter()
        .map(|b| tag_of(&RecordBatch::parse(b).unwrap()))
        .collect()
}

#[test]
fn a_follower_copies_offsets_and_epochs_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let leader_dir = tempfile::tempdir().unwrap();
    let leaders = open_log(leader_dir.path());
    let leader = leaders.get_or_create(&tp(0)).unwrap();
    for (tag, epoch) in [(0, 0), (1, 0), (2, 3), (3, 3), (4, 4)] {
        leader.append(&mut batch(3, 200, T0, tag), epoch).unwrap();
    }
    let followers = open_log(dir.path());
    let follower = followers.get_or_create(&tp(0)).unwrap();
    follower.set_high_watermark_follows_end(false);
    follower.set_high_watermark(0);
    let bytes = leader_bytes(&leader, 0);
    let copied = ReplicatedRecords::validate(&bytes).unwrap();
    assert_eq!((copied.first_offset(), copied.next_offset()), (0, 15));
    let info = follower.append_replicated(&copied).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 14));
    assert_eq!(follower.leader_epochs(), leader.leader_epochs());
    assert_eq!(follower.end_offset_for_epoch(3), Some((3, 12)));
    // Copying the same batches again is refused: they do not continue the log.
    assert!(matches!(
        follower.append_replicated(&copied),
        Err(LogError::OutOfOrder(_))
    ));
    // Consumers see nothing above the high watermark; a replica reads to the end.
    assert!(follower.read(0, 1 << 20).unwrap().region.is_none());
    follower.set_high_watermark(6);
    assert_eq!(tags(&follower), vec![0, 1]);
    assert!(follower.read(9, 1 << 20).unwrap().region.is_none());
    assert!(
        follower
            .read_for_replica(9, 1 << 20)
            .unwrap()
            .region
            .is_some()
    );
    assert_eq!(
        follower.set_high_watermark(99),
        15,
        "clamped to the log end"
    );
    assert_eq!(tags(&follower), vec![0, 1, 2, 3, 4]);
    follower.check_invariants().unwrap();
    followers.shutdown().unwrap();
    drop(followers);
    let reopened = open_log(dir.path());
    let log = reopened.get(&tp(0)).unwrap();
    assert_eq!(log.leader_epochs(), leader.leader_epochs());
    assert_eq!(tags(&log), vec![0, 1, 2, 3, 4]);
    reopened.shutdown().unwrap();
    leaders.shutdown().unwrap();
}

#[test]
fn truncation_cuts_at_a_batch_boundary_across_segments_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_log(dir.path());
    let log = manager.get_or_create(&tp(0)).unwrap();
    // 4 KiB segments, ~1 KiB batches of 2 records: several segments.
    for tag in 0..12u64 {
        let epoch = if tag < 8 { 1 } else { 2 };
        log.append(&mut batch(2, 450, T0, tag), epoch).unwrap();
    }
    log.flush().unwrap();
    let segments_before = common::segment_bases(log.dir()).len();
    assert!(segments_before >= 3, "{segments_before} segments");
    // Offset 9 is inside batch 4 (offsets 8-9): the batch goes whole.
    assert_eq!(log.truncate_to(9).unwrap(), 8);
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(tags(&log), vec![0, 1, 2, 3]);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 8)));
    assert_eq!(log.end_offset_for_epoch(2), None, "epoch 2 is gone");
    assert!(log.offsets().recovery_point <= 8);
    assert!(common::segment_bases(log.dir()).len() < segments_before);
    log.check_invariants().unwrap();
    // The log goes on from the cut, in a newer epoch.
    log.append(&mut batch(2, 450, T0, 100), 3).unwrap();
    assert_eq!(tags(&log), vec![0, 1, 2, 3, 100]);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 10)));
    // Truncating at or past the end cuts nothing, but drops an epoch begun there that
    // wrote nothing (a deposed leader's): the next fetch must not name it.
    log.begin_leader_epoch(7).unwrap();
    assert_eq!(log.latest_epoch(), Some(7));
    assert_eq!(log.truncate_to(50).unwrap(), 10);
    assert_eq!(log.latest_epoch(), Some(7), "begun at 10, below 50");
    assert_eq!(log.truncate_to(10).unwrap(), 10);
    assert_eq!(log.latest_epoch(), Some(3));
    manager.shutdown().unwrap();
    drop(manager);
    let reopened = open_log(dir.path());
    let log = reopened.get(&tp(0)).unwrap();
    assert_eq!(tags(&log), vec![0, 1, 2, 3, 100]);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 8)));
    log.check_invariants().unwrap();
    reopened.shutdown().unwrap();
}

#[test]
fn truncating_everything_starts_the_log_again_and_forgets_producers() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_log(dir.path());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut idempotent = BatchBuilder::new(Compression::None).producer(7, 0, 0);
    idempotent.push(OwnedRecord::new(None, Some(b"v".to_vec()), T0));
    log.append(&mut idempotent.build().unwrap(), 0).unwrap();
    assert!(log.producer_states().get(7).is_some());
    assert_eq!(log.truncate_to(0).unwrap(), 0);
    assert!(log.producer_states().get(7).is_none());
    assert_eq!(log.offsets().log_end_offset, 0);
    log.append(&mut batch(1, 10, T0, 5), 1).unwrap();
    assert_eq!(tags(&log), vec![5]);
    log.check_invariants().unwrap();
    manager.shutdown().unwrap();
}

#[test]
fn copied_batches_may_start_after_a_gap_as_a_compacted_leader_sends_them() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leaders = open_log(leader_dir.path());
    let leader = leaders.get_or_create(&tp(0)).unwrap();
    for tag in 0..3u64 {
        leader.append(&mut batch(2, 100, T0, tag), 1).unwrap();
    }
    // What a compacted leader would send from offset 2: batches at 2 and 4, nothing at 0.
    let from_two = leader_bytes(&leader, 2);
    let dir = tempfile::tempdir().unwrap();
    let followers = open_log(dir.path());
    let follower = followers.get_or_create(&tp(0)).unwrap();
    let copied = ReplicatedRecords::validate(&from_two).unwrap();
    assert_eq!(copied.first_offset(), 2);
    follower.append_replicated(&copied).unwrap();
    assert_eq!(follower.log_end_offset(), 6);
    assert_eq!(
        follower.offsets().log_start_offset,
        2,
        "the empty log starts where its first batch does"
    );
    assert_eq!(tags(&follower), vec![1, 2]);
    follower.check_invariants().unwrap();
    // A gap later on (the next batch starts past the log end) is kept as a gap.
    let mut later = batch(1, 100, T0, 9);
    sluice_record::set_base_offset(&mut later, 10);
    sluice_record::set_partition_leader_epoch(&mut later, 2);
    follower
        .append_replicated(&ReplicatedRecords::validate(&later).unwrap())
        .unwrap();
    assert_eq!(follower.log_end_offset(), 11);
    assert_eq!(follower.end_offset_for_epoch(1), Some((1, 10)));
    assert_eq!(tags(&follower), vec![1, 2, 9]);
    follower.check_invariants().unwrap();
    // The leader's log now starts past everything here: start again there.
    assert_eq!(follower.restart_at(20).unwrap(), 20);
    let offsets = follower.offsets();
    assert_eq!((offsets.log_start_offset, offsets.log_end_offset), (20, 20));
    assert_eq!(follower.latest_epoch(), None);
    assert!(tags(&follower).is_empty());
    let mut next = batch(1, 100, T0, 20);
    sluice_record::set_base_offset(&mut next, 20);
    sluice_record::set_partition_leader_epoch(&mut next, 3);
    follower
        .append_replicated(&ReplicatedRecords::validate(&next).unwrap())
        .unwrap();
    assert_eq!(tags(&follower), vec![20]);
    follower.check_invariants().unwrap();
    followers.shutdown().unwrap();
    leaders.shutdown().unwrap();
}
