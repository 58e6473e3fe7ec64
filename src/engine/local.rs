//! The step runner of this process: the configured backend (wrapped in a `FaultyBackend` when
//! the configuration asks for injected faults) with the model's weights on it. The engine uses it
//! in-process; a worker process uses the same to serve its supervisor.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend, FaultNotifier, FaultyBackend, SelectedBackend};
use crate::error::HipError;
use crate::model::Model;
use crate::retry::{RetryPolicy, RetryState};

use super::config::EngineConfig;
use super::error::EngineError;
use super::runner::{InProcess, StepRunner};

/// Faults injected so far (tests and `hipinfer chaos` compare them with what was survived).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTotals {
    /// HIP code → faults injected with it.
    pub injected: Vec<(i32, u64)>,
    /// Cache reclaims after out-of-memory errors.
    pub reclaims: u64,
    /// Worker processes aborted by an injected fault (subprocess isolation).
    pub aborts: u64,
    /// Worker processes hung by an injected fault (subprocess isolation).
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

/// Reads the fault counters of a runner.
pub type FaultCounter = Arc<dyn Fn() -> FaultTotals + Send + Sync>;

/// Opens the configured backend and puts the model on it. With `config.faults`, the backend is
/// wrapped in a `FaultyBackend` seeded with `faults.seed + seed_offset`, telling `notifier`
/// before an injected abort or hang.
pub fn local_runner(
    config: &EngineConfig,
    model: Arc<Model>,
    retry_state: RetryState,
    seed_offset: u64,
    notifier: Option<FaultNotifier>,
) -> Result<(Box<dyn StepRunner>, Option<FaultCounter>), EngineError> {
    let opened = backend::open(config.backend, config.device, config.threads)
        .map_err(|e| EngineError::Backend(e.to_string()))?;
    let parts = LocalParts {
        config,
        model,
        retry_state,
        seed_offset,
        notifier,
    };
    match opened {
        SelectedBackend::Cpu(cpu) => parts.build(cpu),
        #[cfg(feature = "hip")]
        SelectedBackend::Hip(hip) => parts.build(hip),
    }
}

struct LocalParts<'a> {
    config: &'a EngineConfig,
    model: Arc<Model>,
    retry_state: RetryState,
    seed_offset: u64,
    notifier: Option<FaultNotifier>,
}

impl LocalParts<'_> {
    fn build<B: Backend<Error = HipError> + 'static>(
        self,
        backend: B,
    ) -> Result<(Box<dyn StepRunner>, Option<FaultCounter>), EngineError> {
        let policy = Arc::new(RetryPolicy::new(self.config.retry.clone())?);
        let attempts = self.config.step_replay.max_recovery_attempts;
        let Some(plan) = &self.config.faults else {
            let runner = InProcess::new(self.model, backend, policy, self.retry_state, attempts)?;
            return Ok((Box::new(runner), None));
        };
        let mut plan = plan.clone();
        plan.seed = plan.seed.wrapping_add(self.seed_offset);
        let mut faulty = FaultyBackend::new(backend, plan);
        if let Some(notifier) = self.notifier {
            faulty = faulty.with_notifier(notifier);
        }
        let faulty = Arc::new(faulty);
        let counters = faulty.clone();
        let counter: FaultCounter = Arc::new(move || FaultTotals {
            injected: counters.injected_counts(),
            reclaims: counters.reclaims(),
            aborts: 0,
            hangs: 0,
        });
        let runner = InProcess::new(self.model, faulty, policy, self.retry_state, attempts)?;
        Ok((Box::new(runner), Some(counter)))
    }
}
