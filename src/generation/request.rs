//! What a generation request gets back: a stream of [`GenerationEvent`]s — tokens as they are
//! sampled, then how it ended — and, per request, the [`GenerationReport`] of what was retried
//! and replayed on its way.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::llm::FinishReason;

/// One thing a generation stream says.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// A sampled token (`None`: text released at the end) and the text it made final — often
    /// empty while a character, or what may be the start of a stop string, is unfinished.
    Token { id: Option<u32>, text: String },
    /// The generation ended.
    Finished(Box<Finished>),
    /// The generation failed; no more events follow.
    Failed(GenerationError),
}

/// A generation that ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    pub prompt_tokens: usize,
    /// Every sampled id, the stop token included when one ended it.
    pub generated_ids: Vec<u32>,
    /// The text (a stop string and what follows it cut).
    pub text: String,
    pub finish_reason: FinishReason,
    /// From admission to the first token.
    pub time_to_first_token: Duration,
    /// From admission to the end.
    pub total_time: Duration,
    pub report: GenerationReport,
}

/// What one sequence went through on its way.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GenerationReport {
    /// Device calls of its steps retried in place.
    pub op_retries: u32,
    /// Steps holding it that failed.
    pub failed_steps: u32,
    /// Times its KV cache was rebuilt from the host (prompt + generated tokens prefilled).
    pub replays: u32,
    /// Tokens prefilled again for those rebuilds.
    pub replayed_tokens: usize,
    /// Time spent in failed steps and recoveries while it was live.
    pub recovery_seconds: f64,
    /// Whether it was run alone to find out whether it is the one that fails.
    pub isolated: bool,
}

/// Why a generation was refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerationError {
    /// A bad request: the field and why.
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    /// The KV-cache budget or the waiting queue is full: try again later.
    #[error("overloaded: {message}")]
    Overloaded { message: String },
    /// The device is lost and nothing serves.
    #[error("the engine is unhealthy: {reason}")]
    Unhealthy { reason: String },
    /// The device failed this sequence (it failed alone, or recovery gave up).
    #[error("generation failed: {message}")]
    Failed {
        message: String,
        report: GenerationReport,
    },
    #[error("the engine is shutting down")]
    ShuttingDown,
}

impl GenerationError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        GenerationError::Validation {
            field,
            message: message.into(),
        }
    }
}

/// A request's events, in order; the last is `Finished` or `Failed`. Dropping it cancels the
/// generation (its cache is freed at the next step).
#[derive(Debug)]
pub struct GenerationStream {
    pub id: u64,
    pub prompt_tokens: usize,
    pub(super) events: UnboundedReceiver<GenerationEvent>,
}

impl GenerationStream {
    /// The next event (`None` after the last).
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        self.events.recv().await
    }

    /// The next event, waiting on this thread (not inside an async runtime).
    pub fn next_blocking(&mut self) -> Option<GenerationEvent> {
        self.events.blocking_recv()
    }

    /// Waits for the end: the finished generation, or why it failed.
    pub fn wait(mut self) -> Result<Finished, GenerationError> {
        while let Some(event) = self.next_blocking() {
            match event {
                GenerationEvent::Token { .. } => {}
                GenerationEvent::Finished(done) => return Ok(*done),
                GenerationEvent::Failed(error) => return Err(error),
            }
        }
        Err(GenerationError::ShuttingDown)
    }
}
