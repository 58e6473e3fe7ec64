//! When to retry: the delay before retry number n, with jitter, never above `max_delay`.

use std::time::Duration;

use rand::Rng;

use super::config::{Backoff, Jitter, RetryConfig};

/// The validated timing of one operation's retries.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffSchedule {
    initial_delay: Duration,
    multiplier: f64,
    max_delay: Duration,
    backoff: Backoff,
    jitter: Jitter,
}

impl BackoffSchedule {
    /// Takes the timing fields of an already validated configuration.
    pub(crate) fn from_validated(config: &RetryConfig) -> Self {
        BackoffSchedule {
            initial_delay: config.initial_delay,
            multiplier: config.backoff_multiplier,
            max_delay: config.max_delay,
            backoff: config.backoff.clone(),
            jitter: config.jitter,
        }
    }

    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The delay before retry `retry` (1 for the first retry) without jitter, capped.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let step = retry.max(1) - 1;
        let delay = match &self.backoff {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed => self.initial_delay,
            Backoff::Exponential => {
                let factor = self.multiplier.powi(step.min(i32::MAX as u32) as i32);
                let seconds = self.initial_delay.as_secs_f64() * factor;
                Duration::try_from_secs_f64(seconds).unwrap_or(self.max_delay)
            }
            Backoff::Schedule(delays) => delays
                .get(step as usize)
                .or(delays.last())
                .copied()
                .unwrap_or(Duration::ZERO),
        };
        delay.min(self.max_delay)
    }

    /// The delay to sleep before retry `retry`, jittered with `rng`. `previous` is the delay slept
    /// before the previous retry (`Duration::ZERO` before the first), used by decorrelated jitter.
    /// The result is always within `[0, max_delay]`.
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(retry);
        let jittered = match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(rng.random::<f64>()),
            Jitter::Equal => base / 2 + (base / 2).mul_f64(rng.random::<f64>()),
            Jitter::Decorrelated => {
                if matches!(self.backoff, Backoff::None) {
                    Duration::ZERO
                } else {
                    let low = self.initial_delay;
                    let high = previous.max(low).saturating_mul(3).min(self.max_delay);
                    low + (high.saturating_sub(low)).mul_f64(rng.random::<f64>())
                }
            }
        };
        jittered.min(self.max_delay)
    }
}
