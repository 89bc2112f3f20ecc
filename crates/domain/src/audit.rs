//! The audit trail: who changed what, from what, to what. Written in the same transaction as
//! the change it records, so neither exists without the other.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{Email, OrgId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    User(Email),
    /// The platform itself (scheduled sync, consent callback, an operator command).
    System(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    OrgCreated,
    SettingsChanged,
    UserAdded,
    UserRoleChanged,
    UserRemoved,
    PrimaryChanged,
    SyncToggled,
    ConnectionActivated,
    /// The admin signed in with Microsoft; the tenant was bound.
    AdminSignedIn,
    ConsentGranted,
    ConsentFailed,
    ConnectionVerified,
    ConnectionFailed,
    ConnectionDeleted,
    /// A callback carried something we refused (forged tenant, replayed state…). At most one
    /// per org, reason and window: see [`AuditEvent::refusal`].
    CallbackRefused,
    /// A late callback (e.g. from a second tab) arrived for a connected org and was ignored.
    CallbackIgnored,
    /// Someone read a captured message's body.
    MessageRead,
    /// Someone listed another person's captured mail (listings carry previews).
    MailListed,
    /// A mailbox's archive and sync position were deleted.
    MailboxPurged,
    /// The org's capture policy (exclusions, internal mail) changed.
    CapturePolicyChanged,
    /// Every archived message of one person (by address) was erased.
    PersonErased,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub org: OrgId,
    /// Unique, and sorts by time (time prefix + random suffix).
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: Actor,
    pub action: AuditAction,
    /// What was acted on, e.g. `user:adele@contoso.com` or `settings`.
    pub object: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl AuditEvent {
    pub fn new(
        org: &OrgId,
        at: OffsetDateTime,
        actor: Actor,
        action: AuditAction,
        object: impl Into<String>,
    ) -> Self {
        let millis = (at.unix_timestamp_nanos() / 1_000_000).max(0);
        Self {
            org: org.clone(),
            id: format!("{millis:013}-{}", uuid::Uuid::new_v4().simple()),
            at,
            actor,
            action,
            object: object.into(),
            before: None,
            after: None,
        }
    }

    /// A security refusal, keyed by window and reason rather than by a random id: a flood of
    /// refusals overwrites one event per org, reason and `window` instead of growing the log.
    pub fn refusal(
        org: &OrgId,
        at: OffsetDateTime,
        window: time::Duration,
        reason: &str,
        detail: serde_json::Value,
    ) -> Self {
        let millis = (at.unix_timestamp_nanos() / 1_000_000).max(0);
        let window_ms = window.whole_milliseconds().max(1);
        let bucket = millis - millis % window_ms;
        Self {
            org: org.clone(),
            id: format!("{bucket:013}-refused-{reason}"),
            at,
            actor: Actor::System("consent-callback".into()),
            action: AuditAction::CallbackRefused,
            object: "connection".into(),
            before: None,
            after: Some(serde_json::json!({ "reason": reason, "detail": detail })),
        }
    }

    /// Records the states before and after. Always JSON objects, so every consumer reads them
    /// the same way: a plain value is kept as `{"value": …}`.
    pub fn change<T: Serialize>(mut self, before: Option<&T>, after: Option<&T>) -> Self {
        let as_object = |v: &T| {
            serde_json::to_value(v).ok().map(|v| {
                if v.is_object() {
                    v
                } else {
                    serde_json::json!({ "value": v })
                }
            })
        };
        self.before = before.and_then(as_object);
        self.after = after.and_then(as_object);
        self
    }
}
