//! The HTTP API of a language model ([`GenerationEngine`]): OpenAI's completions and chat
//! completions (answered or streamed as server-sent events), its model list, `/tokenize` and
//! `/detokenize`, and the operations routes — on the same connection handling, body limits,
//! API key and graceful shutdown as the embedding server.
//!
//! | route | body | answer |
//! |---|---|---|
//! | POST `/v1/completions` | `{prompt, max_tokens?, temperature?, top_p?, seed?, stop?, stream?, …}` | OpenAI's completion, or SSE |
//! | POST `/v1/chat/completions` | `{messages, max_tokens?, …, stream?, stream_options?}` | OpenAI's chat completion, or SSE |
//! | GET `/v1/models`, `/v1/models/{id}` | | the served model |
//! | POST `/tokenize` | `{prompt}` or `{messages}` | `{tokens, count, max_model_len}` |
//! | POST `/detokenize` | `{tokens}` | `{prompt}` |
//! | GET `/health`, `/readyz` | | 200 ready, 503 not (the device is lost) |
//! | GET `/livez` | | 200 while the scheduler thread lives |
//! | GET `/info`, `/metrics`, `/openapi.json` | | the model and limits; Prometheus; OpenAPI |

mod body;
mod completions;
mod ops;

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::generation::GenerationEngine;

use super::body::read_json;
use super::connections::{BodyMemory, ConnectionMetrics};
use super::error::ApiError;
use super::{auth, ServerConfig, LINGER};

/// What every handler of the language-model API shares.
#[derive(Debug, Clone)]
pub struct LlmState {
    pub engine: GenerationEngine,
    pub model_name: Arc<str>,
    pub created: u64,
    pub api_key: Option<Arc<str>>,
    payload_limit: usize,
    body_timeout: std::time::Duration,
    connections: ConnectionMetrics,
    body_memory: BodyMemory,
    openapi: Arc<std::sync::OnceLock<serde_json::Value>>,
}

impl LlmState {
    /// The body as JSON, parsed by `parse`.
    pub async fn body<T>(
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
        .await?;
        parse(value)
    }

    /// Whether `name` names the served model (its file's name, or a repository id ending in it).
    pub fn serves(&self, name: &str) -> bool {
        let id = &*self.model_name;
        name == id || name.rsplit_once('/').is_some_and(|(_, last)| last == id)
    }

    pub fn no_such_model(&self, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "the model {name:?} does not exist here: this server serves {:?}",
                &*self.model_name
            ),
        )
    }
}

/// The served model's id: its file name without `.gguf`.
fn model_name(engine: &GenerationEngine) -> Arc<str> {
    let path = engine.model().path();
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
        .into()
}

fn state(
    engine: GenerationEngine,
    config: &ServerConfig,
    connections: ConnectionMetrics,
) -> LlmState {
    LlmState {
        model_name: model_name(&engine),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        engine,
        api_key: config.api_key.as_deref().map(Arc::from),
        payload_limit: config.payload_limit,
        body_timeout: config.connections.body_timeout,
        connections,
        body_memory: BodyMemory::new(config.connections.body_memory),
        openapi: Arc::default(),
    }
}

fn routes(state: LlmState, config: &ServerConfig) -> OpenApiRouter {
    let mut api = OpenApiRouter::new()
        .routes(routes!(completions::completions))
        .routes(routes!(completions::chat_completions))
        .routes(routes!(ops::models))
        .routes(routes!(ops::model))
        .routes(routes!(ops::tokenize))
        .routes(routes!(ops::detokenize))
        .routes(routes!(ops::info));
    if let Some(key) = &config.api_key {
        let key: Arc<str> = key.as_str().into();
        api = api.route_layer(axum::middleware::from_fn_with_state(key, auth::require_key));
    }
    let mut document = super::api_document();
    document.info.description = Some(
        "A language model through OpenAI's completions and chat completions (streamed as \
         server-sent events), surviving GPU faults token for token. Errors: OpenAI's \
         {error: {message, type, code}}."
            .into(),
    );
    OpenApiRouter::with_openapi(document)
        .routes(routes!(ops::health))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::livez))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .merge(api)
        .with_state(state)
}

/// The routes over `engine`, with connection metrics in the engine's registry.
pub fn router(engine: GenerationEngine, config: &ServerConfig) -> Router {
    let connections = ConnectionMetrics::register(engine.registry());
    router_with(engine, config, connections)
}

fn router_with(
    engine: GenerationEngine,
    config: &ServerConfig,
    connections: ConnectionMetrics,
) -> Router {
    let state = state(engine, config, connections);
    let document = state.openapi.clone();
    let (router, api) = routes(state, config).split_for_parts();
    let _ = document.set(serde_json::to_value(&api).unwrap_or_default());
    super::guarded(router, ApiError::openai)
}

/// Serves `engine` on `listener` until `shutdown` completes; then stops accepting, lets the
/// live generations finish, and returns.
pub async fn serve_on(
    listener: TcpListener,
    engine: GenerationEngine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = super::serve_app(
        listener,
        engine.registry(),
        &config.connections,
        |metrics| router_with(engine.clone(), &config, metrics),
        shutdown,
    )
    .await?;
    let engine_done = engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine_done.shutdown()).await;
    draining.wait(LINGER).await;
    tracing::info!("stopped");
    Ok(())
}
