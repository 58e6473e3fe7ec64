//! The HTTP server: TEI's and OpenAI's embedding APIs over an [`InferenceEngine`], with
//! `/health` (a real probe kernel), `/metrics` (Prometheus), an optional API key and graceful
//! shutdown (stop accepting, answer what is in flight, then stop the engine).
//!
//! | route | body | answer |
//! |---|---|---|
//! | POST `/embed` | `{inputs: str\|[str], truncate?, normalize?}` | `[[f32]]` |
//! | POST `/v1/embeddings` | `{input: str\|[str], model?, encoding_format?: float\|base64}` | OpenAI's list |
//! | POST `/tokenize` | `{inputs, add_special_tokens?}` | `[[{id, text, special, start, stop}]]` |
//! | POST `/embed_all` | `{inputs, truncate?, truncation_direction?}` | `[[[f32]]]` per token |
//! | POST `/similarity` | `{inputs: {source_sentence, sentences}}` | `[f32]` |
//! | POST `/` | texts (as `/embed`) or a similarity object | embeddings or similarities |
//! | POST `/decode` | `{ids, skip_special_tokens?}` | `[str]` |
//! | GET `/v1/models`, `/v1/models/{id}` | | OpenAI's model list / card |
//! | GET `/openapi.json` | | this API's OpenAPI 3 document |
//! | GET `/info` | | model, device, limits, version |
//! | GET `/health`, `/readyz` | | 200 ready (or degraded), 503 not |
//! | GET `/livez` | | 200 while the process and its step thread live |
//! | GET `/metrics` | | Prometheus text |

mod answer;
mod auth;
mod body;
mod connections;
mod error;
pub mod llm;
mod openai;
mod ops;
mod schema;
mod state;
mod tei;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::InferenceEngine;

pub use connections::{
    default_max_connections, ConnectionLimits, ConnectionMetrics, TIMEOUT_PHASES,
};
pub use error::ApiError;
pub use state::AppState;

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// When set, every route but `/health`, `/readyz`, `/livez` and `/metrics` wants
    /// `Authorization: Bearer <key>` (which also unlocks `/health`'s details).
    pub api_key: Option<String>,
    /// Request bodies larger than this are refused with 413 (2 MB).
    pub payload_limit: usize,
    /// Whether inputs past `max_input_length` are cut when a request does not say (true).
    pub auto_truncate: bool,
    /// Connection timeouts and the connection cap.
    pub connections: ConnectionLimits,
    /// On SIGTERM: how long what is queued is still answered; then the rest is answered 503
    /// and the process exits (30 s, under Kubernetes' default grace period).
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 3000,
            api_key: None,
            payload_limit: 2 * 1024 * 1024,
            auto_truncate: true,
            connections: ConnectionLimits::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// After the engine answered everything, how long connections get to write their last answers.
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// The routes over `engine`.
pub fn router(engine: InferenceEngine, config: &ServerConfig) -> Router {
    let connections = ConnectionMetrics::register(engine.registry());
    router_with(engine, config, connections)
}

/// The OpenAPI document of the routes a server with `config` serves, generated from the routes
/// themselves (each handler is registered with its `#[utoipa::path]` description).
pub fn openapi(engine: InferenceEngine, config: &ServerConfig) -> utoipa::openapi::OpenApi {
    routes(
        state(engine, config, ConnectionMetrics::register_nowhere()),
        config,
    )
    .split_for_parts()
    .1
}

fn state(
    engine: InferenceEngine,
    config: &ServerConfig,
    connections: ConnectionMetrics,
) -> AppState {
    AppState {
        model_name: engine.model().name().into(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        engine,
        payload_limit: config.payload_limit,
        auto_truncate: config.auto_truncate,
        api_key: config.api_key.as_deref().map(Arc::from),
        body_timeout: config.connections.body_timeout,
        connections,
        body_memory: connections::BodyMemory::new(config.connections.body_memory),
        openapi: Arc::default(),
    }
}

/// Every route, with its OpenAPI description: the API routes behind the key (when one is set),
/// the operations routes open.
fn routes(state: AppState, config: &ServerConfig) -> OpenApiRouter {
    let mut api = OpenApiRouter::new()
        .routes(routes!(tei::predict))
        .routes(routes!(tei::embed))
        .routes(routes!(tei::embed_all))
        .routes(routes!(tei::similarity))
        .routes(routes!(tei::tokenize))
        .routes(routes!(tei::decode))
        .routes(routes!(openai::embeddings))
        .routes(routes!(openai::models))
        .routes(routes!(openai::model))
        .routes(routes!(ops::info));
    if let Some(key) = &config.api_key {
        let key: Arc<str> = key.as_str().into();
        api = api.route_layer(axum::middleware::from_fn_with_state(key, auth::require_key));
    }
    OpenApiRouter::with_openapi(api_document())
        .routes(routes!(ops::health))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::livez))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .merge(api)
        .with_state(state)
}

/// The document's title and description (the paths come from the routes).
pub(crate) fn api_document() -> utoipa::openapi::OpenApi {
    let mut document = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("hipinfer")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Sentence embeddings through Hugging Face TEI's and OpenAI's APIs, surviving \
                     GPU faults. Errors: TEI's {error, error_type}; OpenAI's {error: {message, \
                     type, code}} under /v1/.",
                ))
                .build(),
        )
        .build();
    document.paths = utoipa::openapi::path::Paths::new();
    document
}

fn router_with(
    engine: InferenceEngine,
    config: &ServerConfig,
    connections: ConnectionMetrics,
) -> Router {
    let state = state(engine, config, connections);
    let document = state.openapi.clone();
    let (router, api) = routes(state, config).split_for_parts();
    let _ = document.set(serde_json::to_value(&api).unwrap_or_default());
    guarded(router, ApiError::tei)
}

/// `router` with JSON answers for unknown routes and methods, and a handler's panic answered
/// 500 in `render`'s schema (both servers).
pub(crate) fn guarded(router: Router, render: fn(ApiError) -> axum::response::Response) -> Router {
    router
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            move |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                render(ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "backend",
                    "internal error (see the server log)",
                ))
            },
        ))
}

/// Serves the app `make` builds (given the connection metrics, registered in `registry`) on
/// `listener` until `shutdown` completes; returns the connections still draining.
pub(crate) async fn serve_app(
    listener: TcpListener,
    registry: &prometheus::Registry,
    connections: &ConnectionLimits,
    make: impl FnOnce(ConnectionMetrics) -> Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<connections::ConnectionsDraining> {
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(%address, "serving");
    let metrics = ConnectionMetrics::register(registry);
    let app = make(metrics.clone());
    Ok(connections::serve_connections(listener, app, connections.clone(), metrics, shutdown).await)
}

/// Binds `host:port` and serves until `shutdown` completes (see [`serve_on`]).
pub async fn serve(
    engine: InferenceEngine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("could not listen on {}:{}: {e}", config.host, config.port),
            )
        })?;
    serve_on(listener, engine, config, shutdown).await
}

/// Serves on `listener` until `shutdown` completes; then stops accepting connections, answers
/// what is queued for up to `shutdown_grace` (the rest 503 `shutting down`), lets the
/// connections write their last answers, and returns: nothing is left unanswered.
pub async fn serve_on(
    listener: TcpListener,
    engine: InferenceEngine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = serve_app(
        listener,
        engine.registry(),
        &config.connections,
        |metrics| router_with(engine.clone(), &config, metrics),
        shutdown,
    )
    .await?;
    let drained = engine
        .shutdown_within_async(Some(config.shutdown_grace))
        .await;
    if !drained {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "the queue did not drain within the grace period: the rest was answered 503"
        );
    }
    draining.wait(LINGER).await;
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes on SIGTERM or ctrl-c (SIGINT).
///
/// Called inside a tokio runtime, it installs the signal handlers at once, not when the future
/// is first polled, so a signal that arrives while the server is still starting is not lost (and
/// does not kill the process with the default action). Called outside one, it installs them
/// when first polled.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = tokio::runtime::Handle::try_current()
        .is_ok()
        .then(unix_signals);
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = signals.unwrap_or_else(unix_signals);
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(terminate.take()) => {},
                _ = wait(interrupt.take()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing the requests in flight");
    }
}

/// SIGTERM's and SIGINT's streams (`None` where one cannot be installed).
#[cfg(unix)]
fn unix_signals() -> (
    Option<tokio::signal::unix::Signal>,
    Option<tokio::signal::unix::Signal>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    (
        signal(SignalKind::terminate()).ok(),
        signal(SignalKind::interrupt()).ok(),
    )
}
