//! The OpenAPI 3 document of every route facteur answers, generated from
//! the handlers' `#[utoipa::path]` annotations and the types' `ToSchema`
//! derives, and served at `GET /openapi.json`.
//!
//! `scripts/schemathesis.sh` runs schemathesis against a running facteur
//! with this document: no generated request may get a 5xx, and every
//! response must match the schema documented for its status. A route added
//! to a router belongs in [`ApiDoc`]'s `paths` too.

use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "facteur",
        description = "Email delivery and tracking service for e-CRM: REST in, durable spool, \
            SMTP out, tracking, bounces.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        super::messages::send,
        super::messages::get_message,
        crate::inbound::api::receive,
        crate::tracking::endpoints::open,
        crate::tracking::endpoints::click,
        crate::tracking::endpoints::unsubscribe_page,
        crate::tracking::endpoints::unsubscribe_one_click,
        super::healthz,
        super::readyz,
        super::metrics,
        serve,
    ),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail)),
    tags(
        (name = "messages", description = "Sending messages and reading their state"),
        (name = "inbound", description = "Mail that comes back: bounces, complaints, replies"),
        (name = "tracking", description = "Public endpoints in sent mail: open pixel, click \
            redirect, unsubscribe (no API key)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the `/v1` operations require.
struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3 document of the API", body = Object)))]
pub async fn serve() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route_with_bearer_on_v1() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serialises");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/v1/messages", &["post"][..]),
            ("/v1/messages/{id}", &["get"]),
            ("/v1/inbound", &["post"]),
            ("/t/o/{token}", &["get"]),
            ("/t/c/{token}", &["get"]),
            ("/u/{token}", &["get", "post"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
            ("/openapi.json", &["get"]),
        ] {
            for m in methods {
                let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[m];
                assert!(op.is_object(), "{m} {path} missing");
                let secured = op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
                assert_eq!(secured, path.starts_with("/v1/"), "security of {m} {path}");
            }
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
