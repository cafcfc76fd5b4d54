//! Fuzzes the handlers themselves: each input is one request frame served by a broker that
//! lives for the whole run (its state grows with the inputs, within the caps configured
//! below). Nothing may panic; no input may make the process's resident memory grow by more
//! than `MAX_GROWTH_PER_INPUT`. `crates/broker/tests/handler_fuzz.rs` runs the same
//! property on mutated frames in CI.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run handlers` (seeds: `cargo run --bin seed_corpus`,
//! then copy `corpus/request_decoder` to `corpus/handlers`).
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_broker::{Broker, BrokerConfig, GuardedAllocator, serve_frame};

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

const MAX_GROWTH_PER_INPUT: usize = 128 << 20;
const INPUT_DEADLINE: Duration = Duration::from_millis(100);

struct Target {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("data dir");
        let mut props = BTreeMap::new();
        for (key, value) in [
            ("listeners", "127.0.0.1:0".to_string()),
            ("log.dirs", dir.path().display().to_string()),
            ("max.broker.partitions", "64".into()),
            ("group.max.count", "64".into()),
            ("log.segment.bytes", "65536".into()),
            ("log.retention.bytes", "1048576".into()),
            ("group.initial.rebalance.delay.ms", "0".into()),
        ] {
            props.insert(key.to_string(), value);
        }
        let config = BrokerConfig::from_overrides(props).expect("config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let broker = Broker::open(config).expect("broker opens");
        Target { runtime, broker, _dir: dir }
    })
}

fn resident() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fuzz_target!(|data: &[u8]| {
    let target = target();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (before, _) = resident();
    let peer = "127.0.0.1:9".parse().expect("address");
    let frame = Bytes::copy_from_slice(data);
    let _ = target.runtime.block_on(async {
        tokio::time::timeout(INPUT_DEADLINE, serve_frame(&target.broker, frame, peer)).await
    });
    let growth = resident().1.saturating_sub(before);
    assert!(growth < MAX_GROWTH_PER_INPUT, "one input took {growth} bytes of memory");
});
