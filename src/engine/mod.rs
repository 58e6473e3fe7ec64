//! The engine: requests in, embeddings out, whatever the device does.
//!
//! [`InferenceEngine`] tokenizes requests, queues their inputs, batches them first-in-first-out
//! under a padded-token limit, and runs each batch (a step) through a
//! [`crate::step::StepRunner`] on its own thread. A failed step is replayed from its host-side
//! inputs after the device is recovered (reset in place, or a new worker process, or — when the
//! device is lost for the process — the CPU fallback while the engine heals itself); an input
//! that keeps failing is isolated and fails alone. A watchdog holds the step and request
//! deadlines even while a kernel never returns. Every response carries a [`RetryReport`] of
//! what was retried on its way, and every retry is counted in Prometheus ([`EngineMetrics`],
//! next to the retry layer's metrics).

mod config;
mod error;
mod health;
mod inference;
mod ladder;
mod metrics;
mod queue;
mod request;
mod runners;
mod shared;
mod step_loop;

pub use crate::step::{FaultCounter, FaultTotals, RetryRecord, RetryReport, RetryScope};
pub use config::{
    BatchingConfig, EngineConfig, EngineConfigBuilder, Fallback, HealthConfig, RecoveryConfig,
    StepReplayConfig,
};
pub use error::EngineError;
pub use health::{Health, HealthCause};
pub use inference::{InferenceEngine, Liveness};
pub use metrics::{EngineMetrics, FAILURE_REASONS, RECOVERY_OUTCOMES};
pub use request::{EmbedRequest, EmbedResponse, Timings};
