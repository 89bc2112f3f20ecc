//! Consent requests and tenant claims. A request is single use through an atomic conditional
//! delete (TTL only tidies up); it is written in one transaction with the connection change it
//! starts. A tenant claim item says which org holds a Microsoft tenant.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use o365_domain::audit::AuditEvent;
use o365_domain::connection::{AppRegistration, Connection};
use o365_domain::consent::{ConsentLeg, ConsentRequest};
use o365_domain::ids::{Email, OrgId, TenantId};
use o365_domain::ports::ConsentStore;
use o365_domain::{DomainError, Entity, Result, RuleViolation};

use crate::keys::{self, CONNECTION_SK, CONSENT_SK, TENANT_SK, consent_pk, org_pk, tenant_pk};
use crate::sdk_error::{TransactionFailure, is_conditional_failure, unavailable};
use crate::{DynamoStore, Item, from_item, n, s, to_item};

#[derive(Serialize, Deserialize)]
struct ConsentRecord {
    pk: String,
    sk: String,
    /// DynamoDB TTL (epoch seconds). Expiry is also checked on read: TTL deletion lags.
    expires_at: i64,
    nonce: String,
    org: OrgId,
    initiated_by: Email,
    app: AppRegistration,
    #[serde(flatten)]
    leg: ConsentLeg,
}

impl ConsentRecord {
    fn of(request: &ConsentRequest) -> Self {
        Self {
            pk: consent_pk(&request.nonce),
            sk: CONSENT_SK.into(),
            expires_at: request.expires_at.unix_timestamp(),
            nonce: request.nonce.clone(),
            org: request.org.clone(),
            initiated_by: request.initiated_by.clone(),
            app: request.app,
            leg: request.leg.clone(),
        }
    }

    fn into_request(self) -> Result<ConsentRequest> {
        let expires_at = OffsetDateTime::from_unix_timestamp(self.expires_at).map_err(|_| {
            DomainError::Unavailable("a consent request has a broken expiry".into())
        })?;
        Ok(ConsentRequest {
            nonce: self.nonce,
            org: self.org,
            initiated_by: self.initiated_by,
            app: self.app,
            expires_at,
            leg: self.leg,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct TenantClaim {
    pk: String,
    sk: String,
    tenant: TenantId,
    org: OrgId,
}

impl DynamoStore {
    fn consent_put(&self, request: &ConsentRequest) -> Result<TransactWriteItem> {
        self.put_item(
            to_item(&ConsentRecord::of(request))?,
            Some("attribute_not_exists(pk)"),
            None,
        )
    }

    /// The org holding `tenant`, if any claim exists.
    async fn tenant_holder(&self, tenant: &TenantId) -> Result<Option<OrgId>> {
        let item = self
            .get(&self.tables.state, keys::key(tenant_pk(tenant), TENANT_SK))
            .await?;
        Ok(match item {
            Some(item) => Some(from_item::<TenantClaim>(item)?.org),
            None => None,
        })
    }
}

#[async_trait]
impl ConsentStore for DynamoStore {
    async fn start_round_trip(
        &self,
        request: &ConsentRequest,
        connection: &Connection,
        audit: AuditEvent,
    ) -> Result<()> {
        let items = vec![
            self.consent_put(request)?,
            self.connection_put(&request.org, connection)?,
            self.audit_put(&audit)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(_)) => Err(DomainError::Conflict(Entity::Connection)),
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn bind_tenant(
        &self,
        tenant: TenantId,
        request: &ConsentRequest,
        connection: &Connection,
        audit: AuditEvent,
    ) -> Result<()> {
        let org = &request.org;
        let claim = to_item(&TenantClaim {
            pk: tenant_pk(&tenant),
            sk: TENANT_SK.into(),
            tenant,
            org: org.clone(),
        })?;
        let holder = self.tenant_holder(&tenant).await?;
        let mut items = Vec::new();
        let held_elsewhere = holder.as_ref().is_some_and(|h| h != org);
        match &holder {
            None => items.push(self.put_item(claim, Some("attribute_not_exists(pk)"), None)?),
            Some(holder) => {
                if held_elsewhere {
                    // A claim is live while its org's connection names the tenant, unless that
                    // connection is an attempt whose consent link has expired: a claim left by
                    // a deleted, failed or abandoned attempt is taken over.
                    items.push(self.condition_check(
                        keys::key(org_pk(holder), CONNECTION_SK),
                        "attribute_not_exists(tenant_id) OR tenant_id <> :t OR pending_until < :now",
                        Some(Item::from([
                            (":t".into(), s(tenant.to_string())),
                            (
                                ":now".into(),
                                n(OffsetDateTime::now_utc().unix_timestamp().max(0) as u64),
                            ),
                        ])),
                    )?);
                }
                items.push(self.put_item(
                    claim,
                    Some("org = :holder"),
                    Some(Item::from([(":holder".into(), s(holder.to_string()))])),
                )?);
            }
        }
        items.push(self.consent_put(request)?);
        items.push(self.connection_put(org, connection)?);
        items.push(self.audit_put(&audit)?);
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(TransactionFailure::Cancelled(reasons)) => {
                if held_elsewhere && reasons.first().is_some_and(Option::is_some) {
                    return Err(DomainError::Rule(RuleViolation::TenantInUse));
                }
                // Another org may have claimed the tenant between our read and our write.
                match self.tenant_holder(&tenant).await? {
                    Some(now_held) if now_held != *org => {
                        Err(DomainError::Rule(RuleViolation::TenantInUse))
                    }
                    // Otherwise a concurrent change of our own connection won: start over.
                    _ => Err(DomainError::Conflict(Entity::Connection)),
                }
            }
            Err(TransactionFailure::Other(e)) => Err(e),
        }
    }

    async fn take_consent_request(
        &self,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<ConsentRequest> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(consent_pk(nonce), CONSENT_SK)))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let item = match result {
            Ok(out) => out
                .attributes
                .ok_or(DomainError::NotFound(Entity::ConsentRequest))?,
            Err(e) if is_conditional_failure(&e) => {
                return Err(DomainError::NotFound(Entity::ConsentRequest));
            }
            Err(e) => return Err(unavailable(e)),
        };
        let request = from_item::<ConsentRecord>(item)?.into_request()?;
        if request.is_expired(now) {
            return Err(DomainError::NotFound(Entity::ConsentRequest));
        }
        Ok(request)
    }
}
