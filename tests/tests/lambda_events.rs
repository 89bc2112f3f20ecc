//! The sample events in events/ are real API Gateway (HTTP API, payload 2.0, `$default` stage as
//! deployed) events: lambda_http turns them into requests that reach our routes (with
//! placeholder credentials they are refused the right way).

use std::sync::Arc;

use lambda_http::request::LambdaRequest;
use ms_sim::SimConfig;
use o365_e2e::api::{ApiHarness, NoQueue};

fn event(name: &str) -> lambda_http::Request {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let parsed: LambdaRequest = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} is not an API Gateway event: {e}"));
    lambda_http::Request::from(parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_events_reach_the_routes_they_name() {
    let h = ApiHarness::start(SimConfig::default(), Arc::new(NoQueue)).await;
    for (name, path, status, problem) in [
        (
            "user-api-get-integration.json",
            "/v1/integration",
            401,
            "unauthenticated",
        ),
        (
            "consent-callback-accepted.json",
            "/consent/callback",
            400,
            "invalid-consent-request",
        ),
        (
            "consent-callback-declined.json",
            "/consent/callback",
            400,
            "invalid-consent-request",
        ),
    ] {
        let request = event(name);
        assert_eq!(request.uri().path(), path, "{name}");
        let mut call = h.http.request(
            request.method().clone(),
            format!("{}{}", h.base, request.uri().path_and_query().unwrap()),
        );
        for (k, v) in request.headers() {
            if k != "host" {
                call = call.header(k, v);
            }
        }
        let reply = call.send().await.unwrap();
        assert_eq!(reply.status().as_u16(), status, "{name}");
        let html = reply.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html");
        let text = reply.text().await.unwrap();
        if html {
            // A browser (the callback events carry a browser's Accept) gets a page leading back
            // to Connection Settings instead of problem+json.
            assert!(text.contains("Connection Settings"), "{name}: {text}");
        } else {
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                body["type"],
                format!("https://o365-sync.dev/problems/{problem}"),
                "{name}"
            );
        }
    }
}

/// The event for `cargo lambda invoke` against the local backends carries a development token
/// for the embedded run's demo org that stays valid (the development key signs nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_event_is_the_demo_admin_for_decades() {
    let request = event("user-api-get-integration-local.json");
    let bearer = request.headers()["authorization"].to_str().unwrap();
    let token = bearer.strip_prefix("Bearer ").unwrap();
    let [_, claims, _] = token.split('.').collect::<Vec<_>>()[..] else {
        panic!("a JWT")
    };
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["org_id"], "demo");
    assert_eq!(claims["email"], "admin@contoso.com");
    assert!(claims["exp"].as_i64().unwrap() > 4_000_000_000, "{claims}");
    // Signed by the development key: the embedded run's API accepts it.
    let auth = o365_http_api::Authenticator::new(
        o365_http_api::KeySource::rsa_public_pem(
            o365_local_stack::DEV_JWT_PUBLIC_KEY_PEM.as_bytes(),
        )
        .unwrap(),
        o365_http_api::AuthConfig {
            issuer: o365_local_stack::DEV_JWT_ISSUER.into(),
            audience: o365_local_stack::DEV_JWT_AUDIENCE.into(),
            org_claim: "org_id".into(),
            email_claim: "email".into(),
        },
    );
    let identity = auth.verify(Some(bearer)).await.unwrap();
    assert_eq!(identity.org.to_string(), "demo");
}
