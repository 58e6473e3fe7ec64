//! The retry report every response carries: each retry that served the request, at every level
//! (a device call retried in place, a step replayed after a reset, a worker restarted), with
//! when, why and the HIP code — the trial-retry record an operator audits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backend::RecoveredCall;
use crate::error::{Op, Recovery};
use crate::retry::AttemptRecord;

/// Where a retry happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryScope {
    /// One device call retried in place (`Resilient`).
    Op,
    /// A whole step replayed from host inputs after a backend reset.
    Step,
    /// The GPU worker process restarted, then the step replayed.
    Worker,
}

/// One failed attempt on the way to a request's answer (or its failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryRecord {
    pub scope: RetryScope,
    /// The attempt that failed: of the device call (`op`), or of the input's step (`step`).
    pub attempt: u32,
    /// Seconds since the Unix epoch.
    #[serde(
        serialize_with = "unix_seconds",
        deserialize_with = "from_unix_seconds"
    )]
    pub timestamp: SystemTime,
    /// The device operation that failed, where known.
    pub op: Option<Op>,
    /// The recovery class acted on.
    pub class: Recovery,
    /// What was done or why it stopped (`retried`, `reclaimed`, `replayed`, `isolated`,
    /// `exhausted`, `reset`, …).
    pub reason: String,
    /// The HIP error code, where there is one.
    pub code: Option<i32>,
    /// The error's name (`hipErrorOutOfMemory`).
    pub error: String,
    /// The full error text.
    pub message: String,
}

fn unix_seconds<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    s.serialize_f64(since.as_secs_f64())
}

fn from_unix_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let seconds = f64::deserialize(d)?;
    Duration::try_from_secs_f64(seconds)
        .map(|since| UNIX_EPOCH + since)
        .map_err(serde::de::Error::custom)
}

impl RetryRecord {
    /// A failed attempt of a device call.
    pub fn from_attempt(op: Op, attempt: &AttemptRecord) -> RetryRecord {
        RetryRecord {
            scope: RetryScope::Op,
            attempt: attempt.attempt,
            timestamp: attempt.timestamp,
            op: Some(op),
            class: attempt.recovery,
            reason: match (attempt.delay.is_some(), attempt.recovery) {
                (true, Recovery::Reclaim) => "reclaimed".into(),
                (true, Recovery::Poll) => "polled".into(),
                (true, _) => "retried".into(),
                (false, _) => "gave_up".into(),
            },
            code: attempt.code,
            error: attempt.error.to_string(),
            message: attempt.message.clone(),
        }
    }
}

/// Every retry that served one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetryReport {
    /// Device calls retried in place (attempts after the first).
    pub retries: u32,
    /// Steps holding this request that failed (each was replayed, unless it was the last try).
    pub failed_steps: u32,
    /// Worker restarts this request lived through.
    pub worker_restarts: u32,
    pub history: Vec<RetryRecord>,
}

impl RetryReport {
    /// Whether nothing was retried.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// The records of device calls that succeeded only after retries.
    pub fn records_of(calls: &[RecoveredCall]) -> Vec<RetryRecord> {
        calls
            .iter()
            .flat_map(|call| {
                call.history
                    .attempts
                    .iter()
                    .map(|a| RetryRecord::from_attempt(call.op, a))
            })
            .collect()
    }

    /// Adds the failed attempts of device calls that succeeded after retries (each was retried).
    pub fn add_recovered(&mut self, records: &[RetryRecord]) {
        self.retries += records.len() as u32;
        self.history.extend(records.iter().cloned());
    }

    /// Adds a failed step (and the device-call attempts inside it).
    pub fn add_step_failure(&mut self, record: RetryRecord, attempts: &[RetryRecord]) {
        self.retries += attempts.iter().filter(|a| a.reason != "gave_up").count() as u32;
        self.history.extend(attempts.iter().cloned());
        match record.scope {
            RetryScope::Worker => self.worker_restarts += 1,
            _ => self.failed_steps += 1,
        }
        self.history.push(record);
    }
}
