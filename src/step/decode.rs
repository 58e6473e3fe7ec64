//! [`DecodeRunner`]: what the scheduler asks of whatever runs its steps — one forward pass of
//! several sequences over the shared KV cache, a recovery after a failed one, a probe — and
//! [`LocalDecoder`], the model on a backend of this process whose every call goes through the
//! retry layer. A failure is a [`StepFailure`], in the terms the embedding engine's ladder uses
//! (its class, and how far it reaches).

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use super::in_process::{probe_kernel, reset as reset_resilient};
use super::{RetryRecord, RetryReport, StepFailure};
use crate::backend::{Backend, DeviceInfo, Resilient};
use crate::error::{HipError, Recovery};
use crate::llm::{forward_batch, Decoder, Feed, KvCache, LanguageModel, LlamaWeights};
use crate::model::ModelError;
use crate::retry::{RetryPolicy, RetryState};

/// One step's answer: per feed, the logits of its wanted rows; and the device calls that
/// succeeded after retries on the way.
#[derive(Debug, Clone, Default)]
pub struct StepLogits {
    pub logits: Vec<Vec<Vec<f32>>>,
    pub recovered: Vec<RetryRecord>,
}

/// Runs generation steps for the scheduler.
pub trait DecodeRunner: Send {
    /// One forward pass of `feeds` (each in its own rows of the cache).
    fn step(&mut self, feeds: &[Feed<'_>]) -> Result<StepLogits, StepFailure>;

    /// Brings the device back after a failed step: reset it, upload the weights and make the
    /// cache again (empty: every sequence is prefilled anew). A failure with
    /// `FailureScope::Process` says no reset in this process can succeed.
    fn recover(&mut self) -> Result<(), StepFailure>;

    /// A tiny kernel on the device, checked on the host.
    fn probe(&mut self) -> Result<(), StepFailure>;

    fn device(&self) -> DeviceInfo;
}

/// Makes fresh runners (at start, and when one's device is lost for good).
pub type RunnerMaker = Box<dyn Fn() -> Result<Box<dyn DecodeRunner>, StepFailure> + Send + Sync>;

/// The model on a backend of this process, with a KV cache of `rows` positions.
pub struct LocalDecoder<B: Backend<Error = HipError>> {
    model: Arc<LanguageModel>,
    backend: Resilient<B>,
    weights: Option<LlamaWeights<B::Buffer>>,
    cache: Option<KvCache<B::Buffer>>,
    rows: usize,
}

impl<B: Backend<Error = HipError>> std::fmt::Debug for LocalDecoder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDecoder")
            .field("model", &self.model.path())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

fn device_failure<E>(error: E, recovered: &[crate::backend::RecoveredCall]) -> StepFailure
where
    E: std::error::Error + crate::error::Classify + Send + Sync + 'static,
{
    StepFailure::from_model_error(&ModelError::device(error), recovered)
}

impl<B: Backend<Error = HipError> + Send> LocalDecoder<B> {
    /// Wraps `backend` in the retry layer, uploads the weights and makes a cache of `rows`
    /// positions (a device failure on the way is retried after a reset, a few times).
    pub fn new(
        model: Arc<LanguageModel>,
        backend: B,
        policy: Arc<RetryPolicy>,
        state: RetryState,
        rows: usize,
    ) -> Result<Self, StepFailure> {
        let mut runner = LocalDecoder {
            model,
            backend: Resilient::new(backend, policy, state),
            weights: None,
            cache: None,
            rows,
        };
        let mut attempt = 1;
        loop {
            match runner.load() {
                Ok(()) => return Ok(runner),
                Err(failure)
                    if attempt < 3
                        && failure.class != Recovery::Fatal
                        && !failure.context_lost() =>
                {
                    attempt += 1;
                    reset_resilient(&runner.backend)?;
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Uploads the weights and makes the cache.
    fn load(&mut self) -> Result<(), StepFailure> {
        self.cache = None;
        self.weights = None;
        let weights = match self.model.upload(&self.backend) {
            Ok(Ok(weights)) => weights,
            Ok(Err(error)) => return Err(device_failure(error, &self.backend.take_recovered())),
            Err(error) => return Err(StepFailure::fatal("model", error.to_string())),
        };
        let cache = KvCache::new(&self.backend, self.model.config(), self.rows)
            .map_err(|e| device_failure(e, &self.backend.take_recovered()))?;
        self.backend.take_recovered();
        self.weights = Some(weights);
        self.cache = Some(cache);
        Ok(())
    }

    pub fn backend(&self) -> &Resilient<B> {
        &self.backend
    }
}

impl<B: Backend<Error = HipError> + Send> DecodeRunner for LocalDecoder<B> {
    fn step(&mut self, feeds: &[Feed<'_>]) -> Result<StepLogits, StepFailure> {
        let (Some(weights), Some(cache)) = (&self.weights, &mut self.cache) else {
            return Err(StepFailure::fatal(
                "runner",
                "the weights are not on the device (a recovery failed)",
            ));
        };
        let decoder = Decoder {
            config: self.model.config(),
            weights,
        };
        let result = forward_batch(&self.backend, decoder, cache, feeds);
        let recovered = self.backend.take_recovered();
        match result {
            Ok(logits) => Ok(StepLogits {
                logits,
                recovered: RetryReport::records_of(&recovered),
            }),
            Err(error) => Err(device_failure(error, &recovered)),
        }
    }

    fn recover(&mut self) -> Result<(), StepFailure> {
        // The cache's and weights' memory goes back before the reset.
        self.cache = None;
        self.weights = None;
        reset_resilient(&self.backend)?;
        self.load()
    }

    fn probe(&mut self) -> Result<(), StepFailure> {
        let result = probe_kernel(&self.backend);
        let recovered = self.backend.take_recovered();
        result.map_err(|e| StepFailure::from_model_error(&e, &recovered))
    }

    fn device(&self) -> DeviceInfo {
        self.backend.info()
    }
}

/// A runner factory over backends of `make`, with the retry layer's `policy` and `state`.
pub fn local_runners<B, F>(
    model: Arc<LanguageModel>,
    make: F,
    policy: Arc<RetryPolicy>,
    state: RetryState,
    rows: usize,
) -> RunnerMaker
where
    B: Backend<Error = HipError> + Send + 'static,
    F: Fn() -> Result<B, HipError> + Send + Sync + 'static,
{
    Box::new(move || {
        let backend = make().map_err(|e| StepFailure::fatal("backend", e.to_string()))?;
        state.breaker().reset();
        let runner =
            LocalDecoder::new(model.clone(), backend, policy.clone(), state.clone(), rows)?;
        Ok(Box::new(runner) as Box<dyn DecodeRunner>)
    })
}
