mod common;

use common::*;
use jsonwebtoken::Algorithm;
use ms_sim::*;
use serde_json::Value;

fn assert_invalid_grant(v: &Value, code: u64) {
    assert_aadsts(v, "invalid_grant", code);
}

/// Redeem `code` at `/organizations` as `client_id` with `redirect_uri`; `rest` carries the
/// verifier and the client's credentials.
async fn redeem_as(
    w: &World,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    rest: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    form.extend_from_slice(rest);
    w.token_form("organizations", &form).await
}

#[tokio::test]
async fn sign_in_code_flow_with_pkce_and_verified_id_token() {
    let w = world().await;
    let tid = w.tenant.id.to_string();
    let code = w
        .sign_in_code("organizations", "adele.vance@contoso.com", "n-1")
        .await;
    assert_eq!(w.sim.request_count(Endpoint::Authorize, None), 1);

    let r = w.redeem("organizations", &code, Some(VERIFIER)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "openid profile email");
    assert_eq!(v["expires_in"], 3599);
    assert_eq!(v["ext_expires_in"], 3599);
    assert!(v.get("refresh_token").is_none());

    let claims = verify_id_token(&w, v["id_token"].as_str().unwrap())
        .await
        .unwrap();
    let (header, _) = jwt_parts(v["id_token"].as_str().unwrap());
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["aud"], w.app.client_id.to_string());
    assert_eq!(claims["iss"], format!("{}/{tid}/v2.0", w.sim.base_url()));
    assert_eq!(claims["tid"], tid);
    assert_eq!(claims["oid"], w.user.id.to_string());
    assert_eq!(claims["preferred_username"], "adele.vance@contoso.com");
    assert_eq!(claims["email"], "adele.vance@contoso.com");
    assert_eq!(claims["name"], "Adele Vance");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["ver"], "2.0");
    assert!(claims["uti"].is_string());
    let sub = claims["sub"].as_str().unwrap();
    assert!(
        sub.len() >= 40 && sub != w.user.id.to_string(),
        "pairwise sub {sub}"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(claims["wids"], serde_json::json!([ROLE_MEMBER]));

    // The delegated access token: Graph audience, scopes, the user.
    let (_, at) = jwt_parts(v["access_token"].as_str().unwrap());
    assert_eq!(at["aud"], GRAPH_APP_ID);
    assert_eq!(at["scp"], "openid profile email");
    assert_eq!(at["idtyp"], "user");
    assert_eq!(at["tid"], tid);
    assert_eq!(at["oid"], w.user.id.to_string());

    // A second sign-in gives the same pairwise sub; a replayed code is refused.
    let again = w
        .sign_in_tokens("organizations", "adele.vance@contoso.com", "n-2")
        .await;
    let (_, c2) = jwt_parts(again["id_token"].as_str().unwrap());
    assert_eq!(c2["sub"], claims["sub"]);
    let (s, e) = error_code(w.redeem("organizations", &code, Some(VERIFIER)).await).await;
    assert_eq!(s, 400);
    assert_invalid_grant(&e, 54005);
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("OAuth2 Authorization code was already redeemed")
    );

    // Tenant GUID and domain paths, `common`, and a plain (no PKCE) request.
    for t in [tid.as_str(), "contoso.com", "common"] {
        let c = w.sign_in_code(t, "adele.vance@contoso.com", "n").await;
        assert_eq!(w.redeem(t, &c, Some(VERIFIER)).await.status(), 200, "{t}");
    }
    let plain = w.sim.authorize_url(
        "organizations",
        &[
            ("client_id", &w.app.client_id.to_string()),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile"),
            ("state", "st-123"),
        ],
    );
    let out = w
        .sim
        .browser_sign_in(&plain, "adele.vance@contoso.com")
        .await
        .unwrap();
    let c = out.param("code").unwrap();
    assert!(out.param("session_state").is_some());
    let v: Value = w
        .redeem("organizations", c, None)
        .await
        .json()
        .await
        .unwrap();
    let (_, claims) = jwt_parts(v["id_token"].as_str().unwrap());
    assert!(claims.get("email").is_none() && claims.get("nonce").is_none());
    assert_eq!(v["scope"], "openid profile");
}

#[tokio::test]
async fn code_redemption_errors() {
    let w = world().await;
    let cid = w.app.client_id.to_string();
    let upn = "adele.vance@contoso.com";

    let (s, e) = error_code(
        w.redeem("organizations", "1.Anot-a-code", Some(VERIFIER))
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_invalid_grant(&e, 70008);

    // PKCE: missing or wrong verifier (the code survives a failed attempt).
    let code = w.sign_in_code("organizations", upn, "n").await;
    let (_, e) = error_code(w.redeem("organizations", &code, None).await).await;
    assert_invalid_grant(&e, 501481);
    assert!(e["error_description"].as_str().unwrap().contains(
        "The Code_Verifier does not match the code_challenge supplied in the authorization request."
    ));
    let (_, e) = error_code(
        w.redeem("organizations", &code, Some("wrong-verifier"))
            .await,
    )
    .await;
    assert_invalid_grant(&e, 501481);

    // Another redirect URI than the authorize request's.
    w.sim
        .add_redirect_uri(w.app.client_id, "https://app.example.com/other")
        .unwrap();
    let (s, e) = error_code(
        redeem_as(
            &w,
            &cid,
            &code,
            "https://app.example.com/other",
            &[
                ("code_verifier", VERIFIER),
                ("client_secret", &w.secret.value),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_invalid_grant(&e, 500112);

    // Redeemed by another app.
    let (other, other_secret) = app_with_secret(
        &w.sim,
        AppSpec {
            display_name: "other".into(),
            redirect_uris: vec![REDIRECT.into()],
            ..Default::default()
        },
    );
    let ocid = other.client_id.to_string();
    let (_, e) = error_code(
        redeem_as(
            &w,
            &ocid,
            &code,
            REDIRECT,
            &[
                ("code_verifier", VERIFIER),
                ("client_secret", &other_secret.value),
            ],
        )
        .await,
    )
    .await;
    assert_invalid_grant(&e, 70000);

    // A tenant path other than the user's tenant.
    let fab = w.other_tenant("fabrikam.com", &[]);
    let (_, e) = error_code(w.redeem(&fab.id.to_string(), &code, Some(VERIFIER)).await).await;
    assert_invalid_grant(&e, 700005);

    // Client authentication is the same as for client credentials.
    let (s, e) = error_code(
        redeem_as(
            &w,
            &cid,
            &code,
            REDIRECT,
            &[("code_verifier", VERIFIER), ("client_secret", "wrong")],
        )
        .await,
    )
    .await;
    assert_eq!((s, e["error_codes"][0].as_u64()), (401, Some(7000215)));
    let (s, e) = error_code(
        redeem_as(
            &w,
            "6b0d7c2e-0000-4000-8000-000000000000",
            &code,
            REDIRECT,
            &[("client_secret", "x")],
        )
        .await,
    )
    .await;
    assert_eq!((s, e["error_codes"][0].as_u64()), (400, Some(700016)));

    // The code still works once, with a certificate assertion addressed to /organizations.
    let aud = w.sim.token_url("organizations");
    let jwt = assertion(
        w.app.client_id,
        &aud,
        CLIENT_KEY,
        CLIENT_CERT,
        Algorithm::PS256,
        true,
        "jti-code-1",
    );
    let r = redeem_as(
        &w,
        &cid,
        &code,
        REDIRECT,
        &[
            ("code_verifier", VERIFIER),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &jwt),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);

    // client_credentials still refuses the multi-tenant segments.
    let (s, e) = error_code(
        w.token_form(
            "organizations",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &cid),
                ("scope", GRAPH_DEFAULT_SCOPE),
                ("client_secret", &w.secret.value),
            ],
        )
        .await,
    )
    .await;
    assert_eq!((s, e["error_codes"][0].as_u64()), (400, Some(900023)));
}

#[tokio::test]
async fn authorize_request_errors_picker_and_cancel() {
    let w = world().await;
    let http = no_redirect_client();
    let cid = w.app.client_id;
    let page_code = |html: &str| -> Option<u32> {
        let i = html.find("data-aadsts=\"")? + 13;
        html[i..].split('"').next()?.parse().ok()
    };
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };

    // Request errors are pages that never redirect.
    for (tenant, client, redirect, code) in [
        ("consumers", cid.to_string(), REDIRECT, 90130),
        ("nowhere.example", cid.to_string(), REDIRECT, 90002),
        (
            "organizations",
            uuid::Uuid::nil().to_string(),
            REDIRECT,
            700016,
        ),
        (
            "organizations",
            cid.to_string(),
            "https://evil.example/cb",
            50011,
        ),
    ] {
        let url = w.sim.authorize_url(
            tenant,
            &[
                ("client_id", &client),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("scope", "openid"),
            ],
        );
        let r = get(url).await;
        assert_eq!(r.status(), 200, "{tenant}");
        assert_eq!(page_code(&r.text().await.unwrap()), Some(code));
    }

    // Errors after the redirect URI is known go back to the app with the state.
    for (rt, scope, error, code) in [
        ("token", "openid", "unsupported_response_type", 700054),
        ("code", "profile email", "invalid_scope", 70011),
    ] {
        let url = w.sim.authorize_url(
            "organizations",
            &[
                ("client_id", &cid.to_string()),
                ("response_type", rt),
                ("redirect_uri", REDIRECT),
                ("scope", scope),
                ("state", "s1"),
            ],
        );
        let out = w
            .sim
            .browser_sign_in(&url, "adele.vance@contoso.com")
            .await
            .unwrap();
        assert_eq!(out.param("error"), Some(error));
        assert_eq!(out.aadsts(), Some(code));
        assert_eq!(out.param("state"), Some("s1"));
    }

    // No session: the account picker, listing the path tenant's users (all for organizations).
    w.other_tenant("fabrikam.com", &["alan.steiner"]);
    let html = fetch_text(http.get(authorize_url(&w.sim, "organizations", cid, "n"))).await;
    assert!(html.contains("Pick an account"));
    assert!(html.contains("alan.steiner@fabrikam.com") && html.contains("adele.vance@contoso.com"));
    assert!(html.contains("data-action=\"signin\"") && html.contains("data-action=\"cancel\""));
    let html = fetch_text(http.get(authorize_url(&w.sim, "contoso.com", cid, "n"))).await;
    assert!(!html.contains("alan.steiner@fabrikam.com"));

    // Picking an account sets the cookie and comes back to the same URL.
    let cid_s = cid.to_string();
    let minimal = [
        ("client_id", cid_s.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
    ];
    let r = post_signin(
        &http,
        &format!("{}/organizations/oauth2/v2.0/authorize", w.sim.base_url()),
        "adele.vance@contoso.com",
        &minimal,
    )
    .await;
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/organizations/oauth2/v2.0/authorize?")
    );

    // login_hint signs in directly; prompt=select_account forces the picker.
    let hinted = w.sim.authorize_url(
        "organizations",
        &[&minimal[..], &[("login_hint", "adele.vance@contoso.com")]].concat(),
    );
    let r = get(hinted).await;
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"].to_str().unwrap().contains("code="));
    let picked = format!(
        "{}&prompt=select_account",
        authorize_url(&w.sim, "organizations", cid, "n")
    );
    let html = fetch_text(
        http.get(&picked)
            .header("cookie", "ms_sim_user=adele.vance%40contoso.com"),
    )
    .await;
    assert!(html.contains("Pick an account"));
    let out = w
        .sim
        .browser_sign_in(&picked, "adele.vance@contoso.com")
        .await
        .unwrap();
    assert!(out.param("code").is_some(), "{out:?}");

    // Cancel on the picker.
    let out = w
        .sim
        .browser_cancel_sign_in(&authorize_url(&w.sim, "organizations", cid, "n"))
        .await
        .unwrap();
    assert_eq!(out.param("error"), Some("access_denied"));
    assert_eq!(out.aadsts(), Some(50126));
    assert_eq!(out.param("state"), Some("st-123"));

    // A user of another tenant than the path's.
    let out = w
        .sim
        .browser_sign_in(
            &authorize_url(&w.sim, &w.tenant.id.to_string(), cid, "n"),
            "alan.steiner@fabrikam.com",
        )
        .await
        .unwrap();
    assert_eq!(out.param("error"), Some("access_denied"));
    assert_eq!(out.aadsts(), Some(50020));
    assert_eq!(out.param("state"), Some("st-123"));
    assert!(out.param("code").is_none());
}

#[tokio::test]
async fn wids_follow_roles_and_the_app_setting() {
    let w = world().await;
    w.sim
        .create_user(
            w.tenant.id,
            UserSpec {
                user_name: "pradeep.gupta".into(),
                privileged_role_admin: true,
                ..Default::default()
            },
        )
        .unwrap();
    let wids = |v: &Value| {
        let (_, c) = jwt_parts(v["id_token"].as_str().unwrap());
        c.get("wids").cloned()
    };
    let admin = w
        .sign_in_tokens("organizations", "admin@contoso.com", "n")
        .await;
    assert_eq!(
        wids(&admin),
        Some(serde_json::json!([ROLE_MEMBER, ROLE_GLOBAL_ADMIN]))
    );
    // The admin has no mailbox: no email claim even with the email scope.
    let (_, c) = jwt_parts(admin["id_token"].as_str().unwrap());
    assert!(c.get("email").is_none());
    let pra = w
        .sign_in_tokens("organizations", "pradeep.gupta@contoso.com", "n")
        .await;
    assert_eq!(
        wids(&pra),
        Some(serde_json::json!([ROLE_MEMBER, ROLE_PRIVILEGED_ROLE_ADMIN]))
    );
    w.sim.set_app_id_token_wids(w.app.client_id, false).unwrap();
    let none = w
        .sign_in_tokens("organizations", "admin@contoso.com", "n")
        .await;
    assert_eq!(wids(&none), None);

    // A Privileged Role Administrator may grant admin consent; a member may not.
    let out = w
        .consent("s", "adele.vance@contoso.com", ConsentDecision::Accept)
        .await;
    assert_eq!(out.aadsts(), Some(90094));
    let out = w
        .consent("s", "pradeep.gupta@contoso.com", ConsentDecision::Accept)
        .await;
    assert_eq!(out.param("admin_consent"), Some("True"));
    let consents = w.sim.consents();
    assert_eq!(
        consents.last().unwrap().granted_by.as_deref(),
        Some("pradeep.gupta@contoso.com")
    );

    // AppSpec defaults to emitting wids, also when deserialised without the field.
    assert!(AppSpec::default().id_token_wids);
    let spec: AppSpec = serde_json::from_str(r#"{"display_name":"x"}"#).unwrap();
    assert!(spec.id_token_wids);
}
