//! The queue between callers and the step thread: inputs wait first-in-first-out and are taken
//! as batches whose padded token total (sequences × longest sequence) stays within
//! `max_batch_tokens`, as TEI batches. Replays of failed steps wait here too, ahead of new work,
//! so that whichever step thread runs next (a replacement, after a hang) finds them; and health
//! probes, so they run between steps.
//!
//! Admission is a [`Ticket`] taken before a request is tokenized: while any ticket is out the
//! queue does not report [`Work::Stop`], and a ticket's push never fails — so a request the
//! engine admitted is always answered, even when shutdown starts while it is being tokenized.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::model::Encoding;

use super::request::RequestState;

/// One input of a request, waiting for (or replayed into) a step.
#[derive(Clone)]
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

/// What the step thread is given next.
pub(crate) enum Work {
    Batch(Vec<Entry>),
    /// Health probes are waiting.
    Probe,
    /// Nothing came before the deadline passed.
    Idle,
    /// The queue is closed and empty, and no admitted request is still on its way in.
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
    replays: VecDeque<Vec<Entry>>,
    probe: bool,
    closed: bool,
    /// Tickets out: admitted requests not yet pushed.
    admitting: usize,
}

/// The shared queue.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

/// An admitted request's right to be queued (see the module documentation).
pub(crate) struct Ticket {
    queue: Arc<Queue>,
    used: bool,
}

impl Ticket {
    /// Queues the request's inputs: always succeeds, even if the queue was closed since.
    pub fn push(mut self, entries: Vec<Entry>) {
        self.used = true;
        let mut state = self.queue.state.lock();
        state.admitting -= 1;
        state.entries.extend(entries);
        drop(state);
        self.queue.ready.notify_all();
    }
}

impl Drop for Ticket {
    /// A request refused after admission (a bad input) gives its ticket back.
    fn drop(&mut self) {
        if !self.used {
            self.queue.state.lock().admitting -= 1;
            self.queue.ready.notify_all();
        }
    }
}

impl Queue {
    /// Admits a request, or `None` when the queue is closed.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut state = self.state.lock();
        if state.closed {
            return None;
        }
        state.admitting += 1;
        Some(Ticket {
            queue: self.clone(),
            used: false,
        })
    }

    /// Puts failed steps' inputs back, ahead of new work, the first group first.
    pub fn push_replays(&self, groups: Vec<Vec<Entry>>) {
        if groups.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        for group in groups.into_iter().rev() {
            state.replays.push_front(group);
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Asks the step thread for a health probe (one request stands for any number of callers).
    pub fn request_probe(&self) {
        self.state.lock().probe = true;
        self.ready.notify_all();
    }

    /// Stops taking requests; the step thread drains what is queued, then gets `Stop`.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Inputs waiting (replays included).
    pub fn len(&self) -> usize {
        let state = self.state.lock();
        state.entries.len() + state.replays.iter().map(Vec::len).sum::<usize>()
    }

    /// Takes every waiting input out (to answer them when the drain's grace period is over).
    pub fn drain(&self) -> Vec<Entry> {
        let mut state = self.state.lock();
        let mut all: Vec<Entry> = state.replays.drain(..).flatten().collect();
        all.extend(state.entries.drain(..));
        all
    }

    /// Waits for work until `until` (forever when `None`): probes first, then replays, then the
    /// next batch, first in first out.
    pub fn next(&self, limits: Limits, until: Option<Instant>) -> Work {
        let mut state = self.state.lock();
        loop {
            if std::mem::take(&mut state.probe) {
                return Work::Probe;
            }
            if let Some(replay) = state.replays.pop_front() {
                return Work::Batch(replay);
            }
            if !state.entries.is_empty() {
                return Work::Batch(take_batch(&mut state.entries, limits));
            }
            if state.closed && state.admitting == 0 {
                return Work::Stop;
            }
            match until {
                None => self.ready.wait(&mut state),
                Some(until) => {
                    if Instant::now() >= until {
                        return Work::Idle;
                    }
                    self.ready.wait_until(&mut state, until);
                }
            }
        }
    }
}

/// Takes entries from the front while the padded batch fits the limits (always at least one),
/// all of one readout (pooled or per token: a step reads one out).
fn take_batch(entries: &mut VecDeque<Entry>, limits: Limits) -> Vec<Entry> {
    let mut batch: Vec<Entry> = Vec::new();
    let mut longest = 0;
    while let Some(next) = entries.front() {
        let longer = longest.max(next.tokens().max(1));
        let same = batch
            .first()
            .is_none_or(|first| first.request.readout == next.request.readout);
        let fits = (batch.len() + 1) * longer <= limits.max_batch_tokens
            && batch.len() < limits.max_batch_requests
            && same;
        if !batch.is_empty() && !fits {
            break;
        }
        longest = longer;
        batch.extend(entries.pop_front());
    }
    batch
}
