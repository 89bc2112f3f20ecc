//! Pages only the embedded run has: a development token issuer standing in for the platform's
//! identity provider, and the front end's landing page for consent outcomes.

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json};
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

/// Where the consent callback sends the admin back to (the real front end's page in AWS).
async fn connection_page(Query(o): Query<Outcome>) -> impl IntoResponse {
    let outcome = o.connection.unwrap_or_default();
    let safe: String = outcome
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (
        StatusCode::OK,
        Html(format!(
            "<!doctype html><title>Connection Settings</title><h1>Connection Settings</h1><p id=\"outcome\">{safe}</p>"
        )),
    )
}

pub fn routes() -> Router {
    Router::new()
        .route("/_local/token", get(token))
        .route("/settings/connection", get(connection_page))
}
