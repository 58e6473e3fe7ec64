//! The optional API key: every route but `/health` and `/metrics` wants
//! `Authorization: Bearer <key>`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;

/// Lets the request through when it carries the key.
pub async fn require_key(
    State(key): State<std::sync::Arc<str>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong API key").tei(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <key>`",
        )
        .tei(),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
