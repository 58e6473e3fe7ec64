//! `LanguageModel` (what the host holds: config, tokenizer, chat template, the file) and
//! `DeviceLlama` (its weights on a backend, and the forward pass of the llama architecture).

use std::path::{Path, PathBuf};

use crate::backend::{Backend, CacheSegment, DecoderShape, Kernel, QuantPath};
use crate::gguf::GgufFile;

use super::weights::{LlamaWeights, QuantMatrix};
use super::{ChatTemplate, GgufTokenizer, KvCache, KvSlot, LlamaConfig, LlmError};

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
    (first, rows): (usize, usize),
    path: QuantPath,
) -> Kernel<'a, Buf> {
    Kernel::QuantMatmul {
        input,
        weight: &weight.buffer,
        out,
        first,
        m: rows,
        n: weight.n,
        k: weight.k,
        format: weight.format,
        path,
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

/// One sequence's tokens in a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Feed<'t> {
    /// The sequence's rows of the cache; `slot.len` of its tokens are in it already.
    pub slot: KvSlot,
    /// Its next tokens (positions `slot.len..`).
    pub tokens: &'t [u32],
    /// How many of `tokens`, the first, belong to the prompt. Their products take the widened
    /// path and the rest (generated tokens) the fused one, whatever else is in the pass: each
    /// path's row depends on that row alone, so every token's keys, values and logits are the
    /// same to the last bit whether it is computed in a prompt, a decoding step, next to other
    /// sequences or in a replay after a reset — which is what makes batched and replayed
    /// generation give exactly the tokens of a sequence alone.
    pub prompt: usize,
    /// The rows (indices into `tokens`) whose logits are wanted.
    pub logit_rows: &'t [usize],
}

/// Where a feed's rows sit in a pass: prompt rows of every feed first, then generated rows.
struct Layout {
    /// Per feed: its first prompt row and its first generated row.
    rows: Vec<(usize, usize)>,
    prompt_rows: usize,
    total: usize,
}

impl Layout {
    fn of(feeds: &[Feed<'_>]) -> Layout {
        let prompt_rows: usize = feeds.iter().map(|f| f.prompt.min(f.tokens.len())).sum();
        let (mut p, mut g) = (0, prompt_rows);
        let rows = feeds
            .iter()
            .map(|f| {
                let prompt = f.prompt.min(f.tokens.len());
                let at = (p, g);
                p += prompt;
                g += f.tokens.len() - prompt;
                at
            })
            .collect();
        Layout {
            rows,
            prompt_rows,
            total: g,
        }
    }

    /// The pass row of `feeds[f]`'s token `i`.
    fn row(&self, feeds: &[Feed<'_>], f: usize, i: usize) -> usize {
        let prompt = feeds[f].prompt.min(feeds[f].tokens.len());
        if i < prompt {
            self.rows[f].0 + i
        } else {
            self.rows[f].1 + i - prompt
        }
    }

    /// The row ranges of each path: `(first, rows, path)`, empty ones left out.
    fn groups(&self) -> impl Iterator<Item = (usize, usize, QuantPath)> {
        [
            (0, self.prompt_rows, QuantPath::Widened),
            (
                self.prompt_rows,
                self.total - self.prompt_rows,
                QuantPath::Fused,
            ),
        ]
        .into_iter()
        .filter(|g| g.1 > 0)
    }
}

/// Runs `tokens` (the next positions of `cache`'s one sequence, the first `prompt` of them
/// prompt tokens: see [`Feed::prompt`]) through the model, appending their keys and values to
/// `cache`; returns the logits of the rows in `logit_rows` (indices into `tokens`),
/// `[logit_rows.len() × vocab]`.
pub fn forward<B: Backend>(
    backend: &B,
    decoder: Decoder<'_, B::Buffer>,
    cache: &mut KvCache<B::Buffer>,
    tokens: &[u32],
    prompt: usize,
    logit_rows: &[usize],
) -> Result<Vec<f32>, B::Error> {
    let feed = Feed {
        slot: cache.whole(),
        tokens,
        prompt,
        logit_rows,
    };
    let logits = forward_batch(backend, decoder, cache, &[feed])?;
    cache.advance(tokens.len());
    Ok(logits.into_iter().flatten().flatten().collect())
}

/// One forward pass over several sequences' tokens (`feeds`, each in its own rows of `cache`;
/// the caller advances their slots): per feed, the logits of its `logit_rows`, each
/// `[vocab]`, in order.
pub fn forward_batch<B: Backend>(
    backend: &B,
    decoder: Decoder<'_, B::Buffer>,
    cache: &mut KvCache<B::Buffer>,
    feeds: &[Feed<'_>],
) -> Result<Vec<Vec<Vec<f32>>>, B::Error> {
    backend.scoped(|| forward_in_scope(backend, decoder, cache, feeds))
}

fn forward_in_scope<B: Backend>(
    backend: &B,
    decoder: Decoder<'_, B::Buffer>,
    cache: &mut KvCache<B::Buffer>,
    feeds: &[Feed<'_>],
) -> Result<Vec<Vec<Vec<f32>>>, B::Error> {
    let Decoder { config: c, weights } = decoder;
    let layout = Layout::of(feeds);
    let rows = layout.total;
    if rows == 0 {
        return Ok(feeds.iter().map(|_| Vec::new()).collect());
    }
    let shape = DecoderShape {
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
        rope_dims: c.rope_dims,
        theta: c.rope_theta,
    };
    let mut ids = vec![0u32; rows];
    let mut segments = Vec::with_capacity(2 * feeds.len());
    for (f, feed) in feeds.iter().enumerate() {
        for (i, &token) in feed.tokens.iter().enumerate() {
            ids[layout.row(feeds, f, i)] = token;
        }
        let prompt = feed.prompt.min(feed.tokens.len());
        let (p, g) = layout.rows[f];
        for (row, start, count) in [
            (p, feed.slot.len, prompt),
            (g, feed.slot.len + prompt, feed.tokens.len() - prompt),
        ] {
            if count > 0 {
                segments.push(CacheSegment {
                    row,
                    rows: count,
                    start,
                    base: feed.slot.base,
                    capacity: feed.slot.capacity,
                });
            }
        }
    }
    let mut id_buffer = backend.allocate(rows)?;
    backend.copy_to_device(&ids, &mut id_buffer)?;
    let mut a = Activations::new(backend, c, rows)?;
    // Every launch of the pass, embedding to final norm, is one submission (a graph).
    backend.graph(|| {
        backend.launch(Kernel::EmbedRows {
            ids: &id_buffer,
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
            for (first, m, path) in layout.groups() {
                backend.launch(matmul(&a.normed, &layer.qkv, &mut a.qkv, (first, m), path))?;
            }
            let (k_cache, v_cache) = &mut cache.layers[l];
            backend.launch(Kernel::RopeAndStore {
                qkv: &mut a.qkv,
                k_cache,
                v_cache,
                shape,
                segments: &segments,
            })?;
            backend.launch(Kernel::CausalAttention {
                qkv: &a.qkv,
                k_cache,
                v_cache,
                out: &mut a.attention,
                shape,
                segments: &segments,
            })?;
            for (first, m, path) in layout.groups() {
                let out = &mut a.projected;
                backend.launch(matmul(&a.attention, &layer.output, out, (first, m), path))?;
            }
            let add = Some(&a.projected);
            backend.launch(rms_norm(
                &mut a.x,
                add,
                &layer.ffn_norm,
                &mut a.normed,
                rows,
                c,
            ))?;
            for (first, m, path) in layout.groups() {
                let out = &mut a.gate_up;
                backend.launch(matmul(&a.normed, &layer.gate_up, out, (first, m), path))?;
            }
            backend.launch(Kernel::SwiGlu {
                gate_up: &a.gate_up,
                out: &mut a.gated,
                rows,
                ff: c.ff,
            })?;
            for (first, m, path) in layout.groups() {
                backend.launch(matmul(&a.gated, &layer.down, &mut a.down, (first, m), path))?;
            }
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
        Ok(())
    })?;
    // Only the rows whose logits are wanted go through the (vocabulary-wide) output product:
    // gathered prompt rows first, then generated ones, each group by its own path.
    let mut normed = vec![0.0f32; rows * c.hidden];
    backend.copy_to_host(&a.normed, &mut normed)?;
    let mut wanted: Vec<(usize, usize, usize)> = Vec::new(); // (pass row, feed, index)
    for (f, feed) in feeds.iter().enumerate() {
        for (j, &i) in feed.logit_rows.iter().enumerate() {
            wanted.push((layout.row(feeds, f, i), f, j));
        }
    }
    wanted.sort_unstable();
    let mut out: Vec<Vec<Vec<f32>>> = feeds
        .iter()
        .map(|f| vec![Vec::new(); f.logit_rows.len()])
        .collect();
    if !wanted.is_empty() {
        let gathered: Vec<f32> = wanted
            .iter()
            .flat_map(|&(r, _, _)| normed[r * c.hidden..(r + 1) * c.hidden].iter().copied())
            .collect();
        let prompt_wanted = wanted
            .iter()
            .filter(|(r, _, _)| *r < layout.prompt_rows)
            .count();
        let mut input = backend.allocate(gathered.len())?;
        backend.copy_to_device(&gathered, &mut input)?;
        let mut logits_buffer = backend.allocate(wanted.len() * c.vocab)?;
        let groups = [
            (0, prompt_wanted, QuantPath::Widened),
            (
                prompt_wanted,
                wanted.len() - prompt_wanted,
                QuantPath::Fused,
            ),
        ];
        for (first, m, path) in groups.into_iter().filter(|g| g.1 > 0) {
            let out = &mut logits_buffer;
            backend.launch(matmul(&input, weights.logits(), out, (first, m), path))?;
        }
        let mut logits = vec![0.0f32; wanted.len() * c.vocab];
        backend.copy_to_host(&logits_buffer, &mut logits)?;
        for (&(_, f, j), row) in wanted.iter().zip(logits.chunks_exact(c.vocab)) {
            out[f][j] = row.to_vec();
        }
    }
    backend.synchronize()?;
    Ok(out)
}
