//! [`GenerationConfig`]: the limits and recovery settings of a [`super::GenerationEngine`].

use crate::error::ConfigError;

/// How a generation engine admits, batches and recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Token positions of KV cache all live sequences may hold together (each sequence reserves
    /// prompt + `max_tokens` when admitted). `None`: 16 contexts of the model, at most 65,536.
    pub max_total_tokens: Option<usize>,
    /// Sequences decoded together at most (more wait their turn).
    pub max_running: usize,
    /// Sequences admitted but not yet running at most (past it: overloaded).
    pub max_waiting: usize,
    /// The longest prompt accepted, in tokens (`None`: the model's context less one).
    pub max_input_length: Option<usize>,
    /// `max_tokens` when a request does not say.
    pub default_max_tokens: usize,
    /// Prompt tokens prefilled per step at most, over all sequences (running streams get
    /// their token each step besides).
    pub prefill_chunk: usize,
    /// A sequence whose steps failed this many times in a row is run alone; alone, it fails
    /// after this many failures in a row.
    pub max_step_failures: u32,
    /// Tries at recovering the device after a failed step (each a reset and an upload), and
    /// then at making a new runner, before the engine gives up on the device (every live
    /// sequence fails; the engine keeps trying to come back, with backoff).
    pub max_recoveries: u32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_total_tokens: None,
            max_running: 32,
            max_waiting: 256,
            max_input_length: None,
            default_max_tokens: 256,
            prefill_chunk: 512,
            max_step_failures: 4,
            max_recoveries: 32,
        }
    }
}

impl GenerationConfig {
    /// Checks the settings: a bad one names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_running", self.max_running),
            ("max_waiting", self.max_waiting),
            ("default_max_tokens", self.default_max_tokens),
            ("prefill_chunk", self.prefill_chunk),
            ("max_total_tokens", self.max_total_tokens.unwrap_or(1)),
            ("max_input_length", self.max_input_length.unwrap_or(1)),
            ("max_step_failures", self.max_step_failures as usize),
            ("max_recoveries", self.max_recoveries as usize),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The KV-cache budget for a model of `context` positions.
    pub fn total_tokens(&self, context: usize) -> usize {
        self.max_total_tokens
            .unwrap_or_else(|| context.saturating_mul(16).min(65_536))
    }
}
