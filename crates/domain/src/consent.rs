//! A pending round trip to Microsoft (sign-in, then admin consent), bound to our signed state by
//! a single-use nonce.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::connection::{AppRegistration, MicrosoftAccount};
use crate::ids::{Email, OrgId, TenantId};

/// Which leg of connecting a request belongs to; each carries what its answer is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "leg", rename_all = "snake_case")]
pub enum ConsentLeg {
    /// OpenID Connect sign-in: the code is redeemed with the PKCE verifier, and the ID token
    /// must carry the nonce.
    SignIn {
        pkce_verifier: String,
        oidc_nonce: String,
    },
    /// Admin consent for the tenant the admin proved by signing in.
    AdminConsent {
        tenant: TenantId,
        account: MicrosoftAccount,
    },
}

impl ConsentLeg {
    pub fn kind(&self) -> LegKind {
        match self {
            ConsentLeg::SignIn { .. } => LegKind::SignIn,
            ConsentLeg::AdminConsent { .. } => LegKind::AdminConsent,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegKind {
    SignIn,
    AdminConsent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRequest {
    /// Random, unguessable, consumed exactly once.
    pub nonce: String,
    pub org: OrgId,
    pub initiated_by: Email,
    pub app: AppRegistration,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub leg: ConsentLeg,
}

impl ConsentRequest {
    /// A fresh request: a 256-bit random nonce, expiry cut to whole seconds (the signed state
    /// carries seconds).
    pub fn new(
        org: &OrgId,
        initiated_by: &Email,
        app: AppRegistration,
        expires_at: OffsetDateTime,
        leg: ConsentLeg,
    ) -> Self {
        Self {
            nonce: random_token(),
            org: org.clone(),
            initiated_by: initiated_by.clone(),
            app,
            expires_at: expires_at.replace_nanosecond(0).unwrap_or(expires_at),
            leg,
        }
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at
    }
}

/// 256 random bits as hex.
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
