//! The wire shapes of the API (documented in OpenAPI). Domain types stay free of HTTP concerns.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use o365_domain::audit::{Actor, AuditEvent};
use o365_domain::connection::Connection;
use o365_domain::failure::{Failure, FailureScope};
use o365_domain::service::admin::IntegrationView;
use o365_domain::service::connection::ConsentLink;
use o365_domain::settings::IntegrationSettings;
use o365_domain::sync_run::SyncRun;
use o365_domain::user::{SyncState, User};

/// A failure with what happened, in Microsoft's words, and what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureDto {
    /// Stable code, e.g. `insufficient_privileges`.
    pub code: String,
    /// `org`, `user` or `transient`.
    pub scope: String,
    pub microsoft_code: Option<String>,
    pub message: String,
    pub remediation: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

fn snake<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl FailureDto {
    pub fn of(f: &Failure, email: Option<&str>) -> Self {
        Self {
            code: snake(&f.code),
            scope: match f.code.scope() {
                FailureScope::Org => "org",
                FailureScope::User => "user",
                FailureScope::Transient => "transient",
            }
            .into(),
            microsoft_code: f.microsoft_code.clone(),
            message: f.message.clone(),
            remediation: f.code.remediation(email),
            at: f.at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsDto {
    pub use_service_account: bool,
    pub read_only: bool,
    /// Send back as `version` (or `If-Match: "<version>"`) when changing settings.
    pub version: u64,
}

impl From<&IntegrationSettings> for SettingsDto {
    fn from(s: &IntegrationSettings) -> Self {
        Self {
            use_service_account: s.use_service_account,
            read_only: s.read_only,
            version: s.version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionDto {
    /// `none`, `pending_sign_in`, `pending_consent`, `verifying`, `connected`,
    /// `needs_reconsent` or `error`.
    pub status: String,
    /// The Microsoft tenant, as proven by the admin's verified sign-in.
    pub tenant_id: Option<String>,
    /// `default` or `read_only`.
    pub app: Option<String>,
    /// The platform user who pressed Activate.
    pub activated_by: Option<String>,
    /// The Microsoft account that signed in and granted consent.
    pub granted_by: Option<MicrosoftAccountDto>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub granted_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_verified_at: Option<OffsetDateTime>,
    pub error: Option<FailureDto>,
}

impl From<&Connection> for ConnectionDto {
    fn from(c: &Connection) -> Self {
        Self {
            status: c.status.as_str().into(),
            tenant_id: c.tenant_id.map(|t| t.to_string()),
            app: c.app.map(|a| a.as_str().into()),
            activated_by: c.activated_by.as_ref().map(|e| e.to_string()),
            granted_by: c.granted_by.as_ref().map(|a| MicrosoftAccountDto {
                object_id: a.object_id.clone(),
                user_principal_name: a.user_principal_name.clone(),
            }),
            granted_at: c.granted_at,
            last_verified_at: c.last_verified_at,
            error: c.last_error.as_ref().map(|f| FailureDto::of(f, None)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MicrosoftAccountDto {
    /// The account's immutable object id in its tenant.
    pub object_id: String,
    /// Its user principal name when it signed in.
    pub user_principal_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgStatusDto {
    /// Users whose sync is on.
    pub users_total: usize,
    /// Of those, users in error.
    pub users_in_error: usize,
    /// 20 % or more of the users whose sync is on are in error.
    pub alarm: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationDto {
    pub settings: SettingsDto,
    pub connection: ConnectionDto,
    pub org_status: OrgStatusDto,
}

impl From<&IntegrationView> for IntegrationDto {
    fn from(v: &IntegrationView) -> Self {
        Self {
            settings: (&v.settings).into(),
            connection: (&v.connection).into(),
            org_status: OrgStatusDto {
                users_total: v.users_total,
                users_in_error: v.users_in_error,
                alarm: v.alarm(),
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub use_service_account: Option<bool>,
    pub read_only: Option<bool>,
    /// Required to switch the service account off while a connection exists: it deletes the
    /// connection and stops every user's sync.
    #[serde(default)]
    pub confirm: bool,
    /// The version you read (alternatively send `If-Match`).
    pub version: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentLinkDto {
    /// Send the Primary admin's browser here: Microsoft's sign-in, which leads on to the
    /// admin-consent page of the tenant the admin signs in to.
    pub consent_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<ConsentLink> for ConsentLinkDto {
    fn from(l: ConsentLink) -> Self {
        Self {
            consent_url: l.url,
            expires_at: l.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountersDto {
    pub captured: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Kept out by the org's capture policy.
    pub skipped: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDto {
    pub email: String,
    pub display_name: String,
    /// `admin` or `member`.
    pub role: String,
    pub is_primary: bool,
    pub sync_enabled: bool,
    /// `delegated` or `service_account`: how this user's mail is reached now.
    pub connection_mode: String,
    /// `never_synced`, `ok`, `disabled` or `error`.
    pub status: String,
    pub error: Option<FailureDto>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sync_at: Option<OffsetDateTime>,
    pub messages: CountersDto,
    /// The directory user this email resolved to in the connected tenant (mail is read by
    /// its object id, so renames do not break the sync); absent until resolved.
    pub directory: Option<DirectoryUserDto>,
    /// Send back as `version` (or `If-Match`) when changing this user.
    pub version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryUserDto {
    pub object_id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
}

impl UserDto {
    /// From the user as the domain shows it ([`User::as_seen`]).
    pub fn of(u: &User) -> Self {
        Self {
            email: u.email.to_string(),
            display_name: u.display_name.as_str().into(),
            role: u.role.as_str().into(),
            is_primary: u.is_primary,
            sync_enabled: u.sync_enabled,
            connection_mode: u.connection_mode.as_str().into(),
            status: u.state.kind().as_str().into(),
            error: match &u.state {
                SyncState::Error { cause } => Some(FailureDto::of(cause, Some(u.email.as_str()))),
                _ => None,
            },
            last_sync_at: u.last_sync_at,
            messages: CountersDto {
                captured: u.counters.captured,
                updated: u.counters.updated,
                deleted: u.counters.deleted,
                skipped: u.counters.skipped,
            },
            directory: u.directory.as_ref().map(|d| DirectoryUserDto {
                object_id: d.object_id.clone(),
                user_principal_name: d.user_principal_name.clone(),
                mail: d.mail.clone(),
            }),
            version: u.version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPageDto {
    pub items: Vec<UserDto>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUserRequest {
    pub email: String,
    pub display_name: String,
    /// `admin` or `member`.
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    /// `admin` or `member`.
    pub role: String,
    pub version: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPrimaryRequest {
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncChange {
    pub email: String,
    pub sync_enabled: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncChangesRequest {
    /// At most 99 rows; all apply or none.
    pub changes: Vec<SyncChange>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsersDto {
    pub items: Vec<UserDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncTriggeredDto {
    /// The request's id: every mailbox run it causes carries it.
    pub request_id: String,
    /// Where its runs show up as they finish.
    pub runs: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventDto {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// An email, or `system:<component>`.
    pub actor: String,
    pub action: String,
    pub object: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

impl From<&AuditEvent> for AuditEventDto {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id.clone(),
            at: e.at,
            actor: match &e.actor {
                Actor::User(email) => email.to_string(),
                Actor::System(who) => format!("system:{who}"),
            },
            action: snake(&e.action),
            object: e.object.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageDto {
    pub items: Vec<AuditEventDto>,
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncRunsQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub after: Option<String>,
    /// Only the runs of this "sync now" request (the `request_id` `POST /v1/sync` answered).
    /// A filtered page may hold fewer runs than `limit` and still have a `next`.
    pub request: Option<uuid::Uuid>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub after: Option<String>,
    /// Filter users by status: `never_synced`, `ok`, `disabled`, `error`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncRunDto {
    pub mailbox: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// `synced`, `user_error`, `org_error`, `deferred`, `failed` or `continued`.
    pub outcome: String,
    pub messages: CountersDto,
    pub pages: u64,
    pub error: Option<FailureDto>,
    /// The "sync now" request the run belongs to (absent for scheduled runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl From<&SyncRun> for SyncRunDto {
    fn from(r: &SyncRun) -> Self {
        Self {
            mailbox: r.mailbox.to_string(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: snake(&r.outcome),
            messages: CountersDto {
                captured: r.counters.captured,
                updated: r.counters.updated,
                deleted: r.counters.deleted,
                skipped: r.counters.skipped,
            },
            pages: r.pages,
            error: r
                .error
                .as_ref()
                .map(|f| FailureDto::of(f, Some(r.mailbox.as_str()))),
            request_id: r.request.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncRunPageDto {
    pub items: Vec<SyncRunDto>,
    pub next: Option<String>,
}
