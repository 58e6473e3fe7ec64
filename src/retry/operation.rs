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
struct RetryLoop<'a, E> {
    op: Op,
    policy: &'a OpPolicy,
    state: &'a RetryState,
    attempt: u32,
    retries: u32,
    polls: u32,
    /// The error label being escalated and how often it was seen in a row.
    escalation: Option<(&'static str, u32)>,
    previous_delay: Duration,
    /// Driver time at which the operation started (when a deadline needs it) or first failed.
    started: Option<Duration>,
    admission: Admission,
    last_error: Option<E>,
    history: RetryHistory,
}

impl<'a, E: Classify + Display> RetryLoop<'a, E> {
    #[inline]
    fn start(op: Op, policy: &'a OpPolicy, state: &'a RetryState, now: Option<Duration>) -> Self {
        state.budget.deposit();
        RetryLoop {
            op,
            policy,
            state,
            attempt: 1,
            retries: 0,
            polls: 0,
            escalation: None,
            previous_delay: Duration::ZERO,
            started: now,
            admission: Admission::Normal,
            last_error: None,
            history: RetryHistory::default(),
        }
    }

    #[inline]
    fn admit(&mut self) -> Result<u32, RetryError<E>> {
        match self.state.breaker.admit() {
            Ok(admission) => {
                self.admission = admission;
                Ok(self.attempt)
            }
            Err(rejected) => Err(self.rejected(rejected.retry_after)),
        }
    }

    #[cold]
    fn rejected(&mut self, retry_after: Option<Duration>) -> RetryError<E> {
        if let Some(metrics) = &self.state.metrics {
            metrics.op(self.op).failed[GiveUpReason::CircuitOpen.index()].inc();
        }
        self.state.events.gave_up(
            self.state.clock.wall(),
            self.op,
            self.attempt,
            GiveUpReason::CircuitOpen,
            self.history.attempts.last(),
        );
        RetryError::circuit_open(
            self.op,
            retry_after,
            self.last_error.take(),
            std::mem::take(&mut self.history),
        )
    }

    #[inline]
    fn succeeded<T>(self, value: T) -> Retried<T> {
        self.state
            .breaker
            .record(self.admission, CallOutcome::Success);
        if let Some(metrics) = &self.state.metrics {
            let op_metrics = metrics.op(self.op);
            op_metrics
                .succeeded_attempt
                .observe(f64::from(self.attempt));
            if self.attempt > 1 {
                op_metrics.recovered.inc();
            }
        }
        if self.attempt > 1 {
            self.state
                .events
                .recovered(self.state.clock.wall(), self.op, self.attempt);
        }
        Retried {
            value,
            history: self.history,
        }
    }

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

    #[cold]
    fn failed<'h>(
        &mut self,
        error: E,
        now: Duration,
        reclaim: Option<&mut (dyn FnMut() + Send + 'h)>,
    ) -> Step<E> {
        let started = *self.started.get_or_insert(now);
        let class = self.classify(&error);
        let outcome = if class.counts_against_device() {
            CallOutcome::Failure
        } else {
            CallOutcome::Neutral
        };
        self.state.breaker.record(self.admission, outcome);
        let metrics = self.state.metrics.as_deref();
        if let Some(metrics) = metrics {
            metrics.count_error(self.op, error.code_label());
        }

        let decision = match class {
            Recovery::Fatal | Recovery::Benign => Err(GiveUpReason::Permanent),
            Recovery::Reset => Err(GiveUpReason::Reset),
            Recovery::Probe => Err(GiveUpReason::Probe),
            Recovery::Poll if self.polls >= self.policy.max_polls => Err(GiveUpReason::Exhausted),
            Recovery::Poll => Ok(self.policy.poll_interval),
            Recovery::Retry | Recovery::Reclaim => {
                if self.retries >= self.policy.max_retries {
                    Err(GiveUpReason::Exhausted)
                } else if !self.state.budget.try_withdraw() {
                    Err(GiveUpReason::Budget)
                } else {
                    let mut rng = self.state.rng.lock();
                    Ok(self
                        .policy
                        .backoff
                        .delay(self.retries + 1, self.previous_delay, &mut *rng))
                }
            }
        };
        let decision = decision.and_then(|delay| match self.policy.deadline {
            Some(deadline) if now.saturating_sub(started) + delay > deadline => {
                Err(GiveUpReason::Deadline)
            }
            _ => Ok(delay),
        });

        let record = AttemptRecord {
            attempt: self.attempt,
            timestamp: self.state.clock.wall(),
            elapsed: now.saturating_sub(started),
            code: error.code(),
            error: error.code_label(),
            message: error.to_string(),
            recovery: class,
            delay: decision.as_ref().ok().copied(),
        };

        match decision {
            Ok(delay) => {
                if class == Recovery::Poll {
                    self.polls += 1;
                } else {
                    self.retries += 1;
                    self.previous_delay = delay;
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
                self.state.events.retry(self.op, &record);
                self.history.attempts.push(record);
                self.attempt += 1;
                self.last_error = Some(error);
                Step::Wait(delay)
            }
            Err(reason) => {
                if let Some(metrics) = metrics {
                    metrics.op(self.op).failed[reason.index()].inc();
                }
                self.state.events.gave_up(
                    record.timestamp,
                    self.op,
                    self.attempt,
                    reason,
                    Some(&record),
                );
                self.history.attempts.push(record);
                Step::Stop(RetryError::gave_up(
                    self.op,
                    reason,
                    error,
                    std::mem::take(&mut self.history),
                ))
            }
        }
    }
}

/// One retried call: the operation, its policy and state, and an optional reclaim hook.
pub struct RetryCall<'a> {
    op: Op,
    policy: &'a RetryPolicy,
    state: &'a RetryState,
    reclaim: Option<ReclaimHook<'a>>,
}

impl std::fmt::Debug for RetryCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryCall")
            .field("op", &self.op)
            .field("reclaim", &self.reclaim.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> RetryCall<'a> {
    pub fn new(op: Op, policy: &'a RetryPolicy, state: &'a RetryState) -> Self {
        RetryCall {
            op,
            policy,
            state,
            reclaim: None,
        }
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
        let policy = self.policy.for_op(self.op);
        let clock = &*self.state.clock;
        let started = policy.deadline.map(|_| clock.now());
        let mut retry = RetryLoop::start(self.op, policy, self.state, started);
        loop {
            let attempt = retry.admit()?;
            match operation(attempt) {
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
        }
    }

    /// Runs `operation` asynchronously, sleeping with `tokio::time::sleep` (never blocking a
    /// runtime thread).
    pub async fn run_async<T, E, F, Fut>(
        mut self,
        mut operation: F,
    ) -> Result<Retried<T>, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + Display,
    {
        let policy = self.policy.for_op(self.op);
        let origin = tokio::time::Instant::now();
        let mut retry = RetryLoop::start(self.op, policy, self.state, Some(Duration::ZERO));
        loop {
            let attempt = retry.admit()?;
            match operation(attempt).await {
                Ok(value) => return Ok(retry.succeeded(value)),
                Err(error) => {
                    match retry.failed(error, origin.elapsed(), self.reclaim.as_deref_mut()) {
                        Step::Wait(delay) => tokio::time::sleep(delay).await,
                        Step::Stop(error) => return Err(error),
                    }
                }
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
pub async fn retry_operation_async<T, E, F, Fut>(
    op: Op,
    policy: &RetryPolicy,
    state: &RetryState,
    operation: F,
) -> Result<Retried<T>, RetryError<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classify + Display,
{
    RetryCall::new(op, policy, state).run_async(operation).await
}
