//! The route handlers: TEI's `/embed`, `/tokenize`, `/info`, `/health`, `/metrics`, and OpenAI's
//! `/v1/embeddings`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use crate::engine::{EmbedRequest, EmbedResponse, InferenceEngine};
use crate::model::Truncation;

use super::body::read_json;
use super::connections::{BodyMemory, ConnectionMetrics};
use super::error::ApiError;
use super::schema::{EmbedBody, OpenAiBody, TokenizeBody};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: InferenceEngine,
    pub payload_limit: usize,
    pub auto_truncate: bool,
    pub model_name: Arc<str>,
    /// The API key, when one is required (it also unlocks the details of `/health`).
    pub api_key: Option<Arc<str>>,
    /// A body not received within this long is answered 408.
    pub body_timeout: std::time::Duration,
    pub connections: ConnectionMetrics,
    /// What request bodies being received may hold together.
    pub body_memory: BodyMemory,
}

impl AppState {
    /// Counts a request the server refused before it reached the engine (unreadable, too large,
    /// empty or invalid) in the engine's request metrics, as the engine counts its own refusals.
    fn rejected(&self, error: ApiError) -> ApiError {
        let metrics = self.engine.metrics();
        metrics.requests.inc();
        metrics.failed(match error.kind {
            "empty" | "payload_too_large" => error.kind,
            _ => "validation",
        });
        error
    }

    /// The body as JSON, parsed into the route's type by `parse`; refusals are counted.
    async fn body<T>(
        &self,
        request: Request<Body>,
        parse: impl FnOnce(serde_json::Value) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let value = read_json(
            request,
            self.payload_limit,
            self.body_timeout,
            &self.connections,
            &self.body_memory,
        )
        .await
        .map_err(|e| self.rejected(e))?;
        parse(value).map_err(|e| self.rejected(e))
    }
}

/// Checks the inputs a route got and runs them through the engine (which refuses empty and
/// blank inputs itself).
async fn run(
    app: &AppState,
    inputs: Vec<String>,
    truncate: bool,
    direction: Truncation,
    normalize: bool,
    dimensions: Option<usize>,
) -> Result<EmbedResponse, ApiError> {
    let size = app.engine.model().dimensions();
    if let Some(d) = dimensions.filter(|&d| d != size) {
        return Err(app.rejected(ApiError::validation(format!(
            "dimensions {d} is not supported: this model's embeddings have {size}"
        ))));
    }
    let request = EmbedRequest::new(inputs)
        .truncate(truncate)
        .truncation_direction(direction)
        .normalize(normalize);
    Ok(app.engine.embed_async(request).await?)
}

/// TEI's timing headers (milliseconds) and the retry counts of the answer.
fn with_headers(mut response: Response, answer: &EmbedResponse) -> Response {
    let t = answer.timings;
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    let ms = |d: std::time::Duration| format!("{}", d.as_millis());
    put("x-total-time", ms(t.total));
    put("x-tokenization-time", ms(t.tokenization));
    put("x-queue-time", ms(t.queue));
    put("x-inference-time", ms(t.inference));
    let retry = &answer.retry;
    put("x-hipinfer-retries", retry.retries.to_string());
    put("x-hipinfer-failed-steps", retry.failed_steps.to_string());
    if !retry.is_empty() {
        put("x-hipinfer-retry-report", retry_report_header(retry));
    }
    response
}

/// One history record as an API client sees it: codes, classes and counts — never the free
/// text of an error, which may name files, programs or a worker's output.
fn public_record(record: &crate::engine::RetryRecord) -> serde_json::Value {
    json!({
        "scope": record.scope,
        "attempt": record.attempt,
        "timestamp": record
            .timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        "op": record.op,
        "class": record.class,
        "reason": record.reason,
        "code": record.code,
        "error": record.error,
    })
}

/// The retry report as header text: the counts and the newest history records that fit in
/// [`REPORT_HEADER_BYTES`] (proxies refuse large headers: nginx buffers 4 KB by default).
fn retry_report_header(retry: &crate::engine::RetryReport) -> String {
    let records: Vec<serde_json::Value> = retry.history.iter().map(public_record).collect();
    let report = |kept: usize| {
        json!({
            "retries": retry.retries,
            "failed_steps": retry.failed_steps,
            "worker_restarts": retry.worker_restarts,
            "history": &records[records.len() - kept..],
            "history_omitted": records.len() - kept,
        })
        .to_string()
    };
    // Each record's size once, newest first; then one report of what fits (fewer, in the rare
    // case the counts' own digits tip it over).
    let room = REPORT_HEADER_BYTES.saturating_sub(report(0).len());
    let mut used = 0usize;
    let mut kept = records
        .iter()
        .rev()
        .take_while(|record| {
            let size = record.to_string().len() + 1;
            used = used.saturating_add(size);
            used <= room
        })
        .count();
    let mut text = report(kept);
    while text.len() > REPORT_HEADER_BYTES && kept > 0 {
        kept -= 1;
        text = report(kept);
    }
    text
}

/// The most bytes of the `x-hipinfer-retry-report` header.
const REPORT_HEADER_BYTES: usize = 2048;

/// POST `/embed`: `{inputs, truncate?, truncation_direction?, normalize?}` → `[[f32]]`.
pub async fn embed(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, EmbedBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.tei(),
    };
    let truncate = body.truncate.unwrap_or(app.auto_truncate);
    let normalize = body.normalize.unwrap_or(true);
    match run(
        &app,
        body.inputs,
        truncate,
        body.truncation_direction,
        normalize,
        body.dimensions,
    )
    .await
    {
        Ok(answer) => with_headers(Json(&answer.embeddings).into_response(), &answer),
        Err(e) => e.tei(),
    }
}

/// POST `/v1/embeddings`: OpenAI's request and response.
pub async fn openai_embeddings(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, OpenAiBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.openai(),
    };
    let base64 = body.base64;
    let answer = match run(
        &app,
        body.input,
        app.auto_truncate,
        Truncation::Right,
        true,
        body.dimensions,
    )
    .await
    {
        Ok(answer) => answer,
        Err(e) => return e.openai(),
    };
    let data: Vec<_> = answer
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, embedding)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(embedding)
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    let tokens = answer.total_tokens();
    let body = json!({
        "object": "list",
        "data": data,
        "model": body.model.unwrap_or_else(|| app.model_name.to_string()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "retry": answer.retry,
    });
    with_headers(Json(body).into_response(), &answer)
}

/// POST `/tokenize`: `{inputs, add_special_tokens?}` → `[[{id, text, special, start, stop}]]`,
/// each input held to `max_input_length` tokens, as many inputs as an embedding request may
/// have, on the blocking pool under the same concurrency limit.
pub async fn tokenize(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, TokenizeBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.tei(),
    };
    match app
        .engine
        .tokens_async(body.inputs, body.add_special_tokens)
        .await
    {
        Ok(all) => Json(all).into_response(),
        Err(e) => ApiError::from(e).tei(),
    }
}

/// GET `/info`: the model, the device and the limits.
pub async fn info(State(app): State<AppState>) -> Response {
    let engine = &app.engine;
    let config = engine.config();
    let device = engine.device();
    let active = engine.active_backend();
    Json(json!({
        "model_id": &*app.model_name,
        "model_dtype": "float32",
        "model_type": {"embedding": {"pooling": "mean"}},
        "dimensions": engine.model().dimensions(),
        "backend": active,
        "degraded": active.contains("fallback"),
        "isolation": engine.isolation().to_string(),
        "fallback": config.fallback.to_string(),
        "device": {"name": device.name, "arch": device.arch, "index": device.device,
                   "compute_units": device.compute_units, "memory_bytes": device.total_memory},
        "max_concurrent_requests": config.batching.max_concurrent_requests,
        "max_input_length": engine.max_input_length(),
        "max_batch_tokens": config.batching.max_batch_tokens,
        "max_batch_requests": config.batching.max_batch_requests,
        "max_client_batch_size": config.batching.max_client_batch_size,
        "auto_truncate": app.auto_truncate,
        "payload_limit": app.payload_limit,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// GET `/health` (TEI's) and `/readyz`: 200 while requests are served — a kernel round trip
/// on the device succeeded recently (a busy engine is ready), or the CPU fallback serves
/// (`"status": "degraded"`) — and 503 when nothing serves. The body says the status and the
/// class of the cause; the details (which may name files and device errors) only to a caller
/// with the API key, and in the log.
pub async fn health(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let health = app.engine.health_async().await;
    let details = app
        .api_key
        .as_deref()
        .is_some_and(|key| super::auth::authorized(&headers, key));
    let mut body = json!({
        "status": health.status,
        "ready": health.ready,
        "degraded": health.degraded,
        "cause": health.cause.map(|c| c.as_str()),
        "breaker": health.breaker,
        "backend": health.backend,
    });
    if details {
        body["reason"] = json!(health.reason);
    }
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !health.ready {
        tracing::debug!(cause = ?health.cause, reason = ?health.reason, "not ready");
        // TEI's error schema, with the status fields beside it.
        body["error"] = json!(format!(
            "unhealthy: {}",
            health.cause.map_or("not ready", |c| c.as_str())
        ));
        body["error_type"] = json!("unhealthy");
    }
    (status, Json(body)).into_response()
}

/// GET `/livez`: 200 while the process and its step thread are alive — answered at once, with
/// no device work and never behind a step, so a busy server is never killed for being busy.
pub async fn livez(State(app): State<AppState>) -> Response {
    let liveness = app.engine.liveness();
    let status = if liveness.alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({"status": if liveness.alive { "alive" } else { "dead" },
                          "step_thread": liveness.step_thread}),
        ),
    )
        .into_response()
}

/// GET `/metrics`: the Prometheus text format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let mut text = String::new();
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_utf8(&app.engine.registry().gather(), &mut text) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            tracing::error!("could not encode the metrics: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Any other path.
pub async fn not_found(request: Request<Body>) -> Response {
    let path = request.uri().path();
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such route: {path}"),
    );
    if path.starts_with("/v1/") {
        error.openai()
    } else {
        error.tei()
    }
}

/// A route called with a method it does not serve.
pub async fn method_not_allowed(request: Request<Body>) -> Response {
    let path = request.uri().path();
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not served on {path}", request.method()),
    );
    if path.starts_with("/v1/") {
        error.openai()
    } else {
        error.tei()
    }
}
