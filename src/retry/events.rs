//! Retry events: every retry, give-up, late success and breaker transition becomes a `tracing`
//! event, and optionally a line of JSON in a file (`events.jsonl`) for people who grep logs.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
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
    /// `retry`, `gave_up`, `recovered` or `breaker`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub op: Option<&'static str>,
    pub attempt: Option<u32>,
    pub delay_ms: Option<f64>,
    pub error: Option<String>,
    /// `retrying`, `succeeded`, the give-up reason, or the breaker's new state.
    pub result: String,
}

/// An append-only JSON-lines file of [`EventRecord`]s, flushed after every line.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl JsonlSink {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JsonlSink {
            path,
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, record: &EventRecord) {
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        let mut file = self.file.lock();
        let written = writeln!(file, "{line}").and_then(|_| file.flush());
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "could not write a retry event");
        }
    }
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

    fn record(&self, record: impl FnOnce() -> EventRecord) {
        if let Some(sink) = &self.sink {
            sink.write(&record());
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
        self.record(|| EventRecord {
            timestamp: unix_seconds(record.timestamp),
            kind: "retry",
            op: Some(op.as_str()),
            attempt: Some(record.attempt),
            delay_ms: Some(delay_ms),
            error: Some(record.message.clone()),
            result: "retrying".into(),
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
        self.record(|| EventRecord {
            timestamp: unix_seconds(at),
            kind: "gave_up",
            op: Some(op.as_str()),
            attempt: Some(attempt),
            delay_ms: None,
            error: last.map(|r| r.message.clone()),
            result: reason.as_str().into(),
        });
    }

    pub(crate) fn recovered(&self, at: SystemTime, op: Op, attempt: u32) {
        tracing::info!(
            op = op.as_str(),
            attempt,
            "device operation succeeded after retries"
        );
        self.record(|| EventRecord {
            timestamp: unix_seconds(at),
            kind: "recovered",
            op: Some(op.as_str()),
            attempt: Some(attempt),
            delay_ms: None,
            error: None,
            result: "succeeded".into(),
        });
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
        self.record(|| EventRecord {
            timestamp: unix_seconds(at),
            kind: "breaker",
            op: None,
            attempt: None,
            delay_ms: None,
            error: Some(format!("device {device}: {from} -> {to}")),
            result: to.into(),
        });
    }
}
