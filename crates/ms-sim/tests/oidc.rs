mod common;

use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ms_sim::*;
use serde_json::Value;

/// The simulator's first (initially current) ID-token public key.
const SIM_PUBLIC_PEM: &str = include_str!("../src/keys/sim-signing.pub.pem");

#[tokio::test]
async fn discovery_documents_and_jwks() {
    let w = world().await;
    let base = w.sim.base_url();
    let tid = w.tenant.id.to_string();
    for t in [tid.as_str(), "contoso.com"] {
        let (s, doc) = get_json(&w, &w.sim.openid_configuration_url(t)).await;
        assert_eq!(s, 200);
        assert_eq!(doc["issuer"], format!("{base}/{tid}/v2.0"));
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{base}/{tid}/oauth2/v2.0/authorize")
        );
        assert_eq!(
            doc["token_endpoint"],
            format!("{base}/{tid}/oauth2/v2.0/token")
        );
        assert_eq!(doc["jwks_uri"], format!("{base}/{tid}/discovery/v2.0/keys"));
        assert_eq!(
            doc["subject_types_supported"],
            serde_json::json!(["pairwise"])
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            serde_json::json!(["RS256"])
        );
        assert!(
            doc["response_types_supported"]
                .as_array()
                .unwrap()
                .contains(&"code".into())
        );
        assert!(
            doc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&"openid".into())
        );
        assert!(
            doc["claims_supported"]
                .as_array()
                .unwrap()
                .contains(&"wids".into())
        );
    }
    for t in ["organizations", "common"] {
        let (s, doc) = get_json(&w, &w.sim.openid_configuration_url(t)).await;
        assert_eq!(s, 200);
        assert_eq!(doc["issuer"], format!("{base}/{{tenantid}}/v2.0"));
        assert_eq!(doc["jwks_uri"], format!("{base}/{t}/discovery/v2.0/keys"));
    }
    let (s, v) = get_json(&w, &w.sim.openid_configuration_url("nowhere.example")).await;
    assert_eq!(s, 400);
    assert_eq!(v["error_codes"], serde_json::json!([90002]));

    // The JWKS: one RSA signing key to start with, kid = x5t, plus the issuer.
    let (s, jwks) = get_json(&w, &w.sim.jwks_url(&tid)).await;
    assert_eq!(s, 200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["e"], "AQAB");
    assert_eq!(k["kid"], k["x5t"]);
    assert_eq!(k["kid"], w.sim.current_signing_kid());
    assert_eq!(k["issuer"], format!("{base}/{tid}/v2.0"));
    assert!(k["n"].as_str().unwrap().len() > 300);
    let (s, common) = get_json(&w, &format!("{base}/discovery/v2.0/keys")).await;
    assert_eq!(s, 200);
    assert_eq!(common["keys"][0]["kid"], k["kid"]);

    // Outage: both answer 503, then recover.
    w.sim.set_oidc_down(true);
    for url in [w.sim.openid_configuration_url(&tid), w.sim.jwks_url(&tid)] {
        assert_eq!(get_status(&w, &url).await, 503);
    }
    w.sim.set_oidc_down(false);
    assert_eq!(get_status(&w, &w.sim.jwks_url(&tid)).await, 200);
    assert_eq!(w.sim.request_count(Endpoint::OpenIdConfig, None), 6);
    assert_eq!(w.sim.request_count(Endpoint::Jwks, None), 4);
}

#[tokio::test]
async fn signing_key_publish_rotate_retire() {
    let w = world().await;
    let tid = w.tenant.id.to_string();
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let first = w.sim.current_signing_kid();
    let next = w.sim.publish_next_signing_key();
    assert_ne!(first, next);
    let (_, jwks) = get_json(&w, &w.sim.jwks_url(&tid)).await;
    assert_eq!(kids(&jwks), vec![first.clone(), next.clone()]);
    // Published but not used yet.
    let v = w
        .sign_in_tokens("organizations", "adele.vance@contoso.com", "n")
        .await;
    let (h, _) = jwt_parts(v["id_token"].as_str().unwrap());
    assert_eq!(h["kid"], first.as_str());

    assert_eq!(w.sim.rotate_signing_key(), next);
    let v = w
        .sign_in_tokens("organizations", "adele.vance@contoso.com", "n")
        .await;
    let tok = v["id_token"].as_str().unwrap();
    let (h, _) = jwt_parts(tok);
    assert_eq!(h["kid"], next.as_str());
    verify_id_token(&w, tok).await.unwrap();
    let (_, jwks) = get_json(&w, &w.sim.jwks_url(&tid)).await;
    assert_eq!(kids(&jwks), vec![first.clone(), next.clone()]);

    // Rotating without publishing first publishes the new key at once.
    let third = w.sim.rotate_signing_key();
    assert!(third != first && third != next);
    assert_eq!(
        w.sim.published_signing_kids(),
        vec![first.clone(), next.clone(), third.clone()]
    );
    w.sim.retire_old_signing_keys();
    let (_, jwks) = get_json(&w, &w.sim.jwks_url(&tid)).await;
    assert_eq!(kids(&jwks), vec![third.clone()]);

    // The same through the HTTP control API; the ring wraps around to the first key.
    let base = w.sim.base_url();
    let r = post_empty(&w, &format!("{base}/_sim/signing-keys/rotate")).await;
    assert_eq!(r["current"], first.as_str());
    assert_eq!(r["published"], serde_json::json!([third, first]));
    let r = post_empty(&w, &format!("{base}/_sim/signing-keys/retire")).await;
    assert_eq!(r["published"], serde_json::json!([first]));
    let r = post_empty(&w, &format!("{base}/_sim/signing-keys/publish")).await;
    assert_eq!(r["published"], serde_json::json!([first, next]));
    assert_eq!(r["current"], first.as_str());
}

#[tokio::test]
async fn tampered_id_tokens_fail_validation_each_its_way() {
    let w = world().await;
    let tid = w.tenant.id.to_string();
    let upn = "admin@contoso.com";
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for t in [
        IdTokenTamper::AlgNone,
        IdTokenTamper::Hs256WithPublicKey,
        IdTokenTamper::WrongAudience,
        IdTokenTamper::IssuerTenantMismatch,
        IdTokenTamper::WrongNonce,
        IdTokenTamper::Expired,
        IdTokenTamper::UnknownKey,
        IdTokenTamper::MissingWids,
    ] {
        w.sim.set_id_token_tamper(Some(t));
        let v = w.sign_in_tokens("organizations", upn, "n-t").await;
        let tok = v["id_token"].as_str().unwrap();
        let (h, c) = jwt_parts(tok);
        let verified = verify_id_token(&w, tok).await;
        match t {
            IdTokenTamper::AlgNone => {
                assert_eq!(h["alg"], "none");
                assert!(tok.ends_with('.'));
                assert!(verified.is_err());
            }
            IdTokenTamper::Hs256WithPublicKey => {
                assert_eq!(h["alg"], "HS256");
                assert!(verified.is_err());
                // Key confusion: the HMAC key is the public key PEM a validator can fetch.
                let mut v = Validation::new(Algorithm::HS256);
                v.set_audience(&[w.app.client_id.to_string()]);
                let key = DecodingKey::from_secret(SIM_PUBLIC_PEM.as_bytes());
                jsonwebtoken::decode::<Value>(tok, &key, &v).unwrap();
            }
            IdTokenTamper::WrongAudience => {
                assert_ne!(c["aud"], w.app.client_id.to_string());
                assert!(verified.unwrap_err().contains("Audience"), "{t:?}");
            }
            IdTokenTamper::IssuerTenantMismatch => {
                assert_eq!(c["tid"], tid);
                assert!(!c["iss"].as_str().unwrap().contains(&tid));
                assert!(verified.is_err());
            }
            IdTokenTamper::WrongNonce => {
                assert_ne!(c["nonce"], "n-t");
                // The signature is fine: only the nonce check catches it.
                assert!(verified.is_ok());
            }
            IdTokenTamper::Expired => {
                assert!(c["exp"].as_i64().unwrap() <= now - 3500);
                assert!(c["nbf"].as_i64().unwrap() < now - 3600);
                assert!(verified.unwrap_err().contains("Expired"));
            }
            IdTokenTamper::UnknownKey => {
                assert!(
                    !w.sim
                        .published_signing_kids()
                        .contains(&h["kid"].as_str().unwrap().to_string())
                );
                assert_eq!(verified.unwrap_err(), "unknown kid");
            }
            IdTokenTamper::MissingWids => {
                assert!(c.get("wids").is_none());
                assert!(verified.is_ok());
            }
        }
    }
    // Off again over HTTP; and PUT with a name sets it.
    let base = w.sim.base_url();
    let tamper = format!("{base}/_sim/oidc/id-token-tamper");
    let s = put_status(
        &w,
        &tamper,
        &serde_json::json!({"tamper": "wrong_audience"}),
    )
    .await;
    assert_eq!(s, 200);
    let v = w.sign_in_tokens("organizations", upn, "n").await;
    assert!(
        verify_id_token(&w, v["id_token"].as_str().unwrap())
            .await
            .is_err()
    );
    put_status(&w, &tamper, &serde_json::json!({"tamper": null})).await;
    let v = w.sign_in_tokens("organizations", upn, "n").await;
    verify_id_token(&w, v["id_token"].as_str().unwrap())
        .await
        .unwrap();

    // sign_id_token: arbitrary claims, signed with the current published key.
    let claims = serde_json::json!({
        "aud": w.app.client_id.to_string(),
        "iss": format!("{base}/{tid}/v2.0"),
        "tid": tid, "exp": now + 600, "custom": 7,
    });
    let tok = w.sim.sign_id_token(&claims);
    let verified = verify_id_token(&w, &tok).await.unwrap();
    assert_eq!(verified["custom"], 7);

    // oidc down over HTTP.
    let down = serde_json::json!({"down": true});
    put_status(&w, &format!("{base}/_sim/oidc/down"), &down).await;
    assert_eq!(get_status(&w, &w.sim.jwks_url("common")).await, 503);
}
