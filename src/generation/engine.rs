//! [`GenerationEngine`]: the handle — admission (validation, the KV-cache budget, the waiting
//! queue) on the caller's thread, everything else on the scheduler thread.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use prometheus::Registry;

use crate::backend::DeviceInfo;
use crate::llm::{validate_request, GenerateRequest, LanguageModel, LlmError};

use super::request::{GenerationError, GenerationStream};
use super::scheduler::{Scheduler, Submission};
use super::{GenerationConfig, GenerationMetrics};
use crate::isolation::{SupervisorFactory, WorkerConfig};
use crate::step::{DecodeRunner, DecoderSpec, LocalDecoders, RunnerMaker, StepFailure};

pub(super) struct Inbox {
    pub queue: VecDeque<Submission>,
    pub closed: bool,
}

/// Whether the engine serves, and on what.
#[derive(Debug, Clone)]
struct HealthState {
    ready: bool,
    reason: Option<String>,
    device: Option<DeviceInfo>,
}

/// What the handle and the scheduler thread share.
pub(super) struct Shared {
    pub inbox: Mutex<Inbox>,
    pub wake: Condvar,
    /// KV-cache rows (token positions) in all.
    pub budget: usize,
    reserved: AtomicUsize,
    health: Mutex<HealthState>,
    pub metrics: GenerationMetrics,
    alive: AtomicBool,
}

impl Shared {
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Gives back a sequence's reservation.
    pub fn release(&self, rows: usize) {
        self.reserved.fetch_sub(rows, Ordering::Relaxed);
    }

    pub fn set_health(&self, ready: bool, reason: Option<String>, device: Option<DeviceInfo>) {
        let mut health = self.health.lock();
        health.ready = ready;
        health.reason = reason;
        if device.is_some() {
            health.device = device;
        }
    }
}

/// Marks the scheduler gone when its thread ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
        let reason = if std::thread::panicking() {
            "the scheduler thread panicked"
        } else {
            "the engine stopped"
        };
        self.0.set_health(false, Some(reason.into()), None);
    }
}

/// The health of a generation engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationHealth {
    /// Requests are served.
    pub ready: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The scheduler thread runs.
    pub alive: bool,
}

/// A language model served to many clients at once (see the module docs).
#[derive(Clone)]
pub struct GenerationEngine {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LanguageModel>,
    config: GenerationConfig,
    shared: Arc<Shared>,
    registry: Registry,
    next_id: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The last handle gone: the scheduler finishes what is live and ends on its own (not
/// waited for here: a step hung on the device must not hang whoever drops the engine).
impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.inbox.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl std::fmt::Debug for GenerationEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationEngine")
            .field("model", &self.inner.model.path())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl GenerationEngine {
    /// Serves `model` on runners of `maker` (the first made now: a model that cannot be put on
    /// the device is an error here), its metrics in `registry`.
    pub fn start(
        model: Arc<LanguageModel>,
        config: GenerationConfig,
        registry: Registry,
        maker: impl FnOnce(usize) -> RunnerMaker,
    ) -> Result<GenerationEngine, GenerationError> {
        config.validate().map_err(|e| GenerationError::Validation {
            field: "config",
            message: e.to_string(),
        })?;
        let budget = config.total_tokens(model.config().context_length);
        let maker = maker(budget);
        let runner = maker().map_err(|f| GenerationError::Unhealthy {
            reason: format!("the model could not be put on the device: {}", f.message),
        })?;
        let metrics =
            GenerationMetrics::register(&registry).map_err(|e| GenerationError::Unhealthy {
                reason: format!("metrics: {e}"),
            })?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox {
                queue: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            budget,
            reserved: AtomicUsize::new(0),
            health: Mutex::new(HealthState {
                ready: true,
                reason: None,
                device: Some(runner.device()),
            }),
            metrics,
            alive: AtomicBool::new(true),
        });
        let thread = {
            let (shared, model, config) = (shared.clone(), model.clone(), config.clone());
            std::thread::Builder::new()
                .name("hipinfer-generation".into())
                .spawn(move || {
                    let _alive = AliveGuard(shared.clone());
                    Scheduler::new(shared, &model, config, Some(runner), maker).run();
                })
                .map_err(|e| GenerationError::Unhealthy {
                    reason: format!("could not start the scheduler thread: {e}"),
                })?
        };
        Ok(GenerationEngine {
            inner: Arc::new(Inner {
                model,
                config,
                shared,
                registry,
                next_id: AtomicU64::new(1),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn model(&self) -> &Arc<LanguageModel> {
        &self.inner.model
    }

    pub fn config(&self) -> &GenerationConfig {
        &self.inner.config
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &GenerationMetrics {
        &self.inner.shared.metrics
    }

    /// KV-cache rows (token positions) all live sequences may reserve together.
    pub fn max_total_tokens(&self) -> usize {
        self.inner.shared.budget
    }

    /// The longest prompt accepted.
    pub fn max_input_length(&self) -> usize {
        let context = self.inner.model.config().context_length;
        self.inner
            .config
            .max_input_length
            .unwrap_or(context.saturating_sub(1))
            .min(context.saturating_sub(1))
    }

    /// The device the engine runs on (the last one that served).
    pub fn device(&self) -> Option<DeviceInfo> {
        self.inner.shared.health.lock().device.clone()
    }

    pub fn health(&self) -> GenerationHealth {
        let health = self.inner.shared.health.lock().clone();
        let alive = self.inner.shared.alive.load(Ordering::Relaxed);
        GenerationHealth {
            ready: health.ready && alive,
            reason: health.reason,
            alive,
        }
    }

    /// Admits `request` and returns its stream of events — or refuses it at once: a bad
    /// request names its field; past the KV-cache budget or the waiting queue it is
    /// `Overloaded`; a lost device is `Unhealthy`.
    pub fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, GenerationError> {
        let result = self.admit(request);
        if result.is_err() {
            self.inner.shared.metrics.ended("rejected");
        }
        result
    }

    fn admit(&self, request: GenerateRequest) -> Result<GenerationStream, GenerationError> {
        let shared = &self.inner.shared;
        let context = validate_request(&self.inner.model, &request).map_err(|e| match e {
            LlmError::Argument { name, message } => GenerationError::Validation {
                field: name,
                message,
            },
            other => GenerationError::validation("request", other.to_string()),
        })?;
        let prompt = request.prompt_ids.len();
        let limit = self.max_input_length();
        if prompt > limit {
            return Err(GenerationError::validation(
                "prompt",
                format!("{prompt} tokens are more than max_input_length {limit}"),
            ));
        }
        let capacity = (prompt + request.max_tokens).min(context);
        if capacity > shared.budget {
            return Err(GenerationError::validation(
                "max_tokens",
                format!(
                    "prompt + max_tokens = {capacity} tokens is more than the whole KV-cache \
                     budget (max_total_tokens {})",
                    shared.budget
                ),
            ));
        }
        let health = self.health();
        if !health.ready {
            return Err(GenerationError::Unhealthy {
                reason: health.reason.unwrap_or_else(|| "not ready".into()),
            });
        }
        let mut inbox = shared.inbox.lock();
        if inbox.closed {
            return Err(GenerationError::ShuttingDown);
        }
        let waiting = shared.metrics.waiting.get().max(0) as usize + inbox.queue.len();
        if waiting >= self.inner.config.max_waiting {
            return Err(GenerationError::Overloaded {
                message: format!(
                    "{waiting} sequences are waiting (max_waiting {})",
                    self.inner.config.max_waiting
                ),
            });
        }
        let reserved = shared.reserved.load(Ordering::Relaxed);
        if reserved + capacity > shared.budget {
            return Err(GenerationError::Overloaded {
                message: format!(
                    "the KV cache is reserved ({reserved} of {} token positions; this request \
                     needs {capacity})",
                    shared.budget
                ),
            });
        }
        shared.reserved.fetch_add(capacity, Ordering::Relaxed);
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        inbox.queue.push_back(Submission {
            id,
            request,
            context,
            capacity,
            events,
            admitted: Instant::now(),
        });
        drop(inbox);
        shared.wake.notify_all();
        Ok(GenerationStream {
            id,
            prompt_tokens: prompt,
            events: receiver,
        })
    }

    /// Stops admitting, lets every live sequence finish, and waits for the scheduler thread.
    pub fn shutdown(&self) {
        self.inner.shared.inbox.lock().closed = true;
        self.inner.shared.wake.notify_all();
        if let Some(thread) = self.inner.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// How [`GenerationEngine::open`] makes its runners: the CPU backend (the language-model
/// kernels are CPU-only so far), its threads, the retry policy, faults to inject (tests and
/// `hipinfer chaos`; each runner made gets its own seed), and where the steps run: in this
/// process, or in a worker process that a supervisor restarts when it dies or hangs.
#[derive(Debug, Clone, Default)]
pub struct RunnerOptions {
    pub threads: Option<usize>,
    pub retry: crate::retry::RetryConfig,
    pub faults: Option<crate::backend::FaultPlan>,
    /// Seeds the retry jitter.
    pub seed: Option<u64>,
    /// Run the steps in a worker process started this way (`None`: in this process).
    pub worker: Option<WorkerConfig>,
    /// How long a worker may take over one step before it counts as hung (default 30 s).
    pub step_timeout: Option<Duration>,
}

impl GenerationEngine {
    /// Opens the GGUF at `path` and serves it on the CPU backend — in this process, or in a
    /// worker process with `options.worker` — the retry layer's metrics (forwarded from the
    /// worker) and the engine's in `registry`.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        config: GenerationConfig,
        options: RunnerOptions,
        registry: Registry,
    ) -> Result<GenerationEngine, GenerationError> {
        let validation =
            |field: &'static str, message: String| GenerationError::Validation { field, message };
        let model =
            LanguageModel::open(path.as_ref()).map_err(|e| validation("model", e.to_string()))?;
        let model = Arc::new(model);
        let spec = |rows: usize| DecoderSpec {
            model: path.as_ref().to_path_buf(),
            threads: options.threads,
            retry: options.retry.clone(),
            seed: options.seed,
            rows,
        };
        // A bad retry policy is the caller's error, here, wherever the steps run.
        let policy = spec(0).policy().map_err(|e| validation("retry", e))?;
        if let Some(worker) = &options.worker {
            let rows = config.total_tokens(model.config().context_length);
            let timeout = options.step_timeout.unwrap_or(Duration::from_secs(30));
            if timeout.is_zero() {
                return Err(validation("step_timeout", "must be more than zero".into()));
            }
            let factory = SupervisorFactory::for_decoder(
                &spec(rows),
                options.faults.as_ref(),
                worker,
                timeout,
                &registry,
            )
            .map_err(|e| validation("worker", e.to_string()))?;
            return Self::start(model, config, registry, move |_| {
                Box::new(move || {
                    factory
                        .supervise()
                        .map(|s| Box::new(s) as Box<dyn DecodeRunner>)
                        .map_err(|e| StepFailure::fatal("worker", e.to_string()))
                })
            });
        }
        let spec = spec(0);
        let state = spec
            .retry_state(&registry)
            .map_err(|reason| GenerationError::Unhealthy { reason })?;
        let (open_model, faults) = (model.clone(), options.faults.clone());
        Self::start(model, config, registry, move |rows| {
            let spec = DecoderSpec { rows, ..spec };
            LocalDecoders::new(open_model, spec, faults, policy, state).into_maker()
        })
    }
}
