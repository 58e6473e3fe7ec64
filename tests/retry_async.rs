//! retry_operation_async under tokio's paused clock: virtual time equals the sum of the delays.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hipinfer::retry::{
    retry_operation_async, FakeClock, GiveUpReason, Jitter, RetryConfig, RetryPolicy,
};
use hipinfer::{HipError, Op};
use support::{ms, plain_policy, quiet_state};

#[tokio::test(start_paused = true)]
async fn virtual_time_equals_the_sum_of_the_delays() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let start = tokio::time::Instant::now();
    let result = retry_operation_async(Op::Launch, &plain_policy(), &state, |attempt| async move {
        tokio::task::yield_now().await;
        if attempt <= 3 {
            Err(HipError::new(216, Op::Launch))
        } else {
            Ok(attempt)
        }
    })
    .await
    .unwrap();
    assert_eq!(result.value, 4);
    assert_eq!(start.elapsed(), ms(10 + 20 + 40));
    assert_eq!(result.history.total_delay(), ms(70));
    assert!(
        clock.sleeps().is_empty(),
        "async retries sleep with tokio, not the sync clock"
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_add_up_too() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_jitter(Jitter::Full)
            .with_max_retries(5),
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    let error = retry_operation_async(Op::Allocate, &policy, &state, |_| async {
        Err::<(), _>(HipError::new(2, Op::Allocate))
    })
    .await
    .unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Exhausted);
    assert_eq!(error.attempts(), 6);
    // tokio's timer wheel has millisecond resolution: each sleep ends on the next whole ms.
    let slept = error.history().total_delay();
    let sleeps = error.history().retries();
    assert!(
        start.elapsed() >= slept && start.elapsed() <= slept + ms(u64::from(sleeps)),
        "virtual {:?} vs delays {:?}",
        start.elapsed(),
        slept
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_uses_tokio_time() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_jitter(Jitter::None)
            .with_max_retries(10)
            .with_deadline(ms(100)),
    )
    .unwrap();
    let start = tokio::time::Instant::now();
    let error = retry_operation_async(Op::Launch, &policy, &state, |_| async {
        tokio::time::sleep(ms(30)).await;
        Err::<(), _>(HipError::new(216, Op::Launch))
    })
    .await
    .unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Deadline);
    // 30 + 10 + 30 = 70; a 20 ms sleep would end at 90 → allowed; 90 + 30 = 120 > 100 - stop.
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(30 + 10 + 30 + 20 + 30)
    );
}

#[tokio::test(start_paused = true)]
async fn fatal_returns_at_once() {
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let start = tokio::time::Instant::now();
    let error = retry_operation_async(Op::ModuleLoad, &plain_policy(), &state, |_| async {
        Err::<(), _>(HipError::new(209, Op::ModuleLoad))
    })
    .await
    .unwrap_err();
    assert_eq!(error.reason(), GiveUpReason::Permanent);
    assert_eq!(error.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[test]
fn the_async_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let clock = Arc::new(FakeClock::new());
    let state = quiet_state(&clock);
    let policy = plain_policy();
    let future = retry_operation_async(Op::Launch, &policy, &state, |_| async {
        Ok::<_, HipError>(())
    });
    is_send(&future);
}
