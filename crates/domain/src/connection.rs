//! The org's service-account connection to Microsoft 365.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::failure::Failure;
use crate::ids::{Email, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Never activated, or deleted.
    None,
    /// The Primary admin was sent to sign in with Microsoft; no answer yet.
    PendingSignIn,
    /// The admin signed in (tenant proven and bound) and was sent to the consent page.
    PendingConsent,
    /// Consent came back but the grant is not proven yet (Microsoft is still propagating it).
    Verifying,
    Connected,
    /// The grant no longer matches the settings (e.g. read-only was switched): consent again.
    NeedsReconsent,
    Error,
}

impl ConnectionStatus {
    pub const ALL: [Self; 7] = [
        Self::None,
        Self::PendingSignIn,
        Self::PendingConsent,
        Self::Verifying,
        Self::Connected,
        Self::NeedsReconsent,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::PendingSignIn => "pending_sign_in",
            Self::PendingConsent => "pending_consent",
            Self::Verifying => "verifying",
            Self::Connected => "connected",
            Self::NeedsReconsent => "needs_reconsent",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Which of our two multi-tenant app registrations a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppRegistration {
    /// Mail.ReadWrite + User.Read.All.
    Default,
    /// Mail.Read + User.Read.All.
    ReadOnly,
}

impl AppRegistration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::ReadOnly => "read_only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Default, Self::ReadOnly]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// A person in a Microsoft Entra tenant, by Microsoft's identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicrosoftAccount {
    /// `oid`: immutable; the key every check uses.
    pub object_id: String,
    /// `preferred_username` at sign-in (usually the UPN): for people to read.
    pub user_principal_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub status: ConnectionStatus,
    /// Bound only from a verified ID token's `tid`; a tenant is bound to at most one org.
    pub tenant_id: Option<TenantId>,
    pub app: Option<AppRegistration>,
    /// The platform user (the Primary admin) who pressed Activate.
    #[serde(default)]
    pub activated_by: Option<Email>,
    /// The Microsoft account that signed in and consented. (Items written before accounts were
    /// proven named a platform email here: read as unknown, so the grant must be proven again.)
    #[serde(default, deserialize_with = "account_or_legacy")]
    pub granted_by: Option<MicrosoftAccount>,
    /// The consent round trip this connection waits for (its request nonce): only that
    /// answer may end the attempt, not a left-over link of an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// While `pending_consent`, when the attempt's link expires (epoch seconds): after it, the
    /// tenant this attempt bound may be taken by another org (an abandoned sign-in must not
    /// hold a tenant for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub granted_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_verified_at: Option<OffsetDateTime>,
    pub last_error: Option<Failure>,
    /// Bumped by every change; 0 means the connection was never written.
    pub version: u64,
}

fn account_or_legacy<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<MicrosoftAccount>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Account(MicrosoftAccount),
        // Recognised to be dropped: an email proves nothing about who consented.
        Legacy(#[allow(dead_code)] String),
    }
    Ok(match Option::<Stored>::deserialize(d)? {
        Some(Stored::Account(a)) => Some(a),
        Some(Stored::Legacy(_)) | None => None,
    })
}

impl Connection {
    /// The connection after a failure of its grant (the sync, a verification): in error with
    /// that cause, everything else kept. The one such transition.
    pub fn failed(&self, failure: Failure) -> Connection {
        Connection {
            status: ConnectionStatus::Error,
            last_error: Some(failure),
            ..self.clone()
        }
    }

    /// Why no mailbox of the org can sync through this connection, or `None` while it works
    /// (or is only waiting for Microsoft to propagate a fresh grant).
    pub fn blocking_failure(
        &self,
        service_account_on: bool,
        at: time::OffsetDateTime,
    ) -> Option<Failure> {
        use crate::failure::FailureCode;
        let failure = |code, message: &str| Some(Failure::new(code, None, message, at));
        if !service_account_on {
            return failure(FailureCode::ServiceAccountOff, "Use Service Account is off");
        }
        match self.status {
            ConnectionStatus::Connected | ConnectionStatus::Verifying => None,
            ConnectionStatus::Error => self
                .last_error
                .clone()
                .or_else(|| failure(FailureCode::NotConnected, "the connection is in error")),
            ConnectionStatus::NeedsReconsent => failure(
                FailureCode::NeedsReconsent,
                "Read Only Permissions changed after consent",
            ),
            ConnectionStatus::None
            | ConnectionStatus::PendingSignIn
            | ConnectionStatus::PendingConsent => failure(
                FailureCode::NotConnected,
                "the service account is not connected",
            ),
        }
    }

    pub fn none() -> Self {
        Self {
            status: ConnectionStatus::None,
            tenant_id: None,
            app: None,
            activated_by: None,
            granted_by: None,
            attempt: None,
            pending_until: None,
            granted_at: None,
            last_verified_at: None,
            last_error: None,
            version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_stored_with_an_email_as_granted_by_still_reads() {
        let mut legacy = serde_json::to_value(Connection::none()).unwrap();
        legacy["granted_by"] = serde_json::json!("root@contoso.com");
        let read: Connection = serde_json::from_value(legacy).unwrap();
        assert_eq!(read.granted_by, None);
    }
}
