//! What every handler shares, and how a handler reads its body.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;

use crate::engine::InferenceEngine;

use super::body::read_json;
use super::connections::{BodyMemory, ConnectionMetrics};
use super::error::ApiError;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: InferenceEngine,
    pub payload_limit: usize,
    pub auto_truncate: bool,
    /// The served model's id (`/v1/models`, the `model` of OpenAI requests).
    pub model_name: Arc<str>,
    /// When the served model was loaded (Unix seconds, OpenAI's `created`).
    pub created: u64,
    /// The API key, when one is required (it also unlocks the details of `/health`).
    pub api_key: Option<Arc<str>>,
    /// A body not received within this long is answered 408.
    pub body_timeout: std::time::Duration,
    pub connections: ConnectionMetrics,
    /// What request bodies being received may hold together.
    pub body_memory: BodyMemory,
    /// The OpenAPI document, as JSON (made from the routes once they are all registered).
    pub openapi: Arc<std::sync::OnceLock<serde_json::Value>>,
}

impl AppState {
    /// Counts a request the server refused before it reached the engine (unreadable, too large,
    /// empty or invalid) in the engine's request metrics, as the engine counts its own refusals.
    pub fn rejected(&self, error: ApiError) -> ApiError {
        let metrics = self.engine.metrics();
        metrics.requests.inc();
        metrics.failed(match error.kind {
            "empty" | "payload_too_large" => error.kind,
            _ => "validation",
        });
        error
    }

    /// The body as JSON, parsed into the route's type by `parse`; refusals are counted.
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
        .await
        .map_err(|e| self.rejected(e))?;
        parse(value).map_err(|e| self.rejected(e))
    }

    /// Whether `name` (an OpenAI request's `model`) names the served model: its id, or a
    /// Hugging Face repository id ending in it (`sentence-transformers/all-MiniLM-L6-v2`).
    pub fn serves(&self, name: &str) -> bool {
        let id = &*self.model_name;
        name == id || name.rsplit_once('/').is_some_and(|(_, last)| last == id)
    }
}
