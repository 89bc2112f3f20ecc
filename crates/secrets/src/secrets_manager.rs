//! AWS Secrets Manager adapter: values cached for a while, re-read on demand, so a rotation
//! (a new AWSCURRENT version) is picked up without a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use o365_domain::connection::AppRegistration;
use o365_domain::ports::SecretStore;
use o365_domain::secret::{AppCredential, Freshness, Sensitive};
use o365_domain::{DomainError, Result};

/// Names or ARNs of our secrets.
#[derive(Debug, Clone)]
pub struct SecretIds {
    pub default_app: String,
    pub read_only_app: String,
    /// Only the functions that sign or verify consent state (user-api, consent-callback) have
    /// one; the sync functions never read it.
    pub state_signing_key: Option<String>,
}

pub struct SecretsManagerStore {
    client: Client,
    ids: SecretIds,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Sensitive<String>)>>,
}

impl SecretsManagerStore {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

    pub fn new(client: Client, ids: SecretIds, ttl: Duration) -> Self {
        Self {
            client,
            ids,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn secret_string(&self, id: &str, freshness: Freshness) -> Result<Sensitive<String>> {
        if freshness == Freshness::Cached {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, value)) = cache.get(id)
                && at.elapsed() < self.ttl
            {
                return Ok(value.clone());
            }
        }
        let out = self.client.get_secret_value().secret_id(id).send().await.map_err(|e| {
            tracing::error!(secret_id = id, error = %DisplayErrorContext(&e), "cannot read secret");
            DomainError::Unavailable("the secret store did not answer; try again shortly".into())
        })?;
        let value =
            Sensitive::new(out.secret_string.ok_or_else(|| {
                DomainError::Unavailable(format!("secret {id} has no SecretString"))
            })?);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), (Instant::now(), value.clone()));
        Ok(value)
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn app_credential(
        &self,
        app: AppRegistration,
        freshness: Freshness,
    ) -> Result<AppCredential> {
        let id = match app {
            AppRegistration::Default => &self.ids.default_app,
            AppRegistration::ReadOnly => &self.ids.read_only_app,
        };
        let json = self.secret_string(id, freshness).await?;
        crate::parse_app_credential(app.as_str(), json.expose())
    }

    async fn state_signing_key(&self, freshness: Freshness) -> Result<Sensitive<Vec<u8>>> {
        let id = self.ids.state_signing_key.as_deref().ok_or_else(|| {
            DomainError::Unavailable(
                "this function has no consent-state signing key (O365_STATE_KEY_SECRET_ID)".into(),
            )
        })?;
        let json = self.secret_string(id, freshness).await?;
        crate::parse_signing_key(json.expose())
    }
}
