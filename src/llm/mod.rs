//! Language models from GGUF (llama family): the pieces built so far — the tokenizer, the chat
//! template and streaming detokenization.
//! The decoder itself (weights on a backend, KV cache, sampling) comes next.

mod chat_template;
mod stream_decoder;
mod tokenizer;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use stream_decoder::StreamDecoder;
pub use tokenizer::{GgufTokenizer, TokenizerError};
