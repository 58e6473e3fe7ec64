//! The routes operators and orchestrators use: `/health` and `/readyz` (readiness), `/livez`
//! (liveness), `/metrics`, `/info`, `/openapi.json`, and the JSON answers for routes and
//! methods that do not exist.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::backend::Dtype;

use super::auth;
use super::error::ApiError;
use super::schema::HealthBody;
use super::state::AppState;

/// The health answer, shared by `/health` and `/readyz`.
async fn health_answer(app: &AppState, headers: &HeaderMap) -> Response {
    let health = app.engine.health_async().await;
    let details = app
        .api_key
        .as_deref()
        .is_some_and(|key| auth::authorized(headers, key));
    let mut body = json!(HealthBody {
        status: health.status.into(),
        ready: health.ready,
        degraded: health.degraded,
        cause: health.cause.map(|c| c.as_str().into()),
        breaker: health.breaker.into(),
        backend: health.backend.clone(),
        reason: None,
    });
    if details {
        body["reason"] = json!(health.reason);
    } else if let Some(map) = body.as_object_mut() {
        map.remove("reason");
    }
    if !health.ready {
        tracing::debug!(cause = ?health.cause, reason = ?health.reason, "not ready");
        // TEI's error schema, with the status fields beside it.
        body["error"] = json!(format!(
            "unhealthy: {}",
            health.cause.map_or("not ready", |c| c.as_str())
        ));
        body["error_type"] = json!("unhealthy");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// GET `/health` (TEI's): ready while requests are served.
#[utoipa::path(get, path = "/health", tag = "Operations",
    responses(
        (status = 200, description = "Ready: a recent kernel round trip succeeded, or the CPU fallback serves (`degraded`)", body = HealthBody),
        (status = 503, description = "Not ready: the class of the cause, and its details with the API key", body = HealthBody),
    ))]
pub async fn health(State(app): State<AppState>, headers: HeaderMap) -> Response {
    health_answer(&app, &headers).await
}

/// GET `/readyz`: the same as `/health`, under the name orchestrators expect.
#[utoipa::path(get, path = "/readyz", tag = "Operations",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "Not ready", body = HealthBody),
    ))]
pub async fn readyz(State(app): State<AppState>, headers: HeaderMap) -> Response {
    health_answer(&app, &headers).await
}

/// GET `/livez`: the process and its step thread are alive — answered at once, with no device
/// work and never behind a step, so a busy server is never killed for being busy.
#[utoipa::path(get, path = "/livez", tag = "Operations",
    responses(
        (status = 200, description = "Alive"),
        (status = 503, description = "The step thread stopped"),
    ))]
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
#[utoipa::path(get, path = "/metrics", tag = "Operations",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    metrics_answer(app.engine.registry())
}

/// `registry` in the Prometheus text format (both servers' `/metrics`).
pub(crate) fn metrics_answer(registry: &prometheus::Registry) -> Response {
    let mut text = String::new();
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_utf8(&registry.gather(), &mut text) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            tracing::error!("could not encode the metrics: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// GET `/info`: the model, the device, the limits.
#[utoipa::path(get, path = "/info", tag = "Operations",
    responses((status = 200, description = "The model, the backend serving now, the limits")))]
pub async fn info(State(app): State<AppState>) -> Response {
    let engine = &app.engine;
    let config = engine.config();
    let device = engine.device();
    let active = engine.active_backend();
    Json(json!({
        "model_id": &*app.model_name,
        "served_model_names": [&*app.model_name, format!("<organisation>/{}", &*app.model_name)],
        "model_dtype": match config.dtype {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
            Dtype::Int8 => "int8",
        },
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

/// GET `/openapi.json`: this API's OpenAPI 3 document, generated from its routes.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations",
    responses((status = 200, description = "The OpenAPI document")))]
pub async fn openapi(State(app): State<AppState>) -> Response {
    Json(app.openapi.get().cloned().unwrap_or_default()).into_response()
}

/// An error in the schema of the route family of `path` (OpenAI's under `/v1/`).
fn in_schema(path: &str, error: ApiError) -> Response {
    if path.starts_with("/v1/") {
        error.openai()
    } else {
        error.tei()
    }
}

/// Any other path.
pub async fn not_found(request: Request<Body>) -> Response {
    let path = request.uri().path();
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such route: {path} (GET /openapi.json lists them)"),
    );
    in_schema(path, error)
}

/// A route called with a method it does not serve.
pub async fn method_not_allowed(request: Request<Body>) -> Response {
    let path = request.uri().path();
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not served on {path}", request.method()),
    );
    in_schema(path, error)
}
