//! The kernels of the BERT encoder as typed calls: a missing kernel is a compile error, never a
//! failed string lookup at run time.

use std::fmt;

use crate::error::{HipError, Op};

use super::cpu::packed::{blocks, group, spans, BLOCK};
use super::dtype::Dtype;
use super::quant::{QuantFormat, VALUES_PER_BLOCK};

/// Which kernel: a closed set, used to find the HIP function and to name the kernel in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelId {
    Embed,
    Gemm,
    GemmPacked,
    Gelu,
    Add,
    LayerNorm,
    Attention,
    MeanPool,
    L2Normalize,
    QuantMatmul,
    EmbedRows,
    RmsNorm,
    RopeAndStore,
    CausalAttention,
    SwiGlu,
    /// The deliberate out-of-bounds write of fault campaigns (GPU backends only; no [`Kernel`]
    /// call reaches it: `Backend::provoke_memory_fault` does).
    OutOfBoundsWrite,
}

impl KernelId {
    pub const ALL: [KernelId; 16] = [
        KernelId::Embed,
        KernelId::Gemm,
        KernelId::GemmPacked,
        KernelId::Gelu,
        KernelId::Add,
        KernelId::LayerNorm,
        KernelId::Attention,
        KernelId::MeanPool,
        KernelId::L2Normalize,
        KernelId::QuantMatmul,
        KernelId::EmbedRows,
        KernelId::RmsNorm,
        KernelId::RopeAndStore,
        KernelId::CausalAttention,
        KernelId::SwiGlu,
        KernelId::OutOfBoundsWrite,
    ];

    /// The `extern "C"` name of the kernel in `kernels/*.hip`.
    pub const fn symbol(self) -> &'static str {
        match self {
            KernelId::Embed => "hipinfer_embed",
            KernelId::Gemm => "hipinfer_gemm_bias",
            KernelId::GemmPacked => "hipinfer_gemm_packed",
            KernelId::Gelu => "hipinfer_gelu",
            KernelId::Add => "hipinfer_add",
            KernelId::LayerNorm => "hipinfer_layer_norm",
            KernelId::Attention => "hipinfer_attention",
            KernelId::MeanPool => "hipinfer_mean_pool",
            KernelId::L2Normalize => "hipinfer_l2_normalize",
            KernelId::QuantMatmul => "hipinfer_quant_matmul",
            KernelId::EmbedRows => "hipinfer_embed_rows",
            KernelId::RmsNorm => "hipinfer_rms_norm",
            KernelId::RopeAndStore => "hipinfer_rope_and_store",
            KernelId::CausalAttention => "hipinfer_causal_attention",
            KernelId::SwiGlu => "hipinfer_swiglu",
            KernelId::OutOfBoundsWrite => "hipinfer_out_of_bounds_write",
        }
    }
}

impl fmt::Display for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// An activation fused into the GEMM's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// GELU, erf form: `x · ½ · (1 + erf(x / √2))`.
    Gelu,
}

/// One kernel launch with its arguments. Shapes are in elements; matrices are row-major.
#[derive(Debug)]
pub enum Kernel<'a, B> {
    /// `out[t] = word[ids[t]] + position[t % seq] + token_type[types[t]]`, for `tokens` tokens
    /// of `hidden` values (ids and types are `u32`).
    Embed {
        ids: &'a B,
        token_types: &'a B,
        word: &'a B,
        position: &'a B,
        token_type: &'a B,
        out: &'a mut B,
        tokens: usize,
        seq: usize,
        hidden: usize,
        vocab: usize,
        type_vocab: usize,
    },
    /// `out[m×n] = act(input[m×k] · weight[n×k]ᵀ + bias[n])` (a PyTorch `Linear`).
    Gemm {
        input: &'a B,
        weight: &'a B,
        bias: Option<&'a B>,
        out: &'a mut B,
        m: usize,
        n: usize,
        k: usize,
        activation: Activation,
    },
    /// `out[m×n] = act(input[m×k] · W[n×k]ᵀ + bias[n])` with `W` packed as `dtype` (f32, bf16
    /// or int8, `backend::cpu::packed`): `weight` its words; for int8, `scales` and `sums` its
    /// per-column scale and per-span sums. CPU only (the HIP backend answers
    /// `hipErrorNotSupported`).
    GemmPacked {
        input: &'a B,
        weight: &'a B,
        scales: Option<&'a B>,
        sums: Option<&'a B>,
        bias: Option<&'a B>,
        out: &'a mut B,
        m: usize,
        n: usize,
        k: usize,
        activation: Activation,
        dtype: Dtype,
    },
    /// `x = gelu(x)` on `len` values.
    Gelu { x: &'a mut B, len: usize },
    /// `x += y` on `len` values.
    Add { x: &'a mut B, y: &'a B, len: usize },
    /// `out = LayerNorm(input + residual) · gamma + beta`, per row of `cols`.
    LayerNorm {
        input: &'a B,
        residual: Option<&'a B>,
        gamma: &'a B,
        beta: &'a B,
        out: &'a mut B,
        rows: usize,
        cols: usize,
        eps: f32,
    },
    /// Multi-head self-attention from a fused `qkv[batch·seq × 3·heads·head_dim]` (Q, then K,
    /// then V): `softmax(Q·Kᵀ / √head_dim + mask) · V` into `out[batch·seq × heads·head_dim]`.
    /// `mask[batch × seq]` is 1.0 for a real token, 0.0 for padding (padded keys get −∞).
    Attention {
        qkv: &'a B,
        mask: &'a B,
        out: &'a mut B,
        batch: usize,
        seq: usize,
        heads: usize,
        head_dim: usize,
    },
    /// `out[b] = Σ_t mask[b,t]·input[b,t] / Σ_t mask[b,t]` over `hidden` columns.
    MeanPool {
        input: &'a B,
        mask: &'a B,
        out: &'a mut B,
        batch: usize,
        seq: usize,
        hidden: usize,
    },
    /// Each row of `x` divided by its L2 norm (rows of zeros stay zero).
    L2Normalize {
        x: &'a mut B,
        rows: usize,
        cols: usize,
    },
    /// `out[first..first+m] = input[first..first+m] · Wᵀ` (rows of `k` and of `n` values) with
    /// `W[n×k]` stored in `format`'s blocks, row after row (GGUF's bytes as they are in the
    /// file: `weight` holds them in its words), by `path`.
    QuantMatmul {
        input: &'a B,
        weight: &'a B,
        out: &'a mut B,
        first: usize,
        m: usize,
        n: usize,
        k: usize,
        format: QuantFormat,
        path: QuantPath,
    },
    /// `out[t] = table[ids[t]]` widened to f32: rows of `hidden` values of a `[vocab × hidden]`
    /// table stored in `format` (a language model's token embedding).
    EmbedRows {
        ids: &'a B,
        table: &'a B,
        out: &'a mut B,
        tokens: usize,
        hidden: usize,
        vocab: usize,
        format: QuantFormat,
    },
    /// `x += add` (when given), then `out = x / √(mean(x²) + eps) · weight`, per row of `cols`:
    /// the residual sum and the pre-norm of a llama block in one pass.
    RmsNorm {
        x: &'a mut B,
        add: Option<&'a B>,
        weight: &'a B,
        out: &'a mut B,
        rows: usize,
        cols: usize,
        eps: f32,
    },
    /// On a fused `qkv[rows × (heads + 2·kv_heads)·head_dim]` (Q, then K, then V per row), for
    /// each of `segments` (one sequence's rows of the step): rotates Q and K in place (rotary
    /// embedding, GGML's normal mode: pairs `(2i, 2i+1)` of the first `rope_dims` of each head,
    /// angle `position · theta^(−2i/rope_dims)`, the segment's row `r` at position
    /// `start + r`), then writes each row's K and V into the caches (`[rows × kv_heads·head_dim]`
    /// each, every sequence its own range of rows) at the row of its position.
    RopeAndStore {
        qkv: &'a mut B,
        k_cache: &'a mut B,
        v_cache: &'a mut B,
        shape: DecoderShape,
        segments: &'a [CacheSegment],
    },
    /// Causal self-attention with grouped KV heads, per segment: its row `r` of the fused `qkv`
    /// (the Q part) attends to its sequence's cache rows of positions `0..=start + r`; query
    /// head `h` reads KV head `h / (heads / kv_heads)`. `out[rows × heads·head_dim]`, each
    /// segment's rows where its `qkv` rows are. Each row's result depends on that row and the
    /// cache alone, never on the other rows of the launch.
    CausalAttention {
        qkv: &'a B,
        k_cache: &'a B,
        v_cache: &'a B,
        out: &'a mut B,
        shape: DecoderShape,
        segments: &'a [CacheSegment],
    },
    /// `out[r] = silu(gate[r]) · up[r]` from a fused `gate_up[rows × 2·ff]` (gate, then up).
    SwiGlu {
        gate_up: &'a B,
        out: &'a mut B,
        rows: usize,
        ff: usize,
    },
}

/// How a quantized product is computed. Each path's result for a row depends on that row alone
/// (never on `m` or the other rows), so a row computed by the same path is the same to the last
/// bit in any batch; the two paths differ in rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantPath {
    /// The backend's choice by `m` (fused for a few rows, widened for many).
    #[default]
    Auto,
    /// Each block decoded into registers and multiplied with the input rows (decoding).
    Fused,
    /// The weight widened to f32 and multiplied by a GEMM (prompts).
    Widened,
}

/// The heads of a llama-family decoder's attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that rotate (the rest pass through).
    pub rope_dims: usize,
    pub theta: f32,
}

/// One sequence's rows in a decoder step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSegment {
    /// The first of its rows in `qkv` (and in the attention's `out`).
    pub row: usize,
    /// Its tokens in this step.
    pub rows: usize,
    /// The position of the first (the sequence's tokens already in the cache).
    pub start: usize,
    /// The cache row of the sequence's position 0.
    pub base: usize,
    /// Cache rows the sequence owns (`base..base + capacity`).
    pub capacity: usize,
}

impl DecoderShape {
    /// Values per row of the fused `qkv`.
    pub fn qkv_width(&self) -> Option<usize> {
        product(&[
            self.heads.checked_add(self.kv_heads.checked_mul(2)?)?,
            self.head_dim,
        ])
    }

    /// Values per cache row.
    pub fn kv_width(&self) -> Option<usize> {
        product(&[self.kv_heads, self.head_dim])
    }

    /// The fused `qkv` and the two caches, each `(name, words held, words needed)`.
    fn buffer_checks(
        &self,
        segments: &[CacheSegment],
        qkv: usize,
        k_cache: usize,
        v_cache: usize,
    ) -> [(&'static str, usize, Option<usize>); 3] {
        let rows = segments.iter().try_fold(0, |most: usize, s| {
            Some(most.max(s.row.checked_add(s.rows)?))
        });
        let cache = segments.iter().try_fold(0, |most: usize, s| {
            Some(most.max(s.base.checked_add(s.capacity)?))
        });
        let rows = rows
            .zip(self.qkv_width())
            .and_then(|(r, w)| product(&[r, w]));
        let cache = cache
            .zip(self.kv_width())
            .and_then(|(r, w)| product(&[r, w]));
        [
            ("qkv", qkv, rows),
            ("k_cache", k_cache, cache),
            ("v_cache", v_cache, cache),
        ]
    }

    fn check(&self, segments: &[CacheSegment]) -> Result<(), String> {
        let s = self;
        if s.head_dim == 0 || s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(format!(
                "heads {} must be a multiple of kv_heads {} and head_dim {} positive",
                s.heads, s.kv_heads, s.head_dim
            ));
        }
        if s.rope_dims > s.head_dim || !s.rope_dims.is_multiple_of(2) {
            return Err(format!(
                "rope_dims {} must be even and at most head_dim {}",
                s.rope_dims, s.head_dim
            ));
        }
        if !(s.theta.is_finite() && s.theta > 0.0) {
            return Err(format!("theta {} must be positive", s.theta));
        }
        for (i, g) in segments.iter().enumerate() {
            match g.start.checked_add(g.rows) {
                Some(end) if end <= g.capacity => {}
                _ => {
                    return Err(format!(
                        "segment {i}: positions {}..{} do not fit its {} cache rows",
                        g.start,
                        g.start.saturating_add(g.rows),
                        g.capacity
                    ))
                }
            }
        }
        // No two segments write the same rows of `qkv` or of the caches.
        let overlap = |ranges: &mut Vec<(usize, usize)>| {
            ranges.sort_unstable();
            ranges.windows(2).any(|w| w[0].1 > w[1].0)
        };
        let mut rows: Vec<_> = segments
            .iter()
            .map(|g| (g.row, g.row.saturating_add(g.rows)))
            .collect();
        let mut caches: Vec<_> = segments
            .iter()
            .map(|g| {
                let at = g.base.saturating_add(g.start);
                (at, at.saturating_add(g.rows))
            })
            .collect();
        if overlap(&mut rows) || overlap(&mut caches) {
            return Err("two segments share rows of qkv or of the caches".into());
        }
        Ok(())
    }
}

impl<B> Kernel<'_, B> {
    pub fn id(&self) -> KernelId {
        match self {
            Kernel::Embed { .. } => KernelId::Embed,
            Kernel::Gemm { .. } => KernelId::Gemm,
            Kernel::GemmPacked { .. } => KernelId::GemmPacked,
            Kernel::Gelu { .. } => KernelId::Gelu,
            Kernel::Add { .. } => KernelId::Add,
            Kernel::LayerNorm { .. } => KernelId::LayerNorm,
            Kernel::Attention { .. } => KernelId::Attention,
            Kernel::MeanPool { .. } => KernelId::MeanPool,
            Kernel::L2Normalize { .. } => KernelId::L2Normalize,
            Kernel::QuantMatmul { .. } => KernelId::QuantMatmul,
            Kernel::EmbedRows { .. } => KernelId::EmbedRows,
            Kernel::RmsNorm { .. } => KernelId::RmsNorm,
            Kernel::RopeAndStore { .. } => KernelId::RopeAndStore,
            Kernel::CausalAttention { .. } => KernelId::CausalAttention,
            Kernel::SwiGlu { .. } => KernelId::SwiGlu,
        }
    }
}

/// `a × b × …`, or `None` on overflow.
fn product(factors: &[usize]) -> Option<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
}

impl<'a, B> Kernel<'a, B> {
    /// The same call with its buffers borrowed again, for another attempt of the same launch.
    pub fn reborrow(&mut self) -> Kernel<'_, B> {
        match self {
            Kernel::Embed {
                ids,
                token_types,
                word,
                position,
                token_type,
                out,
                tokens,
                seq,
                hidden,
                vocab,
                type_vocab,
            } => Kernel::Embed {
                ids,
                token_types,
                word,
                position,
                token_type,
                out,
                tokens: *tokens,
                seq: *seq,
                hidden: *hidden,
                vocab: *vocab,
                type_vocab: *type_vocab,
            },
            Kernel::Gemm {
                input,
                weight,
                bias,
                out,
                m,
                n,
                k,
                activation,
            } => Kernel::Gemm {
                input,
                weight,
                bias: bias.as_deref(),
                out,
                m: *m,
                n: *n,
                k: *k,
                activation: *activation,
            },
            Kernel::GemmPacked {
                input,
                weight,
                scales,
                sums,
                bias,
                out,
                m,
                n,
                k,
                activation,
                dtype,
            } => Kernel::GemmPacked {
                input,
                weight,
                scales: scales.as_deref(),
                sums: sums.as_deref(),
                bias: bias.as_deref(),
                out,
                m: *m,
                n: *n,
                k: *k,
                activation: *activation,
                dtype: *dtype,
            },
            Kernel::Gelu { x, len } => Kernel::Gelu { x, len: *len },
            Kernel::Add { x, y, len } => Kernel::Add { x, y, len: *len },
            Kernel::LayerNorm {
                input,
                residual,
                gamma,
                beta,
                out,
                rows,
                cols,
                eps,
            } => Kernel::LayerNorm {
                input,
                residual: residual.as_deref(),
                gamma,
                beta,
                out,
                rows: *rows,
                cols: *cols,
                eps: *eps,
            },
            Kernel::Attention {
                qkv,
                mask,
                out,
                batch,
                seq,
                heads,
                head_dim,
            } => Kernel::Attention {
                qkv,
                mask,
                out,
                batch: *batch,
                seq: *seq,
                heads: *heads,
                head_dim: *head_dim,
            },
            Kernel::MeanPool {
                input,
                mask,
                out,
                batch,
                seq,
                hidden,
            } => Kernel::MeanPool {
                input,
                mask,
                out,
                batch: *batch,
                seq: *seq,
                hidden: *hidden,
            },
            Kernel::L2Normalize { x, rows, cols } => Kernel::L2Normalize {
                x,
                rows: *rows,
                cols: *cols,
            },
            Kernel::QuantMatmul {
                input,
                weight,
                out,
                first,
                m,
                n,
                k,
                format,
                path,
            } => Kernel::QuantMatmul {
                input,
                weight,
                out,
                first: *first,
                m: *m,
                n: *n,
                k: *k,
                format: *format,
                path: *path,
            },
            Kernel::EmbedRows {
                ids,
                table,
                out,
                tokens,
                hidden,
                vocab,
                format,
            } => Kernel::EmbedRows {
                ids,
                table,
                out,
                tokens: *tokens,
                hidden: *hidden,
                vocab: *vocab,
                format: *format,
            },
            Kernel::RmsNorm {
                x,
                add,
                weight,
                out,
                rows,
                cols,
                eps,
            } => Kernel::RmsNorm {
                x,
                add: add.as_deref(),
                weight,
                out,
                rows: *rows,
                cols: *cols,
                eps: *eps,
            },
            Kernel::RopeAndStore {
                qkv,
                k_cache,
                v_cache,
                shape,
                segments,
            } => Kernel::RopeAndStore {
                qkv,
                k_cache,
                v_cache,
                shape: *shape,
                segments,
            },
            Kernel::CausalAttention {
                qkv,
                k_cache,
                v_cache,
                out,
                shape,
                segments,
            } => Kernel::CausalAttention {
                qkv,
                k_cache,
                v_cache,
                out,
                shape: *shape,
                segments,
            },
            Kernel::SwiGlu {
                gate_up,
                out,
                rows,
                ff,
            } => Kernel::SwiGlu {
                gate_up,
                out,
                rows: *rows,
                ff: *ff,
            },
        }
    }

    /// [`Kernel::validate`], and every buffer from the backend's current context (`live`):
    /// a buffer allocated before a reset is refused before any work.
    pub fn validate_live(
        &self,
        len: impl Fn(&B) -> usize,
        live: impl Fn(&B) -> bool,
    ) -> Result<(), HipError> {
        let all_live = std::cell::Cell::new(true);
        self.validate(|b| {
            all_live.set(all_live.get() && live(b));
            len(b)
        })?;
        super::checks::current(Op::Launch, all_live.get())
            .map_err(|e| e.with_kernel(self.id().symbol()))
    }

    /// Checks every buffer against the shapes (`len` gives a buffer's length in words). Every
    /// backend calls this before launching, so a bad shape is an `hipErrorInvalidValue` naming the
    /// kernel and the argument, never an out-of-bounds access.
    pub fn validate(&self, len: impl Fn(&B) -> usize) -> Result<(), HipError> {
        let id = self.id();
        let invalid = |detail: String| {
            Err(HipError::new(1, Op::Launch)
                .with_kernel(id.symbol())
                .with_detail(detail))
        };
        let mut checks: Vec<(&str, usize, Option<usize>)> = Vec::with_capacity(6);
        match self {
            Kernel::Embed {
                ids,
                token_types,
                word,
                position,
                token_type,
                out,
                tokens,
                seq,
                hidden,
                vocab,
                type_vocab,
            } => {
                if *seq == 0 {
                    return invalid("seq must be at least 1".into());
                }
                checks.push(("ids", len(ids), Some(*tokens)));
                checks.push(("token_types", len(token_types), Some(*tokens)));
                checks.push(("word", len(word), product(&[*vocab, *hidden])));
                checks.push(("position", len(position), product(&[*seq, *hidden])));
                checks.push((
                    "token_type",
                    len(token_type),
                    product(&[*type_vocab, *hidden]),
                ));
                checks.push(("out", len(out), product(&[*tokens, *hidden])));
            }
            Kernel::Gemm {
                input,
                weight,
                bias,
                out,
                m,
                n,
                k,
                ..
            } => {
                checks.push(("input", len(input), product(&[*m, *k])));
                checks.push(("weight", len(weight), product(&[*n, *k])));
                if let Some(bias) = bias {
                    checks.push(("bias", len(bias), Some(*n)));
                }
                checks.push(("out", len(out), product(&[*m, *n])));
            }
            Kernel::GemmPacked {
                input,
                weight,
                scales,
                sums,
                bias,
                out,
                m,
                n,
                k,
                dtype,
                ..
            } => {
                checks.push(("input", len(input), product(&[*m, *k])));
                checks.push((
                    "weight",
                    len(weight),
                    product(&[blocks(*n), k.div_ceil(group(*dtype)), BLOCK]),
                ));
                if *dtype == Dtype::Int8 {
                    let columns = blocks(*n) * BLOCK;
                    match (scales, sums) {
                        (Some(scales), Some(sums)) => {
                            checks.push(("scales", len(scales), Some(columns)));
                            checks.push(("sums", len(sums), product(&[columns, spans(*k)])));
                        }
                        _ => return invalid("int8 weights need their scales and sums".into()),
                    }
                }
                if let Some(bias) = bias {
                    checks.push(("bias", len(bias), Some(*n)));
                }
                checks.push(("out", len(out), product(&[*m, *n])));
            }
            Kernel::Gelu { x, len: n } => checks.push(("x", len(x), Some(*n))),
            Kernel::Add { x, y, len: n } => {
                checks.push(("x", len(x), Some(*n)));
                checks.push(("y", len(y), Some(*n)));
            }
            Kernel::LayerNorm {
                input,
                residual,
                gamma,
                beta,
                out,
                rows,
                cols,
                eps,
            } => {
                if *cols == 0 || !(eps.is_finite() && *eps >= 0.0) {
                    return invalid(format!("cols {cols} and eps {eps} must be positive"));
                }
                checks.push(("input", len(input), product(&[*rows, *cols])));
                if let Some(residual) = residual {
                    checks.push(("residual", len(residual), product(&[*rows, *cols])));
                }
                checks.push(("gamma", len(gamma), Some(*cols)));
                checks.push(("beta", len(beta), Some(*cols)));
                checks.push(("out", len(out), product(&[*rows, *cols])));
            }
            Kernel::Attention {
                qkv,
                mask,
                out,
                batch,
                seq,
                heads,
                head_dim,
            } => {
                if *head_dim == 0 {
                    return invalid("head_dim must be at least 1".into());
                }
                checks.push((
                    "qkv",
                    len(qkv),
                    product(&[*batch, *seq, 3, *heads, *head_dim]),
                ));
                checks.push(("mask", len(mask), product(&[*batch, *seq])));
                checks.push(("out", len(out), product(&[*batch, *seq, *heads, *head_dim])));
            }
            Kernel::MeanPool {
                input,
                mask,
                out,
                batch,
                seq,
                hidden,
            } => {
                checks.push(("input", len(input), product(&[*batch, *seq, *hidden])));
                checks.push(("mask", len(mask), product(&[*batch, *seq])));
                checks.push(("out", len(out), product(&[*batch, *hidden])));
            }
            Kernel::L2Normalize { x, rows, cols } => {
                checks.push(("x", len(x), product(&[*rows, *cols])))
            }
            Kernel::QuantMatmul {
                input,
                weight,
                out,
                first,
                m,
                n,
                k,
                format,
                path: _,
            } => {
                if format.row_bytes(*k).is_none() {
                    return invalid(format!(
                        "k {k} is not a whole number of {format} blocks of {VALUES_PER_BLOCK}"
                    ));
                }
                let end = first.checked_add(*m);
                checks.push(("input", len(input), end.and_then(|e| product(&[e, *k]))));
                checks.push(("weight", len(weight), format.words(*n, *k)));
                checks.push(("out", len(out), end.and_then(|e| product(&[e, *n]))));
            }
            Kernel::EmbedRows {
                ids,
                table,
                out,
                tokens,
                hidden,
                vocab,
                format,
            } => {
                if format.row_bytes(*hidden).is_none() {
                    return invalid(format!(
                        "hidden {hidden} is not a whole number of {format} blocks"
                    ));
                }
                checks.push(("ids", len(ids), Some(*tokens)));
                checks.push(("table", len(table), format.words(*vocab, *hidden)));
                checks.push(("out", len(out), product(&[*tokens, *hidden])));
            }
            Kernel::RmsNorm {
                x,
                add,
                weight,
                out,
                rows,
                cols,
                eps,
            } => {
                if *cols == 0 || !(eps.is_finite() && *eps >= 0.0) {
                    return invalid(format!("cols {cols} and eps {eps} must be positive"));
                }
                checks.push(("x", len(x), product(&[*rows, *cols])));
                if let Some(add) = add {
                    checks.push(("add", len(add), product(&[*rows, *cols])));
                }
                checks.push(("weight", len(weight), Some(*cols)));
                checks.push(("out", len(out), product(&[*rows, *cols])));
            }
            Kernel::RopeAndStore {
                qkv,
                k_cache,
                v_cache,
                shape,
                segments,
            } => {
                shape.check(segments).or_else(invalid)?;
                checks.extend(shape.buffer_checks(segments, len(qkv), len(k_cache), len(v_cache)));
            }
            Kernel::CausalAttention {
                qkv,
                k_cache,
                v_cache,
                out,
                shape,
                segments,
            } => {
                shape.check(segments).or_else(invalid)?;
                checks.extend(shape.buffer_checks(segments, len(qkv), len(k_cache), len(v_cache)));
                let rows = segments.iter().try_fold(0, |most: usize, s| {
                    Some(most.max(s.row.checked_add(s.rows)?))
                });
                let want = rows.and_then(|r| product(&[r, shape.heads, shape.head_dim]));
                checks.push(("out", len(out), want));
            }
            Kernel::SwiGlu {
                gate_up,
                out,
                rows,
                ff,
            } => {
                checks.push(("gate_up", len(gate_up), product(&[*rows, 2, *ff])));
                checks.push(("out", len(out), product(&[*rows, *ff])));
            }
        }
        for (name, have, need) in checks {
            match need {
                None => return invalid(format!("the shape of `{name}` overflows")),
                Some(need) if have < need => {
                    return invalid(format!(
                        "`{name}` holds {have} values, the shape needs {need}"
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
