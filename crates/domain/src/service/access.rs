//! Who may do what. Every use case asks here first; nothing else decides.

use crate::error::{DomainError, Result};
use crate::ids::{Email, OrgId};
use crate::ports::UserStore;
use crate::user::Role;

/// An authenticated caller: org and email come from the verified token, role and Primary
/// from our own records (never from the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org: OrgId,
    pub email: Email,
    pub role: Role,
    pub is_primary: bool,
}

impl Principal {
    /// Loads the caller's record; someone the org does not know gets nothing.
    pub async fn load(users: &dyn UserStore, org: &OrgId, email: &Email) -> Result<Self> {
        match users.user(org, email).await {
            Ok(u) => Ok(Self {
                org: org.clone(),
                email: u.email,
                role: u.role,
                is_primary: u.is_primary,
            }),
            Err(DomainError::NotFound(_)) => Err(DomainError::Forbidden(
                "you are not a user of this organisation",
            )),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    ReadIntegration,
    ChangeSettings,
    ActivateConnection,
    DeleteConnection,
    ManageConnection,
    ManageUsers,
    ReadUsers,
    ReadUser(&'a Email),
    /// A mailbox's captured mail: its owner and the org's admins.
    ReadMail(&'a Email),
    ReadAudit,
    TriggerSync,
    ReadSyncRuns,
}

pub fn authorize(p: &Principal, action: Action<'_>) -> Result<()> {
    let admin = p.role == Role::Admin;
    match action {
        Action::ReadUser(email) | Action::ReadMail(email) if *email == p.email || admin => Ok(()),
        Action::ReadMail(_) => Err(DomainError::Forbidden(
            "members can read only their own captured mail",
        )),
        Action::ReadUser(_) => Err(DomainError::Forbidden(
            "members can read only their own status",
        )),
        Action::ActivateConnection if admin && p.is_primary => Ok(()),
        Action::ActivateConnection => Err(DomainError::Forbidden(
            "only the admin who is the Primary user can activate the connection",
        )),
        Action::DeleteConnection if admin && p.is_primary => Ok(()),
        Action::DeleteConnection => Err(DomainError::Forbidden(
            "only the admin who is the Primary user can delete the connection",
        )),
        _ if admin => Ok(()),
        _ => Err(DomainError::Forbidden("only admins can do this")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, primary: bool) -> Principal {
        Principal {
            org: OrgId::parse("acme").unwrap(),
            email: Email::parse("me@contoso.com").unwrap(),
            role,
            is_primary: primary,
        }
    }

    #[test]
    fn the_rules() {
        let other = Email::parse("other@contoso.com").unwrap();
        let me = Email::parse("ME@contoso.com").unwrap();
        let member = p(Role::Member, false);
        assert!(authorize(&member, Action::ReadUser(&me)).is_ok());
        assert!(authorize(&member, Action::ReadUser(&other)).is_err());
        assert!(authorize(&member, Action::ReadMail(&me)).is_ok());
        assert!(authorize(&member, Action::ReadMail(&other)).is_err());
        assert!(authorize(&p(Role::Admin, false), Action::ReadMail(&other)).is_ok());
        assert!(authorize(&member, Action::ReadIntegration).is_err());
        assert!(authorize(&p(Role::Admin, false), Action::ReadUser(&other)).is_ok());
        assert!(authorize(&p(Role::Admin, false), Action::ActivateConnection).is_err());
        assert!(authorize(&p(Role::Admin, true), Action::ActivateConnection).is_ok());
        assert!(authorize(&p(Role::Admin, false), Action::DeleteConnection).is_err());
        assert!(authorize(&p(Role::Admin, true), Action::DeleteConnection).is_ok());
        assert!(authorize(&p(Role::Admin, false), Action::ChangeSettings).is_ok());
    }
}
