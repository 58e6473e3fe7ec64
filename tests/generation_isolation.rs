//! The generation engine with its steps in a worker process (`RunnerOptions::worker`), on a
//! tiny llama GGUF written by the test: workers that abort mid-step are replaced and every
//! stream is the one it is without faults, token for token; a request whose steps kill (or
//! hang) the worker every time fails alone, with a clear error, and the others continue.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use hipinfer::backend::{FaultAction, FaultPlan};
use hipinfer::generation::{GenerationConfig, GenerationEngine, GenerationError, RunnerOptions};
use hipinfer::isolation::WorkerConfig;
use hipinfer::retry::RetryConfig;
use hipinfer::Op;
use prometheus::Registry;
use support::generation::{alone, requests, same_tokens, together, unused_token};
use support::tiny_llama::{bytes_with, scratch, write};

fn worker() -> WorkerConfig {
    WorkerConfig {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_hipinfer"))),
        max_restarts: u32::MAX,
        restart_delay: Duration::from_millis(1),
        max_restart_delay: Duration::from_millis(5),
        ..WorkerConfig::default()
    }
}

fn isolated(path: &std::path::Path, faults: FaultPlan, step_timeout: Duration) -> GenerationEngine {
    let options = RunnerOptions {
        threads: Some(1),
        retry: RetryConfig::new()
            .with_initial_delay(Duration::from_micros(1))
            .with_max_delay(Duration::from_micros(10)),
        faults: Some(faults),
        seed: Some(1),
        worker: Some(worker()),
        step_timeout: Some(step_timeout),
    };
    let config = GenerationConfig {
        max_running: 4,
        ..GenerationConfig::default()
    };
    GenerationEngine::open(path, config, options, Registry::new()).unwrap()
}

fn restarts(engine: &GenerationEngine, reason: &str) -> f64 {
    let scrape = support::scrape(engine.registry());
    support::sample(
        &scrape,
        &format!("hipinfer_worker_restarts_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn aborted_workers_mid_stream_leave_every_stream_identical() {
    let dir = scratch("gen_iso_abort");
    let path = write(&dir, "tiny.gguf", &bytes_with(1, |_, _| {}));
    let model = std::sync::Arc::new(hipinfer::llm::LanguageModel::open(&path).unwrap());
    let requests = requests();
    let reference = alone(&model, &requests);
    // A step is a graph launch and a launch for the logits: about one step in six kills its
    // worker (SIGABRT, as ROCm 5 does on a memory fault).
    let plan = FaultPlan::new(9).with_abort_rate(Some(Op::Launch), 0.08);
    let engine = isolated(&path, plan, Duration::from_secs(60));
    let results = together(&engine, &requests);
    same_tokens(&results, &reference);
    assert!(
        restarts(&engine, "signal") >= 1.0,
        "the workers were killed and replaced"
    );
    let replays = support::sample(
        &support::scrape(engine.registry()),
        "hipinfer_generation_replays_total",
    )
    .unwrap();
    assert!(replays >= 1.0, "the caches were rebuilt in the new workers");
    assert!(engine.health().ready);
}

/// The first request holds a token whose every step aborts (or hangs) the worker: it is run
/// alone after its failed steps and fails alone; the seven others are what they are alone.
#[test]
fn a_request_that_kills_its_worker_every_time_fails_alone() {
    let dir = scratch("gen_iso_poison");
    let path = write(&dir, "tiny.gguf", &bytes_with(1, |_, _| {}));
    let model = std::sync::Arc::new(hipinfer::llm::LanguageModel::open(&path).unwrap());
    let requests = requests();
    let reference = alone(&model, &requests);
    let poison = unused_token(&requests, &reference);
    let mut requests = requests;
    requests[0].prompt_ids.push(poison);
    for (action, reason, timeout) in [
        (FaultAction::Abort, "signal", Duration::from_secs(60)),
        (FaultAction::Hang, "timeout", Duration::from_secs(1)),
    ] {
        let engine = isolated(
            &path,
            FaultPlan::new(3).with_poison(poison, action),
            timeout,
        );
        let results = together(&engine, &requests);
        match &results[0] {
            Err(GenerationError::Failed { message, report }) => {
                assert!(message.contains("worker"), "{action:?}: {message}");
                assert!(report.isolated, "{action:?}: {report:?}");
            }
            other => panic!("{action:?}: the poisoned sequence: {other:?}"),
        }
        same_tokens(&results[1..], &reference[1..]);
        assert!(restarts(&engine, reason) >= 1.0, "{action:?}");
    }
}
