//! Steps: one batch through the model, replayable from what the host holds. This module is the
//! contract between the engine (which queues, batches and replays) and whatever runs steps — in
//! this process ([`InProcess`], made by [`LocalRunners`]) or in a worker process
//! (`crate::isolation`). Both sides depend on it; neither on the other's internals. The same
//! holds for a language model's steps ([`DecodeRunner`]: many sequences' tokens over a KV
//! cache), which the generation engine schedules.

mod contract;
mod decode;
mod decoders;
mod in_process;
mod local;
mod report;
mod spec;

pub use contract::{FailureScope, RunnerFactory, StepFailure, StepOutput, StepRunner};
pub use decode::{local_runners, DecodeRunner, LocalDecoder, RunnerMaker, StepLogits};
pub use decoders::{DecoderSpec, LocalDecoders};
pub use in_process::{probe_kernel, InProcess};
pub use local::{retry_state, FaultCounter, FaultTotals, LocalRunners};
pub use report::{RetryRecord, RetryReport, RetryScope};
pub use spec::{RunnerSpec, Upload};
