//! Which credentials the embedded run uses. By default the simulator's demo apps and a fresh
//! signing key; with the app-secret ids set (`O365_DEFAULT_APP_SECRET_ID`,
//! `O365_READ_ONLY_APP_SECRET_ID`), the real app registrations' credentials from Secrets Manager
//! (any endpoint: AWS or a local one) — so pointing `cargo run` at a real tenant is configuration.

use std::sync::Arc;

use async_trait::async_trait;
use o365_domain::Result;
use o365_domain::connection::AppRegistration;
use o365_domain::ports::SecretStore;
use o365_domain::secret::{AppCredential, Freshness, Sensitive};
use o365_runtime::{ConfigError, Env};

pub async fn choose(
    env: &Env<'_>,
    demo: Arc<dyn SecretStore>,
) -> std::result::Result<Arc<dyn SecretStore>, ConfigError> {
    let wants_apps = env.get("O365_DEFAULT_APP_SECRET_ID").is_some()
        || env.get("O365_READ_ONLY_APP_SECRET_ID").is_some();
    if !wants_apps {
        return Ok(demo);
    }
    let sdk = o365_runtime::aws_sdk_config().await;
    let managed: Arc<dyn SecretStore> = if env.get("O365_STATE_KEY_SECRET_ID").is_some() {
        Arc::new(o365_runtime::secrets_manager_with_state_key(env, &sdk)?)
    } else {
        Arc::new(o365_runtime::secrets_manager(env, &sdk)?)
    };
    let key = if env.get("O365_STATE_KEY_SECRET_ID").is_some() {
        managed.clone()
    } else {
        demo
    };
    tracing::info!("app credentials from Secrets Manager (O365_*_APP_SECRET_ID)");
    Ok(Arc::new(AppsWithKey { apps: managed, key }))
}

/// App credentials from one store, the consent-state key from another.
struct AppsWithKey {
    apps: Arc<dyn SecretStore>,
    key: Arc<dyn SecretStore>,
}

#[async_trait]
impl SecretStore for AppsWithKey {
    async fn app_credential(
        &self,
        app: AppRegistration,
        freshness: Freshness,
    ) -> Result<AppCredential> {
        self.apps.app_credential(app, freshness).await
    }

    async fn state_signing_key(&self, freshness: Freshness) -> Result<Sensitive<Vec<u8>>> {
        self.key.state_signing_key(freshness).await
    }
}
