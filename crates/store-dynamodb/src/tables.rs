//! The one definition of our DynamoDB tables. `infra/template.yaml` must match it (a test checks),
//! and the local stack creates tables from it.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use o365_domain::{DomainError, Result};

use crate::sdk_error::unavailable;

/// Physical table names, from configuration (each deployment stage has its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub state: String,
    pub messages: String,
}

impl TableNames {
    pub const DEFAULT_STATE: &'static str = "o365-sync-state";
    pub const DEFAULT_MESSAGES: &'static str = "o365-sync-messages";

    /// Names with a prefix, so several test stores can share one DynamoDB endpoint.
    pub fn prefixed(prefix: &str) -> Self {
        Self {
            state: format!("{prefix}{}", Self::DEFAULT_STATE),
            messages: format!("{prefix}{}", Self::DEFAULT_MESSAGES),
        }
    }
}

impl Default for TableNames {
    fn default() -> Self {
        Self::prefixed("")
    }
}

/// Which logical table a definition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Orgs, settings, connections, users, consent requests, audit events, cursors, leases.
    State,
    /// Captured messages, one item per message.
    Messages,
}

/// What an index carries besides its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexProjection {
    All,
    /// These attributes only: a listing index must not copy (and pay to write) mail bodies.
    Include(&'static [&'static str]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDefinition {
    pub name: &'static str,
    pub partition_key: &'static str,
    pub sort_key: &'static str,
    pub projection: IndexProjection,
}

/// Keys are all strings; billing is on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    pub table: Table,
    pub partition_key: &'static str,
    pub sort_key: &'static str,
    pub indexes: Vec<IndexDefinition>,
    pub ttl_attribute: Option<&'static str>,
}

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const GSI1: &str = "gsi1";
pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// A mailbox's messages, newest first: `{received, UTC seconds}#{id}`.
pub const BY_RECEIVED: &str = "by_received";
pub const RECEIVED_KEY: &str = "received_key";
/// What a message listing shows: every captured field but the body.
pub const MESSAGE_LISTING_ATTRIBUTES: &[&str] = &[
    "id",
    "folder",
    "internet_message_id",
    "conversation_id",
    "subject",
    "from",
    "to",
    "cc",
    "bcc",
    "received_at",
    "sent_at",
    "last_modified_at",
    "change_key",
    "preview",
    "has_attachments",
    "categories",
    "web_link",
    "state",
    "stored_at",
    "removed_at",
    "removal_reason",
    "body_truncated",
    "recipients_truncated",
    "sender",
    "reply_to",
    "is_read",
    "is_draft",
    "importance",
    "flag_status",
    "parent_folder_id",
    TTL_ATTRIBUTE,
];

pub fn table_definitions() -> Vec<TableDefinition> {
    vec![
        TableDefinition {
            table: Table::State,
            partition_key: PK,
            sort_key: SK,
            indexes: vec![IndexDefinition {
                name: GSI1,
                partition_key: GSI1_PK,
                sort_key: GSI1_SK,
                projection: IndexProjection::All,
            }],
            ttl_attribute: Some(TTL_ATTRIBUTE),
        },
        TableDefinition {
            table: Table::Messages,
            partition_key: PK,
            sort_key: SK,
            indexes: vec![IndexDefinition {
                name: BY_RECEIVED,
                partition_key: PK,
                sort_key: RECEIVED_KEY,
                projection: IndexProjection::Include(MESSAGE_LISTING_ATTRIBUTES),
            }],
            // The org's retention: message items carry an expiry when the org sets one.
            ttl_attribute: Some(TTL_ATTRIBUTE),
        },
    ]
}

impl TableNames {
    pub fn name_of(&self, table: Table) -> &str {
        match table {
            Table::State => &self.state,
            Table::Messages => &self.messages,
        }
    }
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(unavailable)
}

fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(unavailable)
}

/// Creates any missing table and turns TTL on; safe to run at every start.
pub async fn ensure_tables(client: &Client, names: &TableNames) -> Result<()> {
    for def in table_definitions() {
        let name = names.name_of(def.table);
        if client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .is_ok()
        {
            continue;
        }
        let mut attributes = vec![
            string_attribute(def.partition_key)?,
            string_attribute(def.sort_key)?,
        ];
        let mut request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(def.partition_key, KeyType::Hash)?)
            .key_schema(key(def.sort_key, KeyType::Range)?);
        for index in &def.indexes {
            for attribute in [index.partition_key, index.sort_key] {
                if !attributes.iter().any(|a| a.attribute_name() == attribute) {
                    attributes.push(string_attribute(attribute)?);
                }
            }
            let projection = match index.projection {
                IndexProjection::All => Projection::builder().projection_type(ProjectionType::All),
                IndexProjection::Include(names) => Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(names.iter().map(|n| n.to_string()).collect())),
            };
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .key_schema(key(index.partition_key, KeyType::Hash)?)
                    .key_schema(key(index.sort_key, KeyType::Range)?)
                    .projection(projection.build())
                    .build()
                    .map_err(unavailable)?,
            );
        }
        match request
            .set_attribute_definitions(Some(attributes))
            .send()
            .await
        {
            Ok(_) => {}
            // Another process created it between our describe and create.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                continue;
            }
            Err(e) => return Err(unavailable(e)),
        }
        if let Some(ttl) = def.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(ttl)
                        .enabled(true)
                        .build()
                        .map_err(unavailable)?,
                )
                .send()
                .await
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// A cheap round trip proving the store answers, for health checks.
pub async fn probe(client: &Client, names: &TableNames) -> Result<()> {
    for def in table_definitions() {
        client
            .describe_table()
            .table_name(names.name_of(def.table))
            .send()
            .await
            .map_err(|e| {
                DomainError::Unavailable(format!(
                    "table {} unavailable: {}",
                    names.name_of(def.table),
                    crate::sdk_error::describe(&e)
                ))
            })?;
    }
    Ok(())
}
