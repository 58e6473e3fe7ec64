//! `Resilient<B>`: every allocate, copy, launch and synchronize of any backend goes through
//! `retry_operation` with the engine's policy, breaker, budget and metrics.
//!
//! Retry-class errors are retried in place; on Reclaim-class (out of memory) the backend's cached
//! memory is freed first; Reset, Fatal and Probe pass straight up as a [`RetryError`] — the
//! engine replays the whole step after a reset, since a kernel fault may belong to any earlier
//! launch.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{HipError, Op};
use crate::retry::{GiveUpReason, RetryCall, RetryError, RetryHistory, RetryPolicy, RetryState};

use super::graph_scope::GraphScope;
use super::kernel::Kernel;
use super::traits::{Backend, DeviceInfo, Word};

/// A device call that succeeded only after retries, with its failed attempts: what the engine
/// reports in each request's retry history.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredCall {
    pub op: Op,
    pub history: RetryHistory,
}

/// A backend whose every device call is retried by class.
#[derive(Debug)]
pub struct Resilient<B> {
    inner: B,
    policy: Arc<RetryPolicy>,
    state: RetryState,
    recovered: Mutex<Vec<RecoveredCall>>,
    graph: GraphScope,
}

impl<B: Backend<Error = HipError>> Resilient<B> {
    pub fn new(inner: B, policy: Arc<RetryPolicy>, state: RetryState) -> Self {
        Resilient {
            inner,
            policy,
            state,
            recovered: Mutex::new(Vec::new()),
            graph: GraphScope::default(),
        }
    }

    /// The calls that succeeded after retries since the last call of this method (the engine
    /// takes them after each step; a failed call's attempts are in its error instead).
    pub fn take_recovered(&self) -> Vec<RecoveredCall> {
        std::mem::take(&mut *self.recovered.lock())
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    pub fn state(&self) -> &RetryState {
        &self.state
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn call<T>(
        &self,
        op: Op,
        f: impl FnMut() -> Result<T, HipError>,
    ) -> Result<T, RetryError<HipError>> {
        self.call_with(false, op, f)
    }

    fn call_with<T>(
        &self,
        ungated: bool,
        op: Op,
        mut f: impl FnMut() -> Result<T, HipError>,
    ) -> Result<T, RetryError<HipError>> {
        if self.graph.is_current() {
            // Inside a graph: the graph as a whole is retried.
            return f().map_err(|error| {
                RetryError::gave_up(op, GiveUpReason::Permanent, error, RetryHistory::default())
            });
        }
        let inner = &self.inner;
        let mut reclaim = || {
            inner.reclaim();
        };
        let mut call = RetryCall::new(op, &self.policy, &self.state).reclaim_with(&mut reclaim);
        if ungated {
            call = call.ungated();
        }
        let done = call.run(|_| f())?;
        if !done.history.is_empty() {
            self.recovered.lock().push(RecoveredCall {
                op,
                history: done.history,
            });
        }
        Ok(done.value)
    }
}

impl<B: Backend<Error = HipError>> Backend for Resilient<B> {
    type Buffer = B::Buffer;
    type Error = RetryError<HipError>;

    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }

    fn packs_f32_weights(&self) -> bool {
        self.inner.packs_f32_weights()
    }

    fn allocate(&self, len: usize) -> Result<B::Buffer, Self::Error> {
        self.call(Op::Allocate, || self.inner.allocate(len))
    }

    fn len(&self, buffer: &B::Buffer) -> usize {
        self.inner.len(buffer)
    }

    fn copy_to_device<T: Word>(&self, src: &[T], dst: &mut B::Buffer) -> Result<(), Self::Error> {
        self.call(Op::CopyHostToDevice, || self.inner.copy_to_device(src, dst))
    }

    fn copy_to_host<T: Word>(&self, src: &B::Buffer, dst: &mut [T]) -> Result<(), Self::Error> {
        self.call(Op::CopyDeviceToHost, || self.inner.copy_to_host(src, dst))
    }

    fn copy_on_device(
        &self,
        src: &B::Buffer,
        dst: &mut B::Buffer,
        len: usize,
    ) -> Result<(), Self::Error> {
        self.call(Op::CopyDeviceToDevice, || {
            self.inner.copy_on_device(src, dst, len)
        })
    }

    fn launch(&self, mut kernel: Kernel<'_, B::Buffer>) -> Result<(), Self::Error> {
        self.call(Op::Launch, || self.inner.launch(kernel.reborrow()))
    }

    /// One retried call for the whole graph: inside it, the body's launches go straight to the
    /// inner backend, and a failed one fails the graph, which is then retried from the start
    /// by class like any launch.
    fn graph<R>(&self, mut body: impl FnMut() -> Result<R, Self::Error>) -> Result<R, Self::Error> {
        self.call(Op::Launch, || {
            let _inside = self.graph.enter();
            self.inner.graph(|| {
                body().map_err(|e| {
                    e.into_error().unwrap_or_else(|| {
                        HipError::new(1, Op::Launch).with_detail("a graph's launch gave no error")
                    })
                })
            })
        })
    }

    fn synchronize(&self) -> Result<(), Self::Error> {
        self.call(Op::Synchronize, || self.inner.synchronize())
    }

    /// Resets the device and closes its circuit breaker: a fresh context starts with a clean
    /// record. The reset is not gated by the breaker (it is how an open breaker's device comes
    /// back) and does not count against it.
    fn reset(&self) -> Result<(), Self::Error> {
        let result = self.call_with(true, Op::Init, || self.inner.reset());
        if result.is_ok() {
            self.state.breaker().reset();
        }
        result
    }

    fn scoped<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        self.inner.scoped(job)
    }

    fn reclaim(&self) -> u64 {
        self.inner.reclaim()
    }
}
