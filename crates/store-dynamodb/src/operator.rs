//! What only the operator's commands (`o365-ops`) do, never a function: listing every org, and
//! erasing one (offboarding). Partitions are queried keys-only and deleted in batches; what no
//! key of the org names — every org, an org's tenant claim, its archive's mailboxes — is found by
//! a filtered scan, acceptable for an operator's rare action. (The template's IAM test relies on
//! this file holding the scans: no function may call them.)

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};

use o365_domain::ids::{Email, OrgId};
use o365_domain::{DomainError, Result};

use crate::keys::{self, ORG_SK, TENANT_SK, audit_pk, mailbox_pk, org_pk};
use crate::sdk_error::unavailable;
use crate::tables::{PK, SK};
use crate::{DynamoStore, Item, s};

impl DynamoStore {
    /// Every org of the stage, for operators (a scan: not for request paths).
    pub async fn org_ids(&self) -> Result<Vec<OrgId>> {
        let mut orgs = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.tables.state)
                .filter_expression("sk = :org")
                .expression_attribute_values(":org", s(ORG_SK))
                .projection_expression("org")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            orgs.extend(
                out.items()
                    .iter()
                    .filter_map(|i| i.get("org").and_then(|v| v.as_s().ok()))
                    .filter_map(|o| OrgId::parse(o).ok()),
            );
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        orgs.sort();
        Ok(orgs)
    }

    pub(crate) async fn erase(&self, org: &OrgId, mailboxes: &[Email]) -> Result<()> {
        let state = self.tables.state.clone();
        for mailbox in mailboxes {
            self.delete_partition(&state, &mailbox_pk(org, mailbox), None)
                .await?;
        }
        // Positions of mailboxes neither a user nor an archive names any more.
        let positions = self
            .scan_keys(
                &state,
                "begins_with(pk, :prefix)",
                HashMap::from([(":prefix".to_owned(), s(format!("MBX#{org}#")))]),
            )
            .await?;
        self.delete_keys(&state, positions).await?;
        self.delete_partition(&state, &audit_pk(org), None).await?;
        self.delete_partition(&state, &crate::runs::runs_pk(org), None)
            .await?;
        let claims = self
            .scan_keys(
                &state,
                "sk = :tenant AND org = :org",
                HashMap::from([
                    (":tenant".to_owned(), s(TENANT_SK)),
                    (":org".to_owned(), s(org.to_string())),
                ]),
            )
            .await?;
        self.delete_keys(&state, claims).await?;
        // The person index (erasure by address): entries left by messages purged before it
        // listed its people, or pointing at other people's erased messages.
        let entries = self
            .scan_keys(
                &self.tables.messages,
                "begins_with(pk, :prefix)",
                HashMap::from([(
                    ":prefix".to_owned(),
                    s(crate::people::person_pk_prefix(org)),
                )]),
            )
            .await?;
        self.delete_keys(&self.tables.messages, entries).await?;
        // The org item last: until it is gone the org is listed and offboarding can be rerun.
        self.delete_partition(&state, &org_pk(org), Some(ORG_SK))
            .await?;
        self.delete_keys(&state, vec![keys::key(org_pk(org), ORG_SK)])
            .await
    }

    pub(crate) async fn mailboxes_in_archive(&self, org: &OrgId) -> Result<Vec<Email>> {
        let prefix = keys::message_pk_prefix(org);
        let found = self
            .scan_keys(
                &self.tables.messages,
                "begins_with(pk, :prefix)",
                HashMap::from([(":prefix".to_owned(), s(&prefix))]),
            )
            .await?;
        let partitions: BTreeSet<String> = found
            .into_iter()
            .filter_map(|k| k.get(PK).and_then(|v| v.as_s().ok()).cloned())
            .collect();
        // Partition keys were written from parsed emails; one that no longer parses is skipped.
        Ok(partitions
            .iter()
            .filter_map(|pk| Email::parse(&pk[prefix.len()..]).ok())
            .collect())
    }

    /// Deletes every item of a partition but `keep` (a sort key).
    async fn delete_partition(&self, table: &str, pk: &str, keep: Option<&str>) -> Result<()> {
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(":p", s(pk))
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            let doomed = out
                .items
                .unwrap_or_default()
                .into_iter()
                .filter(|k| {
                    keep.is_none_or(|keep| {
                        k.get(SK)
                            .and_then(|v| v.as_s().ok())
                            .is_none_or(|sk| sk != keep)
                    })
                })
                .collect();
            self.delete_keys(table, doomed).await?;
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(()),
            }
        }
    }

    async fn scan_keys(
        &self,
        table: &str,
        filter: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Vec<Item>> {
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .filter_expression(filter)
                .set_expression_attribute_values(Some(values.clone()))
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            keys.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(keys),
            }
        }
    }

    async fn delete_keys(&self, table: &str, keys: Vec<Item>) -> Result<()> {
        let requests = keys
            .into_iter()
            .map(|key| {
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(|e| DomainError::Unavailable(format!("DynamoDB: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(table, requests).await
    }
}
