mod common;

use common::*;
use jsonwebtoken::Algorithm;
use ms_sim::*;
use serde_json::Value;
use std::time::Duration;

fn assert_aad_error(v: &Value, error: &str, code: u64) {
    assert_aadsts(v, error, code);
    for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(v[k].is_string(), "missing {k} in {v}");
    }
}

#[tokio::test]
async fn secret_token_success_shape_and_claims() {
    let w = world().await;
    let r = w.secret_token_resp().await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["ext_expires_in"], 3599);
    let tok = v["access_token"].as_str().unwrap();
    let claims: Value = jsonwebtoken::dangerous::insecure_decode(tok)
        .map(|d: jsonwebtoken::TokenData<Value>| d.claims)
        .unwrap();
    assert_eq!(claims["tid"], w.tenant.id.to_string());
    assert_eq!(claims["appid"], w.app.client_id.to_string());
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(
        claims["roles"],
        serde_json::json!(["Mail.ReadWrite", "User.Read.All"])
    );
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    assert!(
        claims["iss"]
            .as_str()
            .unwrap()
            .contains(&w.tenant.id.to_string())
    );
}

#[tokio::test]
async fn token_by_domain_and_extra_fields_accepted() {
    let w = world().await;
    let cid = w.app.client_id.to_string();
    let r = w
        .token_form(
            "contoso.com",
            &[
                ("client_id", &cid),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
                ("client_secret", &w.secret.value),
                (
                    "claims",
                    r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#,
                ),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
}

async fn secret_err(w: &World, tenant: &str, client_id: &str, secret: &str) -> (u16, Value) {
    error_code(w.secret_token_resp_for(tenant, client_id, secret).await).await
}

#[tokio::test]
async fn token_errors_each_code() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    let tid = w.tenant.id.to_string();
    let cid = w.app.client_id.to_string();

    // Not consented yet: 7000229 by default, selectable 700016 / 65001.
    let (s, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 7000229);
    w.sim
        .set_unconsented_error(w.tenant.id, UnconsentedError::AppNotFound)
        .unwrap();
    let (s, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "unauthorized_client", 700016);
    w.sim
        .set_unconsented_error(w.tenant.id, UnconsentedError::ConsentMissing)
        .unwrap();
    let (s, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "invalid_grant", 65001);

    w.sim
        .set_unconsented_error(w.tenant.id, UnconsentedError::NoServicePrincipal)
        .unwrap();
    w.sim.grant_consent(w.tenant.id, w.app.client_id).unwrap();
    // Unknown app: 700016.
    let (s, v) = secret_err(&w, &tid, &uuid::Uuid::new_v4().to_string(), "x").await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "unauthorized_client", 700016);
    // Wrong secret: 7000215.
    let (s, v) = secret_err(&w, &tid, &cid, "wrong").await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 7000215);
    // Unknown tenant: 90002.
    let (s, v) = secret_err(&w, &uuid::Uuid::new_v4().to_string(), &cid, &w.secret.value).await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "invalid_request", 90002);
    // Conditional Access: 53003.
    w.sim
        .set_conditional_access_block(w.tenant.id, true)
        .unwrap();
    let (_, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(v["error_codes"][0], 53003);
    w.sim
        .set_conditional_access_block(w.tenant.id, false)
        .unwrap();
    // Grants removed: 65001.
    w.sim
        .remove_consent_grants(w.tenant.id, w.app.client_id)
        .unwrap();
    let (s, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(s, 400);
    assert_aad_error(&v, "invalid_grant", 65001);
    // Revoked (SP deleted): 7000229.
    w.sim.grant_consent(w.tenant.id, w.app.client_id).unwrap();
    w.sim.revoke_consent(w.tenant.id, w.app.client_id).unwrap();
    let (s, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 7000229);
    // Expired secret: 7000222.
    w.sim.grant_consent(w.tenant.id, w.app.client_id).unwrap();
    w.sim
        .expire_secret(w.app.client_id, Some(w.secret.id))
        .unwrap();
    let (s, v) = secret_err(&w, &tid, &cid, &w.secret.value).await;
    assert_eq!(s, 401);
    assert_aad_error(&v, "invalid_client", 7000222);
    // `common` is refused; missing grant_type is invalid_request.
    let (s, _) = secret_err(&w, "common", &cid, &w.secret.value).await;
    assert_eq!(s, 400);
    let (s, v) = error_code(w.token_form(&tid, &[("client_id", &cid)]).await).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_request");
}

#[tokio::test]
async fn certificate_assertion_rules() {
    let w = world().await;
    let tid = w.tenant.id.to_string();
    let cid = w.app.client_id;
    let aud = w.sim.token_url(&tid);
    let send = |a: String| {
        let w = &w;
        let tid = tid.clone();
        async move {
            let c = cid.to_string();
            error_code(
                w.token_form(
                    &tid,
                    &[
                        ("client_id", &c),
                        ("scope", "https://graph.microsoft.com/.default"),
                        ("grant_type", "client_credentials"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", &a),
                    ],
                )
                .await,
            )
            .await
        }
    };
    // PS256 with x5t#S256 and RS256 with x5t both work.
    let (s, v) = send(assertion(
        cid,
        &aud,
        CLIENT_KEY,
        CLIENT_CERT,
        Algorithm::PS256,
        true,
        "j1",
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = send(assertion(
        cid,
        &aud,
        CLIENT_KEY,
        CLIENT_CERT,
        Algorithm::RS256,
        false,
        "j2",
    ))
    .await;
    assert_eq!(s, 200);
    // jti reuse refused.
    let (s, v) = send(assertion(
        cid,
        &aud,
        CLIENT_KEY,
        CLIENT_CERT,
        Algorithm::PS256,
        true,
        "j1",
    ))
    .await;
    assert_eq!(s, 401);
    assert_eq!(v["error"], "invalid_client");
    // Signed by another key but claiming the registered thumbprint: signature failure.
    let forged = {
        let good = assertion(
            cid,
            &aud,
            CLIENT_KEY,
            CLIENT_CERT,
            Algorithm::RS256,
            true,
            "j3",
        );
        let bad = assertion(
            cid,
            &aud,
            OTHER_KEY,
            CLIENT_CERT,
            Algorithm::RS256,
            true,
            "j3",
        );
        let g: Vec<&str> = good.split('.').collect();
        let b: Vec<&str> = bad.split('.').collect();
        format!("{}.{}.{}", g[0], g[1], b[2])
    };
    let (s, v) = send(forged).await;
    assert_eq!((s, v["error_codes"][0].as_u64()), (401, Some(700027)));
    // Unregistered certificate.
    let (s, v) = send(assertion(
        cid,
        &aud,
        OTHER_KEY,
        OTHER_CERT,
        Algorithm::RS256,
        true,
        "j4",
    ))
    .await;
    assert_eq!((s, v["error_codes"][0].as_u64()), (401, Some(700027)));
    // Wrong audience.
    let (s, v) = send(assertion(
        cid,
        "https://login.microsoftonline.com/x/oauth2/v2.0/token",
        CLIENT_KEY,
        CLIENT_CERT,
        Algorithm::RS256,
        true,
        "j5",
    ))
    .await;
    assert_eq!(s, 401);
    assert_eq!(v["error"], "invalid_client");
    // iss/sub of another client.
    let (s, v) = send(assertion(
        uuid::Uuid::new_v4(),
        &aud,
        CLIENT_KEY,
        CLIENT_CERT,
        Algorithm::RS256,
        true,
        "j6",
    ))
    .await;
    assert_eq!((s, v["error_codes"][0].as_u64()), (401, Some(700021)));
    // Garbage.
    let (s, v) = send("not-a-jwt".into()).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "invalid_request");
}

#[tokio::test]
async fn propagation_window_token_mode() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    w.sim
        .set_propagation(
            Some(w.tenant.id),
            Duration::from_millis(300),
            PropagationFailure::Token,
        )
        .unwrap();
    w.sim.grant_consent(w.tenant.id, w.app.client_id).unwrap();
    let (s, v) = error_code(w.secret_token_resp().await).await;
    assert_eq!(s, 401);
    assert_eq!(v["error_codes"][0], 7000229);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(w.secret_token_resp().await.status(), 200);
}

#[tokio::test]
async fn propagation_window_graph_mode() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    w.sim
        .set_propagation(None, Duration::from_millis(300), PropagationFailure::Graph)
        .unwrap();
    w.sim.grant_consent(w.tenant.id, w.app.client_id).unwrap();
    let tok = w.token().await;
    let (s, v) = error_code(w.graph(&tok, &format!("/users/{}", w.user.id), &[]).await).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "Authorization_IdentityNotFound");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        w.graph(&tok, &format!("/users/{}", w.user.id), &[])
            .await
            .status(),
        200
    );
}

// ---- admin consent ------------------------------------------------------------------------

#[tokio::test]
async fn consent_accept_redirects_and_records() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    let out = w
        .consent("st-123", "admin@contoso.com", ConsentDecision::Accept)
        .await;
    let ConsentOutcome::Redirect { location, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(location.starts_with(REDIRECT));
    assert_eq!(out.param("admin_consent"), Some("True"));
    assert_eq!(out.param("tenant"), Some(w.tenant.id.to_string().as_str()));
    assert_eq!(out.param("state"), Some("st-123"));
    assert_eq!(
        out.param("scope"),
        Some("https://graph.microsoft.com/.default")
    );
    assert_eq!(
        w.sim.granted_roles(w.tenant.id, w.app.client_id),
        Some(vec![
            "Mail.ReadWrite".to_string(),
            "User.Read.All".to_string()
        ])
    );
    assert_eq!(
        w.sim.consents()[0].granted_by.as_deref(),
        Some("admin@contoso.com")
    );
    assert_eq!(w.secret_token_resp().await.status(), 200);
}

#[tokio::test]
async fn consent_page_is_html_with_forms_and_signin() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    let url = w.sim.admin_consent_url(
        &w.tenant.id.to_string(),
        &w.app.client_id.to_string(),
        REDIRECT,
        "s",
    );
    let no_redirect = no_redirect_client();
    // Not signed in: account picker listing the tenant's users.
    let r = no_redirect.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("admin@contoso.com") && html.contains("adele.vance@contoso.com"),
        "{html}"
    );
    // login_hint: the consent page with app name, permissions, Accept/Cancel forms.
    let r = no_redirect
        .get(format!("{url}&login_hint=admin@contoso.com"))
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(
        html.contains("o365-sync")
            && html.contains("Mail.ReadWrite")
            && html.contains("User.Read.All")
    );
    assert!(
        html.contains("data-action=\"accept\"")
            && html.contains("data-action=\"cancel\"")
            && html.contains("<form method=\"post\"")
    );
    // Sign-in form POST sets the session cookie and returns to the consent URL.
    post_signin(
        &no_redirect,
        &format!("{}/{}/v2.0/adminconsent", w.sim.base_url(), w.tenant.id),
        "admin@contoso.com",
        &[
            ("client_id", &w.app.client_id.to_string()),
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
        ],
    )
    .await;
}

#[tokio::test]
async fn consent_cancel_redirects_with_access_denied() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    let out = w
        .consent("st-9", "admin@contoso.com", ConsentDecision::Cancel)
        .await;
    assert!(matches!(out, ConsentOutcome::Redirect { .. }));
    assert_eq!(out.param("error"), Some("access_denied"));
    assert_eq!(out.aadsts(), Some(65004));
    assert_eq!(out.param("admin_consent"), Some("True"));
    assert_eq!(out.param("state"), Some("st-9"));
    assert_eq!(out.param("tenant"), None);
    assert!(w.sim.granted_roles(w.tenant.id, w.app.client_id).is_none());
}

#[tokio::test]
async fn consent_non_admin_page_or_redirect() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    let out = w
        .consent("s", "adele.vance@contoso.com", ConsentDecision::Accept)
        .await;
    let ConsentOutcome::Page { html, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(html.contains("Need admin approval"));
    assert_eq!(out.aadsts(), Some(90094));
    assert!(w.sim.granted_roles(w.tenant.id, w.app.client_id).is_none());

    let w2 = world_with(
        SimConfig {
            non_admin_consent: NonAdminConsent::Redirect,
            ..Default::default()
        },
        1,
        1,
    )
    .await;
    let out = w2
        .consent("s2", "adele.vance@contoso.com", ConsentDecision::Accept)
        .await;
    assert!(matches!(out, ConsentOutcome::Redirect { .. }));
    assert_eq!(out.aadsts(), Some(90094));
    assert_eq!(out.param("state"), Some("s2"));
    assert_eq!(out.param("tenant"), None);
}

#[tokio::test]
async fn consent_errors_never_redirect() {
    let w = world_with(SimConfig::default(), 1, 1).await;
    let cid = w.app.client_id.to_string();
    let cases = [
        (
            w.sim.admin_consent_url(
                "organizations",
                &uuid::Uuid::new_v4().to_string(),
                REDIRECT,
                "s",
            ),
            700016,
        ),
        (
            w.sim
                .admin_consent_url("organizations", &cid, "https://evil.example/cb", "s"),
            50011,
        ),
        (
            w.sim.admin_consent_url("common", &cid, REDIRECT, "s"),
            90130,
        ),
    ];
    for (url, code) in cases {
        let out = w
            .sim
            .browser_consent(&url, "admin@contoso.com", ConsentDecision::Accept)
            .await
            .unwrap();
        match &out {
            ConsentOutcome::Page { html, .. } => assert!(html.contains(&format!("AADSTS{code}"))),
            other => panic!("expected an error page, got {other:?}"),
        }
        assert_eq!(out.aadsts(), Some(code));
    }
    assert!(w.sim.consents().is_empty());
}
