//! The command line: every flag also reads an environment variable `HIPINFER_*`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hipinfer::backend::{BackendChoice, Dtype, StickyScope};
use hipinfer::engine::{EngineConfig, Fallback};
use hipinfer::isolation::Isolation;
use hipinfer::retry::parse_duration;
use hipinfer::ConfigError;

#[derive(Parser)]
#[command(
    name = "hipinfer",
    version,
    about = "Sentence embeddings on AMD GPUs (HIP) or the CPU, surviving GPU faults"
)]
pub struct Cli {
    /// Log filter (tracing's syntax: warn, info, hipinfer=debug, …); logs go to stderr.
    /// Default: warn (error for chaos, whose faults are expected).
    #[arg(long, env = "HIPINFER_LOG", global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Embed texts and print one JSON object with the embeddings and token ids.
    Embed(EmbedArgs),
    /// Time batches of synthetic inputs of an exact length (or, with --http, a server under
    /// concurrent clients) and print one JSON line.
    Bench(BenchArgs),
    /// Serve TEI's and OpenAI's embedding APIs over HTTP, with /health and /metrics.
    Serve(ServeArgs),
    /// Run requests with injected GPU faults and check none is lost or wrong; prints one JSON
    /// object, exits 0 only if nothing was lost or mismatched.
    Chaos(ChaosArgs),
    /// Show the backends available, the devices found (or why none) and the build's HIP archs
    /// (or, with --model FILE.gguf, a GGUF's architecture, sizes and tensor types).
    Info(InfoArgs),
    /// Generate text with a language model (GGUF): streams the text to stdout, then one JSON
    /// line of figures on stderr (or, with --json, one JSON object on stdout).
    Generate(GenerateArgs),
}

/// `generate`'s flags.
#[derive(Args)]
pub struct GenerateArgs {
    /// The language model: a GGUF file (llama architecture).
    #[arg(long, env = "HIPINFER_MODEL")]
    pub model: PathBuf,
    /// cpu (language models run on the CPU backend; auto chooses it) [default: auto].
    #[arg(long, env = "HIPINFER_BACKEND")]
    pub backend: Option<BackendChoice>,
    /// CPU backend threads (default: one per core).
    #[arg(long, env = "HIPINFER_THREADS")]
    pub threads: Option<usize>,
    /// Wrap the prompt in the model's chat template as the user's message.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message first.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy (the default); higher samples more freely.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample from the most likely tokens whose probabilities sum to this, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Sample from the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Divide the logits of tokens already seen by this (1: off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repetition_penalty: f32,
    /// The sampler's seed: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A text that ends the generation (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Use a context shorter than the model's (less KV-cache memory).
    #[arg(long)]
    pub context_length: Option<usize>,
    /// Print {"prompt_ids", "generated_ids", "text", "finish_reason"} instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// The prompt.
    pub prompt: String,
}

/// Model and device flags. Unset, they keep what a `--config` file says, else the defaults.
#[derive(Args, Clone)]
pub struct Common {
    /// The Hugging Face model folder [default: models/all-MiniLM-L6-v2].
    #[arg(long, env = "HIPINFER_MODEL")]
    pub model: Option<PathBuf>,
    /// auto (a GPU if one answers: HIP, then CUDA; else the CPU), cpu, hip or cuda [default: auto].
    #[arg(long, env = "HIPINFER_BACKEND")]
    pub backend: Option<BackendChoice>,
    /// The GPU to use [default: 0].
    #[arg(long, env = "HIPINFER_DEVICE")]
    pub device: Option<i32>,
    /// CPU backend threads (default: one per core).
    #[arg(long, env = "HIPINFER_THREADS")]
    pub threads: Option<usize>,
    /// The linear layers' weights: f32 (matches PyTorch), bf16 or int8 (CPU backend; faster,
    /// within 5e-4 and 5e-3 of f32's cosine) [default: f32].
    #[arg(long, env = "HIPINFER_DTYPE")]
    pub dtype: Option<Dtype>,
}

/// Unset flags fall back to `EngineConfig`'s defaults (one place says what they are).
impl Common {
    pub fn model_dir(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(|| EngineConfig::default().model)
    }

    pub fn backend(&self) -> BackendChoice {
        self.backend.unwrap_or(EngineConfig::default().backend)
    }

    pub fn device(&self) -> i32 {
        self.device.unwrap_or(EngineConfig::default().device)
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype.unwrap_or(EngineConfig::default().dtype)
    }
}

/// Engine settings for the commands that run an engine.
#[derive(Args, Clone)]
pub struct EngineArgs {
    /// A JSON file of engine settings (EngineConfig); flags and variables override it.
    #[arg(long, env = "HIPINFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Padded tokens per step at most.
    #[arg(long, env = "HIPINFER_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Sequences per step at most.
    #[arg(long, env = "HIPINFER_MAX_BATCH_REQUESTS")]
    pub max_batch_requests: Option<usize>,
    /// Requests in flight at most; more are refused with 429.
    #[arg(long, env = "HIPINFER_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Tokens per input at most (default: the model's max_seq_length).
    #[arg(long, env = "HIPINFER_MAX_INPUT_LENGTH")]
    pub max_input_length: Option<usize>,
    /// Inputs per request at most.
    #[arg(long, env = "HIPINFER_MAX_CLIENT_BATCH_SIZE")]
    pub max_client_batch_size: Option<usize>,
    /// A request not answered within this long fails (e.g. 30s).
    #[arg(long, env = "HIPINFER_REQUEST_DEADLINE", value_parser = duration)]
    pub request_deadline: Option<Duration>,
    /// auto (a worker process on a GPU, this process on the CPU), in_process, or subprocess:
    /// the backend runs in a supervised worker process that is killed and replaced (its step
    /// replayed) when it dies, hangs or loses its device context [default: auto].
    #[arg(long, env = "HIPINFER_ISOLATION")]
    pub isolation: Option<Isolation>,
    /// A step (or probe, or device reset) not finished within this long is hung: in this process
    /// it is abandoned and replayed on a fresh backend; in a worker, the worker is replaced
    /// [default: 30s].
    #[arg(long, visible_alias = "worker-step-timeout", env = "HIPINFER_STEP_TIMEOUT", value_parser = duration)]
    pub step_timeout: Option<Duration>,
    /// What serves when the device is lost for good: none (the engine is unhealthy until it
    /// heals) or cpu (degraded mode on a CPU backend until the device answers again)
    /// [default: none].
    #[arg(long, env = "HIPINFER_FALLBACK")]
    pub fallback: Option<Fallback>,
    /// Append every recovery event (op retries, step replays, resets, worker restarts,
    /// fallbacks, recovery attempts) to this file as JSON lines.
    #[arg(long, env = "HIPINFER_EVENTS")]
    pub events: Option<PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (250us, 10ms, 1.5s, 2m)"))
}

impl EngineArgs {
    /// The engine configuration: the file's settings (or the defaults), the `HIPINFER_*`
    /// variables on top, then these flags and `common`'s where given.
    pub fn engine_config(&self, common: &Common) -> Result<EngineConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => EngineConfig::from_json_file(path)?.with_env()?,
            None => EngineConfig::from_env()?,
        };
        if let Some(model) = &common.model {
            config.model = model.clone();
        }
        if let Some(backend) = common.backend {
            config.backend = backend;
        }
        if let Some(device) = common.device {
            config.device = device;
        }
        if common.threads.is_some() {
            config.threads = common.threads;
        }
        if let Some(dtype) = common.dtype {
            config.dtype = dtype;
        }
        let b = &mut config.batching;
        if let Some(n) = self.max_batch_tokens {
            b.max_batch_tokens = n;
        }
        if self.max_batch_requests.is_some() {
            b.max_batch_requests = self.max_batch_requests;
        }
        if let Some(n) = self.max_concurrent_requests {
            b.max_concurrent_requests = n;
        }
        if self.max_input_length.is_some() {
            b.max_input_length = self.max_input_length;
        }
        if let Some(n) = self.max_client_batch_size {
            b.max_client_batch_size = n;
        }
        if self.request_deadline.is_some() {
            config.request_deadline = self.request_deadline;
        }
        if let Some(isolation) = self.isolation {
            config.isolation = isolation;
        }
        if let Some(timeout) = self.step_timeout {
            config.step_timeout = timeout;
        }
        if let Some(fallback) = self.fallback {
            config.fallback = fallback;
        }
        if self.events.is_some() {
            config.events = self.events.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub common: Common,
    /// Return the raw mean-pooled vectors instead of unit-length ones.
    #[arg(long, env = "HIPINFER_NO_NORMALIZE")]
    pub no_normalize: bool,
    /// Read the texts from standard input, one JSON string per line (so any text, newlines
    /// included, can be given).
    #[arg(long, env = "HIPINFER_STDIN")]
    pub stdin: bool,
    /// The texts to embed.
    pub texts: Vec<String>,
}

/// Fault rates, per device call.
#[derive(Args, Clone, Default)]
pub struct FaultArgs {
    /// Transient faults (hipErrorOperatingSystem, 304): retried in place.
    #[arg(long, env = "HIPINFER_TRANSIENT_RATE", default_value_t = 0.0)]
    pub transient_rate: f64,
    /// Out of memory (2): the cache is reclaimed, then retried.
    #[arg(long, env = "HIPINFER_OOM_RATE", default_value_t = 0.0)]
    pub oom_rate: f64,
    /// A poisoned context (hipErrorIllegalAddress, 700, sticky): the step is replayed after a
    /// reset (see --sticky-scope).
    #[arg(long, env = "HIPINFER_RESET_RATE", default_value_t = 0.0)]
    pub reset_rate: f64,
    /// How far a sticky fault reaches: context (a device reset clears it — kinder than a real
    /// memory fault) or process (every later call of the process returns it, reset included,
    /// as ROCm >= 6 and CUDA do: only a new worker process, or the CPU fallback, serves again).
    #[arg(long, env = "HIPINFER_STICKY_SCOPE", default_value = "context")]
    pub sticky_scope: StickyScope,
}

impl FaultArgs {
    pub fn any(&self) -> bool {
        self.transient_rate > 0.0 || self.oom_rate > 0.0 || self.reset_rate > 0.0
    }
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sequences per batch (the model bench).
    #[arg(long, env = "HIPINFER_BENCH_BATCH", default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence, [CLS] and [SEP] included.
    #[arg(long, env = "HIPINFER_BENCH_SEQ", default_value_t = 128)]
    pub seq: usize,
    /// How long to measure (each phase, with --http), after the warm-up.
    #[arg(long, env = "HIPINFER_BENCH_SECONDS", default_value_t = 10.0)]
    pub seconds: f64,
    /// Measure the HTTP server under concurrent clients against the engine alone.
    #[arg(long, env = "HIPINFER_BENCH_HTTP", conflicts_with = "engine_only")]
    pub http: bool,
    /// Measure the engine (queue, batching, isolation) under concurrent callers.
    #[arg(long, env = "HIPINFER_BENCH_ENGINE_ONLY")]
    pub engine_only: bool,
    /// With --model FILE.gguf: prompt tokens to process.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// With --model FILE.gguf: tokens to generate after the prompt.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// With --model FILE.gguf: one stream alone, then this many at once through the generation
    /// engine (continuous batching): the aggregate decode rate against the single stream's.
    #[arg(long, default_value_t = 0)]
    pub streams: usize,
    /// Concurrent clients (with --http or --engine-only).
    #[arg(long, env = "HIPINFER_BENCH_CLIENTS", default_value_t = 64)]
    pub clients: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// With --http: also measure the server with these faults injected.
    #[command(flatten)]
    pub faults: FaultArgs,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The address to listen on.
    #[arg(long, env = "HIPINFER_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// The port to listen on.
    #[arg(long, env = "HIPINFER_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on every route but /health and /metrics.
    #[arg(long, env = "HIPINFER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Request bodies larger than this many bytes get 413.
    #[arg(long, env = "HIPINFER_PAYLOAD_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub payload_limit: usize,
    /// Cut inputs longer than max_input_length when a request does not say (`truncate`).
    #[arg(long, env = "HIPINFER_AUTO_TRUNCATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_truncate: bool,
    /// A connection whose request headers are not complete within this long is closed.
    #[arg(long, env = "HIPINFER_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// A request body not received within this long is answered 408.
    #[arg(long, env = "HIPINFER_BODY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_timeout: Duration,
    /// A keep-alive connection idle this long is closed.
    #[arg(long, env = "HIPINFER_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Connections at most; at the cap a new one replaces the longest-idle one, and is refused
    /// only when all are busy [default: three quarters of the file-descriptor limit].
    #[arg(long, env = "HIPINFER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// On SIGTERM, how long queued requests are still answered; then the rest get 503 and the
    /// process exits (keep it under Kubernetes' terminationGracePeriodSeconds).
    #[arg(long, env = "HIPINFER_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

impl BenchArgs {
    /// The generation engine's limits a benchmark starts from (the defaults).
    pub fn generation_defaults(&self) -> GenerationArgs {
        GenerationArgs {
            max_total_tokens: None,
            max_running: None,
            default_max_tokens: None,
        }
    }
}

/// A language model's serving limits (with `--model FILE.gguf`).
#[derive(Args, Clone)]
pub struct GenerationArgs {
    /// KV-cache token positions all live sequences may reserve together [default: 16 contexts,
    /// at most 65,536].
    #[arg(long, env = "HIPINFER_MAX_TOTAL_TOKENS")]
    pub max_total_tokens: Option<usize>,
    /// Sequences decoded together at most [default: 32].
    #[arg(long, env = "HIPINFER_MAX_RUNNING")]
    pub max_running: Option<usize>,
    /// `max_tokens` of a request that does not say [default: 256].
    #[arg(long, env = "HIPINFER_DEFAULT_MAX_TOKENS")]
    pub default_max_tokens: Option<usize>,
}

#[derive(Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Requests to run.
    #[arg(long, env = "HIPINFER_CHAOS_REQUESTS", default_value_t = 2000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, env = "HIPINFER_CHAOS_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Seeds the corpus, the requests and the faults.
    #[arg(long, env = "HIPINFER_CHAOS_SEED", default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Per kernel launch: the worker process aborts (needs --isolation subprocess).
    #[arg(long, env = "HIPINFER_ABORT_RATE", default_value_t = 0.0)]
    pub abort_rate: f64,
    /// Every reset-class fault aborts the process instead of returning its code, as ROCm <= 5
    /// does on a GPU memory fault (needs --isolation subprocess).
    #[arg(long, env = "HIPINFER_ABORT_ON_FAULT")]
    pub abort_on_fault: bool,
    /// Per kernel launch: a kernel that never finishes — its synchronize never returns (HIP has
    /// no timeout), until the step deadline (--step-timeout) abandons the step (in-process) or
    /// kills the worker (subprocess).
    #[arg(long, env = "HIPINFER_HANG_RATE", default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Per kernel launch: a real GPU memory fault (a kernel that writes out of bounds), as
    /// the hardware reports it; needs --backend hip or cuda (with --isolation subprocess it is
    /// survived by replacing the poisoned worker).
    #[arg(long, env = "HIPINFER_REAL_FAULT_RATE", default_value_t = 0.0)]
    pub real_fault_rate: f64,
    /// Tokens generated per request (with `--model FILE.gguf`).
    #[arg(long, env = "HIPINFER_CHAOS_MAX_TOKENS", default_value_t = 32)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

#[derive(Args)]
pub struct InfoArgs {
    /// The GPU to probe.
    #[arg(long, env = "HIPINFER_DEVICE", default_value_t = 0)]
    pub device: i32,
    /// A GGUF model file to describe instead (architecture, sizes, tensor types).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
}
