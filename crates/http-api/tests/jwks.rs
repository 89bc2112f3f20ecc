//! Bearer tokens verified against an identity provider's JWKS: fetched, cached, refetched when a
//! token names a key the cache does not have, and refused for everything that is off.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use o365_http_api::{AuthConfig, Authenticator, KeySource};
use o365_local_stack::{DEV_JWT_AUDIENCE, DEV_JWT_ISSUER, DEV_JWT_PRIVATE_KEY_PEM};
use serde_json::json;

fn jwk(kid: &str) -> Jwk {
    let key = EncodingKey::from_rsa_pem(DEV_JWT_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn token(kid: &str, audience: &str, ttl: i64) -> String {
    token_from(kid, audience, ttl, 0)
}

/// `nbf` is `not_before` seconds from now.
fn token_from(kid: &str, audience: &str, ttl: i64, not_before: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({"iss": DEV_JWT_ISSUER, "aud": audience, "exp": now + ttl, "iat": now, "nbf": now + not_before, "org_id": "acme", "email": "Admin@Contoso.com"});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(DEV_JWT_PRIVATE_KEY_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn provider(keys: Arc<std::sync::Mutex<Vec<Jwk>>>, hits: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (keys, hits) = (keys.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(JwkSet {
                    keys: keys.lock().unwrap().clone(),
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn authenticator(url: &str, min_refetch: std::time::Duration) -> Arc<Authenticator> {
    Authenticator::new(
        KeySource::jwks_with(url, std::time::Duration::from_secs(3600), min_refetch),
        AuthConfig {
            issuer: DEV_JWT_ISSUER.into(),
            audience: DEV_JWT_AUDIENCE.into(),
            org_claim: "org_id".into(),
            email_claim: "email".into(),
        },
    )
}

#[tokio::test]
async fn keys_are_fetched_once_cached_and_refetched_for_a_new_key_id() {
    let keys = Arc::new(std::sync::Mutex::new(vec![jwk("key-1")]));
    let hits = Arc::new(AtomicUsize::new(0));
    let auth = authenticator(
        &provider(keys.clone(), hits.clone()).await,
        std::time::Duration::ZERO,
    );

    let bearer = format!("Bearer {}", token("key-1", DEV_JWT_AUDIENCE, 300));
    let who = auth.verify(Some(&bearer)).await.unwrap();
    assert_eq!(
        (who.org.as_str(), who.email.key()),
        ("acme", "admin@contoso.com")
    );
    auth.verify(Some(&bearer)).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the key set is cached");

    // The provider rotates in a new key: a token naming it triggers one refetch.
    keys.lock().unwrap().push(jwk("key-2"));
    auth.verify(Some(&format!(
        "Bearer {}",
        token("key-2", DEV_JWT_AUDIENCE, 300)
    )))
    .await
    .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    for (bad, why) in [
        (token("key-9", DEV_JWT_AUDIENCE, 300), "unknown key"),
        (token("key-1", "someone-else", 300), "wrong audience"),
        (token("key-1", DEV_JWT_AUDIENCE, -300), "expired"),
        (
            token_from("key-1", DEV_JWT_AUDIENCE, 3600, 600),
            "not valid for ten minutes",
        ),
    ] {
        let err = auth
            .verify(Some(&format!("Bearer {bad}")))
            .await
            .unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNAUTHORIZED, "{why}");
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_a_503_not_a_401() {
    let auth = authenticator(
        "http://127.0.0.1:9/.well-known/jwks.json",
        std::time::Duration::ZERO,
    );
    let err = auth
        .verify(Some(&format!(
            "Bearer {}",
            token("key-1", DEV_JWT_AUDIENCE, 300)
        )))
        .await
        .unwrap_err();
    assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn made_up_key_ids_do_not_flood_the_provider() {
    let keys = Arc::new(std::sync::Mutex::new(vec![jwk("key-1")]));
    let hits = Arc::new(AtomicUsize::new(0));
    let auth = authenticator(
        &provider(keys, hits.clone()).await,
        std::time::Duration::from_secs(30),
    );
    auth.verify(Some(&format!(
        "Bearer {}",
        token("key-1", DEV_JWT_AUDIENCE, 300)
    )))
    .await
    .unwrap();
    for i in 0..20 {
        let forged = format!(
            "Bearer {}",
            token(&format!("made-up-{i}"), DEV_JWT_AUDIENCE, 300)
        );
        assert!(auth.verify(Some(&forged)).await.is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
