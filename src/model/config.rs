//! The model folder's configuration: `config.json` (BERT), `sentence_bert_config.json`
//! (max_seq_length) and `1_Pooling/config.json` (mean pooling).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ModelError;

/// The fields of a Hugging Face BERT `config.json` this engine uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

/// Everything read from the folder's configuration files.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub bert: BertConfig,
    /// Inputs are truncated to this many tokens (special tokens included).
    pub max_seq_length: usize,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ModelError> {
    serde_json::from_str(text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

impl ModelConfig {
    /// Reads and checks the configuration of the model folder `dir`.
    pub fn load(dir: &Path) -> Result<ModelConfig, ModelError> {
        let path = dir.join("config.json");
        let bert: BertConfig = parse(&path, &read(&path)?)?;
        let bad = |message: String| {
            Err(ModelError::Config {
                path: path.clone(),
                message,
            })
        };
        if bert.model_type != "bert" {
            return bad(format!(
                "unsupported model_type {:?} (supported: \"bert\")",
                bert.model_type
            ));
        }
        if !matches!(bert.hidden_act.as_str(), "gelu" | "gelu_python") {
            return bad(format!(
                "unsupported hidden_act {:?} (supported: \"gelu\", the erf form)",
                bert.hidden_act
            ));
        }
        let positive = [
            ("hidden_size", bert.hidden_size),
            ("num_hidden_layers", bert.num_hidden_layers),
            ("num_attention_heads", bert.num_attention_heads),
            ("intermediate_size", bert.intermediate_size),
            ("vocab_size", bert.vocab_size),
            ("max_position_embeddings", bert.max_position_embeddings),
            ("type_vocab_size", bert.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if !bert.hidden_size.is_multiple_of(bert.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                bert.hidden_size, bert.num_attention_heads
            ));
        }
        if !(bert.layer_norm_eps.is_finite() && bert.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps {} must be a positive number",
                bert.layer_norm_eps
            ));
        }

        let mut max_seq_length = bert.max_position_embeddings;
        let sbert: PathBuf = dir.join("sentence_bert_config.json");
        if sbert.is_file() {
            let config: SentenceBertConfig = parse(&sbert, &read(&sbert)?)?;
            if let Some(length) = config.max_seq_length {
                if length < 2 || length > bert.max_position_embeddings {
                    return Err(ModelError::Config {
                        path: sbert,
                        message: format!(
                            "max_seq_length {length} must be within 2..={}",
                            bert.max_position_embeddings
                        ),
                    });
                }
                max_seq_length = length;
            }
        }
        let pooling = dir.join("1_Pooling").join("config.json");
        if pooling.is_file() {
            let config: PoolingConfig = parse(&pooling, &read(&pooling)?)?;
            if !config.pooling_mode_mean_tokens
                || config.pooling_mode_cls_token
                || config.pooling_mode_max_tokens
            {
                return Err(ModelError::Config {
                    path: pooling,
                    message: "only mean pooling (pooling_mode_mean_tokens alone) is supported"
                        .into(),
                });
            }
        }
        Ok(ModelConfig {
            bert,
            max_seq_length,
        })
    }
}
