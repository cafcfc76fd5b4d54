//! Idempotent producers at the log level: duplicates, gaps, fencing, state across restarts
//! (with and without snapshots) and after retention.

mod common;

use std::sync::Arc;

use common::{open, read_all, tp};
use sluice_log::{LogConfig, LogError, ManualClock, SequenceError};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

const T0: i64 = 1_700_000_000_000;

fn idempotent(
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    records: usize,
    timestamp: i64,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Compression::None).producer(producer_id, epoch, sequence);
    for i in 0..records {
        builder.push(OwnedRecord::new(None, Some(vec![i as u8; 200]), timestamp));
    }
    builder.build().unwrap()
}

#[test]
fn a_retried_batch_gets_its_original_offsets_and_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(
        dir.path(),
        LogConfig::default(),
        Arc::new(ManualClock::new(T0)),
    );
    let log = manager.get_or_create(&tp(0)).unwrap();
    let first = log.append(&mut idempotent(7, 0, 0, 3, T0), 0).unwrap();
    let second = log.append(&mut idempotent(7, 0, 3, 2, T0), 0).unwrap();
    assert_eq!((first.first_offset, second.first_offset), (0, 3));
    // The client never got the answer for the first batch and sends it again.
    let retry = log.append(&mut idempotent(7, 0, 0, 3, T0), 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.first_offset, retry.last_offset), (0, 2));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(read_all(&log).len(), 2);
    // A gap is refused and writes nothing.
    let gap = log.append(&mut idempotent(7, 0, 9, 1, T0), 0).unwrap_err();
    assert!(
        matches!(
            gap,
            LogError::Sequence(SequenceError::OutOfOrder {
                got: 9,
                last: 4,
                ..
            })
        ),
        "{gap:?}"
    );
    // An older epoch is fenced once a newer one wrote.
    log.append(&mut idempotent(7, 1, 0, 1, T0), 0).unwrap();
    let fenced = log.append(&mut idempotent(7, 0, 5, 1, T0), 0).unwrap_err();
    assert!(
        matches!(
            fenced,
            LogError::Sequence(SequenceError::InvalidEpoch { .. })
        ),
        "{fenced:?}"
    );
    // Two producers interleave independently; plain batches are not tracked.
    log.append(&mut idempotent(8, 0, 0, 1, T0), 0).unwrap();
    log.append(&mut idempotent(-1, -1, -1, 1, T0), 0).unwrap();
    log.append(&mut idempotent(-1, -1, -1, 1, T0), 0).unwrap();
    assert_eq!(log.log_end_offset(), 9);
}

fn fill(log: &sluice_log::Log, producers: i64, batches: i32) {
    for seq in 0..batches {
        for producer in 0..producers {
            log.append(
                &mut idempotent(100 + producer, 0, seq * 2, 2, T0 + i64::from(seq)),
                0,
            )
            .unwrap();
        }
    }
}

#[test]
fn producer_state_is_the_same_after_restarts_with_and_without_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 8 * 1024,
        ..LogConfig::default()
    };
    let clock = Arc::new(ManualClock::new(T0));
    let part_dir = dir.path().join("test-topic-0");
    let snapshots = || -> Vec<_> {
        std::fs::read_dir(&part_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".snapshot"))
            .map(|e| e.path())
            .collect()
    };
    let expected = {
        let manager = open(dir.path(), config.clone(), clock.clone());
        let log = manager.get_or_create(&tp(0)).unwrap();
        fill(&log, 3, 30);
        assert!(log.offsets().segments > 3, "rolls wrote snapshots");
        assert!(!snapshots().is_empty());
        log.producer_states()
        // Dropped: an unclean stop.
    };
    assert_eq!(expected.len(), 3);
    for (label, remove_snapshots, clean) in [
        ("unclean, snapshots", false, false),
        ("clean", false, true),
        ("no snapshots", true, false),
    ] {
        if remove_snapshots {
            for path in snapshots() {
                std::fs::remove_file(path).unwrap();
            }
        }
        let manager = open(dir.path(), config.clone(), clock.clone());
        let log = manager.get(&tp(0)).unwrap();
        assert_eq!(log.producer_states(), expected, "{label}");
        // Every one of the last five batches of a producer is still recognised.
        let retry = log.append(&mut idempotent(101, 0, 50, 2, T0), 0).unwrap();
        assert!(retry.duplicate, "{label}");
        if clean {
            manager.shutdown().unwrap();
        }
    }
}

#[test]
fn producers_whose_batches_are_gone_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = LogConfig {
        segment_bytes: 4096,
        producer_expiration_ms: 3_600_000,
        ..LogConfig::default()
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    log.append(&mut idempotent(1, 0, 0, 2, T0), 0).unwrap();
    for seq in 0..20 {
        log.append(&mut idempotent(2, 0, seq, 1, T0), 0).unwrap();
    }
    // DeleteRecords past producer 1's only batch forgets it; what it sends next is accepted
    // whatever its sequence, as Kafka does for a producer it has no state for.
    manager.delete_records(&tp(0), 5).unwrap();
    assert!(log.producer_states().get(1).is_none());
    assert!(log.producer_states().get(2).is_some());
    log.append(&mut idempotent(1, 0, 2, 1, T0), 0).unwrap();
    assert_eq!(log.producer_states().get(1).unwrap().batches.len(), 1);
    log.append(&mut idempotent(2, 0, 20, 1, T0), 0).unwrap();
    // Silence beyond producer.id.expiration.ms forgets producer 2 too.
    clock.advance(2 * 3_600_000);
    manager.enforce_retention();
    assert!(log.producer_states().get(2).is_none());
}
