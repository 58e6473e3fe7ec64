//! `InferenceEngine`: the library's front door. Cheap to clone, `Send + Sync`; `embed` blocks,
//! `embed_async` awaits. Requests are tokenized on the caller's side (in tokio's blocking pool
//! for the async call), queued, batched, and run by one dedicated step thread, so no retry or
//! device wait ever blocks an async runtime thread.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::Registry;

use crate::backend::{Backend, DeviceInfo};
use crate::error::{ConfigError, HipError};
use crate::isolation::{Isolation, Supervisor, WorkerStatus};
use crate::model::{Encoding, Model};
use crate::retry::{BreakerState, Clock, RetryPolicy, RetryState, SystemClock};

use super::config::EngineConfig;
use super::error::EngineError;
use super::local::{local_runner, FaultCounter, FaultTotals};
use super::metrics::EngineMetrics;
use super::queue::{Entry, Limits, Queue};
use super::request::{EmbedRequest, EmbedResponse, Permit, Reply, RequestState, Submission};
use super::runner::{InProcess, StepRunner};
use super::worker::{Worker, WorkerHealth};

/// How long a successful step vouches for the device's health before a probe is run.
const HEALTH_FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a health check waits for its probe (the worker may be in a long step).
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine's answer to "can you serve?".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub ready: bool,
    /// The device's circuit breaker: `closed`, `half_open` or `open`.
    pub breaker: &'static str,
    /// Why it is not ready.
    pub reason: Option<String>,
}

/// An inference engine: a model on a backend, a batching queue and a step worker.
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
    max_input_length: usize,
    queue: Arc<Queue>,
    metrics: EngineMetrics,
    registry: Registry,
    retry_state: RetryState,
    in_flight: Arc<AtomicUsize>,
    health: Arc<WorkerHealth>,
    faults: Option<FaultCounter>,
    worker_status: Option<Arc<WorkerStatus>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle gone: answer what is queued, then stop the worker.
    fn drop(&mut self) {
        self.queue.close();
        if let Some(worker) = self.worker.lock().take() {
            let _ = worker.join();
        }
    }
}

/// What an engine is assembled from, before its worker starts.
pub struct EngineParts {
    pub config: EngineConfig,
    pub model: Arc<Model>,
    pub runner: Box<dyn StepRunner>,
    pub registry: Registry,
    pub retry_state: RetryState,
    pub clock: Arc<dyn Clock>,
    /// Reads the runner's injected-fault counters, when it injects faults.
    pub faults: Option<FaultCounter>,
    /// The worker process's status, with subprocess isolation.
    pub worker: Option<Arc<WorkerStatus>>,
}

impl std::fmt::Debug for EngineParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineParts")
            .field("config", &self.config)
            .field("device", &self.runner.device())
            .finish_non_exhaustive()
    }
}

impl InferenceEngine {
    /// Loads the model folder and opens the backend the configuration names — in this
    /// process, or (with `isolation: subprocess`) in a supervised worker process.
    pub fn new(config: EngineConfig) -> Result<InferenceEngine, EngineError> {
        config.validate()?;
        let model = Arc::new(Model::load(&config.model)?);
        let registry = config.registry.clone().unwrap_or_default();
        let (runner, faults, retry_state, worker): (Box<dyn StepRunner>, _, _, _) =
            match config.isolation {
                Isolation::InProcess => {
                    let retry_state = retry_state(&config, &registry)?;
                    let (runner, faults) =
                        local_runner(&config, model.clone(), retry_state.clone(), 0, None)?;
                    (runner, faults, retry_state, None)
                }
                Isolation::Subprocess => {
                    // The device calls (and their retry metrics) are the worker's; the supervisor
                    // serves the worker's metrics in its registry.
                    let retry_state = RetryState::builder()
                        .without_metrics()
                        .build()
                        .map_err(|e| EngineError::Backend(e.to_string()))?;
                    let supervisor = Supervisor::start(&config, &registry)?;
                    let faults = supervisor.fault_counter();
                    let status = supervisor.status();
                    (Box::new(supervisor), faults, retry_state, Some(status))
                }
            };
        Self::start(EngineParts {
            config,
            model,
            runner,
            registry,
            retry_state,
            clock: Arc::new(SystemClock::new()),
            faults,
            worker,
        })
    }

    /// Loads the model folder and runs it in this process on `backend` (any backend: a
    /// `FaultyBackend` in tests, say); every device call goes through the retry layer.
    pub fn with_backend<B: Backend<Error = HipError> + 'static>(
        config: EngineConfig,
        backend: B,
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
        let retry_state = retry_state(&config, &registry)?;
        let policy = Arc::new(RetryPolicy::new(config.retry.clone())?);
        let attempts = config.step_replay.max_recovery_attempts;
        let runner = InProcess::new(
            model.clone(),
            backend,
            policy,
            retry_state.clone(),
            attempts,
        )?;
        Self::start(EngineParts {
            config,
            model,
            runner: Box::new(runner),
            registry,
            retry_state,
            clock: Arc::new(SystemClock::new()),
            faults: None,
            worker: None,
        })
    }

    /// Starts an engine on a runner of the caller's.
    pub fn start(parts: EngineParts) -> Result<InferenceEngine, EngineError> {
        let EngineParts {
            config,
            model,
            runner,
            registry,
            retry_state,
            clock,
            faults,
            worker: worker_status,
        } = parts;
        config.validate()?;
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
        let queue = Arc::new(Queue::default());
        let health = Arc::new(WorkerHealth::default());
        let device = runner.device();
        let worker = Worker {
            runner,
            queue: queue.clone(),
            limits: Limits {
                max_batch_tokens: config.batching.max_batch_tokens,
                max_batch_requests: config.batching.max_batch_requests.unwrap_or(usize::MAX),
            },
            replay: config.step_replay.clone(),
            metrics: metrics.clone(),
            clock,
            health: health.clone(),
            replays: Default::default(),
            consecutive_failures: 0,
        };
        let handle = std::thread::Builder::new()
            .name("hipinfer-steps".into())
            .spawn(move || worker.run())
            .map_err(|e| EngineError::Backend(format!("could not start the step thread: {e}")))?;
        Ok(InferenceEngine {
            inner: Arc::new(Inner {
                config,
                model,
                device,
                max_input_length,
                queue,
                metrics,
                registry,
                retry_state,
                in_flight: Arc::new(AtomicUsize::new(0)),
                health,
                faults,
                worker_status,
                worker: Mutex::new(Some(handle)),
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.inner.model
    }

    /// The device steps run on.
    pub fn device(&self) -> &DeviceInfo {
        &self.inner.device
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
        &self.inner.metrics
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
        self.inner
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
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
        rx.recv().unwrap_or_else(|_| Err(worker_gone()))
    }

    /// Runs `request` without blocking the async runtime: tokenization runs in tokio's blocking
    /// pool, the step on the engine's own thread.
    pub async fn embed_async(&self, request: EmbedRequest) -> Result<EmbedResponse, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.submit(request, Reply::Async(tx)))
            .await
            .map_err(|e| EngineError::Unhealthy {
                reason: format!("the tokenization task failed: {e}"),
            })??;
        rx.await.unwrap_or_else(|_| Err(worker_gone()))
    }

    /// Tokenizes `texts` as the engine would, without embedding (for `/tokenize`).
    pub fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        truncate: bool,
    ) -> Result<Vec<Encoding>, EngineError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.encode(i, t.as_ref(), truncate))
            .collect()
    }

    /// Checks, tokenizes and queues a request; its answer arrives through `reply`.
    fn submit(&self, request: EmbedRequest, reply: Reply) -> Result<(), EngineError> {
        let inner = &*self.inner;
        let metrics = &inner.metrics;
        metrics.requests.inc();
        let submitted = Instant::now();
        let refuse = |error: EngineError| {
            metrics.failed(error.kind());
            Err(error)
        };
        if request.inputs.is_empty() {
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
        if inner.queue.is_closed() {
            return refuse(EngineError::ShuttingDown);
        }
        if let Some(reason) = inner.health.unhealthy.lock().clone() {
            return refuse(EngineError::Unhealthy { reason });
        }
        let max = inner.config.batching.max_concurrent_requests;
        let Some(permit) = Permit::try_acquire(&inner.in_flight, max, &metrics.in_flight) else {
            return refuse(EngineError::Overloaded { limit: max });
        };
        let encodings = match request
            .inputs
            .iter()
            .enumerate()
            .map(|(i, text)| self.encode(i, text, request.truncate))
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
            inputs: encodings.len(),
            normalize: request.normalize,
            submitted,
            deadline: inner.config.request_deadline,
            tokenization,
            input_tokens: encodings.iter().map(|e| e.ids.len()).collect(),
            reply,
            permit,
            metrics: metrics.clone(),
        }));
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
        if !inner.queue.push(entries) {
            state.fail(|_| EngineError::ShuttingDown);
            return Ok(());
        }
        metrics.queue_size.set(inner.queue.len() as i64);
        Ok(())
    }

    /// One input, tokenized and held to `max_input_length`.
    fn encode(&self, index: usize, text: &str, truncate: bool) -> Result<Encoding, EngineError> {
        let max = self.inner.max_input_length;
        let (mut encoding, truncated) = self
            .inner
            .model
            .tokenizer()?
            .encode_noting_truncation(index, text)
            .map_err(|e| EngineError::Validation {
                index: Some(index),
                message: e.to_string(),
            })?;
        let too_long = truncated || encoding.ids.len() > max;
        if too_long && !truncate {
            return Err(EngineError::Validation {
                index: Some(index),
                message: format!(
                    "input {index} is longer than max_input_length {max} tokens and truncate is false"
                ),
            });
        }
        if encoding.ids.len() > max {
            // Keep [CLS], the first tokens and the closing [SEP], as the tokenizer truncates.
            let keep = max - 1;
            let last = encoding.ids.len() - 1;
            encoding.ids.swap(keep, last);
            encoding.ids.truncate(max);
            encoding.type_ids.swap(keep, last);
            encoding.type_ids.truncate(max);
        }
        Ok(encoding)
    }

    /// Whether the engine can serve: a step succeeded within the last second, or a probe kernel
    /// on the device (run between steps) answers right. Blocks up to a few seconds.
    pub fn health(&self) -> Health {
        let breaker = *self.inner.health.breaker.lock();
        let answer = |ready: bool, reason: Option<String>| Health {
            ready,
            breaker: breaker_name(breaker),
            reason,
        };
        if let Some(reason) = self.inner.health.unhealthy.lock().clone() {
            return answer(false, Some(reason));
        }
        if self.inner.queue.is_closed() {
            return answer(false, Some("shutting down".into()));
        }
        if breaker == BreakerState::Open {
            return answer(false, Some("the device's circuit breaker is open".into()));
        }
        let fresh = self
            .inner
            .health
            .last_success
            .lock()
            .is_some_and(|at| at.elapsed() < HEALTH_FRESH_FOR);
        if fresh {
            return answer(true, None);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if !self.inner.queue.push_probe(tx) {
            return answer(false, Some("shutting down".into()));
        }
        match rx.recv_timeout(HEALTH_PROBE_TIMEOUT) {
            Ok(Ok(())) => answer(true, None),
            Ok(Err(reason)) => answer(false, Some(reason)),
            Err(_) => answer(
                false,
                Some(format!(
                    "the health probe got no answer within {HEALTH_PROBE_TIMEOUT:?}"
                )),
            ),
        }
    }

    /// [`InferenceEngine::health`] without blocking the async runtime.
    pub async fn health_async(&self) -> Health {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.health())
            .await
            .unwrap_or_else(|e| Health {
                ready: false,
                breaker: "unknown",
                reason: Some(format!("the health check failed: {e}")),
            })
    }

    /// Stops taking requests, answers every queued one, and waits for the step thread to end.
    /// Later calls return at once; requests after it get `ShuttingDown`.
    pub fn shutdown(&self) {
        self.inner.queue.close();
        let worker = self.inner.worker.lock().take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }

    /// [`InferenceEngine::shutdown`] without blocking the async runtime.
    pub async fn shutdown_async(&self) {
        let engine = self.clone();
        let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    }
}

fn worker_gone() -> EngineError {
    EngineError::Unhealthy {
        reason: "the step thread stopped before answering".into(),
    }
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Open => "open",
    }
}

/// The retry layer's shared state for an engine, its metrics in `registry`.
pub fn retry_state(config: &EngineConfig, registry: &Registry) -> Result<RetryState, EngineError> {
    let mut builder = RetryState::builder()
        .registry(registry.clone())
        .breaker(config.breaker.clone())
        .budget(config.budget.clone())
        .device(config.device);
    if let Some(seed) = config.seed {
        builder = builder.seed(seed);
    }
    builder
        .build()
        .map_err(|e| EngineError::Backend(format!("could not set up the retry layer: {e}")))
}
