//! The runner factories the engine uses besides the step module's [`LocalRunners`] and the
//! isolation module's supervisor: a backend handed over by the caller, a caller's backend
//! factory, and the CPU fallback.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{Backend, BackendChoice};
use crate::error::HipError;
use crate::model::Model;
use crate::retry::{RetryPolicy, RetryState};
use crate::step::{InProcess, LocalRunners, RunnerFactory, StepFailure, StepRunner, Upload};

/// The runner of a backend the caller handed over (`InferenceEngine::with_backend`): there is
/// one, and no way to make another.
pub(crate) struct GivenBackend {
    runner: Mutex<Option<Box<dyn StepRunner>>>,
}

impl GivenBackend {
    pub fn new<B: Backend<Error = HipError> + 'static>(
        model: Arc<Model>,
        backend: B,
        policy: Arc<RetryPolicy>,
        state: RetryState,
        upload: Upload,
    ) -> Result<Self, StepFailure> {
        let runner = InProcess::new(model, backend, policy, state, upload)?;
        Ok(GivenBackend {
            runner: Mutex::new(Some(Box::new(runner))),
        })
    }
}

impl RunnerFactory for GivenBackend {
    fn make(&self) -> Result<Box<dyn StepRunner>, StepFailure> {
        self.runner.lock().take().ok_or_else(|| {
            StepFailure::fatal(
                "backend",
                "the backend given to InferenceEngine::with_backend cannot be replaced (use \
                 InferenceEngine::with_backend_factory, or configure fallback: cpu)",
            )
        })
    }
}

/// Makes backends of a caller's factory (`InferenceEngine::with_backend_factory`).
pub(crate) struct BackendFactory<F> {
    pub make: F,
    pub model: Arc<Model>,
    pub policy: Arc<RetryPolicy>,
    pub state: RetryState,
    pub upload: Upload,
}

impl<B, F> RunnerFactory for BackendFactory<F>
where
    B: Backend<Error = HipError> + 'static,
    F: Fn() -> Result<B, HipError> + Send + Sync,
{
    fn make(&self) -> Result<Box<dyn StepRunner>, StepFailure> {
        let backend = (self.make)().map_err(|e| StepFailure::fatal("backend", e.to_string()))?;
        self.state.breaker().reset();
        let runner = InProcess::new(
            self.model.clone(),
            backend,
            self.policy.clone(),
            self.state.clone(),
            self.upload,
        )?;
        Ok(Box::new(runner))
    }
}

/// The CPU fallback's factory: the model on a plain `CpuBackend` (no faults injected), with a
/// circuit breaker of its own.
pub(crate) fn cpu_fallback(
    spec: &crate::step::RunnerSpec,
    model: Arc<Model>,
    state: &RetryState,
) -> LocalRunners {
    let mut spec = spec.clone();
    spec.backend = BackendChoice::Cpu;
    LocalRunners::new(spec, None, model, state.with_private_breaker())
}
