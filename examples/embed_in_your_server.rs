//! Embedding hipinfer in your own axum service: your routes, your Prometheus registry (the
//! engine registers its request and GPU-retry metrics in it), the engine's answers and retry
//! reports in your own response shape.
//!
//! ```sh
//! cargo run --release --example embed_in_your_server        # listens on 127.0.0.1:8080
//! curl -s localhost:8080/similar -H 'content-type: application/json' \
//!      -d '{"a": "A cat sits on the mat.", "b": "A kitten rests on a rug."}'
//! curl -s localhost:8080/metrics | grep hipinfer_request
//! ```

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hipinfer::engine::{EmbedRequest, EngineConfig, InferenceEngine};
use prometheus::{IntCounter, Registry, TextEncoder};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Clone)]
struct App {
    engine: InferenceEngine,
    registry: Registry,
    comparisons: IntCounter,
}

#[derive(Deserialize)]
struct Pair {
    a: String,
    b: String,
}

/// Your route: the cosine similarity of two texts, with what the engine retried on the way.
async fn similar(State(app): State<App>, Json(pair): Json<Pair>) -> (StatusCode, Json<Value>) {
    let request = EmbedRequest::new([pair.a, pair.b]); // unit-length embeddings
    match app.engine.embed_async(request).await {
        Ok(answer) => {
            app.comparisons.inc();
            let (a, b) = (&answer.embeddings[0], &answer.embeddings[1]);
            let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let body = json!({"cosine": cosine, "retries": answer.retry.retries,
                              "failed_steps": answer.retry.failed_steps});
            (StatusCode::OK, Json(body))
        }
        // Every engine error says what the client can do: map it to your own statuses.
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": error.to_string(), "kind": error.kind()})),
        ),
    }
}

async fn metrics(State(app): State<App>) -> String {
    let mut text = String::new();
    TextEncoder::new()
        .encode_utf8(&app.registry.gather(), &mut text)
        .unwrap_or_default();
    text
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // With HIPINFER_ISOLATION=subprocess the engine re-runs this program as its GPU worker:
    // this call serves as that worker (and exits) when it is one, and returns at once otherwise.
    hipinfer::isolation::run_worker_if_requested();
    // One registry for your metrics and the engine's.
    let registry = Registry::new();
    let comparisons = IntCounter::new("myapp_comparisons_total", "Pairs compared")?;
    registry.register(Box::new(comparisons.clone()))?;
    let config = EngineConfig {
        registry: Some(registry.clone()),
        ..EngineConfig::from_env()? // HIPINFER_MODEL, HIPINFER_BACKEND, HIPINFER_RETRY_*, …
    };
    let engine = InferenceEngine::new(config)?; // loads the model, opens the backend
    let app = App {
        engine: engine.clone(),
        registry,
        comparisons,
    };
    let router = Router::new()
        .route("/similar", post(similar))
        .route("/metrics", get(metrics))
        .with_state(app);
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
        let shutdown = hipinfer::server::shutdown_signal(); // handlers installed now
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        engine.shutdown_async().await; // answer what is queued before exiting
        Ok(())
    })
}
