//! "My Connection": activation (the start of the sign-in leg), verification, deletion. The
//! callback's two legs are in [`super::callback`], proving a grant in `grant`.

use std::time::Instant;

use time::OffsetDateTime;

use super::Services;
use super::access::{Action, Principal, authorize};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::connection::{Connection, ConnectionStatus};
use crate::consent::{ConsentLeg, ConsentRequest};
use crate::consent_state;
use crate::error::{DomainError, Result};
use crate::secret::Freshness;

/// Where the Primary admin is sent to connect: Microsoft's sign-in page, which leads on to
/// the admin-consent page of the tenant they sign in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentLink {
    pub url: String,
    pub expires_at: OffsetDateTime,
}

impl Services {
    /// Starts connecting: the Primary admin signs in with Microsoft first (OpenID Connect, code +
    /// PKCE), so the tenant is learnt from a verified ID token, never from a redirect parameter.
    /// Nothing is written unless the whole start is (request, connection, audit in one
    /// transaction): of concurrent activations one wins and the rest leave no trace.
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
        let current = self.store.connection(&p.org).await?;
        // A working grant is never dropped by a stray click: reconnecting is delete, then activate.
        if current.status == ConnectionStatus::Connected {
            return Err(DomainError::Precondition(
                "the connection is already active; delete it first to connect again",
            ));
        }
        let app = settings.app();
        let key = self.secrets.state_signing_key(Freshness::Cached).await?;
        let mut request = ConsentRequest::new(
            &p.org,
            &p.email,
            app,
            now + self.config.consent_ttl,
            ConsentLeg::SignIn {
                pkce_verifier: String::new(),
                oidc_nonce: String::new(),
            },
        );
        let state = consent_state::sign(&request, key.expose());
        let start = self
            .sign_in
            .start_sign_in(app, &state)
            .await
            .map_err(|e| DomainError::Unavailable(format!("cannot start the sign-in: {e}")))?;
        request.leg = ConsentLeg::SignIn {
            pkce_verifier: start.pkce_verifier.expose().clone(),
            oidc_nonce: start.nonce,
        };
        // A new attempt starts clean: whatever tenant an earlier attempt bound is proven again.
        let pending = Connection {
            status: ConnectionStatus::PendingSignIn,
            app: Some(app),
            activated_by: Some(p.email.clone()),
            version: current.version + 1,
            ..Connection::none()
        };
        let audit = AuditEvent::new(
            &p.org,
            now,
            Actor::User(p.email.clone()),
            AuditAction::ConnectionActivated,
            "connection",
        )
        .change(Some(&current), Some(&pending));
        self.store
            .start_round_trip(&request, &pending, audit)
            .await?;
        Ok(ConsentLink {
            url: start.url,
            expires_at: request.expires_at,
        })
    }

    /// "Verify now": proves a recorded grant again (connected, verifying or in error).
    pub async fn verify_connection(
        &self,
        p: &Principal,
        _now: OffsetDateTime,
    ) -> Result<Connection> {
        authorize(p, Action::ManageConnection)?;
        let connection = self.store.connection(&p.org).await?;
        if connection.granted_at.is_none() || connection.tenant_id.is_none() {
            return Err(DomainError::Precondition(
                "there is no grant to verify: activate the connection first",
            ));
        }
        self.grants.prove_grant(&p.org, Instant::now()).await
    }

    /// Clears the connection (and so releases its tenant); service-account syncs stop; it can
    /// be activated again. The Primary's action, like activating: it stops everyone's sync.
    pub async fn delete_connection(
        &self,
        p: &Principal,
        now: OffsetDateTime,
    ) -> Result<Connection> {
        authorize(p, Action::DeleteConnection)?;
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
