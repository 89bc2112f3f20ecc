//! Pages only the embedded run has: a development token issuer standing in for the platform's
//! identity provider, the admin console (`/console`), and the front end's landing page for
//! consent outcomes, which is the console's My Connection with the outcome shown.

mod console;

use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct TokenQuery {
    org: String,
    email: String,
}

/// `GET /_local/token?org=demo&email=admin@contoso.com` → a bearer token signed with the
/// development key the embedded API trusts.
async fn token(Query(q): Query<TokenQuery>) -> impl IntoResponse {
    Json(
        json!({"access_token": o365_local_stack::dev_token(&q.org, &q.email, 3600), "token_type": "Bearer", "expires_in": 3600}),
    )
}

#[derive(Deserialize)]
struct Outcome {
    connection: Option<String>,
}

/// Where the consent callback sends the admin back to (the real front end's page in AWS). The
/// outcome comes from the URL, so only a short code of `[A-Za-z0-9_]` is ever shown.
async fn connection_page(Query(o): Query<Outcome>) -> Response {
    let outcome = o.connection.unwrap_or_default();
    let safe: String = outcome
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    console::page(Some(safe.as_str()).filter(|s| !s.is_empty()))
}

/// `GET /_local/jwks.json`: the development key as the identity provider's JWKS.
async fn jwks() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        o365_local_stack::DEV_JWKS_JSON,
    )
}

pub fn routes(apps: crate::demo::DemoApps) -> Router {
    Router::new()
        .route("/_local/token", get(token))
        .route("/_local/jwks.json", get(jwks))
        // The simulator's app registrations (client ids only), for `scripts/lambda-local`,
        // which gives them credentials the functions read from Secrets Manager.
        .route("/_local/apps", get(move || async move { Json(apps) }))
        .route("/settings/connection", get(connection_page))
        .merge(console::routes())
}
