//! The supervisor: a [`StepRunner`] whose steps run in a worker process. The engine keeps the
//! queue and every input on this side; the worker only ever holds the step in flight.
//!
//! The ladder here: a worker that reports a Reset-class failure is asked to reset its device in
//! place (a context-scoped fault heals that way); when that reset fails with a sticky code — the
//! context is lost for the whole worker process, as ROCm ≥ 6 and CUDA do after a memory fault —
//! or the worker dies (any exit, any signal: ROCm ≤ 5 aborts), stops answering within the step
//! deadline, or cannot be talked to, it is killed (SIGKILL: a poisoned process's teardown can
//! hang) and reaped, a new one is started (it loads the weights), and the engine replays the
//! step — no request is lost. Too many restarts in a window trip the respawn breaker: the
//! engine falls back or turns unhealthy instead of crash-looping.
//!
//! The worker's socket accepts exactly one connection, from the child just spawned (its peer
//! credentials are checked), and is then closed and removed: a stray local process that
//! connects is refused and logged, never mistaken for the worker.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::backend::{DeviceInfo, FaultPlan};
use crate::error::{ConfigError, Recovery};
use crate::llm::Feed;
use crate::model::{Encoding, Readout};
use crate::retry::{current_requests, BreakerState, EventRecord, Events};
use crate::step::{
    DecodeRunner, DecoderSpec, FaultCounter, FaultTotals, RunnerFactory, RunnerSpec, StepFailure,
    StepLogits, StepOutput, StepRunner,
};

use super::config::WorkerConfig;
use super::failure_kind::{classify, FailureKind};
use super::forwarded_metrics::{FamilyWire, ForwardedMetrics};
use super::private_dir::PrivateDir;
use super::protocol::{
    FromWorker, ProtocolError, ToWorker, WireFeed, WorkerReport, WorkerRole, WorkerStart,
    PROTOCOL_VERSION,
};
use super::restart_breaker::RestartBreaker;
use super::worker_process::SOCKET_ENV;

/// Why a worker was restarted: the `reason` label of `hipinfer_worker_restarts_total`.
pub const RESTART_REASONS: [&str; 4] = ["exit", "signal", "timeout", "sticky_error"];

/// Why a supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Start(String),
}

/// The supervisor's metrics.
#[derive(Clone)]
struct IsolationMetrics {
    restarts: IntCounterVec,
    recovery_seconds: Histogram,
    up: IntGauge,
    stray_connections: IntCounter,
}

impl IsolationMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let restarts = IntCounterVec::new(
            Opts::new(
                "hipinfer_worker_restarts_total",
                "GPU worker processes restarted, by reason (exit, signal, timeout, sticky_error)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(restarts.clone()))?;
        for reason in RESTART_REASONS {
            restarts.with_label_values(&[reason]);
        }
        let recovery_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "hipinfer_worker_recovery_seconds",
                "From a worker's death to the first step its replacement completed",
            )
            .buckets(prometheus::exponential_buckets(0.01, 2.0, 14)?),
        )?;
        registry.register(Box::new(recovery_seconds.clone()))?;
        let up = IntGauge::new("hipinfer_worker_up", "1 while a worker process is ready")?;
        registry.register(Box::new(up.clone()))?;
        let stray_connections = IntCounter::new(
            "hipinfer_worker_stray_connections_total",
            "Connections to the worker socket from a process other than the worker, refused",
        )?;
        registry.register(Box::new(stray_connections.clone()))?;
        Ok(IsolationMetrics {
            restarts,
            recovery_seconds,
            up,
            stray_connections,
        })
    }
}

/// What the engine shows about its worker: the live worker's process id and how long each
/// recovery took (from a worker's death to its replacement's first completed step).
#[derive(Debug, Default)]
pub struct WorkerStatus {
    pid: std::sync::atomic::AtomicU32,
    recoveries: Mutex<Vec<f64>>,
    restarts: Mutex<Vec<f64>>,
}

impl WorkerStatus {
    /// The live worker's process id (`None` while none is running).
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Seconds of each recovery so far: from a worker's death to the first step its
    /// replacement completed (the replayed step's own time included).
    pub fn recovery_seconds(&self) -> Vec<f64> {
        self.recoveries.lock().clone()
    }

    /// Seconds of each restart so far: from a worker's death to its replacement's `Ready`
    /// (process start, model and weights loaded).
    pub fn restart_seconds(&self) -> Vec<f64> {
        self.restarts.lock().clone()
    }

    fn set_pid(&self, pid: Option<u32>) {
        self.pid
            .store(pid.unwrap_or(0), std::sync::atomic::Ordering::Release);
    }
}

/// What tests and `hipinfer chaos` read about the workers' faults.
#[derive(Debug, Default)]
struct Stats {
    /// Faults injected by workers that are gone.
    retired: FaultTotals,
    /// The live worker's latest counts.
    current: FaultTotals,
    aborts: u64,
    hangs: u64,
}

fn encode(what: &str, e: serde_json::Error) -> SupervisorError {
    SupervisorError::Start(format!("could not encode the {what}: {e}"))
}

/// What a factory's workers run, and on what.
struct Role {
    role: WorkerRole,
    spec: serde_json::Value,
    backend: crate::backend::BackendChoice,
    device: i32,
}

/// What every supervisor of one engine shares: metrics (registered once), the workers' fault
/// counts and status, and the start message.
pub struct SupervisorFactory {
    start: Mutex<WorkerStart>,
    worker: WorkerConfig,
    step_timeout: Duration,
    breaker: Arc<Mutex<RestartBreaker>>,
    metrics: IsolationMetrics,
    forwarded: Arc<ForwardedMetrics>,
    stats: Arc<Mutex<Stats>>,
    status: Arc<WorkerStatus>,
    events: Events,
    backend: crate::backend::BackendChoice,
    device: i32,
}

impl std::fmt::Debug for SupervisorFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorFactory")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// Registers the shared forwarded metrics (the registry owns a box of this handle).
struct ForwardedHandle(Arc<ForwardedMetrics>);

impl prometheus::core::Collector for ForwardedHandle {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

impl SupervisorFactory {
    /// Registers the metrics in `registry`; workers will build runners of `spec` and inject
    /// `faults`; a step not answered within `step_timeout` means a hung worker.
    pub fn new(
        spec: &RunnerSpec,
        faults: Option<&FaultPlan>,
        worker: &WorkerConfig,
        step_timeout: Duration,
        registry: &Registry,
        events: Events,
    ) -> Result<SupervisorFactory, SupervisorError> {
        let role = Role {
            role: WorkerRole::Embed,
            spec: serde_json::to_value(spec).map_err(|e| encode("runner spec", e))?,
            backend: spec.backend,
            device: spec.device,
        };
        Self::with_role(role, faults, worker, step_timeout, registry, events)
    }

    /// Workers that run a language model's steps (see [`DecodeRunner`]): supervisors made by
    /// [`SupervisorFactory::supervise`] are decode runners of `spec`.
    pub fn for_decoder(
        spec: &DecoderSpec,
        faults: Option<&FaultPlan>,
        worker: &WorkerConfig,
        step_timeout: Duration,
        registry: &Registry,
    ) -> Result<SupervisorFactory, SupervisorError> {
        let role = Role {
            role: WorkerRole::Decode,
            spec: serde_json::to_value(spec).map_err(|e| encode("decoder spec", e))?,
            backend: crate::backend::BackendChoice::Cpu,
            device: 0,
        };
        Self::with_role(
            role,
            faults,
            worker,
            step_timeout,
            registry,
            Events::default(),
        )
    }

    fn with_role(
        role: Role,
        faults: Option<&FaultPlan>,
        worker: &WorkerConfig,
        step_timeout: Duration,
        registry: &Registry,
        events: Events,
    ) -> Result<SupervisorFactory, SupervisorError> {
        if std::env::var_os(SOCKET_ENV).is_some() {
            // This process was started as a worker but went on to build an engine of its own:
            // its `main` does not hand over to the worker first. Starting another worker here
            // would repeat that without end.
            return Err(SupervisorError::Config(ConfigError::new(
                "worker.program",
                format!(
                    "{} was started as a hipinfer worker but does not serve as one: call \
                     hipinfer::isolation::run_worker_if_requested() first thing in its main(), \
                     or set worker.program (HIPINFER_WORKER_PROGRAM) to the hipinfer binary",
                    std::env::current_exe()
                        .map_or_else(|_| "this program".into(), |p| p.display().to_string())
                ),
            )));
        }
        worker.validate()?;
        let registration = |e: prometheus::Error| {
            SupervisorError::Start(format!("could not register metrics: {e}"))
        };
        let metrics = IsolationMetrics::register(registry).map_err(registration)?;
        let forwarded = Arc::new(ForwardedMetrics::default());
        registry
            .register(Box::new(ForwardedHandle(forwarded.clone())))
            .map_err(registration)?;
        let start = WorkerStart {
            protocol: PROTOCOL_VERSION,
            role: role.role,
            spec: role.spec,
            faults: faults
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| encode("fault plan", e))?,
            incarnation: 0,
        };
        Ok(SupervisorFactory {
            start: Mutex::new(start),
            worker: worker.clone(),
            step_timeout,
            breaker: Arc::new(Mutex::new(RestartBreaker::new(
                worker.max_restarts,
                worker.restart_window,
            ))),
            metrics,
            forwarded,
            stats: Arc::default(),
            status: Arc::default(),
            events,
            backend: role.backend,
            device: role.device,
        })
    }

    /// A supervisor with its first worker started. A worker program that cannot be run at all
    /// (missing, not executable, another protocol version) is an error now; a worker that dies
    /// while starting is retried on the first step, under the respawn breaker.
    pub fn supervise(&self) -> Result<Supervisor, SupervisorError> {
        let mut supervisor = Supervisor {
            factory: SharedFactory {
                start: self.start.lock().clone(),
                worker: self.worker.clone(),
                step_timeout: self.step_timeout,
                breaker: self.breaker.clone(),
                metrics: self.metrics.clone(),
                forwarded: self.forwarded.clone(),
                stats: self.stats.clone(),
                status: self.status.clone(),
                events: self.events.clone(),
            },
            live: None,
            next_id: 0,
            device_breaker: BreakerState::Closed,
            device: DeviceInfo {
                backend: "worker",
                device: self.device,
                name: format!("{} worker process (starting)", self.backend),
                arch: String::new(),
                total_memory: 0,
                compute_units: 0,
            },
            replace: None,
            died_at: None,
            last_death: None,
            permanent: None,
            consecutive_restarts: 0,
        };
        if let Err(failure) = supervisor.spawn() {
            if let Some(message) = &supervisor.permanent {
                return Err(SupervisorError::Start(message.clone()));
            }
            tracing::warn!("the first worker did not start: {}", failure.message);
            supervisor.replace = Some("exit");
        }
        // The next supervisor's workers seed their faults after this one's.
        self.start.lock().incarnation = supervisor.factory.start.incarnation;
        Ok(supervisor)
    }

    /// Reads the injected-fault counters, summed over every worker so far.
    pub fn fault_counter(&self) -> Option<FaultCounter> {
        self.start.lock().faults.as_ref()?;
        let stats = self.stats.clone();
        Some(Arc::new(move || {
            let stats = stats.lock();
            let mut totals = stats.retired.plus(&stats.current);
            totals.aborts = stats.aborts;
            totals.hangs = stats.hangs;
            totals
        }))
    }

    /// The workers' status, shared with whoever holds it.
    pub fn status(&self) -> Arc<WorkerStatus> {
        self.status.clone()
    }
}

impl RunnerFactory for SupervisorFactory {
    fn make(&self) -> Result<Box<dyn StepRunner>, StepFailure> {
        self.supervise()
            .map(|s| Box::new(s) as Box<dyn StepRunner>)
            .map_err(|e| StepFailure::fatal("backend", e.to_string()))
    }
}

/// One supervisor's copy of what the factory shares.
struct SharedFactory {
    start: WorkerStart,
    worker: WorkerConfig,
    step_timeout: Duration,
    breaker: Arc<Mutex<RestartBreaker>>,
    metrics: IsolationMetrics,
    forwarded: Arc<ForwardedMetrics>,
    stats: Arc<Mutex<Stats>>,
    status: Arc<WorkerStatus>,
    events: Events,
}

/// A worker process that answered `Ready`.
struct Live {
    child: Child,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// Its socket folder (removed with the supervisor's copy, or by the worker itself when it
    /// finds its supervisor gone).
    _dir: PrivateDir,
}

/// How a conversation with the worker ended badly.
struct Death {
    reason: &'static str,
    message: String,
}

impl Death {
    /// The worker exited, or can no longer be talked to.
    fn exit(message: impl Into<String>) -> Death {
        Death {
            reason: "exit",
            message: message.into(),
        }
    }

    /// The worker did not answer within `timeout`: hung.
    fn timeout(timeout: Duration) -> Death {
        Death {
            reason: "timeout",
            message: format!("the worker did not answer within {timeout:?}"),
        }
    }
}

/// Steps in a supervised worker process.
pub struct Supervisor {
    factory: SharedFactory,
    live: Option<Live>,
    next_id: u64,
    device_breaker: BreakerState,
    device: DeviceInfo,
    /// Set when the worker died or must be replaced: why (the restart's reason).
    replace: Option<&'static str>,
    /// When the first worker since the last completed step died (for the recovery time).
    died_at: Option<Instant>,
    /// When the last worker died (for the restart time).
    last_death: Option<Instant>,
    /// A failure starting workers that will not go away (no such program, wrong protocol).
    permanent: Option<String>,
    /// Restarts since the last completed step (the restart backoff's exponent).
    consecutive_restarts: u32,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("worker_pid", &self.worker_pid())
            .finish_non_exhaustive()
    }
}

fn io_failure(what: &str, error: &std::io::Error) -> String {
    format!("{what}: {error}")
}

/// A failure starting a worker: Reset-class (the inputs are not at fault).
fn start_failure(message: String) -> StepFailure {
    let mut failure = StepFailure::worker("exit", message);
    failure.error = "worker_start".into();
    failure
}

impl Supervisor {
    /// The live worker's process id.
    pub fn worker_pid(&self) -> Option<u32> {
        self.live.as_ref().map(|l| l.child.id())
    }

    fn absorb(&mut self, report: &WorkerReport) {
        self.device_breaker = match report.breaker.as_str() {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        };
        if let Some(metrics) = &report.metrics {
            if let Ok(families) = serde_json::from_value::<Vec<FamilyWire>>(metrics.clone()) {
                self.factory.forwarded.update(families);
            }
        }
        let mut stats = self.factory.stats.lock();
        stats.current.injected = report.injected.clone();
        stats.current.reclaims = report.reclaims;
    }

    fn count_injected(stats: &Mutex<Stats>, kind: &str) {
        let mut stats = stats.lock();
        match kind {
            "abort" => stats.aborts += 1,
            "hang" => stats.hangs += 1,
            _ => {}
        }
    }

    /// Kills what is left of the worker (SIGKILL: never a polite exit, a poisoned process's
    /// teardown can hang) and reaps it; returns why it ended (`exit` or `signal`) with its
    /// status. A worker whose connection just closed gets a moment to finish its own exit
    /// first, so its real status is reported.
    fn bury(&mut self, exiting: bool) -> (&'static str, String) {
        self.factory.metrics.up.set(0);
        self.factory.status.set_pid(None);
        self.factory.forwarded.retire();
        {
            let mut stats = self.factory.stats.lock();
            let current = std::mem::take(&mut stats.current);
            stats.retired = stats.retired.plus(&current);
        }
        let Some(mut live) = self.live.take() else {
            return ("exit", "no worker was running".into());
        };
        let _ = live.writer.shutdown(std::net::Shutdown::Both);
        let grace = Instant::now() + Duration::from_millis(if exiting { 50 } else { 0 });
        let status = loop {
            match live.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < grace => std::thread::sleep(Duration::from_millis(1)),
                _ => {
                    let _ = live.child.kill();
                    break live.child.wait().ok();
                }
            }
        };
        match status {
            Some(status) => match status.signal() {
                Some(signal) => ("signal", format!("killed by signal {signal}")),
                None => ("exit", format!("exited with {status}")),
            },
            None => ("exit", "could not be reaped".into()),
        }
    }

    /// The worker is gone or must go: bury it and note why, for the restart.
    fn died(&mut self, reason: &'static str) -> String {
        let (how, status) = self.bury(reason == "exit");
        let reason = if reason == "exit" { how } else { reason };
        self.replace = Some(reason);
        self.died_at.get_or_insert_with(Instant::now);
        self.last_death = Some(Instant::now());
        status
    }

    /// Sends `message` and waits up to `timeout` for the answer with the same id, counting the
    /// injected-fault notices that arrive first.
    fn ask(&mut self, message: &ToWorker, id: u64, timeout: Duration) -> Result<FromWorker, Death> {
        let stats = self.factory.stats.clone();
        let Some(live) = self.live.as_mut() else {
            return Err(Death::exit("no worker is running"));
        };
        if let Err(e) = message.write(&mut live.writer) {
            return Err(Death::exit(format!("could not send to the worker: {e}")));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Death::timeout(timeout));
            }
            let _ = live.reader.get_ref().set_read_timeout(Some(left));
            match FromWorker::read(&mut live.reader) {
                Ok(FromWorker::Injected { kind }) => Self::count_injected(&stats, &kind),
                Ok(reply) => {
                    let matches = match &reply {
                        FromWorker::StepDone { id: r, .. }
                        | FromWorker::StepFailed { id: r, .. }
                        | FromWorker::DecodeDone { id: r, .. }
                        | FromWorker::ProbeDone { id: r, .. }
                        | FromWorker::RecoverDone { id: r, .. } => *r == id,
                        _ => false,
                    };
                    if !matches {
                        return Err(Death::exit(format!(
                            "the worker answered out of turn: {reply:?}"
                        )));
                    }
                    return Ok(reply);
                }
                Err(ProtocolError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Death::timeout(timeout));
                }
                Err(e) => return Err(Death::exit(format!("the worker went away: {e}"))),
            }
        }
    }

    /// A step failure saying the worker process failed.
    fn worker_failure(&mut self, death: Death, inputs: usize) -> StepFailure {
        let status = self.died(death.reason);
        let reason = self.replace.unwrap_or(death.reason);
        tracing::warn!(
            reason,
            inputs,
            "the worker process failed ({}; {status}); restarting it and replaying its {inputs} input(s)",
            death.message
        );
        StepFailure::worker(reason, format!("{} ({status})", death.message))
    }

    /// The failure for an answer that is not the one asked for (or no answer at all).
    fn unexpected(&mut self, answer: Result<FromWorker, Death>, inputs: usize) -> StepFailure {
        let death = answer.map_or_else(
            |death| death,
            |other| Death::exit(format!("unexpected answer {other:?}")),
        );
        self.worker_failure(death, inputs)
    }

    /// Accepts the one connection of `child` on `listener`: a connection from any other
    /// process is refused (closed) and logged, and the wait goes on.
    fn accept_child(
        &mut self,
        listener: &UnixListener,
        child: &mut Child,
        program: &std::path::Path,
    ) -> Result<UnixStream, String> {
        let deadline = Instant::now() + self.factory.worker.start_timeout;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let peer = rustix::net::sockopt::socket_peercred(&stream)
                        .map(|cred| cred.pid.as_raw_nonzero().get() as u32);
                    match peer {
                        Ok(pid) if pid == child.id() => return Ok(stream),
                        other => {
                            self.factory.metrics.stray_connections.inc();
                            tracing::warn!(
                                peer = ?other.ok(),
                                worker = child.id(),
                                "refused a connection to the worker socket from a process \
                                 that is not the worker"
                            );
                            drop(stream);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!(
                            "the worker program {} {status} before connecting",
                            program.display()
                        ));
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the worker did not connect within {:?}",
                            self.factory.worker.start_timeout
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(io_failure("could not accept the worker's connection", &e)),
            }
        }
    }

    /// Starts a worker and waits for it to load the model.
    fn spawn(&mut self) -> Result<(), StepFailure> {
        let program = match &self.factory.worker.program {
            Some(program) => program.clone(),
            None => std::env::current_exe()
                .map_err(|e| start_failure(io_failure("could not find this program", &e)))?,
        };
        let dir = PrivateDir::create().map_err(|e| {
            start_failure(io_failure(
                "could not create the worker's socket folder",
                &e,
            ))
        })?;
        let socket: PathBuf = dir.path().join("worker.sock");
        let listener = UnixListener::bind(&socket)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| start_failure(io_failure("could not open the worker's socket", &e)))?;
        let child = Command::new(&program)
            .args(&self.factory.worker.args)
            .env(SOCKET_ENV, &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                let message = format!(
                    "could not start the worker program {}: {e}",
                    program.display()
                );
                if classify(&e) == FailureKind::Permanent {
                    self.permanent = Some(message.clone());
                }
                return Err(start_failure(message));
            }
        };
        let accepted = self.accept_child(&listener, &mut child, &program);
        // One connection only: no one else can reach this worker from here on.
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        let stream = match accepted.and_then(|stream| {
            stream
                .set_nonblocking(false)
                .and_then(|()| stream.try_clone().map(|reader| (stream, reader)))
                .map_err(|e| io_failure("could not set up the worker's connection", &e))
        }) {
            Ok(pair) => pair,
            Err(message) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(start_failure(message));
            }
        };
        self.live = Some(Live {
            child,
            writer: stream.0,
            reader: BufReader::new(stream.1),
            _dir: dir,
        });
        let answer = self.ask_start();
        match answer {
            Ok(ready) => {
                self.device = ready;
                self.factory.status.set_pid(self.worker_pid());
                if let Some(died) = self.last_death.take() {
                    self.factory
                        .status
                        .restarts
                        .lock()
                        .push(died.elapsed().as_secs_f64());
                }
                self.factory.start.incarnation += 1;
                self.replace = None;
                self.factory.metrics.up.set(1);
                Ok(())
            }
            Err((message, permanent)) => {
                let (_, status) = self.bury(true);
                self.factory.start.incarnation += 1;
                if permanent {
                    self.permanent = Some(message.clone());
                }
                Err(start_failure(format!("{message} ({status})")))
            }
        }
    }

    /// Sends `Start` and waits for `Ready`: the device, or why not (and whether that is
    /// permanent).
    fn ask_start(&mut self) -> Result<DeviceInfo, (String, bool)> {
        let timeout = self.factory.worker.start_timeout;
        let stats = self.factory.stats.clone();
        let start = ToWorker::Start(self.factory.start.clone());
        let live = self.live.as_mut().ok_or(("no worker".to_string(), false))?;
        start
            .write(&mut live.writer)
            .map_err(|e| (format!("could not start the worker: {e}"), false))?;
        let _ = live.reader.get_ref().set_read_timeout(Some(timeout));
        loop {
            match FromWorker::read(&mut live.reader) {
                Ok(FromWorker::Ready(ready)) => {
                    if ready.protocol != PROTOCOL_VERSION {
                        return Err((
                            format!(
                                "the worker program speaks protocol version {} and this \
                                 supervisor {PROTOCOL_VERSION}: point worker.program at a \
                                 hipinfer of the same build",
                                ready.protocol
                            ),
                            true,
                        ));
                    }
                    return Ok(DeviceInfo {
                        backend: if ready.backend == "cpu" { "cpu" } else { "hip" },
                        device: ready.device,
                        name: format!("{} (worker process {})", ready.name, ready.pid),
                        arch: ready.arch,
                        total_memory: ready.total_memory,
                        compute_units: ready.compute_units,
                    });
                }
                Ok(FromWorker::StartFailed(failure)) => {
                    let injected = FaultTotals {
                        injected: failure.injected.clone(),
                        ..FaultTotals::default()
                    };
                    let mut stats = stats.lock();
                    stats.retired = stats.retired.plus(&injected);
                    drop(stats);
                    return Err((
                        format!("the worker could not start: {}", failure.message),
                        failure.permanent,
                    ));
                }
                Ok(FromWorker::Injected { kind }) => Self::count_injected(&stats, &kind),
                Ok(other) => {
                    return Err((format!("the worker sent {other:?} instead of Ready"), false))
                }
                Err(e) => return Err((format!("the worker died while starting: {e}"), false)),
            }
        }
    }

    /// Replaces the worker: under the respawn breaker, after the restart backoff.
    fn respawn(&mut self) -> Result<(), StepFailure> {
        let reason = self.replace.unwrap_or("exit");
        if self.live.is_some() {
            self.died(reason);
        }
        if let Some(message) = &self.permanent {
            return Err(StepFailure::fatal("backend", message.clone()));
        }
        let now = Instant::now();
        if !self.factory.breaker.lock().allows(now) {
            let breaker = self.factory.breaker.lock();
            // Reset-class, so the engine tries to recover (and, while the breaker holds, fails
            // to, and falls back or reports itself unhealthy): the inputs are not at fault.
            return Err(StepFailure::worker(
                "crash_loop",
                format!(
                    "the worker process was restarted {} times within {:?}: it is crash-looping, \
                     so no more restarts until the window passes",
                    breaker.max_restarts(),
                    breaker.window()
                ),
            ));
        }
        let worker = &self.factory.worker;
        let delay = worker
            .restart_delay
            .saturating_mul(2u32.saturating_pow(self.consecutive_restarts.min(20)))
            .min(worker.max_restart_delay);
        self.consecutive_restarts += 1;
        std::thread::sleep(delay);
        self.factory.breaker.lock().record(Instant::now());
        self.factory
            .metrics
            .restarts
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(reason, "restarting the worker process");
        let result = self.spawn();
        self.factory.events.emit(|| EventRecord {
            error: result.as_ref().err().map(|f| f.message.clone()),
            ..EventRecord::new(
                "worker",
                "worker_restart",
                if result.is_ok() { reason } else { "failed" },
            )
        });
        result
    }

    /// A step completed: the worker serves (a recovery since a death, if any, is over).
    fn completed(&mut self, report: &WorkerReport) {
        self.absorb(report);
        self.consecutive_restarts = 0;
        if let Some(died) = self.died_at.take() {
            let seconds = died.elapsed().as_secs_f64();
            self.factory.metrics.recovery_seconds.observe(seconds);
            self.factory.status.recoveries.lock().push(seconds);
        }
    }

    fn ensure_live(&mut self) -> Result<(), StepFailure> {
        if self.live.is_none() || self.replace.is_some() {
            self.respawn()?;
        }
        Ok(())
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl StepRunner for Supervisor {
    fn run(&mut self, batch: &[Encoding], readout: Readout) -> Result<StepOutput, StepFailure> {
        self.ensure_live()?;
        let id = self.next_id();
        let message = ToWorker::Step {
            id,
            inputs: batch.to_vec(),
            readout,
            requests: current_requests(),
        };
        match self.ask(&message, id, self.factory.step_timeout) {
            Ok(FromWorker::StepDone {
                embeddings, report, ..
            }) => {
                self.completed(&report);
                Ok(StepOutput {
                    embeddings,
                    recovered: report.recovered,
                })
            }
            Ok(FromWorker::StepFailed {
                failure, report, ..
            }) => {
                self.absorb(&report);
                Err(failure)
            }
            answer => Err(self.unexpected(answer, batch.len())),
        }
    }

    /// Resets the worker's device in place; when that cannot work (the context is lost for
    /// the worker process, or the worker is gone), replaces the worker.
    fn recover(&mut self) -> Result<(), StepFailure> {
        if self.live.is_none() || self.replace.is_some() {
            return self.respawn();
        }
        let id = self.next_id();
        let timeout = self.factory.step_timeout;
        match self.ask(&ToWorker::Recover { id }, id, timeout) {
            Ok(FromWorker::RecoverDone {
                failure: None,
                report,
                ..
            }) => {
                self.absorb(&report);
                Ok(())
            }
            Ok(FromWorker::RecoverDone {
                failure: Some(failure),
                report,
                ..
            }) => {
                self.absorb(&report);
                if failure.context_lost() || failure.class == Recovery::Reset {
                    tracing::warn!(
                        reason = "sticky_error",
                        "the worker's device reset failed ({}): its context is lost for the \
                         process; killing and replacing the worker",
                        failure.message
                    );
                    self.replace = Some("sticky_error");
                    self.died_at.get_or_insert_with(Instant::now);
                    self.last_death = Some(Instant::now());
                    return self.respawn();
                }
                Err(failure)
            }
            answer => {
                let failure = self.unexpected(answer, 0);
                tracing::debug!("recovering by a restart: {}", failure.message);
                self.respawn()
            }
        }
    }

    fn probe(&mut self) -> Result<(), StepFailure> {
        self.ensure_live()?;
        let id = self.next_id();
        let timeout = self.factory.step_timeout;
        match self.ask(&ToWorker::Probe { id }, id, timeout) {
            Ok(FromWorker::ProbeDone { error, report, .. }) => {
                self.absorb(&report);
                match error {
                    None => Ok(()),
                    Some(message) => Err(StepFailure::fatal("probe", message)),
                }
            }
            answer => Err(self.unexpected(answer, 0)),
        }
    }

    fn device(&self) -> DeviceInfo {
        self.device.clone()
    }

    fn breaker_state(&self) -> BreakerState {
        self.device_breaker
    }
}

/// A language model's steps in the worker (started by [`SupervisorFactory::for_decoder`]): the
/// worker holds the weights and the KV cache; a new worker starts with an empty cache, which
/// the scheduler rebuilds from what the host holds, as after any recovery.
impl DecodeRunner for Supervisor {
    fn step(&mut self, feeds: &[Feed<'_>]) -> Result<StepLogits, StepFailure> {
        self.ensure_live()?;
        let id = self.next_id();
        let message = ToWorker::Decode {
            id,
            feeds: feeds.iter().map(WireFeed::of).collect(),
            requests: current_requests(),
        };
        match self.ask(&message, id, self.factory.step_timeout) {
            Ok(FromWorker::DecodeDone { logits, report, .. }) => {
                let shape_ok = logits.len() == feeds.len()
                    && logits
                        .iter()
                        .zip(feeds)
                        .all(|(rows, feed)| rows.len() == feed.logit_rows.len());
                if !shape_ok {
                    let death = Death::exit(
                        "the worker answered a decode step with logits of another shape",
                    );
                    return Err(self.worker_failure(death, feeds.len()));
                }
                self.completed(&report);
                Ok(StepLogits {
                    logits,
                    recovered: report.recovered,
                })
            }
            Ok(FromWorker::StepFailed {
                failure, report, ..
            }) => {
                self.absorb(&report);
                Err(failure)
            }
            answer => Err(self.unexpected(answer, feeds.len())),
        }
    }

    fn recover(&mut self) -> Result<(), StepFailure> {
        StepRunner::recover(self)
    }

    fn probe(&mut self) -> Result<(), StepFailure> {
        StepRunner::probe(self)
    }

    fn device(&self) -> DeviceInfo {
        self.device.clone()
    }
}

impl Drop for Supervisor {
    /// Asks the worker to exit, then makes sure it did: no worker outlives its engine.
    fn drop(&mut self) {
        if let Some(live) = self.live.as_mut() {
            let _ = ToWorker::Shutdown.write(&mut live.writer);
        }
        self.bury(true);
    }
}
