//! Microsoft's redirects to our callback: the sign-in leg (code → verified ID token → rules →
//! tenant bound → on to admin consent for that tenant) and the admin-consent leg (the tenant
//! must be the bound one → the grant is proven). Nothing a browser sends is trusted: `state` is
//! signed and single-use, `tenant` is only compared with what the ID token proved.

use std::time::Instant;

use time::OffsetDateTime;

use super::Services;
use super::grant::failure_of;
use crate::admin_identity;
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::connection::{Connection, ConnectionStatus, MicrosoftAccount};
use crate::consent::{ConsentLeg, ConsentRequest};
use crate::consent_state::{self, SignedClaims, StateRejection};
use crate::error::{DomainError, Result, RuleViolation};
use crate::failure::{Failure, FailureCode};
use crate::ids::{OrgId, TenantId};
use crate::secret::Freshness;

/// The query of Microsoft's redirect to our callback, as received (either leg).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentRedirect {
    pub state: Option<String>,
    /// Sign-in leg.
    pub code: Option<String>,
    /// Admin-consent leg.
    pub admin_consent: Option<String>,
    pub tenant: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Why a callback was refused without changing anything. Logged, counted, and audited on the
/// org when the state names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingState,
    MalformedState,
    BadSignature,
    ExpiredState,
    /// Validly signed, but its nonce was already used (or never stored).
    ReplayedState,
    /// The state's leg does not match what the redirect carries.
    WrongLeg,
    /// The org's connection moved on since this state was issued.
    StaleRequest,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingState => "missing_state",
            Refusal::MalformedState => "malformed_state",
            Refusal::BadSignature => "bad_signature",
            Refusal::ExpiredState => "expired_state",
            Refusal::ReplayedState => "replayed_state",
            Refusal::WrongLeg => "wrong_leg",
            Refusal::StaleRequest => "stale_request",
        }
    }
}

/// What the callback tells the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// Signed in and the tenant bound: go to Microsoft's admin-consent page at this URL.
    ContinueToConsent(String),
    Connected,
    /// Consent was given; Microsoft has not propagated it yet. The service settles it.
    Verifying,
    Failed(FailureCode),
    /// A late answer for an org already connected: recorded, the connection kept.
    Ignored,
    /// Not ours, forged, expired or replayed: nothing changed.
    Refused {
        reason: Refusal,
        org: Option<OrgId>,
    },
}

impl ConsentOutcome {
    /// The short code the front end receives (`?connection=…`).
    pub fn code(&self) -> String {
        match self {
            Self::ContinueToConsent(_) => "continue".into(),
            Self::Connected | Self::Ignored => "connected".into(),
            Self::Verifying => "verifying".into(),
            Self::Failed(code) => code.as_str(),
            Self::Refused { .. } => "invalid_request".into(),
        }
    }
}

/// `AADSTS65004: User declined…` → `AADSTS65004`.
pub(crate) fn aadsts_code(description: &str) -> Option<String> {
    let start = description.find("AADSTS")?;
    let digits: String = description[start + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

/// An `error` on the admin-consent redirect, in our catalogue.
fn consent_error(error: &str, description: &str, at: OffsetDateTime) -> Failure {
    let aadsts = aadsts_code(description);
    let code = match (error, aadsts.as_deref()) {
        (_, Some("AADSTS65004")) | ("access_denied", None) => FailureCode::ConsentDeclined,
        (_, Some("AADSTS90094")) => FailureCode::NeedAdminApproval,
        ("consent_required", _) => FailureCode::ConsentRequired,
        _ => FailureCode::ConsentFailed,
    };
    let ms_code = aadsts.unwrap_or_else(|| error.to_owned());
    Failure::new(code, Some(&ms_code), description, at)
}

impl Services {
    /// Handles either leg of Microsoft's redirect.
    pub async fn complete_consent(
        &self,
        redirect: ConsentRedirect,
        now: OffsetDateTime,
    ) -> Result<ConsentOutcome> {
        let request = match self.redeem_state(redirect.state.as_deref(), now).await? {
            Ok(request) => request,
            Err((reason, org)) => return self.refuse(reason, org, now, None).await,
        };
        match request.leg.clone() {
            ConsentLeg::SignIn {
                pkce_verifier,
                oidc_nonce,
            } => {
                if redirect.admin_consent.is_some() || redirect.tenant.is_some() {
                    return self
                        .refuse(Refusal::WrongLeg, Some(request.org), now, None)
                        .await;
                }
                self.finish_sign_in(&request, &redirect, &pkce_verifier, &oidc_nonce, now)
                    .await
            }
            ConsentLeg::AdminConsent { tenant, account } => {
                if redirect.code.is_some() {
                    return self
                        .refuse(Refusal::WrongLeg, Some(request.org), now, None)
                        .await;
                }
                self.finish_admin_consent(&request, &redirect, tenant, account, now)
                    .await
            }
        }
    }

    async fn finish_sign_in(
        &self,
        request: &ConsentRequest,
        redirect: &ConsentRedirect,
        pkce_verifier: &str,
        oidc_nonce: &str,
        now: OffsetDateTime,
    ) -> Result<ConsentOutcome> {
        let org = &request.org;
        let seen = self.store.connection(org).await?;
        if seen.status != ConnectionStatus::PendingSignIn {
            // Only the newest activation may continue: a second tab's sign-in must not undo a
            // connection (or an attempt) that moved on.
            return self
                .refuse(Refusal::StaleRequest, Some(org.clone()), now, None)
                .await;
        }
        let code = match (&redirect.error, &redirect.code) {
            (Some(error), _) => {
                let description = redirect.error_description.clone().unwrap_or_default();
                let ms_code = aadsts_code(&description).unwrap_or_else(|| error.clone());
                let failure =
                    Failure::new(FailureCode::SignInFailed, Some(&ms_code), description, now);
                return self.fail_attempt(org, &seen, failure, now).await;
            }
            (None, Some(code)) => code,
            (None, None) => {
                let failure = Failure::new(
                    FailureCode::SignInFailed,
                    Some("missing_code"),
                    "Microsoft's answer carried neither a code nor an error",
                    now,
                );
                return self.fail_attempt(org, &seen, failure, now).await;
            }
        };
        let account = match self
            .sign_in
            .finish_sign_in(request.app, code, pkce_verifier, oidc_nonce)
            .await
        {
            Ok(account) => account,
            Err(e) => {
                return self
                    .fail_attempt(org, &seen, failure_of(&e, now), now)
                    .await;
            }
        };
        let who = account
            .preferred_username
            .clone()
            .unwrap_or_else(|| account.object_id.clone());
        if let Err(code) = admin_identity::may_grant_consent(&account) {
            let failure = Failure::new(
                code,
                None,
                format!("{who} signed in to tenant {}", account.tenant),
                now,
            );
            return self.fail_attempt(org, &seen, failure, now).await;
        }
        self.bind_and_continue(request, &seen, account.tenant, who, account.object_id, now)
            .await
    }

    /// Binds the proven tenant to the org and issues the admin-consent leg's state, in one
    /// transaction; then sends the admin to that tenant's consent page.
    async fn bind_and_continue(
        &self,
        request: &ConsentRequest,
        seen: &Connection,
        tenant: TenantId,
        who: String,
        object_id: String,
        now: OffsetDateTime,
    ) -> Result<ConsentOutcome> {
        let org = &request.org;
        let account = MicrosoftAccount {
            object_id,
            user_principal_name: Some(who),
        };
        let next_request = ConsentRequest::new(
            org,
            &request.initiated_by,
            request.app,
            now + self.config.consent_ttl,
            ConsentLeg::AdminConsent {
                tenant,
                account: account.clone(),
            },
        );
        // Everything that can fail without writing comes first: a bound tenant is never left
        // behind by an answer that could not go on to the consent page.
        let key = self.secrets.state_signing_key(Freshness::Cached).await?;
        let state = consent_state::sign(&next_request, key.expose());
        let url = self
            .sign_in
            .admin_consent_url(request.app, &tenant, &state)
            .await
            .map_err(|e| DomainError::Unavailable(format!("cannot build the consent URL: {e}")))?;
        let pending = Connection {
            status: ConnectionStatus::PendingConsent,
            tenant_id: Some(tenant),
            granted_by: Some(account),
            attempt: Some(next_request.nonce.clone()),
            pending_until: Some(next_request.expires_at.unix_timestamp()),
            last_error: None,
            version: seen.version + 1,
            ..seen.clone()
        };
        let audit = AuditEvent::new(
            org,
            now,
            Actor::System("consent-callback".into()),
            AuditAction::AdminSignedIn,
            "connection",
        )
        .change(Some(seen), Some(&pending));
        match self
            .store
            .bind_tenant(tenant, &next_request, &pending, audit)
            .await
        {
            Ok(()) => Ok(ConsentOutcome::ContinueToConsent(url)),
            Err(DomainError::Rule(RuleViolation::TenantInUse)) => {
                let failure = Failure::new(
                    FailureCode::TenantInUse,
                    None,
                    format!("tenant {tenant} is connected to another organisation"),
                    now,
                );
                self.fail_attempt(org, seen, failure, now).await
            }
            Err(DomainError::Conflict(_)) => {
                self.refuse(Refusal::StaleRequest, Some(org.clone()), now, None)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    async fn finish_admin_consent(
        &self,
        request: &ConsentRequest,
        redirect: &ConsentRedirect,
        tenant: TenantId,
        account: MicrosoftAccount,
        now: OffsetDateTime,
    ) -> Result<ConsentOutcome> {
        let org = &request.org;
        let seen = self.store.connection(org).await?;
        if seen.status == ConnectionStatus::Connected {
            // A stale or second answer must not hurt a live connection.
            let event = AuditEvent::new(
                org,
                now,
                Actor::System("consent-callback".into()),
                AuditAction::CallbackIgnored,
                "connection",
            )
            .change(
                None,
                Some(&serde_json::json!({
                    "error": redirect.error,
                    "error_description": redirect.error_description,
                })),
            );
            self.store.append(event).await?;
            return Ok(ConsentOutcome::Ignored);
        }
        // Only the answer to the link this attempt issued: a left-over link of an earlier
        // attempt (same admin, same tenant) must not end this one.
        let current_attempt = seen.status == ConnectionStatus::PendingConsent
            && seen.attempt.as_deref() == Some(request.nonce.as_str())
            && seen.tenant_id == Some(tenant)
            && seen.granted_by.as_ref().map(|a| &a.object_id) == Some(&account.object_id);
        if !current_attempt {
            return self
                .refuse(Refusal::StaleRequest, Some(org.clone()), now, None)
                .await;
        }
        if let Some(error) = &redirect.error {
            let description = redirect.error_description.clone().unwrap_or_default();
            let failure = consent_error(error, &description, now);
            return self.fail_attempt(org, &seen, failure, now).await;
        }
        let granted = redirect
            .admin_consent
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let named = redirect
            .tenant
            .as_deref()
            .and_then(|t| TenantId::parse(t).ok());
        if named != Some(tenant) || !granted {
            // The one value a bad actor can put here is exactly the one we ignore: the tenant
            // was proven at sign-in, and an answer naming another is an attack or a mix-up.
            let detail = serde_json::json!({
                "bound_tenant": tenant.to_string(),
                "redirect_tenant": redirect.tenant.as_deref().map(|t| t.chars().take(64).collect::<String>()),
                "admin_consent": redirect.admin_consent,
            });
            let failure = Failure::new(
                FailureCode::TenantMismatch,
                None,
                "Microsoft's answer did not confirm consent for the tenant you signed in to",
                now,
            );
            self.fail_attempt(org, &seen, failure, now).await?;
            return self
                .refuse_audited(org, "tenant_mismatch", detail, now)
                .await
                .map(|()| ConsentOutcome::Failed(FailureCode::TenantMismatch));
        }
        let verifying = Connection {
            status: ConnectionStatus::Verifying,
            granted_at: Some(now),
            attempt: None,
            pending_until: None,
            last_error: None,
            ..seen.clone()
        };
        self.grants
            .replace_connection(org, &seen, verifying, AuditAction::ConsentGranted, now)
            .await?;
        let deadline = Instant::now() + self.config.verify_budget;
        let connection = self.grants.prove_grant(org, deadline).await?;
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

    /// Ends the current attempt in error and releases any tenant it bound: a tenant is held
    /// only by a grant (verifying, connected, needing consent again), never by an attempt that
    /// failed or was abandoned.
    async fn fail_attempt(
        &self,
        org: &OrgId,
        seen: &Connection,
        failure: Failure,
        now: OffsetDateTime,
    ) -> Result<ConsentOutcome> {
        let code = failure.code;
        let next = Connection {
            status: ConnectionStatus::Error,
            tenant_id: None,
            attempt: None,
            pending_until: None,
            last_error: Some(failure),
            ..seen.clone()
        };
        let action = match code {
            FailureCode::ConsentDeclined | FailureCode::NeedAdminApproval => {
                AuditAction::ConsentFailed
            }
            _ => AuditAction::ConnectionFailed,
        };
        self.grants
            .replace_connection(org, seen, next, action, now)
            .await?;
        Ok(ConsentOutcome::Failed(code))
    }

    async fn refuse(
        &self,
        reason: Refusal,
        org: Option<OrgId>,
        now: OffsetDateTime,
        detail: Option<serde_json::Value>,
    ) -> Result<ConsentOutcome> {
        if let Some(org) = &org {
            self.refuse_audited(org, reason.as_str(), detail.unwrap_or_default(), now)
                .await?;
        }
        Ok(ConsentOutcome::Refused { reason, org })
    }

    /// A security event on the org, bounded per reason and window (see
    /// [`AuditEvent::refusal`]). An org that no longer exists gets no event.
    async fn refuse_audited(
        &self,
        org: &OrgId,
        reason: &str,
        detail: serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<()> {
        let event = AuditEvent::refusal(org, now, self.config.refusal_audit_window, reason, detail);
        match self.store.append(event).await {
            Ok(()) | Err(DomainError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks signature and expiry, then consumes the nonce. A refusal names the org when the
    /// state was validly signed.
    async fn redeem_state(
        &self,
        state: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<std::result::Result<ConsentRequest, (Refusal, Option<OrgId>)>> {
        let Some(state) = state else {
            return Ok(Err((Refusal::MissingState, None)));
        };
        let claims = match self.verify_state(state, now).await? {
            Ok(claims) => claims,
            Err(StateRejection::Malformed) => return Ok(Err((Refusal::MalformedState, None))),
            Err(StateRejection::BadSignature) => return Ok(Err((Refusal::BadSignature, None))),
            Err(StateRejection::Expired) => return Ok(Err((Refusal::ExpiredState, None))),
        };
        let request = match self.store.take_consent_request(&claims.nonce, now).await {
            Ok(r) => r,
            Err(DomainError::NotFound(_)) => {
                return Ok(Err((Refusal::ReplayedState, Some(claims.org))));
            }
            Err(e) => return Err(e),
        };
        let matches = request.org == claims.org
            && request.initiated_by == claims.initiated_by
            && request.app == claims.app
            && request.leg.kind() == claims.leg;
        Ok(if matches {
            Ok(request)
        } else {
            Err((Refusal::ReplayedState, Some(claims.org)))
        })
    }

    /// Verifies with the cached key; on a bad signature reads the key again (it may have been
    /// rotated), but at most once per `state_key_min_refresh`.
    async fn verify_state(
        &self,
        state: &str,
        now: OffsetDateTime,
    ) -> Result<std::result::Result<SignedClaims, StateRejection>> {
        let key = self.secrets.state_signing_key(Freshness::Cached).await?;
        let first = consent_state::verify(state, key.expose(), now);
        if first != Err(StateRejection::BadSignature) {
            return Ok(first);
        }
        let may_refresh = {
            let mut last = self
                .key_refreshed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= self.config.state_key_min_refresh);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if !may_refresh {
            return Ok(first);
        }
        let fresh = self.secrets.state_signing_key(Freshness::Refresh).await?;
        Ok(consent_state::verify(state, fresh.expose(), now))
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
