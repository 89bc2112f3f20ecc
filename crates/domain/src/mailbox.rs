//! Per-mailbox sync bookkeeping, kept on one item per mailbox: the delta position of each
//! folder, the lease of a queued or running job, and what the runs counted and when.

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

/// The mailbox's item as a run starts: its lease (running or not) and its folders' positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub lease: Option<Lease>,
    pub cursors: Vec<MailboxCursor>,
}

impl MailboxState {
    pub fn cursor(&self, folder: MailFolder) -> Option<&MailboxCursor> {
        self.cursors.iter().find(|c| c.folder == folder)
    }

    /// The lease, if it still runs at `now`.
    pub fn running_lease(&self, now: OffsetDateTime) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.until >= now)
    }
}

/// What a run has not written yet: the folders' new positions and the counts of the pages they
/// cover. Committed in one write, so a count and its position land together or not at all and a
/// replayed page is never counted twice. A page that stored nothing waits here for the next
/// write (losing it costs only a replay of an empty page), which is what lets an unchanged
/// mailbox cost one write at the end of its run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub cursors: Vec<MailboxCursor>,
    pub added: crate::user::MessageCounters,
}

impl Checkpoint {
    /// A folder's newer position replaces its older one.
    pub fn advance(&mut self, cursor: MailboxCursor) {
        self.cursors.retain(|c| c.folder != cursor.folder);
        self.cursors.push(cursor);
    }

    pub fn add(&mut self, counters: crate::user::MessageCounters) {
        self.added = self.added + counters;
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty() && self.added == crate::user::MessageCounters::default()
    }
}
