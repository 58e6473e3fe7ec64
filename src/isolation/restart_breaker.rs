//! The respawn breaker: more than `max_restarts` worker restarts within `window` mean the worker
//! crash-loops; the engine then reports itself unhealthy and fails requests with a clear error
//! instead of starting workers forever. Restarts older than the window stop counting, so a
//! device that recovers is used again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RestartBreaker {
    max_restarts: u32,
    window: Duration,
    restarts: VecDeque<Instant>,
}

impl RestartBreaker {
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        RestartBreaker {
            max_restarts,
            window,
            restarts: VecDeque::new(),
        }
    }

    /// Restarts within the window at `now`.
    pub fn recent(&mut self, now: Instant) -> u32 {
        while self
            .restarts
            .front()
            .is_some_and(|&at| now.duration_since(at) >= self.window)
        {
            self.restarts.pop_front();
        }
        self.restarts.len() as u32
    }

    /// Whether one more restart is allowed at `now`.
    pub fn allows(&mut self, now: Instant) -> bool {
        self.recent(now) < self.max_restarts
    }

    /// Records a restart.
    pub fn record(&mut self, now: Instant) {
        self.restarts.push_back(now);
    }

    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_past_the_limit_and_forgets_old_restarts() {
        let start = Instant::now();
        let mut breaker = RestartBreaker::new(3, Duration::from_secs(600));
        for i in 0..3 {
            let at = start + Duration::from_secs(i);
            assert!(breaker.allows(at));
            breaker.record(at);
        }
        assert!(!breaker.allows(start + Duration::from_secs(10)));
        assert!(
            breaker.allows(start + Duration::from_secs(601)),
            "the first restart aged out"
        );
    }
}
