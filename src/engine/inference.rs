//! `InferenceEngine`: the library's front door. Cheap to clone, `Send + Sync`; `embed` blocks,
//! `embed_async` awaits. Requests are tokenized on the caller's side (in tokio's blocking pool
//! for the async call), queued, batched, and run by one dedicated step thread, so no retry or
//! device wait ever blocks an async runtime thread. A watchdog thread holds the step and
//! request deadlines (see `shared.rs`).

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::Registry;

use crate::backend::{self, Backend, DeviceInfo};
use crate::error::{ConfigError, HipError};
use crate::isolation::{Isolation, SupervisorFactory, WorkerStatus};
use crate::model::{Encoding, LongInput, Model, Token, Truncation};
use crate::retry::{Events, RetryPolicy, RetryState};
use crate::step::{
    self, FaultCounter, FaultTotals, LocalRunners, RunnerFactory, StepFailure, StepRunner, Upload,
};

use super::config::{EngineConfig, Fallback};
use super::error::EngineError;
use super::health::{EngineHealth, Health, Verdict};
use super::metrics::EngineMetrics;
use super::queue::{Entry, Limits, Queue};
use super::request::{EmbedRequest, EmbedResponse, Permit, Reply, RequestState, Submission};
use super::runners::{cpu_fallback, BackendFactory, GivenBackend};
use super::shared::{Shared, SharedParts};

/// With subprocess isolation the supervisor enforces the step deadline itself; the engine's
/// watchdog only catches a supervisor stuck longer than a step and a worker start together.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(5);

/// The answer to "is this process alive?" (`/livez`): no device work, never queued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Liveness {
    pub alive: bool,
    /// `running` (idle or in a step, however long), or `stopped`.
    pub step_thread: &'static str,
}

/// An inference engine: a model on a backend, a batching queue, a step thread and a watchdog.
#[derive(Clone)]
pub struct InferenceEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InferenceEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceEngine")
            .field("model", &self.inner.model.name())
            .field("device", &self.inner.device)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: EngineConfig,
    model: Arc<Model>,
    device: DeviceInfo,
    isolation: Isolation,
    max_input_length: usize,
    shared: Arc<Shared>,
    registry: Registry,
    retry_state: RetryState,
    in_flight: Arc<AtomicUsize>,
    next_id: AtomicU64,
    faults: Option<FaultCounter>,
    worker_status: Option<Arc<WorkerStatus>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle gone: answer what is queued, then stop the threads.
    fn drop(&mut self) {
        self.shared.queue.close();
        self.shared.wait_step_thread(None);
        self.shared.stop_watchdog();
        if let Some(watchdog) = self.watchdog.lock().take() {
            let _ = watchdog.join();
        }
    }
}

/// What an engine is started from.
struct StartParts {
    config: EngineConfig,
    model: Arc<Model>,
    isolation: Isolation,
    factory: Arc<dyn RunnerFactory>,
    /// The first runner, or why it could not start.
    primary: Result<Box<dyn StepRunner>, StepFailure>,
    fallback: Option<Arc<dyn RunnerFactory>>,
    registry: Registry,
    retry_state: RetryState,
    events: Events,
    faults: Option<FaultCounter>,
    worker_status: Option<Arc<WorkerStatus>>,
    primary_backend: String,
}

fn backend_error(failure: StepFailure) -> EngineError {
    EngineError::Backend(failure.message)
}

impl InferenceEngine {
    /// Loads the model folder and opens the backend the configuration names — in this
    /// process, or in a supervised worker process (`isolation: subprocess`, the default on a
    /// GPU).
    pub fn new(config: EngineConfig) -> Result<InferenceEngine, EngineError> {
        config.validate()?;
        let model = Arc::new(Model::load(&config.model)?);
        let registry = config.registry.clone().unwrap_or_default();
        let gpu = backend::is_gpu(config.backend, config.device);
        let isolation = config.isolation.resolve(gpu);
        if gpu && isolation == Isolation::InProcess {
            warn_in_process_gpu();
        }
        if isolation == Isolation::InProcess && config.faults.as_ref().is_some_and(|p| p.aborts()) {
            return Err(ConfigError::new(
                "isolation",
                "injected aborts take the process down: they need subprocess isolation",
            )
            .into());
        }
        let spec = config.runner_spec();
        let fallback = |state: &RetryState| -> Option<Arc<dyn RunnerFactory>> {
            (config.fallback == Fallback::Cpu)
                .then(|| Arc::new(cpu_fallback(&spec, model.clone(), state)) as _)
        };
        let parts = match isolation {
            Isolation::Subprocess => {
                // The device calls (and their retry metrics) are the worker's; the supervisor
                // serves the worker's metrics in its registry.
                let retry_state = RetryState::builder()
                    .without_metrics()
                    .build()
                    .map_err(|e| EngineError::Backend(e.to_string()))?;
                let events = Events::open(config.events.as_deref())
                    .map_err(|e| events_error(config.events.as_deref(), &e))?;
                let supervisors = SupervisorFactory::new(
                    &spec,
                    config.faults.as_ref(),
                    &config.worker,
                    config.step_timeout,
                    &registry,
                    events.clone(),
                )
                .map_err(|e| match e {
                    crate::isolation::SupervisorError::Config(e) => EngineError::Config(e),
                    other => EngineError::Backend(other.to_string()),
                })?;
                let primary = supervisors
                    .supervise()
                    .map(|s| Box::new(s) as Box<dyn StepRunner>)
                    .map_err(|e| StepFailure::fatal("backend", e.to_string()));
                if let Err(failure) = &primary {
                    if config.fallback == Fallback::None {
                        return Err(EngineError::Backend(failure.message.clone()));
                    }
                }
                StartParts {
                    fallback: fallback(&retry_state),
                    faults: supervisors.fault_counter(),
                    worker_status: Some(supervisors.status()),
                    factory: Arc::new(supervisors),
                    primary,
                    config: config.clone(),
                    model: model.clone(),
                    isolation,
                    registry,
                    retry_state,
                    events,
                    primary_backend: format!("{} (worker process)", config.backend),
                }
            }
            Isolation::InProcess | Isolation::Auto => {
                let retry_state =
                    step::retry_state(&spec, &registry).map_err(EngineError::Backend)?;
                let runners = LocalRunners::new(
                    spec.clone(),
                    config.faults.clone(),
                    model.clone(),
                    retry_state.clone(),
                );
                let primary = runners.make();
                if let Err(failure) = &primary {
                    let device_fault = failure.class != crate::error::Recovery::Fatal;
                    if config.fallback == Fallback::None || !device_fault {
                        return Err(backend_error(failure.clone()));
                    }
                }
                StartParts {
                    fallback: fallback(&retry_state),
                    faults: runners.fault_counter(),
                    worker_status: None,
                    events: retry_state.events().clone(),
                    factory: Arc::new(runners),
                    primary,
                    config: config.clone(),
                    model: model.clone(),
                    isolation: Isolation::InProcess,
                    registry,
                    retry_state,
                    primary_backend: config.backend.to_string(),
                }
            }
        };
        Self::start(parts)
    }

    /// Loads the model folder and runs it in this process on `backend` (any backend: a
    /// `FaultyBackend` in tests, say); every device call goes through the retry layer. Such a
    /// backend cannot be replaced: after a hang or a lost context the engine needs
    /// `fallback: cpu`, or use [`InferenceEngine::with_backend_factory`].
    pub fn with_backend<B: Backend<Error = HipError> + 'static>(
        config: EngineConfig,
        backend: B,
    ) -> Result<InferenceEngine, EngineError> {
        let backend = Mutex::new(Some(backend));
        Self::in_process_with(config, move |model, policy, state, upload| {
            let backend = backend.lock().take().ok_or_else(|| {
                StepFailure::fatal("backend", "the backend was handed over already")
            })?;
            let given = GivenBackend::new(model, backend, policy, state, upload)?;
            let first = given.make()?;
            Ok((Arc::new(given) as Arc<dyn RunnerFactory>, first))
        })
    }

    /// Like [`InferenceEngine::with_backend`], with a factory of backends: the engine makes a
    /// fresh one when a step hangs past its deadline or a context is lost for good.
    pub fn with_backend_factory<B, F>(
        config: EngineConfig,
        make: F,
    ) -> Result<InferenceEngine, EngineError>
    where
        B: Backend<Error = HipError> + 'static,
        F: Fn() -> Result<B, HipError> + Send + Sync + 'static,
    {
        let make = Mutex::new(Some(make));
        Self::in_process_with(config, move |model, policy, state, upload| {
            let make = make.lock().take().ok_or_else(|| {
                StepFailure::fatal("backend", "the factory was handed over already")
            })?;
            let factory = BackendFactory {
                make,
                model,
                policy,
                state,
                upload,
            };
            let first = factory.make()?;
            Ok((Arc::new(factory) as Arc<dyn RunnerFactory>, first))
        })
    }

    /// An in-process engine on the runners `build` makes.
    fn in_process_with(
        config: EngineConfig,
        build: impl FnOnce(
            Arc<Model>,
            Arc<RetryPolicy>,
            RetryState,
            Upload,
        )
            -> Result<(Arc<dyn RunnerFactory>, Box<dyn StepRunner>), StepFailure>,
    ) -> Result<InferenceEngine, EngineError> {
        config.validate()?;
        if config.isolation == Isolation::Subprocess {
            return Err(ConfigError::new(
                "isolation",
                "a backend object cannot move into a worker process: use InferenceEngine::new",
            )
            .into());
        }
        let model = Arc::new(Model::load(&config.model)?);
        let registry = config.registry.clone().unwrap_or_default();
        let spec = config.runner_spec();
        let retry_state = step::retry_state(&spec, &registry).map_err(EngineError::Backend)?;
        let policy = Arc::new(RetryPolicy::new(config.retry.clone())?);
        let (factory, first) = build(model.clone(), policy, retry_state.clone(), spec.upload())
            .map_err(backend_error)?;
        let fallback = (config.fallback == Fallback::Cpu)
            .then(|| Arc::new(cpu_fallback(&spec, model.clone(), &retry_state)) as _);
        let backend = first.device().backend.to_string();
        Self::start(StartParts {
            config,
            model,
            isolation: Isolation::InProcess,
            factory,
            primary: Ok(first),
            fallback,
            registry,
            events: retry_state.events().clone(),
            retry_state,
            faults: None,
            worker_status: None,
            primary_backend: backend,
        })
    }

    /// Starts the step thread and the watchdog.
    fn start(parts: StartParts) -> Result<InferenceEngine, EngineError> {
        let StartParts {
            config,
            model,
            isolation,
            factory,
            primary,
            fallback,
            registry,
            retry_state,
            events,
            faults,
            worker_status,
            primary_backend,
        } = parts;
        let model_max = model.config().max_seq_length;
        let max_input_length = match config.batching.max_input_length {
            None => model_max.min(config.batching.max_batch_tokens),
            Some(n) if n > model_max => {
                return Err(ConfigError::new(
                    "batching.max_input_length",
                    format!("{n} is more than the model's max_seq_length {model_max}"),
                )
                .into())
            }
            Some(n) => n,
        };
        let metrics = EngineMetrics::register(&registry)
            .map_err(|e| EngineError::Backend(format!("could not register metrics: {e}")))?;
        let (device, first, start_failure) = match primary {
            Ok(runner) => (runner.device(), Some(runner), None),
            Err(failure) => (
                DeviceInfo {
                    backend: "cpu",
                    device: config.device,
                    name: format!("the {primary_backend} device, lost at start"),
                    arch: String::new(),
                    total_memory: 0,
                    compute_units: 0,
                },
                None,
                Some(failure),
            ),
        };
        let step_timeout = match isolation {
            Isolation::Subprocess => config
                .step_timeout
                .saturating_add(config.worker.start_timeout)
                .saturating_add(SUPERVISOR_SLACK),
            _ => config.step_timeout,
        };
        let shared = Shared::new(SharedParts {
            queue: Arc::new(Queue::default()),
            health: Arc::new(EngineHealth::new(
                device.backend.to_string(),
                config.health.fresh_for,
            )),
            metrics: metrics.clone(),
            events,
            limits: Limits {
                max_batch_tokens: config.batching.max_batch_tokens,
                max_batch_requests: config.batching.max_batch_requests.unwrap_or(usize::MAX),
            },
            replay: config.step_replay.clone(),
            recovery: config.recovery.clone(),
            step_timeout,
            factory,
            fallback,
            primary_backend,
        });
        if let Some(failure) = &start_failure {
            tracing::warn!(
                "the {} backend could not start ({}); starting on the CPU fallback",
                shared.primary_backend,
                failure.message
            );
        }
        shared
            .spawn_step_thread_starting(0, first, start_failure)
            .map_err(|e| EngineError::Backend(format!("could not start the step thread: {e}")))?;
        let watchdog = shared
            .spawn_watchdog()
            .map_err(|e| EngineError::Backend(format!("could not start the watchdog: {e}")))?;
        Ok(InferenceEngine {
            inner: Arc::new(Inner {
                config,
                model,
                device,
                isolation,
                max_input_length,
                shared,
                registry,
                retry_state,
                in_flight: Arc::new(AtomicUsize::new(0)),
                next_id: AtomicU64::new(1),
                faults,
                worker_status,
                watchdog: Mutex::new(Some(watchdog)),
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.inner.model
    }

    /// The device steps run on (as opened at start).
    pub fn device(&self) -> &DeviceInfo {
        &self.inner.device
    }

    /// Where steps run (`auto` resolved: `in_process` or `subprocess`).
    pub fn isolation(&self) -> Isolation {
        self.inner.isolation
    }

    /// The backend serving now: the device's, or `cpu (fallback)` while degraded.
    pub fn active_backend(&self) -> String {
        self.inner.shared.health.backend()
    }

    /// Time spent serving on the CPU fallback so far.
    pub fn degraded_time(&self) -> Duration {
        self.inner.shared.health.degraded_time()
    }

    /// Tokens per input, special tokens included.
    pub fn max_input_length(&self) -> usize {
        self.inner.max_input_length
    }

    /// The registry with the engine's and the retry layer's metrics.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.inner.shared.metrics
    }

    /// The retry layer's shared state (breaker, budget, metrics).
    pub fn retry_state(&self) -> &RetryState {
        &self.inner.retry_state
    }

    /// Faults injected so far, when the configuration injects faults (`config.faults`).
    pub fn fault_totals(&self) -> Option<FaultTotals> {
        self.inner.faults.as_ref().map(|read| read())
    }

    /// The worker process (with subprocess isolation): its pid, its recovery times.
    pub fn worker_status(&self) -> Option<&Arc<WorkerStatus>> {
        self.inner.worker_status.as_ref()
    }

    /// Requests accepted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Embeds `texts` (normalised, truncated as needed), blocking until the answer. Call it
    /// from ordinary threads; in async code use [`InferenceEngine::embed_async`].
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<EmbedResponse, EngineError> {
        self.embed_request(EmbedRequest::new(texts.iter().map(|t| t.as_ref())))
    }

    /// Runs `request`, blocking until the answer.
    pub fn embed_request(&self, request: EmbedRequest) -> Result<EmbedResponse, EngineError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(request, Reply::Blocking(tx))?;
        rx.recv().unwrap_or_else(|_| Err(step_thread_gone()))
    }

    /// Runs `request` without blocking the async runtime: tokenization runs in tokio's blocking
    /// pool, the step on the engine's own thread. Dropping the future cancels the request: its
    /// inputs that have not run yet never reach a step.
    pub async fn embed_async(&self, request: EmbedRequest) -> Result<EmbedResponse, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.submit(request, Reply::Async(tx)))
            .await
            .map_err(|e| EngineError::Unhealthy {
                reason: format!("the tokenization task failed: {e}"),
            })??;
        rx.await.unwrap_or_else(|_| Err(step_thread_gone()))
    }

    /// Tokenizes `texts` as the engine would, without embedding.
    pub fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        truncate: bool,
    ) -> Result<Vec<Encoding>, EngineError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.encode(i, t.as_ref(), truncate, Truncation::Right))
            .collect()
    }

    /// The tokens of each text as `/tokenize` shows them (ids, texts, offsets), held to
    /// `max_input_length` like an embedding request: the same input checks, a slot of
    /// `max_concurrent_requests`, and the work on tokio's blocking pool, never on a runtime
    /// thread.
    pub async fn tokens_async(
        &self,
        texts: Vec<String>,
        add_special_tokens: bool,
    ) -> Result<Vec<Vec<Token>>, EngineError> {
        let inner = &*self.inner;
        let metrics = &inner.shared.metrics;
        metrics.tokenize_requests.inc();
        let refuse = |error: EngineError| {
            metrics.failed(error.kind());
            Err(error)
        };
        if texts.is_empty() || texts.iter().any(|t| is_blank(t)) {
            return refuse(EngineError::EmptyInput);
        }
        let limit = inner.config.batching.max_client_batch_size;
        if texts.len() > limit {
            return refuse(EngineError::Validation {
                index: None,
                message: format!(
                    "{} inputs is more than max_client_batch_size {limit}",
                    texts.len()
                ),
            });
        }
        let max = inner.config.batching.max_concurrent_requests;
        let Some(permit) = Permit::try_acquire(&inner.in_flight, max, &metrics.in_flight) else {
            return refuse(EngineError::Overloaded { limit: max });
        };
        let engine = self.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let tokenizer = engine.inner.model.tokenizer()?;
            texts
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    tokenizer
                        .tokens(index, text)
                        .map(|tokens| {
                            tokens
                                .into_iter()
                                .filter(|t| add_special_tokens || !t.special)
                                .collect()
                        })
                        .map_err(|e| EngineError::Validation {
                            index: Some(index),
                            message: e.to_string(),
                        })
                })
                .collect::<Result<Vec<Vec<Token>>, EngineError>>()
        })
        .await
        .map_err(|e| EngineError::Unhealthy {
            reason: format!("the tokenization task failed: {e}"),
        })?;
        metrics
            .tokenization_duration
            .observe(started.elapsed().as_secs_f64());
        result.or_else(refuse)
    }

    /// Checks, tokenizes and queues a request; its answer arrives through `reply`.
    fn submit(&self, request: EmbedRequest, reply: Reply) -> Result<(), EngineError> {
        let inner = &*self.inner;
        let shared = &inner.shared;
        let metrics = &shared.metrics;
        metrics.requests.inc();
        let submitted = Instant::now();
        let refuse = |error: EngineError| {
            metrics.failed(error.kind());
            Err(error)
        };
        if request.inputs.is_empty() || request.inputs.iter().any(|t| is_blank(t)) {
            return refuse(EngineError::EmptyInput);
        }
        let limit = inner.config.batching.max_client_batch_size;
        if request.inputs.len() > limit {
            return refuse(EngineError::Validation {
                index: None,
                message: format!(
                    "{} inputs is more than max_client_batch_size {limit}",
                    request.inputs.len()
                ),
            });
        }
        if let Some(reason) = shared.health.refusal() {
            return refuse(EngineError::Unhealthy { reason });
        }
        let max = inner.config.batching.max_concurrent_requests;
        let Some(permit) = Permit::try_acquire(&inner.in_flight, max, &metrics.in_flight) else {
            return refuse(EngineError::Overloaded { limit: max });
        };
        let Some(ticket) = shared.queue.admit() else {
            return refuse(EngineError::ShuttingDown);
        };
        let encodings = match request
            .inputs
            .iter()
            .enumerate()
            .map(|(i, text)| self.encode(i, text, request.truncate, request.truncation_direction))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(encodings) => encodings,
            Err(error) => return refuse(error),
        };
        let tokenization = submitted.elapsed();
        metrics
            .tokenization_duration
            .observe(tokenization.as_secs_f64());
        for e in &encodings {
            metrics.input_length.observe(e.ids.len() as f64);
        }
        let state = Arc::new(RequestState::new(Submission {
            id: inner.next_id.fetch_add(1, Ordering::Relaxed),
            inputs: encodings.len(),
            normalize: request.normalize,
            readout: request.readout,
            submitted,
            deadline: inner.config.request_deadline,
            tokenization,
            input_tokens: encodings.iter().map(|e| e.ids.len()).collect(),
            reply,
            permit,
            metrics: metrics.clone(),
        }));
        shared.watch_deadline(&state);
        let entries = encodings
            .into_iter()
            .enumerate()
            .map(|(index, encoding)| Entry {
                request: state.clone(),
                index,
                encoding,
                failures: 0,
                alone_failures: 0,
            })
            .collect();
        ticket.push(entries);
        metrics.queue_size.set(shared.queue.len() as i64);
        Ok(())
    }

    /// One input, tokenized and held to `max_input_length` (the tokenizer never sees more of
    /// it than the tokens kept need: see `model::tokenizer`).
    fn encode(
        &self,
        index: usize,
        text: &str,
        truncate: bool,
        direction: Truncation,
    ) -> Result<Encoding, EngineError> {
        let max = self.inner.max_input_length;
        let long = if truncate {
            LongInput::Truncate(direction)
        } else {
            LongInput::Refuse
        };
        let (encoding, _) = self
            .inner
            .model
            .tokenizer()?
            .encode_within(index, text, max, long)
            .map_err(|e| EngineError::Validation {
                index: Some(index),
                message: match e {
                    crate::model::ModelError::Input { message, .. } if !truncate => format!(
                        "{message}: input {index} is longer than max_input_length {max} tokens \
                         and truncate is false"
                    ),
                    other => other.to_string(),
                },
            })?;
        Ok(encoding)
    }

    /// Whether the process and its step thread are alive: no device work, answered at once,
    /// whatever the step thread is doing.
    pub fn liveness(&self) -> Liveness {
        let alive = self.inner.shared.step_thread_alive();
        Liveness {
            alive,
            step_thread: if alive { "running" } else { "stopped" },
        }
    }

    /// Whether the engine can serve (readiness): a step or probe succeeded within the
    /// freshness window (`health.fresh_for`, and twice the longest recent step), or a step is in
    /// flight since less than that; otherwise a probe kernel on the device decides — one probe
    /// for any number of concurrent callers. Blocks up to a few seconds.
    pub fn health(&self) -> Health {
        let shared = &self.inner.shared;
        shared.metrics.health_checks.inc();
        match shared.health.verdict(
            shared.queue.is_closed(),
            shared.busy_since(),
            shared.step_timeout,
        ) {
            Verdict::Answer(health) => health,
            Verdict::NeedsProbe => {
                let number = self.ask_probe();
                let timeout = self.inner.config.health.probe_timeout;
                let health = shared.health.wait_probe(number, timeout);
                self.after_probe_wait(health)
            }
        }
    }

    /// A probe that timed out waited behind a step that began meanwhile: the verdict again,
    /// which that step may settle.
    fn after_probe_wait(&self, health: Health) -> Health {
        if health.cause != Some(super::health::HealthCause::ProbeTimeout) {
            return health;
        }
        let shared = &self.inner.shared;
        match shared.health.verdict(
            shared.queue.is_closed(),
            shared.busy_since(),
            shared.step_timeout,
        ) {
            Verdict::Answer(answer) => answer,
            Verdict::NeedsProbe => health,
        }
    }

    /// [`InferenceEngine::health`] for async callers: waits without holding any thread.
    pub async fn health_async(&self) -> Health {
        let shared = &self.inner.shared;
        shared.metrics.health_checks.inc();
        match shared.health.verdict(
            shared.queue.is_closed(),
            shared.busy_since(),
            shared.step_timeout,
        ) {
            Verdict::Answer(health) => health,
            Verdict::NeedsProbe => {
                let number = self.ask_probe();
                let timeout = self.inner.config.health.probe_timeout;
                let health = shared.health.wait_probe_async(number, timeout).await;
                self.after_probe_wait(health)
            }
        }
    }

    /// Joins the probe in progress or asks the step thread for one; its number.
    fn ask_probe(&self) -> u64 {
        let shared = &self.inner.shared;
        let (number, started) = shared.health.join_probe();
        if started {
            shared.queue.request_probe();
        }
        number
    }

    /// Stops taking requests, answers every queued one, and waits for the step thread to end.
    /// Later calls return at once; requests after it get `ShuttingDown`.
    pub fn shutdown(&self) {
        self.shutdown_within(None);
    }

    /// Stops taking requests and answers what is queued for up to `grace` (forever when
    /// `None`); after that, every request still waiting or in its step is answered with
    /// `ShuttingDown`. Returns whether the queue drained within the grace period.
    pub fn shutdown_within(&self, grace: Option<Duration>) -> bool {
        let shared = &self.inner.shared;
        shared.queue.close();
        let drained = shared.wait_step_thread(grace);
        if !drained {
            tracing::warn!(
                "the drain's grace period ({grace:?}) is over: answering what is left with 503"
            );
            shared.abort_remaining();
        }
        drained
    }

    /// [`InferenceEngine::shutdown`] without blocking the async runtime.
    pub async fn shutdown_async(&self) {
        self.shutdown_within_async(None).await;
    }

    /// [`InferenceEngine::shutdown_within`] without blocking the async runtime.
    pub async fn shutdown_within_async(&self, grace: Option<Duration>) -> bool {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.shutdown_within(grace))
            .await
            .unwrap_or(false)
    }
}

/// Whether `text` holds nothing to embed: empty, whitespace, or zero-width characters only.
fn is_blank(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_whitespace()
            || matches!(
                c,
                '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
            )
    })
}

fn step_thread_gone() -> EngineError {
    EngineError::Unhealthy {
        reason: "the step thread stopped before answering".into(),
    }
}

fn events_error(path: Option<&std::path::Path>, error: &std::io::Error) -> EngineError {
    ConfigError::new(
        "events",
        format!(
            "{} cannot be opened for appending: {error}",
            path.map_or_else(String::new, |p| p.display().to_string())
        ),
    )
    .into()
}

/// Says once per process what in-process isolation on a GPU risks.
fn warn_in_process_gpu() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "isolation is in_process on a GPU: one GPU memory fault poisons (ROCm >= 6, CUDA) or \
             aborts (ROCm 5) this whole process; isolation subprocess survives it"
        )
    });
}
