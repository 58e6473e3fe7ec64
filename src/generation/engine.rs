//! [`GenerationEngine`]: the handle — admission (validation, the KV-cache budget, the waiting
//! queue) on the caller's thread, everything else on the scheduler thread.

// A `StepFailure` travels only on the recovery path: see `step/contract.rs`.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use prometheus::Registry;

use crate::backend::{Backend, DeviceInfo};
use crate::error::HipError;
use crate::llm::{validate_request, GenerateRequest, LanguageModel, LlmError};
use crate::retry::{RetryPolicy, RetryState};
use crate::step::StepFailure;

use super::request::{GenerationError, GenerationStream};
use super::runner::{DecodeRunner, LocalDecoder, RunnerMaker};
use super::scheduler::{Scheduler, Submission};
use super::{GenerationConfig, GenerationMetrics};

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

/// A runner factory over backends of `make`, with the retry layer's `policy` and `state`.
pub fn local_runners<B, F>(
    model: Arc<LanguageModel>,
    make: F,
    policy: Arc<RetryPolicy>,
    state: RetryState,
    rows: usize,
) -> RunnerMaker
where
    B: Backend<Error = HipError> + Send + 'static,
    F: Fn() -> Result<B, HipError> + Send + Sync + 'static,
{
    Box::new(move || {
        let backend = make().map_err(|e| StepFailure::fatal("backend", e.to_string()))?;
        state.breaker().reset();
        let runner =
            LocalDecoder::new(model.clone(), backend, policy.clone(), state.clone(), rows)?;
        Ok(Box::new(runner) as Box<dyn DecodeRunner>)
    })
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
/// kernels are CPU-only so far), its threads, the retry policy, and faults to inject (tests
/// and `hipinfer chaos`; each runner made gets its own seed).
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    pub threads: Option<usize>,
    pub retry: crate::retry::RetryConfig,
    pub faults: Option<crate::backend::FaultPlan>,
    /// Seeds the retry jitter.
    pub seed: Option<u64>,
}

impl GenerationEngine {
    /// Opens the GGUF at `path` and serves it on the CPU backend, the retry layer's metrics
    /// and the engine's in `registry`.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        config: GenerationConfig,
        options: LocalOptions,
        registry: Registry,
    ) -> Result<GenerationEngine, GenerationError> {
        let model =
            LanguageModel::open(path.as_ref()).map_err(|e| GenerationError::Validation {
                field: "model",
                message: e.to_string(),
            })?;
        let model = Arc::new(model);
        let policy = Arc::new(RetryPolicy::new(options.retry.clone()).map_err(|e| {
            GenerationError::Validation {
                field: "retry",
                message: e.to_string(),
            }
        })?);
        let mut state = RetryState::builder().registry(registry.clone());
        if let Some(seed) = options.seed {
            state = state.seed(seed);
        }
        let state = state.build().map_err(|e| GenerationError::Unhealthy {
            reason: format!("the retry layer: {e}"),
        })?;
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let made = Arc::new(AtomicU64::new(0));
        let faults = options.faults.clone();
        let open_model = model.clone();
        Self::start(model, config, registry, move |rows| {
            local_runners(
                open_model,
                move || {
                    let cpu = crate::backend::CpuBackend::with_threads(threads)?;
                    let n = made.fetch_add(1, Ordering::Relaxed);
                    Ok(match &faults {
                        None => crate::backend::FaultyBackend::passthrough(cpu),
                        Some(plan) => {
                            let mut plan = plan.clone();
                            plan.seed = plan.seed.wrapping_add(n.wrapping_mul(0x9e37_79b9));
                            crate::backend::FaultyBackend::new(cpu, plan)
                        }
                    })
                },
                policy,
                state,
                rows,
            )
        })
    }
}
