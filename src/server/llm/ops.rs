//! The language-model server's other routes: health (ready while a device serves), liveness
//! (the scheduler thread), metrics, info, the model list, tokenize and detokenize.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::body;
use super::LlmState;

fn health_answer(app: &LlmState) -> Response {
    let health = app.engine.health();
    let device = app.engine.device();
    let body = json!({
        "status": if health.ready { "ok" } else { "unhealthy" },
        "ready": health.ready,
        "model_type": "generation",
        "backend": device.map(|d| d.backend),
        "reason": health.reason,
    });
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// GET `/health`: ready while a device serves generations (a busy server is ready).
#[utoipa::path(get, path = "/health", tag = "Operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready: the device is lost")))]
pub async fn health(State(app): State<LlmState>) -> Response {
    health_answer(&app)
}

/// GET `/readyz`: the same as `/health`.
#[utoipa::path(get, path = "/readyz", tag = "Operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(app): State<LlmState>) -> Response {
    health_answer(&app)
}

/// GET `/livez`: the scheduler thread lives — answered at once, never behind a step.
#[utoipa::path(get, path = "/livez", tag = "Operations",
    responses((status = 200, description = "Alive"), (status = 503, description = "The scheduler thread stopped")))]
pub async fn livez(State(app): State<LlmState>) -> Response {
    let alive = app.engine.health().alive;
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if alive { "alive" } else { "dead" }})),
    )
        .into_response()
}

/// GET `/metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "Operations",
    responses((status = 200, description = "Prometheus text")))]
pub async fn metrics(State(app): State<LlmState>) -> Response {
    super::super::ops::metrics_answer(app.engine.registry())
}

/// GET `/openapi.json`: this API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations",
    responses((status = 200, description = "OpenAPI 3")))]
pub async fn openapi(State(app): State<LlmState>) -> Response {
    Json(app.openapi.get().cloned().unwrap_or(Value::Null)).into_response()
}

/// GET `/info`: the model, the device, the limits.
#[utoipa::path(get, path = "/info", tag = "Operations",
    responses((status = 200, description = "The model, device and limits")))]
pub async fn info(State(app): State<LlmState>) -> Response {
    let engine = &app.engine;
    let config = engine.model().config();
    Json(json!({
        "model_id": &*app.model_name,
        "model_type": "generation",
        "model_path": engine.model().path(),
        "architecture": "llama",
        "layers": config.layers,
        "hidden": config.hidden,
        "heads": config.heads,
        "kv_heads": config.kv_heads,
        "vocab": config.vocab,
        "max_model_len": config.context_length,
        "max_total_tokens": engine.max_total_tokens(),
        "max_input_length": engine.max_input_length(),
        "max_running": engine.config().max_running,
        "max_waiting": engine.config().max_waiting,
        "default_max_tokens": engine.config().default_max_tokens,
        "device": engine.device().map(|d| json!({
            "backend": d.backend, "name": d.name, "arch": d.arch, "device": d.device,
            "total_memory": d.total_memory, "compute_units": d.compute_units,
        })),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

fn card(app: &LlmState) -> Value {
    json!({"id": &*app.model_name, "object": "model", "created": app.created,
           "owned_by": "hipinfer", "max_model_len": app.engine.model().config().context_length})
}

/// GET `/v1/models`: the served model.
#[utoipa::path(get, path = "/v1/models", tag = "OpenAI",
    responses((status = 200, description = "The model served")))]
pub async fn models(State(app): State<LlmState>) -> Response {
    Json(json!({"object": "list", "data": [card(&app)]})).into_response()
}

/// GET `/v1/models/{id}`: the served model, or OpenAI's 404.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "OpenAI",
    params(("id" = String, Path, description = "The model's id")),
    responses((status = 200, description = "The model"), (status = 404, description = "No such model here")))]
pub async fn model(State(app): State<LlmState>, Path(id): Path<String>) -> Response {
    if app.serves(&id) {
        Json(card(&app)).into_response()
    } else {
        app.no_such_model(&id).openai()
    }
}

/// POST `/tokenize`: `{prompt}` (text) or `{messages}` (through the chat template) to ids.
#[utoipa::path(post, path = "/tokenize", tag = "Tokenizer",
    responses((status = 200, description = "{tokens, count, max_model_len}"), (status = 422, description = "A wrong field")))]
pub async fn tokenize(State(app): State<LlmState>, request: Request<Body>) -> Response {
    let model = app.engine.model().clone();
    let parsed = app
        .body(request, |value| {
            let mut value = value;
            let Some(map) = value.as_object_mut() else {
                return Err(ApiError::validation("the body must be a JSON object"));
            };
            map.remove("add_special_tokens");
            if map.contains_key("messages") {
                body::chat(&value, &model, 1).map(|b| b.prompt_ids)
            } else {
                body::completion(&value, &model, 1).map(|b| b.prompt_ids)
            }
        })
        .await;
    match parsed {
        Ok(tokens) => Json(json!({
            "count": tokens.len(),
            "max_model_len": model.config().context_length,
            "tokens": tokens,
        }))
        .into_response(),
        Err(e) => e.openai(),
    }
}

/// POST `/detokenize`: `{tokens}` to text.
#[utoipa::path(post, path = "/detokenize", tag = "Tokenizer",
    responses((status = 200, description = "{prompt}"), (status = 422, description = "A wrong field")))]
pub async fn detokenize(State(app): State<LlmState>, request: Request<Body>) -> Response {
    let model = app.engine.model().clone();
    let parsed = app
        .body(request, |value| {
            let ids: Vec<u32> = value
                .get("tokens")
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
                        .collect()
                })
                .ok_or_else(|| ApiError::validation("tokens: must be a list of token ids"))?;
            let vocab = model.config().vocab;
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(ApiError::validation(format!(
                    "tokens: {bad} is outside the vocabulary of {vocab}"
                )));
            }
            model
                .tokenizer()
                .decode(&ids, false)
                .map_err(|e| ApiError::validation(format!("tokens: {e}")))
        })
        .await;
    match parsed {
        Ok(text) => Json(json!({"prompt": text})).into_response(),
        Err(e) => e.openai(),
    }
}
