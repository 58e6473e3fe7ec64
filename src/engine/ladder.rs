//! The replay ladder's decision after a failed step, shared by the step thread (a step that
//! failed) and the watchdog (a step abandoned at its deadline):
//! - **Fatal**: nothing is wrong with the device; if the step held several inputs, each is
//!   replayed alone (one of them may be at fault), and an input that fails alone fails.
//! - **Reclaim** (out of memory after freeing the cache): the batch is split in halves.
//! - **Everything else**: the device is recovered (reset, weights uploaded again; a new worker
//!   or backend when that cannot work) and the step replayed from its host-side inputs. Inputs
//!   present in two consecutive failed steps are suspects: they are isolated by halving their
//!   group at each further failure, so a poisoned input is alone after log₂(batch) replays while
//!   the innocent halves succeed; one that fails alone more than `max_replays` times fails —
//!   only it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Recovery;
use crate::retry::{EventRecord, Events};
use crate::step::{FailureScope, RetryRecord, RetryScope, StepFailure};

use super::config::StepReplayConfig;
use super::error::EngineError;
use super::metrics::EngineMetrics;
use super::queue::Entry;
use super::request::RequestState;

/// What to do after a failure.
pub(crate) struct Decision {
    /// Groups to replay, in order (each one step).
    pub replays: Vec<Vec<Entry>>,
    /// Whether the device must be recovered before they run.
    pub recover: bool,
}

/// Accounts the failure to every request of `batch`, fails the inputs that ran out of tries,
/// and says how to replay the rest.
pub(crate) fn after_failure(
    mut batch: Vec<Entry>,
    failure: &StepFailure,
    elapsed: Duration,
    replay: &StepReplayConfig,
    metrics: &EngineMetrics,
    events: &Events,
) -> Decision {
    metrics.steps_failed.inc();
    let alone = batch.len() == 1;
    for entry in &mut batch {
        entry.failures += 1;
        entry.alone_failures += u32::from(alone);
    }
    let requests = unique_requests(&batch);
    let ids: Vec<u64> = requests.iter().map(|r| r.id).collect();
    events.emit(|| EventRecord {
        op: failure.op.map(|op| op.as_str()),
        code: failure.code,
        class: Some(failure.class.as_str()),
        error: Some(failure.message.clone()),
        requests: ids.clone(),
        ..EventRecord::new("step", "step_failed", failure.reason.clone())
    });
    let now = std::time::SystemTime::now();
    for request in &requests {
        let attempt = batch
            .iter()
            .filter(|e| Arc::ptr_eq(&e.request, request))
            .map(|e| e.failures)
            .max()
            .unwrap_or(1);
        let record = RetryRecord {
            scope: match failure.scope {
                FailureScope::Worker => RetryScope::Worker,
                _ => RetryScope::Step,
            },
            attempt,
            timestamp: now,
            op: failure.op,
            class: failure.class,
            reason: failure.reason.clone(),
            code: failure.code,
            error: failure.error.clone(),
            message: failure.message.clone(),
        };
        request.account(elapsed, |report| {
            report.add_step_failure(record, &failure.attempts)
        });
    }

    let give_up = |entry: &Entry| {
        let attempts = entry.failures;
        entry.request.fail(|report| EngineError::Failed {
            what: failure.what.clone(),
            attempts,
            class: failure.class,
            code: failure.code,
            message: failure.message.clone(),
            report,
        });
    };

    if failure.class == Recovery::Fatal {
        // Nothing to recover: find the input at fault by running each alone.
        if alone {
            batch.iter().for_each(give_up);
            return Decision {
                replays: Vec::new(),
                recover: false,
            };
        }
        metrics.replayed(failure.class);
        replayed_event(events, failure, &ids);
        return Decision {
            replays: batch.into_iter().map(|entry| vec![entry]).collect(),
            recover: false,
        };
    }

    // An input fails for good once it failed alone more than `max_replays` times (or, as a
    // backstop against a device that fails every step, four times as many in all).
    let limit = replay.max_replays;
    let (exhausted, mut remaining): (Vec<Entry>, Vec<Entry>) = batch.into_iter().partition(|e| {
        e.alone_failures > limit || e.failures > limit.saturating_mul(4).max(limit + 1)
    });
    exhausted.iter().for_each(give_up);
    remaining.retain(|e| !e.request.is_answered());
    if remaining.is_empty() {
        return Decision {
            replays: Vec::new(),
            recover: true,
        };
    }
    metrics.replayed(failure.class);
    let remaining_ids: Vec<u64> = unique_requests(&remaining).iter().map(|r| r.id).collect();
    replayed_event(events, failure, &remaining_ids);
    let mut groups: Vec<Vec<Entry>> = Vec::new();
    if failure.class == Recovery::Reclaim {
        // Out of memory even after the cache was freed: a smaller batch may fit.
        groups.extend(halves(remaining));
    } else {
        // Inputs in two failed steps in a row may be the cause: halve their group.
        let (suspects, others): (Vec<Entry>, Vec<Entry>) =
            remaining.into_iter().partition(|e| e.failures >= 2);
        if !others.is_empty() {
            groups.push(others);
        }
        groups.extend(halves(suspects));
    }
    Decision {
        replays: groups,
        recover: true,
    }
}

fn replayed_event(events: &Events, failure: &StepFailure, ids: &[u64]) {
    events.emit(|| EventRecord {
        code: failure.code,
        class: Some(failure.class.as_str()),
        requests: ids.to_vec(),
        ..EventRecord::new("step", "step_replay", "replayed")
    });
}

/// `entries` in two halves (one group when it holds one entry, none when empty).
fn halves(mut entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    match entries.len() {
        0 => Vec::new(),
        1 => vec![entries],
        n => {
            let second = entries.split_off(n / 2);
            vec![entries, second]
        }
    }
}

/// The distinct requests of a batch, in order.
pub(crate) fn unique_requests(batch: &[Entry]) -> Vec<Arc<RequestState>> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .filter(|e| seen.insert(Arc::as_ptr(&e.request)))
        .map(|e| e.request.clone())
        .collect()
}
