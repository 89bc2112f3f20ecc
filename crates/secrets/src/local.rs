//! The embedded run's secret store: values handed over at start-up, never read from AWS.

use async_trait::async_trait;
use std::sync::RwLock;

use o365_domain::connection::AppRegistration;
use o365_domain::ports::SecretStore;
use o365_domain::secret::{AppCredential, Freshness, Sensitive};
use o365_domain::{DomainError, Result};

pub struct LocalSecretStore {
    default_app: RwLock<AppCredential>,
    read_only_app: RwLock<AppCredential>,
    signing_key: Sensitive<Vec<u8>>,
}

impl LocalSecretStore {
    pub fn new(
        default_app: AppCredential,
        read_only_app: AppCredential,
        signing_key: Vec<u8>,
    ) -> Result<Self> {
        if signing_key.len() < crate::MIN_SIGNING_KEY_BYTES {
            return Err(DomainError::Unavailable(
                "the local state signing key is shorter than 32 bytes".into(),
            ));
        }
        Ok(Self {
            default_app: RwLock::new(default_app),
            read_only_app: RwLock::new(read_only_app),
            signing_key: Sensitive::new(signing_key),
        })
    }

    /// Replaces a credential, as a rotation in Secrets Manager would.
    pub fn rotate(&self, app: AppRegistration, credential: AppCredential) {
        let slot = match app {
            AppRegistration::Default => &self.default_app,
            AppRegistration::ReadOnly => &self.read_only_app,
        };
        *slot.write().unwrap_or_else(|p| p.into_inner()) = credential;
    }
}

#[async_trait]
impl SecretStore for LocalSecretStore {
    async fn app_credential(
        &self,
        app: AppRegistration,
        _freshness: Freshness,
    ) -> Result<AppCredential> {
        let slot = match app {
            AppRegistration::Default => &self.default_app,
            AppRegistration::ReadOnly => &self.read_only_app,
        };
        Ok(slot.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn state_signing_key(&self, _freshness: Freshness) -> Result<Sensitive<Vec<u8>>> {
        Ok(self.signing_key.clone())
    }
}
