//! The router: ingest routes and the ops routes, the protected ones behind [`super::auth`],
//! JSON 404/405 answers and the whole-request timeout.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::post;

use super::auth::auth;
use super::ingest::{post_event, post_events, post_publish};
use super::{ApiError, App, HttpOptions};
use crate::observe::http::OpsRoutes;
use crate::publish::ingest::Ingest;

/// Build the router: the ingest routes, and the ops routes `ops` (see
/// `observe::http::routes`) with their protected part behind the same token check.
pub(crate) fn router(ingest: Ingest, opts: HttpOptions, ops: OpsRoutes) -> Router {
    let timeout = opts.request_timeout;
    let app = App {
        ingest,
        opts: Arc::new(opts),
    };
    let api = Router::new()
        .route("/v1/events/{event}", post(post_event))
        .route("/v1/events", post(post_events))
        .route("/v1/publish", post(post_publish))
        .with_state(app.clone())
        .merge(ops.protected)
        .route_layer(middleware::from_fn_with_state(app, auth));
    Router::new()
        .merge(api)
        .merge(ops.open)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed for this endpoint",
            )
        })
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("request not completed within {timeout:?}"),
                    )
                    .into_response(),
                }
            },
        ))
}
