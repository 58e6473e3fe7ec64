//! retry_operation: how many calls each recovery class gets, what it sleeps, what it returns.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hipinfer::retry::{
    retry_operation, FakeClock, GiveUpReason, Jitter, RetryCall, RetryConfig, RetryPolicy,
};
use hipinfer::{HipError, Op, Recovery};
use proptest::prelude::*;
use support::{ms, plain_policy, quiet_state};

/// An operation that fails with `codes` in turn, then succeeds; counts its calls.
fn scripted(codes: &[i32], op: Op) -> impl FnMut(u32) -> Result<&'static str, HipError> + '_ {
    let mut calls = 0usize;
    move |attempt| {
        calls += 1;
        assert_eq!(attempt as usize, calls, "attempt numbers count from 1");
        match codes.get(calls - 1) {
            Some(&code) => Err(HipError::new(code, op)),
            None => Ok("done"),
        }
    }
}

#[test]
fn retry_class_succeeds_on_attempt_k_with_k_calls() {
    for k in 1..=4u32 {
        let clock = Arc::new(FakeClock::new());
        let state = quiet_state(&clock);
        let failures = vec![216; k as usize - 1];
        let mut calls = 0;
        let mut op = scripted(&failures, Op::CopyHostToDevice);
        let result = retry_operation(Op::CopyHostToDevice, &plain_policy(), &state, |a| {
            calls += 1;
            op(a)
        })
        .unwrap();
        assert_eq!(calls, k);
        assert_eq!(result.value, "done");
        assert_eq!(result.attempts(), k);
        assert_eq!(result.history.retries(), k - 1);
        let expected: Vec<Duration> = [10, 20, 40]
            .iter()
            .take(k as usize - 1)
            .map(|&d| ms(d))
            .collect();
        assert_eq!(clock.sleeps(), expected, "k = {k}");
    }
}

#[test]
fn fatal_is_called_once() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let mut calls = 0;
    let error = retry_operation(Op::Launch, &plain_policy(), &state, |_| {
        calls += 1;
        Err::<(), _>(HipError::new(1, Op::Launch))
    })
    .unwrap_err();
    assert_eq!(calls, 1);
    assert_eq!(error.reason(), GiveUpReason::Permanent);
    assert_eq!(error.recovery_acted_on(), Some(Recovery::Fatal));
    assert_eq!(error.error().unwrap().code(), 1);
    assert!(clock.sleeps().is_empty());
}

#[test]
fn reset_is_called_once_and_says_reset() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let mut calls = 0;
    let error = retry_operation(Op::Synchronize, &plain_policy(), &state, |_| {
        calls += 1;
        Err::<(), _>(HipError::new(700, Op::Synchronize))
    })
    .unwrap_err();
    assert_eq!(calls, 1);
    assert_eq!(error.reason(), GiveUpReason::Reset);
    assert_eq!(error.recovery_acted_on(), Some(Recovery::Reset));
    assert!(error.to_string().contains("(reset)"), "{error}");
    assert!(
        error.to_string().contains("hipErrorIllegalAddress"),
        "{error}"
    );
}

#[test]
fn exhausted_after_max_retries_plus_one_calls() {
    for max_retries in [0u32, 1, 3, 6] {
        let clock = Arc::new(FakeClock::new());
        let state = quiet_state(&clock);
        let policy = RetryPolicy::new(RetryConfig::new().with_max_retries(max_retries)).unwrap();
        let mut calls = 0;
        let error = retry_operation(Op::Allocate, &policy, &state, |_| {
            calls += 1;
            Err::<(), _>(HipError::new(2, Op::Allocate))
        })
        .unwrap_err();
        assert_eq!(calls, max_retries + 1);
        assert_eq!(error.reason(), GiveUpReason::Exhausted);
        assert_eq!(error.attempts(), max_retries + 1);
        assert_eq!(error.history().retries(), max_retries);
        assert_eq!(clock.sleeps().len() as u32, max_retries);
    }
}

#[test]
fn reclaim_calls_the_hook_before_each_retry() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let log = parking_lot::Mutex::new(Vec::new());
    let mut reclaim = || log.lock().push("reclaim".to_string());
    let result = RetryCall::new(Op::Allocate, &plain_policy(), &state)
        .reclaim_with(&mut reclaim)
        .run(|attempt| {
            log.lock().push(format!("call {attempt}"));
            if attempt <= 2 {
                Err(HipError::new(2, Op::Allocate))
            } else {
                Ok(attempt)
            }
        })
        .unwrap();
    assert_eq!(result.value, 3);
    assert_eq!(
        *log.lock(),
        ["call 1", "reclaim", "call 2", "reclaim", "call 3"]
    );
}

#[test]
fn retry_class_does_not_reclaim() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let mut reclaims = 0;
    let mut reclaim = || reclaims += 1;
    RetryCall::new(Op::Launch, &plain_policy(), &state)
        .reclaim_with(&mut reclaim)
        .run(|attempt| {
            if attempt == 1 {
                Err(HipError::new(216, Op::Launch))
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(reclaims, 0);
}

#[test]
fn operating_system_error_is_retried_twice_then_probed() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let mut calls = 0;
    let error = retry_operation(Op::CopyDeviceToHost, &plain_policy(), &state, |_| {
        calls += 1;
        Err::<(), _>(HipError::new(304, Op::CopyDeviceToHost))
    })
    .unwrap_err();
    assert_eq!(calls, 3);
    assert_eq!(error.reason(), GiveUpReason::Probe);
    let classes: Vec<Recovery> = error
        .history()
        .attempts
        .iter()
        .map(|a| a.recovery)
        .collect();
    assert_eq!(classes, [Recovery::Retry, Recovery::Retry, Recovery::Probe]);
}

#[test]
fn not_ready_is_polled_at_the_poll_interval() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_max_retries(0)
            .with_poll_interval(ms(2))
            .with_max_polls(10),
    )
    .unwrap();
    let result = retry_operation(Op::Query, &policy, &state, |attempt| {
        if attempt <= 5 {
            Err(HipError::new(600, Op::Query))
        } else {
            Ok(())
        }
    })
    .unwrap();
    assert_eq!(result.attempts(), 6);
    assert_eq!(clock.sleeps(), vec![ms(2); 5]);

    let error = retry_operation(Op::Query, &policy, &state, |_| {
        Err::<(), _>(HipError::new(600, Op::Query))
    })
    .unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Exhausted);
    assert_eq!(error.attempts(), 11);
}

#[test]
fn history_records_every_failed_attempt() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let result = retry_operation(
        Op::Allocate,
        &plain_policy(),
        &state,
        |attempt| match attempt {
            1 => Err(HipError::new(2, Op::Allocate).with_bytes(64)),
            2 => Err(HipError::new(216, Op::Allocate)),
            _ => Ok(()),
        },
    )
    .unwrap();
    let attempts = &result.history.attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].code, Some(2));
    assert_eq!(attempts[0].error, "hipErrorOutOfMemory");
    assert_eq!(attempts[0].recovery, Recovery::Reclaim);
    assert_eq!(attempts[0].delay, Some(ms(10)));
    assert!(attempts[0].message.contains("64 bytes"));
    assert_eq!(attempts[1].attempt, 2);
    assert_eq!(attempts[1].error, "hipErrorContextAlreadyInUse");
    assert_eq!(attempts[1].delay, Some(ms(20)));
    assert_eq!(attempts[1].timestamp, std::time::UNIX_EPOCH + ms(10));
    assert_eq!(attempts[1].elapsed, ms(10));
    assert_eq!(result.history.total_delay(), ms(30));
}

#[test]
fn per_op_override_applies_to_that_op_only() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_jitter(Jitter::None)
            .with_max_retries(1)
            .with_op_override(
                Op::Allocate,
                RetryConfig::new()
                    .with_jitter(Jitter::None)
                    .with_max_retries(5),
            ),
    )
    .unwrap();
    let fail = |op| move |_| Err::<(), _>(HipError::new(2, op));
    assert_eq!(
        retry_operation(Op::Allocate, &policy, &state, fail(Op::Allocate))
            .unwrap_err()
            .attempts(),
        6
    );
    assert_eq!(
        retry_operation(Op::Launch, &policy, &state, fail(Op::Launch))
            .unwrap_err()
            .attempts(),
        2
    );
}

#[test]
fn deadline_stops_before_a_sleep_that_would_pass_it() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_jitter(Jitter::None)
            .with_max_retries(10)
            .with_deadline(ms(50)),
    )
    .unwrap();
    let error = retry_operation(Op::Launch, &policy, &state, |_| {
        Err::<(), _>(HipError::new(216, Op::Launch))
    })
    .unwrap_err();
    // 10 + 20 = 30 ms slept; the next 40 ms sleep would end at 70 ms > 50 ms.
    assert_eq!(clock.sleeps(), vec![ms(10), ms(20)]);
    assert_eq!(error.reason(), GiveUpReason::Deadline);
    assert_eq!(error.attempts(), 3);
}

#[test]
fn the_time_an_attempt_takes_counts_against_the_deadline() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_jitter(Jitter::None)
            .with_max_retries(10)
            .with_deadline(ms(100)),
    )
    .unwrap();
    let error = retry_operation(Op::Launch, &policy, &state, |_| {
        clock.advance(ms(45));
        Err::<(), _>(HipError::new(216, Op::Launch))
    })
    .unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Deadline);
    // 45 (call) + 10 (sleep) + 45 (call) = 100; a 20 ms sleep would pass 100 ms.
    assert_eq!(clock.sleeps(), vec![ms(10)]);
}

proptest! {
    #[test]
    fn sleeps_never_pass_the_deadline(
        deadline_ms in 1u64..5_000,
        call_ms in 0u64..50,
        max_retries in 0u32..30,
        seed in any::<u64>(),
        jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)],
    ) {
        let clock = Arc::new(FakeClock::new());
        let state = hipinfer::retry::RetryState::builder()
            .clock(clock.clone())
            .seed(seed)
            .without_metrics()
            .budget(hipinfer::retry::BudgetConfig::unlimited())
            .breaker(hipinfer::retry::BreakerConfig { failure_threshold: u32::MAX, ..Default::default() })
            .build()
            .unwrap();
        let policy = RetryPolicy::new(
            RetryConfig::new().with_jitter(jitter).with_max_retries(max_retries).with_deadline(ms(deadline_ms)),
        ).unwrap();
        let _ = retry_operation(Op::Launch, &policy, &state, |_| {
            clock.advance(ms(call_ms));
            Err::<(), _>(HipError::new(216, Op::Launch))
        });
        // Each sleep follows a call; the last sleep must end by the deadline.
        let sleeps = clock.sleeps().len() as u64;
        let last_sleep_ends = clock.total_slept() + ms(call_ms * sleeps);
        prop_assert!(last_sleep_ends <= ms(deadline_ms),
            "the last sleep ended at {:?}, past the {} ms deadline", last_sleep_ends, deadline_ms);
    }
}
