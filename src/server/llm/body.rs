//! OpenAI's completion and chat-completion bodies, checked field by field: a field this server
//! does not support (or a value of it it does not) is a 422 naming the field, never silently
//! ignored.

use serde_json::{Map, Value};

use crate::llm::{ChatMessage, LanguageModel, SamplingParams};

use super::super::error::ApiError;

/// What a completion request asks for, in the engine's terms.
#[derive(Debug, Clone)]
pub struct CompletionBody {
    pub model: Option<String>,
    pub prompt_ids: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Generate `max_tokens` even past the model's end-of-sequence tokens (vLLM's extension of
    /// the same name; benchmarks use it so every stream is as long as asked).
    pub ignore_eos: bool,
}

/// Fields read by both routes.
const COMMON: [&str; 13] = [
    "ignore_eos",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "user",
];

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("{field}: {message}"))
}

fn number(map: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(field, "must be a number")),
    }
}

fn count(map: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(field, "must be a whole number ≥ 0")),
    }
}

/// Checks that every field is known, and those not read at their neutral value.
fn check_rest(map: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    for (field, value) in map {
        let neutral = match field.as_str() {
            f if COMMON.contains(&f) || known.contains(&f) => true,
            "n" | "best_of" => value.is_null() || value.as_u64() == Some(1),
            "echo" | "logprobs" => {
                value.is_null() || value == &Value::Bool(false) || value.as_u64() == Some(0)
            }
            "presence_penalty" | "frequency_penalty" => {
                value.is_null() || value.as_f64() == Some(0.0)
            }
            "logit_bias" => value.is_null() || value.as_object().is_some_and(Map::is_empty),
            "suffix" | "top_logprobs" | "tools" | "tool_choice" | "response_format" => {
                value.is_null()
            }
            "parallel_tool_calls" => value.is_null() || value.is_boolean(),
            _ => {
                return Err(invalid(
                    field,
                    "is not a field this server knows (see GET /openapi.json)",
                ))
            }
        };
        if !neutral {
            return Err(invalid(
                field,
                format!("{value} is not supported here (only the default)"),
            ));
        }
    }
    Ok(())
}

fn common(
    map: &Map<String, Value>,
    default_max_tokens: usize,
    max_tokens_field: Option<&str>,
) -> Result<CompletionBody, ApiError> {
    let model = match map.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("model", "must be a string")),
    };
    let mut max_tokens = count(map, "max_tokens")?;
    if let Some(field) = max_tokens_field {
        max_tokens = count(map, field)?.or(max_tokens);
    }
    let defaults = SamplingParams::default();
    let temperature = number(map, "temperature")?.unwrap_or(1.0) as f32;
    let sampling = SamplingParams {
        temperature,
        top_p: number(map, "top_p")?.map_or(defaults.top_p, |v| v as f32),
        top_k: count(map, "top_k")?.map_or(defaults.top_k, |v| v as usize),
        min_p: number(map, "min_p")?.map_or(defaults.min_p, |v| v as f32),
        repetition_penalty: number(map, "repetition_penalty")?
            .map_or(defaults.repetition_penalty, |v| v as f32),
        seed: match map.get("seed") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .map(|s| s as u64)
                .or_else(|| v.as_u64())
                .ok_or_else(|| invalid("seed", "must be an integer"))?,
        },
    };
    let stop = match map.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid("stop", "must be a string or a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop", "must be a string or a list of strings")),
    };
    if stop.len() > 4 {
        return Err(invalid("stop", "at most 4 stop sequences"));
    }
    let stream = match map.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "must be true or false")),
    };
    let include_usage = match map.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => {
            for key in options.keys() {
                if key != "include_usage" {
                    return Err(invalid(
                        &format!("stream_options.{key}"),
                        "is not supported here",
                    ));
                }
            }
            options
                .get("include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        }
        Some(_) => return Err(invalid("stream_options", "must be an object")),
    };
    let ignore_eos = match map.get("ignore_eos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("ignore_eos", "must be true or false")),
    };
    if include_usage && !stream {
        return Err(invalid(
            "stream_options",
            "is only allowed with stream: true",
        ));
    }
    Ok(CompletionBody {
        model,
        prompt_ids: Vec::new(),
        max_tokens: max_tokens.map_or(default_max_tokens, |v| v as usize),
        sampling,
        stop,
        stream,
        include_usage,
        ignore_eos,
    })
}

fn object(value: &Value) -> Result<&Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| ApiError::validation("the body must be a JSON object"))
}

/// `POST /v1/completions`: `prompt` is a string, a list of one string, or token ids.
pub fn completion(
    value: &Value,
    model: &LanguageModel,
    default_max_tokens: usize,
) -> Result<CompletionBody, ApiError> {
    let map = object(value)?;
    check_rest(map, &["prompt"])?;
    let mut body = common(map, default_max_tokens, None)?;
    let text = |s: &str| {
        model
            .tokenizer()
            .encode(s)
            .map_err(|e| invalid("prompt", e))
    };
    body.prompt_ids = match map.get("prompt") {
        Some(Value::String(s)) => text(s)?,
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => text(s)?,
            ids if !ids.is_empty() && ids.iter().all(Value::is_u64) => ids
                .iter()
                .map(|v| v.as_u64().map(|id| id as u32).unwrap_or(u32::MAX))
                .collect(),
            _ => {
                return Err(invalid(
                    "prompt",
                    "one prompt per request (n = 1): a string, [string] or token ids",
                ))
            }
        },
        None | Some(Value::Null) => return Err(invalid("prompt", "is required")),
        Some(_) => return Err(invalid("prompt", "must be a string or token ids")),
    };
    Ok(body)
}

/// `POST /v1/chat/completions`: `messages` rendered by the model's chat template.
pub fn chat(
    value: &Value,
    model: &LanguageModel,
    default_max_tokens: usize,
) -> Result<CompletionBody, ApiError> {
    let map = object(value)?;
    check_rest(map, &["messages", "max_completion_tokens"])?;
    let mut body = common(map, default_max_tokens, Some("max_completion_tokens"))?;
    let Some(Value::Array(items)) = map.get("messages") else {
        return Err(invalid(
            "messages",
            "is required: a list of {role, content}",
        ));
    };
    if items.is_empty() {
        return Err(invalid("messages", "is empty"));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| format!("messages[{i}].{name}");
        let role = item
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&field("role"), "must be a string"))?;
        if !["system", "user", "assistant", "developer"].contains(&role) {
            return Err(invalid(
                &field("role"),
                format!("{role:?} is not supported here"),
            ));
        }
        let content = match item.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(invalid(
                                &field("content"),
                                "only text parts ({type: \"text\", text}) are supported",
                            ))
                        }
                    }
                }
                text
            }
            _ => return Err(invalid(&field("content"), "must be a string or text parts")),
        };
        let role = if role == "developer" { "system" } else { role };
        messages.push(ChatMessage::new(role, content));
    }
    let template = model.chat_template().ok_or_else(|| {
        invalid(
            "messages",
            "this model has no chat template (tokenizer.chat_template): use /v1/completions",
        )
    })?;
    let prompt = template
        .render(&messages, true)
        .map_err(|e| invalid("messages", e))?;
    body.prompt_ids = model
        .tokenizer()
        .encode(&prompt)
        .map_err(|e| invalid("messages", e))?;
    Ok(body)
}
