//! The request and answer bodies of the HTTP API (TEI's and OpenAI's schemas). The types are the
//! wire shapes — the OpenAPI document (`/openapi.json`) is generated from them — and requests
//! are read into them from JSON by hand, so that every refusal names the field and the type
//! expected in JSON's terms (`"inputs" must be a string or an array of strings`), never a Rust
//! type. Unknown fields are accepted and ignored, as TEI and OpenAI do.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::Truncation;

use super::error::ApiError;

/// `"text"` or `["text", …]`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
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

/// Which end of an input past `max_input_length` is kept (any case is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TruncationDirection {
    #[default]
    Right,
    Left,
}

impl From<TruncationDirection> for Truncation {
    fn from(direction: TruncationDirection) -> Self {
        match direction {
            TruncationDirection::Right => Truncation::Right,
            TruncationDirection::Left => Truncation::Left,
        }
    }
}

/// A JSON object's fields, read with errors that name them.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// The body as an object.
    pub fn of(body: Value) -> Result<Fields, ApiError> {
        match body {
            Value::Object(map) => Ok(Fields(map)),
            other => Err(ApiError::validation(format!(
                "the body must be a JSON object, not {}",
                json_type(&other)
            ))),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A required field of `"text"` or `["text", …]`.
    pub fn texts(&self, name: &str) -> Result<Inputs, ApiError> {
        texts(name, self.get(name))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::validation(format!(
                "\"{name}\" must be true or false"
            ))),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::validation(format!("\"{name}\" must be a string"))),
        }
    }

    pub fn positive(&self, name: &str) -> Result<Option<usize>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::validation(format!("\"{name}\" must be a positive integer"))
                }),
        }
    }

    /// `"truncation_direction"`: `"right"` (the default) or `"left"`, any case.
    pub fn truncation(&self) -> Result<Option<TruncationDirection>, ApiError> {
        match self.string("truncation_direction")? {
            None => Ok(None),
            Some(text) if text.eq_ignore_ascii_case("right") => {
                Ok(Some(TruncationDirection::Right))
            }
            Some(text) if text.eq_ignore_ascii_case("left") => Ok(Some(TruncationDirection::Left)),
            Some(text) => Err(ApiError::validation(format!(
                "\"truncation_direction\" must be \"right\" or \"left\", not {text:?}"
            ))),
        }
    }

    /// The raw value of a field, if present.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// `"text"` or `["text", …]` from `value`, the field named `name`.
fn texts(name: &str, value: Option<&Value>) -> Result<Inputs, ApiError> {
    let wrong = || {
        ApiError::validation(format!(
            "\"{name}\" must be a string or an array of strings"
        ))
    };
    match value {
        None => Err(ApiError::validation(format!(
            "\"{name}\" is required: a string or an array of strings"
        ))),
        Some(Value::String(text)) => Ok(Inputs::One(text.clone())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Inputs::Many),
        Some(_) => Err(wrong()),
    }
}

/// JSON's name for a value's type.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// POST `/embed` (TEI).
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedBody {
    pub inputs: Inputs,
    /// Cut inputs past `max_input_length` (default: the server's `--auto-truncate`).
    pub truncate: Option<bool>,
    pub truncation_direction: Option<TruncationDirection>,
    /// Unit-length embeddings (default true).
    pub normalize: Option<bool>,
    /// Only the model's own size is supported.
    pub dimensions: Option<usize>,
}

impl EmbedBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        Self::from_fields(&Fields::of(body)?)
    }

    fn from_fields(f: &Fields) -> Result<Self, ApiError> {
        Ok(EmbedBody {
            inputs: f.texts("inputs")?,
            truncate: f.bool("truncate")?,
            truncation_direction: f.truncation()?,
            normalize: f.bool("normalize")?,
            dimensions: f.positive("dimensions")?,
        })
    }
}

/// POST `/embed_all` (TEI): every token's hidden state, unpooled.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedAllBody {
    pub inputs: Inputs,
    pub truncate: Option<bool>,
    pub truncation_direction: Option<TruncationDirection>,
}

impl EmbedAllBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        Ok(EmbedAllBody {
            inputs: f.texts("inputs")?,
            truncate: f.bool("truncate")?,
            truncation_direction: f.truncation()?,
        })
    }
}

/// The sentences of a similarity request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SimilarityInputs {
    pub source_sentence: String,
    pub sentences: Vec<String>,
}

impl SimilarityInputs {
    fn parse(value: &Value) -> Result<Self, ApiError> {
        let f = Fields::of(value.clone()).map_err(|_| {
            ApiError::validation(
                "\"inputs\" must be an object {\"source_sentence\": string, \"sentences\": [strings]}",
            )
        })?;
        let source = match f.get("source_sentence") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::validation(
                    "\"inputs.source_sentence\" must be a string",
                ))
            }
        };
        let sentences = match texts("inputs.sentences", f.get("sentences"))? {
            Inputs::Many(all) => all,
            Inputs::One(_) => {
                return Err(ApiError::validation(
                    "\"inputs.sentences\" must be an array of strings",
                ))
            }
        };
        Ok(SimilarityInputs {
            source_sentence: source,
            sentences,
        })
    }
}

/// POST `/similarity` (TEI): the cosine similarity of the source sentence to each sentence.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarityBody {
    pub inputs: SimilarityInputs,
    pub truncate: Option<bool>,
    pub truncation_direction: Option<TruncationDirection>,
}

impl SimilarityBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        Self::from_fields(&f)
    }

    fn from_fields(f: &Fields) -> Result<Self, ApiError> {
        let inputs = f.value("inputs").ok_or_else(|| {
            ApiError::validation(
                "\"inputs\" is required: {\"source_sentence\": string, \"sentences\": [strings]}",
            )
        })?;
        Ok(SimilarityBody {
            inputs: SimilarityInputs::parse(inputs)?,
            truncate: f.bool("truncate")?,
            truncation_direction: f.truncation()?,
        })
    }
}

/// POST `/` (the Inference API's payload, as `huggingface_hub`'s `InferenceClient` posts it):
/// texts are embedded as `/embed` does; a `{source_sentence, sentences}` object is a similarity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PredictBody {
    Embed(EmbedBody),
    Similarity(SimilarityBody),
}

impl PredictBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        match f.value("inputs") {
            Some(Value::String(_)) | Some(Value::Array(_)) => {
                EmbedBody::from_fields(&f).map(PredictBody::Embed)
            }
            Some(Value::Object(_)) => SimilarityBody::from_fields(&f).map(PredictBody::Similarity),
            _ => Err(ApiError::validation(
                "\"inputs\" must be a string or an array of strings (embeddings), or an object \
                 {\"source_sentence\": string, \"sentences\": [strings]} (similarity)",
            )),
        }
    }
}

/// `float` (default) or `base64` (little-endian f32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

/// POST `/v1/embeddings` (OpenAI).
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiBody {
    pub input: Inputs,
    /// The served model's id (or absent); another name is 404 `model_not_found`.
    pub model: Option<String>,
    pub encoding_format: Option<EncodingFormat>,
    /// Only the model's own size is supported.
    pub dimensions: Option<usize>,
    /// Accepted and not used.
    pub user: Option<String>,
}

impl OpenAiBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        let encoding_format = match f.string("encoding_format")?.as_deref() {
            None => None,
            Some("float") => Some(EncodingFormat::Float),
            Some("base64") => Some(EncodingFormat::Base64),
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "\"encoding_format\" must be \"float\" or \"base64\", not {other:?}"
                )))
            }
        };
        Ok(OpenAiBody {
            input: f.texts("input")?,
            model: f.string("model")?,
            encoding_format,
            dimensions: f.positive("dimensions")?,
            user: f.string("user")?,
        })
    }
}

/// POST `/tokenize` (TEI).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenizeBody {
    pub inputs: Inputs,
    /// Include `[CLS]` and `[SEP]` (default true).
    pub add_special_tokens: Option<bool>,
}

impl TokenizeBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        Ok(TokenizeBody {
            inputs: f.texts("inputs")?,
            add_special_tokens: f.bool("add_special_tokens")?,
        })
    }
}

/// Token ids of one text, or of several.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum DecodeIds {
    One(Vec<u32>),
    Many(Vec<Vec<u32>>),
}

/// POST `/decode` (TEI): texts from token ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecodeBody {
    pub ids: DecodeIds,
    /// Leave out `[CLS]`, `[SEP]` and the like (default true).
    pub skip_special_tokens: Option<bool>,
}

impl DecodeBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        let wrong = || {
            ApiError::validation(
                "\"ids\" must be an array of token ids, or an array of arrays of token ids",
            )
        };
        let id = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(wrong)
        };
        let ids = match f.value("ids") {
            Some(Value::Array(items)) if items.iter().all(Value::is_array) && !items.is_empty() => {
                DecodeIds::Many(
                    items
                        .iter()
                        .map(|row| {
                            row.as_array()
                                .unwrap_or(&Vec::new())
                                .iter()
                                .map(id)
                                .collect::<Result<Vec<u32>, _>>()
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(Value::Array(items)) => {
                DecodeIds::One(items.iter().map(id).collect::<Result<_, _>>()?)
            }
            None => {
                return Err(ApiError::validation(
                    "\"ids\" is required: an array of token ids, or an array of arrays",
                ))
            }
            Some(_) => return Err(wrong()),
        };
        Ok(DecodeBody {
            ids,
            skip_special_tokens: f.bool("skip_special_tokens")?,
        })
    }
}

/// TEI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeiError {
    pub error: String,
    /// `empty`, `validation`, `payload_too_large`, `overloaded`, `backend`, `deadline`,
    /// `unhealthy`, `unauthorized`, `not_found`, `method_not_allowed`, `timeout`, `dropped`.
    pub error_type: String,
}

/// OpenAI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
}

/// One embedding of OpenAI's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// `embedding`
    pub object: String,
    /// Floats, or a base64 string of little-endian f32 bytes.
    #[schema(value_type = Object)]
    pub embedding: Value,
    pub index: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// OpenAI's embeddings answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiEmbeddings {
    /// `list`
    pub object: String,
    pub data: Vec<OpenAiEmbedding>,
    pub model: String,
    pub usage: OpenAiUsage,
}

/// A model, as OpenAI lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    /// `model`
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    pub owned_by: String,
}

/// OpenAI's model list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// `/health`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`, `degraded` or `unhealthy`.
    pub status: String,
    pub ready: bool,
    pub degraded: bool,
    /// The class of why not (or why degraded).
    pub cause: Option<String>,
    pub breaker: String,
    pub backend: String,
    /// The details, to a caller with the API key only.
    pub reason: Option<String>,
}

/// One token, as `/tokenize` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: usize,
    pub stop: usize,
}
