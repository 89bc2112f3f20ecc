//! Sync runs: one partition per org, newest first, expired after a retention period by TTL.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use o365_domain::ids::OrgId;
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::SyncRunLog;
use o365_domain::sync_run::SyncRun;
use o365_domain::{DomainError, Result};

use crate::DynamoStore;

/// How long run history is kept.
pub const RUN_RETENTION_DAYS: i64 = 30;

pub(crate) fn runs_pk(org: &OrgId) -> String {
    format!("RUNS#{org}")
}

#[derive(Serialize, Deserialize)]
struct RunRecord {
    pk: String,
    sk: String,
    expires_at: i64,
    /// The "sync now" request, top level so a listing can filter on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<String>,
    /// The run as JSON (`query::DOC`).
    doc: String,
}

#[async_trait]
impl SyncRunLog for DynamoStore {
    async fn record_run(&self, run: &SyncRun) -> Result<()> {
        let millis = (run.finished_at.unix_timestamp_nanos() / 1_000_000).max(0);
        let record = RunRecord {
            pk: runs_pk(&run.org),
            // Time first so the partition sorts by time; the mailbox keeps keys unique.
            sk: format!("{millis:013}#{}", run.mailbox.key()),
            expires_at: run.finished_at.unix_timestamp() + RUN_RETENTION_DAYS * 86_400,
            request: run.request.clone(),
            doc: serde_json::to_string(run).map_err(|e| DomainError::Unavailable(e.to_string()))?,
        };
        self.put_state(&record).await
    }

    async fn list_runs(
        &self,
        org: &OrgId,
        request: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<SyncRun>> {
        let filter = request.map(|r| ("request", r));
        self.documents_newest_first(&runs_pk(org), filter, &page)
            .await
    }
}
