//! Sync runs: one partition per org, newest first, expired after a retention period by TTL.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use o365_domain::ids::OrgId;
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::SyncRunLog;
use o365_domain::sync_run::SyncRun;
use o365_domain::{DomainError, Entity, Result};
use time::OffsetDateTime;

use crate::keys::{self, ORG_SK, org_pk};
use crate::{DynamoStore, n, s};

fn millis(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

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

    async fn open_sync_request(
        &self,
        org: &OrgId,
        request: &str,
        at: OffsetDateTime,
        joins_after: OffsetDateTime,
    ) -> Result<String> {
        // On the org item: erased with the org, and one conditional write per "sync now".
        let opened = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), ORG_SK)))
            .update_expression("SET sync_request = :request, sync_requested_ms = :at")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(sync_requested_ms) OR sync_requested_ms <= :after)",
            )
            .expression_attribute_values(":request", s(request))
            .expression_attribute_values(":at", n(millis(at)))
            .expression_attribute_values(":after", n(millis(joins_after)));
        if Self::send_conditional(opened).await? {
            return Ok(request.to_owned());
        }
        // A request still open, or no org: only now is the item read.
        let item = self
            .get_state_projected(keys::key(org_pk(org), ORG_SK), "pk, sync_request")
            .await?
            .ok_or(DomainError::NotFound(Entity::Org))?;
        item.get("sync_request")
            .and_then(|v| v.as_s().ok())
            .cloned()
            // Withdrawn between the two calls: ask again.
            .ok_or_else(|| DomainError::Unavailable("the sync request changed; try again".into()))
    }

    async fn withdraw_sync_request(&self, org: &OrgId, request: &str) -> Result<()> {
        let update = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), ORG_SK)))
            .update_expression("REMOVE sync_request, sync_requested_ms")
            .condition_expression("sync_request = :request")
            .expression_attribute_values(":request", s(request));
        Self::send_conditional(update).await?;
        Ok(())
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
