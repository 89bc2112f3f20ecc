//! One mailbox run of the sync: what it did and how it ended, for "recent runs" and support.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::failure::Failure;
use crate::ids::{Email, OrgId};
use crate::user::MessageCounters;

/// A "sync now" within this long of the org's last accepted one joins it (same request id)
/// instead of queuing another walk of the org: repeated clicks, or a script, cost one walk a
/// minute. Leases already keep any mailbox from being queued twice.
pub const SYNC_NOW_JOIN_WINDOW: time::Duration = time::Duration::minutes(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Synced,
    /// Stopped on a user-level failure (see `error`).
    UserError,
    /// Stopped on an org-level failure (see `error`).
    OrgError,
    /// Throttled past the invocation's time: back on the queue.
    Deferred,
    /// Transient trouble: the queue delivers it again.
    Failed,
    /// Out of its invocation's time: the position is saved and a continuation job goes on.
    Continued,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRun {
    pub org: OrgId,
    pub mailbox: Email,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub outcome: RunOutcome,
    pub counters: MessageCounters,
    /// Successful Graph delta pages.
    pub pages: u64,
    pub error: Option<Failure>,
    /// The "sync now" request the run belongs to (none for scheduled runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}
