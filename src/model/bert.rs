//! The BERT encoder's forward pass as backend ops, and its weights on a backend.
//!
//! Embeddings + LayerNorm, then per layer: fused QKV GEMM → attention with the padding mask →
//! output GEMM → LayerNorm(· + residual) → FFN GEMM with GELU → GEMM → LayerNorm(· + residual);
//! then mean pooling over the mask and optional L2 normalisation. Sequences of a batch are padded
//! to the longest; padded tokens are masked out of attention and pooling, so padding changes no
//! real token's result.

use crate::backend::cpu::pack;
use crate::backend::{Activation, Backend, Dtype, Kernel, Word};

use super::config::BertConfig;
use super::error::ModelError;
use super::tokenizer::Encoding;
use super::weights::WeightFile;

/// A linear layer's weight on a backend: f32, or packed for reduced-precision products.
enum LinearWeight<Buf> {
    Dense(Buf),
    Packed {
        words: Buf,
        scales: Option<Buf>,
        sums: Option<Buf>,
        dtype: Dtype,
    },
}

/// One encoder layer's weights on a backend (Q, K and V fused into one matrix).
struct LayerWeights<Buf> {
    qkv_weight: LinearWeight<Buf>,
    qkv_bias: Buf,
    attention_out_weight: LinearWeight<Buf>,
    attention_out_bias: Buf,
    attention_norm_gamma: Buf,
    attention_norm_beta: Buf,
    intermediate_weight: LinearWeight<Buf>,
    intermediate_bias: Buf,
    output_weight: LinearWeight<Buf>,
    output_bias: Buf,
    output_norm_gamma: Buf,
    output_norm_beta: Buf,
}

/// Every weight of the encoder, uploaded to a backend.
pub struct DeviceWeights<Buf> {
    dtype: Dtype,
    word: Buf,
    position: Buf,
    token_type: Buf,
    norm_gamma: Buf,
    norm_beta: Buf,
    layers: Vec<LayerWeights<Buf>>,
}

impl<Buf> std::fmt::Debug for DeviceWeights<Buf> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWeights")
            .field("dtype", &self.dtype)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl<Buf> DeviceWeights<Buf> {
    /// The precision of the linear layers' weights.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
}

fn upload<B: Backend, T: Word>(backend: &B, values: &[T]) -> Result<B::Buffer, ModelError> {
    let mut buffer = backend.allocate(values.len()).map_err(ModelError::device)?;
    backend
        .copy_to_device(values, &mut buffer)
        .map_err(ModelError::device)?;
    Ok(buffer)
}

/// Uploads the `[n × k]` weight of a linear layer as `dtype`.
fn upload_linear<B: Backend>(
    backend: &B,
    weight: &[f32],
    (n, k): (usize, usize),
    dtype: Dtype,
) -> Result<LinearWeight<B::Buffer>, ModelError> {
    if dtype == Dtype::F32 && !backend.packs_f32_weights() {
        return Ok(LinearWeight::Dense(upload(backend, weight)?));
    }
    let packed = pack(dtype, weight, n, k);
    let optional = |values: &[f32]| -> Result<Option<B::Buffer>, ModelError> {
        if values.is_empty() {
            Ok(None)
        } else {
            upload(backend, values).map(Some)
        }
    };
    let sums: Vec<f32> = bytemuck::cast_slice(&packed.sums).to_vec();
    Ok(LinearWeight::Packed {
        words: upload(backend, &packed.words)?,
        scales: optional(&packed.scales)?,
        sums: optional(&sums)?,
        dtype,
    })
}

/// Launches `out[m×n] = act(input · weightᵀ + bias)` for a weight of any precision.
#[allow(clippy::too_many_arguments)]
fn linear<B: Backend>(
    backend: &B,
    input: &B::Buffer,
    weight: &LinearWeight<B::Buffer>,
    bias: &B::Buffer,
    out: &mut B::Buffer,
    (m, n, k): (usize, usize, usize),
    activation: Activation,
) -> Result<(), ModelError> {
    let kernel = match weight {
        LinearWeight::Dense(weight) => Kernel::Gemm {
            input,
            weight,
            bias: Some(bias),
            out,
            m,
            n,
            k,
            activation,
        },
        LinearWeight::Packed {
            words,
            scales,
            sums,
            dtype,
        } => Kernel::GemmPacked {
            input,
            weight: words,
            scales: scales.as_ref(),
            sums: sums.as_ref(),
            bias: Some(bias),
            out,
            m,
            n,
            k,
            activation,
            dtype: *dtype,
        },
    };
    backend.launch(kernel).map_err(ModelError::device)
}

impl<Buf> DeviceWeights<Buf> {
    /// Uploads every weight of `file` to `backend`, the linear layers' as `dtype`.
    pub fn upload<B: Backend<Buffer = Buf>>(
        backend: &B,
        file: &WeightFile,
        config: &BertConfig,
        dtype: Dtype,
    ) -> Result<Self, ModelError> {
        let tensor =
            |name: &str| -> Result<B::Buffer, ModelError> { upload(backend, &file.f32(name)?) };
        let (hidden, inter) = (config.hidden_size, config.intermediate_size);
        let linear_tensor = |name: &str, shape: (usize, usize)| {
            upload_linear(backend, &file.f32(name)?, shape, dtype)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let name = |n: &str| format!("encoder.layer.{i}.{n}");
            let concat = |parts: [&str; 3]| -> Result<Vec<f32>, ModelError> {
                let mut joined = Vec::new();
                for part in parts {
                    joined.extend_from_slice(&file.f32(&name(part))?);
                }
                Ok(joined)
            };
            let qkv_weight = concat([
                "attention.self.query.weight",
                "attention.self.key.weight",
                "attention.self.value.weight",
            ])?;
            let qkv_bias = concat([
                "attention.self.query.bias",
                "attention.self.key.bias",
                "attention.self.value.bias",
            ])?;
            layers.push(LayerWeights {
                qkv_weight: upload_linear(backend, &qkv_weight, (3 * hidden, hidden), dtype)?,
                qkv_bias: upload(backend, &qkv_bias)?,
                attention_out_weight: linear_tensor(
                    &name("attention.output.dense.weight"),
                    (hidden, hidden),
                )?,
                attention_out_bias: tensor(&name("attention.output.dense.bias"))?,
                attention_norm_gamma: tensor(&name("attention.output.LayerNorm.weight"))?,
                attention_norm_beta: tensor(&name("attention.output.LayerNorm.bias"))?,
                intermediate_weight: linear_tensor(
                    &name("intermediate.dense.weight"),
                    (inter, hidden),
                )?,
                intermediate_bias: tensor(&name("intermediate.dense.bias"))?,
                output_weight: linear_tensor(&name("output.dense.weight"), (hidden, inter))?,
                output_bias: tensor(&name("output.dense.bias"))?,
                output_norm_gamma: tensor(&name("output.LayerNorm.weight"))?,
                output_norm_beta: tensor(&name("output.LayerNorm.bias"))?,
            });
        }
        Ok(DeviceWeights {
            dtype,
            word: tensor("embeddings.word_embeddings.weight")?,
            position: tensor("embeddings.position_embeddings.weight")?,
            token_type: tensor("embeddings.token_type_embeddings.weight")?,
            norm_gamma: tensor("embeddings.LayerNorm.weight")?,
            norm_beta: tensor("embeddings.LayerNorm.bias")?,
            layers,
        })
    }
}

/// What a forward pass reads out of the encoder's last hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    /// One embedding per input: the mean over its tokens (L2-normalised when asked).
    #[default]
    Pooled,
    /// Every token's hidden state, unpooled (TEI's `/embed_all`): `tokens × hidden` values per
    /// input, row after row.
    PerToken,
}

/// Runs the encoder on a batch of encodings and returns one pooled embedding per encoding.
pub fn forward<B: Backend>(
    backend: &B,
    weights: &DeviceWeights<B::Buffer>,
    config: &BertConfig,
    batch: &[Encoding],
    normalize: bool,
) -> Result<Vec<Vec<f32>>, ModelError> {
    forward_reading(backend, weights, config, batch, Readout::Pooled, normalize)
}

/// Checks every token id, token type and length against the model on the host, before any
/// device work: on a GPU an id outside the vocabulary is an out-of-bounds read of the embedding
/// table (a memory fault that poisons the process), so it must never reach a kernel.
fn check_inputs(config: &BertConfig, batch: &[Encoding]) -> Result<(), ModelError> {
    for (index, encoding) in batch.iter().enumerate() {
        let bad = |message: String| Err(ModelError::Input { index, message });
        if encoding.ids.len() != encoding.type_ids.len() {
            return bad(format!(
                "{} token ids but {} token types",
                encoding.ids.len(),
                encoding.type_ids.len()
            ));
        }
        if encoding.ids.len() > config.max_position_embeddings {
            return bad(format!(
                "{} tokens, more than the model's {} positions",
                encoding.ids.len(),
                config.max_position_embeddings
            ));
        }
        let ids = encoding.ids.iter().zip(&encoding.type_ids).enumerate();
        for (position, (&id, &kind)) in ids {
            if id as usize >= config.vocab_size {
                return bad(format!(
                    "token id {id} at position {position} is outside the vocabulary of {} \
                     tokens (does the tokenizer belong to this model?)",
                    config.vocab_size
                ));
            }
            if kind as usize >= config.type_vocab_size {
                return bad(format!(
                    "token type {kind} at position {position} is outside the model's {} types",
                    config.type_vocab_size
                ));
            }
        }
    }
    Ok(())
}

/// Runs the encoder on a batch of encodings and reads `readout` out of it, per encoding.
pub fn forward_reading<B: Backend>(
    backend: &B,
    weights: &DeviceWeights<B::Buffer>,
    config: &BertConfig,
    batch: &[Encoding],
    readout: Readout,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let device = ModelError::device::<B::Error>;
    let sequences = batch.len();
    let seq = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    if sequences == 0 || seq == 0 {
        return Ok(vec![Vec::new(); sequences]);
    }
    let (hidden, inter, heads) = (
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
    );
    let tokens = sequences * seq;
    let eps = config.layer_norm_eps as f32;

    check_inputs(config, batch)?;
    // Host inputs, padded to the longest sequence.
    let mut ids = vec![0u32; tokens];
    let mut types = vec![0u32; tokens];
    let mut mask = vec![0f32; tokens];
    for (b, encoding) in batch.iter().enumerate() {
        for (t, (&id, &ty)) in encoding.ids.iter().zip(&encoding.type_ids).enumerate() {
            ids[b * seq + t] = id;
            types[b * seq + t] = ty;
            mask[b * seq + t] = 1.0;
        }
    }
    let (ids, types, mask) = (
        upload(backend, &ids)?,
        upload(backend, &types)?,
        upload(backend, &mask)?,
    );

    let allocate = |len: usize| backend.allocate(len).map_err(device);
    let mut embedded = allocate(tokens * hidden)?;
    let mut hidden_states = allocate(tokens * hidden)?;
    let mut attention_normed = allocate(tokens * hidden)?;
    let mut qkv = allocate(tokens * 3 * hidden)?;
    let mut context = allocate(tokens * hidden)?;
    let mut projected = allocate(tokens * hidden)?;
    let mut intermediate = allocate(tokens * inter)?;

    backend
        .launch(Kernel::Embed {
            ids: &ids,
            token_types: &types,
            word: &weights.word,
            position: &weights.position,
            token_type: &weights.token_type,
            out: &mut embedded,
            tokens,
            seq,
            hidden,
            vocab: config.vocab_size,
            type_vocab: config.type_vocab_size,
        })
        .map_err(device)?;
    backend
        .launch(Kernel::LayerNorm {
            input: &embedded,
            residual: None,
            gamma: &weights.norm_gamma,
            beta: &weights.norm_beta,
            out: &mut hidden_states,
            rows: tokens,
            cols: hidden,
            eps,
        })
        .map_err(device)?;

    for layer in &weights.layers {
        let gemm = |input: &B::Buffer,
                    weight: &LinearWeight<B::Buffer>,
                    bias: &B::Buffer,
                    out: &mut B::Buffer,
                    n: usize,
                    k: usize,
                    activation| {
            linear(
                backend,
                input,
                weight,
                bias,
                out,
                (tokens, n, k),
                activation,
            )
        };
        gemm(
            &hidden_states,
            &layer.qkv_weight,
            &layer.qkv_bias,
            &mut qkv,
            3 * hidden,
            hidden,
            Activation::None,
        )?;
        backend
            .launch(Kernel::Attention {
                qkv: &qkv,
                mask: &mask,
                out: &mut context,
                batch: sequences,
                seq,
                heads,
                head_dim: config.head_dim(),
            })
            .map_err(device)?;
        gemm(
            &context,
            &layer.attention_out_weight,
            &layer.attention_out_bias,
            &mut projected,
            hidden,
            hidden,
            Activation::None,
        )?;
        backend
            .launch(Kernel::LayerNorm {
                input: &projected,
                residual: Some(&hidden_states),
                gamma: &layer.attention_norm_gamma,
                beta: &layer.attention_norm_beta,
                out: &mut attention_normed,
                rows: tokens,
                cols: hidden,
                eps,
            })
            .map_err(device)?;
        gemm(
            &attention_normed,
            &layer.intermediate_weight,
            &layer.intermediate_bias,
            &mut intermediate,
            inter,
            hidden,
            Activation::Gelu,
        )?;
        gemm(
            &intermediate,
            &layer.output_weight,
            &layer.output_bias,
            &mut projected,
            hidden,
            inter,
            Activation::None,
        )?;
        backend
            .launch(Kernel::LayerNorm {
                input: &projected,
                residual: Some(&attention_normed),
                gamma: &layer.output_norm_gamma,
                beta: &layer.output_norm_beta,
                out: &mut hidden_states,
                rows: tokens,
                cols: hidden,
                eps,
            })
            .map_err(device)?;
    }

    if readout == Readout::PerToken {
        backend.synchronize().map_err(device)?;
        let mut host = vec![0f32; tokens * hidden];
        backend
            .copy_to_host(&hidden_states, &mut host)
            .map_err(device)?;
        return Ok(batch
            .iter()
            .enumerate()
            .map(|(b, encoding)| {
                let start = b * seq * hidden;
                host[start..start + encoding.ids.len() * hidden].to_vec()
            })
            .collect());
    }
    let mut pooled = allocate(sequences * hidden)?;
    backend
        .launch(Kernel::MeanPool {
            input: &hidden_states,
            mask: &mask,
            out: &mut pooled,
            batch: sequences,
            seq,
            hidden,
        })
        .map_err(device)?;
    if normalize {
        backend
            .launch(Kernel::L2Normalize {
                x: &mut pooled,
                rows: sequences,
                cols: hidden,
            })
            .map_err(device)?;
    }
    backend.synchronize().map_err(device)?;
    let mut host = vec![0f32; sequences * hidden];
    backend.copy_to_host(&pooled, &mut host).map_err(device)?;
    Ok(host.chunks_exact(hidden).map(<[f32]>::to_vec).collect())
}
