//! The step worker: one dedicated thread that takes batches from the queue, runs them through a
//! [`StepRunner`], and climbs the recovery ladder when a step fails.
//!
//! The ladder (see `../shared/docs/hip-errors.md`): device calls were already retried in place
//! by the retry layer, so a failed step means the device context is poisoned (Reset), a call ran
//! out of retries, or the error is Fatal. Then:
//! - **Fatal**: nothing is wrong with the device; if the step held several inputs, each is
//!   replayed alone (one of them may be at fault), and an input that fails alone fails.
//! - **Reclaim** (out of memory after freeing the cache): the batch is split in halves.
//! - **Everything else**: the device is recovered (reset, weights uploaded again) and the step
//!   replayed from its host-side inputs, after a backoff. Inputs present in two consecutive
//!   failed steps are suspects: they are isolated by halving their group at each further
//!   failure, so a poisoned input is alone after log₂(batch) replays while the innocent halves
//!   succeed; one that fails alone more than `max_replays` times fails — only it.
//!
//! Every input is answered exactly once: with its embedding, or with an error saying what
//! failed and how often it was tried. None is dropped, whatever the runner does (a panic in a
//! step is caught and handled as a Fatal failure).

// A `StepFailure` (~140 bytes) travels only on the recovery path, after a device fault: boxing
// it would save nothing that matters.
#![allow(clippy::result_large_err)]

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Recovery;
use crate::model::Encoding;
use crate::retry::Clock;

use super::config::StepReplayConfig;
use super::error::EngineError;
use super::metrics::EngineMetrics;
use super::queue::{Entry, Limits, Queue, Work};
use super::report::{RetryRecord, RetryScope};
use super::request::RequestState;
use super::runner::{StepFailure, StepRunner};

/// What the engine's front reads about the worker's state.
#[derive(Debug, Default)]
pub(crate) struct WorkerHealth {
    /// When a step or probe last succeeded.
    pub last_success: Mutex<Option<Instant>>,
    /// Why the device cannot be used now (recovery failed); cleared when it recovers.
    pub unhealthy: Mutex<Option<String>>,
    /// The device's circuit breaker, as of the last step.
    pub breaker: Mutex<crate::retry::BreakerState>,
}

pub(crate) struct Worker {
    pub runner: Box<dyn StepRunner>,
    pub queue: Arc<Queue>,
    pub limits: Limits,
    pub replay: StepReplayConfig,
    pub metrics: EngineMetrics,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<WorkerHealth>,
    /// Batches to replay before taking new work, in order.
    pub replays: VecDeque<Vec<Entry>>,
    /// Failed steps since the last success (drives the replay backoff).
    pub consecutive_failures: u32,
}

impl Worker {
    /// Runs until the queue is closed and everything in it is answered.
    pub fn run(mut self) {
        loop {
            let work = match self.replays.pop_front() {
                Some(batch) => Work::Batch(batch),
                None => self.queue.next(self.limits),
            };
            match work {
                Work::Stop => break,
                Work::Probe(replies) => {
                    let result = self.probe();
                    for reply in replies {
                        let _ = reply.send(result.clone());
                    }
                }
                Work::Batch(batch) => self.step(batch),
            }
            self.metrics.queue_size.set(self.queue.len() as i64);
            *self.health.breaker.lock() = self.runner.breaker_state();
        }
    }

    fn probe(&mut self) -> Result<(), String> {
        let unhealthy = self.health.unhealthy.lock().clone();
        if let Some(reason) = unhealthy {
            // A probe is a chance to heal.
            if self.recover().is_err() {
                return Err(reason);
            }
        }
        match catch(|| self.runner.probe()) {
            Ok(()) => {
                *self.health.last_success.lock() = Some(Instant::now());
                Ok(())
            }
            Err(failure) => Err(format!("the health probe failed: {}", failure.message)),
        }
    }

    /// Runs one batch, and handles its failure.
    fn step(&mut self, batch: Vec<Entry>) {
        let started = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for entry in batch {
            if entry.request.is_answered() {
                continue; // another input of its request failed
            }
            if entry.request.expired(started) {
                fail_deadline(&entry.request);
                continue;
            }
            live.push(entry);
        }
        if live.is_empty() {
            return;
        }
        let unhealthy = self.health.unhealthy.lock().is_some();
        if unhealthy && self.recover().is_err() {
            let reason = self.health.unhealthy.lock().clone().unwrap_or_default();
            for entry in live {
                entry.request.fail(|_| EngineError::Unhealthy {
                    reason: reason.clone(),
                });
            }
            return;
        }
        for entry in &live {
            entry.request.step_started(started);
        }
        let longest = live.iter().map(Entry::tokens).max().unwrap_or(0);
        self.metrics.batch_size.observe(live.len() as f64);
        self.metrics
            .batch_tokens
            .observe((live.len() * longest) as f64);
        let encodings: Vec<Encoding> = live.iter().map(|e| e.encoding.clone()).collect();
        let result = catch(|| self.runner.run(&encodings));
        let elapsed = started.elapsed();
        match result {
            Ok(output) if output.embeddings.len() == live.len() => {
                self.metrics.steps_ok.inc();
                self.consecutive_failures = 0;
                *self.health.last_success.lock() = Some(Instant::now());
                for request in unique_requests(&live) {
                    request.account(elapsed, |report| report.add_recovered(&output.recovered));
                }
                for (entry, mut embedding) in live.into_iter().zip(output.embeddings) {
                    if entry.request.normalize {
                        crate::model::normalize(&mut embedding);
                    }
                    entry.request.complete(entry.index, embedding);
                }
            }
            Ok(output) => {
                let failure = StepFailure::fatal(
                    "step",
                    format!(
                        "the runner returned {} embeddings for {} inputs",
                        output.embeddings.len(),
                        live.len()
                    ),
                );
                self.failed(live, failure, elapsed);
            }
            Err(failure) => self.failed(live, failure, elapsed),
        }
    }

    /// Climbs the ladder for a failed step.
    fn failed(&mut self, mut batch: Vec<Entry>, failure: StepFailure, elapsed: Duration) {
        self.metrics.steps_failed.inc();
        self.consecutive_failures += 1;
        tracing::warn!(
            inputs = batch.len(),
            class = failure.class.as_str(),
            reason = %failure.reason,
            what = %failure.what,
            code = failure.code,
            "step failed: {}",
            failure.message
        );
        let alone = batch.len() == 1;
        for entry in &mut batch {
            entry.failures += 1;
            entry.alone_failures += u32::from(alone);
        }
        let now = self.clock.wall();
        for request in unique_requests(&batch) {
            let attempt = batch
                .iter()
                .filter(|e| Arc::ptr_eq(&e.request, &request))
                .map(|e| e.failures)
                .max()
                .unwrap_or(1);
            let record = RetryRecord {
                scope: if failure.worker {
                    RetryScope::Worker
                } else {
                    RetryScope::Step
                },
                attempt,
                timestamp: now,
                op: failure.op,
                class: failure.class,
                reason: failure.reason.clone(),
                code: failure.code,
                error: failure.error.clone(),
                message: failure.message.clone(),
            };
            request.account(elapsed, |report| {
                report.add_step_failure(record, &failure.attempts)
            });
        }

        let give_up = |entry: &Entry| {
            let failure = &failure;
            let attempts = entry.failures;
            entry.request.fail(|report| EngineError::Failed {
                what: failure.what.clone(),
                attempts,
                class: failure.class,
                code: failure.code,
                message: failure.message.clone(),
                report,
            });
        };

        if failure.class == Recovery::Fatal {
            // Nothing to recover: find the input at fault by running each alone.
            if alone {
                batch.iter().for_each(give_up);
            } else {
                self.metrics.replayed(failure.class);
                for entry in batch.into_iter().rev() {
                    self.replays.push_front(vec![entry]);
                }
            }
            return;
        }

        // An input fails for good once it failed alone more than `max_replays` times (or, as a
        // backstop against a device that fails every step, four times as many in all).
        let limit = self.replay.max_replays;
        let (exhausted, mut remaining): (Vec<Entry>, Vec<Entry>) =
            batch.into_iter().partition(|e| {
                e.alone_failures > limit || e.failures > limit.saturating_mul(4).max(limit + 1)
            });
        exhausted.iter().for_each(give_up);
        remaining.retain(|e| !e.request.is_answered());
        if remaining.is_empty() {
            return;
        }
        if let Err(reason) = self.recover() {
            for entry in remaining {
                entry.request.fail(|_| EngineError::Unhealthy {
                    reason: reason.clone(),
                });
            }
            return;
        }
        self.metrics.replayed(failure.class);
        let mut groups: Vec<Vec<Entry>> = Vec::new();
        if failure.class == Recovery::Reclaim {
            // Out of memory even after the cache was freed: a smaller batch may fit.
            groups.extend(halves(remaining));
        } else {
            // Inputs in two failed steps in a row may be the cause: halve their group.
            let (suspects, others): (Vec<Entry>, Vec<Entry>) =
                remaining.into_iter().partition(|e| e.failures >= 2);
            if !others.is_empty() {
                groups.push(others);
            }
            groups.extend(halves(suspects));
        }
        for group in groups.into_iter().rev() {
            self.replays.push_front(group);
        }
    }

    /// Brings the device back: waits the replay backoff, resets it and uploads the weights,
    /// trying up to `max_recovery_attempts` times. On failure the engine is marked unhealthy.
    fn recover(&mut self) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=self.replay.max_recovery_attempts {
            let delay = self.replay.delay(self.consecutive_failures.max(attempt));
            self.clock.sleep(delay);
            self.metrics.backend_resets.inc();
            match catch(|| self.runner.recover()) {
                Ok(()) => {
                    if self.health.unhealthy.lock().take().is_some() {
                        tracing::info!("the device recovered");
                    }
                    return Ok(());
                }
                Err(failure) => {
                    tracing::warn!(attempt, "could not recover the device: {}", failure.message);
                    last = failure.message;
                }
            }
        }
        let reason = format!(
            "the device could not be recovered after {} attempts: {last}",
            self.replay.max_recovery_attempts
        );
        tracing::error!("{reason}");
        *self.health.unhealthy.lock() = Some(reason.clone());
        Err(reason)
    }
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

fn fail_deadline(request: &RequestState) {
    if let Some((deadline, _)) = request.deadline {
        request.fail(|report| EngineError::DeadlineExceeded { deadline, report });
    }
}

/// `entries` in two halves (one group when it holds one entry, none when empty).
fn halves(mut entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    match entries.len() {
        0 => Vec::new(),
        1 => vec![entries],
        n => {
            let second = entries.split_off(n / 2);
            vec![entries, second]
        }
    }
}

/// The distinct requests of a batch, in order.
fn unique_requests(batch: &[Entry]) -> Vec<Arc<RequestState>> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .filter(|e| seen.insert(Arc::as_ptr(&e.request)))
        .map(|e| e.request.clone())
        .collect()
}
