//! Users of one org, their roles and their mailbox sync state.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{DomainError, FieldError};
use crate::failure::Failure;
use crate::ids::{DisplayName, Email};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            _ => Err(FieldError::new(
                "role",
                "unknown_role",
                format!(
                    "unknown role '{}': use 'admin' or 'member'",
                    raw.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// How a user's mail reaches us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionMode {
    /// The user's own OAuth connection (the legacy path).
    Delegated,
    /// The org's service-account grant.
    ServiceAccount,
}

impl ConnectionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delegated => "delegated",
            Self::ServiceAccount => "service_account",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Delegated, Self::ServiceAccount]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The kind of a user's sync state, for filtering lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStateKind {
    NeverSynced,
    Ok,
    Disabled,
    Error,
}

impl SyncStateKind {
    pub const ALL: [Self; 4] = [Self::NeverSynced, Self::Ok, Self::Disabled, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverSynced => "never_synced",
            Self::Ok => "ok",
            Self::Disabled => "disabled",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncState {
    NeverSynced,
    Ok,
    Disabled,
    Error { cause: Failure },
}

impl SyncState {
    pub fn kind(&self) -> SyncStateKind {
        match self {
            SyncState::NeverSynced => SyncStateKind::NeverSynced,
            SyncState::Ok => SyncStateKind::Ok,
            SyncState::Disabled => SyncStateKind::Disabled,
            SyncState::Error { .. } => SyncStateKind::Error,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounters {
    pub captured: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Kept out by the org's capture policy (never archived).
    #[serde(default)]
    pub skipped: u64,
}

impl std::ops::Add for MessageCounters {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            captured: self.captured + o.captured,
            updated: self.updated + o.updated,
            deleted: self.deleted + o.deleted,
            skipped: self.skipped + o.skipped,
        }
    }
}

/// What a mailbox run needs of its user, read alone (not the API's view of the user, which also
/// reads the org's Primary and the mailbox's counts).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SyncSubject {
    pub sync_enabled: bool,
    pub state: SyncState,
    #[serde(default)]
    pub directory: Option<DirectoryLink>,
}

/// The directory user a platform email resolved to. Graph is addressed by `object_id`, which
/// survives renames; UPN and mail are kept for people to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryLink {
    pub object_id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub email: Email,
    pub display_name: DisplayName,
    pub role: Role,
    /// Derived from the org's single Primary pointer, so two Primaries cannot exist.
    pub is_primary: bool,
    pub sync_enabled: bool,
    pub connection_mode: ConnectionMode,
    pub state: SyncState,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sync_at: Option<OffsetDateTime>,
    pub counters: MessageCounters,
    /// Set once the email was resolved in the connected tenant's directory.
    pub directory: Option<DirectoryLink>,
    pub version: u64,
}

/// The one alarm rule (the API shows it, the fan-out emits it as a metric): an org is in alarm
/// when at least a fifth of the users whose sync is on are in error.
pub fn org_in_alarm(users_in_error: u64, users_syncing: u64) -> bool {
    users_syncing > 0 && users_in_error * 5 >= users_syncing
}

/// The population the alarm rule counts: an org's users whose sync is on, and those of them in
/// error (counted by the store, without reading the users out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub syncing: u64,
    pub in_error: u64,
}

impl SyncCounts {
    pub fn alarm(&self) -> bool {
        org_in_alarm(self.in_error, self.syncing)
    }
}

/// What decides whether a user's mail can sync right now beyond the user's own record: the
/// org's switch and connection. Read once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgSyncContext {
    pub service_account_on: bool,
    /// Why nothing of the org syncs, when nothing does.
    pub blocked_by: Option<Failure>,
}

impl User {
    /// The user as an admin should see them: with the service account on, every user's mail is
    /// reached through it; and a sync-enabled user of an org whose connection does not work
    /// shows that failure (with the org's remediation), not a stale `ok`.
    pub fn as_seen(&self, org: &OrgSyncContext) -> User {
        let mut seen = self.clone();
        if org.service_account_on {
            seen.connection_mode = ConnectionMode::ServiceAccount;
        }
        if let (true, Some(cause)) = (self.sync_enabled, &org.blocked_by) {
            seen.state = SyncState::Error {
                cause: cause.clone(),
            };
        }
        seen
    }
}

/// A validated request to add a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: Email,
    pub display_name: DisplayName,
    pub role: Role,
}

impl NewUser {
    /// Validates every field and reports all problems at once.
    pub fn parse(email: &str, display_name: &str, role: &str) -> Result<Self, DomainError> {
        let email = Email::parse(email);
        let display_name = DisplayName::parse(display_name);
        let role = Role::parse(role);
        match (email, display_name, role) {
            (Ok(email), Ok(display_name), Ok(role)) => Ok(Self {
                email,
                display_name,
                role,
            }),
            (e, d, r) => Err(DomainError::Invalid(
                [e.err(), d.err(), r.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_user_reports_every_bad_field() {
        let Err(DomainError::Invalid(errors)) = NewUser::parse("nope", "", "owner") else {
            panic!("accepted")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "display_name", "role"]);
        assert_eq!(errors[2].code, "unknown_role");
    }

    #[test]
    fn an_org_is_in_alarm_from_a_fifth_of_its_syncing_users_in_error() {
        assert!(!org_in_alarm(0, 0));
        assert!(!org_in_alarm(1, 6));
        assert!(org_in_alarm(1, 5));
        assert!(org_in_alarm(3, 3));
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!(Role::parse(" Admin ").unwrap(), Role::Admin);
        assert!(Role::parse("superuser").is_err());
    }
}
