//! [`DecoderSpec`]: what a language model's step runners are built from — the GGUF file, the
//! CPU threads, the retry policy, the KV-cache rows — whether they run in this process or in a
//! worker process (the supervisor sends it in its `Start` message); and [`LocalDecoders`],
//! which makes them in this process (a `FaultyBackend` around each backend when faults are
//! injected, seeded apart).

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::sync::Arc;

use prometheus::Registry;
use serde::{Deserialize, Serialize};

use crate::backend::{CpuBackend, FaultNotifier, FaultPlan};
use crate::llm::LanguageModel;
use crate::retry::{RetryConfig, RetryPolicy, RetryState};

use super::contract::StepFailure;
use super::decode::{DecodeRunner, LocalDecoder, RunnerMaker};
use super::local::{FaultCounter, FaultInjection, Wrapped};

/// Everything a language model's runner needs but the faults to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSpec {
    /// The GGUF file.
    pub model: PathBuf,
    /// CPU backend threads (`None`: one per core).
    pub threads: Option<usize>,
    pub retry: RetryConfig,
    /// Seeds the retry jitter.
    pub seed: Option<u64>,
    /// KV-cache rows (token positions) of each runner.
    pub rows: usize,
}

impl DecoderSpec {
    /// The retry policy of `retry` (a bad one is a clear error).
    pub fn policy(&self) -> Result<Arc<RetryPolicy>, String> {
        RetryPolicy::new(self.retry.clone())
            .map(Arc::new)
            .map_err(|e| format!("retry: {e}"))
    }

    /// The retry layer's shared state for runners of this spec, its metrics in `registry`.
    pub fn retry_state(&self, registry: &Registry) -> Result<RetryState, String> {
        let mut builder = RetryState::builder().registry(registry.clone());
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        builder
            .build()
            .map_err(|e| format!("could not set up the retry layer: {e}"))
    }
}

/// Makes language-model runners of a spec on this process's CPU backend, all sharing one
/// retry state.
pub struct LocalDecoders {
    model: Arc<LanguageModel>,
    spec: DecoderSpec,
    faults: FaultInjection,
    policy: Arc<RetryPolicy>,
    state: RetryState,
}

impl std::fmt::Debug for LocalDecoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDecoders")
            .field("spec", &self.spec)
            .field("faults", &self.faults.plan())
            .finish_non_exhaustive()
    }
}

impl LocalDecoders {
    /// A factory of runners of `spec` on `model` (opened from `spec.model`), with faults,
    /// their calls retried by `policy` (made from `spec.retry`: [`DecoderSpec::policy`]).
    pub fn new(
        model: Arc<LanguageModel>,
        spec: DecoderSpec,
        faults: Option<FaultPlan>,
        policy: Arc<RetryPolicy>,
        state: RetryState,
    ) -> Self {
        LocalDecoders {
            model,
            spec,
            faults: FaultInjection::new(faults),
            policy,
            state,
        }
    }

    /// Seeds the faults of this factory's backends `offset` further (a worker's incarnation).
    pub fn seed_offset(mut self, offset: u64) -> Self {
        self.faults.set_seed_offset(offset);
        self
    }

    /// Tells `notifier` just before an injected abort or hang.
    pub fn notifier(mut self, notifier: FaultNotifier) -> Self {
        self.faults.set_notifier(notifier);
        self
    }

    pub fn retry_state(&self) -> &RetryState {
        &self.state
    }

    /// The sum of the fault counters of every backend made (`None` without faults).
    pub fn fault_counter(&self) -> Option<FaultCounter> {
        self.faults.counter()
    }

    /// A fresh runner: a CPU backend with the weights uploaded and an empty cache.
    pub fn make(&self) -> Result<Box<dyn DecodeRunner>, StepFailure> {
        let threads = self
            .spec
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cpu = CpuBackend::with_threads(threads)
            .map_err(|e| StepFailure::fatal("backend", e.to_string()))?;
        self.state.breaker().reset();
        let (model, policy, state, rows) = (
            self.model.clone(),
            self.policy.clone(),
            self.state.clone(),
            self.spec.rows,
        );
        let runner: Box<dyn DecodeRunner> = match self.faults.wrap(cpu) {
            Wrapped::Bare(cpu) => Box::new(LocalDecoder::new(model, cpu, policy, state, rows)?),
            Wrapped::Faulty(faulty) => {
                Box::new(LocalDecoder::new(model, faulty, policy, state, rows)?)
            }
        };
        Ok(runner)
    }

    /// This factory as the generation engine's runner maker.
    pub fn into_maker(self) -> RunnerMaker {
        Box::new(move || self.make())
    }
}
