//! `LanguageModel` (what the host holds: config, tokenizer, chat template, the file) and
//! `DeviceLlama` (its weights on a backend, and the forward pass of the llama architecture).

use std::path::{Path, PathBuf};

use crate::backend::{Backend, DecoderShape, Kernel};
use crate::gguf::GgufFile;

use super::weights::{LlamaWeights, QuantMatrix};
use super::{ChatTemplate, GgufTokenizer, KvCache, LlamaConfig, LlmError};

/// A language model as the host holds it; the weights stay in the file until uploaded.
#[derive(Debug)]
pub struct LanguageModel {
    path: PathBuf,
    config: LlamaConfig,
    tokenizer: GgufTokenizer,
    chat_template: Option<ChatTemplate>,
    /// The ids that end a generation: the model's EOS and the chat template's end of turn.
    stop_ids: Vec<u32>,
    file_bytes: u64,
}

impl LanguageModel {
    /// Reads the GGUF's header, config and tokenizer (the weights are read by [`Self::upload`],
    /// which checks each tensor's presence, shape and type).
    pub fn open(path: impl AsRef<Path>) -> Result<LanguageModel, LlmError> {
        let path = path.as_ref().to_path_buf();
        let file = GgufFile::open(&path)?;
        let gguf = file.parsed()?;
        let config = LlamaConfig::from_gguf(&gguf, &path)?;
        let tokenizer = GgufTokenizer::from_gguf(&gguf)?;
        if tokenizer.vocab_size() < config.vocab {
            return Err(LlmError::Unsupported {
                path,
                detail: format!(
                    "the tokenizer has {} tokens, the model {}",
                    tokenizer.vocab_size(),
                    config.vocab
                ),
            });
        }
        let chat_template = ChatTemplate::from_gguf(&gguf)?;
        let mut stop_ids: Vec<u32> = tokenizer.eos.into_iter().collect();
        for marker in ["<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = tokenizer.token_id(marker) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let model = LanguageModel {
            path,
            config,
            tokenizer,
            chat_template,
            stop_ids,
            file_bytes,
        };
        Ok(model)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Uploads the weights to `backend`. `Ok(Err(e))`: the backend failed.
    #[allow(clippy::type_complexity)]
    pub fn upload<B: Backend>(
        &self,
        backend: &B,
    ) -> Result<Result<LlamaWeights<B::Buffer>, B::Error>, LlmError> {
        let file = GgufFile::open(&self.path)?;
        let gguf = file.parsed()?;
        LlamaWeights::upload(backend, &gguf, &self.path, &self.config)
    }
}

/// The activations of one forward pass of `rows` tokens.
struct Activations<Buf> {
    x: Buf,
    normed: Buf,
    qkv: Buf,
    attention: Buf,
    projected: Buf,
    gate_up: Buf,
    gated: Buf,
    down: Buf,
}

impl<Buf> Activations<Buf> {
    fn new<B: Backend<Buffer = Buf>>(
        backend: &B,
        c: &LlamaConfig,
        rows: usize,
    ) -> Result<Self, B::Error> {
        let a = |width: usize| backend.allocate(rows * width);
        Ok(Activations {
            x: a(c.hidden)?,
            normed: a(c.hidden)?,
            qkv: a(c.qkv_width())?,
            attention: a(c.heads * c.head_dim)?,
            projected: a(c.hidden)?,
            gate_up: a(2 * c.ff)?,
            gated: a(c.ff)?,
            down: a(c.hidden)?,
        })
    }
}

/// `x += add`, then `normed = RMSNorm(x) · weight`, over `rows` rows of the model's width.
fn rms_norm<'a, Buf>(
    x: &'a mut Buf,
    add: Option<&'a Buf>,
    weight: &'a Buf,
    normed: &'a mut Buf,
    rows: usize,
    c: &LlamaConfig,
) -> Kernel<'a, Buf> {
    Kernel::RmsNorm {
        x,
        add,
        weight,
        out: normed,
        rows,
        cols: c.hidden,
        eps: c.norm_eps,
    }
}

fn matmul<'a, Buf>(
    input: &'a Buf,
    weight: &'a QuantMatrix<Buf>,
    out: &'a mut Buf,
    rows: usize,
) -> Kernel<'a, Buf> {
    Kernel::QuantMatmul {
        input,
        weight: &weight.buffer,
        out,
        m: rows,
        n: weight.n,
        k: weight.k,
        format: weight.format,
    }
}

/// A model's config and its weights on a backend: what a forward pass reads.
#[derive(Debug)]
pub struct Decoder<'w, Buf> {
    pub config: &'w LlamaConfig,
    pub weights: &'w LlamaWeights<Buf>,
}

impl<Buf> Clone for Decoder<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Buf> Copy for Decoder<'_, Buf> {}

/// Runs `tokens` (the next positions of `cache`'s sequence) through the model, appending their
/// keys and values to `cache`; returns the logits of the rows in `logit_rows` (indices into
/// `tokens`), `[logit_rows.len() × vocab]`.
pub fn forward<B: Backend>(
    backend: &B,
    decoder: Decoder<'_, B::Buffer>,
    cache: &mut KvCache<B::Buffer>,
    tokens: &[u32],
    logit_rows: &[usize],
) -> Result<Vec<f32>, B::Error> {
    backend.scoped(|| forward_in_scope(backend, decoder, cache, tokens, logit_rows))
}

fn forward_in_scope<B: Backend>(
    backend: &B,
    decoder: Decoder<'_, B::Buffer>,
    cache: &mut KvCache<B::Buffer>,
    tokens: &[u32],
    logit_rows: &[usize],
) -> Result<Vec<f32>, B::Error> {
    let Decoder { config: c, weights } = decoder;
    let rows = tokens.len();
    let shape = DecoderShape {
        rows,
        start: cache.len(),
        capacity: cache.capacity(),
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
        rope_dims: c.rope_dims,
        theta: c.rope_theta,
    };
    let mut ids = backend.allocate(rows)?;
    backend.copy_to_device(tokens, &mut ids)?;
    let mut a = Activations::new(backend, c, rows)?;
    backend.launch(Kernel::EmbedRows {
        ids: &ids,
        table: &weights.token_embedding.buffer,
        out: &mut a.x,
        tokens: rows,
        hidden: c.hidden,
        vocab: c.vocab,
        format: weights.token_embedding.format,
    })?;
    for (l, layer) in weights.layers.iter().enumerate() {
        let add = (l > 0).then_some(&a.down);
        backend.launch(rms_norm(
            &mut a.x,
            add,
            &layer.attn_norm,
            &mut a.normed,
            rows,
            c,
        ))?;
        backend.launch(matmul(&a.normed, &layer.qkv, &mut a.qkv, rows))?;
        let (k_cache, v_cache) = &mut cache.layers[l];
        backend.launch(Kernel::RopeAndStore {
            qkv: &mut a.qkv,
            k_cache,
            v_cache,
            shape,
        })?;
        backend.launch(Kernel::CausalAttention {
            qkv: &a.qkv,
            k_cache,
            v_cache,
            out: &mut a.attention,
            shape,
        })?;
        backend.launch(matmul(&a.attention, &layer.output, &mut a.projected, rows))?;
        let add = Some(&a.projected);
        backend.launch(rms_norm(
            &mut a.x,
            add,
            &layer.ffn_norm,
            &mut a.normed,
            rows,
            c,
        ))?;
        backend.launch(matmul(&a.normed, &layer.gate_up, &mut a.gate_up, rows))?;
        backend.launch(Kernel::SwiGlu {
            gate_up: &a.gate_up,
            out: &mut a.gated,
            rows,
            ff: c.ff,
        })?;
        backend.launch(matmul(&a.gated, &layer.down, &mut a.down, rows))?;
    }
    let add = (!weights.layers.is_empty()).then_some(&a.down);
    backend.launch(rms_norm(
        &mut a.x,
        add,
        &weights.output_norm,
        &mut a.normed,
        rows,
        c,
    ))?;
    // Only the rows whose logits are wanted go through the (vocabulary-wide) output product.
    let mut normed = vec![0.0f32; rows * c.hidden];
    backend.copy_to_host(&a.normed, &mut normed)?;
    let wanted: Vec<f32> = logit_rows
        .iter()
        .flat_map(|&r| normed[r * c.hidden..(r + 1) * c.hidden].iter().copied())
        .collect();
    let mut logits = vec![0.0f32; logit_rows.len() * c.vocab];
    if !logit_rows.is_empty() {
        let mut input = backend.allocate(wanted.len())?;
        backend.copy_to_device(&wanted, &mut input)?;
        let mut out = backend.allocate(logits.len())?;
        backend.launch(matmul(&input, weights.logits(), &mut out, logit_rows.len()))?;
        backend.copy_to_host(&out, &mut logits)?;
    }
    backend.synchronize()?;
    cache.advance(rows);
    Ok(logits)
}
