//! "My Connection": activation, the admin-consent callback, verification, deletion.

use std::time::Instant;

use time::OffsetDateTime;

use super::Services;
use super::access::{Action, Principal, authorize};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::connection::{AppRegistration, Connection, ConnectionStatus};
use crate::consent::ConsentRequest;
use crate::consent_state;
use crate::error::{DomainError, Result};
use crate::failure::{Failure, FailureCode};
use crate::ids::{Email, OrgId, TenantId};
use crate::microsoft::MicrosoftError;
use crate::secret::Freshness;

/// The scope that grants the application permissions registered on the app.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentLink {
    pub url: String,
    pub expires_at: OffsetDateTime,
}

/// The query of Microsoft's redirect to our callback, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentRedirect {
    pub state: Option<String>,
    pub admin_consent: Option<String>,
    pub tenant: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Where the callback sends the admin back to, as a short code for the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentOutcome {
    Connected,
    /// Consent was given; Microsoft has not propagated it yet. Settles on the next read or run.
    Verifying,
    Failed(FailureCode),
    /// Our state was missing, forged, expired or replayed: nothing was written.
    InvalidRequest,
}

impl ConsentOutcome {
    pub fn code(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Verifying => "verifying",
            Self::InvalidRequest => "invalid_request",
            Self::Failed(code) => match code {
                FailureCode::ConsentDeclined => "consent_declined",
                FailureCode::NeedAdminApproval => "need_admin_approval",
                FailureCode::ConsentRequired => "consent_required",
                FailureCode::ConsentFailed => "consent_failed",
                FailureCode::InsufficientPrivileges => "insufficient_privileges",
                FailureCode::AuthorizationIdentityNotFound => "authorization_identity_not_found",
                FailureCode::InvalidCredential => "invalid_credential",
                FailureCode::TenantNotFound => "tenant_not_found",
                FailureCode::ConditionalAccessBlocked => "conditional_access_blocked",
                FailureCode::TenantMismatch => "tenant_mismatch",
                _ => "connection_error",
            },
        }
    }
}

fn system_event(org: &OrgId, at: OffsetDateTime, action: AuditAction, actor: &str) -> AuditEvent {
    AuditEvent::new(org, at, Actor::System(actor.into()), action, "connection")
}

/// `AADSTS65004: User declined…` → `AADSTS65004`.
fn aadsts_code(description: &str) -> Option<String> {
    let start = description.find("AADSTS")?;
    let digits: String = description[start + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

/// Failures worth retrying right after consent: Microsoft may simply not know the grant yet.
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

fn failure_of(e: &MicrosoftError, at: OffsetDateTime) -> Failure {
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

impl Services {
    /// Returns Microsoft's admin-consent URL for the Primary admin to follow.
    pub async fn activate_connection(
        &self,
        p: &Principal,
        now: OffsetDateTime,
    ) -> Result<ConsentLink> {
        authorize(p, Action::ActivateConnection)?;
        let settings = self.store.settings(&p.org).await?;
        if !settings.use_service_account {
            return Err(DomainError::Precondition(
                "turn \"Use Service Account\" on before activating the connection",
            ));
        }
        // A working grant is never dropped by a stray click: reconnecting is delete, then activate.
        if self.store.connection(&p.org).await?.status == ConnectionStatus::Connected {
            return Err(DomainError::Precondition(
                "the connection is already active; delete it first to connect again",
            ));
        }
        let app = settings.app();
        let credential = self.secrets.app_credential(app, Freshness::Cached).await?;
        let key = self.secrets.state_signing_key(Freshness::Cached).await?;
        let request = ConsentRequest {
            nonce: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            org: p.org.clone(),
            initiated_by: p.email.clone(),
            app,
            expires_at: (now + self.config.consent_ttl)
                .replace_nanosecond(0)
                .unwrap_or(now + self.config.consent_ttl),
        };
        let state = consent_state::sign(&request, key.expose());
        self.store.put_consent_request(&request).await?;

        let current = self.store.connection(&p.org).await?;
        let pending = Connection {
            status: ConnectionStatus::PendingConsent,
            app: Some(app),
            last_error: None,
            version: current.version + 1,
            ..current.clone()
        };
        let audit = AuditEvent::new(
            &p.org,
            now,
            Actor::User(p.email.clone()),
            AuditAction::ConnectionActivated,
            "connection",
        )
        .change(Some(&current), Some(&pending));
        self.store.save_connection(&p.org, &pending, audit).await?;

        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &credential.client_id)
            .append_pair("scope", GRAPH_DEFAULT_SCOPE)
            .append_pair("redirect_uri", &self.config.consent_redirect_uri)
            .append_pair("state", &state)
            .finish();
        let authority = self.config.authority_url.trim_end_matches('/');
        Ok(ConsentLink {
            url: format!("{authority}/organizations/v2.0/adminconsent?{query}"),
            expires_at: request.expires_at,
        })
    }

    /// Handles Microsoft's redirect. Never trusts `tenant` alone: the grant is proven by a
    /// token for that tenant and a Graph call, retried while Microsoft propagates it.
    pub async fn complete_consent(
        &self,
        redirect: ConsentRedirect,
        now: OffsetDateTime,
    ) -> Result<ConsentOutcome> {
        let Some(request) = self.redeem_state(redirect.state.as_deref(), now).await? else {
            return Ok(ConsentOutcome::InvalidRequest);
        };
        let org = request.org.clone();

        if let Some(error) = redirect.error.as_deref() {
            let description = redirect.error_description.clone().unwrap_or_default();
            let aadsts = aadsts_code(&description);
            let code = match (error, aadsts.as_deref()) {
                (_, Some("AADSTS65004")) | ("access_denied", None) => FailureCode::ConsentDeclined,
                (_, Some("AADSTS90094")) => FailureCode::NeedAdminApproval,
                ("consent_required", _) => FailureCode::ConsentRequired,
                _ => FailureCode::ConsentFailed,
            };
            let ms_code = aadsts.unwrap_or_else(|| error.to_owned());
            let failure = Failure::new(code, Some(&ms_code), description, now);
            self.record_connection(&org, now, AuditAction::ConsentFailed, |c| Connection {
                status: ConnectionStatus::Error,
                last_error: Some(failure.clone()),
                ..c
            })
            .await?;
            return Ok(ConsentOutcome::Failed(code));
        }

        let granted = redirect
            .admin_consent
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let tenant = redirect
            .tenant
            .as_deref()
            .and_then(|t| TenantId::parse(t).ok());
        let (true, Some(tenant)) = (granted, tenant) else {
            let failure = Failure::new(
                FailureCode::ConsentFailed,
                Some("missing_tenant"),
                "Microsoft's answer named no tenant",
                now,
            );
            self.record_connection(&org, now, AuditAction::ConsentFailed, |c| Connection {
                status: ConnectionStatus::Error,
                last_error: Some(failure.clone()),
                ..c
            })
            .await?;
            return Ok(ConsentOutcome::Failed(FailureCode::ConsentFailed));
        };

        self.record_connection(&org, now, AuditAction::ConsentGranted, |c| Connection {
            status: ConnectionStatus::Verifying,
            tenant_id: Some(tenant),
            app: Some(request.app),
            granted_by: Some(request.initiated_by.clone()),
            granted_at: Some(now),
            last_error: None,
            ..c
        })
        .await?;
        let deadline = Instant::now() + self.config.verify_budget;
        let connection = self
            .verify_with_retries(&org, tenant, request.app, &request.initiated_by, deadline)
            .await?;
        Ok(match connection.status {
            ConnectionStatus::Connected => ConsentOutcome::Connected,
            ConnectionStatus::Verifying => ConsentOutcome::Verifying,
            _ => ConsentOutcome::Failed(
                connection
                    .last_error
                    .map(|f| f.code)
                    .unwrap_or(FailureCode::ConsentFailed),
            ),
        })
    }

    /// Checks signature and expiry, then consumes the nonce. `None` for anything not ours.
    async fn redeem_state(
        &self,
        state: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Option<ConsentRequest>> {
        let Some(state) = state else { return Ok(None) };
        let key = self.secrets.state_signing_key(Freshness::Cached).await?;
        let claims = match consent_state::verify(state, key.expose(), now) {
            Err(consent_state::StateRejection::BadSignature) => {
                // The key may have been rotated since we cached it.
                let fresh = self.secrets.state_signing_key(Freshness::Refresh).await?;
                consent_state::verify(state, fresh.expose(), now).ok()
            }
            other => other.ok(),
        };
        let Some(claims) = claims else {
            return Ok(None);
        };
        let request = match self.store.take_consent_request(&claims.nonce, now).await {
            Ok(r) => r,
            Err(DomainError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let matches = request.org == claims.org
            && request.initiated_by == claims.initiated_by
            && request.app == claims.app;
        Ok(matches.then_some(request))
    }

    /// Reads, changes and saves the connection with its audit event; retries once on a race.
    async fn record_connection(
        &self,
        org: &OrgId,
        now: OffsetDateTime,
        action: AuditAction,
        change: impl Fn(Connection) -> Connection,
    ) -> Result<Connection> {
        let mut attempt = 0;
        loop {
            let current = self.store.connection(org).await?;
            let next = Connection {
                version: current.version + 1,
                ..change(current.clone())
            };
            let audit =
                system_event(org, now, action, "consent").change(Some(&current), Some(&next));
            match self.store.save_connection(org, &next, audit).await {
                Ok(()) => return Ok(next),
                Err(DomainError::Conflict(_)) if attempt == 0 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn verify_with_retries(
        &self,
        org: &OrgId,
        tenant: TenantId,
        app: AppRegistration,
        user: &Email,
        deadline: Instant,
    ) -> Result<Connection> {
        let mut wait = self.config.verify_first_backoff;
        loop {
            let attempt = self.verifier.verify_grant(&tenant, app, user).await;
            let now = OffsetDateTime::now_utc();
            match attempt {
                Ok(_) => {
                    return self
                        .record_connection(org, now, AuditAction::ConnectionVerified, |c| {
                            Connection {
                                status: ConnectionStatus::Connected,
                                last_verified_at: Some(now),
                                last_error: None,
                                ..c
                            }
                        })
                        .await;
                }
                Err(e) if still_propagating(&e) && Instant::now() + wait < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(4));
                }
                Err(e) if still_propagating(&e) && self.within_grace(org, now).await? => {
                    // Out of time: leave it "verifying"; the next read or scheduled run settles it.
                    let failure = failure_of(&e, now);
                    return self
                        .record_connection(org, now, AuditAction::ConnectionVerified, |c| {
                            Connection {
                                status: ConnectionStatus::Verifying,
                                last_error: Some(failure.clone()),
                                ..c
                            }
                        })
                        .await;
                }
                Err(e) => {
                    let failure = failure_of(&e, now);
                    return self
                        .record_connection(org, now, AuditAction::ConnectionFailed, |c| {
                            Connection {
                                status: ConnectionStatus::Error,
                                last_error: Some(failure.clone()),
                                ..c
                            }
                        })
                        .await;
                }
            }
        }
    }

    /// Is the grant young enough that Microsoft may still be propagating it?
    async fn within_grace(&self, org: &OrgId, now: OffsetDateTime) -> Result<bool> {
        let granted_at = self.store.connection(org).await?.granted_at;
        Ok(granted_at.is_some_and(|at| now - at < self.config.propagation_grace))
    }

    /// One verification attempt for a connection still "verifying"; others are returned as-is.
    pub async fn settle_connection(&self, org: &OrgId) -> Result<Connection> {
        let connection = self.store.connection(org).await?;
        match (
            connection.status,
            connection.tenant_id,
            connection.app,
            connection.granted_by.clone(),
        ) {
            (ConnectionStatus::Verifying, Some(tenant), Some(app), Some(user)) => {
                self.verify_with_retries(org, tenant, app, &user, Instant::now())
                    .await
            }
            _ => Ok(connection),
        }
    }

    /// "Verify now": re-proves a recorded grant (connected, verifying or in error).
    pub async fn verify_connection(
        &self,
        p: &Principal,
        _now: OffsetDateTime,
    ) -> Result<Connection> {
        authorize(p, Action::ManageConnection)?;
        let connection = self.store.connection(&p.org).await?;
        let (Some(tenant), Some(app), Some(user)) = (
            connection.tenant_id,
            connection.app,
            connection.granted_by.clone(),
        ) else {
            return Err(DomainError::Precondition(
                "there is no grant to verify: activate the connection first",
            ));
        };
        self.verify_with_retries(&p.org, tenant, app, &user, Instant::now())
            .await
    }

    /// Clears the connection; service-account syncs stop; it can be activated again.
    pub async fn delete_connection(
        &self,
        p: &Principal,
        now: OffsetDateTime,
    ) -> Result<Connection> {
        authorize(p, Action::ManageConnection)?;
        let current = self.store.connection(&p.org).await?;
        let cleared = Connection {
            version: current.version + 1,
            ..Connection::none()
        };
        let audit = AuditEvent::new(
            &p.org,
            now,
            Actor::User(p.email.clone()),
            AuditAction::ConnectionDeleted,
            "connection",
        )
        .change(Some(&current), Some(&cleared));
        self.store.save_connection(&p.org, &cleared, audit).await?;
        Ok(cleared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_codes_are_read_from_descriptions() {
        assert_eq!(
            aadsts_code("AADSTS65004: User declined to consent").as_deref(),
            Some("AADSTS65004")
        );
        assert_eq!(
            aadsts_code("Trace ID: x AADSTS90094: Need admin approval").as_deref(),
            Some("AADSTS90094")
        );
        assert_eq!(aadsts_code("no code here"), None);
    }
}
