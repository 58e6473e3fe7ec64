//! `EngineConfig`: everything an [`super::InferenceEngine`] is built from — the model folder, the
//! backend, the retry policy (`retry: RetryConfig`, inside, as the design says), the circuit
//! breaker and retry budget, batching limits, step replay, the step and request deadlines,
//! isolation, the CPU fallback, self-healing and the recovery log.
//!
//! Three ways to make one, all validated the same way (an invalid value is a [`ConfigError`]
//! naming the field): the builder ([`EngineConfig::builder`]), serde (a JSON file with
//! [`EngineConfig::from_json_file`]; every field may be left out), and the environment
//! ([`EngineConfig::from_env`], `HIPINFER_*`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus::Registry;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendChoice, Dtype, FaultPlan};
use crate::error::ConfigError;
use crate::isolation::{Isolation, WorkerConfig};
use crate::model::DEFAULT_MODEL_DIR;
use crate::retry::{parse_duration, serde_duration, BreakerConfig, BudgetConfig, RetryConfig};
use crate::step::RunnerSpec;

/// What serves requests when the device is lost for good (its context poisoned for the process,
/// or its worker crash-looping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Nothing: the engine is unhealthy (503) until it heals itself.
    #[default]
    None,
    /// A `CpuBackend` in this process (degraded mode, visible in `/health`, `/info` and
    /// `hipinfer_degraded`) until a fresh device backend answers its probe.
    Cpu,
}

impl std::str::FromStr for Fallback {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Fallback::None),
            "cpu" => Ok(Fallback::Cpu),
            _ => Err(ConfigError::new(
                "fallback",
                format!("{text:?} is not one of none, cpu"),
            )),
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::None => "none",
            Fallback::Cpu => "cpu",
        })
    }
}

/// Readiness: how long a success vouches for the device, and how long a health check waits for
/// its probe kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// A step or probe that succeeded within this long — or within twice the longest recent
    /// step, when that is longer — vouches for the device without a probe (1 s).
    #[serde(with = "serde_duration")]
    pub fresh_for: Duration,
    /// How long a health check waits for its probe (5 s).
    #[serde(with = "serde_duration")]
    pub probe_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            fresh_for: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// Self-healing: while the device is lost (the engine unhealthy or degraded), the step thread
/// tries to bring it back on a timer, the wait doubling from `initial_delay` to `max_delay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// The wait before the first try (250 ms).
    #[serde(with = "serde_duration")]
    pub initial_delay: Duration,
    /// The longest wait between tries (30 s).
    #[serde(with = "serde_duration")]
    pub max_delay: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RecoveryConfig {
    /// The wait before try number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// How requests are grouped into steps (one padded batch through the model), as TEI does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// A step's padded tokens (sequences × longest sequence) stay at or under this (16384).
    pub max_batch_tokens: usize,
    /// At most this many sequences per step (`None`: only the token limit applies).
    pub max_batch_requests: Option<usize>,
    /// Requests in flight at once; one more is refused with `Overloaded` at once (512).
    pub max_concurrent_requests: usize,
    /// Tokens per input, special tokens included (`None`: the model's `max_seq_length`).
    pub max_input_length: Option<usize>,
    /// Inputs per request (32, as TEI's `max_client_batch_size`).
    pub max_client_batch_size: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_tokens: 16384,
            max_batch_requests: None,
            max_concurrent_requests: 512,
            max_input_length: None,
            max_client_batch_size: 32,
        }
    }
}

/// Request-level retry: how a failed step is replayed from its host-side inputs after a backend
/// reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepReplayConfig {
    /// Replays of one input before it fails (8). With faults injected at the rates of
    /// `hipinfer chaos`, a step fails about one time in four; eight replays make a lost input
    /// a one-in-a-million event.
    pub max_replays: u32,
    /// The wait before the first replay (1 ms), doubling up to `max_delay` (100 ms).
    #[serde(with = "serde_duration")]
    pub initial_delay: Duration,
    #[serde(with = "serde_duration")]
    pub max_delay: Duration,
    /// Tries at bringing the device back (reset + weight upload) after a failed step before the
    /// engine reports itself unhealthy (32). The upload is ~80 device calls, each of which can
    /// fail too; the delays between tries follow the replay backoff.
    pub max_recovery_attempts: u32,
}

impl Default for StepReplayConfig {
    fn default() -> Self {
        StepReplayConfig {
            max_replays: 8,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
            max_recovery_attempts: 32,
        }
    }
}

impl StepReplayConfig {
    /// The wait before replay number `replay` (1-based).
    pub fn delay(&self, replay: u32) -> Duration {
        let factor = 2u32.saturating_pow(replay.saturating_sub(1).min(30));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// Everything an engine is built from. See the module documentation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The Hugging Face model folder (`models/all-MiniLM-L6-v2`).
    pub model: PathBuf,
    /// `auto` (HIP if a device answers, else CPU), `cpu` or `hip`.
    pub backend: BackendChoice,
    /// The GPU to use.
    pub device: i32,
    /// CPU backend threads (`None`: one per core).
    pub threads: Option<usize>,
    /// The precision of the linear layers' weights: `f32` (matches PyTorch), `bf16` or `int8`.
    /// The reduced ones run on the CPU backend (`backend: auto` then chooses it; `hip` is an
    /// error).
    pub dtype: Dtype,
    /// Per-operation retries of device calls.
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub budget: BudgetConfig,
    pub batching: BatchingConfig,
    pub step_replay: StepReplayConfig,
    /// A request not answered within this long fails with `DeadlineExceeded` (HTTP 504) at that
    /// moment, even while its step is stuck (`None`: no limit).
    #[serde(with = "serde_duration::option")]
    pub request_deadline: Option<Duration>,
    /// A step, probe or device reset not finished within this long is hung (HIP never times
    /// out a kernel): in this process the step is abandoned and replayed on a fresh backend by
    /// a new step thread; in a worker process, the worker is killed and replaced (30 s).
    #[serde(with = "serde_duration")]
    pub step_timeout: Duration,
    /// Seeds the retry jitter, for reproducible delays (`None`: from the OS).
    pub seed: Option<u64>,
    /// Where steps run: `auto` (a worker process on a GPU, this process on the CPU),
    /// `in_process` or `subprocess`.
    pub isolation: Isolation,
    /// The worker process, with subprocess isolation.
    pub worker: WorkerConfig,
    /// What serves when the device is lost for good: `none` or `cpu`.
    pub fallback: Fallback,
    /// Self-healing while the device is lost.
    pub recovery: RecoveryConfig,
    /// Readiness checks.
    pub health: HealthConfig,
    /// Appends every recovery event (op retries, replays, resets, restarts, fallbacks, recovery
    /// attempts) as a JSON line to this file (`None`: only the log).
    pub events: Option<PathBuf>,
    /// Faults to inject into the backend (tests and `hipinfer chaos`). Never read from a file:
    /// only code can turn faults on.
    #[serde(skip)]
    pub faults: Option<FaultPlan>,
    /// Where the engine registers its metrics (`None`: a registry of its own, see
    /// `InferenceEngine::registry`). Not part of files.
    #[serde(skip)]
    pub registry: Option<Registry>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: PathBuf::from(DEFAULT_MODEL_DIR),
            backend: BackendChoice::Auto,
            device: 0,
            threads: None,
            dtype: Dtype::F32,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            budget: BudgetConfig::default(),
            batching: BatchingConfig::default(),
            step_replay: StepReplayConfig::default(),
            request_deadline: None,
            step_timeout: Duration::from_secs(30),
            seed: None,
            isolation: Isolation::Auto,
            worker: WorkerConfig::default(),
            fallback: Fallback::None,
            recovery: RecoveryConfig::default(),
            health: HealthConfig::default(),
            events: None,
            faults: None,
            registry: None,
        }
    }
}

impl PartialEq for EngineConfig {
    /// Equal settings (the registry is not compared).
    fn eq(&self, b: &Self) -> bool {
        let a = self;
        a.model == b.model
            && a.backend == b.backend
            && a.device == b.device
            && a.threads == b.threads
            && a.dtype == b.dtype
            && a.retry == b.retry
            && a.breaker == b.breaker
            && a.budget == b.budget
            && a.batching == b.batching
            && a.step_replay == b.step_replay
            && a.request_deadline == b.request_deadline
            && a.step_timeout == b.step_timeout
            && a.seed == b.seed
            && a.isolation == b.isolation
            && a.worker == b.worker
            && a.fallback == b.fallback
            && a.recovery == b.recovery
            && a.health == b.health
            && a.events == b.events
            && a.faults == b.faults
    }
}

impl EngineConfig {
    /// A builder over the defaults.
    pub fn builder() -> EngineConfigBuilder {
        EngineConfigBuilder {
            config: EngineConfig::default(),
        }
    }

    /// What a step runner is built from (in this process or in a worker process).
    pub fn runner_spec(&self) -> RunnerSpec {
        // The reduced precisions have CPU kernels only.
        let backend = match (self.backend, self.dtype) {
            (BackendChoice::Auto, Dtype::Bf16 | Dtype::Int8) => BackendChoice::Cpu,
            (backend, _) => backend,
        };
        RunnerSpec {
            model: self.model.clone(),
            backend,
            device: self.device,
            threads: self.threads,
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            budget: self.budget.clone(),
            seed: self.seed,
            dtype: self.dtype,
            upload_attempts: self.step_replay.max_recovery_attempts,
            events: self.events.clone(),
        }
    }

    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &str, value: usize| {
            if value == 0 {
                Err(ConfigError::new(field, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        if self.model.as_os_str().is_empty() {
            return Err(ConfigError::new("model", "no model folder given"));
        }
        if let Some(threads) = self.threads {
            positive("threads", threads)?;
        }
        if matches!(self.backend, BackendChoice::Hip | BackendChoice::Cuda)
            && self.dtype != Dtype::F32
        {
            return Err(ConfigError::new(
                "dtype",
                format!(
                    "{} has CPU kernels only: use backend cpu (or auto), or dtype f32 on {}",
                    self.dtype, self.backend
                ),
            ));
        }
        let b = &self.batching;
        positive("batching.max_batch_tokens", b.max_batch_tokens)?;
        positive(
            "batching.max_concurrent_requests",
            b.max_concurrent_requests,
        )?;
        positive("batching.max_client_batch_size", b.max_client_batch_size)?;
        if let Some(n) = b.max_batch_requests {
            positive("batching.max_batch_requests", n)?;
        }
        if let Some(n) = b.max_input_length {
            if n < 2 {
                return Err(ConfigError::new(
                    "batching.max_input_length",
                    "must leave room for [CLS] and [SEP] (at least 2)",
                ));
            }
            if n > b.max_batch_tokens {
                return Err(ConfigError::new(
                    "batching.max_batch_tokens",
                    format!(
                        "{} is less than max_input_length {n}: a long input could never run",
                        b.max_batch_tokens
                    ),
                ));
            }
        }
        let r = &self.step_replay;
        if r.max_recovery_attempts == 0 {
            return Err(ConfigError::new(
                "step_replay.max_recovery_attempts",
                "must be at least 1",
            ));
        }
        if r.max_delay < r.initial_delay {
            return Err(ConfigError::new(
                "step_replay.max_delay",
                format!(
                    "{:?} is shorter than initial_delay {:?}",
                    r.max_delay, r.initial_delay
                ),
            ));
        }
        if self.request_deadline == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "request_deadline",
                "a zero deadline fails every request",
            ));
        }
        if self.step_timeout.is_zero() {
            return Err(ConfigError::new("step_timeout", "must be more than zero"));
        }
        if self.recovery.initial_delay.is_zero() {
            return Err(ConfigError::new(
                "recovery.initial_delay",
                "must be more than zero (the engine would retry without pause)",
            ));
        }
        if self.recovery.max_delay < self.recovery.initial_delay {
            return Err(ConfigError::new(
                "recovery.max_delay",
                format!(
                    "{:?} is shorter than initial_delay {:?}",
                    self.recovery.max_delay, self.recovery.initial_delay
                ),
            ));
        }
        if self.health.fresh_for.is_zero() || self.health.probe_timeout.is_zero() {
            return Err(ConfigError::new(
                "health",
                "fresh_for and probe_timeout must be more than zero",
            ));
        }
        if self
            .events
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::new("events", "an empty path"));
        }
        self.retry.validate()?;
        self.breaker.validate()?;
        self.budget.validate()?;
        self.worker.validate()?;
        if let Some(plan) = &self.faults {
            if let Some(rule) = plan.rules.iter().find(|r| !(0.0..=1.0).contains(&r.rate)) {
                return Err(ConfigError::new(
                    "faults.rules.rate",
                    format!("{} is not a rate between 0 and 1", rule.rate),
                ));
            }
        }
        Ok(())
    }

    /// Reads a JSON file (every field optional; unknown fields are errors) and validates it.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<EngineConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot be read: {e}"))
        })?;
        Self::from_json(&text).map_err(|e| ConfigError {
            field: format!("{}: {}", path.display(), e.field),
            message: e.message,
        })
    }

    /// Parses JSON text and validates it.
    pub fn from_json(text: &str) -> Result<EngineConfig, ConfigError> {
        let config: EngineConfig = serde_json::from_str(text).map_err(|e| {
            ConfigError::new(
                format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults overridden by `HIPINFER_*` environment variables; see
    /// [`EngineConfig::from_lookup`].
    pub fn from_env() -> Result<EngineConfig, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults overridden by the variables `lookup` finds (empty values are ignored):
    ///
    /// `HIPINFER_MODEL`, `HIPINFER_BACKEND`, `HIPINFER_DEVICE`, `HIPINFER_THREADS`, `HIPINFER_DTYPE`,
    /// `HIPINFER_MAX_BATCH_TOKENS`, `HIPINFER_MAX_BATCH_REQUESTS`,
    /// `HIPINFER_MAX_CONCURRENT_REQUESTS`, `HIPINFER_MAX_INPUT_LENGTH`,
    /// `HIPINFER_MAX_CLIENT_BATCH_SIZE`, `HIPINFER_REQUEST_DEADLINE`, `HIPINFER_STEP_TIMEOUT`
    /// (or its older name `HIPINFER_WORKER_STEP_TIMEOUT`), `HIPINFER_FALLBACK`,
    /// `HIPINFER_RECOVERY_INITIAL_DELAY`, `HIPINFER_RECOVERY_MAX_DELAY`, `HIPINFER_EVENTS`,
    /// `HIPINFER_STEP_MAX_REPLAYS`, `HIPINFER_STEP_REPLAY_INITIAL_DELAY`,
    /// `HIPINFER_STEP_REPLAY_MAX_DELAY`, `HIPINFER_STEP_MAX_RECOVERY_ATTEMPTS`,
    /// `HIPINFER_BREAKER_FAILURE_THRESHOLD`,
    /// `HIPINFER_BREAKER_COOLDOWN`, `HIPINFER_BREAKER_HALF_OPEN_PROBES`, `HIPINFER_BUDGET_RATIO`,
    /// `HIPINFER_BUDGET_MIN_PER_SECOND`, `HIPINFER_BUDGET_TTL`, `HIPINFER_SEED`,
    /// `HIPINFER_ISOLATION`, `HIPINFER_WORKER_PROGRAM`, `HIPINFER_WORKER_START_TIMEOUT`, `HIPINFER_WORKER_MAX_RESTARTS`,
    /// `HIPINFER_WORKER_RESTART_WINDOW`, `HIPINFER_WORKER_RESTART_DELAY`,
    /// `HIPINFER_WORKER_MAX_RESTART_DELAY`, and every `HIPINFER_RETRY_*` of
    /// [`RetryConfig::from_lookup`]. The error names the variable.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<EngineConfig, ConfigError> {
        EngineConfig::default().with_vars(lookup)
    }

    /// This configuration overridden by `HIPINFER_*` environment variables: a JSON file's
    /// settings with the environment on top.
    pub fn with_env(self) -> Result<EngineConfig, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// This configuration overridden by the variables `lookup` finds (those of
    /// [`EngineConfig::from_lookup`]); validated.
    pub fn with_vars(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<EngineConfig, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (name.to_string(), v))
        };
        fn number<T: std::str::FromStr>((name, v): (String, String)) -> Result<T, ConfigError> {
            v.parse()
                .map_err(|_| ConfigError::new(name, format!("{v:?} is not a valid number")))
        }
        fn duration((name, v): (String, String)) -> Result<Duration, ConfigError> {
            parse_duration(&v).ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!("{v:?} is not a duration (250us, 10ms, 1.5s, 2m)"),
                )
            })
        }
        let mut c = self;
        c.retry = c.retry.with_vars(&lookup)?;
        if let Some((_, v)) = get("HIPINFER_MODEL") {
            c.model = PathBuf::from(v);
        }
        if let Some((name, v)) = get("HIPINFER_BACKEND") {
            c.backend = v
                .parse()
                .map_err(|e: ConfigError| ConfigError::new(name, e.message))?;
        }
        if let Some(v) = get("HIPINFER_DEVICE") {
            c.device = number(v)?;
        }
        if let Some(v) = get("HIPINFER_THREADS") {
            c.threads = Some(number(v)?);
        }
        if let Some((name, v)) = get("HIPINFER_DTYPE") {
            c.dtype = v
                .parse()
                .map_err(|e: ConfigError| ConfigError::new(name, e.message))?;
        }
        if let Some(v) = get("HIPINFER_MAX_BATCH_TOKENS") {
            c.batching.max_batch_tokens = number(v)?;
        }
        if let Some(v) = get("HIPINFER_MAX_BATCH_REQUESTS") {
            c.batching.max_batch_requests = Some(number(v)?);
        }
        if let Some(v) = get("HIPINFER_MAX_CONCURRENT_REQUESTS") {
            c.batching.max_concurrent_requests = number(v)?;
        }
        if let Some(v) = get("HIPINFER_MAX_INPUT_LENGTH") {
            c.batching.max_input_length = Some(number(v)?);
        }
        if let Some(v) = get("HIPINFER_MAX_CLIENT_BATCH_SIZE") {
            c.batching.max_client_batch_size = number(v)?;
        }
        if let Some(v) = get("HIPINFER_REQUEST_DEADLINE") {
            c.request_deadline = Some(duration(v)?);
        }
        if let Some(v) = get("HIPINFER_STEP_MAX_REPLAYS") {
            c.step_replay.max_replays = number(v)?;
        }
        if let Some(v) = get("HIPINFER_STEP_REPLAY_INITIAL_DELAY") {
            c.step_replay.initial_delay = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_STEP_REPLAY_MAX_DELAY") {
            c.step_replay.max_delay = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_STEP_MAX_RECOVERY_ATTEMPTS") {
            c.step_replay.max_recovery_attempts = number(v)?;
        }
        if let Some(v) = get("HIPINFER_BREAKER_FAILURE_THRESHOLD") {
            c.breaker.failure_threshold = number(v)?;
        }
        if let Some(v) = get("HIPINFER_BREAKER_COOLDOWN") {
            c.breaker.cooldown = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_BREAKER_HALF_OPEN_PROBES") {
            c.breaker.half_open_probes = number(v)?;
        }
        if let Some(v) = get("HIPINFER_BUDGET_RATIO") {
            c.budget.ratio = number(v)?;
        }
        if let Some(v) = get("HIPINFER_BUDGET_MIN_PER_SECOND") {
            c.budget.min_per_second = number(v)?;
        }
        if let Some(v) = get("HIPINFER_BUDGET_TTL") {
            c.budget.ttl = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_SEED") {
            c.seed = Some(number(v)?);
        }
        if let Some((name, v)) = get("HIPINFER_ISOLATION") {
            c.isolation = v
                .parse()
                .map_err(|e: ConfigError| ConfigError::new(name, e.message))?;
        }
        if let Some((_, v)) = get("HIPINFER_WORKER_PROGRAM") {
            c.worker.program = Some(PathBuf::from(v));
        }
        if let Some(v) = get("HIPINFER_WORKER_STEP_TIMEOUT") {
            c.step_timeout = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_STEP_TIMEOUT") {
            c.step_timeout = duration(v)?;
        }
        if let Some((name, v)) = get("HIPINFER_FALLBACK") {
            c.fallback = v
                .parse()
                .map_err(|e: ConfigError| ConfigError::new(name, e.message))?;
        }
        if let Some(v) = get("HIPINFER_RECOVERY_INITIAL_DELAY") {
            c.recovery.initial_delay = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_RECOVERY_MAX_DELAY") {
            c.recovery.max_delay = duration(v)?;
        }
        if let Some((_, v)) = get("HIPINFER_EVENTS") {
            c.events = Some(PathBuf::from(v));
        }
        if let Some(v) = get("HIPINFER_WORKER_START_TIMEOUT") {
            c.worker.start_timeout = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_WORKER_MAX_RESTARTS") {
            c.worker.max_restarts = number(v)?;
        }
        if let Some(v) = get("HIPINFER_WORKER_RESTART_WINDOW") {
            c.worker.restart_window = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_WORKER_RESTART_DELAY") {
            c.worker.restart_delay = duration(v)?;
        }
        if let Some(v) = get("HIPINFER_WORKER_MAX_RESTART_DELAY") {
            c.worker.max_restart_delay = duration(v)?;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Builds an [`EngineConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct EngineConfigBuilder {
    config: EngineConfig,
}

impl EngineConfigBuilder {
    pub fn model(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.model = dir.into();
        self
    }

    pub fn backend(mut self, backend: BackendChoice) -> Self {
        self.config.backend = backend;
        self
    }

    pub fn device(mut self, device: i32) -> Self {
        self.config.device = device;
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.config.threads = Some(threads);
        self
    }

    pub fn dtype(mut self, dtype: Dtype) -> Self {
        self.config.dtype = dtype;
        self
    }

    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }

    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.config.breaker = breaker;
        self
    }

    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = budget;
        self
    }

    pub fn batching(mut self, batching: BatchingConfig) -> Self {
        self.config.batching = batching;
        self
    }

    pub fn max_batch_tokens(mut self, tokens: usize) -> Self {
        self.config.batching.max_batch_tokens = tokens;
        self
    }

    pub fn max_batch_requests(mut self, requests: usize) -> Self {
        self.config.batching.max_batch_requests = Some(requests);
        self
    }

    pub fn max_concurrent_requests(mut self, requests: usize) -> Self {
        self.config.batching.max_concurrent_requests = requests;
        self
    }

    pub fn step_replay(mut self, replay: StepReplayConfig) -> Self {
        self.config.step_replay = replay;
        self
    }

    pub fn request_deadline(mut self, deadline: Duration) -> Self {
        self.config.request_deadline = Some(deadline);
        self
    }

    pub fn step_timeout(mut self, timeout: Duration) -> Self {
        self.config.step_timeout = timeout;
        self
    }

    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.config.fallback = fallback;
        self
    }

    pub fn recovery(mut self, recovery: RecoveryConfig) -> Self {
        self.config.recovery = recovery;
        self
    }

    pub fn health(mut self, health: HealthConfig) -> Self {
        self.config.health = health;
        self
    }

    /// Appends every recovery event to `path` as a JSON line.
    pub fn events(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.events = Some(path.into());
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.config.isolation = isolation;
        self
    }

    pub fn worker(mut self, worker: WorkerConfig) -> Self {
        self.config.worker = worker;
        self
    }

    /// Injects `plan`'s faults into the backend (tests, chaos campaigns).
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.config.faults = Some(plan);
        self
    }

    /// Registers the engine's metrics (and the retry layer's) in `registry`.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.config.registry = Some(registry);
        self
    }

    pub fn build(self) -> Result<EngineConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
