//! What the engine knows about its own health, and the three answers built from it:
//!
//! - **liveness** (`/livez`): the process and its step thread are alive — no device work, never
//!   queued behind a step (see `watchdog.rs`);
//! - **readiness** (`/health`, `/readyz`): a real kernel round trip on the device succeeded
//!   recently, where "recently" is at least twice the longest of the recent steps — so a server
//!   busy with long steps stays ready, while one whose device stopped answering does not;
//! - **mode**: serving on the device, degraded (the device is lost and the CPU fallback serves,
//!   still ready), or unhealthy (the device is lost and nothing serves).
//!
//! When no success is recent enough, one probe kernel is asked of the step thread; every health
//! call arriving meanwhile waits for that same probe (never a second one queued, never a thread
//! per caller: async callers wait on a `Notify`, blocking ones on a condition variable).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use crate::retry::BreakerState;

/// Steps remembered for the freshness window.
const RECENT_STEPS: usize = 32;

/// Why the engine is not (fully) serving: a closed set, safe to show without authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCause {
    /// The device's context is lost for the process, or its worker cannot be restarted.
    DeviceLost,
    /// Recovering the device (resets, weight uploads) failed.
    RecoveryFailed,
    /// The probe kernel failed or computed a wrong answer.
    ProbeFailed,
    /// The probe got no answer in time (a step or the device is stuck).
    ProbeTimeout,
    /// The device's circuit breaker is open.
    BreakerOpen,
    ShuttingDown,
}

impl HealthCause {
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthCause::DeviceLost => "device_lost",
            HealthCause::RecoveryFailed => "recovery_failed",
            HealthCause::ProbeFailed => "probe_failed",
            HealthCause::ProbeTimeout => "probe_timeout",
            HealthCause::BreakerOpen => "breaker_open",
            HealthCause::ShuttingDown => "shutting_down",
        }
    }
}

/// The engine's answer to "can you serve?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `ok`, `degraded` (the CPU fallback serves) or `unhealthy`.
    pub status: &'static str,
    /// Whether requests are served (true when `ok` or `degraded`).
    pub ready: bool,
    pub degraded: bool,
    /// The class of why not (or why degraded).
    pub cause: Option<HealthCause>,
    /// The details, for operators (may name files, programs and device errors).
    pub reason: Option<String>,
    /// The device's circuit breaker: `closed`, `half_open` or `open`.
    pub breaker: &'static str,
    /// The backend serving now (`cpu`, `hip`, `worker`; `cpu (fallback)` when degraded).
    pub backend: String,
}

/// What the step thread is serving with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    Serving,
    Degraded {
        cause: HealthCause,
        reason: String,
        since: Instant,
    },
    Unhealthy {
        cause: HealthCause,
        reason: String,
    },
}

/// Where a probe stands.
#[derive(Debug, Default)]
struct Probes {
    /// The probe asked for or running (its number), if any.
    current: Option<u64>,
    /// The last probe finished, with its result.
    last: Option<(u64, Result<(), ProbeFailure>)>,
    numbered: u64,
}

/// A probe's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeFailure {
    pub cause: HealthCause,
    pub reason: String,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    last_success: Option<Instant>,
    recent_steps: VecDeque<Duration>,
    probes: Probes,
    backend: String,
    breaker: BreakerState,
    degraded_for: Duration,
    /// The shortest time a success vouches for the device.
    fresh_for: Duration,
}

/// The health state the step thread writes and health checks read.
#[derive(Debug)]
pub(crate) struct EngineHealth {
    state: Mutex<State>,
    probe_done: Condvar,
    probe_notify: tokio::sync::Notify,
}

/// A readiness verdict before any probe.
pub(crate) enum Verdict {
    Answer(Health),
    /// Nothing recent vouches for the device: a probe decides.
    NeedsProbe,
}

impl EngineHealth {
    pub fn new(backend: String, fresh_for: Duration) -> Self {
        EngineHealth {
            state: Mutex::new(State {
                mode: Mode::Serving,
                last_success: None,
                recent_steps: VecDeque::with_capacity(RECENT_STEPS),
                probes: Probes::default(),
                backend,
                breaker: BreakerState::Closed,
                degraded_for: Duration::ZERO,
                fresh_for,
            }),
            probe_done: Condvar::new(),
            probe_notify: tokio::sync::Notify::new(),
        }
    }

    /// A step (or probe) succeeded on the device just now; a step took `took`.
    pub fn succeeded(&self, took: Option<Duration>) {
        let mut state = self.state.lock();
        state.last_success = Some(Instant::now());
        if let Some(took) = took {
            if state.recent_steps.len() == RECENT_STEPS {
                state.recent_steps.pop_front();
            }
            state.recent_steps.push_back(took);
        }
    }

    pub fn set_breaker(&self, breaker: BreakerState) {
        self.state.lock().breaker = breaker;
    }

    /// Serving on the device again (`backend` in use).
    pub fn serving(&self, backend: String) {
        let mut state = self.state.lock();
        if let Mode::Degraded { since, .. } = state.mode {
            state.degraded_for += since.elapsed();
        }
        state.mode = Mode::Serving;
        state.backend = backend;
    }

    /// The device is lost and the CPU fallback serves.
    pub fn degraded(&self, cause: HealthCause, reason: String) {
        let mut state = self.state.lock();
        if !matches!(state.mode, Mode::Degraded { .. }) {
            state.mode = Mode::Degraded {
                cause,
                reason,
                since: Instant::now(),
            };
        }
        state.backend = "cpu (fallback)".into();
    }

    /// The device is lost and nothing serves.
    pub fn unhealthy(&self, cause: HealthCause, reason: String) {
        let mut state = self.state.lock();
        if let Mode::Degraded { since, .. } = state.mode {
            state.degraded_for += since.elapsed();
        }
        state.mode = Mode::Unhealthy { cause, reason };
    }

    /// Why requests cannot be served now, if they cannot.
    pub fn refusal(&self) -> Option<String> {
        match &self.state.lock().mode {
            Mode::Unhealthy { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    /// The time spent degraded so far.
    pub fn degraded_time(&self) -> Duration {
        let state = self.state.lock();
        let now = match state.mode {
            Mode::Degraded { since, .. } => since.elapsed(),
            _ => Duration::ZERO,
        };
        state.degraded_for + now
    }

    /// The backend serving now.
    pub fn backend(&self) -> String {
        self.state.lock().backend.clone()
    }

    /// How long a success vouches for the device: at least `fresh_for`, and twice the longest
    /// recent step.
    fn fresh_window(state: &State) -> Duration {
        let longest = state.recent_steps.iter().max().copied().unwrap_or_default();
        state.fresh_for.max(longest.saturating_mul(2))
    }

    fn answer(
        state: &State,
        ready: bool,
        cause: Option<HealthCause>,
        reason: Option<String>,
    ) -> Health {
        let degraded = matches!(state.mode, Mode::Degraded { .. });
        Health {
            status: match (ready, degraded) {
                (false, _) => "unhealthy",
                (true, true) => "degraded",
                (true, false) => "ok",
            },
            ready,
            degraded,
            cause,
            reason,
            breaker: state.breaker.as_str(),
            backend: state.backend.clone(),
        }
    }

    /// The verdict without a probe: `busy_since` is when the step thread's current device call
    /// began, if one runs; `step_timeout` bounds the first step, whose length nothing tells.
    pub fn verdict(
        &self,
        closed: bool,
        busy_since: Option<Instant>,
        step_timeout: Duration,
    ) -> Verdict {
        let state = self.state.lock();
        if closed {
            return Verdict::Answer(Self::answer(
                &state,
                false,
                Some(HealthCause::ShuttingDown),
                Some("shutting down".into()),
            ));
        }
        match &state.mode {
            Mode::Unhealthy { cause, reason } => {
                return Verdict::Answer(Self::answer(
                    &state,
                    false,
                    Some(*cause),
                    Some(reason.clone()),
                ))
            }
            Mode::Degraded { cause, reason, .. } => {
                return Verdict::Answer(Self::answer(
                    &state,
                    true,
                    Some(*cause),
                    Some(reason.clone()),
                ))
            }
            Mode::Serving => {}
        }
        if state.breaker == BreakerState::Open {
            return Verdict::Answer(Self::answer(
                &state,
                false,
                Some(HealthCause::BreakerOpen),
                Some("the device's circuit breaker is open".into()),
            ));
        }
        let window = Self::fresh_window(&state);
        let recent =
            |at: Option<Instant>, within: Duration| at.is_some_and(|at| at.elapsed() < within);
        // A step in flight is proof of work, not of a dead device: within the window — or, for
        // the very first step (no length known yet), within the step deadline, which the
        // watchdog holds — a busy engine is ready.
        let busy_within = if state.recent_steps.is_empty() {
            step_timeout
        } else {
            window
        };
        if recent(state.last_success, window) || recent(busy_since, busy_within) {
            return Verdict::Answer(Self::answer(&state, true, None, None));
        }
        Verdict::NeedsProbe
    }

    /// Joins the probe in progress, or starts one (returns its number and whether this call
    /// started it, so that the caller asks the step thread for it).
    pub fn join_probe(&self) -> (u64, bool) {
        let mut state = self.state.lock();
        if let Some(current) = state.probes.current {
            return (current, false);
        }
        state.probes.numbered += 1;
        let number = state.probes.numbered;
        state.probes.current = Some(number);
        (number, true)
    }

    /// The step thread takes the probe asked for: its number, or `None` if none is pending.
    pub fn probe_to_run(&self) -> Option<u64> {
        self.state.lock().probes.current
    }

    /// The step thread finished probe `number` (or could not run it).
    pub fn probe_finished(&self, number: u64, result: Result<(), ProbeFailure>) {
        let mut state = self.state.lock();
        if result.is_ok() {
            state.last_success = Some(Instant::now());
        }
        if state.probes.current == Some(number) {
            state.probes.current = None;
        }
        state.probes.last = Some((number, result));
        drop(state);
        self.probe_done.notify_all();
        self.probe_notify.notify_waiters();
    }

    /// The result of probe `number`, once it is known.
    fn probe_result(&self, number: u64) -> Option<Health> {
        let state = self.state.lock();
        let (done, result) = state.probes.last.as_ref()?;
        if *done < number {
            return None;
        }
        Some(match result {
            Ok(()) => Self::answer(&state, true, None, None),
            Err(failure) => Self::answer(
                &state,
                false,
                Some(failure.cause),
                Some(failure.reason.clone()),
            ),
        })
    }

    fn timed_out(&self, waited: Duration) -> Health {
        let state = self.state.lock();
        Self::answer(
            &state,
            false,
            Some(HealthCause::ProbeTimeout),
            Some(format!("the health probe got no answer within {waited:?}")),
        )
    }

    /// Waits (blocking) up to `timeout` for probe `number`.
    pub fn wait_probe(&self, number: u64, timeout: Duration) -> Health {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if state
                .probes
                .last
                .as_ref()
                .is_some_and(|(n, _)| *n >= number)
            {
                drop(state);
                return self
                    .probe_result(number)
                    .unwrap_or_else(|| self.timed_out(timeout));
            }
            if self.probe_done.wait_until(&mut state, deadline).timed_out() {
                drop(state);
                return self
                    .probe_result(number)
                    .unwrap_or_else(|| self.timed_out(timeout));
            }
        }
    }

    /// Waits (async, no thread held) up to `timeout` for probe `number`.
    pub async fn wait_probe_async(&self, number: u64, timeout: Duration) -> Health {
        let wait = async {
            loop {
                let notified = self.probe_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(health) = self.probe_result(number) {
                    return health;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(health) => health,
            Err(_) => self.timed_out(timeout),
        }
    }
}
