//! The generation tests' shared pieces: a tiny llama GGUF, eight mixed requests, engines on
//! the CPU backend, and the comparisons of streams.

use std::sync::Arc;
use std::time::Duration;

use hipinfer::backend::{Backend, CpuBackend};
use hipinfer::generation::{
    local_runners, Finished, GenerationConfig, GenerationEngine, GenerationError, GenerationEvent,
};
use hipinfer::llm::{GenerateRequest, LanguageModel, SamplingParams};
use hipinfer::retry::{RetryConfig, RetryPolicy, RetryState};
use hipinfer::HipError;
use prometheus::Registry;

use super::tiny_llama::{bytes_with, scratch, write};

pub fn tiny(test: &str) -> Arc<LanguageModel> {
    let path = write(&scratch(test), "tiny.gguf", &bytes_with(1, |_, _| {}));
    Arc::new(LanguageModel::open(path).unwrap())
}

pub fn policy() -> Arc<RetryPolicy> {
    let config = RetryConfig::new()
        .with_max_retries(8)
        .with_initial_delay(Duration::from_micros(1))
        .with_max_delay(Duration::from_micros(10));
    Arc::new(RetryPolicy::new(config).unwrap())
}

/// An engine whose runners are made by `make`.
pub fn engine<B, F>(
    model: &Arc<LanguageModel>,
    config: GenerationConfig,
    make: F,
) -> GenerationEngine
where
    B: Backend<Error = HipError> + Send + 'static,
    F: Fn() -> Result<B, HipError> + Send + Sync + 'static,
{
    let state = RetryState::builder().without_metrics().build().unwrap();
    let model2 = model.clone();
    GenerationEngine::start(model.clone(), config, Registry::new(), move |rows| {
        local_runners(model2, make, policy(), state, rows)
    })
    .unwrap()
}

pub fn cpu_engine(model: &Arc<LanguageModel>, config: GenerationConfig) -> GenerationEngine {
    engine(model, config, || CpuBackend::with_threads(2))
}

/// Eight requests: prompts of 1 to 20 tokens, greedy and seeded sampling, 6 to 40 tokens.
pub fn requests() -> Vec<GenerateRequest> {
    (0..8u32)
        .map(|i| {
            let prompt: Vec<u32> = (0..1 + i * 19 % 20)
                .map(|j| (i * 31 + j * 7) % 250)
                .collect();
            let mut request = GenerateRequest::greedy(prompt, 6 + (i as usize * 5) % 35);
            request.ignore_stop_tokens = i % 3 != 0;
            if i % 2 == 1 {
                request.sampling = SamplingParams {
                    temperature: 0.9,
                    top_k: 40,
                    top_p: 0.95,
                    seed: 100 + i as u64,
                    ..SamplingParams::default()
                };
            }
            request
        })
        .collect()
}

/// Every request alone in the engine, one after the other.
pub fn alone(model: &Arc<LanguageModel>, requests: &[GenerateRequest]) -> Vec<Finished> {
    let engine = cpu_engine(model, GenerationConfig::default());
    requests
        .iter()
        .map(|r| engine.submit(r.clone()).unwrap().wait().unwrap())
        .collect()
}

/// All requests at once; each stream's events checked (tokens in order, text pieces adding up
/// to the final text, one end).
pub fn together(
    engine: &GenerationEngine,
    requests: &[GenerateRequest],
) -> Vec<Result<Finished, GenerationError>> {
    let streams: Vec<_> = requests
        .iter()
        .map(|r| engine.submit(r.clone()).unwrap())
        .collect();
    streams
        .into_iter()
        .map(|mut stream| {
            let (mut ids, mut text) = (Vec::new(), String::new());
            let end = loop {
                match stream.next_blocking().expect("a stream ends with an event") {
                    GenerationEvent::Token { id, text: piece } => {
                        ids.extend(id);
                        text.push_str(&piece);
                    }
                    GenerationEvent::Finished(done) => {
                        assert_eq!(done.generated_ids, ids, "streamed ids");
                        assert_eq!(done.text, text, "streamed text");
                        break Ok(*done);
                    }
                    GenerationEvent::Failed(error) => break Err(error),
                }
            };
            assert!(stream.next_blocking().is_none(), "nothing after the end");
            end
        })
        .collect()
}

pub fn same_tokens(got: &[Result<Finished, GenerationError>], want: &[Finished]) {
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        let got = got.as_ref().unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(got.generated_ids, want.generated_ids, "request {i}: ids");
        assert_eq!(got.text, want.text, "request {i}: text");
        assert_eq!(got.finish_reason, want.finish_reason, "request {i}");
    }
}

/// A token no request but the first holds or generates (in `reference`): the one to poison.
pub fn unused_token(requests: &[GenerateRequest], reference: &[Finished]) -> u32 {
    let used: Vec<u32> = requests
        .iter()
        .zip(reference)
        .skip(1)
        .flat_map(|(r, f)| {
            r.prompt_ids
                .iter()
                .chain(&f.generated_ids)
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    (0..250).find(|t| !used.contains(t)).unwrap()
}
