//! SmolLM2-135M-Instruct from its GGUF on the CPU backend, against transformers
//! (`../shared/fixtures/smollm2_golden.json`): the first step's top-5 logits within 2e-3 and the
//! greedy continuation of every case identical, token for token — also with transient and
//! out-of-memory faults injected into every device call, and across device resets.

mod support;

use std::path::Path;
use std::sync::Arc;

use hipinfer::backend::{Backend, CpuBackend, FaultPlan, FaultyBackend, Resilient};
use hipinfer::llm::{
    ChatMessage, FinishReason, GenerateRequest, Generator, LanguageModel, SamplingParams,
};
use hipinfer::retry::{RetryConfig, RetryPolicy, RetryState};

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/smollm2_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

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
