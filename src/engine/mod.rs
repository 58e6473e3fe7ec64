//! The engine: requests in, embeddings out, whatever the device does.
//!
//! [`InferenceEngine`] tokenizes requests, queues their inputs, batches them first-in-first-out
//! under a padded-token limit, and runs each batch (a step) through a [`StepRunner`] on its own
//! thread. A failed step is replayed from its host-side inputs after the device is recovered
//! (reset, weights re-uploaded); an input that keeps failing is isolated and fails alone. Every
//! response carries a [`RetryReport`] of what was retried on its way, and every retry is counted
//! in Prometheus ([`EngineMetrics`], next to the retry layer's metrics).

mod config;
mod error;
mod inference;
mod local;
mod metrics;
mod queue;
mod report;
mod request;
mod runner;
mod worker;

pub use config::{BatchingConfig, EngineConfig, EngineConfigBuilder, StepReplayConfig};
pub use error::EngineError;
pub use inference::{retry_state, EngineParts, Health, InferenceEngine};
pub use local::{local_runner, FaultCounter, FaultTotals};
pub use metrics::{EngineMetrics, FAILURE_REASONS};
pub use report::{RetryRecord, RetryReport, RetryScope};
pub use request::{EmbedRequest, EmbedResponse, Timings};
pub use runner::{probe_kernel, InProcess, StepFailure, StepOutput, StepRunner};
