//! Use cases: what an admin, a member, the consent callback or the scheduler can do, with the
//! authorization rules in one place ([`access`]). Adapters call these; they hold no rules.

pub mod access;
pub mod admin;
pub mod callback;
pub mod connection;
pub mod erasure;
pub mod grant;
pub mod mail;
pub mod offboard;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::microsoft::{AdminSignIn, Directory};
use crate::ports::{
    AuditLog, ConsentStore, MailboxStateStore, MessageArchive, OrgStore, SecretStore, SyncRunLog,
    SyncTrigger, UserStore,
};

/// Everything a store must offer the services (the DynamoDB adapter implements it all).
pub trait Store:
    OrgStore + UserStore + AuditLog + ConsentStore + SyncRunLog + MessageArchive + MailboxStateStore
{
}
impl<T> Store for T where
    T: OrgStore
        + UserStore
        + AuditLog
        + ConsentStore
        + SyncRunLog
        + MessageArchive
        + MailboxStateStore
{
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long one leg of a round trip to Microsoft may take (nonce TTL).
    pub consent_ttl: time::Duration,
    /// How long the callback keeps retrying while Microsoft propagates a fresh grant; stays
    /// well inside API Gateway's 29 s.
    pub verify_budget: std::time::Duration,
    /// How long after consent a grant Microsoft still does not know counts as propagating
    /// ("verifying"); past it, the failure is the connection's status.
    pub propagation_grace: time::Duration,
    /// First wait between verification attempts; doubles up to 4 s.
    pub verify_first_backoff: std::time::Duration,
    /// A state whose signature fails may mean the key was rotated, so the key is read again,
    /// but at most this often: forged states must not turn into a Secrets Manager flood.
    pub state_key_min_refresh: std::time::Duration,
    /// Security refusals are audited at most once per org, reason and window.
    pub refusal_audit_window: time::Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            consent_ttl: time::Duration::minutes(15),
            verify_budget: std::time::Duration::from_secs(20),
            propagation_grace: time::Duration::minutes(30),
            verify_first_backoff: std::time::Duration::from_millis(500),
            state_key_min_refresh: std::time::Duration::from_secs(30),
            refusal_audit_window: time::Duration::minutes(10),
        }
    }
}

#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<dyn SecretStore>,
    /// Proving grants (directory reads by the app).
    pub grants: grant::Grants,
    /// The two legs of connecting.
    pub sign_in: Arc<dyn AdminSignIn>,
    pub sync: Arc<dyn SyncTrigger>,
    pub config: ServiceConfig,
    /// When the state-signing key was last read again because a signature failed.
    pub(crate) key_refreshed_at: Arc<Mutex<Option<Instant>>>,
}

impl Services {
    pub fn new(
        store: Arc<dyn Store>,
        secrets: Arc<dyn SecretStore>,
        directory: Arc<dyn Directory>,
        sign_in: Arc<dyn AdminSignIn>,
        sync: Arc<dyn SyncTrigger>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            grants: grant::Grants::new(store.clone(), directory, config.clone()),
            store,
            secrets,
            sign_in,
            sync,
            config,
            key_refreshed_at: Arc::default(),
        }
    }

    /// "Sync now" (admins): only a connected service account has anything to sync; a refusal
    /// names the real reason. A request within a minute of the org's last one joins it.
    pub async fn sync_now(&self, p: &access::Principal) -> crate::error::Result<String> {
        use crate::connection::ConnectionStatus;
        use crate::error::DomainError::Precondition;
        use crate::failure::FailureCode;
        access::authorize(p, access::Action::TriggerSync)?;
        let settings = self.store.settings(&p.org).await?;
        let connection = self.store.connection(&p.org).await?;
        let now = time::OffsetDateTime::now_utc();
        match connection.blocking_failure(settings.use_service_account, now) {
            None if connection.status == ConnectionStatus::Connected => {}
            None => {
                return Err(Precondition(
                    "Microsoft is still confirming the grant; sync starts by itself once the connection is verified",
                ));
            }
            Some(f) => {
                return Err(Precondition(match f.code {
                    FailureCode::ServiceAccountOff => {
                        "\"Use Service Account\" is off: turn it on and activate the connection first"
                    }
                    FailureCode::NotConnected => {
                        "the service account is not connected: the Primary user activates the connection first"
                    }
                    FailureCode::NeedsReconsent => {
                        "the connection needs consent again (Read Only Permissions changed): the Primary user deletes it and activates it again"
                    }
                    _ => {
                        "the connection is in error: GET /v1/integration shows the cause and what to do"
                    }
                }));
            }
        }
        let request = uuid::Uuid::new_v4().to_string();
        let open = self
            .store
            .open_sync_request(
                &p.org,
                &request,
                now,
                now - crate::sync_run::SYNC_NOW_JOIN_WINDOW,
            )
            .await?;
        if open != request {
            return Ok(open);
        }
        if let Err(e) = self.sync.sync_org_now(&p.org, &request).await {
            let _ = self.store.withdraw_sync_request(&p.org, &request).await;
            return Err(e);
        }
        tracing::info!(org = %p.org, request, "sync requested");
        Ok(request)
    }

    /// Recent mailbox runs of the org, newest first (admins).
    pub async fn sync_runs(
        &self,
        p: &access::Principal,
        request: Option<&str>,
        page: crate::page::PageRequest,
    ) -> crate::error::Result<crate::page::Page<crate::sync_run::SyncRun>> {
        access::authorize(p, access::Action::ReadSyncRuns)?;
        self.store.list_runs(&p.org, request, page).await
    }
}
