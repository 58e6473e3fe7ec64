//! The fault campaign for a language model (`hipinfer chaos --model FILE.gguf`): the same
//! requests (chat prompts from the corpus, greedy and seeded sampling mixed) once on a
//! fault-free engine — the reference — and once on an engine whose device faults at the given
//! per-call rates; then token ids compared request by request. Lost (no end within the
//! timeout), duplicated (an event after the end), mismatched and failed are counted in tokens
//! and in requests; the campaign passes only when all are zero.

use std::time::{Duration, Instant};

use prometheus::Registry;
use serde::Serialize;

use crate::backend::{FaultDomain, FaultPlan, StickyScope};
use crate::generation::{
    Finished, GenerationConfig, GenerationEngine, GenerationError, GenerationEvent, RunnerOptions,
};
use crate::isolation::WorkerConfig;
use crate::llm::{ChatMessage, GenerateRequest, SamplingParams};
use crate::retry::RetryConfig;

use super::campaign::{fault_plan, percentile};
use super::corpus::corpus;

/// A generation campaign's settings.
#[derive(Debug, Clone)]
pub struct GenerationChaosConfig {
    pub model: std::path::PathBuf,
    pub engine: GenerationConfig,
    pub threads: Option<usize>,
    pub retry: RetryConfig,
    pub requests: usize,
    pub concurrency: usize,
    pub max_tokens: usize,
    pub seed: u64,
    /// Per device call.
    pub transient_rate: f64,
    pub oom_rate: f64,
    pub reset_rate: f64,
    /// Per kernel launch (a step's graph is one): the worker process aborts, or a kernel
    /// never finishes. Both need `worker`.
    pub abort_rate: f64,
    pub hang_rate: f64,
    pub sticky_scope: StickyScope,
    pub domain: FaultDomain,
    pub request_timeout: Duration,
    /// Run the steps in a supervised worker process (`None`: in this process).
    pub worker: Option<WorkerConfig>,
    /// A worker's step deadline (hangs): `None` for the engine's default.
    pub step_timeout: Option<Duration>,
}

/// Device errors of the faulty run by kind (`hipinfer_gpu_errors_total` by code).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceErrors {
    pub transient: u64,
    pub oom: u64,
    pub reset: u64,
}

/// What a generation campaign found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GenerationChaosReport {
    pub requests: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Requests whose ids differ from the reference.
    pub mismatched: usize,
    /// Token positions that differ (or are missing, or extra) against the reference.
    pub lost_tokens: usize,
    pub duplicated_tokens: usize,
    pub mismatched_tokens: usize,
    pub reference_tokens: usize,
    /// Errors the device calls returned, by kind (a sticky fault's repeats included).
    pub device_errors: DeviceErrors,
    pub op_retries: u64,
    pub failed_steps: u64,
    pub recoveries: u64,
    /// Worker processes replaced (died, hung, or lost their context for good).
    pub worker_restarts: u64,
    /// KV caches rebuilt from the host, and the tokens prefilled again for them.
    pub replays: u64,
    pub replayed_tokens: u64,
    /// Per request that lived through a failed step: time in failed steps and recoveries.
    pub recovery_p50_ms: f64,
    pub recovery_p99_ms: f64,
    pub reference_seconds: f64,
    pub faulty_seconds: f64,
}

impl GenerationChaosReport {
    pub fn passed(&self) -> bool {
        self.failed == 0
            && self.lost == 0
            && self.duplicated == 0
            && self.mismatched == 0
            && self.succeeded == self.requests
    }
}

/// One request's outcome.
#[derive(Debug)]
enum Outcome {
    Done(Box<Finished>, usize),
    Failed(GenerationError),
    Lost,
}

/// The campaign's requests: chat prompts, half greedy, half sampled with a seed of their own.
fn requests(
    config: &GenerationChaosConfig,
    engine: &GenerationEngine,
) -> Result<Vec<GenerateRequest>, String> {
    let model = engine.model();
    let template = model.chat_template();
    corpus(config.requests, config.seed)
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let text: String = text.chars().take(300).collect();
            let prompt = match template {
                Some(t) => t
                    .render(&[ChatMessage::new("user", text)], true)
                    .map_err(|e| e.to_string())?,
                None => text,
            };
            let mut request = GenerateRequest::greedy(
                model
                    .tokenizer()
                    .encode(&prompt)
                    .map_err(|e| e.to_string())?,
                config.max_tokens,
            );
            if i % 2 == 1 {
                request.sampling = SamplingParams {
                    temperature: 0.8,
                    top_p: 0.95,
                    seed: config.seed.wrapping_add(i as u64),
                    ..SamplingParams::default()
                };
            }
            Ok(request)
        })
        .collect()
}

/// Runs `requests` on `engine`, `concurrency` at a time.
fn run(
    engine: &GenerationEngine,
    requests: &[GenerateRequest],
    concurrency: usize,
    timeout: Duration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Outcome> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = parking_lot::Mutex::new((0..requests.len()).map(|_| None).collect::<Vec<_>>());
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(requests.len()).max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(request) = requests.get(i) else {
                    return;
                };
                let outcome = one(engine, request, timeout);
                outcomes.lock()[i] = Some(outcome);
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(n, requests.len());
            });
        }
    });
    outcomes
        .into_inner()
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Lost))
        .collect()
}

/// One request: its end, with events after the end counted; an overloaded admission waits
/// and tries again (the campaign counts what the engine accepted).
fn one(engine: &GenerationEngine, request: &GenerateRequest, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut stream = loop {
        match engine.submit(request.clone()) {
            Ok(stream) => break stream,
            Err(GenerationError::Overloaded { .. }) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Outcome::Failed(e),
        }
    };
    let mut end = None;
    let mut extra = 0;
    let mut streamed = Vec::new();
    // The engine answers every stream; the timeout is checked between events.
    while let Some(event) = stream.next_blocking() {
        match event {
            _ if end.is_some() => extra += 1,
            GenerationEvent::Token { id, .. } => streamed.extend(id),
            GenerationEvent::Finished(done) => {
                if done.generated_ids != streamed {
                    extra += 1; // the stream and the end disagree
                }
                end = Some(Outcome::Done(done, 0));
            }
            GenerationEvent::Failed(e) => end = Some(Outcome::Failed(e)),
        }
        if end.is_none() && started.elapsed() > timeout {
            return Outcome::Lost;
        }
    }
    match end {
        Some(Outcome::Done(done, _)) => Outcome::Done(done, extra),
        Some(other) => other,
        None => Outcome::Lost,
    }
}

fn counter(registry: &Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Runs the campaign.
pub fn run_generation_campaign(
    config: &GenerationChaosConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<GenerationChaosReport, String> {
    for (field, rate) in [
        ("transient_rate", config.transient_rate),
        ("oom_rate", config.oom_rate),
        ("reset_rate", config.reset_rate),
        ("abort_rate", config.abort_rate),
        ("hang_rate", config.hang_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{field}: {rate} is not a rate between 0 and 1"));
        }
    }
    if (config.abort_rate > 0.0 || config.hang_rate > 0.0) && config.worker.is_none() {
        return Err(
            "abort_rate, hang_rate: aborts and hangs take the process down, they need a worker \
             process (--isolation subprocess)"
                .into(),
        );
    }
    if (config.abort_rate > 0.0 || config.hang_rate > 0.0) && !cfg!(feature = "fault-injection") {
        return Err("abort_rate, hang_rate: need the fault-injection feature".into());
    }
    if config.requests == 0 || config.concurrency == 0 || config.max_tokens == 0 {
        return Err("requests, concurrency and max_tokens must be at least 1".into());
    }
    let open = |faults: Option<FaultPlan>, registry: &Registry| {
        let options = RunnerOptions {
            threads: config.threads,
            retry: config.retry.clone(),
            faults,
            seed: Some(config.seed),
            worker: config.worker.clone(),
            step_timeout: config.step_timeout,
        };
        GenerationEngine::open(
            &config.model,
            config.engine.clone(),
            options,
            registry.clone(),
        )
        .map_err(|e| e.to_string())
    };
    let reference_registry = Registry::new();
    let reference = open(None, &reference_registry)?;
    let requests = requests(config, &reference)?;
    let started = Instant::now();
    let want = run(
        &reference,
        &requests,
        config.concurrency,
        config.request_timeout,
        progress,
    );
    let reference_seconds = started.elapsed().as_secs_f64();
    drop(reference);
    let want: Vec<Vec<u32>> = want
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o {
            Outcome::Done(done, _) => Ok(done.generated_ids),
            Outcome::Failed(e) => Err(format!("the fault-free reference failed request {i}: {e}")),
            Outcome::Lost => Err(format!("the fault-free reference lost request {i}")),
        })
        .collect::<Result<_, _>>()?;
    let plan = fault_plan(
        config.seed,
        config.transient_rate,
        config.oom_rate,
        config.reset_rate,
    )
    .with_sticky_scope(config.sticky_scope)
    .with_domain(config.domain.clone());
    #[cfg(feature = "fault-injection")]
    let plan = plan
        .with_abort_rate(Some(crate::error::Op::Launch), config.abort_rate)
        .with_hang_rate(Some(crate::error::Op::Launch), config.hang_rate);
    let registry = Registry::new();
    let engine = open(Some(plan), &registry)?;
    let started = Instant::now();
    let got = run(
        &engine,
        &requests,
        config.concurrency,
        config.request_timeout,
        progress,
    );
    let faulty_seconds = started.elapsed().as_secs_f64();
    let mut report = GenerationChaosReport {
        requests: requests.len(),
        reference_tokens: want.iter().map(Vec::len).sum(),
        reference_seconds,
        faulty_seconds,
        ..GenerationChaosReport::default()
    };
    let mut recoveries = Vec::new();
    for (outcome, want) in got.iter().zip(&want) {
        match outcome {
            Outcome::Done(done, extra) => {
                report.duplicated += usize::from(*extra > 0);
                report.duplicated_tokens += extra;
                let ids = &done.generated_ids;
                let differing = ids.iter().zip(want).filter(|(a, b)| a != b).count();
                report.mismatched_tokens += differing;
                report.lost_tokens += want.len().saturating_sub(ids.len());
                report.duplicated_tokens += ids.len().saturating_sub(want.len());
                if ids != want {
                    report.mismatched += 1;
                } else {
                    report.succeeded += 1;
                }
                if done.report.failed_steps > 0 {
                    recoveries.push(done.report.recovery_seconds * 1000.0);
                }
            }
            Outcome::Failed(_) => {
                report.failed += 1;
                report.lost_tokens += want.len();
            }
            Outcome::Lost => {
                report.lost += 1;
                report.lost_tokens += want.len();
            }
        }
    }
    recoveries.sort_by(f64::total_cmp);
    report.recovery_p50_ms = percentile(&recoveries, 0.50);
    report.recovery_p99_ms = percentile(&recoveries, 0.99);
    report.op_retries = counter(&registry, "hipinfer_gpu_retry_attempts_total");
    report.failed_steps = counter(&registry, "hipinfer_generation_failed_steps_total");
    report.recoveries = counter(&registry, "hipinfer_generation_recoveries_total");
    report.replays = counter(&registry, "hipinfer_generation_replays_total");
    report.worker_restarts = counter(&registry, "hipinfer_worker_restarts_total");
    report.replayed_tokens = counter(&registry, "hipinfer_generation_replayed_tokens_total");
    let injected = |code: &str| {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "hipinfer_gpu_errors_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "code" && l.value() == code)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum::<u64>()
    };
    report.device_errors = DeviceErrors {
        transient: injected(crate::error::codes::name_of(super::TRANSIENT_CODE)),
        oom: injected(crate::error::codes::name_of(super::OOM_CODE)),
        reset: injected(crate::error::codes::name_of(super::RESET_CODE)),
    };
    Ok(report)
}
