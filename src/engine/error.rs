//! `EngineError`: why a request got no embeddings. Each variant says what a client can do about
//! it, and maps to one HTTP status in the server.

use std::time::Duration;

use crate::error::{ConfigError, Recovery};
use crate::model::ModelError;

use crate::step::RetryReport;

/// A request failed, or the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request has no input.
    #[error("empty input: give at least one text")]
    EmptyInput,
    /// An input or the request breaks a limit, or cannot be tokenized.
    #[error("input validation error: {message}")]
    Validation {
        /// The input at fault, when one is.
        index: Option<usize>,
        message: String,
    },
    /// `max_concurrent_requests` requests are in flight already.
    #[error("overloaded: {limit} requests are in flight already; retry later")]
    Overloaded { limit: usize },
    /// The request's deadline passed before it was answered.
    #[error("deadline exceeded: not answered within {deadline:?}")]
    DeadlineExceeded {
        deadline: Duration,
        report: RetryReport,
    },
    /// The backend failed this request's input after every replay.
    #[error(
        "backend failure: {what} ({class}) after {attempts} attempt(s) of its step: {message}"
    )]
    Failed {
        /// What failed (`launch of hipinfer_gemm`, `worker process`, …).
        what: String,
        /// Steps tried for the failing input (first run and replays).
        attempts: u32,
        /// The last failure's recovery class.
        class: Recovery,
        /// The last failure's HIP code, where there is one.
        code: Option<i32>,
        message: String,
        report: RetryReport,
    },
    /// The engine cannot serve now (its backend cannot be reset, its worker crash-loops).
    #[error("unhealthy: {reason}")]
    Unhealthy { reason: String },
    /// The engine is shutting down and takes no new requests.
    #[error("shutting down: no new requests are taken")]
    ShuttingDown,
    /// The caller went away (a client that disconnected) before the request ran.
    #[error("cancelled: the caller went away before the answer")]
    Cancelled,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The backend could not be opened.
    #[error("backend: {0}")]
    Backend(String),
}

impl EngineError {
    /// A short, stable name for metrics and API error types.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::EmptyInput => "empty",
            EngineError::Validation { .. } => "validation",
            EngineError::Overloaded { .. } => "overloaded",
            EngineError::DeadlineExceeded { .. } => "deadline",
            EngineError::Failed { .. } => "backend",
            EngineError::Unhealthy { .. } => "unhealthy",
            EngineError::ShuttingDown => "shutdown",
            EngineError::Cancelled => "dropped",
            EngineError::Config(_) => "config",
            EngineError::Model(_) => "model",
            EngineError::Backend(_) => "backend",
        }
    }

    /// The retry report of a request that failed on the device, if it got that far.
    pub fn report(&self) -> Option<&RetryReport> {
        match self {
            EngineError::Failed { report, .. } | EngineError::DeadlineExceeded { report, .. } => {
                Some(report)
            }
            _ => None,
        }
    }
}
