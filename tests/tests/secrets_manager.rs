//! The Secrets Manager adapter against moto: parsing, caching, and picking up a rotation
//! (a new AWSCURRENT version) without a restart.

use std::time::Duration;

use o365_domain::DomainError;
use o365_domain::connection::AppRegistration;
use o365_domain::ports::SecretStore;
use o365_domain::secret::{ClientCredential, Freshness};
use o365_secrets::{SecretIds, SecretsManagerStore};

struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    ids: SecretIds,
}

async fn secrets() -> Secrets {
    let client = o365_local_stack::secretsmanager_client(&o365_e2e::moto_endpoint());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let ids = SecretIds {
        default_app: format!("{run}/default-app"),
        read_only_app: format!("{run}/read-only-app"),
        state_signing_key: Some(format!("{run}/state-key")),
    };
    for (id, value) in [
        (
            &ids.default_app,
            r#"{"client_id":"11111111-1111-1111-1111-111111111111","client_secret":"first-secret"}"#,
        ),
        (
            &ids.read_only_app,
            r#"{"client_id":"22222222-2222-2222-2222-222222222222","certificate_pem":"-----BEGIN CERTIFICATE-----","private_key_pem":"-----BEGIN PRIVATE KEY-----"}"#,
        ),
        (
            ids.state_signing_key.as_ref().unwrap(),
            r#"{"state_signing_key":"0123456789abcdef0123456789abcdef-key"}"#,
        ),
    ] {
        client
            .create_secret()
            .name(id)
            .secret_string(value)
            .send()
            .await
            .expect("secret created");
    }
    Secrets { client, ids }
}

fn secret_of(c: &o365_domain::secret::AppCredential) -> &str {
    match &c.credential {
        ClientCredential::Secret(s) => s.expose(),
        ClientCredential::Certificate { .. } => "certificate",
    }
}

async fn rotate(s: &Secrets, value: &str) {
    s.client
        .put_secret_value()
        .secret_id(&s.ids.default_app)
        .secret_string(value)
        .send()
        .await
        .expect("rotated");
}

#[tokio::test]
async fn credentials_of_both_apps_and_the_signing_key_are_read() {
    let s = secrets().await;
    let store = SecretsManagerStore::new(s.client.clone(), s.ids.clone(), Duration::from_secs(300));
    let default = store
        .app_credential(AppRegistration::Default, Freshness::Cached)
        .await
        .unwrap();
    assert_eq!(default.client_id, "11111111-1111-1111-1111-111111111111");
    assert_eq!(secret_of(&default), "first-secret");
    let read_only = store
        .app_credential(AppRegistration::ReadOnly, Freshness::Cached)
        .await
        .unwrap();
    assert_eq!(secret_of(&read_only), "certificate");
    assert_eq!(
        store
            .state_signing_key(Freshness::Cached)
            .await
            .unwrap()
            .expose()
            .len(),
        36
    );
}

#[tokio::test]
async fn a_rotation_is_picked_up_on_refresh_and_after_the_ttl() {
    let s = secrets().await;
    let store = SecretsManagerStore::new(s.client.clone(), s.ids.clone(), Duration::from_secs(300));
    store
        .app_credential(AppRegistration::Default, Freshness::Cached)
        .await
        .unwrap();
    rotate(
        &s,
        r#"{"client_id":"11111111-1111-1111-1111-111111111111","client_secret":"second-secret"}"#,
    )
    .await;
    let cached = store
        .app_credential(AppRegistration::Default, Freshness::Cached)
        .await
        .unwrap();
    assert_eq!(
        secret_of(&cached),
        "first-secret",
        "within the TTL the cache answers"
    );
    // Microsoft refused the cached secret: the caller asks for a fresh read.
    let fresh = store
        .app_credential(AppRegistration::Default, Freshness::Refresh)
        .await
        .unwrap();
    assert_eq!(secret_of(&fresh), "second-secret");

    let short =
        SecretsManagerStore::new(s.client.clone(), s.ids.clone(), Duration::from_millis(200));
    short
        .app_credential(AppRegistration::Default, Freshness::Cached)
        .await
        .unwrap();
    rotate(
        &s,
        r#"{"client_id":"11111111-1111-1111-1111-111111111111","client_secret":"third-secret"}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_ttl = short
        .app_credential(AppRegistration::Default, Freshness::Cached)
        .await
        .unwrap();
    assert_eq!(secret_of(&after_ttl), "third-secret");
}

#[tokio::test]
async fn a_missing_or_broken_secret_is_an_operator_error_not_a_panic() {
    let s = secrets().await;
    rotate(&s, r#"{"client_id":"x"}"#).await;
    let store = SecretsManagerStore::new(s.client.clone(), s.ids.clone(), Duration::from_secs(300));
    let err = store
        .app_credential(AppRegistration::Default, Freshness::Cached)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DomainError::Unavailable(ref m) if m.contains("default")),
        "{err:?}"
    );
    let mut ids = s.ids.clone();
    ids.state_signing_key = Some("does-not-exist".into());
    let store = SecretsManagerStore::new(s.client.clone(), ids, Duration::from_secs(300));
    assert!(matches!(
        store.state_signing_key(Freshness::Cached).await,
        Err(DomainError::Unavailable(_))
    ));
}
