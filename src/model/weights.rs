//! `model.safetensors`, memory-mapped: every tensor the encoder needs is checked against the
//! config (name, dtype, shape) at load, and read again from the mapping whenever the weights are
//! (re-)uploaded to a backend — after a device reset, say — so no second host copy is kept.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::config::BertConfig;
use super::error::ModelError;
use super::mapped::MappedFile;

/// The memory-mapped weight file.
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    map: MappedFile,
    /// `"bert."` when the tensor names carry that prefix, else empty.
    prefix: &'static str,
}

/// The tensors of one encoder layer (names without the `encoder.layer.{i}.` prefix).
pub const LAYER_TENSORS: &[&str] = &[
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// Every tensor the encoder uses, with its expected shape.
pub fn expected_tensors(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let mut tensors = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![config.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![config.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![config.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![h]),
        ("embeddings.LayerNorm.bias".to_string(), vec![h]),
    ];
    for layer in 0..config.num_hidden_layers {
        for name in LAYER_TENSORS {
            let shape = match *name {
                "intermediate.dense.weight" => vec![i, h],
                "intermediate.dense.bias" => vec![i],
                "output.dense.weight" => vec![h, i],
                n if n.ends_with(".weight") && !n.contains("LayerNorm") => vec![h, h],
                _ => vec![h],
            };
            tensors.push((format!("encoder.layer.{layer}.{name}"), shape));
        }
    }
    tensors
}

impl WeightFile {
    /// Maps `path` and checks every tensor the encoder needs. Tensors it does not use
    /// (`embeddings.position_ids`, `pooler.*`) are ignored.
    pub fn open(path: &Path, config: &BertConfig) -> Result<WeightFile, ModelError> {
        let map = MappedFile::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut weights = WeightFile {
            path: path.to_path_buf(),
            map,
            prefix: "",
        };
        let prefixed = {
            let tensors = weights.parse()?;
            tensors.tensor("embeddings.word_embeddings.weight").is_err()
                && tensors
                    .tensor("bert.embeddings.word_embeddings.weight")
                    .is_ok()
        };
        if prefixed {
            weights.prefix = "bert.";
        }
        let tensors = weights.parse()?;
        for (name, shape) in expected_tensors(config) {
            let view = weights.view_of(&tensors, &name)?;
            if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(weights.tensor_error(
                    &name,
                    format!("dtype is {:?}, expected F32, F16 or BF16", view.dtype()),
                ));
            }
            if view.shape() != shape.as_slice() {
                return Err(weights.tensor_error(
                    &name,
                    format!("shape is {:?}, the config needs {:?}", view.shape(), shape),
                ));
            }
        }
        Ok(weights)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self) -> Result<SafeTensors<'_>, ModelError> {
        SafeTensors::deserialize(self.map.bytes()).map_err(|e| ModelError::Weights {
            path: self.path.clone(),
            message: format!(
                "not a valid safetensors file ({e}); is it truncated? re-fetch the model"
            ),
        })
    }

    fn tensor_error(&self, tensor: &str, message: String) -> ModelError {
        ModelError::Tensor {
            path: self.path.clone(),
            tensor: format!("{}{tensor}", self.prefix),
            message,
        }
    }

    fn view_of<'a>(
        &self,
        tensors: &SafeTensors<'a>,
        name: &str,
    ) -> Result<safetensors::tensor::TensorView<'a>, ModelError> {
        tensors
            .tensor(&format!("{}{name}", self.prefix))
            .map_err(|_| self.tensor_error(name, "missing from the file".into()))
    }

    /// The values of tensor `name` as f32: borrowed from the mapping when stored as aligned
    /// F32, else copied (and F16 / BF16 widened, exactly: every half value is an f32 value).
    pub fn f32(&self, name: &str) -> Result<Cow<'_, [f32]>, ModelError> {
        let tensors = self.parse()?;
        let view = self.view_of(&tensors, name)?;
        let data = view.data();
        let widen = |half: fn(u16) -> f32| -> Vec<f32> {
            data.chunks_exact(2)
                .map(|b| half(u16::from_le_bytes([b[0], b[1]])))
                .collect()
        };
        Ok(match view.dtype() {
            Dtype::F16 => Cow::Owned(widen(|h| half::f16::from_bits(h).to_f32())),
            Dtype::BF16 => Cow::Owned(widen(|h| half::bf16::from_bits(h).to_f32())),
            _ => match bytemuck::try_cast_slice::<u8, f32>(data) {
                Ok(values) => Cow::Borrowed(values),
                Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(data)),
            },
        })
    }
}
