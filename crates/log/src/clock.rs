//! Time as Sluice sees it, injectable so that tests drive everything that waits or expires
//! (segment rolling, retention, producer expiry, group sessions and rebalances, offset
//! retention, metric timestamps) on a clock they move by hand.
//!
//! Two readings: wall-clock milliseconds (what is stored in records and compared with their
//! timestamps) and a monotonic instant (deadlines, which must not jump with the wall clock).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Microseconds since the Unix epoch (a clock without them counts whole milliseconds).
    fn now_micros(&self) -> i64 {
        self.now_ms().saturating_mul(1000)
    }
    /// A monotonic instant, for deadlines.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn now_micros(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to. [`ManualClock::advance`] moves both readings;
/// [`ManualClock::set`] moves the wall clock only (as an NTP step would), never the monotonic
/// one.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: AtomicI64,
    origin: Instant,
    elapsed_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            wall_ms: AtomicI64::new(start_ms),
            origin: Instant::now(),
            elapsed_ms: AtomicI64::new(0),
        }
    }

    pub fn advance(&self, ms: i64) {
        assert!(ms >= 0, "a clock does not run backwards: advance({ms})");
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
        self.elapsed_ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, ms: i64) {
        self.wall_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn now(&self) -> Instant {
        self.origin + Duration::from_millis(self.elapsed_ms.load(Ordering::SeqCst) as u64)
    }
}
