//! Request bodies: read up to a size limit within the body timeout, then parsed as JSON. Every
//! failure is an [`ApiError`] (413 past the limit, 408 past the body timeout, 422 for anything
//! that is not JSON), never a panic or a framework default.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::connections::{BodyMemory, ConnectionMetrics};
use super::error::ApiError;

/// Bodies up to this many times the limit are read (and dropped) before the 413 is sent.
const DRAIN_FACTOR: usize = 4;

/// Reads `request`'s body (at most `limit` bytes, within `timeout`, within the memory all bodies
/// may hold together) as JSON.
pub async fn read_json(
    request: Request<Body>,
    limit: usize,
    timeout: Duration,
    metrics: &ConnectionMetrics,
    memory: &BodyMemory,
) -> Result<Value, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A client that asks before sending (`Expect: 100-continue`) is told no before it sends.
    let expects = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects && declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // A body somewhat over the limit is read to its end and dropped, so the client finishes
    // sending and reads the 413 (closing on it mid-upload makes clients see a broken pipe
    // instead); one far over it is refused before reading, and the connection closed.
    let drain = limit.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain) {
        return Err(too_large());
    }
    let no_room = || {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "the server is receiving too many request bodies at once; retry later",
        )
    };
    let mut account = memory.account();
    let read = async {
        let mut body = request.into_body();
        // Nothing is held before bytes arrive (a client that declares 2 MiB and sends nothing
        // holds nothing); then the declared size at once, so the buffer never doubles — and
        // every byte held counts against the memory all bodies share.
        let mut bytes: Vec<u8> = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::validation(format!("could not read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen <= limit {
                    let wanted = bytes.len() + data.len();
                    if wanted > bytes.capacity() {
                        let target = declared.unwrap_or(0).clamp(wanted, limit);
                        if !memory.grow(&mut account, target - bytes.capacity()) {
                            return Err(no_room());
                        }
                        bytes.reserve_exact(target - bytes.len());
                    }
                    bytes.extend_from_slice(&data);
                } else if seen > drain {
                    return Err(too_large());
                }
            }
        }
        if seen > limit {
            return Err(too_large());
        }
        Ok(bytes)
    };
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(bytes) => bytes?,
        Err(_) => {
            metrics.timed_out("body");
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {timeout:?}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::validation(format!(
            "malformed JSON: {e} (the body must be a JSON object)"
        ))
    })
}
