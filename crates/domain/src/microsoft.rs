//! Microsoft, as the domain needs it: sign the admin in, read the directory (which also proves
//! a grant), read a folder's delta. The adapter
//! (`crates/msgraph`) speaks the identity platform and Graph; here are only outcomes.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::connection::AppRegistration;
use crate::failure::FailureCode;
use crate::ids::{Email, TenantId};
use crate::mailbox::{MailFolder, SyncLink};
use crate::message::{CapturedMessage, MessageRemoval};
use crate::secret::Sensitive;

/// Why Microsoft did not give us what we asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MicrosoftError {
    /// A refusal an admin (or operator) must act on; classified into our catalogue.
    #[error("{code:?}: {message}")]
    Refused {
        code: FailureCode,
        /// Microsoft's `error.code` or `AADSTS…` code, verbatim.
        microsoft_code: String,
        /// Microsoft's message, verbatim.
        message: String,
    },
    /// 410 Gone / `SyncStateNotFound`: the folder's delta link expired; start the folder over.
    #[error("the delta link expired")]
    SyncStateExpired,
    /// Throttled, and the wait Microsoft asked for does not fit in the time left.
    #[error("throttled; retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    /// 5xx, resets, truncated bodies that outlasted the adapter's retries.
    #[error("Microsoft unavailable: {message}")]
    Unavailable { message: String },
}

impl MicrosoftError {
    pub fn refused(
        code: FailureCode,
        microsoft_code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Refused {
            code,
            microsoft_code: microsoft_code.into(),
            message: message.into(),
        }
    }
}

/// A user of the customer's directory, as Graph returns it. `id` (the object id) is the key:
/// UPNs and addresses change on a rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    /// `SMTP:primary@…` and `smtp:alias@…` entries, verbatim.
    pub proxy_addresses: Vec<String>,
    pub display_name: Option<String>,
}

impl DirectoryUser {
    /// Is `email` one of this user's addresses (UPN, mail or a proxy address)? Exchange treats
    /// addresses case-insensitively, and so do we.
    pub fn has_address(&self, email: &Email) -> bool {
        let wanted = email.key();
        let smtp = |p: &str| {
            p.split_once(':')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("smtp"))
                .map(|(_, a)| a.to_owned())
        };
        std::iter::once(self.user_principal_name.clone())
            .chain(self.mail.clone())
            .chain(self.proxy_addresses.iter().filter_map(|p| smtp(p)))
            .any(|a| a.eq_ignore_ascii_case(wanted))
    }
}

/// Reads of the customer's directory with the app's own (application) permission
/// User.Read.All. A successful read also proves that the tenant granted the app.
#[async_trait]
pub trait Directory: Send + Sync {
    /// `GET /users/{id}`: `None` when the directory has no such user.
    async fn user_by_id(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        id: &str,
    ) -> Result<Option<DirectoryUser>, MicrosoftError>;

    /// The directory user a platform email belongs to: by UPN, else by `mail`, else by a proxy
    /// address. `None` only when every lookup missed.
    async fn find_user(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        email: &Email,
    ) -> Result<Option<DirectoryUser>, MicrosoftError>;
}

/// What Microsoft's verified ID token says about the person who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInAccount {
    /// `tid`: the tenant the person signed in to (proven by the token's signature and issuer).
    pub tenant: TenantId,
    /// `oid`: the person's immutable object id in that tenant (= the Graph user id).
    pub object_id: String,
    /// `preferred_username`: mutable; shown to people, never used to decide anything.
    pub preferred_username: Option<String>,
    /// `wids`: directory role template ids; `None` when the token carries no such claim.
    pub directory_roles: Option<Vec<String>>,
}

/// Where to send the admin to sign in, and the secrets that bind the answer to this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInStart {
    pub url: String,
    /// PKCE code verifier: kept on our side, sent only when the code is redeemed.
    pub pkce_verifier: Sensitive<String>,
    /// OpenID Connect `nonce`, echoed inside the ID token.
    pub nonce: String,
}

/// The two legs of connecting: OpenID Connect sign-in, then admin consent for that tenant.
#[async_trait]
pub trait AdminSignIn: Send + Sync {
    /// The authorization-code (+ PKCE) sign-in URL for `app`; `state` is echoed back.
    async fn start_sign_in(
        &self,
        app: AppRegistration,
        state: &str,
    ) -> Result<SignInStart, MicrosoftError>;

    /// Redeems the code and verifies the ID token (signature against the tenant's published
    /// keys, issuer, audience, nonce, lifetime).
    async fn finish_sign_in(
        &self,
        app: AppRegistration,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<SignedInAccount, MicrosoftError>;

    /// The admin-consent URL for exactly `tenant` (never `organizations`).
    async fn admin_consent_url(
        &self,
        app: AppRegistration,
        tenant: &TenantId,
        state: &str,
    ) -> Result<String, MicrosoftError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRequest<'a> {
    pub tenant: &'a TenantId,
    pub app: AppRegistration,
    /// The platform email: logs and the per-mailbox request gate.
    pub mailbox: &'a Email,
    /// The directory object id: what Graph is addressed with (survives renames).
    pub user_id: &'a str,
    pub folder: MailFolder,
    /// Where the folder stands; `None` starts a fresh round.
    pub from: Option<&'a SyncLink>,
    /// `Prefer: odata.maxpagesize`.
    pub page_size: u32,
    /// A fresh round only fetches messages received since then.
    pub backfill_since: Option<OffsetDateTime>,
    /// Whether to `$select` the body (only when the app's permission includes it).
    pub include_body: bool,
    /// Give up waiting (return `Throttled`) rather than sleep past this instant.
    pub deadline: std::time::Instant,
}

/// One page of a folder's delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPage {
    pub messages: Vec<CapturedMessage>,
    pub removals: Vec<MessageRemoval>,
    /// The page's `@odata.nextLink`, or on the round's last page its `@odata.deltaLink`.
    pub next: SyncLink,
}

#[async_trait]
pub trait MailSource: Send + Sync {
    async fn delta_page(&self, request: DeltaRequest<'_>) -> Result<DeltaPage, MicrosoftError>;
}
