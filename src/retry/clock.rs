//! Time, injected: the retry layer reads and sleeps through a [`Clock`] so tests never sleep.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// A source of time for synchronous retry code, the circuit breaker and the retry budget.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic time since this clock's origin.
    fn now(&self) -> Duration;
    /// Wall-clock time, for the timestamps of the retry history and events.
    fn wall(&self) -> SystemTime;
    /// Blocks the calling thread for `duration`.
    fn sleep(&self, duration: Duration);
}

/// The real clock: `Instant` for elapsed time, `thread::sleep` for waits.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration)
    }
}

/// A manual clock for tests: `sleep` advances time at once and records the wait.
#[derive(Debug, Default)]
pub struct FakeClock {
    inner: Mutex<FakeTime>,
}

#[derive(Debug, Default)]
struct FakeTime {
    now: Duration,
    sleeps: Vec<Duration>,
}

impl FakeClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward without recording a sleep.
    pub fn advance(&self, duration: Duration) {
        self.inner.lock().now += duration;
    }

    /// Every sleep so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner.lock().sleeps.clone()
    }

    /// The sum of every sleep so far.
    pub fn total_slept(&self) -> Duration {
        self.inner.lock().sleeps.iter().sum()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        self.inner.lock().now
    }

    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.now()
    }

    fn sleep(&self, duration: Duration) {
        let mut time = self.inner.lock();
        time.now += duration;
        time.sleeps.push(duration);
    }
}
