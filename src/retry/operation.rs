//! `retry_operation`: run a device operation, retrying what its error class allows.
//!
//! One state machine ([`RetryLoop`]) decides after every attempt whether to wait and try again
//! or to give up; the synchronous driver sleeps through the state's [`super::Clock`], the
//! asynchronous one through `tokio::time::sleep` (so tokio's paused time drives it in tests).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::error::{Classify, Op, Recovery};

use super::breaker::{Admission, CallOutcome};
use super::outcome::{AttemptRecord, GiveUpReason, Retried, RetryError, RetryHistory};
use super::policy::{OpPolicy, RetryPolicy};
use super::state::RetryState;

/// A hook run before retrying a Reclaim-class failure (free cached device memory).
pub type ReclaimHook<'a> = &'a mut (dyn FnMut() + Send);

/// The decision after a failed attempt.
enum Step<E> {
    Wait(Duration),
    Stop(RetryError<E>),
}

/// The bookkeeping of one retried operation, shared by the sync and async drivers.
///
/// Kept small: what only failures need lives in a box made at the first failure, so the success
/// path moves a few words and allocates nothing.
///
/// It holds the breaker's admission of the attempt in progress: when a half-open probe's
/// attempt ends in neither a success nor a failure — its operation panicked, or its future was
/// dropped — dropping the loop records the probe as failed, so the breaker never keeps a probe
/// slot for a call that is gone.
struct RetryLoop<'a, E> {
    op: Op,
    policy: &'a OpPolicy,
    state: &'a RetryState,
    attempt: u32,
    admission: Admission,
    /// The admission's outcome is not recorded yet.
    pending: bool,
    /// Calls bypass the breaker (a device reset).
    ungated: bool,
    /// Driver time at which the operation started, when a deadline needs it.
    started: Option<Duration>,
    failures: Option<Box<Failures<E>>>,
}

/// What a retried operation remembers once it has failed.
struct Failures<E> {
    /// Driver time of the start (or of the first failure, without a deadline).
    started: Duration,
    retries: u32,
    polls: u32,
    /// The error label being escalated and how often it was seen in a row.
    escalation: Option<(&'static str, u32)>,
    previous_delay: Duration,
    last_error: Option<E>,
    history: RetryHistory,
}

impl<E: Classify> Failures<E> {
    /// The class to act on, after escalating a failure seen too often in a row.
    fn classify(&mut self, error: &E) -> Recovery {
        let class = error.recovery();
        let Some((limit, escalated)) = error.escalation() else {
            self.escalation = None;
            return class;
        };
        let label = error.code_label();
        let seen = match self.escalation {
            Some((previous, count)) if previous == label => count + 1,
            _ => 1,
        };
        self.escalation = Some((label, seen));
        if seen > limit {
            escalated
        } else {
            class
        }
    }
}

impl<'a, E: Classify + Display> RetryLoop<'a, E> {
    /// The loop of an operation whose first attempt was admitted as `admission`.
    #[inline(always)]
    fn new(
        op: Op,
        policy: &'a OpPolicy,
        state: &'a RetryState,
        started: Option<Duration>,
        admission: Admission,
    ) -> Self {
        RetryLoop {
            op,
            policy,
            state,
            attempt: 1,
            admission,
            pending: true,
            ungated: admission == Admission::Bypass,
            started,
            failures: None,
        }
    }

    /// Records the attempt's outcome with the breaker, once.
    #[inline(always)]
    fn record(&mut self, outcome: CallOutcome) {
        self.pending = false;
        if self.admission != Admission::Normal || outcome != CallOutcome::Neutral {
            self.state.breaker.record(self.admission, outcome);
        }
    }

    /// Counts the call in the retry budget and asks the breaker to admit the first attempt.
    /// Returns only the admission, which travels in a register (moving the whole loop out of a
    /// `Result` costs a store-forwarding stall on the hot path).
    #[inline(always)]
    fn begin(
        op: Op,
        policy: &'a OpPolicy,
        state: &'a RetryState,
        ungated: bool,
    ) -> Result<Admission, RetryError<E>> {
        state.budget.deposit();
        if ungated {
            return Ok(Admission::Bypass);
        }
        match state.breaker.admit() {
            Ok(admission) => Ok(admission),
            Err(rejected) => {
                let mut retry = RetryLoop::new(op, policy, state, None, Admission::Normal);
                Err(retry.rejected(rejected.retry_after))
            }
        }
    }

    #[inline(always)]
    fn admit(&mut self) -> Result<u32, RetryError<E>> {
        if self.ungated {
            self.pending = true;
            return Ok(self.attempt);
        }
        match self.state.breaker.admit() {
            Ok(admission) => {
                self.admission = admission;
                self.pending = true;
                Ok(self.attempt)
            }
            Err(rejected) => Err(self.rejected(rejected.retry_after)),
        }
    }

    #[cold]
    #[inline(never)]
    fn rejected(&mut self, retry_after: Option<Duration>) -> RetryError<E> {
        if let Some(metrics) = &self.state.metrics {
            metrics.op(self.op).failed[GiveUpReason::CircuitOpen.index()].inc();
        }
        let (last_error, history) = match self.failures.take() {
            Some(failures) => (failures.last_error, failures.history),
            None => (None, RetryHistory::default()),
        };
        let wall = self.state.clock.wall();
        let reason = GiveUpReason::CircuitOpen;
        self.state
            .events
            .gave_up(wall, self.op, self.attempt, reason, history.attempts.last());
        RetryError::circuit_open(self.op, retry_after, last_error, history)
    }

    #[inline(always)]
    fn succeeded<T>(&mut self, value: T) -> Retried<T> {
        self.record(CallOutcome::Success);
        if let Some(metrics) = &self.state.metrics {
            metrics
                .op(self.op)
                .succeeded_attempt
                .observe(f64::from(self.attempt));
        }
        match self.failures.take() {
            None => Retried {
                value,
                history: RetryHistory::default(),
            },
            Some(failures) => self.recovered(value, failures.history),
        }
    }

    #[cold]
    #[inline(never)]
    fn recovered<T>(&self, value: T, history: RetryHistory) -> Retried<T> {
        if let Some(metrics) = &self.state.metrics {
            metrics.op(self.op).recovered.inc();
        }
        self.state
            .events
            .recovered(self.state.clock.wall(), self.op, self.attempt);
        Retried { value, history }
    }

    #[cold]
    #[inline(never)]
    fn failed<'h>(
        &mut self,
        error: E,
        now: Duration,
        reclaim: Option<&mut (dyn FnMut() + Send + 'h)>,
    ) -> Step<E> {
        let started = self.started.unwrap_or(now);
        let failures = self.failures.get_or_insert_with(|| {
            Box::new(Failures {
                started,
                retries: 0,
                polls: 0,
                escalation: None,
                previous_delay: Duration::ZERO,
                last_error: None,
                history: RetryHistory::default(),
            })
        });
        let class = failures.classify(&error);
        let outcome = if class.counts_against_device() {
            CallOutcome::Failure
        } else {
            CallOutcome::Neutral
        };
        self.record(outcome);
        let failures = self.failures.as_mut().expect("made above");
        let state = self.state;
        let policy = self.policy;
        let metrics = state.metrics.as_deref();
        if let Some(metrics) = metrics {
            metrics.count_error(self.op, error.code_label());
        }

        let decision = match class {
            Recovery::Fatal | Recovery::Benign => Err(GiveUpReason::Permanent),
            Recovery::Reset => Err(GiveUpReason::Reset),
            Recovery::Probe => Err(GiveUpReason::Probe),
            Recovery::Poll if failures.polls >= policy.max_polls => Err(GiveUpReason::Exhausted),
            Recovery::Poll => Ok(policy.poll_interval),
            Recovery::Retry | Recovery::Reclaim => {
                if failures.retries >= policy.max_retries {
                    Err(GiveUpReason::Exhausted)
                } else if !state.budget.try_withdraw() {
                    Err(GiveUpReason::Budget)
                } else {
                    let mut rng = state.rng.lock();
                    Ok(policy.backoff.delay(
                        failures.retries + 1,
                        failures.previous_delay,
                        &mut *rng,
                    ))
                }
            }
        };
        let elapsed = now.saturating_sub(failures.started);
        let decision = decision.and_then(|delay| match policy.deadline {
            Some(deadline) if elapsed + delay > deadline => Err(GiveUpReason::Deadline),
            _ => Ok(delay),
        });

        let record = AttemptRecord {
            attempt: self.attempt,
            timestamp: state.clock.wall(),
            elapsed,
            code: error.code(),
            error: error.code_label(),
            message: error.to_string(),
            recovery: class,
            delay: decision.as_ref().ok().copied(),
        };

        match decision {
            Ok(delay) => {
                if class == Recovery::Poll {
                    failures.polls += 1;
                } else {
                    failures.retries += 1;
                    failures.previous_delay = delay;
                }
                if class == Recovery::Reclaim {
                    if let Some(reclaim) = reclaim {
                        reclaim();
                    }
                }
                if let Some(metrics) = metrics {
                    let op_metrics = metrics.op(self.op);
                    op_metrics.retries.inc();
                    op_metrics.delay_seconds.observe(delay.as_secs_f64());
                }
                state.events.retry(self.op, &record);
                failures.history.attempts.push(record);
                failures.last_error = Some(error);
                self.attempt += 1;
                Step::Wait(delay)
            }
            Err(reason) => {
                if let Some(metrics) = metrics {
                    metrics.op(self.op).failed[reason.index()].inc();
                }
                state.events.gave_up(
                    record.timestamp,
                    self.op,
                    self.attempt,
                    reason,
                    Some(&record),
                );
                failures.history.attempts.push(record);
                let history = std::mem::take(&mut failures.history);
                self.failures = None;
                Step::Stop(RetryError::gave_up(self.op, reason, error, history))
            }
        }
    }
}

impl<E> Drop for RetryLoop<'_, E> {
    /// An attempt that neither succeeded nor failed (a panic, a dropped future): a half-open
    /// probe's slot is given back as a failure.
    fn drop(&mut self) {
        if self.pending && self.admission == Admission::Probe {
            self.state
                .breaker
                .record(Admission::Probe, CallOutcome::Failure);
        }
    }
}

/// One retried call: the operation, its policy and state, and an optional reclaim hook.
pub struct RetryCall<'a> {
    /// `Op::index()`, kept word-sized: an async driver copies this struct into its future, and a
    /// byte-sized field written just before makes that copy stall on store forwarding.
    op_index: usize,
    policy: &'a RetryPolicy,
    state: &'a RetryState,
    reclaim: Option<ReclaimHook<'a>>,
    ungated: bool,
}

impl std::fmt::Debug for RetryCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryCall")
            .field("op", &self.op())
            .field("reclaim", &self.reclaim.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> RetryCall<'a> {
    pub fn new(op: Op, policy: &'a RetryPolicy, state: &'a RetryState) -> Self {
        RetryCall {
            op_index: op.index(),
            policy,
            state,
            reclaim: None,
            ungated: false,
        }
    }

    /// The call is not gated by the circuit breaker and does not count against it: for a
    /// device reset, which is how an open breaker's device is brought back.
    pub fn ungated(mut self) -> Self {
        self.ungated = true;
        self
    }

    fn op(&self) -> Op {
        Op::ALL[self.op_index]
    }

    /// Runs `hook` before each retry of a Reclaim-class (out of memory) failure.
    pub fn reclaim_with(mut self, hook: ReclaimHook<'a>) -> Self {
        self.reclaim = Some(hook);
        self
    }

    /// Runs `operation` (given the attempt number, from 1), sleeping through the state's clock.
    #[inline]
    pub fn run<T, E, F>(mut self, mut operation: F) -> Result<Retried<T>, RetryError<E>>
    where
        F: FnMut(u32) -> Result<T, E>,
        E: Classify + Display,
    {
        let policy = self.policy.for_op(self.op());
        let clock = &*self.state.clock;
        let started = policy.deadline.map(|_| clock.now());
        let admission = RetryLoop::<E>::begin(self.op(), policy, self.state, self.ungated)?;
        let mut retry = RetryLoop::new(self.op(), policy, self.state, started, admission);
        loop {
            match operation(retry.attempt) {
                Ok(value) => return Ok(retry.succeeded(value)),
                Err(error) => match retry.failed(error, clock.now(), self.reclaim.as_deref_mut()) {
                    Step::Wait(delay) => {
                        if !delay.is_zero() {
                            clock.sleep(delay)
                        }
                    }
                    Step::Stop(error) => return Err(error),
                },
            }
            retry.admit()?;
        }
    }

    /// Runs `operation` asynchronously, sleeping with `tokio::time::sleep` (never blocking a
    /// runtime thread).
    pub async fn run_async<T, E, F, Fut>(
        self,
        mut operation: F,
    ) -> Result<Retried<T>, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + Display,
    {
        let policy = self.policy.for_op(self.op());
        // Read the clock only where needed: at the start with a deadline, else at the first failure.
        let origin = policy.deadline.map(|_| tokio::time::Instant::now());
        let started = origin.map(|_| Duration::ZERO);
        let admission = RetryLoop::<E>::begin(self.op(), policy, self.state, self.ungated)?;
        // The loop lives across the first await, so that a dropped future gives back a probe.
        let mut retry = RetryLoop::new(self.op(), policy, self.state, started, admission);
        let first = operation(1).await;
        match first {
            Ok(value) => Ok(retry.succeeded(value)),
            // The retry loop is a future of its own, boxed, so the success path's stays small.
            Err(error) => Box::pin(self.retry_async(retry, origin, error, operation)).await,
        }
    }

    async fn retry_async<T, E, F, Fut>(
        mut self,
        mut retry: RetryLoop<'a, E>,
        mut origin: Option<tokio::time::Instant>,
        mut error: E,
        mut operation: F,
    ) -> Result<Retried<T>, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + Display,
    {
        loop {
            let now = origin
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed();
            match retry.failed(error, now, self.reclaim.as_deref_mut()) {
                Step::Wait(delay) => tokio::time::sleep(delay).await,
                Step::Stop(error) => return Err(error),
            }
            let attempt = retry.admit()?;
            match operation(attempt).await {
                Ok(value) => return Ok(retry.succeeded(value)),
                Err(next) => error = next,
            }
        }
    }
}

/// Runs `operation` with retries: Retry-class errors are retried with backoff, Reclaim-class too
/// (see [`RetryCall::reclaim_with`] for freeing memory first), Poll-class errors are polled, and
/// Reset, Fatal and Probe errors return at once. The result carries every failed attempt.
#[inline]
pub fn retry_operation<T, E, F>(
    op: Op,
    policy: &RetryPolicy,
    state: &RetryState,
    operation: F,
) -> Result<Retried<T>, RetryError<E>>
where
    F: FnMut(u32) -> Result<T, E>,
    E: Classify + Display,
{
    RetryCall::new(op, policy, state).run(operation)
}

/// [`retry_operation`] for async operations, sleeping with tokio.
pub fn retry_operation_async<'a, T, E, F, Fut>(
    op: Op,
    policy: &'a RetryPolicy,
    state: &'a RetryState,
    operation: F,
) -> impl Future<Output = Result<Retried<T>, RetryError<E>>> + 'a
where
    F: FnMut(u32) -> Fut + 'a,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: Classify + Display + 'a,
    T: 'a,
{
    // Not an `async fn`: returning the inner future saves a layer of state and output moves.
    RetryCall::new(op, policy, state).run_async(operation)
}
