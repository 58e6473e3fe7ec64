//! The generation engine on a tiny llama GGUF written by the tests: continuous batching gives
//! every sequence the tokens it gets alone (and the single-sequence `Generator` gives), each
//! fault class mid-stream leaves every stream identical, a poisoned sequence fails alone,
//! cancellation frees the cache, admission stops at the KV-cache budget, bad requests name
//! their field.

mod support;

use std::sync::Arc;

use hipinfer::backend::{
    CpuBackend, FaultAction, FaultDomain, FaultPlan, FaultyBackend, StickyScope,
};
use hipinfer::generation::{GenerationConfig, GenerationError, GenerationEvent};
use hipinfer::llm::{FinishReason, GenerateRequest, Generator};
use hipinfer::Op;
use support::gate::{Gate, Gated};
use support::generation::{
    alone, cpu_engine, engine, requests, same_tokens, tiny, together, unused_token,
};

#[test]
fn continuous_batching_gives_every_sequence_its_tokens_alone() {
    let model = tiny("gen_batching");
    let requests = requests();
    let reference = alone(&model, &requests);
    // The single-sequence generator (the CLI's) agrees with the engine alone.
    let mut generator =
        Generator::new(model.clone(), CpuBackend::with_threads(2).unwrap()).unwrap();
    for (request, want) in requests.iter().zip(&reference) {
        let out = generator.generate(request, &mut |_| {}).unwrap();
        assert_eq!(out.generated_ids, want.generated_ids);
    }
    // Three at a time, prompts prefilled 4 tokens a step: sequences join and leave mid-way.
    let config = GenerationConfig {
        max_running: 3,
        prefill_chunk: 4,
        ..GenerationConfig::default()
    };
    let engine = cpu_engine(&model, config);
    same_tokens(&together(&engine, &requests), &reference);
    let scrape = support::scrape(engine.registry());
    let generated: usize = reference.iter().map(|f| f.generated_ids.len()).sum();
    assert_eq!(
        support::sample(&scrape, "hipinfer_generation_tokens_total"),
        Some(generated as f64)
    );
    assert!(
        support::sample(&scrape, "hipinfer_generation_step_sequences_count").unwrap() > 0.0,
        "{scrape}"
    );
    assert_eq!(
        support::sample(&scrape, "hipinfer_generation_kv_cache_usage_ratio"),
        Some(0.0)
    );
}

/// A fault of each class while the streams run: transient errors and out of memory are retried
/// in place, a poisoned context is reset and every cache rebuilt from the host, a process-wide
/// sticky fault replaces the runner (a fresh backend standing for a new worker process) — and
/// every stream is the one it is without faults.
#[test]
fn each_fault_class_mid_stream_gives_identical_streams() {
    let model = tiny("gen_faults");
    let requests = requests();
    let reference = alone(&model, &requests);
    for (code, scope) in [
        (304, StickyScope::Context), // hipErrorOperatingSystem: retried in place
        (2, StickyScope::Context),   // out of memory: reclaimed, retried
        (700, StickyScope::Context), // illegal address: reset, replay
        (700, StickyScope::Process), // the process's context is lost: a new runner
    ] {
        let made = Arc::new(parking_lot::Mutex::new(
            Vec::<Arc<FaultyBackend<CpuBackend>>>::new(),
        ));
        let backends = made.clone();
        let engine = engine(
            &model,
            GenerationConfig {
                max_running: 4,
                ..Default::default()
            },
            move || {
                // Each backend in a process of its own: a new one is what a new worker would have.
                let plan = FaultPlan::new(1)
                    .with_sticky_scope(scope)
                    .with_domain(FaultDomain::simulated());
                let backend = Arc::new(FaultyBackend::new(CpuBackend::with_threads(2)?, plan));
                let mut made = backends.lock();
                if made.len() < 2 {
                    // Two faults at fixed points of the run, while the streams are live (a
                    // step is a graph launch and a launch for the logits).
                    for (pass, fail) in [(4, 1), (6, 1)] {
                        backend.script_pass(Op::Launch, pass);
                        backend.script(Op::Launch, code, fail);
                    }
                }
                made.push(backend.clone());
                Ok(backend)
            },
        );
        let streams: Vec<_> = requests
            .iter()
            .map(|r| engine.submit(r.clone()).unwrap())
            .collect();
        let mut results = Vec::new();
        for mut stream in streams {
            let end = loop {
                match stream.next_blocking().unwrap() {
                    GenerationEvent::Token { .. } => {}
                    GenerationEvent::Finished(done) => break Ok(*done),
                    GenerationEvent::Failed(e) => break Err(e),
                }
            };
            results.push(end);
        }
        same_tokens(&results, &reference);
        let scrape = support::scrape(engine.registry());
        let replays = support::sample(&scrape, "hipinfer_generation_replays_total").unwrap();
        let runners = made.lock().len();
        match (code, scope) {
            (700, StickyScope::Context) => {
                assert!(replays >= 1.0, "code {code}: {scrape}");
                assert_eq!(runners, 1);
            }
            (700, StickyScope::Process) => {
                assert!(replays >= 1.0, "code {code}: {scrape}");
                assert!(runners >= 2, "a new runner after a process-wide fault");
            }
            _ => {
                assert_eq!(replays, 0.0, "code {code} is retried in place: {scrape}");
                let retried: u32 = results
                    .iter()
                    .map(|r| r.as_ref().unwrap().report.op_retries)
                    .sum();
                assert!(retried >= 1, "code {code}: the retries are in the reports");
            }
        }
    }
}

/// Without a way to a new process, a process-wide fault fails the live sequences with a clear
/// error, and the engine says it is not ready — never wrong tokens, never a hang.
#[test]
fn a_process_wide_fault_without_a_new_process_fails_clearly() {
    let model = tiny("gen_lost");
    let domain = FaultDomain::simulated();
    let backend = Arc::new(FaultyBackend::new(
        CpuBackend::with_threads(2).unwrap(),
        FaultPlan::new(2)
            .with_sticky_scope(StickyScope::Process)
            .with_domain(domain),
    ));
    let faulty = backend.clone();
    let engine = engine(&model, GenerationConfig::default(), move || {
        Ok(faulty.clone())
    });
    let mut request = GenerateRequest::greedy(vec![1, 2, 3], 30);
    request.ignore_stop_tokens = true;
    let mut stream = engine.submit(request.clone()).unwrap();
    let mut failed = None;
    while let Some(event) = stream.next_blocking() {
        match event {
            GenerationEvent::Token { id: Some(_), .. } if failed.is_none() => {
                backend.script(Op::Launch, 700, 1);
                failed = Some(());
            }
            GenerationEvent::Failed(error) => {
                let text = error.to_string();
                assert!(text.contains("hipErrorIllegalAddress"), "{text}");
                assert!(!engine.health().ready);
                assert!(matches!(
                    engine.submit(request),
                    Err(GenerationError::Unhealthy { .. })
                ));
                return;
            }
            GenerationEvent::Finished(_) => panic!("finished on a lost device"),
            _ => {}
        }
    }
    panic!("the stream ended without an answer");
}

/// A sequence whose steps fail every time (a token that poisons each launch holding it) is run
/// alone and fails alone; the others get their very tokens.
#[test]
fn a_poisoned_sequence_fails_alone() {
    let model = tiny("gen_poison");
    let requests = requests();
    let reference = alone(&model, &requests);
    let poison = unused_token(&requests, &reference);
    let mut requests = requests;
    requests[0].prompt_ids.push(poison);
    let engine = engine(&model, GenerationConfig::default(), move || {
        let plan = FaultPlan::new(3)
            .with_domain(FaultDomain::simulated())
            .with_poison(poison, FaultAction::Fail(700));
        Ok(FaultyBackend::new(CpuBackend::with_threads(2)?, plan))
    });
    let results = together(&engine, &requests);
    match &results[0] {
        Err(GenerationError::Failed { message, report }) => {
            assert!(message.contains("hipErrorIllegalAddress"), "{message}");
            assert!(report.isolated, "{report:?}");
        }
        other => panic!("the poisoned sequence: {other:?}"),
    }
    same_tokens(&results[1..], &reference[1..]);
}

/// A client that goes away frees its sequence and its cache rows at the next step.
#[test]
fn cancelling_frees_the_cache() {
    let model = tiny("gen_cancel");
    let config = GenerationConfig {
        max_total_tokens: Some(60),
        ..GenerationConfig::default()
    };
    let engine = cpu_engine(&model, config);
    let mut long = GenerateRequest::greedy(vec![5; 10], 40);
    long.ignore_stop_tokens = true;
    let mut stream = engine.submit(long.clone()).unwrap();
    assert!(matches!(
        stream.next_blocking(),
        Some(GenerationEvent::Token { .. })
    ));
    drop(stream);
    // A small request's answer means a step ran after the drop: the cancel took effect.
    engine
        .submit(GenerateRequest::greedy(vec![7], 2))
        .unwrap()
        .wait()
        .unwrap();
    let done = engine.submit(long).unwrap().wait().unwrap();
    assert_eq!(done.generated_ids.len(), 40);
    let scrape = support::scrape(engine.registry());
    assert_eq!(
        support::sample(
            &scrape,
            "hipinfer_generation_requests_total{outcome=\"cancelled\"}"
        ),
        Some(1.0),
        "{scrape}"
    );
}

/// Past the KV-cache budget a request is refused at once (overloaded), never queued behind
/// the device; one that could never fit names `max_tokens`.
#[test]
fn admission_stops_at_the_kv_cache_budget() {
    let model = tiny("gen_admission");
    let gate = Gate::closed();
    gate.open(); // for the upload
    let hold = gate.clone();
    let config = GenerationConfig {
        max_total_tokens: Some(40),
        ..GenerationConfig::default()
    };
    let engine = engine(&model, config, move || {
        Ok(Gated {
            inner: CpuBackend::with_threads(2)?,
            hooks: hold.clone(),
        })
    });
    gate.close();
    let first = engine
        .submit(GenerateRequest::greedy(vec![1; 10], 25))
        .unwrap();
    gate.wait_for_waiter(); // its first step is on the device
    match engine.submit(GenerateRequest::greedy(vec![2; 4], 10)) {
        Err(GenerationError::Overloaded { message }) => {
            assert!(message.contains("35 of 40"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match engine.submit(GenerateRequest::greedy(vec![2; 4], 50)) {
        Err(GenerationError::Validation { field, .. }) => assert_eq!(field, "max_tokens"),
        other => panic!("{other:?}"),
    }
    gate.open();
    first.wait().unwrap();
    engine
        .submit(GenerateRequest::greedy(vec![2; 4], 10))
        .unwrap()
        .wait()
        .unwrap();
}

#[test]
fn bad_requests_name_their_field() {
    let model = tiny("gen_bad");
    let config = GenerationConfig {
        max_input_length: Some(8),
        ..GenerationConfig::default()
    };
    let engine = cpu_engine(&model, config);
    let field = |request: GenerateRequest| match engine.submit(request) {
        Err(GenerationError::Validation { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut hot = GenerateRequest::greedy(vec![1], 4);
    hot.sampling.temperature = -1.0;
    assert_eq!(field(hot), "temperature");
    assert_eq!(field(GenerateRequest::greedy(vec![], 4)), "prompt");
    assert_eq!(field(GenerateRequest::greedy(vec![1], 0)), "max_tokens");
    assert_eq!(field(GenerateRequest::greedy(vec![1; 9], 4)), "prompt");
    assert_eq!(field(GenerateRequest::greedy(vec![300], 4)), "prompt");
    let done = engine
        .submit(GenerateRequest::greedy(vec![1; 8], 60))
        .unwrap()
        .wait()
        .unwrap();
    // The context (64) ends it: prompt 8 + 56 generated.
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert!(8 + done.generated_ids.len() <= 64);
}
