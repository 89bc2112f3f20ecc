//! Paged queries over one partition: every listing goes through here, so every page token is
//! bound to its partition the same way.

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use serde::de::DeserializeOwned;

use o365_domain::page::{Page, PageRequest};
use o365_domain::{DomainError, Result};

use crate::sdk_error::unavailable;
use crate::tables::PK;
use crate::{DynamoStore, Item, from_item, paging, s};

/// Attribute holding a whole JSON document (audit events, sync runs): read back whole, never
/// queried by field.
pub(crate) const DOC: &str = "doc";

impl DynamoStore {
    /// A query of the state table's index (`gsi1pk`) over one of its partitions.
    pub(crate) fn state_index_query(&self, partition: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.tables.state)
            .index_name(crate::tables::GSI1)
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(partition))
    }

    /// One page of `query`, which selects the partition `partition_attribute = partition`.
    pub(crate) async fn query_page(
        &self,
        query: QueryFluentBuilder,
        partition_attribute: &str,
        partition: &str,
        page: &PageRequest,
    ) -> Result<Page<Item>> {
        let start = paging::decode(page.after.as_deref(), partition_attribute, partition)?;
        let crafted = start.is_some();
        let out = query
            .limit(page.limit as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                // Our own tokens always fit the key schema: a start key DynamoDB rejects came
                // from the caller, so it is their bad input, not an outage.
                if crafted
                    && e.as_service_error().and_then(|s| s.meta().code())
                        == Some("ValidationException")
                {
                    paging::invalid_token()
                } else {
                    unavailable(e)
                }
            })?;
        let next = paging::encode(out.last_evaluated_key());
        Ok(Page {
            items: out.items.unwrap_or_default(),
            next,
        })
    }

    /// The JSON documents of a state-table partition, newest (highest sort key) first; with
    /// `only` (attribute, value), those items alone (a page may then hold fewer than its limit).
    pub(crate) async fn documents_newest_first<T: DeserializeOwned>(
        &self,
        partition: &str,
        only: Option<(&str, &str)>,
        page: &PageRequest,
    ) -> Result<Page<T>> {
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.state)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(partition))
            .scan_index_forward(false);
        if let Some((attribute, value)) = only {
            query = query
                .filter_expression("#only = :only")
                .expression_attribute_names("#only", attribute)
                .expression_attribute_values(":only", s(value));
        }
        let raw = self.query_page(query, PK, partition, page).await?;
        let items = raw
            .items
            .into_iter()
            .map(|mut item| {
                let doc = item
                    .remove(DOC)
                    .and_then(|v| v.as_s().ok().cloned())
                    .unwrap_or_default();
                serde_json::from_str(&doc).map_err(|e| {
                    tracing::error!(error = %e, "stored document does not decode");
                    DomainError::Unavailable("a stored item could not be read".into())
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            next: raw.next,
        })
    }

    /// Items of one page decoded as `T`.
    pub(crate) fn decode_page<T: DeserializeOwned>(page: Page<Item>) -> Result<Page<T>> {
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(from_item)
                .collect::<Result<_>>()?,
            next: page.next,
        })
    }
}
