//! The request bodies of the HTTP API (TEI's and OpenAI's embedding schemas), read from JSON by
//! hand so that every refusal names the field and the type expected in JSON's terms
//! (`"inputs" must be a string or an array of strings`), never a Rust type. Unknown fields are
//! accepted and ignored, as TEI and OpenAI do.

use serde_json::{Map, Value};

use crate::model::Truncation;

use super::error::ApiError;

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
    pub fn texts(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let wrong = || {
            ApiError::validation(format!(
                "\"{name}\" must be a string or an array of strings"
            ))
        };
        match self.get(name) {
            None => Err(ApiError::validation(format!(
                "\"{name}\" is required: a string or an array of strings"
            ))),
            Some(Value::String(text)) => Ok(vec![text.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string).ok_or_else(wrong))
                .collect(),
            Some(_) => Err(wrong()),
        }
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
    pub fn truncation(&self) -> Result<Truncation, ApiError> {
        match self.string("truncation_direction")? {
            None => Ok(Truncation::Right),
            Some(text) if text.eq_ignore_ascii_case("right") => Ok(Truncation::Right),
            Some(text) if text.eq_ignore_ascii_case("left") => Ok(Truncation::Left),
            Some(text) => Err(ApiError::validation(format!(
                "\"truncation_direction\" must be \"right\" or \"left\", not {text:?}"
            ))),
        }
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
#[derive(Debug)]
pub struct EmbedBody {
    pub inputs: Vec<String>,
    /// Cut inputs past `max_input_length` (default: the server's `--auto-truncate`).
    pub truncate: Option<bool>,
    /// Unit-length embeddings (default true).
    pub normalize: Option<bool>,
    pub truncation_direction: Truncation,
    /// Only the model's own size is supported.
    pub dimensions: Option<usize>,
}

impl EmbedBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        Ok(EmbedBody {
            inputs: f.texts("inputs")?,
            truncate: f.bool("truncate")?,
            normalize: f.bool("normalize")?,
            truncation_direction: f.truncation()?,
            dimensions: f.positive("dimensions")?,
        })
    }
}

/// POST `/v1/embeddings` (OpenAI).
#[derive(Debug)]
pub struct OpenAiBody {
    pub input: Vec<String>,
    /// Accepted when it names the served model (or is absent).
    pub model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    pub base64: bool,
    /// Only the model's own size is supported.
    pub dimensions: Option<usize>,
}

impl OpenAiBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        let base64 = match f.string("encoding_format")?.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "\"encoding_format\" must be \"float\" or \"base64\", not {other:?}"
                )))
            }
        };
        Ok(OpenAiBody {
            input: f.texts("input")?,
            model: f.string("model")?,
            base64,
            dimensions: f.positive("dimensions")?,
        })
    }
}

/// POST `/tokenize` (TEI).
#[derive(Debug)]
pub struct TokenizeBody {
    pub inputs: Vec<String>,
    /// Include `[CLS]` and `[SEP]` (default true).
    pub add_special_tokens: bool,
}

impl TokenizeBody {
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let f = Fields::of(body)?;
        Ok(TokenizeBody {
            inputs: f.texts("inputs")?,
            add_special_tokens: f.bool("add_special_tokens")?.unwrap_or(true),
        })
    }
}
