//! The optional API key: every route but `/health` and `/metrics` wants
//! `Authorization: Bearer <key>`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;

/// The key of an `Authorization: Bearer <key>` header (the scheme is case-insensitive, as
/// RFC 7235 says).
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

/// Whether `headers` carry `key`.
pub fn authorized(headers: &axum::http::HeaderMap, key: &str) -> bool {
    bearer(headers).is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
}

/// Lets the request through when it carries the key.
pub async fn require_key(
    State(key): State<std::sync::Arc<str>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let given = bearer(request.headers());
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

/// Compares without stopping at the first difference — nor at a length mismatch: every byte of
/// the longer input is visited — so timing reveals neither the key nor its length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let longest = a.len().max(b.len());
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        difference |= std::hint::black_box(x ^ y);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_match_and_any_difference_does_not() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // A prefix of the key padded with what the shorter side reads as is still no match.
        assert!(!constant_time_eq(b"ab\xff", b"ab"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut headers = axum::http::HeaderMap::new();
        for value in ["Bearer k1", "bearer k1", "BEARER   k1 "] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(authorized(&headers, "k1"), "{value}");
        }
        headers.insert(header::AUTHORIZATION, "Basic k1".parse().unwrap());
        assert!(!authorized(&headers, "k1"));
    }
}
