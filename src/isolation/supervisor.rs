//! The supervisor: a [`StepRunner`] whose steps run in a worker process. The engine keeps the
//! queue and every input on this side; the worker only ever holds the step in flight. When the
//! worker dies (any exit, any signal), stops answering within the step deadline, or reports a
//! poisoned context, the supervisor kills what is left of it, reaps it, starts a new one (which
//! loads the weights), and the engine replays the step — no request is lost. Too many restarts
//! in a window trip the respawn breaker: the engine turns unhealthy instead of crash-looping.

// A `StepFailure` (~140 bytes) travels only on the recovery path, after a device fault: boxing
// it would save nothing that matters.
#![allow(clippy::result_large_err)]

use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::backend::DeviceInfo;
use crate::engine::{
    EngineConfig, EngineError, FaultCounter, FaultTotals, StepFailure, StepOutput, StepRunner,
};
use crate::error::Recovery;
use crate::model::Encoding;
use crate::retry::BreakerState;

use super::config::WorkerConfig;
use super::failure_kind::{classify, FailureKind};
use super::forwarded_metrics::{FamilyWire, ForwardedMetrics};
use super::private_dir::PrivateDir;
use super::protocol::{FromWorker, ProtocolError, ToWorker, WorkerReport, WorkerStart};
use super::restart_breaker::RestartBreaker;
use super::worker_process::SOCKET_ENV;

/// Why a worker was restarted: the `reason` label of `hipinfer_worker_restarts_total`.
pub const RESTART_REASONS: [&str; 4] = ["exit", "signal", "timeout", "sticky_error"];

/// The supervisor's metrics.
#[derive(Clone)]
struct IsolationMetrics {
    restarts: IntCounterVec,
    recovery_seconds: Histogram,
    up: IntGauge,
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
        Ok(IsolationMetrics {
            restarts,
            recovery_seconds,
            up,
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

/// A worker process that answered `Ready`.
struct Live {
    child: Child,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
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
    start: WorkerStart,
    worker: WorkerConfig,
    _dir: PrivateDir,
    socket: PathBuf,
    listener: UnixListener,
    live: Option<Live>,
    next_id: u64,
    breaker: RestartBreaker,
    metrics: IsolationMetrics,
    forwarded: Arc<ForwardedMetrics>,
    stats: Arc<Mutex<Stats>>,
    status: Arc<WorkerStatus>,
    device_breaker: BreakerState,
    device: DeviceInfo,
    /// Set when the worker died or must be replaced: why (the restart's reason).
    replace: Option<&'static str>,
    /// When the first worker since the last completed step died (for the recovery time).
    died_at: Option<Instant>,
    /// When the last worker died (for the restart time).
    last_death: Option<Instant>,
    /// A failure starting workers that will not go away (no such program).
    permanent: Option<String>,
    /// Restarts since the last completed step (the restart backoff's exponent).
    consecutive_restarts: u32,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("socket", &self.socket)
            .field("worker_pid", &self.worker_pid())
            .finish_non_exhaustive()
    }
}

fn io_failure(what: &str, error: &std::io::Error) -> String {
    format!("{what}: {error}")
}

impl Supervisor {
    /// Opens the worker's socket, registers the metrics in `registry` and starts the first
    /// worker. A worker program that cannot be run at all (missing, not executable) is an error
    /// now; a worker that dies while starting is retried on the first step, under the breaker.
    pub fn start(config: &EngineConfig, registry: &Registry) -> Result<Supervisor, EngineError> {
        if std::env::var_os(super::worker_process::SOCKET_ENV).is_some() {
            // This process was started as a worker but went on to build an engine of its own:
            // its `main` does not hand over to the worker first. Starting another worker here
            // would repeat that without end.
            return Err(EngineError::Config(crate::ConfigError::new(
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
        let dir = PrivateDir::create().map_err(|e| {
            EngineError::Backend(io_failure(
                "could not create the worker's socket folder",
                &e,
            ))
        })?;
        let socket = dir.path().join("worker.sock");
        let listener = UnixListener::bind(&socket).map_err(|e| {
            EngineError::Backend(io_failure("could not open the worker's socket", &e))
        })?;
        listener.set_nonblocking(true).map_err(|e| {
            EngineError::Backend(io_failure("could not set up the worker's socket", &e))
        })?;
        let metrics = IsolationMetrics::register(registry)
            .map_err(|e| EngineError::Backend(format!("could not register metrics: {e}")))?;
        let forwarded = Arc::new(ForwardedMetrics::default());
        registry
            .register(Box::new(ForwardedHandle(forwarded.clone())))
            .map_err(|e| EngineError::Backend(format!("could not register metrics: {e}")))?;
        let mut worker_config = config.clone();
        worker_config.faults = None;
        worker_config.registry = None;
        let start = WorkerStart {
            config: serde_json::to_value(&worker_config).map_err(|e| {
                EngineError::Backend(format!("could not encode the configuration: {e}"))
            })?,
            faults: config
                .faults
                .as_ref()
                .and_then(|plan| serde_json::to_value(plan).ok()),
            incarnation: 0,
        };
        let mut supervisor = Supervisor {
            start,
            worker: config.worker.clone(),
            _dir: dir,
            socket,
            listener,
            live: None,
            next_id: 0,
            breaker: RestartBreaker::new(config.worker.max_restarts, config.worker.restart_window),
            metrics,
            forwarded,
            stats: Arc::new(Mutex::new(Stats::default())),
            status: Arc::new(WorkerStatus::default()),
            device_breaker: BreakerState::Closed,
            device: DeviceInfo {
                backend: "worker",
                device: config.device,
                name: "worker process (starting)".into(),
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
                return Err(EngineError::Backend(message.clone()));
            }
            tracing::warn!("the first worker did not start: {}", failure.message);
            supervisor.replace = Some("exit");
        }
        Ok(supervisor)
    }

    /// The live worker's process id.
    pub fn worker_pid(&self) -> Option<u32> {
        self.live.as_ref().map(|l| l.child.id())
    }

    /// Reads the injected-fault counters, summed over every worker so far.
    pub fn fault_counter(&self) -> Option<FaultCounter> {
        self.start.faults.as_ref()?;
        let stats = self.stats.clone();
        Some(Arc::new(move || {
            let stats = stats.lock();
            let mut totals = stats.retired.plus(&stats.current);
            totals.aborts = stats.aborts;
            totals.hangs = stats.hangs;
            totals
        }))
    }

    /// The worker's status, shared with whoever holds it.
    pub fn status(&self) -> Arc<WorkerStatus> {
        self.status.clone()
    }

    fn absorb(&mut self, report: &WorkerReport) {
        self.device_breaker = match report.breaker.as_str() {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        };
        if let Some(metrics) = &report.metrics {
            if let Ok(families) = serde_json::from_value::<Vec<FamilyWire>>(metrics.clone()) {
                self.forwarded.update(families);
            }
        }
        let mut stats = self.stats.lock();
        stats.current.injected = report.injected.clone();
        stats.current.reclaims = report.reclaims;
    }

    /// Kills what is left of the worker and reaps it; returns why it ended (`exit` or
    /// `signal`) with its status.
    fn bury(&mut self) -> (&'static str, String) {
        self.metrics.up.set(0);
        self.status.set_pid(None);
        self.forwarded.retire();
        {
            let mut stats = self.stats.lock();
            let current = std::mem::take(&mut stats.current);
            stats.retired = stats.retired.plus(&current);
        }
        let Some(mut live) = self.live.take() else {
            return ("exit", "no worker was running".into());
        };
        let _ = live.writer.shutdown(std::net::Shutdown::Both);
        // It may still be finishing its exit: give it a moment before the kill.
        let deadline = Instant::now() + Duration::from_millis(100);
        let status = loop {
            match live.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
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
        let (how, status) = self.bury();
        let reason = if reason == "exit" { how } else { reason };
        self.replace = Some(reason);
        self.died_at.get_or_insert_with(Instant::now);
        self.last_death = Some(Instant::now());
        status
    }

    /// Sends `message` and waits up to `timeout` for the answer with the same id, counting the
    /// injected-fault notices that arrive first.
    fn ask(&mut self, message: &ToWorker, id: u64, timeout: Duration) -> Result<FromWorker, Death> {
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
            let live = self.live.as_mut().expect("checked above");
            let _ = live.reader.get_ref().set_read_timeout(Some(left));
            match FromWorker::read(&mut live.reader) {
                Ok(FromWorker::Injected { kind }) => {
                    let mut stats = self.stats.lock();
                    match kind.as_str() {
                        "abort" => stats.aborts += 1,
                        "hang" => stats.hangs += 1,
                        _ => {}
                    }
                }
                Ok(reply) => {
                    let matches = match &reply {
                        FromWorker::StepDone { id: r, .. }
                        | FromWorker::StepFailed { id: r, .. }
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
        StepFailure {
            class: Recovery::Reset,
            reason: reason.into(),
            what: "worker process".into(),
            op: None,
            code: None,
            error: format!("worker_{reason}"),
            message: format!("{} ({status})", death.message),
            attempts: Vec::new(),
            worker: true,
        }
    }

    /// The failure for an answer that is not the one asked for (or no answer at all).
    fn unexpected(&mut self, answer: Result<FromWorker, Death>, inputs: usize) -> StepFailure {
        let death = answer.map_or_else(
            |death| death,
            |other| Death::exit(format!("unexpected answer {other:?}")),
        );
        self.worker_failure(death, inputs)
    }

    /// Starts a worker and waits for it to load the model.
    fn spawn(&mut self) -> Result<(), StepFailure> {
        let fail = |message: String| StepFailure {
            class: Recovery::Reset,
            reason: "exit".into(),
            what: "worker process".into(),
            op: None,
            code: None,
            error: "worker_start".into(),
            message,
            attempts: Vec::new(),
            worker: true,
        };
        let program = match &self.worker.program {
            Some(program) => program.clone(),
            None => std::env::current_exe()
                .map_err(|e| fail(io_failure("could not find this program", &e)))?,
        };
        let child = Command::new(&program)
            .args(&self.worker.args)
            .env(SOCKET_ENV, &self.socket)
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
                return Err(fail(message));
            }
        };
        // Wait for it to connect.
        let deadline = Instant::now() + self.worker.start_timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(fail(format!(
                            "the worker program {} {status} before connecting",
                            program.display()
                        )));
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(fail(format!(
                            "the worker did not connect within {:?}",
                            self.worker.start_timeout
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(io_failure(
                        "could not accept the worker's connection",
                        &e,
                    )));
                }
            }
        };
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.try_clone());
        let reader = match setup {
            Ok(reader) => BufReader::new(reader),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(io_failure(
                    "could not set up the worker's connection",
                    &e,
                )));
            }
        };
        self.live = Some(Live {
            child,
            writer: stream,
            reader,
        });
        let start = ToWorker::Start(self.start.clone());
        // `Start` has no id: its answer is `Ready` or `StartFailed`.
        let answer = self.ask_start(&start);
        match answer {
            Ok(ready) => {
                self.device = ready;
                self.status.set_pid(self.worker_pid());
                if let Some(died) = self.last_death.take() {
                    self.status
                        .restarts
                        .lock()
                        .push(died.elapsed().as_secs_f64());
                }
                self.start.incarnation += 1;
                self.replace = None;
                self.metrics.up.set(1);
                Ok(())
            }
            Err(message) => {
                let (_, status) = self.bury();
                self.start.incarnation += 1;
                Err(fail(format!("{message} ({status})")))
            }
        }
    }

    fn ask_start(&mut self, start: &ToWorker) -> Result<DeviceInfo, String> {
        let timeout = self.worker.start_timeout;
        let live = self.live.as_mut().ok_or("no worker")?;
        start
            .write(&mut live.writer)
            .map_err(|e| format!("could not start the worker: {e}"))?;
        let _ = live.reader.get_ref().set_read_timeout(Some(timeout));
        loop {
            match FromWorker::read(&mut live.reader) {
                Ok(FromWorker::Ready(ready)) => {
                    return Ok(DeviceInfo {
                        backend: if ready.backend == "hip" { "hip" } else { "cpu" },
                        device: ready.device,
                        name: format!("{} (worker process {})", ready.name, ready.pid),
                        arch: ready.arch,
                        total_memory: ready.total_memory,
                        compute_units: ready.compute_units,
                    })
                }
                Ok(FromWorker::StartFailed { message }) => {
                    return Err(format!("the worker could not start: {message}"))
                }
                Ok(FromWorker::Injected { kind }) => {
                    let mut stats = self.stats.lock();
                    if kind == "abort" {
                        stats.aborts += 1;
                    } else if kind == "hang" {
                        stats.hangs += 1;
                    }
                }
                Ok(other) => return Err(format!("the worker sent {other:?} instead of Ready")),
                Err(e) => return Err(format!("the worker died while starting: {e}")),
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
            return Err(StepFailure::fatal("worker process", message.clone()));
        }
        let now = Instant::now();
        if !self.breaker.allows(now) {
            // Reset-class, so the engine tries to recover (and, while the breaker holds, fails
            // to, and reports itself unhealthy): the inputs are not at fault.
            return Err(StepFailure {
                class: Recovery::Reset,
                reason: "crash_loop".into(),
                what: "worker process".into(),
                op: None,
                code: None,
                error: "worker_crash_loop".into(),
                message: format!(
                    "the worker process was restarted {} times within {:?}: it is crash-looping, \
                     so no more restarts until the window passes",
                    self.breaker.max_restarts(),
                    self.breaker.window()
                ),
                attempts: Vec::new(),
                worker: true,
            });
        }
        let delay = self
            .worker
            .restart_delay
            .saturating_mul(2u32.saturating_pow(self.consecutive_restarts.min(20)))
            .min(self.worker.max_restart_delay);
        self.consecutive_restarts += 1;
        std::thread::sleep(delay);
        self.breaker.record(Instant::now());
        self.metrics.restarts.with_label_values(&[reason]).inc();
        tracing::warn!(reason, "restarting the worker process");
        self.spawn()
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
    fn run(&mut self, batch: &[Encoding]) -> Result<StepOutput, StepFailure> {
        self.ensure_live()?;
        let id = self.next_id();
        let message = ToWorker::Step {
            id,
            inputs: batch.to_vec(),
        };
        match self.ask(&message, id, self.worker.step_timeout) {
            Ok(FromWorker::StepDone {
                embeddings, report, ..
            }) => {
                self.absorb(&report);
                self.consecutive_restarts = 0;
                if let Some(died) = self.died_at.take() {
                    let seconds = died.elapsed().as_secs_f64();
                    self.metrics.recovery_seconds.observe(seconds);
                    self.status.recoveries.lock().push(seconds);
                }
                Ok(StepOutput {
                    embeddings,
                    recovered: report.recovered,
                })
            }
            Ok(FromWorker::StepFailed {
                failure, report, ..
            }) => {
                self.absorb(&report);
                if failure.class == Recovery::Reset {
                    // A poisoned context does not heal in the same process: replace it.
                    tracing::warn!(
                        reason = "sticky_error",
                        inputs = batch.len(),
                        "the worker process reported a poisoned context ({}); restarting it \
                         and replaying its {} input(s)",
                        failure.message,
                        batch.len()
                    );
                    self.replace = Some("sticky_error");
                    self.died_at.get_or_insert_with(Instant::now);
                    self.last_death = Some(Instant::now());
                }
                Err(failure)
            }
            answer => Err(self.unexpected(answer, batch.len())),
        }
    }

    fn recover(&mut self) -> Result<(), StepFailure> {
        if self.live.is_none() || self.replace.is_some() {
            return self.respawn();
        }
        let id = self.next_id();
        match self.ask(&ToWorker::Recover { id }, id, self.worker.start_timeout) {
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
                self.replace = Some("sticky_error");
                Err(failure)
            }
            answer => Err(self.unexpected(answer, 0)),
        }
    }

    fn probe(&mut self) -> Result<(), StepFailure> {
        self.ensure_live()?;
        let id = self.next_id();
        match self.ask(&ToWorker::Probe { id }, id, self.worker.step_timeout) {
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

impl Drop for Supervisor {
    /// Asks the worker to exit, then makes sure it did: no worker outlives its engine.
    fn drop(&mut self) {
        if let Some(live) = self.live.as_mut() {
            let _ = ToWorker::Shutdown.write(&mut live.writer);
        }
        self.bury();
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
