//! Success-path overhead of `retry_operation` against a bare call, backon and tower::retry.
//!
//! Every variant wraps the same closure, which succeeds at once: what is measured is what the
//! retry wrapper costs when nothing goes wrong, the case that matters for every GPU op.
//! Async variants run 1000 calls per iteration inside one `block_on`, so the executor is not timed.

use std::hint::black_box;
use std::task::{Context, Poll};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hipinfer::retry::{retry_operation, retry_operation_async, RetryPolicy, RetryState};
use hipinfer::{HipError, Op};

#[inline(never)]
fn work(x: u64) -> Result<u64, HipError> {
    Ok(black_box(x).wrapping_mul(3).wrapping_add(1))
}

fn sync_overhead(c: &mut Criterion) {
    let policy = RetryPolicy::default();
    let without = RetryState::builder().without_metrics().build().unwrap();
    let with = RetryState::builder().build().unwrap();
    let mut group = c.benchmark_group("retry_success_path_sync");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_call", |b| b.iter(|| work(black_box(7))));
    group.bench_function("hipinfer_no_metrics", |b| {
        b.iter(|| {
            retry_operation(Op::Launch, &policy, &without, |_| work(black_box(7))).map(|r| r.value)
        })
    });
    group.bench_function("hipinfer_metrics", |b| {
        b.iter(|| {
            retry_operation(Op::Launch, &policy, &with, |_| work(black_box(7))).map(|r| r.value)
        })
    });
    group.bench_function("backon_blocking", |b| {
        use backon::{BlockingRetryable, ExponentialBuilder};
        b.iter(|| {
            (|| work(black_box(7)))
                .retry(ExponentialBuilder::default())
                .call()
        })
    });
    group.finish();
}

/// tower's retry policy: retry errors up to three times.
#[derive(Clone)]
struct ThreeTimes(u32);

impl tower::retry::Policy<u64, u64, HipError> for ThreeTimes {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut u64,
        result: &mut Result<u64, HipError>,
    ) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 < 3 => {
                self.0 += 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// A service that always succeeds with `work`.
#[derive(Clone)]
struct Work;

impl tower::Service<u64> for Work {
    type Response = u64;
    type Error = HipError;
    type Future = std::future::Ready<Result<u64, HipError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HipError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(work(req))
    }
}

const CALLS: u64 = 1000;

fn async_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let policy = RetryPolicy::default();
    let without = RetryState::builder().without_metrics().build().unwrap();
    let with = RetryState::builder().build().unwrap();
    let mut group = c.benchmark_group("retry_success_path_async");
    group.throughput(Throughput::Elements(CALLS));
    group.bench_function("bare_call", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for i in 0..CALLS {
                    black_box(async { work(black_box(i)) }.await.ok());
                }
            })
        })
    });
    for (name, state) in [
        ("hipinfer_no_metrics", &without),
        ("hipinfer_metrics", &with),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    for i in 0..CALLS {
                        let result =
                            retry_operation_async(Op::Launch, &policy, state, |_| async move {
                                work(black_box(i))
                            })
                            .await;
                        black_box(result.ok());
                    }
                })
            })
        });
    }
    group.bench_function("backon", |b| {
        use backon::{ExponentialBuilder, Retryable};
        b.iter(|| {
            runtime.block_on(async {
                for i in 0..CALLS {
                    let result = (|| async move { work(black_box(i)) })
                        .retry(ExponentialBuilder::default())
                        .await;
                    black_box(result.ok());
                }
            })
        })
    });
    group.bench_function("tower_retry", |b| {
        use tower::{Service, ServiceExt};
        b.iter(|| {
            runtime.block_on(async {
                let mut service = tower::retry::Retry::new(ThreeTimes(0), Work);
                for i in 0..CALLS {
                    let ready = service.ready().await.unwrap();
                    black_box(ready.call(black_box(i)).await.ok());
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, sync_overhead, async_overhead);
criterion_main!(benches);
