//! What a retried operation returns: the value or the reason it gave up, with every attempt.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::{Classify, Op, Recovery};

/// Why `retry_operation` stopped without a value. Closed: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// `max_retries` (or `max_polls`) were used up.
    Exhausted,
    /// The error is Fatal (or Benign, which backends turn into success before it gets here).
    Permanent,
    /// The device context is poisoned: the step must be replayed after a reset.
    Reset,
    /// Ambiguous: a health probe must decide between Reset and Fatal.
    Probe,
    /// The shared retry budget is spent.
    Budget,
    /// The device's circuit breaker rejected the call.
    CircuitOpen,
    /// The next sleep would have ended past the configured deadline.
    Deadline,
}

impl GiveUpReason {
    pub const COUNT: usize = 7;
    pub const ALL: [GiveUpReason; GiveUpReason::COUNT] = [
        GiveUpReason::Exhausted,
        GiveUpReason::Permanent,
        GiveUpReason::Reset,
        GiveUpReason::Probe,
        GiveUpReason::Budget,
        GiveUpReason::CircuitOpen,
        GiveUpReason::Deadline,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The metric label (`reason`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Exhausted => "exhausted",
            GiveUpReason::Permanent => "permanent",
            GiveUpReason::Reset => "reset",
            GiveUpReason::Probe => "probe",
            GiveUpReason::Budget => "budget",
            GiveUpReason::CircuitOpen => "circuit_open",
            GiveUpReason::Deadline => "deadline",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// 1 for the first call.
    pub attempt: u32,
    /// When the attempt failed (wall clock of the retry state's clock).
    pub timestamp: SystemTime,
    /// Time since the operation started.
    pub elapsed: Duration,
    /// The raw error code, where the error has one.
    pub code: Option<i32>,
    /// The error's bounded name (`hipErrorOutOfMemory`).
    pub error: &'static str,
    /// The error's full text.
    pub message: String,
    /// The class the retry loop acted on (after escalation).
    pub recovery: Recovery,
    /// The delay slept before the next attempt; `None` for the attempt it gave up on.
    pub delay: Option<Duration>,
}

/// Every failed attempt of one operation, in order. Empty when the first call succeeded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryHistory {
    pub attempts: Vec<AttemptRecord>,
}

impl RetryHistory {
    /// How many retries were made (failed attempts that were followed by another attempt).
    pub fn retries(&self) -> u32 {
        self.attempts.iter().filter(|a| a.delay.is_some()).count() as u32
    }

    /// The total time slept between attempts.
    pub fn total_delay(&self) -> Duration {
        self.attempts.iter().filter_map(|a| a.delay).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }
}

/// A value obtained by `retry_operation`, with the failures on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Retried<T> {
    pub value: T,
    pub history: RetryHistory,
}

impl<T> Retried<T> {
    /// The number of calls it took (1 when the first succeeded).
    pub fn attempts(&self) -> u32 {
        self.history.attempts.len() as u32 + 1
    }
}

/// `retry_operation` gave up. Keeps the last error (none when the circuit breaker rejected the
/// call before any attempt) and the history.
///
/// Boxed, so that a `Result` of it stays small on the success path.
#[derive(Debug, Clone)]
pub struct RetryError<E>(Box<GaveUp<E>>);

#[derive(Debug, Clone)]
struct GaveUp<E> {
    op: Op,
    reason: GiveUpReason,
    error: Option<E>,
    retry_after: Option<Duration>,
    history: RetryHistory,
}

impl<E> RetryError<E> {
    pub(crate) fn gave_up(op: Op, reason: GiveUpReason, error: E, history: RetryHistory) -> Self {
        RetryError(Box::new(GaveUp {
            op,
            reason,
            error: Some(error),
            retry_after: None,
            history,
        }))
    }

    /// The breaker rejected attempt `history.len() + 1`; `last_error` is the failure before it.
    pub(crate) fn circuit_open(
        op: Op,
        retry_after: Option<Duration>,
        last_error: Option<E>,
        history: RetryHistory,
    ) -> Self {
        let reason = GiveUpReason::CircuitOpen;
        RetryError(Box::new(GaveUp {
            op,
            reason,
            error: last_error,
            retry_after,
            history,
        }))
    }

    pub fn op(&self) -> Op {
        self.0.op
    }

    pub fn reason(&self) -> GiveUpReason {
        self.0.reason
    }

    /// The last error returned by the operation.
    pub fn error(&self) -> Option<&E> {
        self.0.error.as_ref()
    }

    pub fn into_error(self) -> Option<E> {
        self.0.error
    }

    /// For a rejection by an open circuit breaker: how long until it admits a probe
    /// (`None` when it was isolated by hand and waits for a manual reset).
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    pub fn history(&self) -> &RetryHistory {
        &self.0.history
    }

    /// The number of calls made (0 when the breaker rejected the first).
    pub fn attempts(&self) -> u32 {
        self.0.history.attempts.len() as u32
    }

    /// The class the loop acted on last (`None` for a breaker rejection before any attempt).
    pub fn recovery_acted_on(&self) -> Option<Recovery> {
        self.0.history.attempts.last().map(|a| a.recovery)
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.reason == GiveUpReason::CircuitOpen {
            write!(
                f,
                "{} rejected: the device's circuit breaker is open",
                self.0.op
            )?;
            match self.0.retry_after {
                Some(after) => write!(f, "; it admits a probe in {:.3} s", after.as_secs_f64())?,
                None => f.write_str("; it was isolated and waits for a manual reset")?,
            }
            if let Some(error) = &self.0.error {
                write!(
                    f,
                    " (after {} attempt(s), last error: {error})",
                    self.attempts()
                )?;
            }
            return Ok(());
        }
        write!(
            f,
            "{} failed after {} attempt(s) ({})",
            self.0.op,
            self.attempts(),
            self.0.reason
        )?;
        if let Some(error) = &self.0.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .error
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A give-up can be asked the same questions as the error it wraps, so code above the retry layer
/// (the engine replaying steps) handles both alike. A breaker rejection is Retry-class: the
/// device may be admitted again later.
impl<E: Classify> Classify for RetryError<E> {
    fn recovery(&self) -> Recovery {
        match self.0.reason {
            GiveUpReason::CircuitOpen => Recovery::Retry,
            _ => self.recovery_acted_on().unwrap_or(Recovery::Retry),
        }
    }

    fn code_label(&self) -> &'static str {
        match (&self.0.error, self.0.reason) {
            (_, GiveUpReason::CircuitOpen) => "circuit_open",
            (Some(error), _) => error.code_label(),
            (None, _) => "unknown",
        }
    }

    fn code(&self) -> Option<i32> {
        self.0.error.as_ref().and_then(Classify::code)
    }
}
