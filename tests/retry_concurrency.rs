//! 16 threads and 64 tokio tasks share one retry state: every count adds up, nothing deadlocks.

mod support;

use std::sync::Arc;

use hipinfer::retry::{
    retry_operation, retry_operation_async, Backoff, BreakerConfig, BudgetConfig, FakeClock,
    RetryConfig, RetryPolicy, RetryState,
};
use hipinfer::{HipError, Op};
use prometheus::Registry;
use support::{sample, scrape};

const OPS_PER_WORKER: u32 = 500;

/// Operation `i` of worker `w` fails `(w + i) % 4` times (OOM or 216), then succeeds.
fn failures(worker: u32, i: u32) -> u32 {
    (worker + i) % 4
}

fn error_for(attempt: u32, op: Op) -> HipError {
    HipError::new(if attempt.is_multiple_of(2) { 2 } else { 216 }, op)
}

#[test]
fn threads_and_tasks_hammer_one_state() {
    let clock = Arc::new(FakeClock::new());
    let registry = Registry::new();
    let state = RetryState::builder()
        .clock(clock.clone())
        .seed(3)
        .registry(registry.clone())
        .budget(BudgetConfig::unlimited())
        .breaker(BreakerConfig {
            failure_threshold: u32::MAX,
            ..Default::default()
        })
        .build()
        .unwrap();
    // No delay, so the async tasks need no timer and the run takes milliseconds.
    let policy =
        Arc::new(RetryPolicy::new(RetryConfig::new().with_backoff(Backoff::None)).unwrap());

    let threads: Vec<_> = (0..16u32)
        .map(|worker| {
            let (state, policy) = (state.clone(), policy.clone());
            std::thread::spawn(move || {
                for i in 0..OPS_PER_WORKER {
                    let fail = failures(worker, i);
                    let done = retry_operation(Op::Launch, &policy, &state, |attempt| {
                        if attempt <= fail {
                            Err(error_for(attempt, Op::Launch))
                        } else {
                            Ok(attempt)
                        }
                    })
                    .unwrap();
                    assert_eq!(done.value, fail + 1);
                }
            })
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (16..80u32)
            .map(|worker| {
                let (state, policy) = (state.clone(), policy.clone());
                tokio::spawn(async move {
                    for i in 0..OPS_PER_WORKER {
                        let fail = failures(worker, i);
                        let done = retry_operation_async(
                            Op::CopyHostToDevice,
                            &policy,
                            &state,
                            |attempt| async move {
                                tokio::task::yield_now().await;
                                if attempt <= fail {
                                    Err(error_for(attempt, Op::CopyHostToDevice))
                                } else {
                                    Ok(attempt)
                                }
                            },
                        )
                        .await
                        .unwrap();
                        assert_eq!(done.value, fail + 1);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }

    let expected = |workers: std::ops::Range<u32>| {
        let (mut retries, mut recovered) = (0u64, 0u64);
        for w in workers {
            for i in 0..OPS_PER_WORKER {
                retries += u64::from(failures(w, i));
                recovered += u64::from(failures(w, i) > 0);
            }
        }
        (retries, recovered)
    };
    let text = scrape(&registry);
    for (op, workers) in [("launch", 0..16), ("copy_h2d", 16..80)] {
        let (retries, recovered) = expected(workers.clone());
        let calls = workers.len() as f64 * f64::from(OPS_PER_WORKER);
        assert_eq!(
            sample(
                &text,
                &format!("hipinfer_gpu_retry_attempts_total{{op=\"{op}\"}}")
            ),
            Some(retries as f64)
        );
        assert_eq!(
            sample(
                &text,
                &format!("hipinfer_gpu_retry_success_total{{op=\"{op}\"}}")
            ),
            Some(recovered as f64)
        );
        assert_eq!(
            sample(
                &text,
                &format!("hipinfer_gpu_retry_attempt_count{{op=\"{op}\"}}")
            ),
            Some(calls)
        );
        assert_eq!(
            sample(
                &text,
                &format!("hipinfer_gpu_retry_attempt_sum{{op=\"{op}\"}}")
            ),
            Some(calls + retries as f64)
        );
    }
}
