//! Who may connect an org: the seed's rules ("only a Global Administrator can consent; that
//! Global Administrator must be the org's Primary user; use the same email"), proven with
//! Microsoft's identifiers rather than display strings.

use crate::failure::FailureCode;
use crate::ids::{Email, TenantId};
use crate::microsoft::{DirectoryUser, SignedInAccount};

/// Role template ids of the two Entra roles that can grant Graph application permissions.
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const PRIVILEGED_ROLE_ADMINISTRATOR: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";

/// The `tid` of every personal Microsoft account: no organisation to bind.
pub const PERSONAL_ACCOUNTS_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Checked on the verified ID token, before the admin is sent to the consent page: a personal
/// account or an account without an admin role never reaches it. A token without `wids` is
/// refused: a missing claim is never taken as "admin".
pub fn may_grant_consent(account: &SignedInAccount) -> Result<(), FailureCode> {
    if TenantId::parse(PERSONAL_ACCOUNTS_TENANT).ok() == Some(account.tenant) {
        return Err(FailureCode::PersonalAccount);
    }
    let Some(roles) = &account.directory_roles else {
        return Err(FailureCode::DirectoryRolesUnavailable);
    };
    let admin = roles.iter().any(|r| {
        r.eq_ignore_ascii_case(GLOBAL_ADMINISTRATOR)
            || r.eq_ignore_ascii_case(PRIVILEGED_ROLE_ADMINISTRATOR)
    });
    if admin {
        Ok(())
    } else {
        Err(FailureCode::NotGlobalAdministrator)
    }
}

/// Checked once the app can read the directory: the person who signed in (looked up by `oid`)
/// has the Primary user's platform email among their addresses.
pub fn is_primary(user: &DirectoryUser, primary: &Email) -> Result<(), FailureCode> {
    if user.has_address(primary) {
        Ok(())
    } else {
        Err(FailureCode::NotPrimaryAccount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(tid: &str, roles: Option<&[&str]>) -> SignedInAccount {
        SignedInAccount {
            tenant: TenantId::parse(tid).unwrap(),
            object_id: "oid".into(),
            preferred_username: None,
            directory_roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
        }
    }

    const T: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn only_the_two_consent_roles_may_grant() {
        assert_eq!(
            may_grant_consent(&account(T, Some(&[GLOBAL_ADMINISTRATOR]))),
            Ok(())
        );
        assert_eq!(
            may_grant_consent(&account(T, Some(&["E8611AB8-C189-46E8-94E1-60213AB1F814"]))),
            Ok(())
        );
        assert_eq!(
            may_grant_consent(&account(T, Some(&["b79fbf4d-3ef9-4689-8143-76b194e85509"]))),
            Err(FailureCode::NotGlobalAdministrator)
        );
        assert_eq!(
            may_grant_consent(&account(T, Some(&[]))),
            Err(FailureCode::NotGlobalAdministrator)
        );
    }

    #[test]
    fn a_missing_role_claim_is_never_admin() {
        assert_eq!(
            may_grant_consent(&account(T, None)),
            Err(FailureCode::DirectoryRolesUnavailable)
        );
    }

    #[test]
    fn personal_accounts_are_refused_whatever_they_claim() {
        assert_eq!(
            may_grant_consent(&account(
                PERSONAL_ACCOUNTS_TENANT,
                Some(&[GLOBAL_ADMINISTRATOR])
            )),
            Err(FailureCode::PersonalAccount)
        );
    }

    #[test]
    fn the_primary_is_found_by_upn_mail_or_alias_case_insensitively() {
        let user = DirectoryUser {
            id: "1".into(),
            user_principal_name: "ada.admin@contoso.onmicrosoft.com".into(),
            mail: Some("Ada@Contoso.com".into()),
            proxy_addresses: vec![
                "SMTP:ada@contoso.com".into(),
                "smtp:boss@contoso.com".into(),
                "x500:/o=Exchange/cn=ada".into(),
            ],
            display_name: None,
        };
        for ok in [
            "ADA.ADMIN@contoso.onmicrosoft.com",
            "ada@contoso.com",
            "Boss@Contoso.com",
        ] {
            assert_eq!(
                is_primary(&user, &Email::parse(ok).unwrap()),
                Ok(()),
                "{ok}"
            );
        }
        for no in ["ada@fabrikam.com", "cn=ada@contoso.com"] {
            if let Ok(e) = Email::parse(no) {
                assert_eq!(
                    is_primary(&user, &e),
                    Err(FailureCode::NotPrimaryAccount),
                    "{no}"
                );
            }
        }
    }
}
