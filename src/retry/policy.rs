//! `RetryPolicy`: a validated `RetryConfig`, resolved per operation for the hot path.

use std::time::Duration;

use crate::error::{ConfigError, Op};

use super::backoff::BackoffSchedule;
use super::config::RetryConfig;

/// How one operation is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct OpPolicy {
    pub max_retries: u32,
    pub backoff: BackoffSchedule,
    pub deadline: Option<Duration>,
    pub poll_interval: Duration,
    pub max_polls: u32,
}

impl OpPolicy {
    fn from_validated(config: &RetryConfig) -> Self {
        OpPolicy {
            max_retries: config.max_retries,
            backoff: BackoffSchedule::from_validated(config),
            deadline: config.deadline,
            poll_interval: config.poll_interval,
            max_polls: config.max_polls,
        }
    }
}

/// A [`RetryConfig`] that passed validation, with the overrides resolved into one entry per
/// operation (an array lookup on the hot path, no map).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    config: RetryConfig,
    per_op: Vec<OpPolicy>,
}

impl RetryPolicy {
    /// Validates `config`; the error names the bad field.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let per_op = Op::ALL
            .iter()
            .map(|&op| OpPolicy::from_validated(config.for_op(op)))
            .collect();
        Ok(RetryPolicy { config, per_op })
    }

    /// The configuration this policy was made from.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The policy for `op`.
    #[inline]
    pub fn for_op(&self, op: Op) -> &OpPolicy {
        &self.per_op[op.index()]
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let config = RetryConfig::default();
        let per_op = Op::ALL
            .iter()
            .map(|_| OpPolicy::from_validated(&config))
            .collect();
        RetryPolicy { config, per_op }
    }
}
