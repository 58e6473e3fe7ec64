//! A llama-family decoder's weights on a backend: the GGUF's tensors uploaded in their own block
//! formats (each row's blocks rearranged planar, the same bytes: see `backend::quant`), Q/K/V and gate/up each fused into one matrix so a block needs four
//! products instead of seven. Tensors are read from the file one at a time (`pread`), so loading
//! holds at most one tensor on the host besides what the backend holds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::backend::{Backend, QuantFormat};
use crate::gguf::{Gguf, TensorInfo, TensorType};

use super::{LlamaConfig, LlmError};

/// A `[n × k]` weight in a block format on the backend.
#[derive(Debug)]
pub struct QuantMatrix<Buf> {
    pub buffer: Buf,
    pub format: QuantFormat,
    pub n: usize,
    pub k: usize,
}

/// One decoder block's weights.
#[derive(Debug)]
pub struct LayerWeights<Buf> {
    pub attn_norm: Buf,
    /// `[(heads + 2·kv_heads)·head_dim × hidden]`: Q, K, V.
    pub qkv: QuantMatrix<Buf>,
    pub output: QuantMatrix<Buf>,
    pub ffn_norm: Buf,
    /// `[2·ff × hidden]`: gate, then up.
    pub gate_up: QuantMatrix<Buf>,
    pub down: QuantMatrix<Buf>,
}

/// Every weight of the model on the backend.
#[derive(Debug)]
pub struct LlamaWeights<Buf> {
    pub token_embedding: QuantMatrix<Buf>,
    pub layers: Vec<LayerWeights<Buf>>,
    pub output_norm: Buf,
    /// `None`: the output projection is the token embedding (tied).
    pub output: Option<QuantMatrix<Buf>>,
}

impl<Buf> LlamaWeights<Buf> {
    /// The logits' projection.
    pub fn logits(&self) -> &QuantMatrix<Buf> {
        self.output.as_ref().unwrap_or(&self.token_embedding)
    }
}

/// The backend format of a GGUF tensor type (`None`: not supported for products).
pub fn format_of(kind: TensorType) -> Option<QuantFormat> {
    match kind {
        TensorType::F32 => Some(QuantFormat::F32),
        TensorType::F16 => Some(QuantFormat::F16),
        TensorType::Q8_0 => Some(QuantFormat::Q8_0),
        TensorType::Q4_0 => Some(QuantFormat::Q4_0),
        TensorType::Q4_1 => Some(QuantFormat::Q4_1),
        _ => None,
    }
}

/// Reads tensors of one GGUF file and uploads them.
struct Loader<'g, 'b, B: Backend> {
    gguf: &'g Gguf<'g>,
    file: File,
    path: &'g Path,
    backend: &'b B,
}

/// What failed while loading: a file problem, or the backend's.
enum LoadError<E> {
    File(LlmError),
    Device(E),
}

impl<E> From<LlmError> for LoadError<E> {
    fn from(error: LlmError) -> Self {
        LoadError::File(error)
    }
}

impl<B: Backend> Loader<'_, '_, B> {
    fn unsupported(&self, detail: String) -> LlmError {
        LlmError::Unsupported {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    /// The tensor `name`, checked to be `[n × k]` (GGUF's dims `[k, n]`).
    fn tensor(&self, name: &str, n: usize, k: usize) -> Result<&TensorInfo, LlmError> {
        let tensor = self
            .gguf
            .tensor(name)
            .ok_or_else(|| self.unsupported(format!("tensor {name}: missing")))?;
        let want: Vec<u64> = if n == 1 {
            vec![k as u64]
        } else {
            vec![k as u64, n as u64]
        };
        if tensor.dims != want {
            return Err(self.unsupported(format!(
                "tensor {name}: shape {:?}, the architecture needs {want:?}",
                tensor.dims
            )));
        }
        Ok(tensor)
    }

    /// Reads `tensor`'s bytes into `out` (exactly its size).
    fn read(&self, tensor: &TensorInfo, out: &mut [u8]) -> Result<(), LlmError> {
        self.file
            .read_exact_at(out, tensor.offset as u64)
            .map_err(|source| {
                LlmError::File(crate::gguf::GgufError::Io {
                    path: self.path.to_path_buf(),
                    source,
                })
            })
    }

    /// A norm's (or any small tensor's) values as f32.
    fn vector(&self, name: &str, len: usize) -> Result<B::Buffer, LoadError<B::Error>> {
        let tensor = self.tensor(name, 1, len)?;
        let values = self.gguf.dequantize(tensor).map_err(LlmError::File)?;
        let mut buffer = self.backend.allocate(len).map_err(LoadError::Device)?;
        self.backend
            .copy_to_device(&values, &mut buffer)
            .map_err(LoadError::Device)?;
        Ok(buffer)
    }

    /// The tensors `names` (each `[n_i × k]`) stacked into one `[Σ n_i × k]` matrix: as they are
    /// when they share a format, else widened to f32.
    fn matrix(
        &self,
        names: &[(String, usize)],
        k: usize,
    ) -> Result<QuantMatrix<B::Buffer>, LoadError<B::Error>> {
        let mut tensors = Vec::with_capacity(names.len());
        for (name, n) in names {
            let tensor = self.tensor(name, *n, k)?;
            let format = format_of(tensor.kind).ok_or_else(|| {
                self.unsupported(format!(
                    "tensor {name}: type {} is not supported for products (F32, F16, Q8_0, \
                     Q4_0 and Q4_1 are)",
                    tensor.kind
                ))
            })?;
            tensors.push((tensor, format, *n));
        }
        let first = tensors[0].1;
        let format = if tensors.iter().all(|t| t.1 == first) {
            first
        } else {
            QuantFormat::F32
        };
        let n: usize = tensors.iter().map(|t| t.2).sum();
        let row_bytes = format.row_bytes(k).ok_or_else(|| {
            self.unsupported(format!("{}: k {k} is not whole blocks", names[0].0))
        })?;
        let words = format
            .words(n, k)
            .ok_or_else(|| self.unsupported(format!("{}: too large", names[0].0)))?;
        let mut staging = vec![0u32; words];
        {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut staging);
            let mut at = 0;
            for (tensor, own, rows) in &tensors {
                let size = rows * row_bytes;
                if *own == format {
                    self.read(tensor, &mut bytes[at..at + size])?;
                } else {
                    let values = self.gguf.dequantize(tensor).map_err(LlmError::File)?;
                    bytes[at..at + size].copy_from_slice(bytemuck::cast_slice(&values));
                }
                at += size;
            }
            // The file's blocks, each row rearranged planar (the kernels' layout).
            let mut gguf_row = vec![0u8; row_bytes];
            for row in bytes[..at].chunks_exact_mut(row_bytes) {
                gguf_row.copy_from_slice(row);
                format.to_planar(&gguf_row, row);
            }
        }
        let mut buffer = self.backend.allocate(words).map_err(LoadError::Device)?;
        self.backend
            .copy_to_device(&staging, &mut buffer)
            .map_err(LoadError::Device)?;
        Ok(QuantMatrix {
            buffer,
            format,
            n,
            k,
        })
    }
}

impl<Buf> LlamaWeights<Buf> {
    /// Uploads every weight of `gguf` (the file at `path`) for `config`. `Ok(Err(e))`: the
    /// backend failed (its error, for the retry ladder); `Err`: the file is at fault.
    #[allow(clippy::type_complexity)]
    pub fn upload<B: Backend<Buffer = Buf>>(
        backend: &B,
        gguf: &Gguf<'_>,
        path: &Path,
        config: &LlamaConfig,
    ) -> Result<Result<LlamaWeights<Buf>, B::Error>, LlmError> {
        let file = File::open(path).map_err(|source| {
            LlmError::File(crate::gguf::GgufError::Io {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let loader = Loader {
            gguf,
            file,
            path,
            backend,
        };
        match Self::load(&loader, config) {
            Ok(weights) => Ok(Ok(weights)),
            Err(LoadError::Device(error)) => Ok(Err(error)),
            Err(LoadError::File(error)) => Err(error),
        }
    }

    fn load<B: Backend<Buffer = Buf>>(
        loader: &Loader<'_, '_, B>,
        c: &LlamaConfig,
    ) -> Result<LlamaWeights<Buf>, LoadError<B::Error>> {
        let h = c.hidden;
        let one = |name: &str, n: usize| vec![(name.to_string(), n)];
        let token_embedding = loader.matrix(&one("token_embd.weight", c.vocab), h)?;
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let name = |part: &str| format!("blk.{l}.{part}.weight");
            let (q, kv) = (c.heads * c.head_dim, c.kv_width());
            layers.push(LayerWeights {
                attn_norm: loader.vector(&name("attn_norm"), h)?,
                qkv: loader.matrix(
                    &[
                        (name("attn_q"), q),
                        (name("attn_k"), kv),
                        (name("attn_v"), kv),
                    ],
                    h,
                )?,
                output: loader.matrix(&one(&name("attn_output"), h), q)?,
                ffn_norm: loader.vector(&name("ffn_norm"), h)?,
                gate_up: loader.matrix(&[(name("ffn_gate"), c.ff), (name("ffn_up"), c.ff)], h)?,
                down: loader.matrix(&one(&name("ffn_down"), h), c.ff)?,
            });
        }
        let output_norm = loader.vector("output_norm.weight", h)?;
        let output = match loader.gguf.tensor("output.weight") {
            Some(_) => Some(loader.matrix(&one("output.weight", c.vocab), h)?),
            None => None,
        };
        Ok(LlamaWeights {
            token_embedding,
            layers,
            output_norm,
            output,
        })
    }
}
