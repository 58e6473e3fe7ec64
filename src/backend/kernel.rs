//! The kernels of the BERT encoder as typed calls: a missing kernel is a compile error, never a
//! failed string lookup at run time.

use std::fmt;

use crate::error::{HipError, Op};

use super::cpu::packed::{blocks, group, spans, BLOCK};
use super::dtype::Dtype;

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
    /// The deliberate out-of-bounds write of fault campaigns (GPU backends only; no [`Kernel`]
    /// call reaches it: `Backend::provoke_memory_fault` does).
    OutOfBoundsWrite,
}

impl KernelId {
    pub const ALL: [KernelId; 10] = [
        KernelId::Embed,
        KernelId::Gemm,
        KernelId::GemmPacked,
        KernelId::Gelu,
        KernelId::Add,
        KernelId::LayerNorm,
        KernelId::Attention,
        KernelId::MeanPool,
        KernelId::L2Normalize,
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
