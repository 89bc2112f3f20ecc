//! DynamoDB adapter of the o365-sync store ports.
//!
//! Invariants live in condition expressions and transactions, not in read-then-write code, so
//! they hold under any concurrency: one Primary pointer per org, an admin count that never drops
//! to zero, optimistic versions on every mutable item, single-use consent nonces.

mod audit;
mod body_codec;
mod consent;
mod keys;
mod mailboxes;
mod messages;
mod operator;
mod orgs;
mod paging;
mod people;
mod query;
mod runs;
mod sdk_error;
mod syncing_count;
mod tables;
mod users;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use std::collections::HashMap;

pub use messages::MAX_ITEM_BYTES;
pub use tables::{
    IndexDefinition, IndexProjection, TTL_ATTRIBUTE, Table, TableDefinition, TableNames,
    ensure_tables, probe, table_definitions,
};

use o365_domain::{DomainError, Result};
use sdk_error::{TransactionFailure, transaction_failure, unavailable};

type Item = HashMap<String, AttributeValue>;

/// Implements every store port of the domain on two DynamoDB tables.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
}

impl DynamoStore {
    pub fn new(client: Client, tables: TableNames) -> Self {
        Self { client, tables }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    pub async fn probe(&self) -> Result<()> {
        tables::probe(&self.client, &self.tables).await
    }

    /// BatchGetItem of any number of keys (100 per request, consistent, optionally projected),
    /// retrying what DynamoDB leaves unprocessed. Missing items are simply absent.
    async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        let mut pending = keys;
        let mut attempt = 0;
        while !pending.is_empty() {
            let chunk: Vec<Item> = pending.drain(..pending.len().min(100)).collect();
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(chunk))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(true)
                .build()
                .map_err(sdk_error::unavailable)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(sdk_error::unavailable)?;
            found.extend(
                out.responses
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default(),
            );
            if let Some(left) = out.unprocessed_keys.and_then(|mut u| u.remove(table)) {
                attempt += 1;
                messages::backoff(attempt).await?;
                pending.extend(left.keys);
            }
        }
        Ok(found)
    }

    async fn get(&self, table: &str, key: Item) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// The named attributes of one state-table item, read consistently.
    async fn get_state_projected(&self, key: Item, projection: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .set_key(Some(key))
            .consistent_read(true)
            .projection_expression(projection)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// An unconditional put into the state table (records that are only ever replaced).
    async fn put_state<T: serde::Serialize>(&self, record: &T) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(to_item(record)?))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> std::result::Result<(), TransactionFailure> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(transaction_failure)
    }
}

fn to_item<T: serde::Serialize>(value: &T) -> Result<Item> {
    serde_dynamo::to_item(value)
        .map_err(|e| DomainError::Unavailable(format!("cannot encode item: {e}")))
}

fn from_item<T: serde::de::DeserializeOwned>(item: Item) -> Result<T> {
    serde_dynamo::from_item(item).map_err(|e| {
        tracing::error!(error = %e, "stored item does not decode");
        DomainError::Unavailable("a stored item could not be read".into())
    })
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
