//! Per-mailbox sync bookkeeping: the delta position of each folder, and the lease of a running job.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{Email, OrgId};

/// The folders we capture, by their Graph well-known names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailFolder {
    Inbox,
    SentItems,
}

impl MailFolder {
    pub const ALL: [Self; 2] = [Self::Inbox, Self::SentItems];

    /// The well-known folder name Graph uses in `/mailFolders/{name}`.
    pub fn well_known_name(self) -> &'static str {
        match self {
            Self::Inbox => "inbox",
            Self::SentItems => "sentitems",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.well_known_name() == s)
    }
}

/// Where a folder's delta chain stands. Both links are opaque URLs, followed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "url", rename_all = "snake_case")]
pub enum SyncLink {
    /// Mid-round: the next page of the current round.
    Next(String),
    /// Round complete: the link that returns changes since.
    Delta(String),
}

impl SyncLink {
    pub fn url(&self) -> &str {
        match self {
            SyncLink::Next(u) | SyncLink::Delta(u) => u,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxCursor {
    pub org: OrgId,
    pub mailbox: Email,
    pub folder: MailFolder,
    pub link: SyncLink,
    #[serde(with = "time::serde::rfc3339")]
    pub saved_at: OffsetDateTime,
    /// Set while the folder is being read again from scratch after its delta link expired
    /// (410): when that resync round began. Kept on every page of the round, so a crash
    /// mid-round still knows, at the round's end, that archived messages written before this
    /// instant and not returned again are gone. Absent on older items (read as `None`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub resync_started_at: Option<OffsetDateTime>,
}

/// Who holds a mailbox (a queued or running job) and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub until: OffsetDateTime,
}
