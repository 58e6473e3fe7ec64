//! Request bodies: read up to a size limit, parsed as JSON into the route's type. Every failure
//! is an [`ApiError`] (413 past the limit, 422 for anything that is not the expected JSON), never
//! a panic or a framework default.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Bodies up to this many times the limit are read (and dropped) before the 413 is sent.
const DRAIN_FACTOR: usize = 4;

/// Reads `request`'s body (at most `limit` bytes) and parses it as `T`.
pub async fn read_json<T: DeserializeOwned>(
    request: Request<Body>,
    limit: usize,
) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A body somewhat over the limit is read to its end and dropped, so the client finishes
    // sending and reads the 413 (closing on it mid-upload makes clients see a broken pipe
    // instead); one far over it is refused before reading, and the connection closed.
    let drain = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain) {
        return Err(too_large());
    }
    let mut body = request.into_body();
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::validation(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                bytes.extend_from_slice(&data);
            } else if seen > drain {
                return Err(too_large());
            }
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON"
            }
            _ => "invalid request",
        };
        ApiError::validation(format!("{what}: {e}"))
    })
}
