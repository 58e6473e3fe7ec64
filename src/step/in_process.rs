//! [`InProcess`]: steps in this process — the model's weights on a backend whose every call goes
//! through the retry layer ([`Resilient`]).

// A `StepFailure` travels only on the recovery path: see `contract.rs`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use crate::backend::{Backend, DeviceInfo, Kernel, Resilient};
use crate::error::{HipError, Op, Recovery};
use crate::model::{DeviceWeights, Embedder, Encoding, Model, ModelError, Readout};
use crate::retry::{BreakerState, RetryPolicy, RetryState};

use super::contract::{FailureScope, StepFailure, StepOutput, StepRunner};
use super::report::RetryReport;
use super::spec::Upload;

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
    /// Wraps `backend` in the retry layer and uploads the weights as `upload.dtype`; an upload
    /// that fails on the device (not for a Fatal reason) is tried again after a reset, up to
    /// `upload.attempts` times in all. A reset that fails with a sticky code ends the tries at once: the device
    /// is lost for this process.
    pub fn new(
        model: Arc<Model>,
        backend: B,
        policy: Arc<RetryPolicy>,
        state: RetryState,
        upload: Upload,
    ) -> Result<Self, StepFailure> {
        let resilient = Resilient::new(backend, policy, state);
        let mut attempt = 1;
        let weights = loop {
            match DeviceWeights::upload(
                &resilient,
                model.weights(),
                &model.config().bert,
                upload.dtype,
            ) {
                Ok(weights) => break weights,
                Err(error)
                    if attempt < upload.attempts
                        && error.recovery().is_some_and(|r| r != Recovery::Fatal) =>
                {
                    tracing::warn!(attempt, "uploading the weights failed, resetting: {error}");
                    resilient.take_recovered();
                    reset(&resilient)?;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(StepFailure::from_model_error(
                        &error,
                        &resilient.take_recovered(),
                    ))
                }
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

/// Resets `backend`; a reset answered with a Reset-class (sticky) code means the context is lost
/// for this process ([`FailureScope::Process`]).
pub(crate) fn reset<B: Backend<Error = HipError>>(
    backend: &Resilient<B>,
) -> Result<(), StepFailure> {
    backend.reset().map_err(|e| {
        let mut failure =
            StepFailure::from_model_error(&ModelError::device(e), &backend.take_recovered());
        if failure.class == Recovery::Reset && failure.op == Some(Op::Init) {
            failure.scope = FailureScope::Process;
            failure.what = "device reset".into();
        }
        failure
    })
}

impl<B: Backend<Error = HipError>> StepRunner for InProcess<B> {
    fn run(&mut self, batch: &[Encoding], readout: Readout) -> Result<StepOutput, StepFailure> {
        let result = self.embedder.read_encodings(batch, readout, false);
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
        reset(self.backend())?;
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
