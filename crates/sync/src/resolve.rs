//! Which directory user a mailbox is: the platform email resolved once (UPN, mail or alias) to
//! the user's object id, which every Graph call then uses. A mailbox Graph no longer finds by id
//! is resolved again before it is declared "user not found" (the id can change when a user is
//! deleted and re-created; renames keep it).

use o365_domain::connection::AppRegistration;
use o365_domain::failure::FailureCode;
use o365_domain::ids::TenantId;
use o365_domain::microsoft::MicrosoftError;
use o365_domain::user::DirectoryLink;

use crate::{Stop, SyncEngine, SyncJob};

/// A refusal for an email no directory lookup matched.
pub(crate) fn not_in_directory(job: &SyncJob) -> MicrosoftError {
    MicrosoftError::refused(
        FailureCode::UserNotFound,
        "Request_ResourceNotFound",
        format!(
            "No user of the tenant has {} as user principal name, mail or alias.",
            job.mailbox.as_str()
        ),
    )
}

pub(crate) fn is_user_not_found(e: &Stop) -> bool {
    matches!(
        e,
        Stop::Microsoft(MicrosoftError::Refused {
            code: FailureCode::UserNotFound,
            ..
        })
    )
}

impl SyncEngine {
    /// Looks the job's email up in the directory and records the result on the user (also a
    /// miss, so the user row stops showing a stale UPN).
    pub(crate) async fn resolve(
        &self,
        job: &SyncJob,
        tenant: TenantId,
        app: AppRegistration,
    ) -> Result<DirectoryLink, Stop> {
        let found = self
            .directory
            .find_user(&tenant, app, &job.mailbox)
            .await
            .map_err(Stop::Microsoft)?;
        let link = found.map(|u| DirectoryLink {
            object_id: u.id,
            user_principal_name: u.user_principal_name,
            mail: u.mail,
        });
        self.stores
            .users
            .set_directory_link(&job.org, &job.mailbox, link.as_ref())
            .await?;
        link.ok_or_else(|| Stop::Microsoft(not_in_directory(job)))
    }
}
