//! The worker's side of mailbox resolution (the rule is in
//! [`o365_domain::mailbox_directory`]): resolve a mailbox that has no directory link, and
//! resolve again, once, when Graph no longer knows the stored object id, before anything is
//! declared "user not found" (the id changes when a user is deleted and re-created; renames
//! keep it).

use o365_domain::connection::AppRegistration;
use o365_domain::failure::FailureCode;
use o365_domain::ids::TenantId;
use o365_domain::mailbox_directory::{ResolveError, resolve_mailbox};
use o365_domain::microsoft::MicrosoftError;
use o365_domain::user::DirectoryLink;

use crate::{Stop, SyncEngine, SyncJob};

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
    pub(crate) async fn resolve(
        &self,
        job: &SyncJob,
        tenant: TenantId,
        app: AppRegistration,
    ) -> Result<DirectoryLink, Stop> {
        resolve_mailbox(
            self.directory.as_ref(),
            self.stores.users.as_ref(),
            &job.org,
            &tenant,
            app,
            &job.mailbox,
        )
        .await
        .map_err(|e| match e {
            ResolveError::Microsoft(e) => Stop::Microsoft(e),
            ResolveError::Store(e) => Stop::Store(e),
        })
    }
}
