//! Per-mailbox bookkeeping: delta cursors and the job lease.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use o365_domain::Result;
use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::{Lease, MailFolder, MailboxCursor};
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
        self.put_lease(
            org,
            mailbox,
            holder,
            until,
            now,
            "attribute_not_exists(pk) OR until_ms < :now OR holder = :holder",
        )
        .await
    }

    async fn lease_holder(
        &self,
        org: &OrgId,
        mailbox: &Email,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>> {
        let item = self
            .get(
                &self.tables.state,
                keys::key(mailbox_pk(org, mailbox), LEASE_SK),
            )
            .await?;
        let lease = item.and_then(|i| {
            let until_ms = i.get("until_ms")?.as_n().ok()?.parse::<i128>().ok()?;
            Some(Lease {
                holder: i.get("holder")?.as_s().ok()?.clone(),
                until: OffsetDateTime::from_unix_timestamp_nanos(until_ms * 1_000_000).ok()?,
            })
        });
        Ok(lease.filter(|l| l.until >= now))
    }

    async fn release_lease(&self, org: &OrgId, mailbox: &Email, holder: &str) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(mailbox_pk(org, mailbox), LEASE_SK)))
            .update_expression("SET until_ms = :ended")
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":ended", n(0))
            .send()
            .await;
        match result {
            // Someone else holds it now (ours had expired): theirs is not ours to release.
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lease_queued_job(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.put_lease(
            org,
            mailbox,
            holder,
            until,
            now,
            "attribute_not_exists(pk) OR (until_ms < :now AND holder <> :holder)",
        )
        .await
    }
}

impl DynamoStore {
    /// Puts the mailbox's lease for `holder` until `until` when `condition` holds.
    async fn put_lease(
        &self,
        org: &OrgId,
        mailbox: &Email,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
        condition: &str,
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
            .condition_expression(condition)
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
}
