//! Per-mailbox bookkeeping: delta cursors and the job lease.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use o365_domain::Result;
use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::{MailFolder, MailboxCursor};
use o365_domain::ports::MailboxStateStore;

use crate::keys::{self, LEASE_SK, cursor_sk, mailbox_pk};
use crate::sdk_error::{is_conditional_failure, unavailable};
use crate::{DynamoStore, from_item, n, s};

#[derive(Serialize, Deserialize)]
struct CursorRecord {
    pk: String,
    sk: String,
    #[serde(flatten)]
    cursor: MailboxCursor,
}

/// Keep a finished lease around for a day, then let TTL remove it.
const LEASE_RETENTION_SECS: i64 = 86_400;

#[async_trait]
impl MailboxStateStore for DynamoStore {
    async fn cursor(
        &self,
        org: &OrgId,
        mailbox: &Email,
        folder: MailFolder,
    ) -> Result<Option<MailboxCursor>> {
        let item = self
            .get(
                &self.tables.state,
                keys::key(mailbox_pk(org, mailbox), cursor_sk(folder)),
            )
            .await?;
        item.map(|i| from_item::<CursorRecord>(i).map(|r| r.cursor))
            .transpose()
    }

    async fn save_cursor(&self, cursor: &MailboxCursor) -> Result<()> {
        let record = CursorRecord {
            pk: mailbox_pk(&cursor.org, &cursor.mailbox),
            sk: cursor_sk(cursor.folder),
            cursor: cursor.clone(),
        };
        self.put_state(&record).await
    }

    async fn clear_cursor(&self, org: &OrgId, mailbox: &Email, folder: MailFolder) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(mailbox_pk(org, mailbox), cursor_sk(folder))))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut item = keys::key(mailbox_pk(org, mailbox), LEASE_SK);
        item.insert("holder".into(), s(holder));
        item.insert(
            "until_ms".into(),
            n(until.unix_timestamp_nanos() / 1_000_000),
        );
        item.insert(
            "expires_at".into(),
            n(until.unix_timestamp() + LEASE_RETENTION_SECS),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR until_ms < :now OR holder = :holder")
            .expression_attribute_values(":now", n(now.unix_timestamp_nanos() / 1_000_000))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lease_holder(
        &self,
        org: &OrgId,
        mailbox: &Email,
        now: OffsetDateTime,
    ) -> Result<Option<String>> {
        let item = self
            .get(
                &self.tables.state,
                keys::key(mailbox_pk(org, mailbox), LEASE_SK),
            )
            .await?;
        let running = |i: &crate::Item| {
            i.get("until_ms")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i128>().ok())
                .is_some_and(|until| until >= now.unix_timestamp_nanos() / 1_000_000)
        };
        Ok(item
            .filter(running)
            .and_then(|i| i.get("holder").and_then(|v| v.as_s().ok()).cloned()))
    }

    async fn release_lease(&self, org: &OrgId, mailbox: &Email, holder: &str) -> Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(mailbox_pk(org, mailbox), LEASE_SK)))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await;
        match result {
            // Someone else holds it now (ours had expired): theirs is not ours to release.
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}
