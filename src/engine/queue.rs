//! The queue between callers and the step worker: inputs wait first-in-first-out and are taken
//! as batches whose padded token total (sequences × longest sequence) stays within
//! `max_batch_tokens`, as TEI batches. Health probes wait here too, so they run on the worker,
//! between steps.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::model::Encoding;

use super::request::RequestState;

/// One input of a request, waiting for (or replayed into) a step.
pub(crate) struct Entry {
    pub request: Arc<RequestState>,
    /// Its position in the request.
    pub index: usize,
    pub encoding: Encoding,
    /// Failed steps it was part of.
    pub failures: u32,
    /// Failed steps it ran in alone.
    pub alone_failures: u32,
}

impl Entry {
    pub fn tokens(&self) -> usize {
        self.encoding.ids.len()
    }
}

/// What the worker is given next.
pub(crate) enum Work {
    Batch(Vec<Entry>),
    /// Health probes to answer (each sender gets the probe's result).
    Probe(Vec<std::sync::mpsc::SyncSender<Result<(), String>>>),
    /// The queue is closed and empty.
    Stop,
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_batch_tokens: usize,
    pub max_batch_requests: usize,
}

#[derive(Default)]
struct State {
    entries: VecDeque<Entry>,
    probes: Vec<std::sync::mpsc::SyncSender<Result<(), String>>>,
    closed: bool,
}

/// The shared queue.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

impl Queue {
    /// Appends a request's inputs; false (and nothing queued) when the queue is closed.
    pub fn push(&self, entries: Vec<Entry>) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.entries.extend(entries);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Asks the worker for a health probe.
    pub fn push_probe(&self, reply: std::sync::mpsc::SyncSender<Result<(), String>>) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.probes.push(reply);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Stops taking work; the worker drains what is queued, then gets `Stop`.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Inputs waiting.
    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    /// Waits for work: probes first, then the next batch, first in first out.
    pub fn next(&self, limits: Limits) -> Work {
        let mut state = self.state.lock();
        loop {
            if !state.probes.is_empty() {
                return Work::Probe(std::mem::take(&mut state.probes));
            }
            if !state.entries.is_empty() {
                return Work::Batch(take_batch(&mut state.entries, limits));
            }
            if state.closed {
                return Work::Stop;
            }
            self.ready.wait(&mut state);
        }
    }
}

/// Takes entries from the front while the padded batch fits the limits (always at least one).
fn take_batch(entries: &mut VecDeque<Entry>, limits: Limits) -> Vec<Entry> {
    let mut batch: Vec<Entry> = Vec::new();
    let mut longest = 0;
    while let Some(next) = entries.front() {
        let longer = longest.max(next.tokens().max(1));
        let fits = (batch.len() + 1) * longer <= limits.max_batch_tokens
            && batch.len() < limits.max_batch_requests;
        if !batch.is_empty() && !fits {
            break;
        }
        longest = longer;
        batch.extend(entries.pop_front());
    }
    batch
}
