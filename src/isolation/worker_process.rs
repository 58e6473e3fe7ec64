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
use crate::llm::LanguageModel;
use crate::model::Model;
use crate::retry::{with_requests, BreakerState, RetryState};
use crate::step::{
    retry_state, DecodeRunner, DecoderSpec, FaultCounter, LocalDecoders, LocalRunners, RetryRecord,
    RunnerSpec, StepFailure, StepRunner,
};

use super::forwarded_metrics::snapshot;
use super::protocol::{
    FromWorker, ProtocolError, StartFailure, ToWorker, WireFeed, WorkerReady, WorkerReport,
    WorkerRole, WorkerStart, PROTOCOL_VERSION,
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

/// What a worker runs: an embedding model's steps, or a language model's.
enum Runner {
    Embed(Box<dyn StepRunner>),
    Decode(Box<dyn DecodeRunner>),
}

impl Runner {
    fn probe(&mut self) -> Result<(), StepFailure> {
        match self {
            Runner::Embed(runner) => runner.probe(),
            Runner::Decode(runner) => runner.probe(),
        }
    }

    fn recover(&mut self) -> Result<(), StepFailure> {
        match self {
            Runner::Embed(runner) => runner.recover(),
            Runner::Decode(runner) => runner.recover(),
        }
    }

    fn device(&self) -> crate::backend::DeviceInfo {
        match self {
            Runner::Embed(runner) => runner.device(),
            Runner::Decode(runner) => runner.device(),
        }
    }
}

/// A step of the other role than the worker's: the supervisor is confused, not the device.
fn wrong_role(what: &str) -> StepFailure {
    StepFailure::fatal("worker", format!("this worker does not run {what} steps"))
}

/// What the worker keeps between messages.
struct Serving {
    runner: Runner,
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
            breaker: match self.retry_state.breaker().state() {
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
            } => match with_requests(&requests, || match &mut serving.runner {
                Runner::Embed(runner) => runner.run(&inputs, readout),
                Runner::Decode(_) => Err(wrong_role("embedding")),
            }) {
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
            ToWorker::Decode {
                id,
                feeds,
                requests,
            } => {
                let feeds: Vec<_> = feeds.iter().map(WireFeed::feed).collect();
                match with_requests(&requests, || match &mut serving.runner {
                    Runner::Decode(runner) => runner.step(&feeds),
                    Runner::Embed(_) => Err(wrong_role("language-model")),
                }) {
                    Ok(output) => FromWorker::DecodeDone {
                        id,
                        logits: output.logits,
                        report: serving.report(output.recovered),
                    },
                    Err(failure) => FromWorker::StepFailed {
                        id,
                        failure,
                        report: serving.report(Vec::new()),
                    },
                }
            }
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
    let faults: Option<FaultPlan> = match &start.faults {
        Some(plan) => Some(
            serde_json::from_value(plan.clone())
                .map_err(|e| permanent(format!("bad fault plan from the supervisor: {e}")))?,
        ),
        None => None,
    };
    let registry = Registry::new();
    let notify_writer = writer.clone();
    let notifier: crate::backend::FaultNotifier = Arc::new(move |kind: &str| {
        let _ = FromWorker::Injected { kind: kind.into() }.write(&mut *notify_writer.lock());
    });
    // The faults that stop a start are counted by the supervisor all the same.
    let start_failed = |message: String, counter: Option<FaultCounter>| StartFailure {
        message,
        permanent: false,
        injected: counter.map(|read| read().injected).unwrap_or_default(),
    };
    let (runner, faults, state) = match start.role {
        WorkerRole::Embed => {
            let spec: RunnerSpec = serde_json::from_value(start.spec.clone())
                .map_err(|e| permanent(format!("bad runner spec from the supervisor: {e}")))?;
            // The supervisor tokenizes; the worker only runs token ids through the model.
            let model = Arc::new(
                Model::load_for_inference(&spec.model).map_err(|e| permanent(e.to_string()))?,
            );
            let state = retry_state(&spec, &registry).map_err(permanent)?;
            let runners = LocalRunners::new(spec, faults, model, state.clone())
                .seed_offset(start.incarnation)
                .notifier(notifier);
            let runner = runners
                .make()
                .map_err(|f| start_failed(f.message, runners.fault_counter()))?;
            (Runner::Embed(runner), runners.fault_counter(), state)
        }
        WorkerRole::Decode => {
            let spec: DecoderSpec = serde_json::from_value(start.spec.clone())
                .map_err(|e| permanent(format!("bad decoder spec from the supervisor: {e}")))?;
            let model =
                Arc::new(LanguageModel::open(&spec.model).map_err(|e| permanent(e.to_string()))?);
            let state = spec.retry_state(&registry).map_err(permanent)?;
            let policy = spec.policy().map_err(permanent)?;
            let decoders = LocalDecoders::new(model, spec, faults, policy, state.clone())
                .seed_offset(start.incarnation)
                .notifier(notifier);
            let runner = decoders
                .make()
                .map_err(|f| start_failed(f.message, decoders.fault_counter()))?;
            (Runner::Decode(runner), decoders.fault_counter(), state)
        }
    };
    Ok(Serving {
        runner,
        registry,
        faults,
        reported: None,
        retry_state: state,
    })
}
