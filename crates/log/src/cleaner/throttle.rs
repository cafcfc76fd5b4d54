//! Pacing of a cleaning pass's reads (`log.cleaner.io.max.bytes.per.second`).

use std::time::{Duration, Instant};

/// Paces a pass's I/O to a byte rate.
pub(super) struct Throttle {
    rate: f64,
    started: Instant,
    bytes: f64,
}

impl Throttle {
    pub(super) fn new(rate: f64) -> Self {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: 0.0,
        }
    }

    pub(super) fn account(&mut self, bytes: u64) {
        let pause = self.pause_after(bytes, self.started.elapsed());
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }

    /// How long to sleep after `bytes` more, `elapsed` into the pass, to stay at the rate.
    pub(super) fn pause_after(&mut self, bytes: u64, elapsed: Duration) -> Duration {
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        self.bytes += bytes as f64;
        Duration::from_secs_f64(self.bytes / self.rate).saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_pauses_exactly_when_ahead_of_its_rate() {
        let mut throttle = Throttle::new(1_000_000.0);
        // 500 kB at 0.1 s: 0.4 s ahead of 1 MB/s.
        assert_eq!(
            throttle.pause_after(500_000, Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        // 600 kB in total at 0.7 s: behind, no pause.
        assert_eq!(
            throttle.pause_after(100_000, Duration::from_millis(700)),
            Duration::ZERO
        );
        let mut unlimited = Throttle::new(f64::INFINITY);
        assert_eq!(
            unlimited.pause_after(u64::MAX, Duration::ZERO),
            Duration::ZERO
        );
    }
}
