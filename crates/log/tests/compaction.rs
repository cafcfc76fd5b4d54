//! Log compaction against a "latest value per key" model, on real files.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{open, read_all, tp};
use proptest::prelude::*;
use sluice_log::{CleanupPolicy, LogConfig, LogError, ManualClock};
use sluice_record::{BatchBuilder, Compression, OwnedRecord, RecordBatch};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn compacted_config(segment_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        retention_ms: -1,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// One record to write: key, value (`None` = tombstone).
type Write = (u16, Option<u32>);

fn encode_batch(writes: &[Write], codec: Compression, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(codec);
    for (key, value) in writes {
        builder.push(OwnedRecord::new(
            Some(format!("key-{key}").into_bytes()),
            value.map(|v| format!("value-{key}-{v}-{}", "x".repeat(40)).into_bytes()),
            timestamp,
        ));
    }
    builder.build().unwrap()
}

/// Every record of the log as (offset, key, value), checking batch integrity and strictly
/// increasing offsets on the way.
fn records(log: &sluice_log::Log) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut last = -1i64;
    for bytes in read_all(log) {
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate().unwrap();
        for record in batch.records(1 << 24).unwrap().iter() {
            assert!(
                record.offset > last,
                "offsets not increasing: {} after {last}",
                record.offset
            );
            last = record.offset;
            out.push((
                record.offset,
                String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            ));
        }
    }
    out
}

/// Replays records in order: key → latest value (`None` for a tombstone).
fn replay(records: &[(i64, String, Option<String>)]) -> BTreeMap<String, Option<String>> {
    records
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

fn model(writes: &[Write]) -> BTreeMap<String, Option<String>> {
    if writes.is_empty() {
        return BTreeMap::new();
    }
    let encoded = encode_batch(writes, Compression::None, 0);
    let batch = RecordBatch::parse(&encoded).unwrap();
    let decoded = batch.records(1 << 24).unwrap();
    decoded
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect()
}

fn arb_write() -> impl Strategy<Value = Write> {
    (0u16..24, prop::option::weighted(0.85, 0u32..1_000_000))
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Write>, usize),
    Clean,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(arb_write(), 1..6), 0usize..5).prop_map(|(w, c)| Op::Append(w, c)),
        1 => Just(Op::Clean),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For random key/value/tombstone sequences with cleaning passes in between (and a
    /// restart at the end), the log always replays to the model, offsets keep increasing,
    /// and the part below the cleaner's checkpoint holds at most one record per key.
    #[test]
    fn compacted_log_equals_latest_value_per_key(ops in prop::collection::vec(arb_op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let manager = open(dir.path(), compacted_config(1024), clock.clone());
        let log = manager.get_or_create(&tp(0)).unwrap();
        let mut written: Vec<Write> = Vec::new();
        for op in &ops {
            match op {
                Op::Append(writes, codec) => {
                    let mut bytes = encode_batch(writes, Compression::ALL[*codec], clock.now_ms_for_test());
                    log.append(&mut bytes, 0).unwrap();
                    written.extend_from_slice(writes);
                }
                Op::Clean => {
                    manager.clean_now(true);
                    let all = records(&log);
                    prop_assert_eq!(replay(&all), model(&written));
                    if let Some(first_dirty) = log.cleaner_first_dirty_offset() {
                        let mut seen = std::collections::HashSet::new();
                        for (offset, key, _) in all.iter().filter(|(o, ..)| *o < first_dirty) {
                            prop_assert!(seen.insert(key.clone()), "key {} twice below {} (at {})", key, first_dirty, offset);
                        }
                    }
                }
            }
        }
        manager.clean_now(true);
        let end = log.log_end_offset();
        prop_assert_eq!(end, written.len() as i64);
        prop_assert_eq!(replay(&records(&log)), model(&written));
        drop(log);
        manager.shutdown().unwrap();
        drop(manager);
        let manager = open(dir.path(), compacted_config(1024), clock);
        let log = manager.get(&tp(0)).unwrap();
        prop_assert_eq!(log.log_end_offset(), end);
        prop_assert_eq!(replay(&records(&log)), model(&written));
    }
}

trait NowForTest {
    fn now_ms_for_test(&self) -> i64;
}

impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> i64 {
        sluice_log::Clock::now_ms(self)
    }
}

/// Writes `updates` versions of `keys` keys, then deletes `deleted` of them.
fn fill(
    log: &sluice_log::Log,
    keys: u16,
    updates: u32,
    deleted: u16,
    timestamp: i64,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for version in 0..updates {
        let batch: Vec<Write> = (0..keys).map(|k| (k, Some(version))).collect();
        for chunk in batch.chunks(50) {
            let mut bytes = encode_batch(chunk, Compression::Lz4, timestamp);
            log.append(&mut bytes, 0).unwrap();
        }
        writes.extend(batch);
    }
    let tombstones: Vec<Write> = (0..deleted).map(|k| (k, None)).collect();
    if !tombstones.is_empty() {
        let mut bytes = encode_batch(&tombstones, Compression::None, timestamp);
        log.append(&mut bytes, 0).unwrap();
        writes.extend(tombstones);
    }
    // A record in a fresh active segment, so that everything above is cleanable.
    let filler = [(u16::MAX, Some(0))];
    let mut bytes = encode_batch(&filler, Compression::None, timestamp);
    let size = bytes.len();
    let config = log.config();
    let padding = config.segment_bytes as usize / size + 1;
    for _ in 0..padding {
        let mut copy = bytes.clone();
        log.append(&mut copy, 0).unwrap();
    }
    log.append(&mut bytes, 0).unwrap();
    writes.extend(std::iter::repeat_n(filler[0], padding + 1));
    writes
}

#[test]
fn tombstones_survive_until_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(10 * DAY_MS));
    let config = LogConfig {
        delete_retention_ms: DAY_MS,
        ..compacted_config(64 * 1024)
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let writes = fill(&log, 1_000, 100, 100, 10 * DAY_MS);
    let size_before = log.offsets().size_bytes;

    let reports = manager.clean_now(false);
    assert_eq!(
        reports.len(),
        1,
        "a log this dirty is cleaned without force"
    );
    let report = &reports[0];
    assert!(report.records_removed >= 99_000, "{report:?}");
    assert_eq!(report.tombstones_removed, 0);
    let all = records(&log);
    assert_eq!(replay(&all), model(&writes));
    let tombstones = all.iter().filter(|(_, _, v)| v.is_none()).count();
    assert_eq!(
        tombstones, 100,
        "tombstones kept within delete.retention.ms"
    );
    let live = all
        .iter()
        .filter(|(_, k, v)| v.is_some() && k != "key-65535")
        .count();
    assert_eq!(live, 900);
    let size_after = log.offsets().size_bytes;
    assert!(
        size_after * 20 < size_before,
        "on-disk size {size_before} -> {size_after} did not shrink accordingly"
    );

    // Not yet: one millisecond before the horizon.
    clock.advance(DAY_MS - 1);
    manager.clean_now(false);
    assert_eq!(
        records(&log).iter().filter(|(_, _, v)| v.is_none()).count(),
        100
    );

    clock.advance(1);
    let reports = manager.clean_now(false);
    assert_eq!(
        reports.len(),
        1,
        "an expired tombstone horizon makes the log eligible"
    );
    assert_eq!(reports[0].tombstones_removed, 100);
    let all = records(&log);
    assert_eq!(all.iter().filter(|(_, _, v)| v.is_none()).count(), 0);
    let mut expected = model(&writes);
    expected.retain(|_, v| v.is_some());
    assert_eq!(replay(&all), expected);

    // The same after a restart, and the cleaner checkpoint keeps the log clean.
    drop(log);
    manager.shutdown().unwrap();
    drop(manager);
    let manager = open(dir.path(), compacted_config(64 * 1024), clock);
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(replay(&records(&log)), expected);
    assert!(
        manager.clean_now(false).is_empty(),
        "nothing dirty after restart"
    );
}

#[test]
fn compacted_log_refuses_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(
        dir.path(),
        compacted_config(1 << 20),
        Arc::new(ManualClock::new(0)),
    );
    let log = manager.get_or_create(&tp(0)).unwrap();
    let mut builder = BatchBuilder::new(Compression::Snappy);
    builder.push(OwnedRecord::new(
        Some(b"k".to_vec()),
        Some(b"v".to_vec()),
        0,
    ));
    builder.push(OwnedRecord::new(None, Some(b"v".to_vec()), 0));
    let mut bytes = builder.build().unwrap();
    let err = log.append(&mut bytes, 0).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::InvalidBatch(sluice_record::RecordError::MissingKey { index: 1 })
        ),
        "{err:?}"
    );
    assert_eq!(log.log_end_offset(), 0, "nothing written");
}

#[test]
fn dirty_ratio_and_min_compaction_lag_gate_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(DAY_MS));
    let config = LogConfig {
        min_compaction_lag_ms: 60_000,
        ..compacted_config(16 * 1024)
    };
    let manager = open(dir.path(), config, clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    let writes = fill(&log, 100, 20, 0, DAY_MS);
    assert!(
        manager.clean_now(false).is_empty(),
        "records younger than min.compaction.lag.ms are not compacted"
    );
    clock.advance(60_001);
    let reports = manager.clean_now(false);
    assert_eq!(reports.len(), 1);
    assert!(reports[0].dirty_ratio > 0.99);
    assert_eq!(replay(&records(&log)), model(&writes));
    // Now clean: a few new updates are below the 0.5 ratio.
    let mut bytes = encode_batch(&[(1, Some(7))], Compression::None, DAY_MS + 60_001);
    log.append(&mut bytes, 0).unwrap();
    clock.advance(60_001);
    assert!(manager.clean_now(false).is_empty());
}

#[test]
fn a_producers_last_batch_survives_as_an_empty_batch() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(
        dir.path(),
        compacted_config(1024),
        Arc::new(ManualClock::new(DAY_MS)),
    );
    let log = manager.get_or_create(&tp(0)).unwrap();
    // Producer 42 writes key 1 (sequences 0..=2), then a plain producer overwrites it.
    let mut builder = BatchBuilder::new(Compression::Zstd).producer(42, 3, 0);
    for v in 0..3 {
        builder.push(OwnedRecord::new(
            Some(b"key-1".to_vec()),
            Some(vec![b'a' + v; 30]),
            DAY_MS,
        ));
    }
    let mut bytes = builder.build().unwrap();
    let info = log.append(&mut bytes, 0).unwrap();
    let writes = fill(&log, 10, 3, 0, DAY_MS);
    manager.clean_now(true);
    let batches = read_all(&log);
    let kept = batches
        .iter()
        .map(|b| RecordBatch::parse(b).unwrap())
        .find(|b| b.header().producer_id() == 42)
        .expect("the producer's last batch is kept");
    assert_eq!(kept.header().record_count(), 0);
    assert_eq!(kept.header().base_offset(), info.first_offset);
    assert_eq!(kept.header().last_offset(), info.last_offset);
    assert_eq!(replay(&records(&log)), model(&writes));

    // The producer's state (last sequence 2) is rebuilt from the empty batch after a restart
    // without snapshots.
    drop(log);
    drop(manager);
    for entry in std::fs::read_dir(dir.path().join(tp(0).dir_name())).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let manager = open(
        dir.path(),
        compacted_config(1024),
        Arc::new(ManualClock::new(DAY_MS)),
    );
    let log = manager.get(&tp(0)).unwrap();
    let states = log.producer_states();
    let entry = states.get(42).expect("producer 42 known");
    assert_eq!(entry.batches.back().unwrap().last_sequence, 2);

    // Once the producer has written a later batch, the empty one is no longer needed.
    let mut builder = BatchBuilder::new(Compression::None).producer(42, 3, 3);
    builder.push(OwnedRecord::new(
        Some(b"key-2".to_vec()),
        Some(vec![b'z'; 30]),
        DAY_MS,
    ));
    let mut bytes = builder.build().unwrap();
    let later = log.append(&mut bytes, 0).unwrap();
    assert!(later.first_offset > info.last_offset);
    fill(&log, 10, 1, 0, DAY_MS);
    manager.clean_now(true);
    let bases: Vec<i64> = read_all(&log)
        .iter()
        .map(|b| RecordBatch::parse(b).unwrap().header().base_offset())
        .collect();
    assert!(
        !bases.contains(&info.first_offset),
        "the superseded empty batch was dropped: {bases:?}"
    );
}

#[test]
fn a_small_offset_map_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(DAY_MS));
    let mut config = common::manager_config(dir.path(), compacted_config(8 * 1024));
    config.cleaner_dedupe_buffer_bytes = 120 * sluice_log::OFFSET_MAP_BYTES_PER_KEY;
    config.cleaner_enabled = false;
    let manager = sluice_log::LogManager::open_with_clock(config, clock).unwrap();
    let log = manager.get_or_create(&tp(0)).unwrap();
    let writes = fill(&log, 500, 4, 50, DAY_MS);
    let mut passes = 0;
    while !manager.clean_now(false).is_empty() {
        passes += 1;
        assert_eq!(replay(&records(&log)), model(&writes));
        assert!(passes < 100);
    }
    assert!(
        passes > 3,
        "a 120-key map needs several passes over 500 keys, took {passes}"
    );
    let all = records(&log);
    let first_dirty = log.cleaner_first_dirty_offset().unwrap();
    let below: Vec<_> = all.iter().filter(|(o, ..)| *o < first_dirty).collect();
    let keys: std::collections::HashSet<_> = below.iter().map(|(_, k, _)| k).collect();
    assert_eq!(
        keys.len(),
        below.len(),
        "one record per key below the dirty offset"
    );
}

#[test]
fn compaction_never_moves_the_log_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(DAY_MS));
    let manager = open(dir.path(), compacted_config(4 * 1024), clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    fill(&log, 50, 3, 0, DAY_MS);
    manager.clean_now(true);
    // Supersede every key of the old segments, then clean again: old segments empty out.
    let writes = fill(&log, 50, 3, 0, DAY_MS);
    manager.clean_now(true);
    manager.clean_now(true);
    assert_eq!(log.offsets().log_start_offset, 0);
    let first = log.read(0, 1 << 20).unwrap();
    assert!(
        first.region.is_some(),
        "reading from offset 0 finds the first surviving batch"
    );
    let all = records(&log);
    let mut expected = model(&writes);
    expected.insert(
        "key-65535".into(),
        Some(format!("value-65535-0-{}", "x".repeat(40))),
    );
    assert_eq!(replay(&all), expected);
    drop(log);
    drop(manager);
    let manager = open(dir.path(), compacted_config(4 * 1024), clock);
    let log = manager.get(&tp(0)).unwrap();
    assert_eq!(
        log.offsets().log_start_offset,
        0,
        "log start survives a restart"
    );
}

/// The states a power loss during a swap can leave, since the swap's last renames are not
/// synced one by one (no fsync under the partition lock): each must reopen as exactly the
/// old or exactly the new segment set.
#[test]
fn power_loss_during_a_swap_leaves_the_old_or_the_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(DAY_MS));
    let manager = open(dir.path(), compacted_config(1024), clock.clone());
    let log = manager.get_or_create(&tp(0)).unwrap();
    fill(&log, 200, 4, 10, DAY_MS);
    // The first pass empties the superseded segments; the second merges them.
    manager.clean_now(true);
    let partition_dir = log.dir().to_path_buf();
    let before = records(&log);
    let old_logs = log_files(&partition_dir);
    manager.clean_now(true);
    let after = records(&log);
    drop(log);
    manager.shutdown().unwrap();
    drop(manager);
    let new_logs = log_files(&partition_dir);
    // A swapped group: a base both sets have, followed in the old set by bases it replaced.
    let (base, end, replaced) = new_logs
        .keys()
        .find_map(|&base| {
            let end = new_logs.range(base + 1..).next().map(|(b, _)| *b)?;
            let replaced: Vec<i64> = old_logs.range(base + 1..end).map(|(b, _)| *b).collect();
            (!replaced.is_empty()).then_some((base, end, replaced))
        })
        .expect("a swap replaced several segments");

    let lay_out = |logs: &BTreeMap<i64, Vec<u8>>, extra: &[(String, Vec<u8>)]| {
        for entry in std::fs::read_dir(&partition_dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let segment_file = name.ends_with(".log")
                || name.ends_with(".index")
                || name.ends_with(".timeindex")
                || name.contains(".log.");
            if segment_file {
                std::fs::remove_file(&path).unwrap();
            }
        }
        for (base, bytes) in logs {
            std::fs::write(partition_dir.join(format!("{base:020}.log")), bytes).unwrap();
        }
        for (name, bytes) in extra {
            std::fs::write(partition_dir.join(name), bytes).unwrap();
        }
        let _ = std::fs::remove_file(dir.path().join(sluice_log::CLEAN_SHUTDOWN_FILE));
    };
    let reopen_and_read = || {
        let manager = open(dir.path(), compacted_config(1024), clock.clone());
        let log = manager.get(&tp(0)).unwrap();
        // Strictly increasing offsets: no old segment overlaps the new one.
        let read = records(&log);
        let marker = partition_dir.join(format!("{base:020}.swapend"));
        assert!(!marker.exists(), "startup removes the swap marker");
        let bases: Vec<i64> = common::segment_bases(&partition_dir);
        (read, bases)
    };
    let old_bases: Vec<i64> = old_logs.keys().copied().collect();
    let new_bases: Vec<i64> = new_logs.keys().copied().collect();
    let marker = (
        format!("{base:020}.swapend"),
        format!("{end}\n").into_bytes(),
    );

    // Installed: the new log is live, the old ones' renames to `.deleted` were lost.
    let mut installed = new_logs.clone();
    for old in &replaced {
        installed.insert(*old, old_logs[old].clone());
    }
    lay_out(&installed, std::slice::from_ref(&marker));
    assert_eq!(
        reopen_and_read(),
        (after.clone(), new_bases.clone()),
        "installed swap keeps the new set"
    );

    // Never committed: the `.cleaned` log is still beside the old ones.
    let cleaned = (format!("{base:020}.log.cleaned"), new_logs[&base].clone());
    lay_out(&old_logs, &[cleaned, marker.clone()]);
    assert_eq!(
        reopen_and_read(),
        (before.clone(), old_bases.clone()),
        "uncommitted swap keeps the old set"
    );

    // A marker beside the old logs alone (no `.cleaned`): nothing the old log does not
    // overlap is removed.
    lay_out(&old_logs, std::slice::from_ref(&marker));
    assert_eq!(
        reopen_and_read(),
        (before.clone(), old_bases.clone()),
        "a stray marker costs nothing"
    );

    // Committed, nothing renamed live yet.
    let swap = (format!("{base:020}.log.swap"), new_logs[&base].clone());
    lay_out(&old_logs, &[swap, marker]);
    assert_eq!(
        reopen_and_read(),
        (after, new_bases),
        "committed swap installs the new set"
    );
}

/// The `.log` files of a partition directory, by base offset.
fn log_files(dir: &std::path::Path) -> BTreeMap<i64, Vec<u8>> {
    common::segment_bases(dir)
        .into_iter()
        .map(|base| {
            let bytes = std::fs::read(dir.join(format!("{base:020}.log"))).unwrap();
            (base, bytes)
        })
        .collect()
}
