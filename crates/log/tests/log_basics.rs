//! Behaviour of a log and its manager on real files.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{batch, open, read_all, segment_bases, tag_of, tp};
use sluice_log::{
    CLEAN_SHUTDOWN_FILE, Clock, FlushPolicy, LogConfig, LogError, LogManager, ManualClock,
};
use sluice_record::{Batches, RecordBatch, RecordError, TimestampType, offsets};

const T0: i64 = 1_700_000_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), LogConfig::default(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut expected = Vec::new();
    for i in 0..10u64 {
        let mut b = batch(3, 50, T0, i);
        let info = log.append(&mut b, 0).unwrap();
        assert_eq!(info.first_offset, i as i64 * 3);
        assert_eq!(info.last_offset, i as i64 * 3 + 2);
        assert_eq!(info.batches, 1);
        expected.push(b);
    }
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.log_end_offset(), 30);
    // Offsets and leader epoch were patched in place; the CRC still holds.
    let stored = RecordBatch::parse(&expected[4]).unwrap();
    assert_eq!(stored.base_offset(), 12);
    assert_eq!(stored.partition_leader_epoch(), 0);
    stored.validate().unwrap();
}

#[test]
fn multi_batch_record_sets_are_appended_whole() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), LogConfig::default(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut set = batch(2, 10, T0, 1);
    set.extend(batch(5, 10, T0, 2));
    let info = log.append(&mut set, 3).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.batches),
        (0, 6, 2)
    );
    let batches = read_all(&log);
    assert_eq!(batches.len(), 2);
    assert_eq!(RecordBatch::parse(&batches[1]).unwrap().base_offset(), 2);
    assert_eq!(
        RecordBatch::parse(&batches[1])
            .unwrap()
            .partition_leader_epoch(),
        3
    );
}

#[test]
fn reads_start_at_the_batch_holding_the_offset_and_respect_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), small_segments(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut sizes = Vec::new();
    for i in 0..8u64 {
        let mut b = batch(4, 100, T0, i);
        sizes.push(b.len());
        log.append(&mut b, 0).unwrap();
    }
    // Offset 6 is the third record of the second batch: the whole second batch comes back.
    let result = log.read(6, sizes[1] + sizes[2]).unwrap();
    let bytes = result.region.unwrap().read_to_vec().unwrap();
    let batches: Vec<_> = Batches::new(&bytes).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].base_offset(), 4);
    assert_eq!(tag_of(&batches[1]), 2);

    // max_bytes smaller than one batch still returns that batch, and only it.
    let result = log.read(0, 1).unwrap();
    assert_eq!(result.region.unwrap().len() as usize, sizes[0]);

    // At the log end: nothing, with the offsets a fetch response needs.
    let result = log.read(32, 1000).unwrap();
    assert!(result.region.is_none());
    assert_eq!(
        (
            result.log_end_offset,
            result.high_watermark,
            result.log_start_offset
        ),
        (32, 32, 0)
    );

    match log.read(33, 1000) {
        Err(LogError::OffsetOutOfRange {
            requested: 33,
            log_start_offset: 0,
            log_end_offset: 32,
        }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
}

#[test]
fn invalid_batches_are_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_message_bytes: 2000,
        ..LogConfig::default()
    };
    let manager = open(dir.path(), config, clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut good = batch(1, 10, T0, 0);
    log.append(&mut good, 0).unwrap();
    let size_before = log.offsets().size_bytes;

    let mut bad_crc = batch(2, 10, T0, 1);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x40;
    let mut bad_magic = batch(2, 10, T0, 1);
    bad_magic[offsets::MAGIC] = 1;
    let mut short_length = batch(2, 10, T0, 1);
    short_length[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4]
        .copy_from_slice(&20i32.to_be_bytes());
    let mut truncated = batch(2, 10, T0, 1);
    truncated.truncate(truncated.len() - 3);
    let mut too_large = batch(1, 3000, T0, 1);
    let mut second_is_bad = batch(2, 10, T0, 1);
    second_is_bad.extend_from_slice(&bad_crc);

    type Expectation = fn(&LogError) -> bool;
    let cases: Vec<(&str, &mut Vec<u8>, Expectation)> = vec![
        ("crc", &mut bad_crc, |e| {
            matches!(e, LogError::InvalidBatch(RecordError::CrcMismatch { .. }))
        }),
        ("magic", &mut bad_magic, |e| {
            matches!(e, LogError::InvalidBatch(RecordError::UnsupportedMagic(1)))
        }),
        ("length", &mut short_length, |e| {
            matches!(
                e,
                LogError::InvalidBatch(RecordError::LengthTooSmall { .. })
            )
        }),
        ("truncated", &mut truncated, |e| {
            matches!(e, LogError::InvalidBatch(RecordError::Truncated { .. }))
        }),
        ("too large", &mut too_large, |e| {
            matches!(e, LogError::BatchTooLarge { max: 2000, .. })
        }),
        ("second bad", &mut second_is_bad, |e| {
            matches!(e, LogError::InvalidBatch(RecordError::CrcMismatch { .. }))
        }),
    ];
    for (name, bytes, expected) in cases {
        let err = log.append(bytes, 0).expect_err(name);
        assert!(expected(&err), "{name}: unexpected error {err:?}");
        assert_eq!(log.log_end_offset(), 1, "{name}");
        assert_eq!(log.offsets().size_bytes, size_before, "{name}");
    }
    assert!(matches!(
        log.append(&mut [], 0),
        Err(LogError::EmptyRecordSet)
    ));
    assert_eq!(read_all(&log), vec![good]);
}

#[test]
fn segments_roll_on_size_with_kafka_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), small_segments(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut all = Vec::new();
    for i in 0..40u64 {
        let mut b = batch(2, 200, T0, i);
        log.append(&mut b, 0).unwrap();
        all.push(b);
    }
    let part_dir = dir.path().join("test-topic-0");
    let bases = segment_bases(&part_dir);
    assert!(bases.len() > 3, "expected several segments, got {bases:?}");
    assert_eq!(bases[0], 0);
    for base in &bases {
        for suffix in ["log", "index", "timeindex"] {
            let name = format!("{base:020}.{suffix}");
            assert!(part_dir.join(&name).exists(), "{name} missing");
        }
    }
    for base in &bases[..bases.len() - 1] {
        let size = std::fs::metadata(part_dir.join(format!("{base:020}.log")))
            .unwrap()
            .len();
        assert!(size <= 4096, "segment {base} has {size} bytes");
    }
    assert_eq!(read_all(&log), all);
}

#[test]
fn segments_roll_on_age_and_on_full_index() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    log.append(&mut batch(1, 10, T0, 0), 0).unwrap();
    clock.advance(59_999);
    log.append(&mut batch(1, 10, T0, 1), 0).unwrap();
    assert_eq!(log.offsets().segments, 1);
    clock.advance(1);
    log.append(&mut batch(1, 10, T0, 2), 0).unwrap();
    assert_eq!(log.offsets().segments, 2);
    assert_eq!(segment_bases(&dir.path().join("test-topic-0")), vec![0, 2]);

    // An index of 3 entries (24 bytes) fills after a few batches with a tiny interval.
    let config = LogConfig {
        segment_index_bytes: 24,
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let log = manager.create(&tp(1), config).unwrap();
    for i in 0..12u64 {
        log.append(&mut batch(1, 10, T0, i), 0).unwrap();
    }
    assert!(log.offsets().segments >= 3, "{:?}", log.offsets());
    assert_eq!(read_all(&log).len(), 12);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), small_segments(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    // Batch i holds records with timestamps T0 + 10i (three records each).
    for i in 0..30i64 {
        log.append(&mut batch(3, 100, T0 + 10 * i, i as u64), 0)
            .unwrap();
    }
    assert!(log.offsets().segments > 2);
    let found = log.offset_for_timestamp(T0 + 105).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp), (33, T0 + 110));
    let exact = log.offset_for_timestamp(T0 + 100).unwrap().unwrap();
    assert_eq!((exact.offset, exact.timestamp), (30, T0 + 100));
    let first = log.offset_for_timestamp(0).unwrap().unwrap();
    assert_eq!(first.offset, 0);
    assert_eq!(log.offset_for_timestamp(T0 + 291).unwrap(), None);

    // Record-level precision inside a batch with distinct timestamps.
    let mut builder = sluice_record::BatchBuilder::new(sluice_record::Compression::Lz4);
    for ts in [T0 + 1000, T0 + 1005, T0 + 1010] {
        builder.push(sluice_record::OwnedRecord::new(None, Some(vec![1]), ts));
    }
    log.append(&mut builder.build().unwrap(), 0).unwrap();
    let inner = log.offset_for_timestamp(T0 + 1003).unwrap().unwrap();
    assert_eq!((inner.offset, inner.timestamp), (91, T0 + 1005));
}

#[test]
fn time_retention_deletes_expired_segments_and_rolls_an_expired_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        retention_ms: 3_600_000,
        ..small_segments()
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    // Old data, then (an hour and a bit later) new data.
    for i in 0..20u64 {
        log.append(&mut batch(2, 200, T0, i), 0).unwrap();
    }
    let old_end = log.log_end_offset();
    clock.advance(3_000_000);
    for i in 20..40u64 {
        log.append(&mut batch(2, 200, clock.now_ms(), i), 0)
            .unwrap();
    }
    clock.advance(700_000);
    let report = manager.enforce_retention();
    assert!(report.segments_deleted > 0);
    let offsets = log.offsets();
    // Every old batch is gone, no new batch is: the first new batch starts a segment or
    // shares one with old data, which must then be kept.
    assert!(offsets.log_start_offset <= old_end, "{offsets:?}");
    let remaining = read_all(&log);
    let first_tag = tag_of(&RecordBatch::parse(&remaining[0]).unwrap());
    assert!(first_tag <= 20);
    assert_eq!(
        tag_of(&RecordBatch::parse(remaining.last().unwrap()).unwrap()),
        39
    );

    // Much later everything has expired: the active segment is rolled and deleted too.
    clock.advance(10 * 3_600_000);
    manager.enforce_retention();
    let offsets = log.offsets();
    assert_eq!(offsets.log_start_offset, offsets.log_end_offset);
    assert_eq!(offsets.segments, 1);
    assert!(read_all(&log).is_empty());
    // The log keeps working, offsets continue.
    let info = log.append(&mut batch(1, 10, T0, 99), 0).unwrap();
    assert_eq!(info.first_offset, 80);
}

#[test]
fn size_retention_keeps_the_newest_segments_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 10_000,
        retention_ms: -1,
        ..small_segments()
    };
    let manager = open(dir.path(), config, clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    for i in 0..100u64 {
        log.append(&mut batch(2, 200, T0, i), 0).unwrap();
    }
    let before = log.offsets();
    assert!(before.size_bytes > 30_000);
    let report = manager.enforce_retention();
    let after = log.offsets();
    assert!(report.segments_deleted > 0);
    assert_eq!(before.size_bytes - after.size_bytes, report.bytes_deleted);
    // Kafka's rule: delete while the log minus the oldest segment is still over the limit.
    assert!(after.size_bytes <= 10_000 + 4096, "{after:?}");
    assert!(after.size_bytes > 10_000 - 4096, "{after:?}");
    let remaining = read_all(&log);
    assert_eq!(
        tag_of(&RecordBatch::parse(remaining.last().unwrap()).unwrap()),
        99
    );
    assert_eq!(
        RecordBatch::parse(&remaining[0]).unwrap().base_offset(),
        after.log_start_offset
    );
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let manager = open(dir.path(), small_segments(), clock());
        let log = manager.get_or_create(&tp(0)).unwrap();
        for i in 0..40u64 {
            log.append(&mut batch(2, 200, T0, i), 0).unwrap();
        }
        let segments_before = log.offsets().segments;
        assert_eq!(manager.delete_records(&tp(0), 41).unwrap(), 41);
        assert!(log.offsets().segments < segments_before);
        assert!(matches!(
            log.read(40, 100),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // The batch holding offset 41 (40..41) is returned whole.
        let region = log.read(41, 1).unwrap().region.unwrap();
        let bytes = region.read_to_vec().unwrap();
        assert_eq!(RecordBatch::parse(&bytes).unwrap().base_offset(), 40);
        assert!(matches!(
            log.delete_records_before(81),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Moving backwards is a no-op.
        assert_eq!(log.delete_records_before(10).unwrap(), 41);
        // Crash: no clean shutdown.
    }
    let manager = open(dir.path(), small_segments(), clock());
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(log.offsets().log_start_offset, 41);
    assert_eq!(log.log_end_offset(), 80);
}

#[test]
fn clean_restart_trusts_indexes_and_unclean_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    {
        let manager = open(dir.path(), small_segments(), clock());
        let log = manager.get_or_create(&tp(0)).unwrap();
        for i in 0..50u64 {
            let mut b = batch(2, 150, T0 + i as i64, i);
            log.append(&mut b, 0).unwrap();
            all.push(b);
        }
        manager.shutdown().unwrap();
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    }
    {
        let manager = open(dir.path(), small_segments(), clock());
        // The marker is consumed at open: a crash from now on is seen as one.
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        let log = manager.get(&tp(0)).unwrap();
        assert_eq!(log.log_end_offset(), 100);
        assert_eq!(log.offsets().recovery_point, 100);
        assert_eq!(read_all(&log), all);
        let mut b = batch(1, 10, T0, 50);
        assert_eq!(log.append(&mut b, 0).unwrap().first_offset, 100);
        all.push(b);
        // Dropped without shutdown.
    }
    let manager = open(dir.path(), small_segments(), clock());
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(read_all(&log), all);
    assert_eq!(log.log_end_offset(), 101);
    let found = log.offset_for_timestamp(T0 + 30).unwrap().unwrap();
    assert_eq!(found.offset, 60);
}

#[test]
fn a_damaged_index_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    {
        let manager = open(dir.path(), small_segments(), clock());
        let log = manager.get_or_create(&tp(0)).unwrap();
        for i in 0..30u64 {
            let mut b = batch(2, 150, T0, i);
            log.append(&mut b, 0).unwrap();
            all.push(b);
        }
        manager.shutdown().unwrap();
    }
    let part_dir = dir.path().join("test-topic-0");
    // Garbage in the first segment's index (entries pointing past the end of the segment).
    std::fs::write(part_dir.join(format!("{:020}.index", 0)), [0xffu8; 16]).unwrap();
    std::fs::write(part_dir.join(format!("{:020}.timeindex", 0)), [1u8; 5]).unwrap();
    let manager = open(dir.path(), small_segments(), clock());
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(read_all(&log), all);
    assert_eq!(
        log.read(5, 1)
            .unwrap()
            .region
            .unwrap()
            .read_to_vec()
            .unwrap(),
        all[2]
    );
    let rebuilt = std::fs::read(part_dir.join(format!("{:020}.index", 0))).unwrap();
    assert_eq!(rebuilt.len() % 8, 0);
    assert_ne!(rebuilt, vec![0xffu8; 16]);
}

#[test]
fn deleted_logs_stop_serving_and_their_directory_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), LogConfig::default(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    log.append(&mut batch(1, 10, T0, 0), 0).unwrap();
    assert!(manager.delete(&tp(0)).unwrap());
    assert!(!manager.delete(&tp(0)).unwrap());
    assert!(matches!(
        log.append(&mut batch(1, 10, T0, 0), 0),
        Err(LogError::Deleted)
    ));
    assert!(matches!(log.read(0, 10), Err(LogError::Deleted)));
    assert!(!dir.path().join("test-topic-0").exists());
    let fresh = manager.get_or_create(&tp(0)).unwrap();
    assert_eq!(fresh.log_end_offset(), 0);
    manager.shutdown().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with("-delete"))
        .collect();
    // The background removal may still be running; a reopen removes what is left.
    drop(manager);
    let _manager = open(dir.path(), LogConfig::default(), clock());
    for name in leftovers {
        assert!(!dir.path().join(name).exists());
    }
}

#[test]
fn a_data_directory_is_used_by_one_manager_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path(), LogConfig::default(), clock());
    let second = LogManager::open(common::manager_config(dir.path(), LogConfig::default()));
    let err = second.expect_err("second open must fail");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn thousands_of_partitions_with_bounded_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::manager_config(
        dir.path(),
        LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        },
    );
    config.max_open_segments = 64;
    let partitions = 2000;
    {
        let manager = LogManager::open_with_clock(config.clone(), clock()).unwrap();
        for p in 0..partitions {
            let log = manager.get_or_create(&tp(p)).unwrap();
            for i in 0..4u64 {
                log.append(&mut batch(1, 300, T0, i), 0).unwrap();
            }
        }
        manager.shutdown().unwrap();
    }
    let manager = LogManager::open_with_clock(config, clock()).unwrap();
    assert_eq!(manager.partitions().len(), partitions as usize);
    for p in 0..partitions {
        let log = manager.get(&tp(p)).unwrap();
        assert!(log.offsets().segments >= 2);
        let batches = read_all(&log);
        assert_eq!(batches.len(), 4, "partition {p}");
        assert!(
            manager.open_segment_files() <= 64,
            "{} open",
            manager.open_segment_files()
        );
    }
}

#[test]
fn log_append_time_is_stamped_by_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    clock.advance(5000);
    let info = log.append(&mut batch(2, 10, 42, 0), 0).unwrap();
    assert_eq!(info.log_append_time, T0 + 5000);
    let stored = read_all(&log);
    let batch = RecordBatch::parse(&stored[0]).unwrap();
    batch.validate().unwrap();
    assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(batch.max_timestamp(), T0 + 5000);
}

#[test]
fn durable_waits_resolve_after_a_sync_blocking_and_async() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), LogConfig::default(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let info = log.append(&mut batch(1, 100, T0, w * 1000 + i), 0).unwrap();
                    log.wait_durable(info.last_offset + 1).wait().unwrap();
                    assert!(log.offsets().recovery_point > info.last_offset);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let stats = manager.flush_stats();
    assert_eq!(stats.durable_waits, 400);
    assert!(stats.rounds >= 1 && stats.rounds <= 400, "{stats:?}");

    let info = log.append(&mut batch(1, 100, T0, 9999), 0).unwrap();
    let wait = log.wait_durable(info.last_offset + 1);
    block_on(wait).unwrap();
    assert!(log.offsets().recovery_point > info.last_offset);
}

/// A waiter that is created while a sync is running and first polled after that sync ends
/// (the broker polls acks=all waits from another task, later) must still get its own sync.
/// With the periodic flush switched off, a lost waiter hangs forever.
#[test]
fn durable_waits_polled_late_are_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), LogConfig::default(), clock());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    for w in 0..4u64 {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..500u64 {
                let info = log.append(&mut batch(1, 100, T0, w * 1000 + i), 0).unwrap();
                let wait = log.wait_durable(info.last_offset + 1);
                // Let a running sync finish before this wait is first polled.
                for _ in 0..(i % 7) * 20 {
                    std::thread::yield_now();
                }
                block_on(wait).unwrap();
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..4 {
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("a durable wait was never released");
    }
}

#[test]
fn interval_policy_acknowledges_at_once_and_flushes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::manager_config(dir.path(), LogConfig::default());
    config.flush_policy = FlushPolicy::Interval;
    config.flush_interval = Duration::from_millis(20);
    let manager = LogManager::open_with_clock(config, clock()).unwrap();
    let log = manager.get_or_create(&tp(0)).unwrap();
    let info = log.append(&mut batch(1, 100, T0, 0), 0).unwrap();
    log.wait_durable(info.last_offset + 1).wait().unwrap();
    // The background flush eventually covers it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.offsets().recovery_point <= info.last_offset {
        assert!(
            std::time::Instant::now() < deadline,
            "background flush never ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A minimal executor: polls a future on this thread, parking between wake-ups.
fn block_on<F: Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[test]
fn compacted_topics_are_not_subject_to_time_or_size_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        retention_ms: 1000,
        retention_bytes: 100,
        cleanup_policy: sluice_log::CleanupPolicy {
            delete: false,
            compact: true,
        },
        ..small_segments()
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    for i in 0..40u64 {
        log.append(&mut batch(2, 200, T0, i), 0).unwrap();
    }
    clock.advance(10 * 3_600_000);
    let report = manager.enforce_retention();
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(read_all(&log).len(), 40);
    // compact,delete applies both.
    let both = sluice_log::CleanupPolicy {
        delete: true,
        compact: true,
    };
    log.set_config(LogConfig {
        retention_ms: 1000,
        cleanup_policy: both,
        ..small_segments()
    })
    .unwrap();
    assert!(manager.enforce_retention().segments_deleted > 0);
}
