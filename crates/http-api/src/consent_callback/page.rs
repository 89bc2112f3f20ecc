//! What a person sees when the callback cannot go on. A browser that follows a used or expired
//! consent link would otherwise show raw problem+json; it gets a small page that says what
//! happened and leads back to the configured front end (the only place we ever link to). API
//! clients keep problem+json.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::FrontendConfig;

/// The page loads nothing and runs nothing: its one style block is inline.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the client ranks HTML above JSON (browsers send `text/html,…,*/*;q=0.8`). A bare
/// `*/*`, as curl and HTTP libraries send, is not a preference for HTML.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "application/json" | "application/problem+json" => json = json.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > json
}

/// A used, expired or forged consent link.
pub fn link_used_or_expired(frontend: &FrontendConfig) -> Response {
    render(
        StatusCode::BAD_REQUEST,
        "This sign-in link was already used or has expired",
        "Each link to Microsoft's sign-in and consent pages works once and only for a short time. Nothing was changed.",
        frontend,
    )
}

/// The callback failed on our side or Microsoft's (the problem+json clients get says which).
pub fn could_not_finish(status: StatusCode, frontend: &FrontendConfig) -> Response {
    render(
        status,
        "We could not finish connecting",
        "Our service or Microsoft's did not answer as expected. Wait a minute, then try again.",
        frontend,
    )
}

fn render(status: StatusCode, title: &str, what: &str, frontend: &FrontendConfig) -> Response {
    // The connection page itself, without an outcome: this page already said what happened.
    let back = escape(&format!(
        "{}{}",
        frontend.origin(),
        frontend.connection_path
    ));
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;\
         margin:4rem auto;padding:0 1rem;color:#1b1b1b}}a{{color:#0a5}}</style></head><body>\
         <h1>{title}</h1><p>{what}</p>\
         <p>Start again from <strong>Connection Settings → Activate</strong>.</p>\
         <p><a href=\"{back}\">Go to Connection Settings</a></p></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// The front end's URL is configuration, but it still goes into an attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn browsers_get_html_and_api_clients_problem_json() {
        let chromium =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(prefers_html(&accept(chromium)));
        assert!(prefers_html(&accept("text/html")));
        assert!(!prefers_html(&HeaderMap::new()));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&accept("application/json")));
        assert!(!prefers_html(&accept(
            "application/problem+json, text/html;q=0.5"
        )));
        assert!(!prefers_html(&accept("text/html;q=0")));
    }
}
