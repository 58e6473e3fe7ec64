//! The step thread: takes batches from the queue, runs them on the runner in use, climbs the
//! recovery ladder when a step fails, and heals the engine on its own while the device is lost.
//!
//! The ladder (see `../shared/docs/hip-errors.md` and `ladder.rs`): device calls were already
//! retried in place by the retry layer, so a failed step means the context is poisoned, a call
//! ran out of retries, or the error is Fatal. For the first two the device is recovered — reset
//! in place (a context-scoped fault), or, when the reset fails with a sticky code (the context
//! is lost for the whole process, as on ROCm ≥ 6 and CUDA), given up for this process: a worker
//! process is replaced by its supervisor; in this process the engine moves to the CPU fallback
//! (degraded) or reports itself unhealthy — and in both cases keeps trying, on a timer with
//! backoff, to bring a fresh device backend back, without anyone calling it.
//!
//! Every input is answered exactly once: with its embedding, or with an error saying what
//! failed and how often it was tried. None is dropped, whatever the runner does (a panic in a
//! call is caught and handled as a Fatal failure; a call that never returns is abandoned by the
//! watchdog, see `shared.rs`).

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Recovery;
use crate::model::{Encoding, Readout};
use crate::retry::{with_requests, EventRecord};
use crate::step::{StepFailure, StepRunner};

use super::error::EngineError;
use super::health::{HealthCause, ProbeFailure};
use super::ladder::{self, unique_requests};
use super::queue::{Entry, Work};
use super::request::Completion;
use super::shared::{Activity, Shared};

/// Which runner serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    Primary,
    Fallback,
    /// Nothing: the device is lost and there is no fallback.
    Nothing,
}

/// The state of one step thread.
pub(crate) struct StepLoop {
    shared: Arc<Shared>,
    generation: u64,
    primary: Option<Box<dyn StepRunner>>,
    fallback: Option<Box<dyn StepRunner>>,
    serving: Serving,
    /// Self-healing: tries so far and when the next one is due.
    heal_attempt: u32,
    heal_at: Option<Instant>,
    /// Failed steps since the last success (drives the replay backoff).
    consecutive_failures: u32,
    /// Why the primary could not start (the engine starts on the fallback).
    lost_at_start: Option<StepFailure>,
}

/// A call was abandoned by the watchdog: this thread is no longer the engine's.
struct Abandoned;

impl StepLoop {
    pub fn new(
        shared: Arc<Shared>,
        generation: u64,
        primary: Option<Box<dyn StepRunner>>,
        lost_at_start: Option<StepFailure>,
    ) -> Self {
        StepLoop {
            lost_at_start,
            shared,
            generation,
            serving: if primary.is_some() {
                Serving::Primary
            } else {
                Serving::Nothing
            },
            primary,
            fallback: None,
            heal_attempt: 0,
            heal_at: None,
            consecutive_failures: 0,
        }
    }

    /// Runs until the queue is closed and everything in it is answered, or until the watchdog
    /// abandons this thread.
    pub fn run(mut self) {
        if let Some(failure) = self.lost_at_start.take() {
            self.lost(&failure);
        } else if self.primary.is_none() && self.start_fresh().is_err() {
            return;
        }
        loop {
            if self.shared.superseded(self.generation) {
                return;
            }
            if self.heal_at.is_some_and(|at| Instant::now() >= at) && self.heal().is_err() {
                return;
            }
            let work = self.shared.queue.next(self.shared.limits, self.heal_at);
            let outcome = match work {
                Work::Stop => break,
                Work::Idle => Ok(()),
                Work::Probe => self.probe(),
                Work::Batch(batch) => self.step(batch),
            };
            if outcome.is_err() {
                return;
            }
            let metrics = &self.shared.metrics;
            metrics.queue_size.set(self.shared.queue.len() as i64);
            if let Some(runner) = self.active() {
                let breaker = runner.breaker_state();
                self.shared.health.set_breaker(breaker);
            }
        }
    }

    fn active(&mut self) -> Option<&mut Box<dyn StepRunner>> {
        match self.serving {
            Serving::Primary => self.primary.as_mut(),
            Serving::Fallback => self.fallback.as_mut(),
            Serving::Nothing => None,
        }
    }

    /// Runs `f` on the runner in use as a watched device call holding `entries`.
    fn call<T>(
        &mut self,
        activity: Activity,
        entries: Vec<Entry>,
        f: impl FnOnce(&mut dyn StepRunner) -> Result<T, StepFailure>,
    ) -> Result<(Vec<Entry>, Result<T, StepFailure>), Abandoned> {
        let shared = self.shared.clone();
        let ids: Vec<u64> = unique_requests(&entries).iter().map(|r| r.id).collect();
        shared.begin(self.generation, activity, entries);
        let result = match self.active() {
            Some(runner) => with_requests(&ids, || catch(|| f(runner.as_mut()))),
            None => Err(StepFailure::fatal("engine", "no backend is serving")),
        };
        match shared.end(self.generation) {
            Some(entries) => Ok((entries, result)),
            None => Err(Abandoned),
        }
    }

    /// A replacement thread's first job: a fresh primary runner (after a hang), or the
    /// fallback when none can be made.
    fn start_fresh(&mut self) -> Result<(), Abandoned> {
        let shared = self.shared.clone();
        shared.begin(self.generation, Activity::Start, Vec::new());
        let made = catch(|| shared.factory.make());
        if shared.end(self.generation).is_none() {
            return Err(Abandoned);
        }
        match made {
            Ok(runner) => {
                self.primary = Some(runner);
                self.serving = Serving::Primary;
                Ok(())
            }
            Err(failure) => {
                self.lost(&failure);
                Ok(())
            }
        }
    }

    /// Answers the probe asked for, on the runner in use.
    fn probe(&mut self) -> Result<(), Abandoned> {
        let Some(number) = self.shared.health.probe_to_run() else {
            return Ok(());
        };
        self.shared.metrics.health_probes.inc();
        if self.serving == Serving::Nothing {
            let reason = self
                .shared
                .health
                .refusal()
                .unwrap_or_else(|| "no backend is serving".into());
            self.shared.health.probe_finished(
                number,
                Err(ProbeFailure {
                    cause: HealthCause::DeviceLost,
                    reason,
                }),
            );
            return Ok(());
        }
        let (_, result) = self.call(Activity::Probe(number), Vec::new(), |r| r.probe())?;
        let result = result.map_err(|failure| ProbeFailure {
            cause: HealthCause::ProbeFailed,
            reason: format!("the health probe failed: {}", failure.message),
        });
        self.shared.health.probe_finished(number, result);
        Ok(())
    }

    /// Runs one batch, and handles its failure.
    fn step(&mut self, batch: Vec<Entry>) -> Result<(), Abandoned> {
        let started = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for entry in batch {
            if entry.request.is_answered() || entry.request.drop_if_abandoned() {
                // Another input of its request failed, its deadline passed, or its caller left.
                continue;
            }
            if entry.request.expired(started) {
                entry.request.fail_deadline();
                continue;
            }
            live.push(entry);
        }
        if live.is_empty() {
            return Ok(());
        }
        if self.serving == Serving::Nothing {
            let reason = self
                .shared
                .health
                .refusal()
                .unwrap_or_else(|| "the device is lost".into());
            for entry in live {
                entry.request.fail(|_| EngineError::Unhealthy {
                    reason: reason.clone(),
                });
            }
            return Ok(());
        }
        for entry in &live {
            entry.request.step_started(started);
        }
        let metrics = self.shared.metrics.clone();
        let longest = live.iter().map(Entry::tokens).max().unwrap_or(0);
        metrics.batch_size.observe(live.len() as f64);
        metrics.batch_tokens.observe((live.len() * longest) as f64);
        let encodings: Vec<Encoding> = live.iter().map(|e| e.encoding.clone()).collect();
        let readout = live[0].request.readout;
        let degraded = self.serving == Serving::Fallback;
        let (live, result) = self.call(Activity::Step, live, |r| r.run(&encodings, readout))?;
        let elapsed = started.elapsed();
        let failure = match result {
            Ok(output) if output.embeddings.len() == live.len() => {
                metrics.steps_ok.inc();
                self.consecutive_failures = 0;
                self.shared.health.succeeded(Some(elapsed));
                for request in unique_requests(&live) {
                    request.account(elapsed, |report| report.add_recovered(&output.recovered));
                }
                for (entry, mut embedding) in live.into_iter().zip(output.embeddings) {
                    if entry.request.normalize && readout == Readout::Pooled {
                        crate::model::normalize(&mut embedding);
                    }
                    if entry.request.complete(entry.index, embedding, degraded)
                        == Completion::Duplicate
                    {
                        // Counted in hipinfer_duplicate_completions_total; never answered.
                    }
                }
                return Ok(());
            }
            Ok(output) => StepFailure::fatal(
                "step",
                format!(
                    "the runner returned {} embeddings for {} inputs",
                    output.embeddings.len(),
                    live.len()
                ),
            ),
            Err(failure) => failure,
        };
        self.failed(live, failure, elapsed)
    }

    /// Climbs the ladder for a failed step.
    fn failed(
        &mut self,
        batch: Vec<Entry>,
        failure: StepFailure,
        elapsed: Duration,
    ) -> Result<(), Abandoned> {
        self.consecutive_failures += 1;
        tracing::warn!(
            inputs = batch.len(),
            class = failure.class.as_str(),
            reason = %failure.reason,
            what = %failure.what,
            code = failure.code,
            scope = failure.scope.as_str(),
            "step failed: {}",
            failure.message
        );
        let shared = self.shared.clone();
        let decision = ladder::after_failure(
            batch,
            &failure,
            elapsed,
            &shared.replay,
            &shared.metrics,
            &shared.events,
        );
        // The replays wait in the queue, where a replacement thread finds them if this one
        // gets stuck recovering the device.
        shared.queue.push_replays(decision.replays);
        if decision.recover {
            self.recover(&failure)?;
        }
        Ok(())
    }

    /// Brings the device back after a failed step: resets it in place, up to
    /// `max_recovery_attempts` times after the replay backoff — unless the failure or a reset
    /// says the context is lost for this process, or the worker cannot be restarted. Then the
    /// device is given up (see [`StepLoop::lost`]).
    fn recover(&mut self, cause: &StepFailure) -> Result<(), Abandoned> {
        if cause.context_lost() || ends_recovery(cause) {
            self.lost(cause);
            return Ok(());
        }
        let shared = self.shared.clone();
        let attempts = shared.replay.max_recovery_attempts;
        let mut last = cause.clone();
        for attempt in 1..=attempts {
            let delay = shared.replay.delay(self.consecutive_failures.max(attempt));
            std::thread::sleep(delay);
            shared.metrics.backend_resets.inc();
            let (_, result) = self.call(Activity::Recover, Vec::new(), |r| r.recover())?;
            shared.events.emit(|| EventRecord {
                attempt: Some(attempt),
                code: result.as_ref().err().and_then(|f| f.code),
                error: result.as_ref().err().map(|f| f.message.clone()),
                ..EventRecord::new(
                    "engine",
                    "context_reset",
                    if result.is_ok() {
                        "succeeded"
                    } else {
                        "failed"
                    },
                )
            });
            match result {
                Ok(()) => return Ok(()),
                Err(failure) => {
                    tracing::warn!(attempt, "could not recover the device: {}", failure.message);
                    let stop = failure.context_lost() || ends_recovery(&failure);
                    last = failure;
                    if stop {
                        break;
                    }
                }
            }
        }
        self.lost(&last);
        Ok(())
    }

    /// The device is lost (for this process, or its recovery ran out): the CPU fallback takes
    /// over when configured, else the engine is unhealthy; either way self-healing is scheduled.
    fn lost(&mut self, failure: &StepFailure) {
        let shared = self.shared.clone();
        shared.metrics.device_lost.inc();
        let reason = format!(
            "the {} device is lost ({}: {})",
            shared.primary_backend, failure.what, failure.message
        );
        let cause = if failure.context_lost() || failure.reason == "crash_loop" {
            HealthCause::DeviceLost
        } else {
            HealthCause::RecoveryFailed
        };
        shared.events.emit(|| EventRecord {
            code: failure.code,
            class: Some(failure.class.as_str()),
            error: Some(reason.clone()),
            ..EventRecord::new("engine", "device_lost", failure.scope.as_str())
        });
        if failure.context_lost() {
            // Nothing in this process can use that context again; its teardown may hang on a
            // real device, so it is dropped on a thread of its own.
            if let Some(runner) = self.primary.take() {
                bury(runner);
            }
        }
        if self.serving == Serving::Fallback {
            // The fallback itself failed to recover: nothing serves.
            if let Some(runner) = self.fallback.take() {
                bury(runner);
            }
        } else if let Some(make) = shared.fallback.clone() {
            match catch(|| make.make()) {
                Ok(runner) => {
                    tracing::warn!(
                        cause = cause.as_str(),
                        "{reason}; serving on the CPU fallback (degraded) until a fresh {} \
                         backend answers its probe",
                        shared.primary_backend
                    );
                    shared.events.emit(|| EventRecord {
                        error: Some(reason.clone()),
                        ..EventRecord::new("engine", "fallback", "entered")
                    });
                    self.fallback = Some(runner);
                    self.serving = Serving::Fallback;
                    shared.metrics.degraded.set(1);
                    shared.health.degraded(cause, reason);
                    self.schedule_heal(true);
                    return;
                }
                Err(error) => {
                    tracing::error!("the CPU fallback could not start: {}", error.message);
                }
            }
        }
        tracing::error!(
            cause = cause.as_str(),
            "{reason}; the engine is unhealthy until it heals"
        );
        self.serving = Serving::Nothing;
        shared.metrics.degraded.set(0);
        shared.health.unhealthy(cause, reason);
        self.schedule_heal(true);
    }

    /// Plans the next self-healing try (`first`: the first since the device was lost).
    fn schedule_heal(&mut self, first: bool) {
        if first {
            self.heal_attempt = 0;
        }
        self.heal_attempt += 1;
        self.heal_at = Some(Instant::now() + self.shared.recovery.delay(self.heal_attempt));
    }

    /// A self-healing try: the kept primary recovered (a worker restarted), or a fresh one
    /// made, then probed. On success the device serves again and the fallback is let go.
    fn heal(&mut self) -> Result<(), Abandoned> {
        let shared = self.shared.clone();
        let attempt = self.heal_attempt;
        let result = match self.primary.take() {
            Some(mut runner) => {
                shared.begin(self.generation, Activity::Recover, Vec::new());
                let result = catch(|| runner.recover().and_then(|()| runner.probe()));
                if shared.end(self.generation).is_none() {
                    return Err(Abandoned);
                }
                match result {
                    Ok(()) => Ok(runner),
                    Err(failure) => {
                        if !failure.context_lost() {
                            self.primary = Some(runner);
                        } else {
                            bury(runner);
                        }
                        Err(failure)
                    }
                }
            }
            None => {
                shared.begin(self.generation, Activity::Start, Vec::new());
                let result = catch(|| {
                    let mut runner = shared.factory.make()?;
                    runner.probe()?;
                    Ok(runner)
                });
                if shared.end(self.generation).is_none() {
                    return Err(Abandoned);
                }
                result
            }
        };
        shared.metrics.recovery_attempt(result.is_ok());
        shared.events.emit(|| EventRecord {
            attempt: Some(attempt),
            code: result.as_ref().err().and_then(|f| f.code),
            error: result.as_ref().err().map(|f| f.message.clone()),
            ..EventRecord::new(
                "engine",
                "recovery_attempt",
                if result.is_ok() { "success" } else { "failure" },
            )
        });
        match result {
            Ok(runner) => {
                tracing::warn!(
                    attempt,
                    "the {} device is back: serving on it again",
                    shared.primary_backend
                );
                let backend = runner.device().backend.to_string();
                self.primary = Some(runner);
                if self.serving == Serving::Fallback {
                    shared
                        .events
                        .emit(|| EventRecord::new("engine", "fallback", "left"));
                }
                if let Some(fallback) = self.fallback.take() {
                    bury(fallback);
                }
                self.serving = Serving::Primary;
                self.heal_at = None;
                self.consecutive_failures = 0;
                shared.metrics.degraded.set(0);
                shared.health.succeeded(None);
                shared.health.serving(backend);
            }
            Err(failure) => {
                tracing::info!(attempt, "the device is still lost: {}", failure.message);
                self.schedule_heal(false);
            }
        }
        Ok(())
    }
}

/// Whether no further reset in place can help (the worker crash-loops, or there is no way to
/// make a backend at all).
fn ends_recovery(failure: &StepFailure) -> bool {
    failure.reason == "crash_loop"
        || (failure.class == Recovery::Fatal && failure.what == "backend")
}

/// Drops a runner on a thread of its own: a poisoned device's teardown can hang.
fn bury(runner: Box<dyn StepRunner>) {
    let _ = std::thread::Builder::new()
        .name("hipinfer-teardown".into())
        .spawn(move || drop(runner));
}

/// Runs `f`, turning a panic into a Fatal step failure (a bug must not lose requests).
fn catch<T>(f: impl FnOnce() -> Result<T, StepFailure>) -> Result<T, StepFailure> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(StepFailure::fatal("step", format!("panicked: {message}")))
    })
}
