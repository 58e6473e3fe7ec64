//! `StepRunner`: what runs steps for the engine — the model on a backend in this process, or
//! (issue: worker isolation) in a worker process. The engine's replay ladder only sees this
//! trait: run a step, recover the device after a failure, probe its health.

// A `StepFailure` (~140 bytes) travels only on the recovery path, after a device fault: boxing
// it would save nothing that matters.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use crate::backend::{Backend, DeviceInfo, Kernel, RecoveredCall, Resilient};
use crate::error::{Classify, HipError, Op, Recovery};
use crate::model::{DeviceWeights, Embedder, Encoding, Model, ModelError};
use crate::retry::{BreakerState, GiveUpReason, RetryError, RetryPolicy, RetryState};

use super::report::{RetryRecord, RetryReport};

/// A step's result: one raw (not normalised) mean-pooled embedding per input, and the failed
/// attempts of device calls that succeeded after retries on the way.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    pub embeddings: Vec<Vec<f32>>,
    pub recovered: Vec<RetryRecord>,
}

/// Why a step failed, in the terms the replay ladder acts on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepFailure {
    /// What to do about it: Fatal is not replayed as is; everything else is, after recovery.
    pub class: Recovery,
    /// Why the retry layer stopped (`reset`, `exhausted`, …) or what else went wrong.
    pub reason: String,
    /// What failed (`launch of hipinfer_gemm`, `worker process`).
    pub what: String,
    pub op: Option<Op>,
    pub code: Option<i32>,
    /// The error's bounded name (`hipErrorIllegalAddress`).
    pub error: String,
    pub message: String,
    /// The failed call's attempts and the retried calls before it, as report records.
    pub attempts: Vec<RetryRecord>,
    /// Whether the worker (process) died or was restarted, rather than the device failing.
    pub worker: bool,
}

impl StepFailure {
    /// A failure that is not a device error (a bad input, a bug): Fatal.
    pub fn fatal(what: impl Into<String>, message: impl Into<String>) -> StepFailure {
        StepFailure {
            class: Recovery::Fatal,
            reason: "permanent".into(),
            what: what.into(),
            op: None,
            code: None,
            error: "fatal".into(),
            message: message.into(),
            attempts: Vec::new(),
            worker: false,
        }
    }

    /// From a model error, keeping the retry layer's account when the device failed.
    pub fn from_model_error(error: &ModelError, recovered: &[RecoveredCall]) -> StepFailure {
        let mut attempts = RetryReport::records_of(recovered);
        let ModelError::Device {
            recovery, source, ..
        } = error
        else {
            let mut failure = StepFailure::fatal("model", error.to_string());
            failure.attempts = attempts;
            return failure;
        };
        match source.downcast_ref::<RetryError<HipError>>() {
            Some(gave_up) => {
                attempts.extend(
                    gave_up
                        .history()
                        .attempts
                        .iter()
                        .map(|a| RetryRecord::from_attempt(gave_up.op(), a)),
                );
                let last = gave_up.error();
                let what = match last.and_then(HipError::kernel) {
                    Some(kernel) => format!("{} of {kernel}", gave_up.op()),
                    None => gave_up.op().to_string(),
                };
                StepFailure {
                    class: step_class(gave_up.reason(), *recovery),
                    reason: gave_up.reason().as_str().into(),
                    what,
                    op: Some(gave_up.op()),
                    code: gave_up.code(),
                    error: gave_up.code_label().into(),
                    message: gave_up.to_string(),
                    attempts,
                    worker: false,
                }
            }
            None => StepFailure {
                class: *recovery,
                reason: recovery.as_str().into(),
                what: "device".into(),
                op: None,
                code: None,
                error: recovery.as_str().into(),
                message: error.to_string(),
                attempts,
                worker: false,
            },
        }
    }
}

/// The class a failed step is handled by. Retries that ran out (exhausted, budget, deadline,
/// breaker) are worth a replay after a reset; a give-up on a Probe-class error is treated as
/// Reset, since a replay on a fresh context is the probe.
fn step_class(reason: GiveUpReason, recovery: Recovery) -> Recovery {
    match reason {
        GiveUpReason::Permanent => Recovery::Fatal,
        GiveUpReason::Reset | GiveUpReason::Probe => Recovery::Reset,
        GiveUpReason::Exhausted if recovery == Recovery::Reclaim => Recovery::Reclaim,
        GiveUpReason::Exhausted
        | GiveUpReason::Budget
        | GiveUpReason::CircuitOpen
        | GiveUpReason::Deadline => Recovery::Retry,
    }
}

/// Runs steps for the engine.
pub trait StepRunner: Send {
    /// Runs one padded batch through the model.
    fn run(&mut self, batch: &[Encoding]) -> Result<StepOutput, StepFailure>;

    /// Brings the device back after a failed step: reset it and upload the weights again.
    fn recover(&mut self) -> Result<(), StepFailure>;

    /// A tiny kernel on the device, checked on the host: does the device compute?
    fn probe(&mut self) -> Result<(), StepFailure>;

    /// The device the steps run on.
    fn device(&self) -> DeviceInfo;

    /// The device's circuit breaker.
    fn breaker_state(&self) -> BreakerState;
}

/// Steps in this process: the model's weights on a backend whose every call is retried.
pub struct InProcess<B: Backend<Error = HipError>> {
    embedder: Embedder<Resilient<B>>,
}

impl<B: Backend<Error = HipError>> std::fmt::Debug for InProcess<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("embedder", &self.embedder)
            .finish()
    }
}

impl<B: Backend<Error = HipError>> InProcess<B> {
    /// Wraps `backend` in the retry layer and uploads the weights; an upload that fails on the
    /// device (not for a Fatal reason) is tried again after a reset, up to `upload_attempts`
    /// times in all.
    pub fn new(
        model: Arc<Model>,
        backend: B,
        policy: Arc<RetryPolicy>,
        state: RetryState,
        upload_attempts: u32,
    ) -> Result<Self, ModelError> {
        let resilient = Resilient::new(backend, policy, state);
        let mut attempt = 1;
        let weights = loop {
            match DeviceWeights::upload(&resilient, model.weights(), &model.config().bert) {
                Ok(weights) => break weights,
                Err(error)
                    if attempt < upload_attempts
                        && error.recovery().is_some_and(|r| r != Recovery::Fatal) =>
                {
                    tracing::warn!(attempt, "uploading the weights failed, resetting: {error}");
                    let _ = resilient.reset();
                    resilient.take_recovered();
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        resilient.take_recovered();
        Ok(InProcess {
            embedder: Embedder::with_weights(model, resilient, weights),
        })
    }

    pub fn backend(&self) -> &Resilient<B> {
        self.embedder.backend()
    }
}

impl<B: Backend<Error = HipError>> StepRunner for InProcess<B> {
    fn run(&mut self, batch: &[Encoding]) -> Result<StepOutput, StepFailure> {
        let result = self.embedder.embed_encodings(batch, false);
        let recovered = self.backend().take_recovered();
        match result {
            Ok(embeddings) => Ok(StepOutput {
                embeddings,
                recovered: RetryReport::records_of(&recovered),
            }),
            Err(error) => Err(StepFailure::from_model_error(&error, &recovered)),
        }
    }

    fn recover(&mut self) -> Result<(), StepFailure> {
        let backend = self.backend();
        backend.reset().map_err(|e| {
            StepFailure::from_model_error(&ModelError::device(e), &backend.take_recovered())
        })?;
        let result = self.embedder.reupload();
        let recovered = self.backend().take_recovered();
        result.map_err(|e| StepFailure::from_model_error(&e, &recovered))
    }

    fn probe(&mut self) -> Result<(), StepFailure> {
        let result = probe_kernel(self.backend());
        let recovered = self.backend().take_recovered();
        result.map_err(|e| StepFailure::from_model_error(&e, &recovered))
    }

    fn device(&self) -> DeviceInfo {
        self.backend().info()
    }

    fn breaker_state(&self) -> BreakerState {
        self.backend().state().breaker().state()
    }
}

/// Normalises (3, 4) on the device and checks the answer is (0.6, 0.8).
pub fn probe_kernel<B: Backend>(backend: &B) -> Result<(), ModelError> {
    let device = ModelError::device::<B::Error>;
    let mut buffer = backend.allocate(2).map_err(device)?;
    backend
        .copy_to_device(&[3.0f32, 4.0], &mut buffer)
        .map_err(device)?;
    backend
        .launch(Kernel::L2Normalize {
            x: &mut buffer,
            rows: 1,
            cols: 2,
        })
        .map_err(device)?;
    backend.synchronize().map_err(device)?;
    let mut answer = [0.0f32; 2];
    backend.copy_to_host(&buffer, &mut answer).map_err(device)?;
    if (answer[0] - 0.6).abs() > 1e-5 || (answer[1] - 0.8).abs() > 1e-5 {
        return Err(ModelError::Device {
            recovery: Recovery::Reset,
            message: format!("the probe kernel computed {answer:?} instead of [0.6, 0.8]"),
            source: format!("wrong probe answer {answer:?}").into(),
        });
    }
    Ok(())
}
