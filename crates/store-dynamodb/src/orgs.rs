//! Orgs: settings, the Primary pointer, the admin count and the connection.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

use o365_domain::audit::AuditEvent;
use o365_domain::capture_policy::CapturePolicy;
use o365_domain::connection::{Connection, ConnectionStatus};
use o365_domain::ids::{Email, OrgId};
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::OrgStore;
use o365_domain::settings::IntegrationSettings;
use o365_domain::user::NewUser;
use o365_domain::user::SyncCounts;
use o365_domain::{DomainError, Entity, Result};

use crate::keys::{self, CAPTURE_POLICY_SK, CONNECTION_SK, ORG_SK, connection_gsi_pk, org_pk};
use crate::sdk_error::{TransactionFailure, unavailable};
use crate::tables::GSI1_PK;
use crate::{DynamoStore, Item, from_item, n, syncing_count, to_item};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OrgRecord {
    pub pk: String,
    pub sk: String,
    pub org: String,
    pub use_service_account: bool,
    pub read_only: bool,
    pub settings_version: u64,
    /// The canonical email of the one Primary user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_email: Option<String>,
    pub admin_count: u64,
}

impl OrgRecord {
    fn settings(&self) -> IntegrationSettings {
        IntegrationSettings {
            use_service_account: self.use_service_account,
            read_only: self.read_only,
            version: self.settings_version,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CapturePolicyRecord {
    pk: String,
    sk: String,
    #[serde(flatten)]
    policy: CapturePolicy,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConnectionRecord {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(flatten)]
    connection: Connection,
}
impl DynamoStore {
    pub(crate) async fn org_record(&self, org: &OrgId) -> Result<OrgRecord> {
        let item = self
            .get(&self.tables.state, keys::key(org_pk(org), ORG_SK))
            .await?;
        from_item(item.ok_or(DomainError::NotFound(Entity::Org))?)
    }

    pub(crate) fn put_item(
        &self,
        item: Item,
        condition: Option<&str>,
        values: Option<Item>,
    ) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.tables.state)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values(values)
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(crate) fn update_item(
        &self,
        key: Item,
        update: &str,
        condition: &str,
        values: Item,
    ) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.tables.state)
            .set_key(Some(key))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    pub(crate) fn condition_check(
        &self,
        key: Item,
        condition: &str,
        values: Option<Item>,
    ) -> Result<TransactWriteItem> {
        let check = ConditionCheck::builder()
            .table_name(&self.tables.state)
            .set_key(Some(key))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    pub(crate) fn connection_put(
        &self,
        org: &OrgId,
        connection: &Connection,
    ) -> Result<TransactWriteItem> {
        let record = ConnectionRecord {
            pk: org_pk(org),
            sk: CONNECTION_SK.into(),
            gsi1pk: connection_gsi_pk(connection.status.as_str()),
            gsi1sk: org.to_string(),
            connection: connection.clone(),
        };
        let item = to_item(&record)?;
        if connection.version <= 1 {
            self.put_item(item, Some("attribute_not_exists(pk)"), None)
        } else {
            self.put_item(
                item,
                Some("version = :prev"),
                Some(Item::from([(":prev".into(), n(connection.version - 1))])),
            )
        }
    }
}

#[async_trait]
impl OrgStore for DynamoStore {
    async fn erase_org(&self, org: &OrgId, mailboxes: &[Email]) -> Result<()> {
        self.erase(org, mailboxes).await
    }

    async fn create_org(
        &self,
        org: &OrgId,
        first_admin: &NewUser,
        audit: AuditEvent,
    ) -> Result<()> {
        let record = OrgRecord {
            pk: org_pk(org),
            sk: ORG_SK.into(),
            org: org.to_string(),
            use_service_account: IntegrationSettings::INITIAL.use_service_account,
            read_only: IntegrationSettings::INITIAL.read_only,
            settings_version: IntegrationSettings::INITIAL.version,
            primary_email: Some(first_admin.email.key().to_owned()),
            admin_count: 1,
        };
        let items = vec![
            self.put_item(
                crate::syncing_count::with_no_syncing_users(to_item(&record)?),
                Some("attribute_not_exists(pk)"),
                None,
            )?,
            self.user_put(org, first_admin)?,
            self.audit_put(&audit)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(_)) => Err(DomainError::AlreadyExists(Entity::Org)),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn settings(&self, org: &OrgId) -> Result<IntegrationSettings> {
        Ok(self.org_record(org).await?.settings())
    }

    async fn settings_and_counts(&self, org: &OrgId) -> Result<(IntegrationSettings, SyncCounts)> {
        let item = self
            .get(&self.tables.state, keys::key(org_pk(org), ORG_SK))
            .await?
            .ok_or(DomainError::NotFound(Entity::Org))?;
        let kept = syncing_count::kept_count_of(&item);
        let settings = from_item::<OrgRecord>(item)?.settings();
        let syncing = match kept.count {
            Some(count) => count,
            None => self.recount_syncing(org, kept).await?,
        };
        let counts = SyncCounts {
            syncing,
            in_error: self.count_in_error(org).await?,
        };
        Ok((settings, counts))
    }

    async fn save_settings(
        &self,
        org: &OrgId,
        settings: &IntegrationSettings,
        connection: Option<&Connection>,
        audit: AuditEvent,
    ) -> Result<()> {
        let mut items = vec![self.update_item(
            keys::key(org_pk(org), ORG_SK),
            "SET use_service_account = :u, read_only = :r, settings_version = :v",
            "settings_version = :prev",
            Item::from([
                (
                    ":u".into(),
                    aws_sdk_dynamodb::types::AttributeValue::Bool(settings.use_service_account),
                ),
                (
                    ":r".into(),
                    aws_sdk_dynamodb::types::AttributeValue::Bool(settings.read_only),
                ),
                (":v".into(), n(settings.version)),
                (":prev".into(), n(settings.version.saturating_sub(1))),
            ]),
        )?];
        if let Some(c) = connection {
            items.push(self.connection_put(org, c)?);
        }
        items.push(self.audit_put(&audit)?);
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(reasons)) => {
                if reasons.first().is_some_and(Option::is_some) {
                    self.org_record(org).await?;
                    Err(DomainError::Conflict(Entity::Settings))
                } else {
                    Err(DomainError::Conflict(Entity::Connection))
                }
            }
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn connection(&self, org: &OrgId) -> Result<Connection> {
        match self
            .get(&self.tables.state, keys::key(org_pk(org), CONNECTION_SK))
            .await?
        {
            Some(item) => Ok(from_item::<ConnectionRecord>(item)?.connection),
            None => {
                self.org_record(org).await?;
                Ok(Connection::none())
            }
        }
    }

    async fn save_connection(
        &self,
        org: &OrgId,
        connection: &Connection,
        audit: AuditEvent,
    ) -> Result<()> {
        // The org must exist: a connection never outlives or precedes its org.
        let org_exists =
            self.condition_check(keys::key(org_pk(org), ORG_SK), "attribute_exists(pk)", None)?;
        match self
            .transact(vec![
                org_exists,
                self.connection_put(org, connection)?,
                self.audit_put(&audit)?,
            ])
            .await
        {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(reasons))
                if reasons.first().is_some_and(Option::is_some) =>
            {
                Err(DomainError::NotFound(Entity::Org))
            }
            Err(TransactionFailure::Cancelled(_)) => Err(DomainError::Conflict(Entity::Connection)),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn capture_policy(&self, org: &OrgId) -> Result<CapturePolicy> {
        match self
            .get(
                &self.tables.state,
                keys::key(org_pk(org), CAPTURE_POLICY_SK),
            )
            .await?
        {
            Some(item) => Ok(from_item::<CapturePolicyRecord>(item)?.policy),
            None => {
                self.org_record(org).await?;
                Ok(CapturePolicy::default())
            }
        }
    }

    async fn save_capture_policy(
        &self,
        org: &OrgId,
        policy: &CapturePolicy,
        audit: AuditEvent,
    ) -> Result<()> {
        let org_exists =
            self.condition_check(keys::key(org_pk(org), ORG_SK), "attribute_exists(pk)", None)?;
        let item = to_item(&CapturePolicyRecord {
            pk: org_pk(org),
            sk: CAPTURE_POLICY_SK.into(),
            policy: policy.clone(),
        })?;
        let put = if policy.version <= 1 {
            self.put_item(item, Some("attribute_not_exists(pk)"), None)?
        } else {
            self.put_item(
                item,
                Some("version = :prev"),
                Some(Item::from([(":prev".into(), n(policy.version - 1))])),
            )?
        };
        match self
            .transact(vec![org_exists, put, self.audit_put(&audit)?])
            .await
        {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(reasons))
                if reasons.first().is_some_and(Option::is_some) =>
            {
                Err(DomainError::NotFound(Entity::Org))
            }
            Err(TransactionFailure::Cancelled(_)) => Err(DomainError::Conflict(Entity::Settings)),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn orgs_with_connection(
        &self,
        status: ConnectionStatus,
        page: PageRequest,
    ) -> Result<Page<OrgId>> {
        let partition = connection_gsi_pk(status.as_str());
        let query = self.state_index_query(&partition);
        let raw = self.query_page(query, GSI1_PK, &partition, &page).await?;
        let items = raw
            .items
            .iter()
            .filter_map(|i| {
                i.get("gsi1sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|o| OrgId::parse(o).ok())
            })
            .collect();
        Ok(Page {
            items,
            next: raw.next,
        })
    }
}
