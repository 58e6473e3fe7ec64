//! Language models from GGUF (the llama family): the tokenizer and chat template from the
//! file's metadata, the weights in their own block formats on a backend, the forward pass with
//! a KV cache, sampling, and the generation loop that survives device resets by replaying from
//! what the host holds.

mod chat_template;
mod config;
mod error;
mod generate;
mod kv_cache;
mod model;
mod output_text;
mod sampler;
mod stream_decoder;
mod tokenizer;
mod weights;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{LlamaConfig, SUPPORTED_ARCHITECTURES};
pub use error::LlmError;
pub use generate::{
    validate_request, FinishReason, GenerateRequest, Generated, Generator, MAX_RECOVERIES,
    PREFILL_CHUNK,
};
pub use kv_cache::{KvCache, KvSlot};
pub use model::{forward, forward_batch, Decoder, Feed, LanguageModel};
pub use output_text::OutputText;
pub use sampler::{argmax, sample, SamplingParams};
pub use stream_decoder::StreamDecoder;
pub use tokenizer::{GgufTokenizer, TokenizerError};
pub use weights::{format_of, LayerWeights, LlamaWeights, QuantMatrix};
