//! The engine on the tiny synthetic model: answers equal the model's own, batching and limits,
//! every replay path of the recovery ladder (reset, out of memory, fatal, poison isolation),
//! deadlines, health, shutdown draining, metrics and the retry report.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hipinfer::backend::{CpuBackend, FaultyBackend};
use hipinfer::engine::{EmbedRequest, EngineConfig, EngineError, InferenceEngine, RetryScope};
use hipinfer::model::{Embedder, Model};
use hipinfer::retry::{Jitter, RetryConfig};
use hipinfer::{Op, Recovery};
use support::gate::{gated_engine, Gate, Gated};
use support::{embed_each_concurrently, sample, scrape, tiny_model};

fn config(name: &str) -> EngineConfig {
    EngineConfig::builder()
        .model(tiny_model::write(name))
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

fn cpu() -> CpuBackend {
    CpuBackend::with_threads(2).unwrap()
}

fn faulty(config: &EngineConfig) -> (InferenceEngine, Arc<FaultyBackend<CpuBackend>>) {
    let backend = Arc::new(FaultyBackend::passthrough(cpu()));
    let engine = InferenceEngine::with_backend(config.clone(), backend.clone()).unwrap();
    (engine, backend)
}

/// The model's own answer for `text`, alone, normalised.
fn reference(config: &EngineConfig, text: &str) -> Vec<f32> {
    let model = Arc::new(Model::load(&config.model).unwrap());
    Embedder::new(model, cpu())
        .unwrap()
        .embed(&[text], true)
        .unwrap()
        .remove(0)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TEXTS: &[&str] = &[
    "hello world",
    "rust is fast",
    "hello , rust !",
    "world",
    "fast fast fast",
];

#[test]
fn answers_equal_the_models_own_one_at_a_time_and_concurrently() {
    let config = config("engine-equal");
    let engine = InferenceEngine::with_backend(config.clone(), cpu()).unwrap();
    let response = engine.embed(TEXTS).unwrap();
    assert_eq!(response.embeddings.len(), TEXTS.len());
    for (text, embedding) in TEXTS.iter().zip(&response.embeddings) {
        assert!(
            max_difference(embedding, &reference(&config, text)) <= 1e-6,
            "{text}"
        );
    }
    assert!(response.retry.is_empty());
    assert_eq!(response.input_tokens[0], 4); // [CLS] hello world [SEP]

    // Many callers at once: batches mix their inputs; each answer is still its own.
    std::thread::scope(|scope| {
        for round in 0..8 {
            let engine = engine.clone();
            let config = &config;
            scope.spawn(move || {
                for i in 0..10 {
                    let text = TEXTS[(round + i) % TEXTS.len()];
                    let got = engine.embed(&[text]).unwrap().embeddings.remove(0);
                    assert!(max_difference(&got, &reference(config, text)) <= 1e-6);
                }
            });
        }
    });
}

#[test]
fn not_normalised_on_request() {
    let config = config("engine-raw");
    let engine = InferenceEngine::with_backend(config.clone(), cpu()).unwrap();
    let raw = engine
        .embed_request(EmbedRequest::new(["hello world"]).normalize(false))
        .unwrap()
        .embeddings
        .remove(0);
    let model = Arc::new(Model::load(&config.model).unwrap());
    let expected = Embedder::new(model, cpu())
        .unwrap()
        .embed(&["hello world"], false)
        .unwrap();
    assert!(max_difference(&raw, &expected[0]) <= 1e-6);
}

#[test]
fn bad_requests_are_refused_with_what_is_wrong() {
    let engine = InferenceEngine::with_backend(config("engine-bad"), cpu()).unwrap();
    assert!(matches!(
        engine.embed_request(EmbedRequest::new(Vec::<String>::new())),
        Err(EngineError::EmptyInput)
    ));
    let many = vec!["hello"; 33];
    match engine.embed(&many) {
        Err(EngineError::Validation { message, .. }) => {
            assert!(message.contains("max_client_batch_size 32"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The tiny model's max_seq_length is 12: 15 words do not fit.
    let long = "hello world ".repeat(8);
    match engine.embed_request(EmbedRequest::new([long.clone()]).truncate(false)) {
        Err(EngineError::Validation {
            index: Some(0),
            message,
        }) => {
            assert!(message.contains("max_input_length 12"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let cut = engine
        .embed_request(EmbedRequest::new([long]).truncate(true))
        .unwrap();
    assert_eq!(cut.input_tokens, vec![12]);
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_request_failure_total{reason=\"empty\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "hipinfer_request_failure_total{reason=\"validation\"}"
        ),
        Some(2.0)
    );
}

#[test]
fn a_shorter_input_limit_truncates_like_the_tokenizer() {
    let mut config = config("engine-limit");
    config.batching.max_input_length = Some(5);
    let engine = InferenceEngine::with_backend(config, cpu()).unwrap();
    let tokens = engine
        .tokenize(&["hello world rust is fast"], true)
        .unwrap();
    assert_eq!(tokens[0].ids, vec![2, 4, 5, 8, 3]); // [CLS] hello world rust [SEP]
    assert!(matches!(
        engine.tokenize(&["hello world rust is fast"], false),
        Err(EngineError::Validation { index: Some(0), .. })
    ));
}

#[test]
fn overload_is_refused_at_once_and_nothing_is_lost() {
    let mut config = config("engine-overload");
    config.batching.max_concurrent_requests = 2;
    // The weights upload launches nothing, so the engine starts with the gate closed.
    let (engine, gate) = gated_engine(config);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || engine.embed(&["hello"]))
        })
        .collect();
    while engine.in_flight() < 2 {
        std::thread::yield_now();
    }
    match engine.embed(&["world"]) {
        Err(EngineError::Overloaded { limit: 2 }) => {}
        other => panic!("{other:?}"),
    }
    gate.open();
    for h in held {
        assert_eq!(h.join().unwrap().unwrap().embeddings.len(), 1);
    }
    assert!(engine.embed(&["world"]).is_ok());
    let text = scrape(engine.registry());
    assert_eq!(
        sample(
            &text,
            "hipinfer_request_failure_total{reason=\"overloaded\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "hipinfer_requests_in_flight"), Some(0.0));
}

#[test]
fn a_poisoned_context_is_reset_and_the_step_replayed() {
    let config = config("engine-reset");
    let (engine, backend) = faulty(&config);
    backend.script(Op::Launch, 700, 1); // illegal address: sticky until reset
    let response = engine.embed(&["hello world"]).unwrap();
    assert!(max_difference(&response.embeddings[0], &reference(&config, "hello world")) <= 1e-6);
    assert!(backend.resets() >= 1);
    let report = &response.retry;
    assert_eq!(report.failed_steps, 1);
    let step = report
        .history
        .iter()
        .find(|r| r.scope == RetryScope::Step)
        .unwrap();
    assert_eq!(step.code, Some(700));
    assert_eq!(step.class, Recovery::Reset);
    assert_eq!(step.error, "hipErrorIllegalAddress");
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_step_replays_total{class=\"reset\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "hipinfer_steps_failed_total"), Some(1.0));
}

#[test]
fn op_retries_show_in_the_report_and_the_metrics() {
    let config = config("engine-op-retries");
    let (engine, backend) = faulty(&config);
    backend.script(Op::Launch, 304, 2); // transient: retried in place
    backend.script(Op::Allocate, 2, 1); // out of memory: reclaimed, retried
    let response = engine.embed(&["rust is fast"]).unwrap();
    let report = &response.retry;
    assert_eq!(report.failed_steps, 0);
    assert_eq!(report.retries, 3);
    let ops: Vec<_> = report
        .history
        .iter()
        .map(|r| (r.op, r.code, r.reason.as_str()))
        .collect();
    assert!(
        ops.contains(&(Some(Op::Launch), Some(304), "retried")),
        "{ops:?}"
    );
    assert!(
        ops.contains(&(Some(Op::Allocate), Some(2), "reclaimed")),
        "{ops:?}"
    );
    assert_eq!(backend.reclaims(), 1);
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_gpu_retry_attempts_total{op=\"launch\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "hipinfer_gpu_retry_attempts_total{op=\"allocate\"}"),
        Some(1.0)
    );
}

#[test]
fn out_of_memory_that_persists_splits_the_batch() {
    let mut config = config("engine-oom");
    config.retry.max_retries = 0; // an OOM gives up at once, so the step fails
    let backend = Arc::new(FaultyBackend::passthrough(cpu()));
    let gate = Gate::closed();
    let engine = InferenceEngine::with_backend(
        config,
        Gated {
            inner: backend.clone(),
            hooks: gate.clone(),
        },
    )
    .unwrap();
    // One request holds the worker at the gate while four more queue up to share a step.
    let spawn = |text: &'static str| {
        let engine = engine.clone();
        std::thread::spawn(move || engine.embed(&[text]))
    };
    let first = spawn("hello");
    gate.wait_for_waiter();
    let queued: Vec<_> = ["world", "rust", "fast", "is"]
        .into_iter()
        .map(spawn)
        .collect();
    while engine.metrics().queue_size.get() < 4 {
        std::thread::yield_now();
    }
    // The four-input step runs out of memory as it uploads its inputs (the held step has
    // uploaded its own already).
    backend.script(Op::CopyHostToDevice, 2, 1);
    gate.open();
    assert!(first.join().unwrap().is_ok());
    for h in queued {
        let response = h.join().unwrap().unwrap();
        assert_eq!(response.retry.failed_steps, 1);
    }
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_step_replays_total{class=\"reclaim\"}"),
        Some(1.0)
    );
    // 1 (first) + 1 (the four, failed) + 2 (two halves of two)
    assert_eq!(sample(&text, "hipinfer_batch_size_count"), Some(4.0));
}

#[test]
fn a_fatal_step_is_split_and_only_a_failing_input_fails() {
    let config = config("engine-fatal");
    let (engine, backend) = faulty(&config);
    backend.script(Op::Launch, 1, 1); // invalid value: Fatal, not the device's fault
    let response = engine.embed(&["hello", "world", "rust"]).unwrap();
    assert_eq!(response.embeddings.len(), 3);
    assert_eq!(backend.resets(), 0, "a Fatal error needs no reset");
    assert_eq!(response.retry.failed_steps, 1);
}

#[test]
fn a_poison_input_fails_alone_and_every_other_request_succeeds() {
    let config = config("engine-poison");
    let (engine, backend) = faulty(&config);
    backend.poison_token(8, 700); // every step holding "rust" hits an illegal address
    let texts = [
        "hello world",
        "rust is fast",
        "world !",
        "fast , hello",
        "hello",
    ];
    let results = embed_each_concurrently(&engine, &texts);
    for (text, result) in results {
        if text.contains("rust") {
            match result {
                Err(EngineError::Failed {
                    attempts,
                    code,
                    class,
                    report,
                    ..
                }) => {
                    // It failed alone more than max_replays times (and maybe in company first).
                    assert!(attempts > config.step_replay.max_replays, "{attempts}");
                    assert_eq!(code, Some(700));
                    assert_eq!(class, Recovery::Reset);
                    assert_eq!(report.failed_steps, attempts);
                }
                other => panic!("{other:?}"),
            }
        } else {
            let got = result.unwrap();
            assert!(max_difference(&got.embeddings[0], &reference(&config, text)) <= 1e-6);
        }
    }
}

#[test]
fn a_request_fails_at_its_deadline_even_while_its_step_is_stuck() {
    let mut config = config("engine-deadline");
    config.request_deadline = Some(Duration::from_millis(20));
    let (engine, gate) = gated_engine(config);
    let first = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.embed(&["hello"]))
    };
    gate.wait_for_waiter(); // the first step is in flight, and stays there
    let second = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.embed(&["world"]))
    };
    // Both fail at their deadline while the gate holds the step: nobody has to open it.
    for request in [first, second] {
        assert!(matches!(
            request.join().unwrap(),
            Err(EngineError::DeadlineExceeded { .. })
        ));
    }
    assert_eq!(engine.in_flight(), 0, "both were answered");
    // The step finishes later: its result is discarded and counted, never answered twice.
    gate.open();
    while engine.metrics().discarded_results.get() < 1 {
        std::thread::yield_now();
    }
    assert_eq!(engine.metrics().duplicate_completions.get(), 0);
    let text = scrape(engine.registry());
    assert_eq!(
        sample(&text, "hipinfer_request_failure_total{reason=\"deadline\"}"),
        Some(2.0)
    );
}

#[test]
fn shutdown_answers_everything_queued_then_refuses() {
    let config = config("engine-shutdown");
    let (engine, gate) = gated_engine(config);
    let pending: Vec<_> = TEXTS
        .iter()
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || engine.embed(&[*t]))
        })
        .collect();
    while engine.in_flight() < TEXTS.len() {
        std::thread::yield_now();
    }
    let stopper = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.shutdown())
    };
    gate.open();
    stopper.join().unwrap();
    for p in pending {
        assert!(p.join().unwrap().is_ok());
    }
    assert!(matches!(
        engine.embed(&["hello"]),
        Err(EngineError::ShuttingDown)
    ));
    assert!(!engine.health().ready);
}

#[test]
fn health_runs_a_probe_kernel_and_reports_the_breaker() {
    let config = config("engine-health");
    let (engine, backend) = faulty(&config);
    // A device that fails the probe is not ready.
    backend.script(Op::Synchronize, 1, 1);
    let health = engine.health();
    assert!(!health.ready);
    assert!(health.reason.unwrap().contains("probe"));
    // The next probe passes.
    let health = engine.health();
    assert!(health.ready, "{health:?}");
    assert_eq!(health.breaker, "closed");
}

#[test]
fn a_device_that_cannot_recover_makes_the_engine_unhealthy() {
    let mut config = config("engine-dead");
    config.step_replay.max_recovery_attempts = 2;
    let (engine, backend) = faulty(&config);
    // Every upload hits an illegal address: the step fails, and so does every re-upload.
    backend.script(Op::CopyHostToDevice, 700, 1000);
    match engine.embed(&["hello"]) {
        Err(EngineError::Unhealthy { reason }) => {
            assert!(reason.contains("device is lost"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!engine.health().ready);
    assert!(matches!(
        engine.embed(&["hello"]),
        Err(EngineError::Unhealthy { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_do_not_block_the_runtime() {
    let config = config("engine-async");
    let engine = InferenceEngine::with_backend(config.clone(), cpu()).unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let text = TEXTS[i % TEXTS.len()];
                (text, engine.embed_async(EmbedRequest::new([text])).await)
            })
        })
        .collect();
    for task in tasks {
        let (text, result) = task.await.unwrap();
        let got = result.unwrap().embeddings.remove(0);
        assert!(max_difference(&got, &reference(&config, text)) <= 1e-6);
    }
    assert!(engine.health_async().await.ready);
    engine.shutdown_async().await;
}

#[test]
fn the_engine_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<InferenceEngine>();
}

#[test]
fn a_missing_model_folder_is_a_clear_error() {
    let config = EngineConfig::builder()
        .model("/nonexistent/model")
        .build()
        .unwrap();
    match InferenceEngine::with_backend(config, cpu()) {
        Err(e) => assert!(e.to_string().contains("/nonexistent/model"), "{e}"),
        Ok(_) => panic!("loaded a missing folder"),
    }
}
