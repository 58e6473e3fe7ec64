//! hipinfer: an inference engine for AMD GPUs (HIP) that survives GPU faults without losing
//! requests.
//!
//! Layers (see `README.md`): [`error`] classifies HIP status codes into recovery classes;
//! [`retry`] retries device operations by class with backoff, a circuit breaker, a retry budget
//! and Prometheus metrics; [`backend`] runs kernels (CPU, HIP, fault injection); [`model`] is the
//! BERT encoder as backend ops; [`gguf`] reads llama.cpp's model files; [`step`] is the contract of a step (one batch through the model,
//! replayable from the host); [`isolation`] runs steps in a supervised worker process; [`engine`]
//! batches requests into steps, replays failed ones and heals itself; [`llm`] is the llama-family
//! decoder from GGUF; [`generation`] serves it to many clients at once (continuous batching,
//! token-exact recovery); [`server`] is the HTTP API.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

pub mod backend;
pub mod chaos;
pub mod engine;
pub mod error;
pub mod generation;
pub mod gguf;
pub mod isolation;
pub mod llm;
pub mod model;
pub mod retry;
pub mod server;
pub mod step;

pub use engine::{EmbedRequest, EmbedResponse, EngineConfig, EngineError, InferenceEngine};
pub use error::{ConfigError, HipError, Op, Recovery};
pub use retry::{retry_operation, retry_operation_async, RetryConfig, RetryPolicy, RetryState};
