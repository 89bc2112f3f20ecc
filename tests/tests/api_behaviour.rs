//! What the front end relies on beyond authorization: problem+json for bad input with nothing
//! written, optimistic concurrency with ETag/If-Match, the org rules, bulk switches, pagination,
//! CORS, and an OpenAPI document that matches the routes.

use std::sync::Arc;

use ms_sim::SimConfig;
use o365_e2e::api::{ApiHarness, FRONTEND, NoQueue};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PRIMARY: &str = "globaladmin@contoso.com";

async fn harness() -> ApiHarness {
    let h = ApiHarness::start(SimConfig::default(), Arc::new(NoQueue)).await;
    h.org("acme").await;
    h
}

fn problem(body: &Value, slug: &str) {
    assert_eq!(
        body["type"],
        format!("https://o365-sync.dev/problems/{slug}"),
        "{body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string() && body["status"].is_number(),
        "{body}"
    );
}

async fn audit_len(h: &ApiHarness) -> usize {
    h.as_user("acme", PRIMARY, "GET", "/v1/audit?limit=200", None)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let h = harness().await;
    let t = h.token("acme", PRIMARY);
    let before = audit_len(&h).await;

    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/users",
            Some(json!({"email": "not-an-email", "display_name": "", "role": "owner"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    problem(&r.body, "validation-failed");
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "display_name", "role"]);

    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/users",
            Some(json!({"email": "a@contoso.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "missing fields");
    let r = h.as_user("acme", PRIMARY, "POST", "/v1/users", Some(json!({"email": "a@contoso.com", "display_name": "A", "role": "member", "extra": 1}))).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused, not ignored"
    );

    let raw = h
        .http
        .post(format!("{}/v1/users", h.base))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(raw.headers()["content-type"], "application/problem+json");
    let raw = h
        .http
        .post(format!("{}/v1/users", h.base))
        .bearer_auth(&t)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge =
        json!({"email": "a@contoso.com", "display_name": "x".repeat(100_000), "role": "member"});
    let r = h
        .as_user("acme", PRIMARY, "POST", "/v1/users", Some(huge))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    problem(&r.body, "too-large");
    let cookie = "c=".to_owned() + &"x".repeat(12_000);
    let r = h
        .call("GET", "/v1/users", Some(&t), None, &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    problem(&r.body, "headers-too-large");
    let long_name =
        json!({"email": "a@contoso.com", "display_name": "x".repeat(300), "role": "member"});
    let r = h
        .as_user("acme", PRIMARY, "POST", "/v1/users", Some(long_name))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["code"], "too_long");

    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/users?limit=0", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/users?status=happy", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A query value of the wrong type is problem+json, not axum's plain text.
    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/audit?limit=-1", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    // A crafted page token naming the right partition but not a key DynamoDB accepts is the
    // caller's bad input, never an outage.
    for token in [
        r#"{"pk":"ORG#acme"}"#,
        r#"{"pk":"ORG#acme","sk":"USER#x","extra":"y"}"#,
    ] {
        use base64::Engine;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
        let r = h
            .as_user(
                "acme",
                PRIMARY,
                "GET",
                &format!("/v1/users?after={token}"),
                None,
            )
            .await;
        assert!(
            r.status.is_client_error(),
            "{token}: {} {:?}",
            r.status,
            r.body
        );
        problem(&r.body, "validation-failed");
    }
    // A method the route does not take is problem+json too.
    let r = h
        .as_user("acme", PRIMARY, "PUT", "/v1/integration", None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    problem(&r.body, "method-not-allowed");
    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/users/nobody@contoso.com", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    problem(&r.body, "not-found");
    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/nothing-here", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    problem(&r.body, "not-found");
    assert_eq!(
        audit_len(&h).await,
        before,
        "no refused request wrote anything"
    );

    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/users",
            Some(json!({"email": "ADELE@contoso.com", "display_name": "Dup", "role": "member"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "emails compare case-insensitively"
    );
    problem(&r.body, "already-exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_travel_as_etags_and_stale_ones_conflict() {
    let h = harness().await;
    let t = h.token("acme", PRIMARY);
    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/integration", None)
        .await;
    assert_eq!(r.headers["etag"], "\"1\"");
    let r = h
        .call(
            "PATCH",
            "/v1/integration/settings",
            Some(&t),
            Some(json!({"use_service_account": true})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
    problem(&r.body, "version-required");
    let r = h
        .call(
            "PATCH",
            "/v1/integration/settings",
            Some(&t),
            Some(json!({"use_service_account": true})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["etag"], "\"2\"");
    let stale = h
        .call(
            "PATCH",
            "/v1/integration/settings",
            Some(&t),
            Some(json!({"read_only": true})),
            &[("if-match", "\"1\"")],
        )
        .await;
    // A conditional request whose If-Match no longer matches: 412 (RFC 9110).
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    problem(&stale.body, "version-conflict");
    // The same stale version sent in the body is a plain conflict.
    let stale_body = h
        .call(
            "PATCH",
            "/v1/integration/settings",
            Some(&t),
            Some(json!({"read_only": true, "version": 1})),
            &[],
        )
        .await;
    assert_eq!(stale_body.status, StatusCode::CONFLICT);
    problem(&stale_body.body, "version-conflict");

    let user = h
        .as_user("acme", PRIMARY, "GET", "/v1/users/adele@contoso.com", None)
        .await;
    let etag = user.headers["etag"].to_str().unwrap().to_owned();
    let r = h
        .call(
            "PATCH",
            "/v1/users/adele@contoso.com",
            Some(&t),
            Some(json!({"role": "admin"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["role"], "admin");
    let r = h
        .call(
            "DELETE",
            "/v1/users/adele@contoso.com",
            Some(&t),
            None,
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::PRECONDITION_FAILED,
        "the delete carries the version before the role change"
    );
    let r = h
        .call("DELETE", "/v1/users/adele@contoso.com", Some(&t), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_REQUIRED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_and_last_admin_rules_over_http() {
    let h = harness().await;
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "PATCH",
            &format!("/v1/users/{PRIMARY}"),
            Some(json!({"role": "member", "version": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    problem(&r.body, "primary-locked");
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "PUT",
            "/v1/primary",
            Some(json!({"email": "adele@contoso.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    problem(&r.body, "primary-must-be-admin");
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "PUT",
            "/v1/primary",
            Some(json!({"email": "admin@contoso.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["is_primary"], true);
    // The old Primary is an ordinary admin now; the new one cannot be removed.
    let me = h.as_user("acme", PRIMARY, "GET", "/v1/me", None).await;
    assert_eq!(me.body["is_primary"], false);
    let r = h
        .call(
            "DELETE",
            "/v1/users/admin@contoso.com",
            Some(&h.token("acme", PRIMARY)),
            None,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    problem(&r.body, "primary-locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_sync_switches_report_each_bad_row_and_apply_nothing() {
    let h = harness().await;
    let body = json!({"changes": [
        {"email": "adele@contoso.com", "sync_enabled": true},
        {"email": "ghost@contoso.com", "sync_enabled": true},
        {"email": "not an email", "sync_enabled": true},
    ]});
    let r = h
        .as_user("acme", PRIMARY, "POST", "/v1/users/sync", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["changes[2].email"], "syntax first");
    let body = json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": true}, {"email": "ghost@contoso.com", "sync_enabled": true}]});
    let r = h
        .as_user("acme", PRIMARY, "POST", "/v1/users/sync", Some(body))
        .await;
    assert_eq!(r.body["errors"][0]["field"], "changes[1].email");
    assert_eq!(r.body["errors"][0]["code"], "unknown_user");
    let adele = h
        .as_user("acme", PRIMARY, "GET", "/v1/users/adele@contoso.com", None)
        .await;
    assert_eq!(adele.body["sync_enabled"], false, "all or nothing");

    let body = json!({"changes": [{"email": "adele@contoso.com", "sync_enabled": true}, {"email": "admin@contoso.com", "sync_enabled": true}]});
    let r = h
        .as_user("acme", PRIMARY, "POST", "/v1/users/sync", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The org's service account is off: switched-on users say why nothing syncs, not a
    // hopeful "never_synced".
    assert!(
        r.body["items"].as_array().unwrap().iter().all(|u| {
            u["sync_enabled"] == true
                && u["status"] == "error"
                && u["error"]["code"] == "service_account_off"
                && u["error"]["remediation"]
                    .as_str()
                    .is_some_and(|t| t.contains("Use Service Account"))
        }),
        "{:?}",
        r.body
    );
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "GET",
            "/v1/users?status=never_synced",
            None,
        )
        .await;
    // The filter goes by what users show: the two read as errors, so they are not listed here
    // but under `error`.
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0, "{:?}", r.body);
    let r = h
        .as_user("acme", PRIMARY, "GET", "/v1/users?status=error", None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{:?}", r.body);
    let rows: Vec<Value> = (0..100)
        .map(|i| json!({"email": format!("u{i}@contoso.com"), "sync_enabled": true}))
        .collect();
    let r = h
        .as_user(
            "acme",
            PRIMARY,
            "POST",
            "/v1/users/sync",
            Some(json!({"changes": rows})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["code"], "too_many");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_page_through_with_opaque_tokens() {
    let h = harness().await;
    for i in 0..5 {
        let r = h.as_user("acme", PRIMARY, "POST", "/v1/users", Some(json!({"email": format!("p{i}@contoso.com"), "display_name": "P", "role": "member"}))).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body["connection_mode"], "delegated");
    }
    let mut seen = Vec::new();
    let mut path = "/v1/users?limit=3".to_owned();
    loop {
        let r = h.as_user("acme", PRIMARY, "GET", &path, None).await;
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match r.body["next"].as_str() {
            Some(next) => path = format!("/v1/users?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8, "no user twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_configured_front_end() {
    let h = harness().await;
    let preflight = |origin: &'static str| {
        h.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/users", h.base))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight(FRONTEND).await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], FRONTEND);
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(
        evil.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        evil.headers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let h = harness().await;
    let r = h.call("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = r.body["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    documented.sort();
    // Every documented operation is routed: called without a token it is refused as
    // unauthenticated (401), never "no such route" (404) or "method not allowed" (405).
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        let concrete = path
            .replace("{email}", "adele@contoso.com")
            .replace("{id}", "AAMkAGI2");
        let reply = h.call(method, &concrete, None, None, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{op} is documented but not routed"
        );
    }
    let expected = [
        "DELETE /v1/integration/connection",
        "DELETE /v1/users/{email}",
        "GET /v1/audit",
        "GET /v1/integration",
        "GET /v1/integration/capture-policy",
        "GET /v1/me",
        "GET /v1/sync/runs",
        "GET /v1/users",
        "GET /v1/users/{email}",
        "GET /v1/users/{email}/messages",
        "GET /v1/users/{email}/messages/{id}",
        "PATCH /v1/integration/settings",
        "PATCH /v1/users/{email}",
        "POST /v1/erasures",
        "POST /v1/integration/connection/activate",
        "POST /v1/integration/connection/verify",
        "POST /v1/sync",
        "POST /v1/users",
        "POST /v1/users/sync",
        "POST /v1/users/{email}/purge",
        "PUT /v1/integration/capture-policy",
        "PUT /v1/primary",
    ];
    assert_eq!(
        documented, expected,
        "a route was added or removed: update this list and the front end's client"
    );
    assert_eq!(o365_http_api::openapi().paths.paths.len(), paths.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_policy_is_validated_versioned_and_audited() {
    let h = harness().await;
    let path = "/v1/integration/capture-policy";
    let r = h.as_user("acme", PRIMARY, "GET", path, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"], 0);
    assert_eq!(r.body["excluded_domains"], json!([]));
    let before = audit_len(&h).await;
    let bad = json!({"excluded_domains": ["not a domain"], "excluded_addresses": ["nope"], "skip_internal": true, "version": 0});
    let r = h.as_user("acme", PRIMARY, "PUT", path, Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<_> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "excluded_domains[0]",
            "excluded_addresses[0]",
            "internal_domains"
        ]
    );
    assert_eq!(audit_len(&h).await, before, "refused: nothing written");
    let good = json!({"excluded_domains": ["@LawFirm.com", "lawfirm.com"], "excluded_addresses": ["HR@contoso.com"], "skip_internal": true, "internal_domains": ["contoso.com"], "retention_days": 365, "version": 0});
    let r = h.as_user("acme", PRIMARY, "PUT", path, Some(good)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(
        r.body["excluded_domains"],
        json!(["lawfirm.com"]),
        "normalised"
    );
    let stale = json!({"skip_internal": false});
    let r = h
        .call(
            "PUT",
            path,
            Some(&h.token("acme", PRIMARY)),
            Some(stale),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(audit_len(&h).await, before + 1);
}
