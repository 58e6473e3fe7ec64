//! The recovery log: every retry, give-up, late success and breaker transition of the retry layer
//! — and, through [`Events::emit`], every step replay, context reset, worker restart, fallback and
//! recovery attempt of the engine above it — becomes a `tracing` event and, when a log file is
//! set, one line of JSON (`events.jsonl`), appended and flushed per line. A write error is a
//! WARN, never a failed call.
//!
//! Each line says when (`timestamp`), at which level (`scope`: `op`, `step`, `engine`,
//! `worker`), what (`type`), the device operation, HIP code and recovery class where there is
//! one, the attempt and delay, the `outcome`, the ids of the requests affected (the engine sets
//! them around each step with [`with_requests`]; a worker process gets them with its step) and
//! the process id, so that a campaign can be audited line by line.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::Op;

use super::outcome::{AttemptRecord, GiveUpReason};

/// One event, as written to the JSON-lines file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    /// `op` (a device call), `step`, `engine` or `worker`.
    pub scope: &'static str,
    /// `retry`, `gave_up`, `recovered`, `breaker` (op scope); `step_failed`, `step_replay`,
    /// `context_reset`, `abandoned_step`, `fallback`, `recovery_attempt`, `worker_restart`, …
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub op: Option<&'static str>,
    /// The HIP code, where there is one.
    pub code: Option<i32>,
    /// The recovery class acted on.
    pub class: Option<&'static str>,
    pub attempt: Option<u32>,
    pub delay_ms: Option<f64>,
    /// `retrying`, `succeeded`, a give-up reason, the breaker's new state, `replayed`, …
    pub outcome: String,
    /// The ids of the requests affected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<u64>,
    pub error: Option<String>,
    pub pid: u32,
}

impl EventRecord {
    /// A record of `kind` at `scope`, now, with the requests in context; the rest unset.
    pub fn new(scope: &'static str, kind: &'static str, outcome: impl Into<String>) -> Self {
        EventRecord {
            timestamp: unix_seconds(SystemTime::now()),
            scope,
            kind,
            op: None,
            code: None,
            class: None,
            attempt: None,
            delay_ms: None,
            outcome: outcome.into(),
            requests: current_requests(),
            error: None,
            pid: std::process::id(),
        }
    }
}

/// An append-only JSON-lines file of [`EventRecord`]s, one `write` per line (so lines from
/// several processes appending to one file never interleave), flushed at once.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: Mutex<File>,
}

impl JsonlSink {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JsonlSink {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, record: &EventRecord) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        let mut file = self.file.lock();
        let written = file.write_all(line.as_bytes()).and_then(|()| file.flush());
        drop(file);
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "could not write a recovery event");
        }
    }
}

thread_local! {
    static REQUESTS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `requests` as the requests every event recorded on this thread affects.
pub fn with_requests<T>(requests: &[u64], f: impl FnOnce() -> T) -> T {
    let previous = REQUESTS.with(|r| std::mem::replace(&mut *r.borrow_mut(), requests.to_vec()));
    struct Restore(Option<Vec<u64>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                REQUESTS.with(|r| *r.borrow_mut() = previous);
            }
        }
    }
    let _restore = Restore(Some(previous));
    f()
}

/// The requests set on this thread by [`with_requests`] (a supervisor sends them to its worker).
pub fn current_requests() -> Vec<u64> {
    REQUESTS.with(|r| r.borrow().clone())
}

/// Where events go: always `tracing`, and the JSON-lines sink when one is set.
#[derive(Debug, Clone, Default)]
pub struct Events {
    sink: Option<Arc<JsonlSink>>,
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn millis(delay: Duration) -> f64 {
    delay.as_secs_f64() * 1e3
}

impl Events {
    pub fn new(sink: Option<Arc<JsonlSink>>) -> Self {
        Events { sink }
    }

    /// Opens `path` for appending (`None`: only `tracing`).
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Ok(Events {
            sink: path.map(JsonlSink::open).transpose()?.map(Arc::new),
        })
    }

    /// Whether events reach a file.
    pub fn is_logging(&self) -> bool {
        self.sink.is_some()
    }

    /// Writes `record` (made only when a file is set).
    pub fn emit(&self, record: impl FnOnce() -> EventRecord) {
        if let Some(sink) = &self.sink {
            sink.write(&record());
        }
    }

    fn op_record(
        at: SystemTime,
        kind: &'static str,
        op: Op,
        attempt: u32,
        outcome: String,
    ) -> EventRecord {
        EventRecord {
            timestamp: unix_seconds(at),
            op: Some(op.as_str()),
            attempt: Some(attempt),
            ..EventRecord::new("op", kind, outcome)
        }
    }

    /// A failed attempt that will be retried after `record.delay`.
    pub(crate) fn retry(&self, op: Op, record: &AttemptRecord) {
        let delay_ms = millis(record.delay.unwrap_or_default());
        tracing::info!(
            op = op.as_str(),
            attempt = record.attempt,
            delay_ms,
            code = record.error,
            recovery = record.recovery.as_str(),
            error = record.message.as_str(),
            "retrying device operation"
        );
        self.emit(|| EventRecord {
            code: record.code,
            class: Some(record.recovery.as_str()),
            delay_ms: Some(delay_ms),
            error: Some(record.message.clone()),
            ..Self::op_record(
                record.timestamp,
                "retry",
                op,
                record.attempt,
                if record.recovery == crate::error::Recovery::Reclaim {
                    "reclaiming".into()
                } else {
                    "retrying".into()
                },
            )
        });
    }

    /// The operation gave up on `attempt`; `last` is its last failure, if any.
    pub(crate) fn gave_up(
        &self,
        at: SystemTime,
        op: Op,
        attempt: u32,
        reason: GiveUpReason,
        last: Option<&AttemptRecord>,
    ) {
        tracing::warn!(
            op = op.as_str(),
            attempt,
            reason = reason.as_str(),
            code = last.map(|r| r.error),
            error = last.map(|r| r.message.as_str()),
            "giving up on device operation"
        );
        self.emit(|| EventRecord {
            code: last.and_then(|r| r.code),
            class: last.map(|r| r.recovery.as_str()),
            error: last.map(|r| r.message.clone()),
            ..Self::op_record(at, "gave_up", op, attempt, reason.as_str().into())
        });
    }

    pub(crate) fn recovered(&self, at: SystemTime, op: Op, attempt: u32) {
        tracing::info!(
            op = op.as_str(),
            attempt,
            "device operation succeeded after retries"
        );
        self.emit(|| Self::op_record(at, "recovered", op, attempt, "succeeded".into()));
    }

    pub(crate) fn breaker(
        &self,
        at: SystemTime,
        device: i32,
        from: &'static str,
        to: &'static str,
    ) {
        if to == "open" {
            tracing::warn!(device, from, to, "circuit breaker changed state");
        } else {
            tracing::info!(device, from, to, "circuit breaker changed state");
        }
        self.emit(|| EventRecord {
            timestamp: unix_seconds(at),
            error: Some(format!("device {device}: {from} -> {to}")),
            ..EventRecord::new("op", "breaker", to)
        });
    }
}
