//! The person index of the messages table, for erasure by address: one small item per archived
//! message and person the domain names (`WriteStamp::people_to_index`), in a partition per org and
//! address — `~person#{org}#{address}` (org ids hold no `~`, so no mailbox partition looks alike)
//! — with the message's mailbox and id and the message's expiry. The message item lists its
//! indexed people (`people`), so purging a mailbox removes its index entries too.

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};

use o365_domain::ids::{Email, OrgId};
use o365_domain::message::{CapturedMessage, WriteStamp};
use o365_domain::{DomainError, Result};

use crate::keys::{self, message_pk};
use crate::sdk_error::unavailable;
use crate::tables::{PK, SK, TTL_ATTRIBUTE};
use crate::{DynamoStore, Item, n, s};

/// The message item's attribute naming its indexed people.
pub(crate) const PEOPLE: &str = "people";

pub(crate) fn person_pk(org: &OrgId, address: &str) -> String {
    format!("{}{address}", person_pk_prefix(org))
}

pub(crate) fn person_pk_prefix(org: &OrgId) -> String {
    format!("~person#{org}#")
}

fn entry_sk(mailbox: &Email, id: &str) -> String {
    format!("{}#{id}", mailbox.key())
}

/// The index entries of one message as it is written, and the `people` attribute for its item.
pub(crate) fn entries(
    org: &OrgId,
    mailbox: &Email,
    message: &CapturedMessage,
    stamp: &WriteStamp,
) -> Result<(Option<AttributeValue>, Vec<WriteRequest>)> {
    let people = stamp.people_to_index(message);
    if people.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut requests = Vec::with_capacity(people.len());
    for person in &people {
        let mut item = Item::from([
            (PK.to_owned(), s(person_pk(org, person))),
            (SK.to_owned(), s(entry_sk(mailbox, &message.id))),
            ("mailbox".to_owned(), s(mailbox.key())),
            ("id".to_owned(), s(&message.id)),
        ]);
        if let Some(expires) = stamp.expires_at(message) {
            item.insert(
                TTL_ATTRIBUTE.into(),
                n(expires.unix_timestamp().max(0) as u64),
            );
        }
        requests.push(put(item)?);
    }
    Ok((Some(AttributeValue::Ss(people)), requests))
}

/// Deletes for the index entries a stored message item lists.
pub(crate) fn entry_deletes(
    org: &OrgId,
    mailbox: &Email,
    item: &Item,
) -> Result<Vec<WriteRequest>> {
    entry_keys(org, mailbox, item)
        .into_iter()
        .map(delete)
        .collect()
}

/// The keys of the index entries a stored message item lists.
fn entry_keys(org: &OrgId, mailbox: &Email, item: &Item) -> Vec<Item> {
    let (Some(people), Some(id)) = (
        item.get(PEOPLE).and_then(|v| v.as_ss().ok()),
        item.get(SK).and_then(|v| v.as_s().ok()),
    ) else {
        return Vec::new();
    };
    people
        .iter()
        .map(|person| keys::key(person_pk(org, person), entry_sk(mailbox, id)))
        .collect()
}

fn put(item: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(unavailable)?,
        )
        .build())
}

pub(crate) fn delete(key: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| DomainError::Unavailable(format!("DynamoDB: {e}")))?,
        )
        .build())
}

impl DynamoStore {
    /// The message item's key and `people` (consistent, projected: no body).
    async fn message_people(&self, key: Item) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.messages)
            .set_key(Some(key))
            .consistent_read(true)
            .projection_expression("pk, sk, #people")
            .expression_attribute_names("#people", PEOPLE)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    pub(crate) async fn erase_indexed(
        &self,
        org: &OrgId,
        address: &Email,
        limit: usize,
    ) -> Result<Vec<(Email, String)>> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.messages)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(person_pk(org, address.key())))
            .projection_expression("pk, sk, mailbox, id")
            .consistent_read(true)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let mut erased = Vec::new();
        // One batch may not name a key twice: the person's own entry is also among the
        // message's entries.
        let mut doomed: Vec<Item> = Vec::new();
        fn add(key: Item, doomed: &mut Vec<Item>) {
            if !doomed.contains(&key) {
                doomed.push(key);
            }
        }
        for entry in out.items.unwrap_or_default() {
            let text = |k: &str| entry.get(k).and_then(|v| v.as_s().ok()).cloned();
            if let (Some(mailbox), Some(id)) = (text("mailbox"), text("id"))
                && let Ok(mailbox) = Email::parse(&mailbox)
            {
                let key = keys::key(message_pk(org, &mailbox), &id);
                // The message's other people's entries go with it (they would point at nothing).
                if let Some(item) = self.message_people(key.clone()).await? {
                    for k in entry_keys(org, &mailbox, &item) {
                        add(k, &mut doomed);
                    }
                }
                add(key, &mut doomed);
                erased.push((mailbox, id));
            }
            add(
                keys::key(text(PK).unwrap_or_default(), text(SK).unwrap_or_default()),
                &mut doomed,
            );
        }
        let requests = doomed.into_iter().map(delete).collect::<Result<Vec<_>>>()?;
        self.batch_write(&self.tables.messages, requests).await?;
        Ok(erased)
    }
}
