//! The circuit breaker's life on a fake clock: closed → open → half-open → closed / open again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hipinfer::retry::{
    retry_operation, Admission, BreakerConfig, BreakerState, BudgetConfig, CallOutcome,
    FailureRatio, FakeClock, GiveUpReason, RetryConfig, RetryPolicy, RetryState,
};
use hipinfer::{HipError, Op};
use prometheus::Registry;
use support::{ms, sample, scrape};

fn state(clock: &Arc<FakeClock>, breaker: BreakerConfig) -> (RetryState, Registry) {
    let registry = Registry::new();
    let state = RetryState::builder()
        .clock(clock.clone())
        .seed(1)
        .registry(registry.clone())
        .budget(BudgetConfig::unlimited())
        .breaker(breaker)
        .device(3)
        .build()
        .unwrap();
    (state, registry)
}

fn no_retries() -> RetryPolicy {
    RetryPolicy::new(RetryConfig::disabled()).unwrap()
}

fn fail(state: &RetryState, code: i32) -> GiveUpReason {
    retry_operation(Op::Launch, &no_retries(), state, |_| {
        Err::<(), _>(HipError::new(code, Op::Launch))
    })
    .unwrap_err()
    .reason()
}

fn succeed(state: &RetryState) -> Result<(), GiveUpReason> {
    retry_operation(Op::Launch, &no_retries(), state, |_| Ok::<_, HipError>(()))
        .map(|_| ())
        .map_err(|e| e.reason())
}

#[test]
fn full_cycle_with_gauge() {
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 5,
        cooldown: Duration::from_secs(5),
        ..Default::default()
    };
    let (state, registry) = state(&clock, config);
    let gauge = || {
        sample(
            &scrape(&registry),
            "hipinfer_circuit_breaker_state{device=\"3\"}",
        )
    };
    assert_eq!(gauge(), Some(0.0));

    for _ in 0..4 {
        assert_eq!(fail(&state, 216), GiveUpReason::Exhausted);
    }
    assert_eq!(state.breaker().state(), BreakerState::Closed);
    assert_eq!(fail(&state, 216), GiveUpReason::Exhausted);
    assert_eq!(state.breaker().state(), BreakerState::Open);
    assert_eq!(gauge(), Some(2.0));

    // Open: rejected at once, without calling, with the time left.
    let mut called = false;
    let error = retry_operation(Op::Launch, &no_retries(), &state, |_| {
        called = true;
        Ok::<_, HipError>(())
    })
    .unwrap_err();
    assert!(!called);
    assert_eq!(error.reason(), GiveUpReason::CircuitOpen);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    clock.advance(Duration::from_secs(2));
    assert_eq!(succeed(&state), Err(GiveUpReason::CircuitOpen));
    assert_eq!(state.breaker().rejected(), 2);
    let text = scrape(&registry);
    assert_eq!(
        sample(
            &text,
            "hipinfer_gpu_retry_failed_total{op=\"launch\",reason=\"circuit_open\"}"
        ),
        Some(2.0)
    );

    // After the cooldown one probe is admitted; its failure opens the breaker again.
    clock.advance(Duration::from_secs(3));
    assert_eq!(fail(&state, 700), GiveUpReason::Reset);
    assert_eq!(state.breaker().state(), BreakerState::Open);
    assert_eq!(succeed(&state), Err(GiveUpReason::CircuitOpen));

    // Next cooldown: the probe succeeds and closes it.
    clock.advance(Duration::from_secs(5));
    assert_eq!(succeed(&state), Ok(()));
    assert_eq!(state.breaker().state(), BreakerState::Closed);
    assert_eq!(gauge(), Some(0.0));
    assert_eq!(succeed(&state), Ok(()));
}

#[test]
fn half_open_admits_the_configured_number_of_probes() {
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 1,
        half_open_probes: 2,
        cooldown: ms(100),
        ..Default::default()
    };
    let (state, _) = state(&clock, config);
    let breaker = state.breaker();
    assert_eq!(fail(&state, 2), GiveUpReason::Exhausted);
    assert_eq!(breaker.state(), BreakerState::Open);
    clock.advance(ms(100));
    assert_eq!(breaker.admit(), Ok(Admission::Probe));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.admit(), Ok(Admission::Probe));
    assert!(breaker.admit().is_err(), "a third probe is not admitted");
    breaker.record(Admission::Probe, CallOutcome::Success);
    assert_eq!(
        breaker.state(),
        BreakerState::HalfOpen,
        "one success of two is not enough"
    );
    breaker.record(Admission::Probe, CallOutcome::Success);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn a_success_clears_the_streak_and_fatal_errors_do_not_count() {
    let clock = Arc::new(FakeClock::new());
    let (state, _) = state(
        &clock,
        BreakerConfig {
            failure_threshold: 3,
            ..Default::default()
        },
    );
    fail(&state, 216);
    fail(&state, 216);
    succeed(&state).unwrap();
    fail(&state, 216);
    fail(&state, 216);
    assert_eq!(state.breaker().state(), BreakerState::Closed);
    for _ in 0..10 {
        assert_eq!(fail(&state, 1), GiveUpReason::Permanent);
    }
    assert_eq!(
        state.breaker().state(),
        BreakerState::Closed,
        "bad arguments are not a sick device"
    );
}

#[test]
fn failure_ratio_over_a_window_opens_it() {
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 100,
        failure_ratio: Some(FailureRatio {
            ratio: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
        }),
        ..Default::default()
    };
    let (state, _) = state(&clock, config);
    // Alternate success and failure: the ratio reaches 50 % at the 10th call.
    for i in 0..9 {
        if i % 2 == 0 {
            succeed(&state).unwrap()
        } else {
            fail(&state, 216);
        }
    }
    assert_eq!(state.breaker().state(), BreakerState::Closed);
    fail(&state, 216);
    assert_eq!(state.breaker().state(), BreakerState::Open);
}

#[test]
fn failure_ratio_forgets_old_windows() {
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 100,
        failure_ratio: Some(FailureRatio {
            ratio: 0.5,
            min_calls: 4,
            window: Duration::from_secs(1),
        }),
        ..Default::default()
    };
    let (state, _) = state(&clock, config);
    fail(&state, 216);
    fail(&state, 216);
    fail(&state, 216);
    clock.advance(Duration::from_secs(2));
    fail(&state, 216);
    assert_eq!(
        state.breaker().state(),
        BreakerState::Closed,
        "old failures expired with their window"
    );
}

#[test]
fn isolate_and_reset_by_hand() {
    let clock = Arc::new(FakeClock::new());
    let (state, _) = state(&clock, BreakerConfig::default());
    state.breaker().isolate();
    clock.advance(Duration::from_secs(3600));
    let error =
        retry_operation(Op::Launch, &no_retries(), &state, |_| Ok::<_, HipError>(())).unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::CircuitOpen);
    assert_eq!(error.retry_after(), None);
    assert!(error.to_string().contains("manual reset"), "{error}");
    state.breaker().reset();
    assert_eq!(succeed(&state), Ok(()));
}

#[test]
fn a_breaker_opening_mid_retry_stops_the_retries() {
    let clock = Arc::new(FakeClock::new());
    let (state, _) = state(
        &clock,
        BreakerConfig {
            failure_threshold: 2,
            ..Default::default()
        },
    );
    let policy = RetryPolicy::new(RetryConfig::new().with_max_retries(10)).unwrap();
    let mut calls = 0;
    let error = retry_operation(Op::Launch, &policy, &state, |_| {
        calls += 1;
        Err::<(), _>(HipError::new(216, Op::Launch))
    })
    .unwrap_err();
    assert_eq!(calls, 2);
    assert_eq!(error.reason(), GiveUpReason::CircuitOpen);
    assert_eq!(
        error.error().map(|e| e.code()),
        Some(216),
        "the last device error is kept"
    );
}

#[test]
fn each_device_has_its_own_breaker() {
    let clock = Arc::new(FakeClock::new());
    let (state, registry) = state(
        &clock,
        BreakerConfig {
            failure_threshold: 1,
            ..Default::default()
        },
    );
    let other = state.for_device(4);
    fail(&state, 216);
    assert_eq!(state.breaker().state(), BreakerState::Open);
    assert_eq!(other.breaker().state(), BreakerState::Closed);
    assert_eq!(succeed(&other), Ok(()));
    let text = scrape(&registry);
    assert_eq!(
        sample(&text, "hipinfer_circuit_breaker_state{device=\"3\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "hipinfer_circuit_breaker_state{device=\"4\"}"),
        Some(0.0)
    );
}

#[test]
fn invalid_breaker_config_names_the_field() {
    let error = RetryState::builder()
        .breaker(BreakerConfig {
            failure_threshold: 0,
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("breaker.failure_threshold"),
        "{error}"
    );
    let error = RetryState::builder()
        .breaker(BreakerConfig {
            failure_ratio: Some(FailureRatio {
                ratio: 1.5,
                min_calls: 1,
                window: ms(1),
            }),
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("breaker.failure_ratio.ratio"),
        "{error}"
    );
}

#[test]
fn a_half_open_probe_whose_call_panics_gives_its_slot_back() {
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 1,
        cooldown: Duration::from_secs(5),
        half_open_probes: 1,
        ..Default::default()
    };
    let (state, _) = state(&clock, config);
    fail(&state, 700);
    assert_eq!(state.breaker().state(), BreakerState::Open);
    clock.advance(Duration::from_secs(5));
    // The probe's operation panics: the breaker must not keep its slot forever.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = retry_operation(
            Op::Launch,
            &no_retries(),
            &state,
            |_| -> Result<(), HipError> { panic!("a bug inside a probe call") },
        );
    }));
    assert!(panicked.is_err());
    // Recorded as a failed probe: open again, and after the cooldown a new probe is admitted.
    assert_eq!(state.breaker().state(), BreakerState::Open);
    clock.advance(Duration::from_secs(5));
    assert_eq!(succeed(&state), Ok(()));
    assert_eq!(state.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_dropped_async_probe_gives_its_slot_back() {
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 1,
        cooldown: Duration::from_secs(5),
        ..Default::default()
    };
    let (state, _) = state(&clock, config);
    fail(&state, 700);
    clock.advance(Duration::from_secs(5));
    let policy = no_retries();
    let probe = hipinfer::retry::retry_operation_async(Op::Launch, &policy, &state, |_| {
        std::future::pending::<Result<(), HipError>>()
    });
    // Polled once (admitted as the probe), then dropped: a cancelled request.
    let mut probe = Box::pin(probe);
    assert!(futures::poll!(probe.as_mut()).is_pending());
    drop(probe);
    clock.advance(Duration::from_secs(5));
    assert_eq!(succeed(&state), Ok(()));
}

#[test]
fn a_device_reset_is_not_gated_by_an_open_breaker() {
    use hipinfer::backend::{Backend, CpuBackend, FaultPlan, FaultyBackend, Resilient};
    let clock = Arc::new(FakeClock::new());
    let config = BreakerConfig {
        failure_threshold: 1,
        cooldown: Duration::from_secs(60),
        ..Default::default()
    };
    let (state, _) = state(&clock, config);
    let faulty = FaultyBackend::new(CpuBackend::with_threads(1).unwrap(), FaultPlan::new(1));
    faulty.script(Op::Synchronize, 700, 1);
    let backend = Resilient::new(faulty, Arc::new(no_retries()), state.clone());
    assert!(backend.synchronize().is_err());
    assert_eq!(state.breaker().state(), BreakerState::Open);
    // Calls are refused while open — but the reset, the breaker's cure, goes through and
    // closes it.
    assert!(backend.allocate(1).is_err());
    backend.reset().unwrap();
    assert_eq!(state.breaker().state(), BreakerState::Closed);
    assert!(backend.allocate(1).is_ok());
}
