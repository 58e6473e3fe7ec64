//! The generation engine: a language model served to many clients at once.
//!
//! [`GenerationEngine`] admits requests against a KV-cache budget (past it: `Overloaded` at
//! once), and one scheduler thread runs every live sequence through the model together —
//! continuous batching: sequences join and leave at every step, a long prompt is prefilled a
//! chunk per step while the running streams keep getting a token per step. Each token is sent
//! as soon as it is sampled, as a [`GenerationEvent`] on the request's channel; a client that
//! drops its receiver frees its sequence and cache rows at the next step.
//!
//! The host holds every sequence's prompt, the tokens generated so far and the sampler's state
//! (the draw of step i is a pure function of the seed and i), and the kernels give each token
//! the same numbers in any batch (`crate::llm::Feed`). So when a step fails — after the retry
//! layer's tries in place — the device is reset (or the runner replaced), every live sequence's
//! cache is rebuilt by prefilling its prompt plus generated tokens, and decoding continues: a
//! stream never repeats, skips or changes a token. A sequence whose steps keep failing is run
//! alone, and fails alone when it fails by itself.

mod config;
mod engine;
mod metrics;
mod request;
mod scheduler;
mod slots;

pub use crate::step::{local_runners, DecodeRunner, LocalDecoder, RunnerMaker, StepLogits};
pub use config::GenerationConfig;
pub use engine::{GenerationEngine, GenerationHealth, RunnerOptions};
pub use metrics::GenerationMetrics;
pub use request::{Finished, GenerationError, GenerationEvent, GenerationReport, GenerationStream};
