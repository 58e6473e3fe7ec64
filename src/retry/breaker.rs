//! The circuit breaker: stops calling a device that keeps failing.
//!
//! Closed (calls pass) → open after `failure_threshold` consecutive device failures, or when the
//! failure ratio over a window passes `failure_ratio` → after `cooldown`, half-open: up to
//! `half_open_probes` calls are admitted as probes → that many successes close it, one failure
//! opens it again. `isolate()` forces it open until `reset()`. One breaker per device.
//!
//! The closed state is checked with one atomic load, and a success in it writes nothing unless a
//! failure streak needs clearing, so the breaker costs the success path almost nothing.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::IntGauge;

use crate::error::ConfigError;

use super::clock::Clock;
use super::events::Events;

/// A breaker's state. The discriminant is the value of `hipinfer_circuit_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    #[default]
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl BreakerState {
    fn from_u8(value: u8) -> BreakerState {
        match value {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// Trips on a failure ratio: at least `min_calls` calls in a window of `window`, of which at least
/// `ratio` failed. Windows are tumbling and are rolled over when a failure is recorded.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRatio {
    pub ratio: f64,
    pub min_calls: u64,
    #[serde(with = "super::duration_text::serde_duration")]
    pub window: Duration,
}

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive device failures that open the breaker (default 5).
    pub failure_threshold: u32,
    /// Also open on a failure ratio (default off).
    pub failure_ratio: Option<FailureRatio>,
    /// How long it stays open before admitting probes (default 5 s).
    #[serde(with = "super::duration_text::serde_duration")]
    pub cooldown: Duration,
    /// Probe calls admitted when half-open; all must succeed to close (default 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            failure_ratio: None,
            cooldown: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::new(
                "breaker.failure_threshold",
                "must be at least 1",
            ));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::new(
                "breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        if let Some(ratio) = &self.failure_ratio {
            if !(ratio.ratio > 0.0 && ratio.ratio <= 1.0) {
                return Err(ConfigError::new(
                    "breaker.failure_ratio.ratio",
                    format!("{} is not in (0, 1]", ratio.ratio),
                ));
            }
            if ratio.min_calls == 0 {
                return Err(ConfigError::new(
                    "breaker.failure_ratio.min_calls",
                    "must be at least 1",
                ));
            }
            if ratio.window.is_zero() {
                return Err(ConfigError::new(
                    "breaker.failure_ratio.window",
                    "must be longer than 0",
                ));
            }
        }
        Ok(())
    }
}

/// What the breaker let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A normal call (closed breaker).
    Normal,
    /// A half-open probe: its outcome decides the breaker's state.
    Probe,
    /// A call the breaker does not gate and whose outcome it does not count: a device reset,
    /// which is the breaker's cure rather than a call it protects.
    Bypass,
}

/// The breaker said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// When it will admit a probe; `None` when isolated by hand.
    pub retry_after: Option<Duration>,
}

/// How an admitted call went, as far as the device's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    /// A failure that says the device is unwell (Retry, Reclaim, Reset, Probe classes).
    Failure,
    /// Neither (a Fatal caller error, a "not ready" poll).
    Neutral,
}

#[derive(Debug)]
struct Transitions {
    opened_at: Duration,
    isolated: bool,
    probes_in_flight: u32,
    probe_successes: u32,
    window_start: Duration,
    window_failures: u64,
}

/// A circuit breaker for one device; shared by every call to it.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    device: i32,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    window_calls: AtomicU64,
    rejected: AtomicU64,
    inner: Mutex<Transitions>,
    clock: Arc<dyn Clock>,
    gauge: Option<IntGauge>,
    events: Events,
}

impl CircuitBreaker {
    pub(crate) fn new(
        config: BreakerConfig,
        device: i32,
        clock: Arc<dyn Clock>,
        gauge: Option<IntGauge>,
        events: Events,
    ) -> Self {
        if let Some(gauge) = &gauge {
            gauge.set(BreakerState::Closed as i64);
        }
        let now = clock.now();
        CircuitBreaker {
            config,
            device,
            state: AtomicU8::new(BreakerState::Closed as u8),
            consecutive_failures: AtomicU32::new(0),
            window_calls: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inner: Mutex::new(Transitions {
                opened_at: now,
                isolated: false,
                probes_in_flight: 0,
                probe_successes: 0,
                window_start: now,
                window_failures: 0,
            }),
            clock,
            gauge,
            events,
        }
    }

    pub fn device(&self) -> i32 {
        self.device
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Calls rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Asks to make a call.
    #[inline]
    pub fn admit(&self) -> Result<Admission, Rejected> {
        if self.state.load(Ordering::Acquire) == BreakerState::Closed as u8 {
            return Ok(Admission::Normal);
        }
        self.admit_slow()
    }

    #[cold]
    fn admit_slow(&self) -> Result<Admission, Rejected> {
        let mut inner = self.inner.lock();
        let now = self.clock.now();
        let state = self.state();
        let rejected = |retry_after| {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            Err(Rejected { retry_after })
        };
        match state {
            BreakerState::Closed => Ok(Admission::Normal),
            BreakerState::Open if inner.isolated => rejected(None),
            BreakerState::Open => {
                let open_for = now.saturating_sub(inner.opened_at);
                if open_for < self.config.cooldown {
                    return rejected(Some(self.config.cooldown - open_for));
                }
                inner.probes_in_flight = 1;
                inner.probe_successes = 0;
                self.transition(BreakerState::Open, BreakerState::HalfOpen);
                Ok(Admission::Probe)
            }
            BreakerState::HalfOpen => {
                if inner.probes_in_flight + inner.probe_successes < self.config.half_open_probes {
                    inner.probes_in_flight += 1;
                    Ok(Admission::Probe)
                } else {
                    rejected(Some(Duration::ZERO))
                }
            }
        }
    }

    /// Reports how an admitted call went.
    #[inline]
    pub fn record(&self, admission: Admission, outcome: CallOutcome) {
        match (admission, outcome) {
            (Admission::Normal, CallOutcome::Success) => {
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
                if self.config.failure_ratio.is_some() {
                    self.window_calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Admission::Normal, CallOutcome::Neutral) => {}
            (Admission::Normal, CallOutcome::Failure) => self.record_failure(),
            (Admission::Probe, outcome) => self.record_probe(outcome),
            (Admission::Bypass, _) => {}
        }
    }

    #[cold]
    fn record_failure(&self) {
        let streak = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.inner.lock();
        let mut trip = streak >= self.config.failure_threshold;
        if let Some(ratio) = &self.config.failure_ratio {
            let now = self.clock.now();
            if now.saturating_sub(inner.window_start) > ratio.window {
                inner.window_start = now;
                inner.window_failures = 0;
                self.window_calls.store(0, Ordering::Relaxed);
            }
            inner.window_failures += 1;
            let calls = self.window_calls.fetch_add(1, Ordering::Relaxed) + 1;
            trip |= calls >= ratio.min_calls
                && inner.window_failures as f64 >= ratio.ratio * calls as f64;
        }
        if trip && self.state() == BreakerState::Closed {
            self.open(&mut inner, BreakerState::Closed);
        }
    }

    #[cold]
    fn record_probe(&self, outcome: CallOutcome) {
        let mut inner = self.inner.lock();
        if self.state() != BreakerState::HalfOpen {
            return; // reset or isolated by hand while the probe ran
        }
        inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        match outcome {
            CallOutcome::Neutral => {}
            CallOutcome::Failure => self.open(&mut inner, BreakerState::HalfOpen),
            CallOutcome::Success => {
                inner.probe_successes += 1;
                if inner.probe_successes >= self.config.half_open_probes {
                    self.close(&mut inner, BreakerState::HalfOpen);
                }
            }
        }
    }

    fn open(&self, inner: &mut Transitions, from: BreakerState) {
        inner.opened_at = self.clock.now();
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        self.transition(from, BreakerState::Open);
    }

    fn close(&self, inner: &mut Transitions, from: BreakerState) {
        inner.isolated = false;
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        inner.window_start = self.clock.now();
        inner.window_failures = 0;
        self.window_calls.store(0, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.transition(from, BreakerState::Closed);
    }

    fn transition(&self, from: BreakerState, to: BreakerState) {
        self.state.store(to as u8, Ordering::Release);
        if let Some(gauge) = &self.gauge {
            gauge.set(to as i64);
        }
        if from != to {
            self.events
                .breaker(self.clock.wall(), self.device, from.as_str(), to.as_str());
        }
    }

    /// Takes the device out of service until [`CircuitBreaker::reset`].
    pub fn isolate(&self) {
        let mut inner = self.inner.lock();
        let from = self.state();
        inner.isolated = true;
        self.open(&mut inner, from);
    }

    /// Closes the breaker and forgets every failure (after a manual repair or a device reset).
    pub fn reset(&self) {
        let mut inner = self.inner.lock();
        let from = self.state();
        self.close(&mut inner, from);
    }
}
