//! Prometheus metrics of the retry layer. Label values come from closed enums (operation,
//! give-up reason, HIP error name, device index), and every per-operation handle is resolved once
//! at start-up, so the success path does no hashing or locking.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::error::Op;

use super::outcome::GiveUpReason;

/// Buckets of `hipinfer_gpu_retry_attempt`: the attempt that succeeded.
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 11.0, 16.0];
/// Buckets of `hipinfer_gpu_retry_delay_seconds`: 100 µs to 2 min.
const DELAY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0,
];

/// Handles for one operation.
#[derive(Clone)]
pub(crate) struct OpMetrics {
    pub retries: IntCounter,
    pub recovered: IntCounter,
    pub failed: [IntCounter; GiveUpReason::COUNT],
    pub succeeded_attempt: Histogram,
    pub delay_seconds: Histogram,
}

/// Every metric of the retry layer, registered in one registry.
#[derive(Clone)]
pub struct RetryMetrics {
    registry: Registry,
    per_op: Vec<OpMetrics>,
    errors: IntCounterVec,
    breaker_state: IntGaugeVec,
    budget_remaining: Gauge,
}

impl std::fmt::Debug for RetryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryMetrics").finish_non_exhaustive()
    }
}

impl RetryMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let retries = IntCounterVec::new(
            Opts::new(
                "hipinfer_gpu_retry_attempts_total",
                "Retries of device operations (attempts after the first)",
            ),
            &["op"],
        )?;
        let recovered = IntCounterVec::new(
            Opts::new(
                "hipinfer_gpu_retry_success_total",
                "Device operations that succeeded after at least one retry",
            ),
            &["op"],
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "hipinfer_gpu_retry_failed_total",
                "Device operations given up on, by reason",
            ),
            &["op", "reason"],
        )?;
        let succeeded_attempt = HistogramVec::new(
            HistogramOpts::new(
                "hipinfer_gpu_retry_attempt",
                "The attempt on which a device operation succeeded (1 = first call)",
            )
            .buckets(ATTEMPT_BUCKETS.to_vec()),
            &["op"],
        )?;
        let delay_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hipinfer_gpu_retry_delay_seconds",
                "Delay slept before a retry of a device operation",
            )
            .buckets(DELAY_BUCKETS.to_vec()),
            &["op"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "hipinfer_gpu_errors_total",
                "Errors returned by device operations, by HIP error name",
            ),
            &["op", "code"],
        )?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "hipinfer_circuit_breaker_state",
                "Circuit breaker state per device: 0 closed, 1 half-open, 2 open",
            ),
            &["device"],
        )?;
        let budget_remaining = Gauge::new(
            "hipinfer_retry_budget_remaining",
            "Retries the shared retry budget allows now (as of the last retry decision)",
        )?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(recovered.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(succeeded_attempt.clone()))?;
        registry.register(Box::new(delay_seconds.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(budget_remaining.clone()))?;

        let per_op = Op::ALL
            .iter()
            .map(|op| {
                let op = op.as_str();
                OpMetrics {
                    retries: retries.with_label_values(&[op]),
                    recovered: recovered.with_label_values(&[op]),
                    failed: GiveUpReason::ALL.map(|r| failed.with_label_values(&[op, r.as_str()])),
                    succeeded_attempt: succeeded_attempt.with_label_values(&[op]),
                    delay_seconds: delay_seconds.with_label_values(&[op]),
                }
            })
            .collect();
        Ok(RetryMetrics {
            registry: registry.clone(),
            per_op,
            errors,
            breaker_state,
            budget_remaining,
        })
    }

    /// The registry the metrics live in (to scrape, or to add the caller's own metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Retries of every operation so far (`hipinfer_gpu_retry_attempts_total`, summed).
    pub fn retries_total(&self) -> u64 {
        self.per_op.iter().map(|m| m.retries.get()).sum()
    }

    /// Errors returned by device operations so far (`hipinfer_gpu_errors_total`, summed).
    pub fn errors_total(&self) -> u64 {
        use prometheus::core::Collector;
        self.errors
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[inline]
    pub(crate) fn op(&self, op: Op) -> &OpMetrics {
        &self.per_op[op.index()]
    }

    pub(crate) fn count_error(&self, op: Op, code_label: &str) {
        self.errors
            .with_label_values(&[op.as_str(), code_label])
            .inc();
    }

    pub(crate) fn breaker_gauge(&self, device: i32) -> IntGauge {
        self.breaker_state
            .with_label_values(&[device.to_string().as_str()])
    }

    pub(crate) fn budget_gauge(&self) -> Gauge {
        self.budget_remaining.clone()
    }
}
