//! The embedded run's scheduler (joins when the sync engine lands): until then "sync now"
//! answers that no scheduler runs here.

use std::sync::Arc;

use o365_domain::ids::OrgId;
use o365_domain::ports::SyncTrigger;
use o365_domain::{DomainError, Result};
use o365_secrets::LocalSecretStore;
use o365_store_dynamodb::DynamoStore;

struct NotScheduled;

#[async_trait::async_trait]
impl SyncTrigger for NotScheduled {
    async fn sync_org_now(&self, _org: &OrgId) -> Result<usize> {
        Err(DomainError::Unavailable(
            "the embedded run has no mailbox scheduler yet".into(),
        ))
    }
}

pub fn start(
    _store: DynamoStore,
    _secrets: Arc<LocalSecretStore>,
    _sim: &ms_sim::Simulator,
) -> Result<Arc<dyn SyncTrigger>> {
    Ok(Arc::new(NotScheduled))
}
