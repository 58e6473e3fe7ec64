//! What a caller asks of the engine and what it gets back, and the engine's record of a request
//! in flight (its inputs' results as they arrive, its retry report, its one reply).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::step::RetryReport;

use super::error::EngineError;
use super::metrics::EngineMetrics;

/// A request: texts to embed.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub inputs: Vec<String>,
    /// Unit-length embeddings (default true, as TEI).
    pub normalize: bool,
    /// Cut inputs longer than the limit instead of refusing them (default true, as TEI).
    pub truncate: bool,
}

impl EmbedRequest {
    pub fn new<S: Into<String>>(inputs: impl IntoIterator<Item = S>) -> Self {
        EmbedRequest {
            inputs: inputs.into_iter().map(Into::into).collect(),
            normalize: true,
            truncate: true,
        }
    }

    pub fn normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    pub fn truncate(mut self, truncate: bool) -> Self {
        self.truncate = truncate;
        self
    }
}

/// Where a request's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    pub tokenization: Duration,
    /// From submission until its first input's step started.
    pub queue: Duration,
    /// The steps that ran its inputs (successful and failed).
    pub inference: Duration,
    pub total: Duration,
}

/// The answer: one embedding per input, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens per input, special tokens included (after truncation).
    pub input_tokens: Vec<usize>,
    pub retry: RetryReport,
    pub timings: Timings,
    /// Whether any of its inputs ran on the CPU fallback (the device was lost).
    pub degraded: bool,
    /// The engine's id of the request (as in the recovery log).
    pub request_id: u64,
}

impl EmbedResponse {
    pub fn total_tokens(&self) -> usize {
        self.input_tokens.iter().sum()
    }
}

/// How a finished request's reply reaches its caller.
pub(crate) enum Reply {
    Blocking(std::sync::mpsc::SyncSender<Result<EmbedResponse, EngineError>>),
    Async(tokio::sync::oneshot::Sender<Result<EmbedResponse, EngineError>>),
}

impl Reply {
    fn send(self, result: Result<EmbedResponse, EngineError>) {
        // A caller that stopped waiting (dropped its future) needs no answer.
        let _ = match self {
            Reply::Blocking(tx) => tx.send(result).map_err(|_| ()),
            Reply::Async(tx) => tx.send(result).map_err(|_| ()),
        };
    }
}

/// A slot of `max_concurrent_requests`, given back when the request is answered.
#[derive(Debug)]
pub(crate) struct Permit {
    in_flight: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl Permit {
    /// Takes a slot, or says the engine is full; `gauge` follows the count.
    pub fn try_acquire(
        in_flight: &Arc<AtomicUsize>,
        limit: usize,
        gauge: &prometheus::IntGauge,
    ) -> Option<Permit> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                gauge.inc();
                Permit {
                    in_flight: in_flight.clone(),
                    gauge: gauge.clone(),
                }
            })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// What became of a result handed to [`RequestState::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Stored (and the request answered if it was the last input).
    Stored,
    /// The request was answered already (failed, past its deadline): the result is discarded.
    Discarded,
    /// The input was completed before: a second completion, never answered twice.
    Duplicate,
}

/// A request in flight: shared by its inputs' queue entries.
pub(crate) struct RequestState {
    /// The engine's id (for the recovery log and the response).
    pub id: u64,
    pub normalize: bool,
    pub submitted: Instant,
    pub deadline: Option<(Duration, Instant)>,
    pub tokenization: Duration,
    pub input_tokens: Vec<usize>,
    metrics: EngineMetrics,
    progress: Mutex<Progress>,
}

struct Progress {
    embeddings: Vec<Option<Vec<f32>>>,
    remaining: usize,
    degraded: bool,
    report: RetryReport,
    started: Option<Instant>,
    inference: Duration,
    reply: Option<Reply>,
    _permit: Option<Permit>,
}

/// A request's settings and bookkeeping, from its submission.
pub(crate) struct Submission {
    pub id: u64,
    pub inputs: usize,
    pub normalize: bool,
    pub submitted: Instant,
    pub deadline: Option<Duration>,
    pub tokenization: Duration,
    pub input_tokens: Vec<usize>,
    pub reply: Reply,
    pub permit: Permit,
    pub metrics: EngineMetrics,
}

impl RequestState {
    pub fn new(submission: Submission) -> RequestState {
        let Submission {
            id,
            inputs,
            normalize,
            submitted,
            deadline,
            tokenization,
            input_tokens,
            reply,
            permit,
            metrics,
        } = submission;
        RequestState {
            id,
            normalize,
            submitted,
            deadline: deadline.map(|d| (d, submitted + d)),
            tokenization,
            input_tokens,
            metrics,
            progress: Mutex::new(Progress {
                embeddings: vec![None; inputs],
                remaining: inputs,
                degraded: false,
                report: RetryReport::default(),
                started: None,
                inference: Duration::ZERO,
                reply: Some(reply),
                _permit: Some(permit),
            }),
        }
    }

    /// Whether the request was answered (its other inputs need not run).
    pub fn is_answered(&self) -> bool {
        self.progress.lock().reply.is_none()
    }

    /// Whether its deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|(_, at)| now >= at)
    }

    /// Notes that a step holding one of its inputs started.
    pub fn step_started(&self, at: Instant) {
        let mut p = self.progress.lock();
        p.started.get_or_insert(at);
    }

    /// Adds a step's duration and retries to the request's account.
    pub fn account(&self, inference: Duration, update: impl FnOnce(&mut RetryReport)) {
        let mut p = self.progress.lock();
        p.inference += inference;
        update(&mut p.report);
    }

    /// The deadline instant, when it has one.
    pub fn deadline_at(&self) -> Option<Instant> {
        self.deadline.map(|(_, at)| at)
    }

    /// Fails the request with `DeadlineExceeded` if it is still unanswered.
    pub fn fail_deadline(&self) {
        if let Some((deadline, _)) = self.deadline {
            self.fail(|report| EngineError::DeadlineExceeded { deadline, report });
        }
    }

    /// Stores input `index`'s embedding (computed on the CPU fallback when `degraded`);
    /// answers the request when it was the last. A result for an answered request is
    /// discarded; a second result for one input is a duplicate — counted, never answered.
    pub fn complete(&self, index: usize, embedding: Vec<f32>, degraded: bool) -> Completion {
        let mut guard = self.progress.lock();
        let p = &mut *guard;
        let filled = p.embeddings.get(index).map(Option::is_some);
        if filled != Some(false) {
            drop(guard);
            self.metrics.duplicate_completions.inc();
            tracing::error!(
                request = self.id,
                index,
                "an input was completed twice (or does not exist); the result is dropped"
            );
            return Completion::Duplicate;
        }
        if p.reply.is_none() {
            // Kept, so that a third result for it is still seen as a duplicate.
            p.embeddings[index] = Some(Vec::new());
            drop(guard);
            self.metrics.discarded_results.inc();
            return Completion::Discarded;
        }
        p.embeddings[index] = Some(embedding);
        p.remaining -= 1;
        p.degraded |= degraded;
        if p.remaining > 0 {
            return Completion::Stored;
        }
        let mut p = guard;
        // Kept in place (answered requests keep their slots filled), so that a late second
        // result for an input is still seen as the duplicate it is.
        let embeddings = p
            .embeddings
            .iter_mut()
            .map(|e| e.replace(Vec::new()).unwrap_or_default())
            .collect();
        let degraded = p.degraded;
        let response = EmbedResponse {
            embeddings,
            input_tokens: self.input_tokens.clone(),
            retry: std::mem::take(&mut p.report),
            timings: Timings {
                tokenization: self.tokenization,
                queue: p.started.map_or(Duration::ZERO, |s| s - self.submitted),
                inference: p.inference,
                total: self.submitted.elapsed(),
            },
            degraded,
            request_id: self.id,
        };
        let reply = p.reply.take();
        p._permit.take();
        drop(p);
        let m = &self.metrics;
        m.successes.inc();
        m.request_duration
            .observe(response.timings.total.as_secs_f64());
        m.queue_duration
            .observe(response.timings.queue.as_secs_f64());
        m.inference_duration
            .observe(response.timings.inference.as_secs_f64());
        if degraded {
            m.degraded_requests.inc();
        }
        if let Some(reply) = reply {
            reply.send(Ok(response));
        }
        Completion::Stored
    }

    /// Fails the whole request with `error(report)` (nothing happens if it was answered).
    pub fn fail(&self, error: impl FnOnce(RetryReport) -> EngineError) {
        let mut p = self.progress.lock();
        let Some(reply) = p.reply.take() else {
            return;
        };
        let report = std::mem::take(&mut p.report);
        p._permit.take();
        drop(p);
        let error = error(report);
        self.metrics.failed(error.kind());
        self.metrics
            .request_duration
            .observe(self.submitted.elapsed().as_secs_f64());
        reply.send(Err(error));
    }
}
