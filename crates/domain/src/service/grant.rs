//! Proving a recorded grant: the app reads the signed-in admin from the tenant's directory by
//! object id (which only works once the tenant granted the app), and that directory user must
//! be the org's Primary. Right after consent Microsoft may not know the grant yet: inside the
//! grace window that is "verifying", retried by the callback, by status reads and by the
//! scheduled fan-out; after it, the failure is the connection's status.

use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

use super::{ServiceConfig, Store};
use crate::admin_identity;
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::connection::{Connection, ConnectionStatus};
use crate::error::{DomainError, Result};
use crate::failure::{Failure, FailureCode};
use crate::ids::OrgId;
use crate::microsoft::{Directory, MicrosoftError};
use crate::page::PageRequest;

/// What one attempt found.
enum Attempt {
    Proven,
    /// Microsoft may simply not know the grant yet.
    Propagating(Failure),
    /// The grant or the person is wrong: the attempt is over. `release_tenant` for failures
    /// that show the tenant is not this org's to hold.
    Failed {
        failure: Failure,
        release_tenant: bool,
    },
}

/// Failures worth retrying right after consent: the token endpoint's AADSTS700016/7000229/65001
/// (classified as consent required), Graph's Authorization_IdentityNotFound, and passing trouble.
fn still_propagating(e: &MicrosoftError) -> bool {
    matches!(
        e,
        MicrosoftError::Refused {
            code: FailureCode::AuthorizationIdentityNotFound | FailureCode::ConsentRequired,
            ..
        } | MicrosoftError::Unavailable { .. }
            | MicrosoftError::Throttled { .. }
    )
}

pub(crate) fn failure_of(e: &MicrosoftError, at: OffsetDateTime) -> Failure {
    match e {
        MicrosoftError::Refused {
            code,
            microsoft_code,
            message,
        } => Failure::new(*code, Some(microsoft_code), message.clone(), at),
        MicrosoftError::Unavailable { message } => {
            Failure::new(FailureCode::MicrosoftUnavailable, None, message.clone(), at)
        }
        MicrosoftError::Throttled { .. } => Failure::new(
            FailureCode::MicrosoftUnavailable,
            None,
            "Microsoft throttled verification",
            at,
        ),
        MicrosoftError::SyncStateExpired => Failure::new(
            FailureCode::MicrosoftUnavailable,
            None,
            "unexpected sync state error",
            at,
        ),
    }
}

/// The grant-proving part of the services: all the scheduled fan-out needs to settle
/// connections still "verifying".
#[derive(Clone)]
pub struct Grants {
    store: Arc<dyn Store>,
    directory: Arc<dyn Directory>,
    config: ServiceConfig,
}

impl Grants {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<dyn Directory>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            store,
            directory,
            config,
        }
    }

    pub(crate) fn directory(&self) -> &dyn Directory {
        self.directory.as_ref()
    }

    /// Writes `next` over `seen` with a system audit event. If someone else changed the
    /// connection meanwhile, their change stands and is returned.
    pub(crate) async fn replace_connection(
        &self,
        org: &OrgId,
        seen: &Connection,
        next: Connection,
        action: AuditAction,
        now: OffsetDateTime,
    ) -> Result<Connection> {
        let next = Connection {
            version: seen.version + 1,
            ..next
        };
        let audit = AuditEvent::new(
            org,
            now,
            Actor::System("connection".into()),
            action,
            "connection",
        )
        .change(Some(seen), Some(&next));
        match self.store.save_connection(org, &next, audit).await {
            Ok(()) => Ok(next),
            Err(DomainError::Conflict(_)) => self.store.connection(org).await,
            Err(e) => Err(e),
        }
    }

    /// Proves the connection's grant, retrying while Microsoft propagates it until `deadline`
    /// (now = a single attempt). Connections without a grant to prove are returned as they are.
    pub(crate) async fn prove_grant(&self, org: &OrgId, deadline: Instant) -> Result<Connection> {
        let mut wait = self.config.verify_first_backoff;
        loop {
            let connection = self.store.connection(org).await?;
            let attempt = self.attempt(org, &connection).await?;
            let Some(attempt) = attempt else {
                return Ok(connection);
            };
            match attempt {
                Attempt::Propagating(_) if Instant::now() + wait < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(4));
                }
                outcome => return self.settle_attempt(org, &connection, outcome).await,
            }
        }
    }

    async fn attempt(&self, org: &OrgId, c: &Connection) -> Result<Option<Attempt>> {
        // Only a recorded grant is proven: never an attempt still on its way to consent.
        let has_grant = matches!(
            c.status,
            ConnectionStatus::Verifying | ConnectionStatus::Connected | ConnectionStatus::Error
        ) && c.granted_at.is_some();
        let (true, Some(tenant), Some(app), Some(account)) =
            (has_grant, c.tenant_id, c.app, c.granted_by.clone())
        else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        let found = match self
            .directory
            .user_by_id(&tenant, app, &account.object_id)
            .await
        {
            Ok(found) => found,
            Err(e) if still_propagating(&e) => {
                return Ok(Some(Attempt::Propagating(failure_of(&e, now))));
            }
            Err(e) => {
                return Ok(Some(Attempt::Failed {
                    failure: failure_of(&e, now),
                    release_tenant: false,
                }));
            }
        };
        // The Primary who activated: the rule holds for the person who connected, and a later
        // change of Primary neither races a running attempt nor breaks a live connection.
        let primary = match &c.activated_by {
            Some(email) => Some(email.clone()),
            None => self.store.primary(org).await?,
        };
        let who = account
            .user_principal_name
            .clone()
            .unwrap_or_else(|| account.object_id.clone());
        let verdict = match (&found, &primary) {
            (Some(user), Some(primary)) => admin_identity::is_primary(user, primary),
            _ => Err(FailureCode::NotPrimaryAccount),
        };
        Ok(Some(match verdict {
            Ok(()) => Attempt::Proven,
            Err(code) => Attempt::Failed {
                failure: Failure::new(
                    code,
                    None,
                    format!(
                        "{who} signed in, but none of its directory addresses is the Primary user's email {}",
                        primary.as_ref().map(|p| p.as_str()).unwrap_or("(none)")
                    ),
                    now,
                ),
                release_tenant: true,
            },
        }))
    }

    async fn settle_attempt(
        &self,
        org: &OrgId,
        seen: &Connection,
        attempt: Attempt,
    ) -> Result<Connection> {
        let now = OffsetDateTime::now_utc();
        let within_grace = seen
            .granted_at
            .is_some_and(|at| now - at < self.config.propagation_grace);
        let (action, next) = match attempt {
            Attempt::Proven => (
                AuditAction::ConnectionVerified,
                Connection {
                    status: ConnectionStatus::Connected,
                    last_verified_at: Some(now),
                    last_error: None,
                    ..seen.clone()
                },
            ),
            Attempt::Propagating(failure) if within_grace => {
                let unchanged = seen.status == ConnectionStatus::Verifying
                    && seen.last_error.as_ref().map(|f| f.code) == Some(failure.code);
                if unchanged {
                    // Polling must not grow the audit log: nothing changed, nothing is written.
                    return Ok(seen.clone());
                }
                (
                    AuditAction::ConnectionVerified,
                    Connection {
                        status: ConnectionStatus::Verifying,
                        last_error: Some(failure),
                        ..seen.clone()
                    },
                )
            }
            Attempt::Propagating(failure)
            | Attempt::Failed {
                failure,
                release_tenant: false,
            } => (AuditAction::ConnectionFailed, seen.failed(failure)),
            Attempt::Failed {
                failure,
                release_tenant: true,
            } => (
                AuditAction::ConnectionFailed,
                Connection {
                    tenant_id: None,
                    ..seen.failed(failure)
                },
            ),
        };
        self.replace_connection(org, seen, next, action, now).await
    }

    /// One attempt for a connection still "verifying"; any other is returned as it is.
    pub async fn settle_connection(&self, org: &OrgId) -> Result<Connection> {
        let connection = self.store.connection(org).await?;
        if connection.status != ConnectionStatus::Verifying {
            return Ok(connection);
        }
        self.prove_grant(org, Instant::now()).await
    }

    /// The scheduled pass: one attempt for every org still "verifying", so a slow propagation
    /// ends connected (or, past the grace window, in error) without anyone reading the status.
    /// Returns how many orgs it looked at.
    pub async fn settle_verifying_connections(&self) -> Result<usize> {
        let mut seen = 0;
        let mut page = PageRequest {
            limit: 100,
            after: None,
        };
        loop {
            let chunk = self
                .store
                .orgs_with_connection(ConnectionStatus::Verifying, page.clone())
                .await?;
            for org in &chunk.items {
                seen += 1;
                // One org's trouble does not stop the others.
                if let Err(e) = self.settle_connection(org).await {
                    tracing::warn!(org = %org, error = %e, "cannot settle a verifying connection");
                }
            }
            match chunk.next {
                Some(next) => page.after = Some(next),
                None => return Ok(seen),
            }
        }
    }
}
