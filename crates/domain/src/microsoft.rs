//! Microsoft, as the domain needs it: prove a grant, read a folder's delta. The adapter
//! (`crates/msgraph`) speaks the identity platform and Graph; here are only outcomes.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::connection::AppRegistration;
use crate::failure::FailureCode;
use crate::ids::{Email, TenantId};
use crate::mailbox::{MailFolder, SyncLink};
use crate::message::{CapturedMessage, MessageRemoval};

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

/// The user Graph returned when a grant was proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: String,
    pub user_principal_name: String,
    pub display_name: Option<String>,
}

#[async_trait]
pub trait GrantVerifier: Send + Sync {
    /// Gets an app-only token for `tenant` with `app`'s credential, refuses a token issued for
    /// another tenant, and reads `user` from Graph. One attempt: the caller owns the retry
    /// policy (consent propagation takes seconds to minutes).
    async fn verify_grant(
        &self,
        tenant: &TenantId,
        app: AppRegistration,
        user: &Email,
    ) -> Result<DirectoryUser, MicrosoftError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRequest<'a> {
    pub tenant: &'a TenantId,
    pub app: AppRegistration,
    pub mailbox: &'a Email,
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
