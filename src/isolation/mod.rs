//! Worker process isolation: the engine (the supervisor) keeps the queue and every request's
//! inputs; a child process owns the backend and runs steps. The worst GPU faults (illegal
//! address, ECC, device assert, kernel timeout) poison the whole process — ROCm ≥ 6 and CUDA
//! return the same error from every later call, `hipDeviceReset` included; ROCm ≤ 5 aborts —
//! so surviving them takes a process boundary: when the worker dies, hangs past the step
//! deadline or reports a context it cannot reset, the supervisor kills it, starts a new one and
//! the step is replayed. No request is lost.
//!
//! How the worker is started: `worker.program` (default: this process's own executable) is run
//! with [`SOCKET_ENV`] set to a socket in a private (0700) folder; that program must call
//! [`run_worker_if_requested`] first thing in `main`. The `hipinfer` binary does, so an
//! application embedding the library can either call it too, or set `worker.program` to the
//! `hipinfer` binary.
//!
//! This module depends on the step contract (`crate::step`), never on the engine.

mod config;
mod failure_kind;
mod forwarded_metrics;
mod private_dir;
mod protocol;
mod restart_breaker;
mod supervisor;
mod worker_process;

pub use config::{Isolation, WorkerConfig};
pub use failure_kind::{classify, FailureKind};
pub use forwarded_metrics::{snapshot, FamilyWire, ForwardedMetrics, SeriesWire};
pub use private_dir::PrivateDir;
pub use protocol::{
    FromWorker, ProtocolError, StartFailure, ToWorker, WireFeed, WorkerReady, WorkerReport,
    WorkerRole, WorkerStart, MAX_FRAME, PROTOCOL_VERSION,
};
pub use restart_breaker::RestartBreaker;
pub use supervisor::{
    Supervisor, SupervisorError, SupervisorFactory, WorkerStatus, RESTART_REASONS,
};
pub use worker_process::{run_worker_if_requested, SOCKET_ENV};
