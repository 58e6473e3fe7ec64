//! Step runners of this process: the configured backend (wrapped in a `FaultyBackend` when faults
//! are injected) with the model's weights on it. [`LocalRunners`] makes them — the first at
//! start, fresh ones when a backend must be replaced (its context lost, a step abandoned). The
//! engine uses it in-process; a worker process uses the same to serve its supervisor.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::Registry;
use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend, FaultNotifier, FaultPlan, FaultyBackend, SelectedBackend};
use crate::error::HipError;
use crate::model::Model;
use crate::retry::{RetryPolicy, RetryState};

use super::contract::{RunnerFactory, StepFailure, StepRunner};
use super::in_process::InProcess;
use super::spec::RunnerSpec;

/// Faults injected so far (tests and `hipinfer chaos` compare them with what was survived).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTotals {
    /// HIP code → faults injected with it.
    pub injected: Vec<(i32, u64)>,
    /// Cache reclaims after out-of-memory errors.
    pub reclaims: u64,
    /// Processes aborted by an injected fault (subprocess isolation).
    pub aborts: u64,
    /// Kernels hung by an injected fault.
    pub hangs: u64,
}

impl FaultTotals {
    /// Faults injected with `code`.
    pub fn code(&self, code: i32) -> u64 {
        self.injected
            .iter()
            .filter(|(c, _)| *c == code)
            .map(|(_, n)| n)
            .sum()
    }

    /// `self + other`, code by code.
    pub fn plus(&self, other: &FaultTotals) -> FaultTotals {
        let mut injected = self.injected.clone();
        for &(code, n) in &other.injected {
            match injected.iter_mut().find(|(c, _)| *c == code) {
                Some(slot) => slot.1 += n,
                None => injected.push((code, n)),
            }
        }
        injected.sort_unstable();
        FaultTotals {
            injected,
            reclaims: self.reclaims + other.reclaims,
            aborts: self.aborts + other.aborts,
            hangs: self.hangs + other.hangs,
        }
    }
}

/// Reads the fault counters of a runner (or of every runner a factory made).
pub type FaultCounter = Arc<dyn Fn() -> FaultTotals + Send + Sync>;

/// The retry layer's shared state for runners of `spec`, its metrics in `registry`.
pub fn retry_state(spec: &RunnerSpec, registry: &Registry) -> Result<RetryState, String> {
    let mut builder = RetryState::builder()
        .registry(registry.clone())
        .breaker(spec.breaker.clone())
        .budget(spec.budget.clone())
        .device(spec.device);
    if let Some(seed) = spec.seed {
        builder = builder.seed(seed);
    }
    if let Some(path) = &spec.events {
        builder = builder.event_log(path);
    }
    builder
        .build()
        .map_err(|e| format!("could not set up the retry layer: {e}"))
}

/// Makes step runners of `spec` in this process, all sharing one retry state; with a fault plan,
/// each backend is wrapped in a `FaultyBackend` seeded apart (`seed + offset + n` for the n-th).
pub struct LocalRunners {
    spec: RunnerSpec,
    faults: FaultInjection,
    model: Arc<Model>,
    retry_state: RetryState,
}

impl std::fmt::Debug for LocalRunners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRunners")
            .field("spec", &self.spec)
            .field("faults", &self.faults.plan())
            .finish_non_exhaustive()
    }
}

impl LocalRunners {
    pub fn new(
        spec: RunnerSpec,
        faults: Option<FaultPlan>,
        model: Arc<Model>,
        retry_state: RetryState,
    ) -> Self {
        LocalRunners {
            spec,
            faults: FaultInjection::new(faults),
            model,
            retry_state,
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

    pub fn spec(&self) -> &RunnerSpec {
        &self.spec
    }

    pub fn retry_state(&self) -> &RetryState {
        &self.retry_state
    }

    /// Whether the runners inject faults.
    pub fn injects_faults(&self) -> bool {
        self.faults.plan().is_some()
    }

    /// The sum of the fault counters of every backend this factory made (`None` without faults).
    pub fn fault_counter(&self) -> Option<FaultCounter> {
        self.faults.counter()
    }

    /// Opens a backend and puts the model on it: a fresh runner (its breaker closed).
    pub fn make(&self) -> Result<Box<dyn StepRunner>, StepFailure> {
        let opened = backend::open(self.spec.backend, self.spec.device, self.spec.threads)
            .map_err(|e| StepFailure::fatal("backend", e.to_string()))?;
        self.retry_state.breaker().reset();
        match opened {
            SelectedBackend::Cpu(cpu) => self.build(cpu),
            #[cfg(feature = "hip")]
            SelectedBackend::Hip(hip) => self.build(hip),
            #[cfg(feature = "cuda")]
            SelectedBackend::Cuda(cuda) => self.build(cuda),
        }
    }

    fn build<B: Backend<Error = HipError> + 'static>(
        &self,
        backend: B,
    ) -> Result<Box<dyn StepRunner>, StepFailure> {
        let policy = Arc::new(
            RetryPolicy::new(self.spec.retry.clone())
                .map_err(|e| StepFailure::fatal("retry", e.to_string()))?,
        );
        let (model, state, upload) = (
            self.model.clone(),
            self.retry_state.clone(),
            self.spec.upload(),
        );
        Ok(match self.faults.wrap(backend) {
            Wrapped::Bare(backend) => {
                Box::new(InProcess::new(model, backend, policy, state, upload)?)
            }
            Wrapped::Faulty(faulty) => {
                Box::new(InProcess::new(model, faulty, policy, state, upload)?)
            }
        })
    }
}

/// How a factory of this process injects faults: each backend it makes wrapped in a
/// `FaultyBackend` seeded apart (`seed + offset + n·φ` for the n-th), telling `notifier` of
/// aborts and hangs, every one's counters kept for [`FaultInjection::counter`].
#[derive(Default)]
pub(crate) struct FaultInjection {
    plan: Option<FaultPlan>,
    seed_offset: u64,
    notifier: Option<FaultNotifier>,
    made: AtomicU64,
    counters: Arc<Mutex<Vec<FaultCounter>>>,
}

/// A backend for a runner: as it is (no faults to inject), or wrapped.
pub(crate) enum Wrapped<B> {
    Bare(B),
    Faulty(Arc<FaultyBackend<B>>),
}

impl FaultInjection {
    pub fn new(plan: Option<FaultPlan>) -> Self {
        FaultInjection {
            plan,
            ..FaultInjection::default()
        }
    }

    pub fn plan(&self) -> Option<&FaultPlan> {
        self.plan.as_ref()
    }

    pub fn set_seed_offset(&mut self, offset: u64) {
        self.seed_offset = offset;
    }

    pub fn set_notifier(&mut self, notifier: FaultNotifier) {
        self.notifier = Some(notifier);
    }

    /// `backend` for the next runner: wrapped in a `FaultyBackend` of its own seed when there
    /// are faults to inject.
    pub fn wrap<B>(&self, backend: B) -> Wrapped<B>
    where
        B: Backend<Error = HipError> + 'static,
    {
        let Some(plan) = &self.plan else {
            return Wrapped::Bare(backend);
        };
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let mut plan = plan.clone();
        plan.seed = plan
            .seed
            .wrapping_add(self.seed_offset)
            .wrapping_add(n.wrapping_mul(0x9e37_79b9));
        let mut faulty = FaultyBackend::new(backend, plan);
        if let Some(notifier) = &self.notifier {
            faulty = faulty.with_notifier(notifier.clone());
        }
        let faulty = Arc::new(faulty);
        let counts = faulty.clone();
        self.counters.lock().push(Arc::new(move || FaultTotals {
            injected: counts.injected_counts(),
            reclaims: counts.reclaims(),
            aborts: 0,
            hangs: counts.hangs(),
        }));
        Wrapped::Faulty(faulty)
    }

    /// The sum of the fault counters of every backend wrapped so far (`None` without faults).
    pub fn counter(&self) -> Option<FaultCounter> {
        self.plan.as_ref()?;
        let counters = self.counters.clone();
        Some(Arc::new(move || {
            counters
                .lock()
                .iter()
                .fold(FaultTotals::default(), |sum, read| sum.plus(&read()))
        }))
    }
}

impl RunnerFactory for LocalRunners {
    fn make(&self) -> Result<Box<dyn StepRunner>, StepFailure> {
        LocalRunners::make(self)
    }
}
