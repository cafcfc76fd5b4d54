//! Model-based property test: random sequences of append, read, clock moves, clean and
//! unclean reopen, retention, DeleteRecords and timestamp lookups, checked against a plain
//! in-memory list of batches. Segment boundaries are read from the directory, so the model
//! checks the log's decisions without re-implementing them.

mod common;

use std::sync::Arc;

use common::{batch, open, read_all, segment_bases, tp};
use proptest::prelude::*;
use sluice_log::{Clock, LogConfig, LogError, LogManager, ManualClock};
use sluice_record::{Batches, RecordBatch};

const T0: i64 = 1_700_000_000_000;
const RETENTION_MS: i64 = 30_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        segment_ms: 10_000,
        retention_ms: RETENTION_MS,
        ..LogConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Read { at: u32, max_bytes: usize },
    AdvanceClock(i64),
    Reopen { clean: bool },
    Retention,
    DeleteRecords { at: u32 },
    TimestampLookup { back_ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..400).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        5 => (any::<u32>(), 1usize..3000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (0i64..20_000).prop_map(Op::AdvanceClock),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => Just(Op::Retention),
        1 => any::<u32>().prop_map(|at| Op::DeleteRecords { at }),
        1 => (0i64..60_000).prop_map(|back_ms| Op::TimestampLookup { back_ms }),
    ]
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base: i64,
    next: i64,
    timestamp: i64,
    bytes: Vec<u8>,
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    manager: Option<LogManager>,
    batches: Vec<ModelBatch>,
    log_start: i64,
    next: i64,
    tags: u64,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let manager = open(dir.path(), config(), clock.clone());
        manager.get_or_create(&tp(0)).unwrap();
        Harness {
            dir,
            clock,
            manager: Some(manager),
            batches: Vec::new(),
            log_start: 0,
            next: 0,
            tags: 0,
        }
    }

    fn manager(&self) -> &LogManager {
        self.manager.as_ref().unwrap()
    }

    fn log(&self) -> Arc<sluice_log::Log> {
        self.manager().get(&tp(0)).unwrap()
    }

    fn part_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("test-topic-0")
    }

    /// Offsets in `[log_start - 1, next + 1]`, so out-of-range cases come up too.
    fn pick_offset(&self, at: u32) -> i64 {
        let span = self.next - self.log_start + 3;
        self.log_start - 1 + i64::from(at) % span
    }

    fn live(&self) -> impl Iterator<Item = &ModelBatch> {
        self.batches.iter().filter(move |b| b.next > self.log_start)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Append { records, value_len } => {
                let now = self.clock.now_ms();
                let mut bytes = batch(records, value_len, now, self.tags);
                self.tags += 1;
                let info = self.log().append(&mut bytes, 0).unwrap();
                prop_assert_eq!(info.first_offset, self.next);
                let next = self.next + records as i64;
                self.batches.push(ModelBatch {
                    base: self.next,
                    next,
                    timestamp: now,
                    bytes,
                });
                self.next = next;
            }
            Op::Read { at, max_bytes } => self.check_read(self.pick_offset(at), max_bytes)?,
            Op::AdvanceClock(ms) => self.clock.advance(ms),
            Op::Reopen { clean } => {
                let manager = self.manager.take().unwrap();
                if clean {
                    manager.shutdown().unwrap();
                }
                drop(manager);
                self.manager = Some(open(self.dir.path(), config(), self.clock.clone()));
                let served = read_all(&self.log());
                let expected: Vec<_> = self.live().map(|b| b.bytes.clone()).collect();
                prop_assert!(
                    served == expected,
                    "log differs after reopen (clean: {})",
                    clean
                );
            }
            Op::Retention => self.check_retention()?,
            Op::DeleteRecords { at } => {
                let offset = self.pick_offset(at);
                match self.manager().delete_records(&tp(0), offset) {
                    Ok(start) => {
                        prop_assert!(offset >= 0 && offset <= self.next);
                        prop_assert_eq!(start, self.log_start.max(offset));
                        self.log_start = start;
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => {
                        prop_assert!(offset < 0 || offset > self.next);
                    }
                    Err(err) => return Err(TestCaseError::fail(format!("delete records: {err}"))),
                }
            }
            Op::TimestampLookup { back_ms } => {
                let target = self.clock.now_ms() - back_ms;
                let expected = self
                    .live()
                    .find(|b| b.timestamp >= target)
                    .map(|b| (b.base.max(self.log_start), b.timestamp));
                let found = self.log().offset_for_timestamp(target).unwrap();
                prop_assert_eq!(found.map(|f| (f.offset, f.timestamp)), expected);
            }
        }
        let offsets = self.log().offsets();
        prop_assert_eq!(offsets.log_start_offset, self.log_start);
        prop_assert_eq!(offsets.log_end_offset, self.next);
        Ok(())
    }

    fn check_read(&self, offset: i64, max_bytes: usize) -> Result<(), TestCaseError> {
        let result = self.log().read(offset, max_bytes);
        if offset < self.log_start || offset > self.next {
            prop_assert!(
                matches!(result, Err(LogError::OffsetOutOfRange { .. })),
                "{:?}",
                result
            );
            return Ok(());
        }
        let result = result.unwrap();
        let Some(region) = result.region else {
            prop_assert_eq!(offset, self.next);
            return Ok(());
        };
        let bytes = region.read_to_vec().unwrap();
        let got: Vec<RecordBatch<'_>> = Batches::new(&bytes).map(|b| b.unwrap()).collect();
        let start = self
            .batches
            .iter()
            .position(|b| b.base <= offset && offset < b.next)
            .unwrap();
        let expected = &self.batches[start..];
        prop_assert!(!got.is_empty() && got.len() <= expected.len());
        for (g, e) in got.iter().zip(expected) {
            prop_assert_eq!(g.as_bytes(), &e.bytes[..]);
        }
        let limit = max_bytes.max(expected[0].bytes.len());
        prop_assert!(bytes.len() <= limit);
        // Maximal: stopped at the end, at the byte limit, or at a segment boundary.
        if let Some(following) = expected.get(got.len()) {
            let at_limit = bytes.len() + following.bytes.len() > limit;
            let at_boundary = segment_bases(&self.part_dir()).contains(&following.base);
            prop_assert!(
                at_limit || at_boundary,
                "read stopped early before {}",
                following.base
            );
        }
        Ok(())
    }

    fn check_retention(&mut self) -> Result<(), TestCaseError> {
        let now = self.clock.now_ms();
        let old_start = self.log_start;
        self.manager().enforce_retention();
        let new_start = self.log().offsets().log_start_offset;
        prop_assert!(new_start >= old_start);
        for b in self
            .batches
            .iter()
            .filter(|b| b.next <= new_start && b.next > old_start)
        {
            prop_assert!(
                now - b.timestamp > RETENTION_MS,
                "deleted unexpired batch at {}",
                b.base
            );
        }
        self.log_start = new_start;
        // Nothing left that should have gone: the oldest segment holds an unexpired batch
        // unless it is the (empty or unexpired) active segment.
        let bases = segment_bases(&self.part_dir());
        let first_segment_end = bases.get(1).copied().unwrap_or(i64::MAX);
        let oldest: Vec<_> = self
            .live()
            .filter(|b| b.base < first_segment_end)
            .map(|b| b.timestamp)
            .collect();
        if !oldest.is_empty() {
            prop_assert!(
                oldest.iter().any(|ts| now - ts <= RETENTION_MS),
                "an expired segment survived retention"
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op)?;
            if let Err(violation) = harness.log().check_invariants() {
                return Err(TestCaseError::fail(format!("after {op:?}: {violation}")));
            }
        }
        let final_state = read_all(&harness.log());
        let expected: Vec<_> = harness.live().map(|b| b.bytes.clone()).collect();
        prop_assert!(final_state == expected);
    }
}
