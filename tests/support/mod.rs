//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod backends;
pub mod gate;
pub mod tiny_model;

use std::sync::Arc;
use std::time::Duration;

use hipinfer::retry::{
    BreakerConfig, BudgetConfig, FakeClock, Jitter, RetryConfig, RetryPolicy, RetryState,
};
use prometheus::Registry;

/// A state on a fake clock, seeded, with an unlimited budget and a breaker that never trips,
/// so a test sees only what it sets up.
pub fn quiet_state(clock: &Arc<FakeClock>) -> RetryState {
    RetryState::builder()
        .clock(clock.clone())
        .seed(7)
        .registry(Registry::new())
        .budget(BudgetConfig::unlimited())
        .breaker(BreakerConfig {
            failure_threshold: u32::MAX,
            ..BreakerConfig::default()
        })
        .build()
        .expect("valid state")
}

/// The default config without jitter.
pub fn plain_policy() -> RetryPolicy {
    RetryPolicy::new(RetryConfig::new().with_jitter(Jitter::None)).expect("valid config")
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The value of a metric line `name{labels} value` in a Prometheus text scrape.
pub fn scrape(registry: &Registry) -> String {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_utf8(&registry.gather(), &mut out)
        .expect("encode");
    out
}

/// Finds `series value` in `text` and returns the value.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
