//! Settings, users, roles, Primary, sync switches, audit: the admin's Connection Settings and
//! User Management tabs, and a member's own status.

use time::OffsetDateTime;

use super::Services;
use super::access::{Action, Principal, authorize};
use crate::audit::{Actor, AuditAction, AuditEvent, AuditEvent as Event};
use crate::capture_policy::{CapturePolicy, CapturePolicyChange};
use crate::connection::{Connection, ConnectionStatus};
use crate::error::{DomainError, Entity, Result};
use crate::failure::{Failure, FailureCode};
use crate::ids::{Email, OrgId};
use crate::mailbox_directory::{ResolveError, resolve_mailbox};
use crate::page::{Page, PageRequest};
use crate::settings::{IntegrationSettings, SettingsChange};
use crate::user::{NewUser, OrgSyncContext, Role, SyncStateKind, User};

fn event(
    p: &Principal,
    at: OffsetDateTime,
    action: AuditAction,
    object: impl Into<String>,
) -> AuditEvent {
    Event::new(&p.org, at, Actor::User(p.email.clone()), action, object)
}

/// What the Connection Settings tab shows.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationView {
    pub settings: IntegrationSettings,
    pub connection: Connection,
    /// Users whose sync is in error, and whether that crosses the alarm line (20 %).
    pub users_in_error: usize,
    pub users_total: usize,
}

impl IntegrationView {
    pub fn alarm(&self) -> bool {
        crate::user::org_in_alarm(self.users_in_error as u64, self.users_total as u64)
    }
}

/// How long switching users on may spend resolving them before answering.
const RESOLVE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

impl Services {
    pub async fn integration(&self, p: &Principal) -> Result<IntegrationView> {
        authorize(p, Action::ReadIntegration)?;
        let (settings, counts) = self.store.settings_and_counts(&p.org).await?;
        // A status read settles a connection still waiting for Microsoft to propagate consent.
        let connection = self.grants.settle_connection(&p.org).await?;
        Ok(IntegrationView {
            settings,
            connection,
            users_in_error: counts.in_error as usize,
            users_total: counts.syncing as usize,
        })
    }

    /// What the org keeps out of its archive (admins).
    pub async fn capture_policy(&self, p: &Principal) -> Result<CapturePolicy> {
        authorize(p, Action::ReadIntegration)?;
        self.store.capture_policy(&p.org).await
    }

    /// Replaces the capture policy (admins). Affects captures from now on; what is archived
    /// stays (purge a mailbox to remove it).
    pub async fn set_capture_policy(
        &self,
        p: &Principal,
        change: CapturePolicyChange,
        expected_version: u64,
        now: OffsetDateTime,
    ) -> Result<CapturePolicy> {
        authorize(p, Action::ChangeSettings)?;
        let current = self.store.capture_policy(&p.org).await?;
        if current.version != expected_version {
            return Err(DomainError::Conflict(Entity::Settings));
        }
        let next = CapturePolicy::parse(&change, current.version + 1)?;
        let audit = event(p, now, AuditAction::CapturePolicyChanged, "capture_policy")
            .change(Some(&current), Some(&next));
        self.store.save_capture_policy(&p.org, &next, audit).await?;
        Ok(next)
    }

    /// The org's switch and connection, once per request, for showing users as they are
    /// ([`User::as_seen`]).
    pub async fn sync_context(&self, org: &OrgId) -> Result<OrgSyncContext> {
        let settings = self.store.settings(org).await?;
        let connection = self.store.connection(org).await?;
        Ok(OrgSyncContext {
            service_account_on: settings.use_service_account,
            blocked_by: connection
                .blocking_failure(settings.use_service_account, OffsetDateTime::now_utc()),
        })
    }

    /// Changes the switches. Read-only changes which app holds the grant, so a live grant
    /// then needs consent again; switching the service account off retires the connection.
    pub async fn change_settings(
        &self,
        p: &Principal,
        change: SettingsChange,
        expected_version: u64,
        now: OffsetDateTime,
    ) -> Result<IntegrationSettings> {
        authorize(p, Action::ChangeSettings)?;
        let current = self.store.settings(&p.org).await?;
        if current.version != expected_version {
            return Err(DomainError::Conflict(Entity::Settings));
        }
        let next = current.apply(change);
        if (next.use_service_account, next.read_only)
            == (current.use_service_account, current.read_only)
        {
            return Ok(current);
        }
        let connection = self.store.connection(&p.org).await?;
        if current.use_service_account
            && !next.use_service_account
            && connection.status != ConnectionStatus::None
            && !change.confirm
        {
            return Err(DomainError::Precondition(
                "switching \"Use Service Account\" off deletes the connection and stops the sync of every user (GET /v1/users shows who syncs today); send \"confirm\": true to go ahead",
            ));
        }
        let live = matches!(
            connection.status,
            ConnectionStatus::Connected
                | ConnectionStatus::Verifying
                | ConnectionStatus::PendingConsent
                | ConnectionStatus::PendingSignIn
        );
        let new_connection = if !next.use_service_account
            && connection.status != ConnectionStatus::None
        {
            Some(Connection {
                version: connection.version + 1,
                ..Connection::none()
            })
        } else if next.read_only != current.read_only && live {
            Some(Connection {
                status: ConnectionStatus::NeedsReconsent,
                last_error: Some(Failure::new(
                    FailureCode::NeedsReconsent,
                    None,
                    "Read Only Permissions changed after consent: the grant is for the other app registration",
                    now,
                )),
                version: connection.version + 1,
                ..connection.clone()
            })
        } else {
            None
        };
        let audit = event(p, now, AuditAction::SettingsChanged, "settings")
            .change(Some(&current), Some(&next));
        self.store
            .save_settings(&p.org, &next, new_connection.as_ref(), audit)
            .await?;
        Ok(next)
    }

    pub async fn add_user(
        &self,
        p: &Principal,
        user: NewUser,
        now: OffsetDateTime,
    ) -> Result<User> {
        authorize(p, Action::ManageUsers)?;
        let audit = event(
            p,
            now,
            AuditAction::UserAdded,
            format!("user:{}", user.email.key()),
        )
        .change(
            None,
            Some(&serde_json::json!({"email": user.email, "role": user.role.as_str()})),
        );
        self.store.add_user(&p.org, &user, audit).await
    }

    pub async fn user(&self, p: &Principal, email: &Email) -> Result<User> {
        authorize(p, Action::ReadUser(email))?;
        self.store.user(&p.org, email).await
    }

    pub async fn list_users(
        &self,
        p: &Principal,
        state: Option<SyncStateKind>,
        page: PageRequest,
    ) -> Result<Page<User>> {
        authorize(p, Action::ReadUsers)?;
        // Users as they are seen ([`User::as_seen`]), filtered by what they show: when the org's
        // connection blocks every sync, a stored `ok` reads as the org's error. The stored-state
        // index serves the filter only when the two agree; otherwise a page is filtered after
        // reading (it may come back short, with `next` still set).
        let org = self.sync_context(&p.org).await?;
        let stored_filter = if org.blocked_by.is_some() {
            None
        } else {
            state
        };
        let mut users = self.store.list_users(&p.org, stored_filter, page).await?;
        users.items = users
            .items
            .iter()
            .map(|u| u.as_seen(&org))
            .filter(|u| state.is_none_or(|s| u.state.kind() == s))
            .collect();
        Ok(users)
    }

    pub async fn change_role(
        &self,
        p: &Principal,
        email: &Email,
        role: Role,
        expected_version: u64,
        now: OffsetDateTime,
    ) -> Result<User> {
        authorize(p, Action::ManageUsers)?;
        let audit = event(
            p,
            now,
            AuditAction::UserRoleChanged,
            format!("user:{}", email.key()),
        )
        .change(None, Some(&serde_json::json!({"role": role.as_str()})));
        self.store
            .change_role(&p.org, email, role, expected_version, audit)
            .await
    }

    pub async fn remove_user(
        &self,
        p: &Principal,
        email: &Email,
        expected_version: u64,
        now: OffsetDateTime,
    ) -> Result<()> {
        authorize(p, Action::ManageUsers)?;
        let audit = event(
            p,
            now,
            AuditAction::UserRemoved,
            format!("user:{}", email.key()),
        );
        self.store
            .remove_user(&p.org, email, expected_version, audit)
            .await
    }

    pub async fn set_primary(
        &self,
        p: &Principal,
        email: &Email,
        now: OffsetDateTime,
    ) -> Result<User> {
        authorize(p, Action::ManageUsers)?;
        let before = self.store.primary(&p.org).await?;
        let audit = event(p, now, AuditAction::PrimaryChanged, "primary")
            .change(before.as_ref(), Some(email));
        self.store.set_primary(&p.org, email, audit).await?;
        self.store.user(&p.org, email).await
    }

    pub async fn set_sync(
        &self,
        p: &Principal,
        changes: &[(Email, bool)],
        now: OffsetDateTime,
    ) -> Result<Vec<User>> {
        authorize(p, Action::ManageUsers)?;
        let after: Vec<_> = changes
            .iter()
            .map(|(e, on)| serde_json::json!({"email": e, "sync_enabled": on}))
            .collect();
        let audit = event(p, now, AuditAction::SyncToggled, "users").change(None, Some(&after));
        let mut users = self.store.set_sync_enabled(&p.org, changes, audit).await?;
        self.resolve_switched_on(&p.org, &mut users).await?;
        Ok(users)
    }

    /// Resolves the users just switched on to their directory users, so the admin sees at once
    /// which mailbox each email reaches. Best effort within a few seconds: whatever is left (or
    /// fails) the worker resolves before its first delta call.
    async fn resolve_switched_on(&self, org: &OrgId, users: &mut [User]) -> Result<()> {
        let connection = self.store.connection(org).await?;
        let (ConnectionStatus::Connected, Some(tenant), Some(app)) =
            (connection.status, connection.tenant_id, connection.app)
        else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + RESOLVE_BUDGET;
        for user in users
            .iter_mut()
            .filter(|u| u.sync_enabled && u.directory.is_none())
        {
            if std::time::Instant::now() >= deadline {
                break;
            }
            let resolved = resolve_mailbox(
                self.grants.directory(),
                self.store.as_ref(),
                org,
                &tenant,
                app,
                &user.email,
            )
            .await;
            match resolved {
                Ok(link) => user.directory = Some(link),
                Err(ResolveError::Store(e)) => return Err(e),
                // A miss or a Microsoft refusal is the worker's to report on the user.
                Err(ResolveError::Microsoft(_)) => {}
            }
        }
        Ok(())
    }

    pub async fn audit_log(&self, p: &Principal, page: PageRequest) -> Result<Page<AuditEvent>> {
        authorize(p, Action::ReadAudit)?;
        self.store.list_audit(&p.org, page).await
    }
}
