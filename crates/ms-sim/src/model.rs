//! Public data types of the control API (library and JSON over HTTP).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Mail folders the simulator knows. Only `Inbox` and `SentItems` get seed messages;
/// `Archive` and `DeletedItems` exist so messages can be moved out of synced folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Folder {
    Inbox,
    SentItems,
    Archive,
    DeletedItems,
}

impl Folder {
    pub const ALL: [Folder; 4] = [
        Folder::Inbox,
        Folder::SentItems,
        Folder::Archive,
        Folder::DeletedItems,
    ];

    /// Graph's well-known folder name.
    pub fn well_known_name(self) -> &'static str {
        match self {
            Folder::Inbox => "inbox",
            Folder::SentItems => "sentitems",
            Folder::Archive => "archive",
            Folder::DeletedItems => "deleteditems",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Folder::Inbox => "Inbox",
            Folder::SentItems => "Sent Items",
            Folder::Archive => "Archive",
            Folder::DeletedItems => "Deleted Items",
        }
    }

    /// Case-insensitive well-known name.
    pub fn parse(s: &str) -> Option<Folder> {
        Folder::ALL
            .into_iter()
            .find(|f| f.well_known_name().eq_ignore_ascii_case(s))
    }

    pub(crate) fn idx(self) -> usize {
        self as usize
    }

    pub(crate) fn from_idx(i: u8) -> Option<Folder> {
        Folder::ALL.get(i as usize).copied()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub name: String,
    pub address: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSpec {
    /// Primary domain, e.g. `contoso.onmicrosoft.com`.
    pub domain: String,
    /// Fixed tenant id; None derives one from the seed and domain.
    pub id: Option<Uuid>,
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: Uuid,
    pub domain: String,
    pub display_name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSpec {
    pub display_name: String,
    /// Fixed client id; None derives one from the seed and name.
    pub client_id: Option<Uuid>,
    pub redirect_uris: Vec<String>,
    /// Graph application roles registered on the app, e.g. `["Mail.ReadWrite","User.Read.All"]`.
    pub permissions: Vec<String>,
    /// ID tokens carry `wids` (the registration's `groupMembershipClaims` includes directory
    /// roles). Default true.
    pub id_token_wids: bool,
}

impl Default for AppSpec {
    fn default() -> Self {
        AppSpec {
            display_name: String::new(),
            client_id: None,
            redirect_uris: Vec::new(),
            permissions: Vec::new(),
            id_token_wids: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppInfo {
    pub client_id: Uuid,
    pub display_name: String,
    pub redirect_uris: Vec<String>,
    pub permissions: Vec<String>,
    pub id_token_wids: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretInfo {
    pub id: Uuid,
    /// The secret value a client sends as `client_secret`.
    pub value: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertInfo {
    pub id: Uuid,
    /// base64url SHA-1 of the DER certificate (`x5t` header).
    pub x5t: String,
    /// base64url SHA-256 of the DER certificate (`x5t#S256` header).
    pub x5t_s256: String,
    /// Hex SHA-1 thumbprint as the Entra portal shows it.
    pub thumbprint: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct UserSpec {
    /// Local part (`adele`) or full UPN (`adele@contoso.com`).
    pub user_name: String,
    pub display_name: Option<String>,
    pub id: Option<Uuid>,
    pub global_admin: bool,
    /// Privileged Role Administrator: may also grant admin consent.
    pub privileged_role_admin: bool,
    pub licensed: bool,
    /// Mailbox hosted on-premises: Graph answers MailboxNotEnabledForRESTAPI.
    pub on_premises: bool,
    /// Excluded by an application access policy: "Access to OData is disabled."
    pub access_policy_excluded: bool,
    /// Outside the app's Exchange RBAC for Applications scope: Graph answers the generic
    /// `ErrorAccessDenied` "Access is denied. Check credentials and try again." for this mailbox
    /// only (the same answer as an app without a Mail permission gets for every mailbox).
    pub rbac_scoped_out: bool,
    /// None: no Exchange Online mailbox at all.
    pub mailbox: Option<MailboxSpec>,
    /// Primary SMTP address; None = the UPN.
    pub mail: Option<String>,
    /// Extra addresses, e.g. `smtp:alias@contoso.com` (`SMTP:{mail}` is always added).
    pub proxy_addresses: Vec<String>,
}

impl Default for UserSpec {
    fn default() -> Self {
        UserSpec {
            user_name: String::new(),
            display_name: None,
            id: None,
            global_admin: false,
            privileged_role_admin: false,
            licensed: true,
            on_premises: false,
            access_policy_excluded: false,
            rbac_scoped_out: false,
            mailbox: Some(MailboxSpec::default()),
            mail: None,
            proxy_addresses: Vec::new(),
        }
    }
}

/// Number of seed messages per folder (generated lazily from the seed).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MailboxSpec {
    pub inbox: u32,
    pub sentitems: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_principal_name: String,
    pub display_name: String,
    /// Primary SMTP address (Graph shows null when the user has no Exchange Online mailbox).
    pub mail: String,
    /// All addresses, primary first as `SMTP:{mail}`, aliases as `smtp:...`.
    pub proxy_addresses: Vec<String>,
    pub global_admin: bool,
    pub privileged_role_admin: bool,
    pub licensed: bool,
    pub on_premises: bool,
    pub access_policy_excluded: bool,
    pub rbac_scoped_out: bool,
    pub has_mailbox: bool,
}

/// Flags that can change on an existing user.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserFlags {
    pub global_admin: Option<bool>,
    pub privileged_role_admin: Option<bool>,
    pub licensed: Option<bool>,
    pub on_premises: Option<bool>,
    pub access_policy_excluded: Option<bool>,
    pub rbac_scoped_out: Option<bool>,
}

/// A message added by a test. Missing fields are generated from the seed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NewMessage {
    pub subject: Option<String>,
    pub from: Option<Recipient>,
    pub to: Option<Vec<Recipient>>,
    pub cc: Option<Vec<Recipient>>,
    pub body_html: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub received: Option<OffsetDateTime>,
    pub is_read: Option<bool>,
    pub has_attachments: Option<bool>,
}

/// A change to a message's mutable properties (what an Outlook user can change).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagePatch {
    pub is_read: Option<bool>,
    pub subject: Option<String>,
    pub categories: Option<Vec<String>>,
    /// `low`, `normal` or `high`.
    pub importance: Option<String>,
    pub body_html: Option<String>,
    pub flagged: Option<bool>,
}

/// Ground truth for one live message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthMessage {
    /// The id Graph returns with `Prefer: IdType="ImmutableId"`.
    pub immutable_id: String,
    /// The id Graph returns without it (changes when the message moves).
    pub id: String,
    pub folder: Folder,
    pub change_key: String,
    pub last_modified: String,
    pub received: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub tenant_id: Uuid,
    pub client_id: Uuid,
    /// UPN of the admin who consented; None when granted through the control API.
    pub granted_by: Option<String>,
    pub roles: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub revoked: bool,
}

/// How every ID token issued while set is broken, for end-to-end tests of a relying party's
/// validation (`set_id_token_tamper`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdTokenTamper {
    /// Header `alg: none`, empty signature.
    AlgNone,
    /// HS256, HMAC keyed with the bytes of the current public key PEM (key confusion).
    Hs256WithPublicKey,
    /// `aud` is another client id.
    WrongAudience,
    /// `iss` names another tenant GUID than `tid`.
    IssuerTenantMismatch,
    /// `nonce` differs from the authorize request's.
    WrongNonce,
    /// Every time claim two hours earlier: `exp` an hour in the past.
    Expired,
    /// RS256 with a key that is never published (its `kid` is in no JWKS).
    UnknownKey,
    /// No `wids` claim even if the app registration emits it.
    MissingWids,
}

/// Errors of the control API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
