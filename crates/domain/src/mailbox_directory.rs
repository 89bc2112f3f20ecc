//! Which directory user a mailbox is. A platform email is resolved once (UPN, mail or alias, by
//! the [`Directory`] port) to the user's object id, which Graph is then addressed with; the
//! result is kept on the user, a miss included, so the user row never shows a stale UPN.

use crate::connection::AppRegistration;
use crate::error::DomainError;
use crate::ids::{Email, OrgId, TenantId};
use crate::microsoft::{Directory, MicrosoftError};
use crate::ports::UserStore;
use crate::user::DirectoryLink;

/// Why a resolution did not produce a link.
#[derive(Debug)]
pub enum ResolveError {
    /// Microsoft refused or failed (classified like any Graph call); a miss is
    /// `UserNotFound` with the lookups named.
    Microsoft(MicrosoftError),
    Store(DomainError),
}

/// Resolves `email` in `tenant`'s directory and records the outcome on the user.
pub async fn resolve_mailbox(
    directory: &dyn Directory,
    users: &dyn UserStore,
    org: &OrgId,
    tenant: &TenantId,
    app: AppRegistration,
    email: &Email,
) -> Result<DirectoryLink, ResolveError> {
    let found = directory
        .find_user(tenant, app, email)
        .await
        .map_err(ResolveError::Microsoft)?;
    let link = found.map(|u| DirectoryLink {
        object_id: u.id,
        user_principal_name: u.user_principal_name,
        mail: u.mail,
    });
    users
        .set_directory_link(org, email, link.as_ref())
        .await
        .map_err(ResolveError::Store)?;
    link.ok_or_else(|| ResolveError::Microsoft(not_in_directory(email)))
}

/// The refusal for an email no directory lookup matched.
pub fn not_in_directory(email: &Email) -> MicrosoftError {
    MicrosoftError::refused(
        crate::failure::FailureCode::UserNotFound,
        "Request_ResourceNotFound",
        format!(
            "No user of the tenant has {} as user principal name, mail or alias.",
            email.as_str()
        ),
    )
}
