//! A device operation that fails the way GPUs do, retried by class, with the Prometheus scrape.
//!
//! `cargo run --example retry_demo` — no GPU needed: the failures are scripted HIP error codes.

use std::time::Duration;

use hipinfer::retry::{retry_operation, RetryCall, RetryConfig, RetryPolicy, RetryState};
use hipinfer::{HipError, Op};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = RetryPolicy::new(
        RetryConfig::new()
            .with_max_retries(4)
            .with_initial_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(50)),
    )?;
    let state = RetryState::builder().seed(42).build()?;

    // Out of memory twice: the caching allocator is asked to give memory back before each retry.
    let mut reclaimed = 0;
    let mut reclaim = || reclaimed += 1;
    let buffer = RetryCall::new(Op::Allocate, &policy, &state)
        .reclaim_with(&mut reclaim)
        .run(|attempt| {
            if attempt <= 2 {
                Err(HipError::new(HipError::OUT_OF_MEMORY, Op::Allocate).with_bytes(1 << 30))
            } else {
                Ok(vec![0u8; 16])
            }
        })?;
    println!(
        "allocate: {} bytes after {} attempts, {} reclaims, slept {:?}",
        buffer.value.len(),
        buffer.attempts(),
        reclaimed,
        buffer.history.total_delay()
    );

    // An illegal address poisons the context: no retry, the step must be replayed after a reset.
    let poisoned = retry_operation(Op::Synchronize, &policy, &state, |_| {
        Err::<(), _>(HipError::new(HipError::ILLEGAL_ADDRESS, Op::Synchronize))
    })
    .unwrap_err();
    println!("synchronize: {poisoned}");

    let mut scrape = String::new();
    prometheus::TextEncoder::new().encode_utf8(
        &state.registry().expect("metrics are on").gather(),
        &mut scrape,
    )?;
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
    {
        if line.starts_with("hipinfer_gpu_retry_attempts")
            || line.starts_with("hipinfer_gpu_retry_failed")
            || line.starts_with("hipinfer_gpu_errors")
            || line.starts_with("hipinfer_gpu_retry_success")
        {
            println!("{line}");
        }
    }
    Ok(())
}
