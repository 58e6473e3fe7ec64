//! `POST /v1/completions` and `POST /v1/chat/completions`: one answer, or server-sent events
//! (`data: {chunk}` per piece of text, the last chunk with its `finish_reason`, the usage when
//! `stream_options.include_usage`, then `data: [DONE]`). The retry report — what was retried
//! and replayed on the way — is the `x-hipinfer-retry` header of an answer, and a final
//! `: hipinfer-retry {…}` comment of a stream. A generation that fails mid-stream ends with a
//! chunk whose `finish_reason` is `error` and carries the error.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::generation::{Finished, GenerationError, GenerationEvent, GenerationStream};
use crate::llm::GenerateRequest;

use super::super::error::ApiError;
use super::body::{self, CompletionBody};
use super::LlmState;

/// Which route: completions or chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Chat,
}

/// The engine's refusal as an HTTP error.
pub fn api_error(error: GenerationError) -> ApiError {
    let message = error.to_string();
    match error {
        GenerationError::Validation { .. } => ApiError::validation(message),
        GenerationError::Overloaded { .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
        }
        GenerationError::Unhealthy { .. } | GenerationError::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", message)
        }
        GenerationError::Failed { .. } => {
            ApiError::new(StatusCode::FAILED_DEPENDENCY, "backend", message)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses, admits, and answers (at once, or as a stream).
async fn complete(app: LlmState, request: Request<Body>, kind: Kind) -> Response {
    let model = app.engine.model().clone();
    let default_max_tokens = app.engine.config().default_max_tokens;
    let parsed = app
        .body(request, |value| match kind {
            Kind::Text => body::completion(&value, &model, default_max_tokens),
            Kind::Chat => body::chat(&value, &model, default_max_tokens),
        })
        .await;
    let body = match parsed {
        Ok(body) => body,
        Err(e) => return e.openai(),
    };
    if let Some(name) = body.model.as_deref().filter(|name| !app.serves(name)) {
        return app.no_such_model(name).openai();
    }
    let request = GenerateRequest {
        prompt_ids: body.prompt_ids.clone(),
        max_tokens: body.max_tokens,
        sampling: body.sampling.clone(),
        stop: body.stop.clone(),
        context_length: None,
        ignore_stop_tokens: body.ignore_eos,
    };
    let stream = match app.engine.submit(request) {
        Ok(stream) => stream,
        Err(e) => return api_error(e).openai(),
    };
    let reply = Reply {
        id: format!(
            "{}-{}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            stream.id
        ),
        created: unix_now(),
        model: body
            .model
            .clone()
            .unwrap_or_else(|| app.model_name.to_string()),
        kind,
    };
    if body.stream {
        streamed(reply, stream, body)
    } else {
        answered(reply, stream).await
    }
}

/// What every chunk or answer of one request repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Text, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// A chunk with `text` and `finish_reason`.
    fn chunk(&self, text: &str, finish_reason: Option<&str>, first: bool) -> Value {
        let choice = match self.kind {
            Kind::Text => {
                json!({"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": null})
            }
            Kind::Chat => {
                let delta = match (first, finish_reason) {
                    (true, _) => json!({"role": "assistant", "content": text}),
                    (false, Some(_)) if text.is_empty() => json!({}),
                    _ => json!({"content": text}),
                };
                json!({"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null})
            }
        };
        self.envelope(true, json!([choice]))
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion})
}

/// What was retried and replayed for a request, as a header or a stream's last comment.
fn report_text(done: &Finished) -> String {
    serde_json::to_string(&done.report).unwrap_or_default()
}

async fn answered(reply: Reply, mut stream: GenerationStream) -> Response {
    let done = loop {
        match stream.next().await {
            Some(GenerationEvent::Token { .. }) => {}
            Some(GenerationEvent::Finished(done)) => break *done,
            Some(GenerationEvent::Failed(error)) => return api_error(error).openai(),
            None => return api_error(GenerationError::ShuttingDown).openai(),
        }
    };
    let reason = serde_json::to_value(done.finish_reason).unwrap_or(Value::Null);
    let choice = match reply.kind {
        Kind::Text => json!({"index": 0, "text": done.text, "finish_reason": reason,
                             "logprobs": null}),
        Kind::Chat => json!({"index": 0, "finish_reason": reason, "logprobs": null,
                             "message": {"role": "assistant", "content": done.text}}),
    };
    let mut answer = reply.envelope(false, json!([choice]));
    answer["usage"] = usage(done.prompt_tokens, done.generated_ids.len());
    let mut response = Json(answer).into_response();
    if let Ok(value) = HeaderValue::from_str(&report_text(&done)) {
        response.headers_mut().insert("x-hipinfer-retry", value);
    }
    response
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The stream's state between chunks.
struct Streaming {
    reply: Reply,
    stream: GenerationStream,
    include_usage: bool,
    first: bool,
    tail: Vec<Bytes>,
    done: bool,
}

fn streamed(reply: Reply, stream: GenerationStream, body: CompletionBody) -> Response {
    let state = Streaming {
        reply,
        stream,
        include_usage: body.include_usage,
        first: true,
        tail: Vec::new(),
        done: false,
    };
    let chunks = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(bytes) = s.tail.pop() {
                return Some((Ok::<_, Infallible>(bytes), s));
            }
            if s.done {
                return None;
            }
            match s.stream.next().await {
                Some(GenerationEvent::Token { text, .. }) => {
                    if text.is_empty() && !s.first {
                        continue;
                    }
                    let chunk = s.reply.chunk(&text, None, s.first);
                    s.first = false;
                    return Some((Ok(event(&chunk)), s));
                }
                Some(GenerationEvent::Finished(done)) => {
                    let reason = serde_json::to_value(done.finish_reason).unwrap_or(Value::Null);
                    let mut tail = vec![event(&s.reply.chunk("", reason.as_str(), s.first))];
                    if s.include_usage {
                        let mut last = s.reply.envelope(true, json!([]));
                        last["usage"] = usage(done.prompt_tokens, done.generated_ids.len());
                        tail.push(event(&last));
                    }
                    tail.push(Bytes::from(format!(
                        ": hipinfer-retry {}\n\n",
                        report_text(&done)
                    )));
                    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
                    tail.reverse();
                    s.tail = tail;
                    s.done = true;
                }
                failed => {
                    let error = match failed {
                        Some(GenerationEvent::Failed(error)) => error,
                        _ => GenerationError::ShuttingDown,
                    };
                    let mut chunk = s.reply.chunk("", Some("error"), s.first);
                    chunk["error"] = json!({"message": error.to_string(), "type": "server_error"});
                    s.tail = vec![Bytes::from_static(b"data: [DONE]\n\n"), event(&chunk)];
                    s.done = true;
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// POST `/v1/completions`: OpenAI's text completion, answered or streamed.
#[utoipa::path(post, path = "/v1/completions", tag = "OpenAI",
    responses(
        (status = 200, description = "The completion (or server-sent events with stream: true)"),
        (status = 404, description = "`model` names a model this server does not serve"),
        (status = 422, description = "A wrong or unsupported field, named"),
        (status = 424, description = "The device failed this generation"),
        (status = 429, description = "Overloaded: the KV-cache budget is reserved"),
        (status = 503, description = "Not ready: the device is lost"),
    ))]
pub async fn completions(State(app): State<LlmState>, request: Request<Body>) -> Response {
    complete(app, request, Kind::Text).await
}

/// POST `/v1/chat/completions`: OpenAI's chat completion, answered or streamed.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "OpenAI",
    responses(
        (status = 200, description = "The chat completion (or server-sent events with stream: true)"),
        (status = 404, description = "`model` names a model this server does not serve"),
        (status = 422, description = "A wrong or unsupported field, named"),
        (status = 424, description = "The device failed this generation"),
        (status = 429, description = "Overloaded: the KV-cache budget is reserved"),
        (status = 503, description = "Not ready: the device is lost"),
    ))]
pub async fn chat_completions(State(app): State<LlmState>, request: Request<Body>) -> Response {
    complete(app, request, Kind::Chat).await
}
