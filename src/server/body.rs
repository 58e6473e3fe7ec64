//! Request bodies: read up to a size limit, parsed as JSON into the route's type. Every failure
//! is an [`ApiError`] (413 past the limit, 422 for anything that is not the expected JSON), never
//! a panic or a framework default.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

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
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source = std::error::Error::source(&e);
            let mut over_limit = false;
            while let Some(s) = source {
                over_limit |= s.is::<http_body_util::LengthLimitError>();
                source = s.source();
            }
            if over_limit {
                too_large()
            } else {
                ApiError::validation(format!("could not read the request body: {e}"))
            }
        })?;
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
