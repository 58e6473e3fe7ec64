//! The fault campaign behind `hipinfer chaos`: the same requests once without faults (the
//! reference) and once through a `FaultyBackend` injecting real HIP codes at the given per-call
//! rates, then an account of what came back: succeeded, failed, lost, duplicated, and outputs
//! that differ from the reference.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::backend::{FaultDomain, FaultPlan, StickyScope};
use crate::engine::{EmbedRequest, EngineConfig, EngineError, InferenceEngine};
use crate::error::HipError;
use crate::isolation::Isolation;

use super::corpus::corpus;

/// HIP codes the campaign injects.
pub const TRANSIENT_CODE: i32 = 304; // hipErrorOperatingSystem: retried in place
pub const OOM_CODE: i32 = HipError::OUT_OF_MEMORY; // reclaimed, retried
pub const RESET_CODE: i32 = 700; // hipErrorIllegalAddress: sticky, the step is replayed

/// A campaign's settings.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The engine settings (model folder, threads, retry policy…); the backend is the CPU.
    pub engine: EngineConfig,
    pub requests: usize,
    pub concurrency: usize,
    pub seed: u64,
    /// Per device call, the rate of each fault.
    pub transient_rate: f64,
    pub oom_rate: f64,
    pub reset_rate: f64,
    /// How far a sticky (reset-class) fault reaches: `context` (a reset clears it) or
    /// `process` (every later call of the process fails with it, as ROCm ≥ 6 and CUDA do).
    pub sticky_scope: StickyScope,
    /// The process a process-scoped fault poisons: this one (the default), or a simulated one
    /// (tests that run several campaigns in one process).
    pub domain: FaultDomain,
    /// Every reset-class fault aborts the process instead (as ROCm ≤ 5 does); subprocess only.
    pub abort_on_fault: bool,
    /// Per kernel launch, the rate at which the process aborts (subprocess isolation only) or
    /// a kernel never finishes (its wait hangs until the step deadline).
    pub abort_rate: f64,
    pub hang_rate: f64,
    /// Per kernel launch, the rate of real device memory faults (an out-of-bounds write on the
    /// GPU): needs `engine.backend` hip or cuda.
    pub real_fault_rate: f64,
    /// A request not answered within this long counts as lost.
    pub request_timeout: Duration,
}

impl ChaosConfig {
    /// `requests` requests at `concurrency`, no faults yet.
    pub fn new(engine: EngineConfig, requests: usize, concurrency: usize, seed: u64) -> Self {
        ChaosConfig {
            engine,
            requests,
            concurrency,
            seed,
            transient_rate: 0.0,
            oom_rate: 0.0,
            reset_rate: 0.0,
            sticky_scope: StickyScope::Context,
            domain: FaultDomain::process(),
            abort_on_fault: false,
            abort_rate: 0.0,
            hang_rate: 0.0,
            real_fault_rate: 0.0,
            request_timeout: Duration::from_secs(300),
        }
    }

    fn validate(&self) -> Result<(), EngineError> {
        let bad = |field: &str, message: String| {
            Err(EngineError::Config(crate::ConfigError::new(field, message)))
        };
        for (field, rate) in [
            ("transient_rate", self.transient_rate),
            ("oom_rate", self.oom_rate),
            ("reset_rate", self.reset_rate),
            ("abort_rate", self.abort_rate),
            ("hang_rate", self.hang_rate),
            ("real_fault_rate", self.real_fault_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(field, format!("{rate} is not a rate between 0 and 1"));
            }
        }
        let aborts = self.abort_rate > 0.0 || self.abort_on_fault;
        if !cfg!(feature = "fault-injection") && (aborts || self.hang_rate > 0.0) {
            return bad(
                "abort_rate",
                "aborts and hangs need the fault-injection feature (hipinfer has it)".into(),
            );
        }
        if self.real_fault_rate > 0.0 {
            if !cfg!(feature = "fault-injection") {
                return bad(
                    "real_fault_rate",
                    "real faults need the fault-injection feature (hipinfer has it)".into(),
                );
            }
            if !matches!(
                self.engine.backend,
                crate::backend::BackendChoice::Hip | crate::backend::BackendChoice::Cuda
            ) {
                return bad(
                    "real_fault_rate",
                    format!(
                        "a real memory fault needs a GPU backend: use --backend hip or cuda \
                         (not {})",
                        self.engine.backend
                    ),
                );
            }
        }
        if aborts && self.engine.isolation != Isolation::Subprocess {
            return bad(
                "isolation",
                "aborts take the process down: they need --isolation subprocess".into(),
            );
        }
        if self.requests == 0 {
            return bad("requests", "must be at least 1".into());
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1".into());
        }
        Ok(())
    }

    fn plan(&self) -> FaultPlan {
        let plan = fault_plan(
            self.seed,
            self.transient_rate,
            self.oom_rate,
            self.reset_rate,
        )
        .with_sticky_scope(self.sticky_scope)
        .with_domain(self.domain.clone());
        #[cfg(feature = "fault-injection")]
        let plan = {
            use crate::error::Op;
            let mut plan = plan
                .with_abort_rate(Some(Op::Launch), self.abort_rate)
                .with_hang_rate(Some(Op::Launch), self.hang_rate)
                .with_real_fault_rate(Some(Op::Launch), self.real_fault_rate);
            plan.abort_on_fault = self.abort_on_fault;
            plan
        };
        plan
    }
}

/// Faults on every device call at these rates: transient (304), out of memory (2), poisoned
/// context (700, sticky).
pub fn fault_plan(seed: u64, transient: f64, oom: f64, reset: f64) -> FaultPlan {
    FaultPlan::new(seed)
        .with_rate(None, TRANSIENT_CODE, transient)
        .with_rate(None, OOM_CODE, oom)
        .with_rate(None, RESET_CODE, reset)
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Injected {
    pub transient: u64,
    pub oom: u64,
    pub reset: u64,
    pub abort: u64,
    pub hang: u64,
}

/// What a campaign found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChaosReport {
    pub requests: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Requests that got no answer at all within the timeout.
    pub lost: usize,
    /// Inputs completed more than once, as the engine counted them
    /// (`hipinfer_duplicate_completions_total`), plus requests answered more than once.
    pub duplicated: usize,
    /// Answers that differ from the fault-free reference by more than 1e-6 in any component.
    pub mismatched: usize,
    pub injected: Injected,
    /// Device calls retried in place (`hipinfer_gpu_retry_attempts_total`, all operations).
    pub op_retries: u64,
    /// Cache reclaims after out-of-memory errors.
    pub reclaims: u64,
    /// Failed steps replayed after a device reset.
    pub step_replays: u64,
    /// Worker processes restarted (subprocess isolation).
    pub worker_restarts: u64,
    /// Steps abandoned at the step deadline in this process (hung kernels).
    pub abandoned_steps: u64,
    /// Times the device was found lost for the process (in-process, process-scoped faults).
    pub device_lost: u64,
    /// Requests answered (in part) by the CPU fallback, and the time spent degraded.
    pub degraded_requests: usize,
    pub degraded_seconds: f64,
    /// Self-healing tries, successful and failed.
    pub recovery_attempts: u64,
    pub recoveries: u64,
    /// Results that came after their request was answered (discarded, never answered twice).
    pub discarded_results: u64,
    /// From a worker's death to its replacement's first completed step (the replayed step's
    /// own time included), p50 and p99 (subprocess).
    pub recovery_p50_ms: f64,
    pub recovery_p99_ms: f64,
    /// From a worker's death to its replacement being ready (started, weights loaded).
    pub restart_p50_ms: f64,
    pub restart_p99_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub wall_seconds: f64,
}

impl ChaosReport {
    /// Nothing lost, nothing wrong: the campaign's pass condition.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.mismatched == 0 && self.duplicated == 0
    }
}

/// What came back for one request: its embeddings and whether the CPU fallback served it, or
/// the error's text.
type Answer = Result<(Vec<Vec<f32>>, bool), String>;

/// The largest difference between two answers a campaign tolerates.
pub const TOLERANCE: f32 = 1e-6;

/// Runs a campaign; `progress(done, total)` is called as requests of the faulty run finish.
pub fn run_campaign(
    config: &ChaosConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ChaosReport, EngineError> {
    config.validate()?;
    // Distinct texts, and the requests as lists of indices into them (1 to 3 texts each).
    let pool = corpus(config.requests.clamp(1, 256), config.seed);
    let requests: Vec<Vec<usize>> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(config.seed ^ 0x5eed);
        (0..config.requests)
            .map(|_| {
                (0..rng.random_range(1..=3))
                    .map(|_| rng.random_range(0..pool.len()))
                    .collect()
            })
            .collect()
    };

    // The reference: every distinct text, without faults, in this process.
    let reference_engine = InferenceEngine::new(EngineConfig {
        registry: None,
        faults: None,
        events: None,
        isolation: Isolation::InProcess,
        ..config.engine.clone()
    })?;
    let mut reference = Vec::with_capacity(pool.len());
    for chunk in pool.chunks(config.engine.batching.max_client_batch_size) {
        reference.extend(reference_engine.embed(chunk)?.embeddings);
    }
    drop(reference_engine);

    // The faulty run.
    let engine = InferenceEngine::new(EngineConfig {
        registry: None,
        faults: Some(config.plan()),
        ..config.engine.clone()
    })?;
    let answers: Vec<Mutex<Vec<Answer>>> = (0..requests.len())
        .map(|_| Mutex::new(Vec::new()))
        .collect();
    let latencies = Mutex::new(Vec::with_capacity(requests.len()));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| EngineError::Backend(format!("could not start the async runtime: {e}")))?;
    let started = Instant::now();
    runtime.block_on(async {
        let clients = (0..config.concurrency).map(|_| async {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(indices) = requests.get(i) else {
                    break;
                };
                let texts: Vec<String> = indices.iter().map(|&t| pool[t].clone()).collect();
                let t = Instant::now();
                let call = engine.embed_async(EmbedRequest::new(texts));
                match tokio::time::timeout(config.request_timeout, call).await {
                    Err(_elapsed) => {} // no answer: lost
                    Ok(result) => {
                        latencies.lock().push(t.elapsed().as_secs_f64() * 1e3);
                        answers[i].lock().push(
                            result
                                .map(|r| (r.embeddings, r.degraded))
                                .map_err(|e| e.to_string()),
                        );
                    }
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, requests.len());
            }
        });
        futures::future::join_all(clients).await;
    });
    let wall_seconds = started.elapsed().as_secs_f64();
    let faults = engine.fault_totals().unwrap_or_default();
    let milliseconds = |mut seconds: Vec<f64>| {
        seconds.iter_mut().for_each(|s| *s *= 1e3);
        seconds.sort_by(f64::total_cmp);
        seconds
    };
    let status = engine.worker_status();
    let recoveries = milliseconds(status.map(|w| w.recovery_seconds()).unwrap_or_default());
    let restarts = milliseconds(status.map(|w| w.restart_seconds()).unwrap_or_default());

    let metrics = engine.metrics();
    let mut report = ChaosReport {
        requests: requests.len(),
        succeeded: 0,
        failed: 0,
        lost: 0,
        duplicated: metrics.duplicate_completions.get() as usize,
        mismatched: 0,
        injected: Injected {
            transient: faults.code(TRANSIENT_CODE),
            oom: faults.code(OOM_CODE),
            reset: faults.code(RESET_CODE),
            abort: faults.aborts,
            hang: faults.hangs,
        },
        op_retries: counter_total(&engine, "hipinfer_gpu_retry_attempts_total"),
        reclaims: faults.reclaims,
        step_replays: engine.metrics().replays_total(),
        worker_restarts: counter_total(&engine, "hipinfer_worker_restarts_total"),
        abandoned_steps: metrics.abandoned_steps.get(),
        device_lost: metrics.device_lost.get(),
        degraded_requests: 0,
        degraded_seconds: engine.degraded_time().as_secs_f64(),
        recovery_attempts: metrics.recovery_attempts("success")
            + metrics.recovery_attempts("failure"),
        recoveries: metrics.recovery_attempts("success"),
        discarded_results: metrics.discarded_results.get(),
        recovery_p50_ms: percentile(&recoveries, 0.50),
        recovery_p99_ms: percentile(&recoveries, 0.99),
        restart_p50_ms: percentile(&restarts, 0.50),
        restart_p99_ms: percentile(&restarts, 0.99),
        p50_ms: 0.0,
        p99_ms: 0.0,
        wall_seconds,
    };
    for (indices, answers) in requests.iter().zip(&answers) {
        let answers = answers.lock();
        match answers.len() {
            0 => report.lost += 1,
            1 => {}
            _ => report.duplicated += 1,
        }
        match answers.first() {
            Some(Ok((embeddings, degraded))) => {
                report.succeeded += 1;
                report.degraded_requests += usize::from(*degraded);
                let wrong = embeddings.len() != indices.len()
                    || indices.iter().zip(embeddings).any(|(&t, got)| {
                        got.len() != reference[t].len()
                            || got
                                .iter()
                                .zip(&reference[t])
                                .any(|(a, b)| (a - b).abs() > TOLERANCE)
                    });
                if wrong {
                    report.mismatched += 1;
                }
            }
            Some(Err(error)) => {
                report.failed += 1;
                tracing::warn!("a chaos request failed: {error}");
            }
            None => {}
        }
    }
    let mut latencies = latencies.into_inner();
    latencies.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&latencies, 0.50);
    report.p99_ms = percentile(&latencies, 0.99);
    Ok(report)
}

/// The sum of a counter family's series in the engine's registry (0 when absent).
fn counter_total(engine: &InferenceEngine, name: &str) -> u64 {
    engine
        .registry()
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// The `p` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
