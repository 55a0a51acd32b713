//! `POST /v1/inbound`: a raw RFC 5322 message (`Content-Type:
//! message/rfc822`) through the same pipeline as the SMTP listener,
//! behind the API's authentication. Answers 200 with the
//! [`Outcome`](super::pipeline::Outcome) as JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::pipeline::{self, Via};
use super::Inbound;
use crate::api::error::ApiError;

/// The route, with the API's authentication; merge it into the API router.
pub fn router(inbound: Arc<Inbound>) -> Router {
    let app = inbound.app.clone();
    Router::new()
        .route("/v1/inbound", post(receive))
        .route_layer(middleware::from_fn_with_state(
            app,
            crate::api::authenticate,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(inbound)
}

/// `POST /v1/inbound`: classify a returned or customer message and act on it.
#[utoipa::path(post, path = "/v1/inbound", tag = "inbound",
    request_body(content = String, content_type = "message/rfc822", description = "A raw RFC 5322 message"),
    responses((status = 200, description = "What was done: kind, message_id, route, actions"),
        (status = 400, body = crate::api::error::ErrorBody), (status = 401, body = crate::api::error::ErrorBody),
        (status = 413, body = crate::api::error::ErrorBody), (status = 415, body = crate::api::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn receive(State(inbound): State<Arc<Inbound>>, req: Request) -> Response {
    match handle(&inbound, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(inbound: &Inbound, req: Request) -> Result<Response, ApiError> {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime != "message/rfc822" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be message/rfc822",
        ));
    }
    let limit = inbound.app.cfg.inbound.max_message_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            format!("message is over inbound.max_message_bytes ({limit} bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let body: Body = req.into_body();
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_message",
            "the body must be an RFC 5322 message",
        ));
    }
    let outcome = pipeline::process(inbound, raw.to_vec(), None, Via::Rest)
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::OK, Json(outcome)).into_response())
}
