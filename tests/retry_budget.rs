//! The retry budget bounds retries to a share of calls plus a floor, under any failure rate.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hipinfer::retry::{
    retry_operation, BreakerConfig, BudgetConfig, FakeClock, GiveUpReason, RetryConfig,
    RetryPolicy, RetryState,
};
use hipinfer::{HipError, Op};
use prometheus::Registry;
use support::{sample, scrape};

fn state(clock: &Arc<FakeClock>, budget: BudgetConfig, registry: &Registry) -> RetryState {
    RetryState::builder()
        .clock(clock.clone())
        .seed(9)
        .registry(registry.clone())
        .budget(budget)
        .breaker(BreakerConfig {
            failure_threshold: u32::MAX,
            ..Default::default()
        })
        .build()
        .unwrap()
}

#[test]
fn persistent_failure_is_bounded_by_ratio_times_calls_plus_floor() {
    let clock = Arc::new(FakeClock::new());
    let registry = Registry::new();
    let budget = BudgetConfig {
        ratio: 0.2,
        min_per_second: 10,
        ttl: Duration::from_secs(10),
    };
    let state = state(&clock, budget, &registry);
    let policy = RetryPolicy::new(RetryConfig::new().with_max_retries(3)).unwrap();
    let calls = 1_000u64;
    let mut retries = 0u64;
    let mut budget_failures = 0u64;
    for _ in 0..calls {
        // 100 µs between operations: the whole run, sleeps included, stays within one 10 s window.
        clock.advance(Duration::from_micros(100));
        let error = retry_operation(Op::Launch, &policy, &state, |_| {
            Err::<(), _>(HipError::new(216, Op::Launch))
        })
        .unwrap_err();
        retries += u64::from(error.history().retries());
        if error.reason() == GiveUpReason::Budget {
            budget_failures += 1;
        }
    }
    assert!(
        clock.now_secs() < 10.0,
        "the run must fit in one window: {}",
        clock.now_secs()
    );
    let floor = 10 * 10;
    assert!(
        retries <= calls / 5 + floor,
        "{retries} retries for {calls} calls"
    );
    assert!(
        retries >= calls / 5,
        "the budget allows at least the ratio: {retries}"
    );
    assert!(budget_failures > 0);
    assert_eq!(state.budget().denied(), budget_failures);
    let text = scrape(&registry);
    assert_eq!(
        sample(
            &text,
            "hipinfer_gpu_retry_failed_total{op=\"launch\",reason=\"budget\"}"
        ),
        Some(budget_failures as f64)
    );
    assert_eq!(
        sample(&text, "hipinfer_gpu_retry_attempts_total{op=\"launch\"}"),
        Some(retries as f64)
    );
    assert_eq!(sample(&text, "hipinfer_retry_budget_remaining"), Some(0.0));
}

trait NowSecs {
    fn now_secs(&self) -> f64;
}

impl NowSecs for FakeClock {
    fn now_secs(&self) -> f64 {
        use hipinfer::retry::Clock;
        self.now().as_secs_f64()
    }
}

#[test]
fn deposits_expire_after_the_ttl() {
    let clock = Arc::new(FakeClock::new());
    let registry = Registry::new();
    let budget = BudgetConfig {
        ratio: 0.5,
        min_per_second: 0,
        ttl: Duration::from_secs(1),
    };
    let state = state(&clock, budget, &registry);
    for _ in 0..100 {
        state.budget().deposit();
    }
    assert_eq!(state.budget().remaining(), 50.0);
    clock.advance(Duration::from_millis(500));
    assert_eq!(state.budget().remaining(), 50.0);
    clock.advance(Duration::from_millis(600));
    assert_eq!(
        state.budget().remaining(),
        0.0,
        "deposits older than the ttl no longer count"
    );
    assert!(!state.budget().try_withdraw());
}

#[test]
fn withdrawals_spend_the_budget_and_the_floor_refills_with_time() {
    let clock = Arc::new(FakeClock::new());
    let registry = Registry::new();
    let budget = BudgetConfig {
        ratio: 0.0,
        min_per_second: 2,
        ttl: Duration::from_secs(1),
    };
    let state = state(&clock, budget, &registry);
    assert!(state.budget().try_withdraw());
    assert!(state.budget().try_withdraw());
    assert!(!state.budget().try_withdraw());
    clock.advance(Duration::from_millis(1100));
    assert!(
        state.budget().try_withdraw(),
        "old withdrawals expire with their window"
    );
}

#[test]
fn invalid_budget_names_the_field() {
    let error = RetryState::builder()
        .budget(BudgetConfig {
            ratio: -1.0,
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("budget.ratio"), "{error}");
    let error = RetryState::builder()
        .budget(BudgetConfig {
            ttl: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("budget.ttl"), "{error}");
}
