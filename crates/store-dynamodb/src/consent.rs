//! Consent requests: single use is an atomic conditional delete; TTL only tidies up.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use o365_domain::connection::AppRegistration;
use o365_domain::consent::ConsentRequest;
use o365_domain::ids::{Email, OrgId};
use o365_domain::ports::ConsentStore;
use o365_domain::{DomainError, Entity, Result};

use crate::keys::{self, CONSENT_SK, consent_pk};
use crate::sdk_error::{is_conditional_failure, unavailable};
use crate::{DynamoStore, from_item, to_item};

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
}

impl ConsentRecord {
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
        })
    }
}

#[async_trait]
impl ConsentStore for DynamoStore {
    async fn put_consent_request(&self, request: &ConsentRequest) -> Result<()> {
        let record = ConsentRecord {
            pk: consent_pk(&request.nonce),
            sk: CONSENT_SK.into(),
            expires_at: request.expires_at.unix_timestamp(),
            nonce: request.nonce.clone(),
            org: request.org.clone(),
            initiated_by: request.initiated_by.clone(),
            app: request.app,
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(to_item(&record)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => {
                Err(DomainError::AlreadyExists(Entity::ConsentRequest))
            }
            Err(e) => Err(unavailable(e)),
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
