//! The embedded run's admin console under `/console`: one static page and a few plain JavaScript
//! modules (no framework, no build step) that get a development token from `/_local/token` and
//! call the public `/v1` API with it, as the real front end does with the platform's token. The
//! consent callback's landing page (`/settings/connection`) is this page with the outcome shown.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../console/index.html");

/// Where the landing section goes in `index.html`.
const LANDING_MARKER: &str = "<!--landing-->";

/// Every file the page loads, by name under `/console/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/dom.js"),
    ),
    (
        "connection.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/connection.js"),
    ),
    (
        "users.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/users.js"),
    ),
    (
        "runs.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/runs.js"),
    ),
    (
        "mail.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/mail.js"),
    ),
];

/// Scripts only from our own origin, and nothing but our own origin to talk to. Inline styles
/// are allowed because a captured message renders in a `srcdoc` frame, which inherits this
/// policy: the mail's own styling needs them (its frame has no scripts and loads nothing).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The console page; with `outcome` (already reduced to `[A-Za-z0-9_]`) it is the landing page
/// that says how connecting ended.
pub fn page(outcome: Option<&str>) -> Response {
    let landing = outcome.map(landing).unwrap_or_default();
    let html = INDEX.replacen(LANDING_MARKER, &landing, 1);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

/// The outcome code as `#outcome` (read by tests/browser/consent.test.mjs) and a sentence a
/// person can act on; My Connection, loaded below it, has the cause and remediation.
fn landing(outcome: &str) -> String {
    let (kind, summary) = match outcome {
        "connected" => (
            "ok",
            "Connected. Mail of every user whose sync is on is captured from now on.",
        ),
        "verifying" => (
            "pending",
            "Consent was granted; Microsoft is still confirming it. This settles by itself within minutes.",
        ),
        _ => (
            "error",
            "Connecting did not finish. My Connection below says why and what to do.",
        ),
    };
    format!(
        "<section id=\"landing\" class=\"landing {kind}\" aria-live=\"polite\">\
         <h2>Connection result</h2><p id=\"outcome\">{outcome}</p>\
         <p id=\"outcome-summary\">{summary}</p></section>"
    )
}

async fn index() -> Response {
    page(None)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

pub fn routes() -> Router {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/{file}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page links and every module a module imports is one we serve (a typo
    /// would only show as a blank console in a browser).
    #[test]
    fn every_file_the_console_loads_is_served() {
        let sources = std::iter::once(INDEX).chain(ASSETS.iter().map(|(_, _, body)| *body));
        let mut seen = 0;
        for source in sources {
            for prefix in ["\"/console/", "'./"] {
                for (i, _) in source.match_indices(prefix) {
                    let name: String = source[i + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                        .collect();
                    assert!(
                        ASSETS.iter().any(|(n, _, _)| *n == name),
                        "{name} is loaded but not served"
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen >= ASSETS.len(), "every asset is loaded from somewhere");
    }

    #[test]
    fn the_landing_page_shows_the_outcome_once() {
        assert_eq!(INDEX.matches(LANDING_MARKER).count(), 1);
        let response = page(Some("consent_declined"));
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(landing("connected").contains("<p id=\"outcome\">connected</p>"));
    }
}
