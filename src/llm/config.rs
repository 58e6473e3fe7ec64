//! `LlamaConfig`: a llama-family decoder's shape, read from a GGUF's `llama.*` metadata (or
//! another architecture's prefix with the same keys), so other llama GGUFs load as well.

use std::path::Path;

use crate::gguf::{Gguf, Value};

use super::LlmError;

/// Architectures whose blocks are llama's (RMSNorm, RoPE, GQA attention, SwiGLU, no biases).
pub const SUPPORTED_ARCHITECTURES: [&str; 1] = ["llama"];

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ff: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rope_dims: usize,
    pub norm_eps: f32,
}

impl LlamaConfig {
    pub fn from_gguf(gguf: &Gguf<'_>, path: &Path) -> Result<LlamaConfig, LlmError> {
        let unsupported = |detail: String| LlmError::Unsupported {
            path: path.to_path_buf(),
            detail,
        };
        let architecture = gguf
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| unsupported("general.architecture: missing".into()))?
            .to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(unsupported(format!(
                "general.architecture: {architecture:?} is not supported (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            )));
        }
        let key = |name: &str| format!("{architecture}.{name}");
        let count = |name: &str| -> Result<usize, LlmError> {
            let field = key(name);
            let value = gguf
                .get(&field)
                .and_then(Value::as_u64)
                .ok_or_else(|| unsupported(format!("{field}: missing or not an integer")))?;
            match usize::try_from(value) {
                Ok(v) if v > 0 && v <= 1 << 24 => Ok(v),
                _ => Err(unsupported(format!("{field}: {value} is out of range"))),
            }
        };
        let float = |name: &str, default: Option<f64>| -> Result<f32, LlmError> {
            let field = key(name);
            match gguf.get(&field).and_then(Value::as_f64).or(default) {
                Some(v) if v.is_finite() && v > 0.0 => Ok(v as f32),
                Some(v) => Err(unsupported(format!("{field}: {v} must be positive"))),
                None => Err(unsupported(format!("{field}: missing"))),
            }
        };
        let layers = count("block_count")?;
        let hidden = count("embedding_length")?;
        let heads = count("attention.head_count")?;
        let kv_heads = match gguf.get(&key("attention.head_count_kv")) {
            Some(_) => count("attention.head_count_kv")?,
            None => heads,
        };
        let ff = count("feed_forward_length")?;
        let context_length = count("context_length")?;
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(unsupported(format!(
                "{}: {hidden} is not a multiple of {heads} heads, or {heads} heads of {kv_heads} \
                 KV heads",
                key("embedding_length")
            )));
        }
        let head_dim = hidden / heads;
        let rope_dims = match gguf.get(&key("rope.dimension_count")) {
            Some(_) => count("rope.dimension_count")?,
            None => head_dim,
        };
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(unsupported(format!(
                "{}: {rope_dims} must be even and at most the head size {head_dim}",
                key("rope.dimension_count")
            )));
        }
        let vocab = match gguf.get(&key("vocab_size")) {
            Some(_) => count("vocab_size")?,
            None => gguf
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(<[Value]>::len)
                .ok_or_else(|| unsupported("tokenizer.ggml.tokens: missing".into()))?,
        };
        Ok(LlamaConfig {
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            ff,
            vocab,
            context_length,
            rope_theta: float("rope.freq_base", Some(10_000.0))?,
            rope_dims,
            norm_eps: float("attention.layer_norm_rms_epsilon", None)?,
            architecture,
        })
    }

    /// Values per KV-cache row of one layer (K or V).
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Values per row of the fused Q, K, V product.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Bytes of KV cache per token of context (K and V, every layer, f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.layers * self.kv_width() * std::mem::size_of::<f32>()
    }
}
