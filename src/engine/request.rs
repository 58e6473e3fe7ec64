//! What a caller asks of the engine and what it gets back, and the engine's record of a request
//! in flight (its inputs' results as they arrive, its retry report, its one reply).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::model::{Readout, Truncation};
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
    /// Which end of a long input is kept (default the start, as TEI).
    pub truncation_direction: Truncation,
    /// One pooled embedding per input (the default), or every token's hidden state
    /// (`per_token`, TEI's `/embed_all`; never normalised).
    pub readout: Readout,
}

impl EmbedRequest {
    pub fn new<S: Into<String>>(inputs: impl IntoIterator<Item = S>) -> Self {
        EmbedRequest {
            inputs: inputs.into_iter().map(Into::into).collect(),
            normalize: true,
            truncate: true,
            truncation_direction: Truncation::Right,
            readout: Readout::Pooled,
        }
    }

    /// Every token's hidden state instead of one pooled embedding per input.
    pub fn per_token(mut self) -> Self {
        self.readout = Readout::PerToken;
        self
    }

    pub fn truncation_direction(mut self, direction: Truncation) -> Self {
        self.truncation_direction = direction;
        self
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

    /// A per-token answer's embeddings as `[input][token][dimension]`.
    pub fn token_embeddings(&self) -> Vec<Vec<&[f32]>> {
        self.embeddings
            .iter()
            .zip(&self.input_tokens)
            .map(|(values, &tokens)| {
                let width = values.len() / tokens.max(1);
                values.chunks(width.max(1)).collect()
            })
            .collect()
    }
}

/// How a finished request's reply reaches its caller.
pub(crate) enum Reply {
    Blocking(std::sync::mpsc::SyncSender<Result<EmbedResponse, EngineError>>),
    Async(tokio::sync::oneshot::Sender<Result<EmbedResponse, EngineError>>),
}

impl Reply {
    /// Whether the caller stopped waiting (dropped its future: a client that went away).
    fn is_abandoned(&self) -> bool {
        match self {
            Reply::Blocking(_) => false,
            Reply::Async(tx) => tx.is_closed(),
        }
    }

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
    pub readout: Readout,
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
    pub readout: Readout,
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
            readout,
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
            readout,
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

    /// Fails the request as cancelled if its caller went away; says whether it did. Its
    /// inputs then never reach a step.
    pub fn drop_if_abandoned(&self) -> bool {
        let abandoned = self
            .progress
            .lock()
            .reply
            .as_ref()
            .is_some_and(Reply::is_abandoned);
        if abandoned {
            self.fail(|_| EngineError::Cancelled);
        }
        abandoned
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
        if reply.as_ref().is_some_and(Reply::is_abandoned) {
            // Its step was already running when the caller left: the answer is discarded.
            m.failed(EngineError::Cancelled.kind());
            return Completion::Stored;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        inputs: usize,
    ) -> (
        RequestState,
        std::sync::mpsc::Receiver<Result<EmbedResponse, EngineError>>,
        EngineMetrics,
    ) {
        let metrics = EngineMetrics::register(&prometheus::Registry::new()).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let permit =
            Permit::try_acquire(&Arc::new(AtomicUsize::new(0)), 1, &metrics.in_flight).unwrap();
        let state = RequestState::new(Submission {
            id: 7,
            inputs,
            normalize: false,
            readout: Readout::Pooled,
            submitted: Instant::now(),
            deadline: None,
            tokenization: Duration::ZERO,
            input_tokens: vec![3; inputs],
            reply: Reply::Blocking(tx),
            permit,
            metrics: metrics.clone(),
        });
        (state, rx, metrics)
    }

    #[test]
    fn a_second_completion_of_an_input_is_counted_and_never_answered() {
        let (state, rx, metrics) = request(2);
        assert_eq!(state.complete(0, vec![1.0], false), Completion::Stored);
        // A bug that runs input 0 twice: caught, counted, not stored.
        assert_eq!(state.complete(0, vec![9.0], false), Completion::Duplicate);
        assert_eq!(state.complete(1, vec![2.0], true), Completion::Stored);
        let answer = rx.try_recv().unwrap().unwrap();
        assert_eq!(answer.embeddings, vec![vec![1.0], vec![2.0]]);
        assert!(answer.degraded);
        assert_eq!(answer.request_id, 7);
        // After the answer, a result for any input is a duplicate; nothing more is sent.
        assert_eq!(state.complete(1, vec![3.0], false), Completion::Duplicate);
        assert!(rx.try_recv().is_err());
        assert_eq!(metrics.duplicate_completions.get(), 2);
        assert_eq!(metrics.discarded_results.get(), 0);
    }

    #[test]
    fn a_result_for_a_failed_request_is_discarded_not_duplicated() {
        let (state, rx, metrics) = request(2);
        state.fail(|_| EngineError::ShuttingDown);
        assert!(matches!(
            rx.try_recv().unwrap(),
            Err(EngineError::ShuttingDown)
        ));
        assert_eq!(state.complete(0, vec![1.0], false), Completion::Discarded);
        assert_eq!(state.complete(0, vec![1.0], false), Completion::Duplicate);
        assert!(rx.try_recv().is_err());
        assert_eq!(metrics.discarded_results.get(), 1);
        assert_eq!(metrics.duplicate_completions.get(), 1);
    }
}
