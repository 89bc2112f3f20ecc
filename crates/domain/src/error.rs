//! One error type for the whole domain; the HTTP edge maps each variant to a status once.

use serde::Serialize;

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// What a piece of input got wrong, for a 422 with per-field errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    /// Stable machine-readable code, e.g. `invalid_email`.
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The same error reported against another field name (e.g. a row of a bulk request).
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Org,
    Settings,
    Connection,
    User,
    ConsentRequest,
    Message,
    Lease,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Entity::Org => "organisation",
            Entity::Settings => "integration settings",
            Entity::Connection => "connection",
            Entity::User => "user",
            Entity::ConsentRequest => "consent request",
            Entity::Message => "message",
            Entity::Lease => "mailbox lease",
        };
        f.write_str(name)
    }
}

/// A business rule the store refused to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleViolation {
    /// An org always keeps at least one admin.
    LastAdmin,
    /// Only an admin can be the Primary user.
    PrimaryMustBeAdmin,
    /// The Primary user cannot be demoted or removed until Primary moves to another admin.
    PrimaryLocked,
    /// A Microsoft tenant is connected to at most one org.
    TenantInUse,
}

impl std::fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuleViolation::LastAdmin => {
                "the organisation's last admin cannot be removed or demoted; make another user an admin first"
            }
            RuleViolation::PrimaryMustBeAdmin => {
                "only an admin can be the Primary user; make the user an admin first"
            }
            RuleViolation::PrimaryLocked => {
                "the Primary user cannot be demoted or removed; make another admin Primary first"
            }
            RuleViolation::TenantInUse => {
                "this Microsoft tenant is already connected to another organisation"
            }
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DomainError {
    #[error("invalid input ({} field error(s))", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("{0} already exists")]
    AlreadyExists(Entity),
    /// Optimistic concurrency: the caller's version is stale, or a concurrent change won.
    #[error("{0} was changed by someone else; reload and try again")]
    Conflict(Entity),
    #[error("{0}")]
    Rule(RuleViolation),
    /// The caller is known but may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The request cannot be done in the current state (e.g. activate while the service account is off).
    #[error("{0}")]
    Precondition(&'static str),
    /// A dependency (the store, Secrets Manager) failed; nothing the caller did wrong.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
}

impl DomainError {
    pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        DomainError::Invalid(vec![FieldError::new(field, code, message)])
    }
}

impl From<FieldError> for DomainError {
    fn from(e: FieldError) -> Self {
        DomainError::Invalid(vec![e])
    }
}
