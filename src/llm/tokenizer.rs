//! The tokenizer a GGUF file describes (`tokenizer.ggml.*`), built with Hugging Face's
//! `tokenizers` crate — never a hand-rolled BPE: GPT-2 byte-level BPE from `tokens` and
//! `merges`, with the control tokens (`token_type` 3: `<|im_start|>`, `<|im_end|>`, …) matched
//! whole in the text, as transformers' tokenizer does.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::gguf::{Gguf, Value};

/// GGUF `token_type` of a control token.
const CONTROL: u64 = 3;
/// GGUF `token_type` of a user-defined token (matched whole, not special).
const USER_DEFINED: u64 = 4;

#[derive(Debug, thiserror::Error)]
#[error("tokenizer of the GGUF file: {field}: {message}")]
pub struct TokenizerError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> TokenizerError {
    TokenizerError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A GGUF model's tokenizer.
#[derive(Debug)]
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// `tokenizer.ggml.bos_token_id`, added in front when `add_bos_token` says so.
    bos: Option<u32>,
    add_bos: bool,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
}

impl GgufTokenizer {
    /// Builds the tokenizer from a parsed GGUF's metadata.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<GgufTokenizer, TokenizerError> {
        let text = |key: &str| gguf.get(key).and_then(Value::as_str);
        match text("tokenizer.ggml.model") {
            Some("gpt2") => {}
            Some(other) => {
                return Err(bad(
                    "tokenizer.ggml.model",
                    format!("{other:?} is not supported (gpt2, byte-level BPE, is)"),
                ))
            }
            None => return Err(bad("tokenizer.ggml.model", "missing")),
        }
        let strings = |key: &str| -> Result<Vec<&str>, TokenizerError> {
            gguf.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(key, "missing or not an array"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| bad(key, "holds a value that is not a string"))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match gguf.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(value) => value
                .as_array()
                .ok_or_else(|| bad("tokenizer.ggml.token_type", "not an array"))?
                .iter()
                .map(|v| v.as_u64().unwrap_or(1))
                .collect(),
        };
        if types.len() != tokens.len() {
            return Err(bad(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| bad("tokenizer.ggml.tokens", "too many"))?;
            if vocab.insert(token.to_string(), id).is_some() {
                return Err(bad(
                    "tokenizer.ggml.tokens",
                    format!("{token:?} appears twice"),
                ));
            }
        }
        let merges = merges
            .iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        bad("tokenizer.ggml.merges", format!("{merge:?} is not \"a b\""))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vocab: Vocab = vocab.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad("tokenizer.ggml.merges", e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let whole = |kind: u64, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, &t)| t == kind)
                .map(|(token, _)| AddedToken::from(token.to_string(), special))
                .collect()
        };
        tokenizer.add_special_tokens(&whole(CONTROL, true));
        tokenizer.add_tokens(&whole(USER_DEFINED, false));
        let id = |key: &str| gguf.get(key).and_then(Value::as_u64).map(|v| v as u32);
        let add_bos = matches!(
            gguf.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        Ok(GgufTokenizer {
            tokenizer,
            bos: id("tokenizer.ggml.bos_token_id"),
            add_bos,
            eos: id("tokenizer.ggml.eos_token_id"),
        })
    }

    /// The ids of `text`; control tokens written in it (`<|im_start|>`) are matched whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| bad("encode", e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens skipped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| bad("decode", e.to_string()))
    }

    /// The id of a token written whole (a control token such as `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}
