//! Hangs as HIP has them — a kernel that never finishes, its synchronize waiting forever — held
//! by deadlines in this process: a step past the step deadline is abandoned with its thread and
//! its inputs replayed on a fresh backend by a new step thread; a request past its own deadline
//! fails at that moment, even while its step is stuck, and a late result is never answered.

mod support;

use std::time::{Duration, Instant};

use hipinfer::backend::{CpuBackend, FaultAction, FaultPlan, FaultyBackend};
use hipinfer::chaos::{run_campaign, ChaosConfig};
use hipinfer::engine::{EngineConfig, EngineError, InferenceEngine};
use hipinfer::retry::{Jitter, RetryConfig};
use hipinfer::HipError;
use support::tiny_model;

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .backend(hipinfer::backend::BackendChoice::Cpu)
        .threads(1)
        .retry(
            RetryConfig::new()
                .with_jitter(Jitter::None)
                .with_initial_delay(Duration::from_micros(50))
                .with_max_delay(Duration::from_millis(1)),
        )
        .seed(3)
        .build()
        .unwrap()
}

#[test]
fn every_hang_in_this_process_is_abandoned_at_the_step_deadline_and_replayed() {
    let mut engine = config("hang-campaign");
    // Far above a tiny-model step (about a millisecond), even on a loaded machine.
    engine.step_timeout = Duration::from_millis(400);
    engine.request_deadline = Some(Duration::from_secs(60));
    let mut chaos = ChaosConfig::new(engine, 200, 8, 9);
    chaos.hang_rate = 0.01;
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!((report.succeeded, report.failed), (200, 0), "{report:?}");
    assert!(report.injected.hang > 0, "{report:?}");
    assert_eq!(
        report.abandoned_steps, report.injected.hang,
        "one abandoned step per hung kernel: {report:?}"
    );
    assert_eq!(report.duplicated, 0);
}

#[test]
fn a_request_whose_step_hangs_fails_at_its_own_deadline() {
    let mut config = config("hang-deadline");
    config.request_deadline = Some(Duration::from_millis(50));
    config.step_timeout = Duration::from_millis(500);
    // Every step holding "rust" (token 8) starts a kernel that never finishes.
    let plan = FaultPlan::new(1).with_poison(8, FaultAction::Hang);
    let engine = InferenceEngine::with_backend_factory(config, move || {
        Ok::<_, HipError>(FaultyBackend::new(
            CpuBackend::with_threads(1)?,
            plan.clone(),
        ))
    })
    .unwrap();
    let started = Instant::now();
    match engine.embed(&["rust is fast"]) {
        Err(EngineError::DeadlineExceeded { deadline, .. }) => {
            assert_eq!(deadline, Duration::from_millis(50))
        }
        other => panic!("{other:?}"),
    }
    // Answered at its deadline, not at the step deadline: the step is still stuck.
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(engine.metrics().abandoned_steps.get(), 0);
    // The step deadline then abandons the stuck step (a request queued behind it meanwhile
    // would meet its own deadline first); the next request runs on a fresh backend, driven by
    // a new step thread.
    while engine.metrics().abandoned_steps.get() < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let answer = engine.embed(&["hello world"]).unwrap();
    assert_eq!(answer.embeddings.len(), 1);
    assert_eq!(engine.metrics().abandoned_steps.get(), 1);
    assert!(engine.liveness().alive);
    assert_eq!(engine.metrics().duplicate_completions.get(), 0);
}
