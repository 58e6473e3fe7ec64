//! The Prometheus scrape after a scripted run: exact series and values, as Prometheus reads them.

mod support;

use std::sync::Arc;

use hipinfer::retry::{retry_operation, FakeClock, RetryCall};
use hipinfer::{HipError, Op};
use support::{plain_policy, quiet_state, scrape};

#[test]
fn a_scripted_run_gives_exact_counters() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = plain_policy();

    // 1. allocate: OOM twice, then success (2 retries, success on attempt 3, reclaimed twice).
    let mut reclaims = 0;
    let mut reclaim = || reclaims += 1;
    RetryCall::new(Op::Allocate, &policy, &state)
        .reclaim_with(&mut reclaim)
        .run(|a| {
            if a <= 2 {
                Err(HipError::new(2, Op::Allocate))
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(reclaims, 2);
    // 2. launch: first-try success, twice.
    for _ in 0..2 {
        retry_operation(Op::Launch, &policy, &state, |_| Ok::<_, HipError>(())).unwrap();
    }
    // 3. launch: always 216 → exhausted after 3 retries.
    retry_operation(Op::Launch, &policy, &state, |_| {
        Err::<(), _>(HipError::new(216, Op::Launch))
    })
    .unwrap_err();
    // 4. synchronize: illegal address → reset, no retry.
    retry_operation(Op::Synchronize, &policy, &state, |_| {
        Err::<(), _>(HipError::new(700, Op::Synchronize))
    })
    .unwrap_err();
    // 5. launch: invalid value → permanent.
    retry_operation(Op::Launch, &policy, &state, |_| {
        Err::<(), _>(HipError::new(1, Op::Launch))
    })
    .unwrap_err();

    let text = scrape(state.registry().unwrap());
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let expect = [
        "hipinfer_gpu_retry_attempts_total{op=\"allocate\"} 2",
        "hipinfer_gpu_retry_attempts_total{op=\"launch\"} 3",
        "hipinfer_gpu_retry_attempts_total{op=\"synchronize\"} 0",
        "hipinfer_gpu_retry_success_total{op=\"allocate\"} 1",
        "hipinfer_gpu_retry_success_total{op=\"launch\"} 0",
        "hipinfer_gpu_retry_failed_total{op=\"launch\",reason=\"exhausted\"} 1",
        "hipinfer_gpu_retry_failed_total{op=\"launch\",reason=\"permanent\"} 1",
        "hipinfer_gpu_retry_failed_total{op=\"synchronize\",reason=\"reset\"} 1",
        "hipinfer_gpu_retry_failed_total{op=\"allocate\",reason=\"exhausted\"} 0",
        "hipinfer_gpu_errors_total{code=\"hipErrorOutOfMemory\",op=\"allocate\"} 2",
        "hipinfer_gpu_errors_total{code=\"hipErrorContextAlreadyInUse\",op=\"launch\"} 4",
        "hipinfer_gpu_errors_total{code=\"hipErrorIllegalAddress\",op=\"synchronize\"} 1",
        "hipinfer_gpu_errors_total{code=\"hipErrorInvalidValue\",op=\"launch\"} 1",
        "hipinfer_gpu_retry_attempt_bucket{op=\"allocate\",le=\"2\"} 0",
        "hipinfer_gpu_retry_attempt_bucket{op=\"allocate\",le=\"3\"} 1",
        "hipinfer_gpu_retry_attempt_count{op=\"allocate\"} 1",
        "hipinfer_gpu_retry_attempt_sum{op=\"allocate\"} 3",
        "hipinfer_gpu_retry_attempt_count{op=\"launch\"} 2",
        "hipinfer_gpu_retry_attempt_sum{op=\"launch\"} 2",
        "hipinfer_gpu_retry_delay_seconds_count{op=\"allocate\"} 2",
        "hipinfer_gpu_retry_delay_seconds_sum{op=\"allocate\"} 0.03",
        "hipinfer_gpu_retry_delay_seconds_bucket{op=\"allocate\",le=\"0.01\"} 1",
        "hipinfer_gpu_retry_delay_seconds_bucket{op=\"allocate\",le=\"0.025\"} 2",
        "hipinfer_gpu_retry_delay_seconds_count{op=\"launch\"} 3",
        "hipinfer_gpu_retry_delay_seconds_sum{op=\"launch\"} 0.07",
        "hipinfer_circuit_breaker_state{device=\"0\"} 0",
    ];
    for line in expect {
        assert!(lines.contains(&line), "missing `{line}` in scrape:\n{text}");
    }
    for help in [
        "# TYPE hipinfer_gpu_retry_attempts_total counter",
        "# TYPE hipinfer_gpu_retry_attempt histogram",
        "# TYPE hipinfer_gpu_retry_delay_seconds histogram",
        "# TYPE hipinfer_circuit_breaker_state gauge",
        "# TYPE hipinfer_retry_budget_remaining gauge",
    ] {
        assert!(text.contains(help), "missing `{help}`");
    }
}

#[test]
fn metrics_register_in_the_callers_registry_once() {
    let registry = prometheus::Registry::new();
    let first = hipinfer::retry::RetryState::builder()
        .registry(registry.clone())
        .build();
    assert!(first.is_ok());
    let second = hipinfer::retry::RetryState::builder()
        .registry(registry)
        .build();
    let error = second.unwrap_err().to_string();
    assert!(error.contains("retry metrics"), "{error}");
}

#[test]
fn without_metrics_nothing_is_registered() {
    let state = hipinfer::retry::RetryState::builder()
        .without_metrics()
        .build()
        .unwrap();
    assert!(state.registry().is_none());
    retry_operation(Op::Launch, &plain_policy(), &state, |_| {
        Ok::<_, HipError>(())
    })
    .unwrap();
}
