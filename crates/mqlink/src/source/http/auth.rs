//! Bearer-token check for the ingest and protected ops routes: `Authorization: Bearer`
//! or `?token=` (EventSource cannot send headers), compared in constant time against
//! every configured token.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, App};

/// Constant-time comparison, so response timing does not reveal how much of a token
/// matched (only whether the lengths differ). `subtle` is made for this: its comparison is
/// kept out of the optimizer's reach, which a hand-written loop is not.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

pub(super) async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    if app.opts.tokens.is_empty() {
        return next.run(req).await;
    }
    // EventSource cannot send headers, so `?token=` is accepted too (for /v1/stream).
    let from_query = req
        .uri()
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token"))
        .map(|(_, v)| v.into_owned());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or(from_query);
    let ok = presented.as_deref().is_some_and(|p| {
        // Check every token, so timing does not reveal which one matched.
        app.opts
            .tokens
            .iter()
            .fold(false, |acc, t| acc | ct_eq(p.as_bytes(), t.as_bytes()))
    });
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token (Authorization: Bearer <token>)",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_is_a_compare() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
    }
}
