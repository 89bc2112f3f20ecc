//! The HTTP edge: the user-management API and the admin-consent callback as axum routers. The
//! Lambda functions serve them through `lambda_http`; the local runner serves the very same
//! routers on a socket.

pub mod auth;
mod consent_callback;
pub mod dto;
mod erasure;
mod extract;
mod mail;
mod policy;
pub mod problem;
mod route_table;
mod routes;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};

use o365_domain::service::Services;

pub use auth::{AuthConfig, Authenticator, KeySource};

/// Largest JSON body the API takes (a 99-row bulk change is ~10 KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Request headers beyond this are refused (431): API Gateway's HTTP API allows 10 KB of
/// request line and headers, so the local server answers as the deployed one would.
pub const MAX_HEADER_BYTES: usize = 10 * 1024;

/// The existing front end: the only place we ever redirect to, and the only CORS origin.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    origin: String,
    connection_path: String,
}

impl FrontendConfig {
    /// `origin` is `scheme://host[:port]` with nothing after it.
    pub fn new(origin: &str, connection_path: &str) -> Result<Self, String> {
        let origin = origin.trim_end_matches('/');
        let (scheme, rest) = origin
            .split_once("://")
            .ok_or("the front-end origin needs a scheme (https://…)")?;
        if !matches!(scheme, "https" | "http")
            || rest.is_empty()
            || rest.contains(['/', '?', '#', '@'])
        {
            return Err(format!(
                "'{origin}' is not an origin (scheme://host[:port])"
            ));
        }
        if !connection_path.starts_with('/') || connection_path.starts_with("//") {
            return Err("the front-end connection path must start with a single '/'".into());
        }
        Ok(Self {
            origin: origin.to_owned(),
            connection_path: connection_path.to_owned(),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn connection_page(&self, outcome: &str) -> String {
        format!(
            "{}{}?connection={outcome}",
            self.origin, self.connection_path
        )
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub services: Services,
    pub auth: Arc<Authenticator>,
    pub frontend: Arc<FrontendConfig>,
}

/// The OpenAPI 3.1 document, generated from the same definitions as the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    route_table::documented().split_for_parts().1
}

/// The user-management API (`/v1/…`, `/openapi.json`), with CORS for the front end only.
pub fn user_api(state: ApiState) -> Router {
    let router = route_table::served();
    // Built on first request: a Lambda serving the front end never pays for it at start.
    let spec = Arc::new(OnceLock::new());
    let cors = CorsLayer::new()
        // A list, not a constant: other origins get no CORS header at all.
        .allow_origin(AllowOrigin::list(
            HeaderValue::from_str(state.frontend.origin()).ok(),
        ))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::ETAG]);
    router
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(spec.get_or_init(openapi).clone()) }),
        )
        .fallback(|| async {
            problem::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such route",
            )
        })
        .method_not_allowed_fallback(|| async {
            problem::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not take that method; /openapi.json lists the ones it does",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(limit_headers))
        .layer(axum::middleware::from_fn(access_log))
        .layer(cors)
        .with_state(state)
}

/// The public consent callback (`/consent/callback`).
pub fn consent_callback(state: ApiState) -> Router {
    Router::new()
        .route("/consent/callback", get(consent_callback::consent_callback))
        .layer(axum::middleware::from_fn(limit_headers))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// Oversized request headers are a problem+json 431, never a bare status.
async fn limit_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return axum::response::IntoResponse::into_response(problem::ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            format!(
                "the request's headers exceed {MAX_HEADER_BYTES} bytes; send fewer or shorter headers (cookies included)"
            ),
        ));
    }
    next.run(request).await
}

/// One line per request: method, route (the pattern, never the raw path or query: those can
/// carry codes, states and emails), status, latency and API Gateway's trace id. No headers, no
/// bodies.
async fn access_log(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".into());
    let trace = request
        .headers()
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    tracing::info!(
        target: "access",
        method = %method,
        route,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
        trace_id = trace.as_deref(),
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_end_is_an_origin_and_nothing_else() {
        let f = FrontendConfig::new("https://app.example.com/", "/settings/connection").unwrap();
        assert_eq!(
            f.connection_page("connected"),
            "https://app.example.com/settings/connection?connection=connected"
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "javascript://x",
            "https://user@evil.com",
        ] {
            assert!(FrontendConfig::new(bad, "/x").is_err(), "{bad}");
        }
        assert!(FrontendConfig::new("https://a.example", "//evil.com").is_err());
    }
}
