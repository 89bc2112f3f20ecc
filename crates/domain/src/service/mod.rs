//! Use cases: what an admin, a member, the consent callback or the scheduler can do, with the
//! authorization rules in one place ([`access`]). Adapters call these; they hold no rules.

pub mod access;
pub mod admin;
pub mod connection;

use std::sync::Arc;

use crate::microsoft::GrantVerifier;
use crate::ports::{
    AuditLog, ConsentStore, OrgStore, SecretStore, SyncRunLog, SyncTrigger, UserStore,
};

/// Everything a store must offer the services (the DynamoDB adapter implements it all).
pub trait Store: OrgStore + UserStore + AuditLog + ConsentStore + SyncRunLog {}
impl<T: OrgStore + UserStore + AuditLog + ConsentStore + SyncRunLog> Store for T {}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Microsoft identity authority, e.g. `https://login.microsoftonline.com`.
    pub authority_url: String,
    /// Our registered redirect URI: the consent callback's public URL.
    pub consent_redirect_uri: String,
    /// How long a consent round trip may take (nonce TTL).
    pub consent_ttl: time::Duration,
    /// How long the callback keeps retrying while Microsoft propagates a fresh grant; stays
    /// well inside API Gateway's 29 s.
    pub verify_budget: std::time::Duration,
    /// How long after consent a grant Microsoft still does not know counts as propagating
    /// ("verifying"); past it, the failure is the connection's status.
    pub propagation_grace: time::Duration,
    /// First wait between verification attempts; doubles up to 4 s.
    pub verify_first_backoff: std::time::Duration,
}

impl ServiceConfig {
    pub fn new(authority_url: impl Into<String>, consent_redirect_uri: impl Into<String>) -> Self {
        Self {
            authority_url: authority_url.into(),
            consent_redirect_uri: consent_redirect_uri.into(),
            consent_ttl: time::Duration::minutes(15),
            verify_budget: std::time::Duration::from_secs(20),
            propagation_grace: time::Duration::minutes(10),
            verify_first_backoff: std::time::Duration::from_millis(500),
        }
    }
}

#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<dyn SecretStore>,
    pub verifier: Arc<dyn GrantVerifier>,
    pub sync: Arc<dyn SyncTrigger>,
    pub config: ServiceConfig,
}

impl Services {
    /// "Sync now" (admins): only a connected service account has anything to sync.
    pub async fn sync_now(&self, p: &access::Principal) -> crate::error::Result<usize> {
        access::authorize(p, access::Action::TriggerSync)?;
        let settings = self.store.settings(&p.org).await?;
        let connection = self.store.connection(&p.org).await?;
        if !settings.use_service_account
            || connection.status != crate::connection::ConnectionStatus::Connected
        {
            return Err(crate::error::DomainError::Precondition(
                "sync runs only over a connected service account: activate the connection first",
            ));
        }
        self.sync.sync_org_now(&p.org).await
    }

    /// Recent mailbox runs of the org, newest first (admins).
    pub async fn sync_runs(
        &self,
        p: &access::Principal,
        page: crate::page::PageRequest,
    ) -> crate::error::Result<crate::page::Page<crate::sync_run::SyncRun>> {
        access::authorize(p, access::Action::ReadSyncRuns)?;
        self.store.list_runs(&p.org, page).await
    }
}
