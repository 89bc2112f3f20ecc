//! Identifiers that validate themselves: once built, they are safe to use as parts of store keys.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// An organisation of the platform (the tenant of *our* product, not Microsoft's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(ok_char) {
            return Err(FieldError::new(
                "org",
                "invalid_org_id",
                format!(
                    "an org id is 1 to {} letters, digits, '-', '_' or '.'",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrgId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<OrgId> for String {
    fn from(o: OrgId) -> String {
        o.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, trimmed and kept as entered, compared case-insensitively.
///
/// Mailbox addresses are case-insensitive in Exchange Online, so two spellings of one address
/// must never become two users.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    entered: String,
    key: String,
}

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let entered = raw.trim();
        let bad = |why: &str| {
            FieldError::new(
                "email",
                "invalid_email",
                format!(
                    "'{}' is not a valid email address: {why}",
                    truncate(entered, 80)
                ),
            )
        };
        if entered.is_empty() {
            return Err(FieldError::new(
                "email",
                "required",
                "an email address is required",
            ));
        }
        if entered.len() > Self::MAX_LEN {
            return Err(FieldError::new(
                "email",
                "too_long",
                format!("an email address has at most {} characters", Self::MAX_LEN),
            ));
        }
        let (local, domain) = entered
            .split_once('@')
            .ok_or_else(|| bad("it has no '@'"))?;
        if domain.contains('@') {
            return Err(bad("it has more than one '@'"));
        }
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok {
            return Err(bad(
                "the part before '@' has characters a mailbox address cannot have",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
        if !domain_ok {
            return Err(bad("the domain after '@' is not a valid domain name"));
        }
        Ok(Self {
            entered: entered.to_owned(),
            key: entered.to_ascii_lowercase(),
        })
    }

    /// The address as the admin typed it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.entered
    }

    /// The canonical form used for identity and store keys.
    pub fn key(&self) -> &str {
        &self.key
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Email {}
impl Hash for Email {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

impl TryFrom<String> for Email {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.entered
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entered)
    }
}

/// A person's display name: trimmed, 1 to 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new(
                "display_name",
                "required",
                "a display name is required",
            ));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "display_name",
                "too_long",
                format!("a display name has at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "display_name",
                "invalid_characters",
                "a display name cannot contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<DisplayName> for String {
    fn from(d: DisplayName) -> String {
        d.0
    }
}

/// A Microsoft Entra tenant id (a GUID), kept lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(uuid::Uuid);

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        uuid::Uuid::try_parse(raw.trim()).map(Self).map_err(|_| {
            FieldError::new(
                "tenant",
                "invalid_tenant_id",
                "a Microsoft tenant id is a GUID",
            )
        })
    }
}

impl TryFrom<String> for TenantId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.to_string()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_case_insensitive() {
        let a = Email::parse("  Adele.Vance@Contoso.com ").unwrap();
        let b = Email::parse("adele.vance@contoso.COM").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "Adele.Vance@Contoso.com");
        assert_eq!(a.key(), "adele.vance@contoso.com");
    }

    #[test]
    fn bad_emails_are_refused_with_a_reason() {
        for raw in [
            "",
            "   ",
            "no-at-sign",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            ".a@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b.c0m",
        ] {
            let err = Email::parse(raw).expect_err(raw);
            assert_eq!(err.field, "email");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long).unwrap_err().code, "too_long");
    }

    #[test]
    fn org_ids_cannot_smuggle_key_separators() {
        assert!(OrgId::parse("acme-01").is_ok());
        assert!(OrgId::parse("acme#USER").is_err());
        assert!(OrgId::parse("").is_err());
        assert!(OrgId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn display_names_are_bounded() {
        assert_eq!(DisplayName::parse("  Adele ").unwrap().as_str(), "Adele");
        assert_eq!(
            DisplayName::parse(&"é".repeat(257)).unwrap_err().code,
            "too_long"
        );
        assert_eq!(
            DisplayName::parse("a\u{0}b").unwrap_err().code,
            "invalid_characters"
        );
    }

    #[test]
    fn tenant_ids_are_guids() {
        let t = TenantId::parse("72F988BF-86F1-41AF-91AB-2D7CD011DB47").unwrap();
        assert_eq!(t.to_string(), "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert!(TenantId::parse("contoso.onmicrosoft.com").is_err());
    }
}
