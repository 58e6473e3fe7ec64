//! API errors: one status per failure kind, rendered in TEI's shape (`{error, error_type}`) or
//! OpenAI's (`{error: {message, type, code}}`). Messages say what the client can fix; internal
//! errors are logged and answered with a generic text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine::EngineError;

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// TEI's `error_type`: `empty`, `validation`, `payload_too_large`, `overloaded`, `backend`,
    /// `deadline`, `unhealthy`, `unauthorized`, `not_found`.
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }

    /// TEI's body.
    pub fn tei(self) -> Response {
        let body = json!({"error": self.message, "error_type": self.kind});
        (self.status, Json(body)).into_response()
    }

    /// OpenAI's body.
    pub fn openai(self) -> Response {
        let kind = match self.status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_server_error() || s == StatusCode::FAILED_DEPENDENCY => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {"message": self.message, "type": kind, "code": self.kind}});
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match &error {
            EngineError::EmptyInput => Self::new(StatusCode::BAD_REQUEST, "empty", message),
            EngineError::Validation { .. } => Self::validation(message),
            EngineError::Overloaded { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
            }
            EngineError::Failed { .. } => {
                Self::new(StatusCode::FAILED_DEPENDENCY, "backend", message)
            }
            EngineError::DeadlineExceeded { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "deadline", message)
            }
            // The reason (which may name programs, files or device errors) is for operators and
            // probes: /health and the log carry it; answers to API calls stay generic.
            EngineError::Unhealthy { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unhealthy",
                "the engine is unhealthy and refuses requests until it recovers",
            ),
            // Nobody is left to read it; 499 as nginx logs a client that closed first.
            EngineError::Cancelled => Self::new(
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "dropped",
                message,
            ),
            EngineError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", message)
            }
            EngineError::Config(_) | EngineError::Model(_) | EngineError::Backend(_) => {
                tracing::error!("request failed inside the engine: {message}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "backend",
                    "internal error (see the server log)",
                )
            }
        }
    }
}
