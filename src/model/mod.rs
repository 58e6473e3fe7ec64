//! Models: all-MiniLM-L6-v2 (a BERT sentence-embedding model) from a Hugging Face folder.
//!
//! [`Model`] is the host side — configuration, tokenizer, memory-mapped weights — loaded once and
//! shared; [`Embedder`] puts its weights on a backend and embeds texts there. After a backend
//! reset, [`Embedder::reupload`] puts the weights back.

mod bert;
mod config;
mod error;
mod mapped;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::backend::{Backend, Dtype};

pub use bert::{forward, forward_reading, DeviceWeights, Readout};
pub use config::{BertConfig, ModelConfig};
pub use error::ModelError;
pub use mapped::MappedFile;

/// L2-normalises an embedding on the host with the CPU kernel's arithmetic (the engine runs
/// steps unnormalised and normalises the inputs that asked for it).
pub use crate::backend::cpu::math::l2_normalize as normalize;
pub use tokenizer::{
    Encoding, LongInput, TextTokenizer, Token, Truncation, WINDOW_BYTES_PER_TOKEN,
};
pub use weights::WeightFile;

/// The folder `hipinfer` uses when none is given: `$HIPINFER_MODEL`, else this.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// A model folder, loaded: configuration, tokenizer and weights (memory-mapped).
#[derive(Debug)]
pub struct Model {
    dir: PathBuf,
    name: String,
    config: ModelConfig,
    /// `None` when loaded with [`Model::load_for_inference`].
    tokenizer: Option<TextTokenizer>,
    weights: WeightFile,
}

impl Model {
    /// Loads the Hugging Face model folder `dir` (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, and optionally `sentence_bert_config.json` and `1_Pooling/config.json`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Model, ModelError> {
        Self::load_parts(dir.as_ref(), true)
    }

    /// Loads what running the model needs — configuration and weights — without parsing
    /// `tokenizer.json`: for a worker process, which receives token ids (it restarts ~30 ms
    /// sooner). [`Model::tokenizer`] then answers an error.
    pub fn load_for_inference(dir: impl AsRef<Path>) -> Result<Model, ModelError> {
        Self::load_parts(dir.as_ref(), false)
    }

    fn load_parts(dir: &Path, with_tokenizer: bool) -> Result<Model, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Folder {
                path: dir.to_path_buf(),
                message: "is not a folder (fetch the model with scripts/fetch-model.sh, or pass --model DIR)".into(),
            });
        }
        let required: &[&str] = if with_tokenizer {
            &["config.json", "model.safetensors", "tokenizer.json"]
        } else {
            &["config.json", "model.safetensors"]
        };
        for required in required {
            if !dir.join(required).is_file() {
                return Err(ModelError::Folder {
                    path: dir.to_path_buf(),
                    message: format!("has no {required}"),
                });
            }
        }
        let config = ModelConfig::load(dir)?;
        let tokenizer = if with_tokenizer {
            Some(TextTokenizer::load(
                &dir.join("tokenizer.json"),
                config.max_seq_length,
            )?)
        } else {
            None
        };
        let weights = WeightFile::open(&dir.join("model.safetensors"), &config.bert)?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Model {
            dir: dir.to_path_buf(),
            name,
            config,
            tokenizer,
            weights,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder's name (`all-MiniLM-L6-v2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tokenizer; an error for a model loaded with [`Model::load_for_inference`].
    pub fn tokenizer(&self) -> Result<&TextTokenizer, ModelError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::Tokenizer {
                path: self.dir.join("tokenizer.json"),
                message: "was not loaded (Model::load_for_inference): tokenize elsewhere".into(),
            })
    }

    pub fn weights(&self) -> &WeightFile {
        &self.weights
    }

    /// The embedding size.
    pub fn dimensions(&self) -> usize {
        self.config.bert.hidden_size
    }

    /// Tokenizes every text (truncated at `max_seq_length`).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Encoding>, ModelError> {
        let tokenizer = self.tokenizer()?;
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| tokenizer.encode(i, text.as_ref()))
            .collect()
    }
}

/// A model's weights on a backend: embeds texts there. `Send + Sync`; share it behind an `Arc`.
pub struct Embedder<B: Backend> {
    model: Arc<Model>,
    backend: B,
    weights: RwLock<DeviceWeights<B::Buffer>>,
}

impl<B: Backend> std::fmt::Debug for Embedder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model.name)
            .field("backend", &self.backend.info())
            .finish()
    }
}

impl<B: Backend> Embedder<B> {
    /// Uploads the model's weights to `backend` (f32).
    pub fn new(model: Arc<Model>, backend: B) -> Result<Self, ModelError> {
        Self::with_dtype(model, backend, Dtype::F32)
    }

    /// Uploads the model's weights to `backend`, the linear layers' as `dtype`.
    pub fn with_dtype(model: Arc<Model>, backend: B, dtype: Dtype) -> Result<Self, ModelError> {
        let weights = DeviceWeights::upload(&backend, &model.weights, &model.config.bert, dtype)?;
        Ok(Embedder {
            model,
            backend,
            weights: RwLock::new(weights),
        })
    }

    /// An embedder over weights already uploaded to `backend` (by [`DeviceWeights::upload`]).
    pub fn with_weights(model: Arc<Model>, backend: B, weights: DeviceWeights<B::Buffer>) -> Self {
        Embedder {
            model,
            backend,
            weights: RwLock::new(weights),
        }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The precision of the linear layers' weights.
    pub fn dtype(&self) -> Dtype {
        self.weights.read().dtype()
    }

    /// Uploads the weights again (after a backend reset invalidated the old buffers).
    pub fn reupload(&self) -> Result<(), ModelError> {
        let mut weights = self.weights.write();
        let dtype = weights.dtype();
        *weights = DeviceWeights::upload(
            &self.backend,
            &self.model.weights,
            &self.model.config.bert,
            dtype,
        )?;
        Ok(())
    }

    /// Embeds already tokenized inputs as one padded batch.
    pub fn embed_encodings(
        &self,
        batch: &[Encoding],
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        self.read_encodings(batch, Readout::Pooled, normalize)
    }

    /// Runs already tokenized inputs as one padded batch and reads `readout` out.
    pub fn read_encodings(
        &self,
        batch: &[Encoding],
        readout: Readout,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        forward_reading(
            &self.backend,
            &self.weights.read(),
            &self.model.config.bert,
            batch,
            readout,
            normalize,
        )
    }

    /// Tokenizes and embeds `texts` as one batch; one embedding per text, in order.
    pub fn embed<S: AsRef<str>>(
        &self,
        texts: &[S],
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let batch = self.model.tokenize(texts)?;
        self.embed_encodings(&batch, normalize)
    }
}
