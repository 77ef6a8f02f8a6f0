//! One clock for the daemon's logic, injected: TTLs, expiries, tamper windows and audit
//! times all read it, so tests move time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock unix milliseconds (0 before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Wall-clock unix seconds.
pub fn now_secs() -> i64 {
    now_ms() / 1000
}

pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Time since an arbitrary fixed start that never goes back (windows, uptime).
    fn monotonic(&self) -> Duration;

    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The machine's clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: std::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { start: std::time::Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock::default())
}

/// A clock tests move by hand; clones share the time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    ms: Arc<AtomicI64>,
    start: i64,
}

impl FakeClock {
    /// Starts at `unix_ms`.
    pub fn at(unix_ms: i64) -> FakeClock {
        FakeClock { ms: Arc::new(AtomicI64::new(unix_ms)), start: unix_ms }
    }

    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.now_ms() - self.start).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_moves_only_when_told() {
        let c = FakeClock::at(1_700_000_000_000);
        assert_eq!(c.now_secs(), 1_700_000_000);
        let shared = c.clone();
        c.advance(Duration::from_millis(1500));
        assert_eq!(shared.now_ms(), 1_700_000_001_500);
        assert_eq!(shared.monotonic(), Duration::from_millis(1500));
        assert!(SystemClock::default().now_ms() > 1_600_000_000_000);
    }
}
