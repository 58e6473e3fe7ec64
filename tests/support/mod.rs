//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod backends;
pub mod gate;
pub mod generation;
pub mod gguf_writer;
pub mod server;
pub mod tiny_llama;
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

/// The sum of every series of the metric `name` (all label values) in a Prometheus text scrape.
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Embeds each text as its own request, all at once from threads; answers in the texts' order.
pub fn embed_each_concurrently<'a>(
    engine: &hipinfer::engine::InferenceEngine,
    texts: &[&'a str],
) -> Vec<(
    &'a str,
    Result<hipinfer::engine::EmbedResponse, hipinfer::engine::EngineError>,
)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .iter()
            .map(|&text| {
                let engine = engine.clone();
                scope.spawn(move || (text, engine.embed(&[text])))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The processes whose parent is `parent` (zombies included: they were not reaped).
pub fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // pid (comm) state ppid …; comm may hold spaces, so split after the ')'.
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1).map(|ppid| ppid == parent)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// SmolLM2-135M-Instruct's GGUF as `scripts/fetch-model.sh smollm2` unpacks it; `None` (saying
/// the test skipped) when it is missing, a failure with `HIPINFER_REQUIRE_MODEL=1`.
pub fn smollm2_gguf() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("HIPINFER_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!(
            "{} is missing: bash scripts/fetch-model.sh smollm2",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} missing (bash scripts/fetch-model.sh smollm2)",
        path.display()
    );
    None
}

/// `../shared/fixtures/smollm2_golden.json` (transformers' reference for SmolLM2).
pub fn smollm2_fixture() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/smollm2_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixture's array of token ids.
pub fn fixture_ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}
