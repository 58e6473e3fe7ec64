//! `Generator`: a language model's weights on a backend, and the generation loop — prefill the
//! prompt in chunks, then one token per step: sample on the host, stop on the model's stop
//! tokens, a stop string, `max_tokens` or the context's end, and stream the text as it is
//! produced (never half a UTF-8 character, never a piece of a stop string).
//!
//! The host holds everything a step needs (prompt ids, generated ids, the sampler's seed and
//! step), so when a step fails with a Reset-class device error the backend is reset, the
//! weights uploaded again, and the KV cache rebuilt by prefilling prompt + generated tokens:
//! the continuation is the one the sequence would have had without the fault.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::error::Recovery;

use super::model::{forward, Decoder};
use super::sampler::sample;
use super::weights::LlamaWeights;
use super::{KvCache, LanguageModel, LlmError, OutputText, SamplingParams};

/// Prompt tokens per prefill step at most (longer prompts take several).
pub const PREFILL_CHUNK: usize = 512;
/// Device resets one generation may recover from before it fails.
pub const MAX_RECOVERIES: u32 = 3;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    /// Tokens to generate at most (≥ 1, ≤ the context length).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Texts that end the generation (not included in the text).
    pub stop: Vec<String>,
    /// A context shorter than the model's (memory), or `None` for the model's.
    pub context_length: Option<usize>,
    /// Keep going past the model's stop tokens (benchmarks: a fixed number of tokens).
    pub ignore_stop_tokens: bool,
}

impl GenerateRequest {
    /// Greedy decoding of up to `max_tokens` after `prompt_ids`, stopping at the model's stop
    /// tokens.
    pub fn greedy(prompt_ids: Vec<u32>, max_tokens: usize) -> GenerateRequest {
        GenerateRequest {
            prompt_ids,
            max_tokens,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            context_length: None,
            ignore_stop_tokens: false,
        }
    }
}

/// Why a generation ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens`, or the end of the context.
    Length,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generated {
    pub prompt_ids: Vec<u32>,
    /// Every sampled id, the stop token included when one ended it.
    pub generated_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// From the call to the first token sampled.
    pub time_to_first_token: Duration,
    /// From the first token to the last.
    pub decode_time: Duration,
    /// Device resets recovered from (each re-prefilled prompt + generated tokens).
    pub recoveries: u32,
}

/// A model on a backend.
pub struct Generator<B: Backend> {
    model: Arc<LanguageModel>,
    backend: B,
    weights: LlamaWeights<B::Buffer>,
}

impl<B: Backend> std::fmt::Debug for Generator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("model", &self.model.path())
            .field("backend", &self.backend.info())
            .finish()
    }
}

impl<B: Backend> Generator<B> {
    /// Uploads `model`'s weights to `backend` (a Reset-class failure is retried after a reset).
    pub fn new(model: Arc<LanguageModel>, backend: B) -> Result<Self, LlmError> {
        let weights = upload(&model, &backend)?;
        Ok(Generator {
            model,
            backend,
            weights,
        })
    }

    fn decoder(&self) -> Decoder<'_, B::Buffer> {
        Decoder {
            config: self.model.config(),
            weights: &self.weights,
        }
    }

    pub fn model(&self) -> &Arc<LanguageModel> {
        &self.model
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Checks `request` against the model: a bad one is an error naming the argument.
    pub fn validate(&self, request: &GenerateRequest) -> Result<usize, LlmError> {
        validate_request(&self.model, request)
    }

    /// The logits of the last of `tokens` (the first `prompt` of them the prompt's), appended
    /// to `cache` in chunks.
    fn prefill(
        &self,
        cache: &mut KvCache<B::Buffer>,
        tokens: &[u32],
        prompt: usize,
    ) -> Result<Vec<f32>, B::Error> {
        let mut logits = Vec::new();
        let count = tokens.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let rows = if i + 1 == count {
                vec![chunk.len() - 1]
            } else {
                Vec::new()
            };
            let prompt_rows = prompt.saturating_sub(i * PREFILL_CHUNK).min(chunk.len());
            logits = forward(
                &self.backend,
                self.decoder(),
                cache,
                chunk,
                prompt_rows,
                &rows,
            )?;
        }
        Ok(logits)
    }

    /// The first step's logits of `prompt_ids` (for checks against a reference).
    pub fn prompt_logits(&mut self, prompt_ids: &[u32]) -> Result<Vec<f32>, LlmError> {
        let config = self.model.config();
        let mut cache = KvCache::new(&self.backend, config, prompt_ids.len().max(1))
            .map_err(LlmError::device)?;
        self.prefill(&mut cache, prompt_ids, prompt_ids.len())
            .map_err(LlmError::device)
    }

    /// Resets the backend, uploads the weights again and rebuilds a cache of `capacity` from
    /// `tokens`: the logits after them.
    fn recover(
        &mut self,
        capacity: usize,
        tokens: &[u32],
        prompt: usize,
    ) -> Result<(KvCache<B::Buffer>, Vec<f32>), LlmError> {
        self.backend.reset().map_err(LlmError::device)?;
        self.weights = upload(&self.model, &self.backend)?;
        let mut cache =
            KvCache::new(&self.backend, self.model.config(), capacity).map_err(LlmError::device)?;
        let logits = self
            .prefill(&mut cache, tokens, prompt)
            .map_err(LlmError::device)?;
        Ok((cache, logits))
    }

    /// Generates for `request`, calling `on_text` with each piece of text as it is final.
    pub fn generate(
        &mut self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generated, LlmError> {
        let started = Instant::now();
        let context = self.validate(request)?;
        let prompt = &request.prompt_ids;
        let capacity = (prompt.len() + request.max_tokens).min(context);
        let mut recoveries = 0;
        let mut history: Vec<u32> = prompt.clone();
        // Runs one device step; on a Reset-class failure, replays everything from the host.
        let mut cache = None;
        let mut logits = Vec::new();
        let mut pending: Option<u32> = None;
        let mut generated: Vec<u32> = Vec::with_capacity(request.max_tokens);
        let model = Arc::clone(&self.model);
        let tokenizer = model.tokenizer();
        let mut text = OutputText::new(tokenizer, &request.stop);
        let mut first_token = None;
        let finish_reason = loop {
            let step = match (&mut cache, pending) {
                (None, _) => KvCache::new(&self.backend, model.config(), capacity)
                    .and_then(|mut c| {
                        let l = self.prefill(&mut c, prompt, prompt.len())?;
                        Ok((c, l))
                    })
                    .map(|(c, l)| {
                        cache = Some(c);
                        l
                    }),
                (Some(c), Some(token)) => {
                    forward(&self.backend, self.decoder(), c, &[token], 0, &[0])
                }
                (Some(_), None) => Ok(std::mem::take(&mut logits)),
            };
            match step {
                Ok(l) => logits = l,
                Err(error) => {
                    let error = LlmError::device(error);
                    if error.recovery() != Some(Recovery::Reset) || recoveries >= MAX_RECOVERIES {
                        return Err(error);
                    }
                    recoveries += 1;
                    tracing::warn!(recoveries, "generation step failed, replaying: {error}");
                    drop(cache.take()); // its memory goes back before the new cache's
                    let (c, l) = self.recover(capacity, &history, prompt.len())?;
                    cache = Some(c);
                    logits = l;
                }
            }
            let token = sample(
                &request.sampling,
                &mut logits,
                &history,
                generated.len() as u64,
            );
            first_token.get_or_insert_with(Instant::now);
            generated.push(token);
            history.push(token);
            if !request.ignore_stop_tokens && model.stop_ids().contains(&token) {
                break FinishReason::Stop;
            }
            let (piece, stopped) = text.push(token).map_err(LlmError::from)?;
            if !piece.is_empty() {
                on_text(&piece);
            }
            if stopped {
                break FinishReason::Stop;
            }
            if generated.len() >= request.max_tokens || history.len() >= context {
                break FinishReason::Length;
            }
            pending = Some(token);
        };
        let rest = text.finish().map_err(LlmError::from)?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        let first = first_token.unwrap_or_else(Instant::now);
        Ok(Generated {
            prompt_ids: prompt.clone(),
            generated_ids: generated,
            text: text.text().to_string(),
            finish_reason,
            time_to_first_token: first - started,
            decode_time: first.elapsed(),
            recoveries,
        })
    }
}

/// Uploads the weights; a Reset-class failure is tried again after a reset.
fn upload<B: Backend>(
    model: &LanguageModel,
    backend: &B,
) -> Result<LlamaWeights<B::Buffer>, LlmError> {
    let mut attempt = 1;
    loop {
        match model.upload(backend)? {
            Ok(weights) => return Ok(weights),
            Err(error) => {
                let error = LlmError::device(error);
                if error.recovery() != Some(Recovery::Reset) || attempt >= MAX_RECOVERIES {
                    return Err(error);
                }
                attempt += 1;
                backend.reset().map_err(LlmError::device)?;
            }
        }
    }
}

/// The context a request may use.
fn context_of(model: &LanguageModel, request: &GenerateRequest) -> Result<usize, LlmError> {
    let model = model.config().context_length;
    match request.context_length {
        None => Ok(model),
        Some(0) => Err(LlmError::argument("context_length", "must be at least 1")),
        Some(c) if c > model => Err(LlmError::argument(
            "context_length",
            format!("{c} is past the model's context of {model} tokens"),
        )),
        Some(c) => Ok(c),
    }
}

/// Checks `request` against `model`: a bad one is an error naming the argument. Returns the
/// context the request may use.
pub fn validate_request(
    model: &LanguageModel,
    request: &GenerateRequest,
) -> Result<usize, LlmError> {
    request.sampling.validate()?;
    let context = context_of(model, request)?;
    if request.max_tokens == 0 {
        return Err(LlmError::argument("max_tokens", "must be at least 1"));
    }
    if request.max_tokens > context {
        return Err(LlmError::argument(
            "max_tokens",
            format!(
                "{} is past the context of {context} tokens",
                request.max_tokens
            ),
        ));
    }
    if request.prompt_ids.is_empty() {
        return Err(LlmError::argument("prompt", "is empty"));
    }
    if request.prompt_ids.len() >= context {
        return Err(LlmError::argument(
            "prompt",
            format!(
                "{} tokens leave no room to generate in the context of {context}",
                request.prompt_ids.len()
            ),
        ));
    }
    let vocab = model.config().vocab;
    if let Some(bad) = request.prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(LlmError::argument(
            "prompt",
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    if request.stop.iter().any(String::is_empty) {
        return Err(LlmError::argument("stop", "an empty stop string"));
    }
    Ok(context)
}
