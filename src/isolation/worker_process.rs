//! The worker process: connects to its supervisor's socket, loads the model, opens the backend,
//! and runs steps, probes and recoveries until told to stop or its supervisor goes away.
//!
//! Any binary can be a worker: call [`run_worker_if_requested`] first thing in `main`. When the
//! process was started as a worker (the supervisor sets [`SOCKET_ENV`]) it serves and exits;
//! otherwise it returns at once. The `hipinfer` binary does this, so an embedding application
//! can also point `worker.program` at it instead.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::Registry;

use crate::backend::FaultPlan;
use crate::model::Model;
use crate::retry::{with_requests, BreakerState, RetryState};
use crate::step::{retry_state, FaultCounter, LocalRunners, RetryRecord, RunnerSpec, StepRunner};

use super::forwarded_metrics::snapshot;
use super::protocol::{
    FromWorker, ProtocolError, StartFailure, ToWorker, WorkerReady, WorkerReport, WorkerStart,
    PROTOCOL_VERSION,
};

/// The variable that makes a process a worker: the path of its supervisor's socket.
pub const SOCKET_ENV: &str = "HIPINFER_WORKER_SOCKET";

/// Serves as a worker and exits when this process was started as one; returns otherwise.
pub fn run_worker_if_requested() {
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    let socket = Path::new(&socket);
    let code = match serve(socket) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("hipinfer worker {}: {message}", std::process::id());
            1
        }
    };
    // The conversation is over (the supervisor closed it, replaced this worker, or died): the
    // socket folder is this worker's alone, and a supervisor killed by SIGKILL cannot remove it.
    if let Some(dir) = socket.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::process::exit(code);
}

/// Exits this process when its parent is gone (it was re-parented), so a supervisor killed
/// without warning leaves no worker behind — even one stuck in a hung kernel — and no socket
/// folder either.
fn exit_with_parent(socket_dir: Option<PathBuf>) {
    let parent = std::os::unix::process::parent_id();
    let _ = std::thread::Builder::new()
        .name("hipinfer-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                if let Some(dir) = &socket_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                std::process::exit(3);
            }
        });
}

type Writer = Arc<Mutex<UnixStream>>;

fn send(writer: &Writer, message: &FromWorker) -> Result<(), String> {
    message
        .write(&mut *writer.lock())
        .map_err(|e| format!("could not answer the supervisor: {e}"))
}

/// What the worker keeps between messages.
struct Serving {
    runner: Box<dyn StepRunner>,
    registry: Registry,
    faults: Option<FaultCounter>,
    /// The retry totals when metrics were last reported (to send them only when they change).
    reported: Option<(u64, u64)>,
    retry_state: RetryState,
}

impl Serving {
    fn report(&mut self, recovered: Vec<RetryRecord>) -> WorkerReport {
        let totals = self
            .retry_state
            .metrics()
            .map(|m| (m.retries_total(), m.errors_total()));
        let metrics = if totals != self.reported {
            self.reported = totals;
            serde_json::to_value(snapshot(&self.registry)).ok()
        } else {
            None
        };
        let faults = self.faults.as_ref().map(|read| read()).unwrap_or_default();
        WorkerReport {
            recovered,
            metrics,
            breaker: match self.runner.breaker_state() {
                BreakerState::Closed => "closed",
                BreakerState::HalfOpen => "half_open",
                BreakerState::Open => "open",
            }
            .into(),
            injected: faults.injected,
            reclaims: faults.reclaims,
        }
    }
}

fn serve(socket: &Path) -> Result<(), String> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| format!("could not connect to {}: {e}", socket.display()))?;
    exit_with_parent(socket.parent().map(Path::to_path_buf));
    let mut reader = BufReader::new(
        stream
            .try_clone()
            .map_err(|e| format!("could not clone the socket: {e}"))?,
    );
    let writer: Writer = Arc::new(Mutex::new(stream));
    let start = match ToWorker::read(&mut reader) {
        Ok(ToWorker::Start(start)) => start,
        Ok(other) => return Err(format!("expected Start first, got {other:?}")),
        Err(e) => return Err(format!("no Start message: {e}")),
    };
    let mut serving = match start_serving(&start, &writer) {
        Ok(serving) => serving,
        Err(failure) => {
            let _ = send(&writer, &FromWorker::StartFailed(failure.clone()));
            return Err(failure.message);
        }
    };
    let device = serving.runner.device();
    send(
        &writer,
        &FromWorker::Ready(WorkerReady {
            protocol: PROTOCOL_VERSION,
            backend: device.backend.to_string(),
            device: device.device,
            name: device.name,
            arch: device.arch,
            total_memory: device.total_memory,
            compute_units: device.compute_units,
            pid: std::process::id(),
        }),
    )?;
    loop {
        let message = match ToWorker::read(&mut reader) {
            Ok(message) => message,
            Err(ProtocolError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let reply = match message {
            ToWorker::Step {
                id,
                inputs,
                readout,
                requests,
            } => match with_requests(&requests, || serving.runner.run(&inputs, readout)) {
                Ok(output) => FromWorker::StepDone {
                    id,
                    embeddings: output.embeddings,
                    report: serving.report(output.recovered),
                },
                Err(failure) => FromWorker::StepFailed {
                    id,
                    failure,
                    report: serving.report(Vec::new()),
                },
            },
            ToWorker::Probe { id } => {
                let error = serving.runner.probe().err().map(|f| f.message);
                FromWorker::ProbeDone {
                    id,
                    error,
                    report: serving.report(Vec::new()),
                }
            }
            ToWorker::Recover { id } => {
                let failure = serving.runner.recover().err();
                FromWorker::RecoverDone {
                    id,
                    failure,
                    report: serving.report(Vec::new()),
                }
            }
            ToWorker::Shutdown => return Ok(()),
            ToWorker::Start(_) => return Err("started twice".into()),
        };
        send(&writer, &reply)?;
    }
}

/// Checks the supervisor's protocol version, then loads the model and opens the backend.
fn start_serving(start: &WorkerStart, writer: &Writer) -> Result<Serving, StartFailure> {
    let permanent = |message: String| StartFailure {
        message,
        permanent: true,
        injected: Vec::new(),
    };
    if start.protocol != PROTOCOL_VERSION {
        return Err(permanent(format!(
            "the supervisor speaks protocol version {} and this worker {PROTOCOL_VERSION}: \
             point worker.program at a hipinfer of the same build",
            start.protocol
        )));
    }
    let spec: RunnerSpec = serde_json::from_value(start.spec.clone())
        .map_err(|e| permanent(format!("bad runner spec from the supervisor: {e}")))?;
    let faults: Option<FaultPlan> = match &start.faults {
        Some(plan) => Some(
            serde_json::from_value(plan.clone())
                .map_err(|e| permanent(format!("bad fault plan from the supervisor: {e}")))?,
        ),
        None => None,
    };
    // The supervisor tokenizes; the worker only runs token ids through the model.
    let model =
        Arc::new(Model::load_for_inference(&spec.model).map_err(|e| permanent(e.to_string()))?);
    let registry = Registry::new();
    let state = retry_state(&spec, &registry).map_err(permanent)?;
    let notify_writer = writer.clone();
    let notifier: crate::backend::FaultNotifier = Arc::new(move |kind: &str| {
        let _ = FromWorker::Injected { kind: kind.into() }.write(&mut *notify_writer.lock());
    });
    let runners = LocalRunners::new(spec, faults, model, state.clone())
        .seed_offset(start.incarnation)
        .notifier(notifier);
    let runner = runners.make().map_err(|f| StartFailure {
        message: f.message,
        permanent: false,
        // The faults that stopped this start are counted by the supervisor all the same.
        injected: runners
            .fault_counter()
            .map(|read| read().injected)
            .unwrap_or_default(),
    })?;
    Ok(Serving {
        runner,
        registry,
        faults: runners.fault_counter(),
        reported: None,
        retry_state: state,
    })
}
