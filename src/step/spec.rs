//! [`RunnerSpec`]: what a step runner is built from — the model folder, the backend, the retry
//! policy, breaker and budget — whether it runs in this process or in a worker process (the
//! supervisor sends it in its `Start` message). The engine makes one from its `EngineConfig`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendChoice, Dtype};
use crate::retry::{BreakerConfig, BudgetConfig, RetryConfig};

/// Everything a step runner needs but the faults to inject (those travel apart, so that a
/// configuration file can never turn them on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    /// The model folder.
    pub model: PathBuf,
    pub backend: BackendChoice,
    pub device: i32,
    /// CPU backend threads (`None`: one per core).
    pub threads: Option<usize>,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub budget: BudgetConfig,
    /// Seeds the retry jitter.
    pub seed: Option<u64>,
    /// The precision of the linear layers' weights.
    pub dtype: Dtype,
    /// Tries at uploading the weights (each after a reset) before a runner fails to start.
    pub upload_attempts: u32,
    /// The recovery log (JSON lines, appended), when one is kept.
    pub events: Option<PathBuf>,
}

impl RunnerSpec {
    /// How this spec's runners upload the weights.
    pub fn upload(&self) -> Upload {
        Upload {
            attempts: self.upload_attempts,
            dtype: self.dtype,
        }
    }
}

/// How a runner uploads the model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    /// Tries (each after a reset) before the runner fails to start.
    pub attempts: u32,
    /// The precision of the linear layers' weights.
    pub dtype: Dtype,
}
