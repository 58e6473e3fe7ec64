//! The scheduler thread: continuous batching over one runner, and the recovery of every live
//! sequence from what the host holds when a step fails.
//!
//! Each step: take what was submitted, drop what was cancelled, admit waiting sequences while
//! the batch has room and the cache a free range, then one forward pass of every running
//! sequence — a decoding sequence feeds its last token, a sequence being prefilled (new, or
//! rebuilt after a reset) feeds the next piece of its prompt + generated tokens, within
//! `prefill_chunk` prompt tokens a step — and sample, stream and finish on the host.
//!
//! A failed step (the retry layer already retried its calls in place) resets the device and
//! re-uploads the weights; every sequence's cache is then empty and is rebuilt by the same
//! feeds as a new prompt. Nothing else changes: the tokens sampled so far stay, and the next
//! token of each stream is the one it would have been. When the reset itself fails for the
//! whole process (a sticky fault), a new runner is made; when none can be, the live sequences
//! fail with the reason and the engine reports itself unhealthy while it keeps trying. A
//! sequence in a step that failed `max_step_failures` times in a row is run alone; alone, it
//! fails after as many failures, and the others go on.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::llm::{sample, Feed, FinishReason, GenerateRequest, KvSlot, LanguageModel, OutputText};
use crate::step::StepFailure;

use super::engine::Shared;
use super::request::{Finished, GenerationError, GenerationEvent, GenerationReport};
use super::slots::Slots;
use super::GenerationConfig;
use crate::step::{DecodeRunner, RunnerMaker};

/// A request accepted by the engine, on its way to the scheduler.
pub(super) struct Submission {
    pub id: u64,
    pub request: GenerateRequest,
    /// The context it may use, and the cache rows it reserved (prompt + max_tokens, at most
    /// the context).
    pub context: usize,
    pub capacity: usize,
    pub events: UnboundedSender<GenerationEvent>,
    pub admitted: Instant,
}

/// A live sequence: everything needed to (re)build its cache and continue it.
struct Sequence<'t> {
    id: u64,
    request: GenerateRequest,
    context: usize,
    capacity: usize,
    /// Prompt + generated ids.
    history: Vec<u32>,
    /// Its rows of the cache (`len`: tokens of `history` in the cache); `None` while waiting.
    slot: Option<KvSlot>,
    text: OutputText<'t>,
    events: UnboundedSender<GenerationEvent>,
    admitted: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    report: GenerationReport,
    /// Failed steps in a row, and failed steps in a row while run alone.
    strikes: u32,
    solo_failures: u32,
}

impl Sequence<'_> {
    fn prompt_len(&self) -> usize {
        self.request.prompt_ids.len()
    }

    fn generated(&self) -> &[u32] {
        &self.history[self.prompt_len()..]
    }

    fn cached(&self) -> usize {
        self.slot.map_or(0, |s| s.len)
    }
}

/// How a finished sequence leaves.
enum Exit {
    Done(FinishReason),
    Failed(GenerationError),
    Cancelled,
}

/// One sequence's part of a step.
struct Planned {
    index: usize,
    start: usize,
    len: usize,
    logits: bool,
}

pub(super) struct Scheduler<'t> {
    shared: Arc<Shared>,
    model: &'t LanguageModel,
    config: GenerationConfig,
    runner: Option<Box<dyn DecodeRunner>>,
    maker: RunnerMaker,
    waiting: VecDeque<Sequence<'t>>,
    running: Vec<Sequence<'t>>,
    slots: Slots,
    /// Sequences to run alone, in turn, until each succeeds or fails alone.
    quarantine: VecDeque<u64>,
    /// Tries at making a runner since the device was lost, and when to try again.
    heal_attempts: u32,
    heal_at: Option<Instant>,
}

impl<'t> Scheduler<'t> {
    pub fn new(
        shared: Arc<Shared>,
        model: &'t LanguageModel,
        config: GenerationConfig,
        runner: Option<Box<dyn DecodeRunner>>,
        maker: RunnerMaker,
    ) -> Self {
        let rows = shared.budget;
        let heal_at = runner.is_none().then(Instant::now);
        Scheduler {
            shared,
            model,
            config,
            runner,
            maker,
            waiting: VecDeque::new(),
            running: Vec::new(),
            slots: Slots::new(rows),
            quarantine: VecDeque::new(),
            heal_attempts: 0,
            heal_at,
        }
    }

    /// Runs until the engine closes and every live sequence has ended.
    pub fn run(mut self) {
        loop {
            if !self.intake() {
                break;
            }
            self.drop_cancelled();
            if self.runner.is_none() {
                self.heal();
                if self.runner.is_none() {
                    continue;
                }
            }
            self.admit();
            self.step();
            self.publish();
        }
        self.publish();
    }

    /// Takes what was submitted; waits while nothing is live. `false`: closed and drained.
    fn intake(&mut self) -> bool {
        let mut inbox = self.shared.inbox.lock();
        loop {
            while let Some(submission) = inbox.queue.pop_front() {
                self.shared
                    .metrics
                    .prompt_tokens
                    .inc_by(submission.request.prompt_ids.len() as u64);
                self.waiting.push_back(self.sequence(submission));
            }
            let idle = self.running.is_empty() && self.waiting.is_empty();
            if !idle && self.runner.is_some() {
                return true;
            }
            if idle && inbox.closed {
                return false;
            }
            // Nothing to run (or no runner: wait for the next try at making one).
            let wait = match self.heal_at {
                Some(at) if self.runner.is_none() => at.saturating_duration_since(Instant::now()),
                _ => Duration::from_millis(500),
            };
            if self.runner.is_none() && wait.is_zero() {
                return true;
            }
            self.shared.wake.wait_for(&mut inbox, wait);
        }
    }

    fn sequence(&self, s: Submission) -> Sequence<'t> {
        Sequence {
            id: s.id,
            history: s.request.prompt_ids.clone(),
            text: OutputText::new(self.model.tokenizer(), &s.request.stop),
            request: s.request,
            context: s.context,
            capacity: s.capacity,
            slot: None,
            events: s.events,
            admitted: s.admitted,
            first_token: None,
            last_token: None,
            report: GenerationReport::default(),
            strikes: 0,
            solo_failures: 0,
        }
    }

    /// Frees the sequences whose client went away.
    fn drop_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .running
            .iter()
            .chain(self.waiting.iter())
            .filter(|s| s.events.is_closed())
            .map(|s| s.id)
            .collect();
        for id in gone {
            self.end(id, Exit::Cancelled);
        }
    }

    /// Moves waiting sequences into the batch while it has room and the cache a free range.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(next) = self.waiting.front() else {
                break;
            };
            let Some(base) = self.slots.take(next.capacity) else {
                break; // the rows are reserved; a range frees when a sequence ends
            };
            let mut sequence = self.waiting.pop_front().expect("front exists");
            sequence.slot = Some(KvSlot {
                base,
                capacity: sequence.capacity,
                len: 0,
            });
            self.running.push(sequence);
        }
    }

    /// What each sequence feeds this step.
    fn plan(&self) -> Vec<Planned> {
        let alone = self
            .quarantine
            .front()
            .and_then(|id| self.running.iter().position(|s| s.id == *id));
        let mut budget = self.config.prefill_chunk;
        let mut planned = Vec::new();
        for (index, sequence) in self.running.iter().enumerate() {
            if alone.is_some_and(|a| a != index) {
                continue;
            }
            let start = sequence.cached();
            let pending = sequence.history.len() - start;
            let len = if pending <= 1 {
                pending
            } else {
                let len = pending.min(budget);
                budget -= len;
                len
            };
            if len == 0 {
                continue;
            }
            planned.push(Planned {
                index,
                start,
                len,
                logits: start + len == sequence.history.len(),
            });
        }
        planned
    }

    fn step(&mut self) {
        let planned = self.plan();
        if planned.is_empty() {
            return;
        }
        let last_rows: Vec<[usize; 1]> = planned.iter().map(|p| [p.len - 1]).collect();
        let feeds: Vec<Feed<'_>> = planned
            .iter()
            .zip(&last_rows)
            .map(|(p, last)| {
                let sequence = &self.running[p.index];
                let slot = sequence.slot.expect("running sequences have a slot");
                Feed {
                    slot,
                    tokens: &sequence.history[p.start..p.start + p.len],
                    prompt: sequence.prompt_len().saturating_sub(p.start).min(p.len),
                    logit_rows: if p.logits { &last[..] } else { &[] },
                }
            })
            .collect();
        let metrics = &self.shared.metrics;
        metrics.steps.inc();
        metrics.step_sequences.observe(feeds.len() as f64);
        let started = Instant::now();
        let runner = self.runner.as_mut().expect("a runner serves");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| runner.step(&feeds)))
            .unwrap_or_else(|_| Err(StepFailure::fatal("runner", "a step panicked")));
        drop(feeds);
        match result {
            Ok(answer) => {
                let retries = answer.recovered.len() as u32;
                let mut logits = answer.logits.into_iter();
                let mut ended = Vec::new();
                for p in &planned {
                    let mut rows = logits.next().unwrap_or_default();
                    let sequence = &mut self.running[p.index];
                    sequence.report.op_retries += retries;
                    sequence.strikes = 0;
                    if let Some(slot) = sequence.slot.as_mut() {
                        slot.len += p.len;
                    }
                    if self.quarantine.front() == Some(&sequence.id) {
                        self.quarantine.pop_front();
                        sequence.solo_failures = 0;
                    }
                    if p.logits {
                        if let Some(exit) = advance(sequence, rows.pop(), self.model, metrics) {
                            ended.push((sequence.id, exit));
                        }
                    }
                }
                for (id, exit) in ended {
                    self.end(id, exit);
                }
            }
            Err(failure) => self.failed(&planned, failure, started),
        }
    }

    /// A step failed: recover the device, rebuild every cache, isolate what keeps failing.
    fn failed(&mut self, planned: &[Planned], failure: StepFailure, started: Instant) {
        let metrics = self.shared.metrics.clone();
        metrics.failed_steps.inc();
        tracing::warn!(
            sequences = planned.len(),
            class = failure.class.as_str(),
            "generation step failed: {}",
            failure.message
        );
        let alone = planned.len() == 1;
        let threshold = self.config.max_step_failures;
        let mut ended = Vec::new();
        for p in planned {
            let sequence = &mut self.running[p.index];
            sequence.report.failed_steps += 1;
            sequence.report.op_retries += failure.attempts.len() as u32;
            sequence.strikes += 1;
            if failure.class == crate::error::Recovery::Fatal {
                ended.push((sequence.id, failure.message.clone()));
            } else if alone && self.quarantine.front() == Some(&sequence.id) {
                sequence.solo_failures += 1;
                if sequence.solo_failures >= threshold {
                    self.quarantine.pop_front();
                    ended.push((sequence.id, failure.message.clone()));
                }
            } else if !alone
                && sequence.strikes >= threshold
                && !self.quarantine.contains(&sequence.id)
            {
                sequence.report.isolated = true;
                metrics.isolated.inc();
                self.quarantine.push_back(sequence.id);
            }
        }
        for (id, message) in ended {
            let report = self.report_of(id);
            self.end(
                id,
                Exit::Failed(GenerationError::Failed {
                    message: format!("the device failed this sequence's steps: {message}"),
                    report,
                }),
            );
        }
        if failure.class != crate::error::Recovery::Fatal {
            self.recover(failure);
        }
        let spent = started.elapsed().as_secs_f64();
        for sequence in &mut self.running {
            sequence.report.recovery_seconds += spent;
        }
    }

    fn report_of(&self, id: u64) -> GenerationReport {
        self.running
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.report.clone())
            .unwrap_or_default()
    }

    /// Resets the device (or replaces the runner) and empties every cache. A recovery whose
    /// own calls fault (the upload is hundreds of them) is tried again, up to `max_recoveries`
    /// times; one that fails for the whole process replaces the runner.
    fn recover(&mut self, failure: StepFailure) {
        let metrics = self.shared.metrics.clone();
        let mut recovered = false;
        let mut last = None;
        for _ in 0..self.config.max_recoveries {
            let Some(runner) = self.runner.as_mut() else {
                break;
            };
            match runner.recover() {
                Ok(()) => {
                    recovered = true;
                    break;
                }
                Err(again) => {
                    metrics.recovered(false);
                    let lost = again.context_lost() || again.class == crate::error::Recovery::Fatal;
                    last = Some(again);
                    if lost {
                        break;
                    }
                }
            }
        }
        if !recovered {
            let why = last.unwrap_or_else(|| failure.clone());
            tracing::warn!(
                process = why.context_lost(),
                "the device did not come back in place: {}",
                why.message
            );
            recovered = self.replace_runner(&why);
        }
        if recovered {
            metrics.recovered(true);
            for sequence in &mut self.running {
                if let Some(slot) = sequence.slot.as_mut() {
                    if slot.len > 0 {
                        sequence.report.replays += 1;
                        sequence.report.replayed_tokens += slot.len;
                        metrics.replays.inc();
                        metrics.replayed_tokens.inc_by(slot.len as u64);
                    }
                    slot.len = 0;
                }
            }
            return;
        }
        self.lose_device(&format!(
            "the device could not be recovered: {}",
            failure.message
        ));
    }

    /// A new runner in place of one whose device is gone for this process (tried up to
    /// `max_recoveries` times: making one uploads the weights through the device too).
    fn replace_runner(&mut self, why: &StepFailure) -> bool {
        self.runner = None;
        for _ in 0..self.config.max_recoveries {
            match (self.maker)() {
                Ok(runner) => {
                    self.shared.set_health(true, None, Some(runner.device()));
                    self.runner = Some(runner);
                    return true;
                }
                Err(failure) => {
                    tracing::warn!(
                        "no new runner: {} (after: {})",
                        failure.message,
                        why.message
                    );
                    if failure.class == crate::error::Recovery::Fatal {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Nothing can serve: every live sequence fails with `reason`; the engine turns unhealthy
    /// and tries to make a runner again, with backoff.
    fn lose_device(&mut self, reason: &str) {
        self.runner = None;
        self.shared
            .set_health(false, Some(reason.to_string()), None);
        let ids: Vec<u64> = self
            .running
            .iter()
            .chain(self.waiting.iter())
            .map(|s| s.id)
            .collect();
        for id in ids {
            let report = self.report_of(id);
            self.end(
                id,
                Exit::Failed(GenerationError::Failed {
                    message: reason.to_string(),
                    report,
                }),
            );
        }
        self.quarantine.clear();
        self.heal_at = Some(Instant::now() + Duration::from_secs(1));
    }

    /// Tries to make a runner when it is time.
    fn heal(&mut self) {
        let Some(at) = self.heal_at else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        match (self.maker)() {
            Ok(runner) => {
                tracing::info!("the generation engine serves again");
                self.shared.set_health(true, None, Some(runner.device()));
                self.runner = Some(runner);
                self.heal_at = None;
                self.heal_attempts = 0;
            }
            Err(failure) => {
                self.shared
                    .set_health(false, Some(failure.message.clone()), None);
                let backoff = Duration::from_secs(1 << self.heal_attempts.min(5));
                self.heal_attempts += 1;
                self.heal_at = Some(Instant::now() + backoff);
                // Nothing can run: what waits fails now rather than waiting for a device.
                let ids: Vec<u64> = self.waiting.iter().map(|s| s.id).collect();
                for id in ids {
                    self.end(
                        id,
                        Exit::Failed(GenerationError::Unhealthy {
                            reason: failure.message.clone(),
                        }),
                    );
                }
            }
        }
    }

    /// Ends sequence `id`: its last event, its cache rows and reservation back.
    fn end(&mut self, id: u64, exit: Exit) {
        let sequence = if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(i)
        } else if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(i).expect("index found")
        } else {
            return;
        };
        self.quarantine.retain(|q| *q != id);
        let mut sequence = sequence;
        if let Some(slot) = sequence.slot.take() {
            self.slots.give(slot.base, slot.capacity);
        }
        self.shared.release(sequence.capacity);
        self.publish(); // before the last event: whoever reads it sees the rows back
        let metrics = &self.shared.metrics;
        match exit {
            Exit::Done(finish_reason) => {
                let rest = sequence.text.finish().unwrap_or_default();
                if !rest.is_empty() {
                    let _ = sequence.events.send(GenerationEvent::Token {
                        id: None,
                        text: rest,
                    });
                }
                metrics.ended(match finish_reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                });
                let now = Instant::now();
                let done = Finished {
                    prompt_tokens: sequence.prompt_len(),
                    generated_ids: sequence.generated().to_vec(),
                    text: sequence.text.text().to_string(),
                    finish_reason,
                    time_to_first_token: sequence.first_token.unwrap_or(now) - sequence.admitted,
                    total_time: now - sequence.admitted,
                    report: sequence.report.clone(),
                };
                let _ = sequence
                    .events
                    .send(GenerationEvent::Finished(Box::new(done)));
            }
            Exit::Failed(error) => {
                metrics.ended(if matches!(error, GenerationError::ShuttingDown) {
                    "shutdown"
                } else {
                    "failed"
                });
                let _ = sequence.events.send(GenerationEvent::Failed(error));
            }
            Exit::Cancelled => metrics.ended("cancelled"),
        }
    }

    fn publish(&self) {
        let metrics = &self.shared.metrics;
        metrics.running.set(self.running.len() as i64);
        metrics.waiting.set(self.waiting.len() as i64);
        let budget = self.shared.budget.max(1) as f64;
        metrics
            .kv_cache_usage
            .set(self.shared.reserved() as f64 / budget);
    }
}

/// Samples the next token of `sequence` from `logits` and streams it; `Some` when the
/// sequence is done.
fn advance(
    sequence: &mut Sequence<'_>,
    logits: Option<Vec<f32>>,
    model: &LanguageModel,
    metrics: &super::GenerationMetrics,
) -> Option<Exit> {
    let Some(mut logits) = logits else {
        return Some(Exit::Failed(GenerationError::Failed {
            message: "the step returned no logits".into(),
            report: sequence.report.clone(),
        }));
    };
    let step = sequence.generated().len() as u64;
    let token = sample(
        &sequence.request.sampling,
        &mut logits,
        &sequence.history,
        step,
    );
    let now = Instant::now();
    match sequence.last_token {
        None => metrics
            .time_to_first_token
            .observe((now - sequence.admitted).as_secs_f64()),
        Some(last) => metrics
            .time_per_output_token
            .observe((now - last).as_secs_f64()),
    }
    sequence.first_token.get_or_insert(now);
    sequence.last_token = Some(now);
    sequence.history.push(token);
    metrics.generated_tokens.inc();
    if !sequence.request.ignore_stop_tokens && model.stop_ids().contains(&token) {
        let _ = sequence.events.send(GenerationEvent::Token {
            id: Some(token),
            text: String::new(),
        });
        return Some(Exit::Done(FinishReason::Stop));
    }
    let (text, stopped) = match sequence.text.push(token) {
        Ok(piece) => piece,
        Err(error) => {
            return Some(Exit::Failed(GenerationError::Failed {
                message: format!("detokenizing failed: {error}"),
                report: sequence.report.clone(),
            }))
        }
    };
    let _ = sequence.events.send(GenerationEvent::Token {
        id: Some(token),
        text,
    });
    if stopped {
        return Some(Exit::Done(FinishReason::Stop));
    }
    let generated = sequence.generated().len();
    if generated >= sequence.request.max_tokens || sequence.history.len() >= sequence.context {
        return Some(Exit::Done(FinishReason::Length));
    }
    // The capacity is prompt + max_tokens at most the context: never past it.
    debug_assert!(sequence.history.len() <= sequence.capacity + 1);
    None
}
