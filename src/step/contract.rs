//! The step contract: what the engine asks of whatever runs its steps — the model on a backend in
//! this process ([`super::InProcess`]), or a supervised worker process
//! (`crate::isolation::Supervisor`). The replay ladder only sees [`StepRunner`]: run a step,
//! recover the device after a failure, probe its health; and a failure says, in
//! [`StepFailure`], what to do about it.

// A `StepFailure` (~150 bytes) travels only on the recovery path, after a device fault: boxing
// it would save nothing that matters.
#![allow(clippy::result_large_err)]

use serde::{Deserialize, Serialize};

use crate::backend::{DeviceInfo, RecoveredCall};
use crate::error::{Classify, HipError, Op, Recovery};
use crate::model::{Encoding, ModelError, Readout};
use crate::retry::{BreakerState, GiveUpReason, RetryError};

use super::report::{RetryRecord, RetryReport};

/// A step's result: per input, its raw (not normalised) mean-pooled embedding — or, for a
/// per-token readout, its tokens' hidden states row after row — and the failed attempts of
/// device calls that succeeded after retries on the way.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    pub embeddings: Vec<Vec<f32>>,
    pub recovered: Vec<RetryRecord>,
}

/// How far a failure reaches: what has to be replaced before the step can be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureScope {
    /// A device call failed; the context may be reset in place.
    #[default]
    Call,
    /// The device context is lost for this whole process: its reset failed with a sticky code
    /// (ROCm ≥ 6 and CUDA after a memory fault). Only a new process can use the device again.
    Process,
    /// The worker process died, hung past its step deadline, or was replaced.
    Worker,
    /// The step missed its deadline in this process and was abandoned.
    Hang,
}

impl FailureScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureScope::Call => "call",
            FailureScope::Process => "process",
            FailureScope::Worker => "worker",
            FailureScope::Hang => "hang",
        }
    }
}

/// Why a step failed, in the terms the replay ladder acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// What to do about it: Fatal is not replayed as is; everything else is, after recovery.
    pub class: Recovery,
    /// Why the retry layer stopped (`reset`, `exhausted`, …) or what else went wrong.
    pub reason: String,
    /// What failed (`launch of hipinfer_gemm`, `worker process`).
    pub what: String,
    pub op: Option<Op>,
    pub code: Option<i32>,
    /// The error's bounded name (`hipErrorIllegalAddress`).
    pub error: String,
    pub message: String,
    /// The failed call's attempts and the retried calls before it, as report records.
    pub attempts: Vec<RetryRecord>,
    /// How far it reaches.
    #[serde(default)]
    pub scope: FailureScope,
}

impl StepFailure {
    /// A failure that is not a device error (a bad input, a bug): Fatal.
    pub fn fatal(what: impl Into<String>, message: impl Into<String>) -> StepFailure {
        StepFailure {
            class: Recovery::Fatal,
            reason: "permanent".into(),
            what: what.into(),
            op: None,
            code: None,
            error: "fatal".into(),
            message: message.into(),
            attempts: Vec::new(),
            scope: FailureScope::Call,
        }
    }

    /// A failure of the worker process itself (`reason`: exit, signal, timeout, sticky_error,
    /// crash_loop, …): Reset-class, so the step is replayed on its replacement.
    pub fn worker(reason: &str, message: impl Into<String>) -> StepFailure {
        StepFailure {
            class: Recovery::Reset,
            reason: reason.into(),
            what: "worker process".into(),
            op: None,
            code: None,
            error: format!("worker_{reason}"),
            message: message.into(),
            attempts: Vec::new(),
            scope: FailureScope::Worker,
        }
    }

    /// A step that missed its deadline in this process (a kernel that never finished).
    pub fn hang(message: impl Into<String>) -> StepFailure {
        StepFailure {
            class: Recovery::Reset,
            reason: "timeout".into(),
            what: "step".into(),
            op: None,
            code: None,
            error: "step_timeout".into(),
            message: message.into(),
            attempts: Vec::new(),
            scope: FailureScope::Hang,
        }
    }

    /// Whether the device context is gone for this process (only a new process can recover).
    pub fn context_lost(&self) -> bool {
        self.scope == FailureScope::Process
    }

    /// From a model error, keeping the retry layer's account when the device failed.
    pub fn from_model_error(error: &ModelError, recovered: &[RecoveredCall]) -> StepFailure {
        let mut attempts = RetryReport::records_of(recovered);
        let ModelError::Device {
            recovery, source, ..
        } = error
        else {
            let mut failure = StepFailure::fatal("model", error.to_string());
            failure.attempts = attempts;
            return failure;
        };
        match source.downcast_ref::<RetryError<HipError>>() {
            Some(gave_up) => {
                attempts.extend(
                    gave_up
                        .history()
                        .attempts
                        .iter()
                        .map(|a| RetryRecord::from_attempt(gave_up.op(), a)),
                );
                let last = gave_up.error();
                let what = match last.and_then(HipError::kernel) {
                    Some(kernel) => format!("{} of {kernel}", gave_up.op()),
                    None => gave_up.op().to_string(),
                };
                StepFailure {
                    class: step_class(gave_up.reason(), *recovery),
                    reason: gave_up.reason().as_str().into(),
                    what,
                    op: Some(gave_up.op()),
                    code: gave_up.code(),
                    error: gave_up.code_label().into(),
                    message: gave_up.to_string(),
                    attempts,
                    scope: FailureScope::Call,
                }
            }
            None => StepFailure {
                class: *recovery,
                reason: recovery.as_str().into(),
                what: "device".into(),
                op: None,
                code: None,
                error: recovery.as_str().into(),
                message: error.to_string(),
                attempts,
                scope: FailureScope::Call,
            },
        }
    }
}

/// The class a failed step is handled by. Retries that ran out (exhausted, budget, deadline,
/// breaker) are worth a replay after a reset; a give-up on a Probe-class error is treated as
/// Reset, since a replay on a fresh context is the probe.
fn step_class(reason: GiveUpReason, recovery: Recovery) -> Recovery {
    match reason {
        GiveUpReason::Permanent => Recovery::Fatal,
        GiveUpReason::Reset | GiveUpReason::Probe => Recovery::Reset,
        GiveUpReason::Exhausted if recovery == Recovery::Reclaim => Recovery::Reclaim,
        GiveUpReason::Exhausted
        | GiveUpReason::Budget
        | GiveUpReason::CircuitOpen
        | GiveUpReason::Deadline => Recovery::Retry,
    }
}

/// Runs steps for the engine.
pub trait StepRunner: Send {
    /// Runs one padded batch through the model and reads `readout` out of it.
    fn run(&mut self, batch: &[Encoding], readout: Readout) -> Result<StepOutput, StepFailure>;

    /// Brings the device back after a failed step: reset it and upload the weights again. A
    /// failure with [`FailureScope::Process`] says no reset in this process can succeed.
    fn recover(&mut self) -> Result<(), StepFailure>;

    /// A tiny kernel on the device, checked on the host: does the device compute?
    fn probe(&mut self) -> Result<(), StepFailure>;

    /// The device the steps run on.
    fn device(&self) -> DeviceInfo;

    /// The device's circuit breaker.
    fn breaker_state(&self) -> BreakerState;
}

/// Makes fresh step runners: for a replacement step thread after a hang, and for self-healing
/// once a device context is lost for good.
pub trait RunnerFactory: Send + Sync {
    /// A new runner: a new backend (or worker process) with the weights uploaded.
    fn make(&self) -> Result<Box<dyn StepRunner>, StepFailure>;
}
