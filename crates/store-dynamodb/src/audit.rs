//! Audit events: one partition per org, sorted by time (the id starts with the time).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::TransactWriteItem;
use serde::{Deserialize, Serialize};

use o365_domain::audit::AuditEvent;
use o365_domain::ids::OrgId;
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::AuditLog;
use o365_domain::{DomainError, Result};

use crate::keys::audit_pk;
use crate::{DynamoStore, rfc3339, to_item};

#[derive(Serialize, Deserialize)]
struct AuditRecord {
    pk: String,
    sk: String,
    at: String,
    action: String,
    /// The whole event as JSON (`query::DOC`): before/after are free-form documents.
    doc: String,
}

fn record(event: &AuditEvent) -> Result<AuditRecord> {
    Ok(AuditRecord {
        pk: audit_pk(&event.org),
        sk: event.id.clone(),
        at: rfc3339(event.at),
        action: serde_json::to_value(event.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        doc: serde_json::to_string(event).map_err(|e| DomainError::Unavailable(e.to_string()))?,
    })
}

impl DynamoStore {
    pub(crate) fn audit_put(&self, event: &AuditEvent) -> Result<TransactWriteItem> {
        self.put_item(
            to_item(&record(event)?)?,
            Some("attribute_not_exists(pk)"),
            None,
        )
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, event: AuditEvent) -> Result<()> {
        self.put_state(&record(&event)?).await
    }

    async fn list_audit(&self, org: &OrgId, page: PageRequest) -> Result<Page<AuditEvent>> {
        self.documents_newest_first(&audit_pk(org), None, &page)
            .await
    }
}
