//! SmolLM2-135M-Instruct from its GGUF on the CPU backend, against transformers
//! (`../shared/fixtures/smollm2_golden.json`): the first step's top-5 logits within 2e-3 and the
//! greedy continuation of every case identical, token for token — also with transient and
//! out-of-memory faults injected into every device call, and across device resets.

mod support;

use std::sync::Arc;

use hipinfer::backend::{
    Backend, CpuBackend, FaultDomain, FaultPlan, FaultyBackend, Resilient, StickyScope,
};
use hipinfer::error::{Op, Recovery};
use hipinfer::llm::{
    ChatMessage, FinishReason, GenerateRequest, Generator, LanguageModel, SamplingParams,
};
use hipinfer::retry::{RetryConfig, RetryPolicy, RetryState};

use support::{fixture_ids as ids, smollm2_fixture as fixture};

fn model() -> Option<Arc<LanguageModel>> {
    support::smollm2_gguf().map(|path| Arc::new(LanguageModel::open(path).unwrap()))
}

fn resilient<B: Backend<Error = hipinfer::HipError>>(backend: B) -> Resilient<B> {
    let config = RetryConfig::new()
        .with_max_retries(8)
        .with_initial_delay(std::time::Duration::from_micros(1))
        .with_max_delay(std::time::Duration::from_micros(10));
    let policy = Arc::new(RetryPolicy::new(config).unwrap());
    let state = RetryState::builder().without_metrics().build().unwrap();
    Resilient::new(backend, policy, state)
}

/// The prompt ids of a fixture case (chat cases through the model's template).
fn prompt(model: &LanguageModel, case: &serde_json::Value) -> Vec<u32> {
    let text = match case.get("chat") {
        Some(chat) => {
            let messages: Vec<ChatMessage> = chat
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
                })
                .collect();
            model
                .chat_template()
                .unwrap()
                .render(&messages, true)
                .unwrap()
        }
        None => case["prompt"].as_str().unwrap().to_string(),
    };
    model.tokenizer().encode(&text).unwrap()
}

fn check_cases<B: Backend>(generator: &mut Generator<B>, with_logits: bool) {
    let fixture = fixture();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["id"].as_str().unwrap();
        let prompt_ids = prompt(generator.model(), case);
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]), "{name}: prompt ids");
        if with_logits {
            let logits = generator.prompt_logits(&prompt_ids).unwrap();
            for pair in case["first_logits_top5"].as_array().unwrap() {
                let (id, want) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap(),
                );
                let got = logits[id] as f64;
                assert!(
                    (got - want).abs() <= 2e-3,
                    "{name}: logit of token {id} is {got}, transformers {want}"
                );
            }
        }
        let want = ids(&case["greedy_ids"]);
        let max_tokens = case["max_new_tokens"].as_u64().unwrap() as usize;
        let mut streamed = String::new();
        let out = generator
            .generate(&GenerateRequest::greedy(prompt_ids, max_tokens), &mut |t| {
                streamed.push_str(t)
            })
            .unwrap();
        assert_eq!(out.generated_ids, want, "{name}: greedy ids");
        assert_eq!(
            out.text,
            case["greedy_text"].as_str().unwrap(),
            "{name}: text"
        );
        assert_eq!(streamed, out.text, "{name}: the stream is the text");
        let reason = if want.len() < max_tokens {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        assert_eq!(out.finish_reason, reason, "{name}");
    }
}

#[test]
fn logits_and_greedy_continuations_equal_transformers() {
    let Some(model) = model() else { return };
    let backend = resilient(CpuBackend::with_threads(2).unwrap());
    let mut generator = Generator::new(model, backend).unwrap();
    check_cases(&mut generator, true);
}

#[test]
fn greedy_continuations_survive_transient_and_oom_faults() {
    let Some(model) = model() else { return };
    // hipErrorOutOfMemory (Reclaim) and hipErrorOperatingSystem (Retry) on every kind of call.
    let plan = FaultPlan::new(11)
        .with_rate(None, 2, 0.01)
        .with_rate(None, 304, 0.02);
    let faulty = Arc::new(FaultyBackend::new(
        CpuBackend::with_threads(2).unwrap(),
        plan,
    ));
    let mut generator = Generator::new(model, resilient(Arc::clone(&faulty))).unwrap();
    check_cases(&mut generator, false);
    let (oom, transient) = (faulty.injected(2), faulty.injected(304));
    assert!(
        oom > 5 && transient > 10,
        "only {oom} OOM and {transient} transient faults"
    );
}

fn case(id: &str) -> serde_json::Value {
    fixture()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap()
        .clone()
}

#[test]
fn bad_arguments_are_errors_naming_them() {
    let Some(model) = model() else { return };
    let generator = Generator::new(model, resilient(CpuBackend::with_threads(2).unwrap())).unwrap();
    let good = GenerateRequest::greedy(vec![6403, 1980], 8);
    assert!(generator.validate(&good).is_ok());
    let context = generator.model().config().context_length;
    let cases: Vec<(GenerateRequest, &str)> = vec![
        (
            GenerateRequest {
                sampling: SamplingParams {
                    temperature: -1.0,
                    ..SamplingParams::default()
                },
                ..good.clone()
            },
            "temperature",
        ),
        (
            GenerateRequest {
                sampling: SamplingParams {
                    top_p: 0.0,
                    ..SamplingParams::default()
                },
                ..good.clone()
            },
            "top_p",
        ),
        (
            GenerateRequest {
                sampling: SamplingParams {
                    top_p: 1.01,
                    ..SamplingParams::default()
                },
                ..good.clone()
            },
            "top_p",
        ),
        (
            GenerateRequest {
                max_tokens: 0,
                ..good.clone()
            },
            "max_tokens",
        ),
        (
            GenerateRequest {
                max_tokens: context + 1,
                ..good.clone()
            },
            "max_tokens",
        ),
        (
            GenerateRequest {
                prompt_ids: vec![],
                ..good.clone()
            },
            "prompt",
        ),
        (
            GenerateRequest {
                prompt_ids: vec![49_152],
                ..good.clone()
            },
            "prompt",
        ),
        (
            GenerateRequest {
                context_length: Some(context + 1),
                ..good.clone()
            },
            "context_length",
        ),
        (
            GenerateRequest {
                stop: vec![String::new()],
                ..good.clone()
            },
            "stop",
        ),
    ];
    for (request, name) in cases {
        let error = generator.validate(&request).unwrap_err().to_string();
        assert!(error.starts_with(name), "{name}: {error}");
    }
}

#[test]
fn the_end_of_the_context_finishes_with_length_and_stop_strings_cut_the_text() {
    let Some(model) = model() else { return };
    let mut generator =
        Generator::new(model, resilient(CpuBackend::with_threads(2).unwrap())).unwrap();
    let once = case("once");
    let (prompt, want) = (ids(&once["prompt_ids"]), ids(&once["greedy_ids"]));
    // A context of 10: 4 prompt tokens leave room for 6, whatever max_tokens says.
    let request = GenerateRequest {
        context_length: Some(10),
        ..GenerateRequest::greedy(prompt.clone(), 10)
    };
    let out = generator.generate(&request, &mut |_| {}).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.generated_ids, want[..6]);

    // ", the city of Nova Haven was…": the stop string ends the text before it, and no piece of
    // it reaches the stream.
    let mut streamed = String::new();
    let request = GenerateRequest {
        stop: vec![" Nova Hav".into(), "never".into()],
        ..GenerateRequest::greedy(prompt, 32)
    };
    let out = generator
        .generate(&request, &mut |t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, ", the city of");
    assert_eq!(streamed, out.text);
}

#[test]
fn the_same_seed_samples_the_same_text() {
    let Some(model) = model() else { return };
    let mut generator =
        Generator::new(model, resilient(CpuBackend::with_threads(2).unwrap())).unwrap();
    let sampled = |seed: u64| GenerateRequest {
        sampling: SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 50,
            seed,
            ..SamplingParams::default()
        },
        ..GenerateRequest::greedy(ids(&case("once")["prompt_ids"]), 24)
    };
    let first = generator.generate(&sampled(1), &mut |_| {}).unwrap();
    let again = generator.generate(&sampled(1), &mut |_| {}).unwrap();
    let other = generator.generate(&sampled(2), &mut |_| {}).unwrap();
    assert_eq!(first.generated_ids, again.generated_ids);
    assert_ne!(
        first.generated_ids, other.generated_ids,
        "the seed changes nothing"
    );
}

/// A Reset-class fault mid-generation (context-scoped: a reset clears it) is survived by
/// resetting, uploading again and re-prefilling prompt + generated tokens: the same ids.
#[test]
fn a_reset_mid_generation_replays_to_the_same_tokens() {
    let Some(model) = model() else { return };
    let faulty = Arc::new(FaultyBackend::new(
        CpuBackend::with_threads(2).unwrap(),
        FaultPlan::new(3).with_domain(FaultDomain::simulated()),
    ));
    let mut generator = Generator::new(model, resilient(Arc::clone(&faulty))).unwrap();
    let once = case("once");
    let request = GenerateRequest::greedy(ids(&once["prompt_ids"]), 32);
    let mut pieces = 0;
    let mut streamed = String::new();
    let out = generator
        .generate(&request, &mut |t| {
            pieces += 1;
            streamed.push_str(t);
            if pieces == 5 || pieces == 20 {
                faulty.script(Op::Launch, 700, 1); // hipErrorIllegalAddress, sticky
            }
        })
        .unwrap();
    assert_eq!(out.generated_ids, ids(&once["greedy_ids"]));
    assert_eq!(streamed, once["greedy_text"].as_str().unwrap());
    assert_eq!(out.recoveries, 2);
    assert_eq!(faulty.resets(), 2);
}

/// A process-scoped sticky fault (ROCm ≥ 6, CUDA): the reset fails with the same code, so the
/// generation ends with a clear device error — never wrong tokens, never a hang.
#[test]
fn a_process_wide_sticky_fault_fails_clearly() {
    let Some(model) = model() else { return };
    let faulty = Arc::new(FaultyBackend::new(
        CpuBackend::with_threads(2).unwrap(),
        FaultPlan::new(4)
            .with_sticky_scope(StickyScope::Process)
            .with_domain(FaultDomain::simulated()),
    ));
    let mut generator = Generator::new(model, resilient(Arc::clone(&faulty))).unwrap();
    let request = GenerateRequest::greedy(ids(&case("france")["prompt_ids"]), 16);
    let mut pieces = 0;
    let error = generator
        .generate(&request, &mut |_| {
            pieces += 1;
            if pieces == 3 {
                faulty.script(Op::Launch, 700, 1);
            }
        })
        .unwrap_err();
    assert_eq!(error.recovery(), Some(Recovery::Reset), "{error}");
    assert!(
        error.to_string().contains("hipErrorIllegalAddress"),
        "{error}"
    );
}
