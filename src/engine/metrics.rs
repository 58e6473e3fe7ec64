//! The engine's Prometheus metrics, in the spirit of TEI's (`te_*`): requests by outcome, where
//! their time went, input and batch sizes, the queue — plus the replay ladder's own counters.
//! Registered in the same registry as the retry layer's `hipinfer_gpu_*` series.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use crate::error::Recovery;

/// Why a request failed: the `reason` label of `hipinfer_request_failure_total`.
pub const FAILURE_REASONS: [&str; 10] = [
    "empty",
    "validation",
    "payload_too_large",
    "overloaded",
    "deadline",
    "backend",
    "unhealthy",
    "shutdown",
    "config",
    "dropped",
];

/// How a self-healing try went: the `outcome` label of `hipinfer_recovery_attempts_total`.
pub const RECOVERY_OUTCOMES: [&str; 2] = ["success", "failure"];

/// Every engine metric.
#[derive(Clone)]
pub struct EngineMetrics {
    pub requests: IntCounter,
    pub successes: IntCounter,
    failures: IntCounterVec,
    pub request_duration: Histogram,
    pub queue_duration: Histogram,
    pub inference_duration: Histogram,
    pub tokenization_duration: Histogram,
    pub input_length: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub queue_size: IntGauge,
    pub in_flight: IntGauge,
    pub steps_ok: IntCounter,
    pub steps_failed: IntCounter,
    step_replays: IntCounterVec,
    pub backend_resets: IntCounter,
    pub duplicate_completions: IntCounter,
    pub discarded_results: IntCounter,
    pub degraded: IntGauge,
    pub degraded_requests: IntCounter,
    recovery_attempts: IntCounterVec,
    pub abandoned_steps: IntCounter,
    pub device_lost: IntCounter,
    pub health_probes: IntCounter,
    pub health_checks: IntCounter,
    pub tokenize_requests: IntCounter,
}

impl std::fmt::Debug for EngineMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineMetrics").finish_non_exhaustive()
    }
}

/// TEI's duration buckets: 35 steps of ×1.5 from 15 µs (to about 20 min).
fn duration_buckets() -> Vec<f64> {
    exponential_buckets(15e-6, 1.5, 35).expect("valid buckets")
}

impl EngineMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<EngineMetrics> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> prometheus::Result<Histogram> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let failures = IntCounterVec::new(
            Opts::new(
                "hipinfer_request_failure_total",
                "Requests that failed, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        for reason in FAILURE_REASONS {
            failures.with_label_values(&[reason]);
        }
        let step_replays = IntCounterVec::new(
            Opts::new(
                "hipinfer_step_replays_total",
                "Failed steps replayed from their host-side inputs, by the failure's recovery class",
            ),
            &["class"],
        )?;
        registry.register(Box::new(step_replays.clone()))?;
        for class in Recovery::ALL {
            step_replays.with_label_values(&[class.as_str()]);
        }
        let recovery_attempts = IntCounterVec::new(
            Opts::new(
                "hipinfer_recovery_attempts_total",
                "Self-healing tries at bringing a lost device back, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(recovery_attempts.clone()))?;
        for outcome in RECOVERY_OUTCOMES {
            recovery_attempts.with_label_values(&[outcome]);
        }
        let tokens = exponential_buckets(2.0, 2.0, 10)?; // 2 … 1024
        Ok(EngineMetrics {
            requests: counter("hipinfer_requests_total", "Requests received")?,
            successes: counter(
                "hipinfer_request_success_total",
                "Requests answered with embeddings",
            )?,
            failures,
            request_duration: histogram(
                "hipinfer_request_duration_seconds",
                "Time from receiving a request to answering it",
                duration_buckets(),
            )?,
            queue_duration: histogram(
                "hipinfer_queue_duration_seconds",
                "Time a request waited before its first step started",
                duration_buckets(),
            )?,
            inference_duration: histogram(
                "hipinfer_inference_duration_seconds",
                "Time of the steps that ran a request (failed ones included)",
                duration_buckets(),
            )?,
            tokenization_duration: histogram(
                "hipinfer_tokenization_duration_seconds",
                "Time tokenizing a request",
                duration_buckets(),
            )?,
            input_length: histogram(
                "hipinfer_input_length",
                "Tokens per input, special tokens included",
                tokens.clone(),
            )?,
            batch_size: histogram(
                "hipinfer_batch_size",
                "Sequences per step",
                exponential_buckets(1.0, 2.0, 10)?,
            )?,
            batch_tokens: histogram(
                "hipinfer_batch_tokens",
                "Padded tokens per step (sequences × longest)",
                exponential_buckets(8.0, 2.0, 12)?,
            )?,
            queue_size: gauge("hipinfer_queue_size", "Inputs waiting for a step")?,
            in_flight: gauge(
                "hipinfer_requests_in_flight",
                "Requests accepted and not yet answered",
            )?,
            steps_ok: counter(
                "hipinfer_steps_succeeded_total",
                "Steps that produced embeddings",
            )?,
            steps_failed: counter(
                "hipinfer_steps_failed_total",
                "Steps that failed (and were replayed or failed their inputs)",
            )?,
            step_replays,
            backend_resets: counter(
                "hipinfer_backend_resets_total",
                "Backend resets (new context, weights uploaded again) after failed steps",
            )?,
            duplicate_completions: counter(
                "hipinfer_duplicate_completions_total",
                "Results for an input that was completed already (never answered twice; should stay 0)",
            )?,
            discarded_results: counter(
                "hipinfer_discarded_results_total",
                "Results that came after their request was answered (a deadline, an abandoned step)",
            )?,
            degraded: gauge(
                "hipinfer_degraded",
                "1 while requests are served by the CPU fallback because the device is lost",
            )?,
            degraded_requests: counter(
                "hipinfer_degraded_requests_total",
                "Requests answered with at least one input computed on the CPU fallback",
            )?,
            recovery_attempts,
            abandoned_steps: counter(
                "hipinfer_abandoned_steps_total",
                "Steps (or probes, resets) that missed the step deadline in this process and were abandoned with their thread",
            )?,
            device_lost: counter(
                "hipinfer_device_lost_total",
                "Times the device was found lost for this process (a reset failed with a sticky code, or recovery ran out)",
            )?,
            health_probes: counter(
                "hipinfer_health_probes_total",
                "Probe kernels run for health checks",
            )?,
            tokenize_requests: counter(
                "hipinfer_tokenize_requests_total",
                "Tokenize requests received (their failures count in hipinfer_request_failure_total)",
            )?,
            health_checks: counter(
                "hipinfer_health_checks_total",
                "Readiness checks answered (most without a probe; concurrent ones share one)",
            )?,
        })
    }

    /// Counts a failed request.
    pub fn failed(&self, reason: &str) {
        let reason = if FAILURE_REASONS.contains(&reason) {
            reason
        } else {
            "backend"
        };
        self.failures.with_label_values(&[reason]).inc();
    }

    /// Counts a self-healing try.
    pub fn recovery_attempt(&self, success: bool) {
        let outcome = RECOVERY_OUTCOMES[usize::from(!success)];
        self.recovery_attempts.with_label_values(&[outcome]).inc();
    }

    /// Self-healing tries so far with `outcome` (`success`, `failure`).
    pub fn recovery_attempts(&self, outcome: &str) -> u64 {
        self.recovery_attempts.with_label_values(&[outcome]).get()
    }

    /// Counts a replayed step.
    pub fn replayed(&self, class: Recovery) {
        self.step_replays.with_label_values(&[class.as_str()]).inc();
    }

    /// Replayed steps so far, over every class.
    pub fn replays_total(&self) -> u64 {
        Recovery::ALL
            .iter()
            .map(|c| self.step_replays.with_label_values(&[c.as_str()]).get())
            .sum()
    }
}
