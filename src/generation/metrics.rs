//! The generation engine's Prometheus metrics (`hipinfer_generation_*`), in the registry the
//! retry layer's `hipinfer_gpu_*` series are in: requests by outcome, prompt and generated
//! tokens, time to first token and per output token, running and waiting sequences, the KV
//! cache's use, and what recovery did (failed steps, device recoveries, re-prefills).

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// How a generation ended: the `outcome` label of `hipinfer_generation_requests_total`.
pub const OUTCOMES: [&str; 6] = [
    "stop",
    "length",
    "failed",
    "cancelled",
    "rejected",
    "shutdown",
];

/// Every generation metric.
#[derive(Clone)]
pub struct GenerationMetrics {
    requests: IntCounterVec,
    pub prompt_tokens: IntCounter,
    pub generated_tokens: IntCounter,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
    pub running: IntGauge,
    pub waiting: IntGauge,
    /// Rows of the KV cache reserved by live sequences, in thousandths of the budget.
    pub kv_cache_usage: prometheus::Gauge,
    pub steps: IntCounter,
    pub failed_steps: IntCounter,
    pub step_sequences: Histogram,
    recoveries: IntCounterVec,
    pub replays: IntCounter,
    pub replayed_tokens: IntCounter,
    pub isolated: IntCounter,
}

impl std::fmt::Debug for GenerationMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationMetrics").finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

impl GenerationMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "hipinfer_generation_requests_total",
                "Generation requests by how they ended (stop, length, failed, cancelled, \
                 rejected, shutdown)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        for outcome in OUTCOMES {
            requests.with_label_values(&[outcome]);
        }
        let recoveries = IntCounterVec::new(
            Opts::new(
                "hipinfer_generation_recoveries_total",
                "Device recoveries after a failed generation step, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(recoveries.clone()))?;
        for outcome in ["success", "failure"] {
            recoveries.with_label_values(&[outcome]);
        }
        let kv_cache_usage = prometheus::Gauge::new(
            "hipinfer_generation_kv_cache_usage_ratio",
            "Share of the KV-cache budget reserved by live sequences (0 to 1)",
        )?;
        registry.register(Box::new(kv_cache_usage.clone()))?;
        let seconds = exponential_buckets(0.005, 2.0, 14)?;
        Ok(GenerationMetrics {
            requests,
            prompt_tokens: counter(
                registry,
                "hipinfer_generation_prompt_tokens_total",
                "Prompt tokens of admitted generation requests",
            )?,
            generated_tokens: counter(
                registry,
                "hipinfer_generation_tokens_total",
                "Tokens generated and sent",
            )?,
            time_to_first_token: histogram(
                registry,
                "hipinfer_generation_time_to_first_token_seconds",
                "From admission to the first token",
                seconds.clone(),
            )?,
            time_per_output_token: histogram(
                registry,
                "hipinfer_generation_time_per_output_token_seconds",
                "Between consecutive tokens of a stream",
                exponential_buckets(0.001, 2.0, 14)?,
            )?,
            running: gauge(
                registry,
                "hipinfer_generation_running_sequences",
                "Sequences being decoded",
            )?,
            waiting: gauge(
                registry,
                "hipinfer_generation_waiting_sequences",
                "Sequences admitted, waiting for a place in the batch",
            )?,
            kv_cache_usage,
            steps: counter(
                registry,
                "hipinfer_generation_steps_total",
                "Forward passes run (all sequences of a step in one)",
            )?,
            failed_steps: counter(
                registry,
                "hipinfer_generation_failed_steps_total",
                "Forward passes that failed after the retry layer's tries",
            )?,
            step_sequences: histogram(
                registry,
                "hipinfer_generation_step_sequences",
                "Sequences in a forward pass",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )?,
            recoveries,
            replays: counter(
                registry,
                "hipinfer_generation_replays_total",
                "KV caches rebuilt from the host (prompt + generated tokens prefilled again)",
            )?,
            replayed_tokens: counter(
                registry,
                "hipinfer_generation_replayed_tokens_total",
                "Tokens prefilled again to rebuild KV caches",
            )?,
            isolated: counter(
                registry,
                "hipinfer_generation_isolated_total",
                "Sequences run alone after their steps kept failing",
            )?,
        })
    }

    /// Counts a request that ended with `outcome` (one of [`OUTCOMES`]).
    pub fn ended(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }

    pub fn recovered(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.recoveries.with_label_values(&[outcome]).inc();
    }
}
