//! Faults as real GPUs have them: after a memory fault ROCm ≥ 6 and CUDA return the same error
//! from every later call of the process — the device reset and backends made later included —
//! so a reset-and-replay in place cannot work. In this process the engine then serves on the
//! CPU fallback (degraded, and says so), or is unhealthy; either way it heals itself on a
//! timer, without anyone calling `health()`. Each test's "process" is a simulated fault domain,
//! so tests side by side do not poison each other.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hipinfer::backend::{
    Backend, CpuBackend, FaultAction, FaultDomain, FaultPlan, FaultyBackend, StickyScope,
};
use hipinfer::chaos::{run_campaign, ChaosConfig};
use hipinfer::engine::{
    EngineConfig, EngineError, Fallback, HealthCause, InferenceEngine, RecoveryConfig,
};
use hipinfer::model::{Embedder, Model};
use hipinfer::retry::{Jitter, RetryConfig};
use hipinfer::{HipError, Op};
use support::{sample, scrape, tiny_model};

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
        .retry(
            RetryConfig::new()
                .with_jitter(Jitter::None)
                .with_initial_delay(Duration::from_micros(50))
                .with_max_delay(Duration::from_millis(1)),
        )
        .recovery(RecoveryConfig {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        })
        .seed(3)
        .build()
        .unwrap()
}

fn cpu() -> CpuBackend {
    CpuBackend::with_threads(2).unwrap()
}

/// A plan whose sticky faults poison `domain` for good, and whose every step holding "rust"
/// (token 8) hits an illegal address.
fn poisoning(domain: &FaultDomain) -> FaultPlan {
    FaultPlan::new(1)
        .with_sticky_scope(StickyScope::Process)
        .with_domain(domain.clone())
        .with_poison(8, FaultAction::Fail(700))
}

fn reference(config: &EngineConfig, text: &str) -> Vec<f32> {
    let model = Arc::new(Model::load(&config.model).unwrap());
    Embedder::new(model, cpu())
        .unwrap()
        .embed(&[text], true)
        .unwrap()
        .remove(0)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Waits (in millisecond naps) until `done` holds, for at most `limit`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}

#[test]
fn a_process_scoped_fault_survives_resets_and_new_backends_a_context_scoped_one_does_not() {
    let domain = FaultDomain::simulated();
    let plan = FaultPlan::new(1)
        .with_sticky_scope(StickyScope::Process)
        .with_domain(domain.clone());
    let first = FaultyBackend::new(cpu(), plan.clone());
    first.script(Op::Synchronize, 700, 1);
    assert_eq!(first.synchronize().unwrap_err().code(), 700);
    assert_eq!(domain.poisoned(), Some(700));
    // Every later call, on every backend of the "process", returns the same code.
    let reset = first.reset().unwrap_err();
    assert_eq!((reset.code(), reset.op()), (700, Op::Init));
    assert_eq!(first.allocate(4).unwrap_err().code(), 700);
    let later = FaultyBackend::new(cpu(), plan);
    assert_eq!(later.allocate(4).unwrap_err().code(), 700);
    assert!(later.is_poisoned());
    // Another process is not touched.
    let elsewhere = FaultyBackend::new(
        cpu(),
        FaultPlan::new(1)
            .with_sticky_scope(StickyScope::Process)
            .with_domain(FaultDomain::simulated()),
    );
    assert!(elsewhere.allocate(4).is_ok());

    // Context scope (today's kinder model): a reset clears it.
    let context = FaultyBackend::new(cpu(), FaultPlan::new(1));
    let mut buffer = context.allocate(2).unwrap();
    context.copy_to_device(&[1.0f32, 2.0], &mut buffer).unwrap();
    assert!(context.synchronize().is_ok());
    context.script(Op::Synchronize, 700, 1);
    assert!(context.synchronize().is_err());
    assert!(context.allocate(1).is_err(), "sticky until the reset");
    context.reset().unwrap();
    assert!(context.allocate(1).is_ok());
}

#[test]
fn in_process_the_cpu_fallback_serves_every_request_and_says_so() {
    let mut config = config("sticky-fallback");
    config.fallback = Fallback::Cpu;
    let domain = FaultDomain::simulated();
    let plan = poisoning(&domain);
    let engine = InferenceEngine::with_backend_factory(config.clone(), move || {
        Ok::<_, HipError>(FaultyBackend::new(cpu(), plan.clone()))
    })
    .unwrap();
    let before = engine.embed(&["hello world"]).unwrap();
    assert!(!before.degraded);
    // This step poisons the process: its reset fails with the same code, the fallback
    // takes the step over, and the request succeeds — on the CPU.
    let poisoned = engine.embed(&["rust is fast", "hello"]).unwrap();
    assert!(poisoned.degraded);
    assert_eq!(domain.poisoned(), Some(700));
    for (text, got) in ["rust is fast", "hello"].iter().zip(&poisoned.embeddings) {
        assert!(
            max_difference(got, &reference(&config, text)) <= 1e-6,
            "{text}"
        );
    }
    // Every request from now on is served, and says where.
    for text in ["world", "fast , hello", "rust"] {
        let answer = engine.embed(&[text]).unwrap();
        assert!(answer.degraded, "{text}");
        assert!(max_difference(&answer.embeddings[0], &reference(&config, text)) <= 1e-6);
    }
    let health = engine.health();
    assert!(health.ready, "{health:?}");
    assert!(health.degraded);
    assert_eq!(health.status, "degraded");
    assert_eq!(health.cause, Some(HealthCause::DeviceLost));
    assert_eq!(health.backend, "cpu (fallback)");
    assert_eq!(engine.active_backend(), "cpu (fallback)");
    // It keeps trying to bring a fresh backend back; in a poisoned process none comes.
    assert!(eventually(Duration::from_secs(5), || {
        engine.metrics().recovery_attempts("failure") >= 2
    }));
    assert_eq!(engine.metrics().recovery_attempts("success"), 0);
    let text = scrape(engine.registry());
    assert_eq!(sample(&text, "hipinfer_degraded"), Some(1.0));
    assert_eq!(sample(&text, "hipinfer_device_lost_total"), Some(1.0));
    assert_eq!(sample(&text, "hipinfer_degraded_requests_total"), Some(4.0));
    assert_eq!(
        sample(&text, "hipinfer_duplicate_completions_total"),
        Some(0.0)
    );
    assert!(engine.degraded_time() > Duration::ZERO);
}

#[test]
fn a_library_user_who_never_calls_health_sees_the_engine_recover_on_its_own() {
    let config = config("sticky-heal");
    // The first two backends live in a "process" that the poisoned input ruins; from the third
    // on, a fresh one (the device answers again).
    let poisoned = FaultDomain::simulated();
    let made = Arc::new(AtomicU32::new(0));
    let counter = made.clone();
    let engine = InferenceEngine::with_backend_factory(config.clone(), move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let domain = if n < 2 {
            poisoned.clone()
        } else {
            FaultDomain::simulated()
        };
        Ok::<_, HipError>(FaultyBackend::new(cpu(), poisoning(&domain)))
    })
    .unwrap();
    match engine.embed(&["rust is fast"]) {
        Err(EngineError::Unhealthy { reason }) => {
            assert!(reason.contains("device is lost"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Without a single health() call, the engine heals: its timer makes new backends until
    // one answers its probe.
    assert!(
        eventually(Duration::from_secs(10), || {
            engine.metrics().recovery_attempts("success") == 1
        }),
        "made {} backends",
        made.load(Ordering::SeqCst)
    );
    assert!(engine.metrics().recovery_attempts("failure") >= 1);
    let answer = engine.embed(&["hello world"]).unwrap();
    assert!(!answer.degraded);
    assert!(max_difference(&answer.embeddings[0], &reference(&config, "hello world")) <= 1e-6);
}

#[test]
fn a_fallback_campaign_in_this_process_loses_nothing() {
    let mut engine = config("sticky-campaign");
    engine.fallback = Fallback::Cpu;
    engine.backend = hipinfer::backend::BackendChoice::Cpu;
    engine.threads = Some(1);
    let mut chaos = ChaosConfig::new(engine, 300, 8, 3);
    chaos.reset_rate = 0.005;
    chaos.sticky_scope = StickyScope::Process;
    chaos.domain = FaultDomain::simulated();
    let report = run_campaign(&chaos, &|_, _| {}).unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!((report.succeeded, report.failed), (300, 0), "{report:?}");
    assert!(report.injected.reset >= 1, "{report:?}");
    assert_eq!(report.device_lost, 1, "{report:?}");
    assert!(report.degraded_requests > 0, "{report:?}");
    assert!(report.degraded_seconds > 0.0, "{report:?}");
}
