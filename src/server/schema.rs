//! The request bodies of the HTTP API (TEI's and OpenAI's embedding schemas).

use serde::Deserialize;

/// `"text"` or `["text", …]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Inputs::One(text) => vec![text],
            Inputs::Many(texts) => texts,
        }
    }
}

/// POST `/embed` (TEI).
#[derive(Debug, Deserialize)]
pub struct EmbedBody {
    pub inputs: Inputs,
    /// Cut inputs past `max_input_length` (default: the server's `--auto-truncate`).
    pub truncate: Option<bool>,
    /// Unit-length embeddings (default true).
    pub normalize: Option<bool>,
    /// Only `right` is supported.
    pub truncation_direction: Option<String>,
    /// Only the model's own size is supported.
    pub dimensions: Option<usize>,
}

/// POST `/v1/embeddings` (OpenAI).
#[derive(Debug, Deserialize)]
pub struct OpenAiBody {
    pub input: Inputs,
    /// Accepted and echoed as the served model's name.
    pub model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    pub encoding_format: Option<String>,
    /// Only the model's own size is supported.
    pub dimensions: Option<usize>,
    /// Accepted (OpenAI clients send it) and not used.
    #[serde(rename = "user")]
    pub _user: Option<String>,
}

/// POST `/tokenize` (TEI).
#[derive(Debug, Deserialize)]
pub struct TokenizeBody {
    pub inputs: Inputs,
    /// Include `[CLS]` and `[SEP]` (default true).
    pub add_special_tokens: Option<bool>,
}
