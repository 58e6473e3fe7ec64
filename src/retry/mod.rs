//! The retry layer: when and how often a failed device operation is tried again.
//!
//! It knows nothing about HIP: an error tells its [`crate::error::Recovery`] class through
//! [`crate::error::Classify`], and the layer acts on it —
//! [`RetryConfig`] (how long to wait) → [`RetryPolicy`] (validated) → [`retry_operation`] (the
//! loop), guarded by a per-device [`CircuitBreaker`] and a shared [`RetryBudget`], counted in
//! Prometheus ([`RetryMetrics`]) and reported as events. Time ([`Clock`]) and randomness (a seed)
//! are injected, so every test runs without sleeping.

mod backoff;
mod breaker;
mod budget;
mod clock;
mod config;
mod duration_text;
mod events;
mod metrics;
mod operation;
mod outcome;
mod policy;
mod state;

pub use backoff::BackoffSchedule;
pub use breaker::{
    Admission, BreakerConfig, BreakerState, CallOutcome, CircuitBreaker, FailureRatio, Rejected,
};
pub use budget::{BudgetConfig, RetryBudget};
pub use clock::{Clock, FakeClock, SystemClock};
pub use config::{Backoff, Jitter, RetryConfig};
pub use duration_text::{format_duration, parse_duration, serde_duration};
pub use events::{current_requests, with_requests, EventRecord, Events, JsonlSink};
pub use metrics::RetryMetrics;
pub use operation::{retry_operation, retry_operation_async, ReclaimHook, RetryCall};
pub use outcome::{AttemptRecord, GiveUpReason, Retried, RetryError, RetryHistory};
pub use policy::{OpPolicy, RetryPolicy};
pub use state::{RetryState, RetryStateBuilder, RetryStateError};
