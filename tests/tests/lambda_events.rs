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
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(
            body["type"],
            format!("https://o365-sync.dev/problems/{problem}"),
            "{name}"
        );
    }
}
