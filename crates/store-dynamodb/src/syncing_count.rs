//! How many of an org's users have sync on, kept on the org item (`syncing_users`) so the
//! Connection Settings view reads one number instead of counting every user of a 10,000-user
//! org. The number is only ever a count of the users, never adjusted by a delta: every switch
//! and removal counts again after its transaction, and so does the fan-out every cycle (which
//! repairs a recount a crash lost). `count_changes` is bumped by each switch before it counts,
//! so a recount that started before a switch never writes over the count that includes it.

use aws_sdk_dynamodb::types::{AttributeValue, Select};

use o365_domain::ids::OrgId;
use o365_domain::user::SyncStateKind;
use o365_domain::{DomainError, Entity, Result};

use crate::keys::{self, ORG_SK, org_pk, user_state_gsi_pk};
use crate::sdk_error::unavailable;
use crate::{DynamoStore, Item, n};

const SYNCING: &str = "syncing_users";
const CHANGES: &str = "count_changes";

/// A new org's item: nobody syncs yet.
pub(crate) fn with_no_syncing_users(mut org_item: Item) -> Item {
    org_item.insert(SYNCING.into(), n(0));
    org_item
}

/// The kept count as read, with the number of switches recorded so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeptCount {
    pub count: Option<u64>,
    changes: Option<u64>,
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// The kept count on an org item read whole.
pub(crate) fn kept_count_of(org_item: &Item) -> KeptCount {
    KeptCount {
        count: number(org_item, SYNCING),
        changes: number(org_item, CHANGES),
    }
}

impl DynamoStore {
    pub(crate) async fn kept_syncing(&self, org: &OrgId) -> Result<KeptCount> {
        let item = self
            .get_state_projected(
                keys::key(org_pk(org), ORG_SK),
                &format!("pk, {SYNCING}, {CHANGES}"),
            )
            .await?
            .ok_or(DomainError::NotFound(Entity::Org))?;
        Ok(kept_count_of(&item))
    }

    /// After a switch or a removal (its transaction committed): the change is recorded, then
    /// the users are counted again. Best effort: the switch stands whatever happens here, and
    /// the next recount repairs the count.
    pub(crate) async fn recount_after_switch(&self, org: &OrgId) {
        let bumped = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .set_key(Some(keys::key(org_pk(org), ORG_SK)))
            .update_expression(format!("ADD {CHANGES} :one"))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", n(1));
        let result = match Self::send_conditional(bumped).await {
            Ok(_) => match self.kept_syncing(org).await {
                Ok(kept) => self.recount_syncing(org, kept).await.map(|_| ()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(org = %org, error = %e, "the org's count of syncing users waits for the next recount");
        }
    }

    /// Counts the users with sync on (reading them all) and keeps the count, unless a switch
    /// came in since `kept` was read. Writes nothing when the kept count is right.
    pub(crate) async fn recount_syncing(&self, org: &OrgId, kept: KeptCount) -> Result<u64> {
        let count = self
            .count_matching(self.sync_enabled_query(org).consistent_read(true))
            .await?;
        if kept.count != Some(count) {
            let unchanged = match kept.changes {
                Some(_) => format!("{CHANGES} = :seen"),
                None => format!("attribute_not_exists({CHANGES})"),
            };
            let mut update = self
                .client
                .update_item()
                .table_name(&self.tables.state)
                .set_key(Some(keys::key(org_pk(org), ORG_SK)))
                .update_expression(format!("SET {SYNCING} = :count"))
                .condition_expression(format!("attribute_exists(pk) AND {unchanged}"))
                .expression_attribute_values(":count", n(count));
            if let Some(seen) = kept.changes {
                update = update.expression_attribute_values(":seen", n(seen));
            }
            // Refused: a switch came in meanwhile; its own recount (or the next one) stands.
            Self::send_conditional(update).await?;
        }
        Ok(count)
    }

    /// Users with sync on and in error (the state index holds only them: small unless the org
    /// is in trouble).
    pub(crate) async fn count_in_error(&self, org: &OrgId) -> Result<u64> {
        let query = self
            .state_index_query(&user_state_gsi_pk(org, SyncStateKind::Error.as_str()))
            .filter_expression("sync_enabled = :on")
            .expression_attribute_values(":on", AttributeValue::Bool(true));
        self.count_matching(query).await
    }

    pub(crate) async fn count_matching(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<u64> {
        let mut total = 0;
        let mut start = None;
        loop {
            let out = query
                .clone()
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            total += out.count.max(0) as u64;
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(total),
            }
        }
    }
}
