//! The messages table: one item per (mailbox, immutable id), whatever folder moves happen.
//!
//! Bodies are compressed (`body_codec`) and, if still too large, cut (with a flag) so no item passes
//! DynamoDB's 400 KB limit. Removals are conditional on the folder, so a move processed in either
//! order ends with the message live in its new folder.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use rand::Rng;
use time::OffsetDateTime;

use o365_domain::ids::{Email, OrgId};
use o365_domain::mailbox::{MailFolder, WriteMark};
use o365_domain::message::{
    ArchivedStamp, BodyType, CapturedMessage, MessageBody, MessageQuery, MessageRemoval,
    PageWriteSummary, RemovalReason, StoredMessage, WriteStamp,
};
use o365_domain::page::{Page, PageRequest};
use o365_domain::ports::MessageArchive;
use o365_domain::{DomainError, Result};

use crate::keys::{self, message_pk};
use crate::sdk_error::{is_conditional_failure, unavailable};
use crate::tables::{BY_RECEIVED, PK, RECEIVED_KEY, TTL_ATTRIBUTE};
use crate::{DynamoStore, Item, body_codec, from_item, n, people, rfc3339, s, to_item};

/// DynamoDB's item size limit (attribute names and values together).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Room kept for attributes we add after measuring, and for the estimate's slack.
const SAFETY_MARGIN: usize = 4 * 1024;
/// Past this, the metadata alone (huge recipient lists) is trimmed before the body is considered.
const MAX_METADATA_BYTES: usize = 256 * 1024;
const BATCH_WRITE_LIMIT: usize = 25;
/// The mark of the write that first archived a message (`WriteMark`).
const FIRST_MARK: &str = "first_mark";
const MAX_RETRIES: u32 = 10;

/// Exponential backoff with full jitter; gives up after [`MAX_RETRIES`].
pub(crate) async fn backoff(attempt: u32) -> Result<()> {
    if attempt > MAX_RETRIES {
        return Err(DomainError::Unavailable(
            "DynamoDB kept refusing writes (throttled); try again later".into(),
        ));
    }
    let cap_ms = (25u64 << attempt.min(8)).min(5_000);
    let wait = rand::rng().random_range(0..=cap_ms);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    Ok(())
}

/// Approximate DynamoDB size of an item: names plus values, as AWS documents the count.
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(x) | AttributeValue::N(x) => x.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        AttributeValue::Ss(x) | AttributeValue::Ns(x) => x.iter().map(String::len).sum(),
        _ => 1,
    }
}

fn cut_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The compressed body and whether it had to be cut to fit `budget` bytes.
fn fit_body(content: &str, budget: usize) -> (Vec<u8>, bool) {
    // Never more than a reader will decompress (a huge, very repetitive body compresses small).
    if content.len() > body_codec::MAX_BODY_BYTES {
        let (compressed, _) = fit_body(
            cut_at_char_boundary(content, body_codec::MAX_BODY_BYTES),
            budget,
        );
        return (compressed, true);
    }
    let mut compressed = body_codec::compress(content);
    if compressed.len() <= budget {
        return (compressed, false);
    }
    let mut keep = content.len();
    while compressed.len() > budget && keep > 0 {
        // Shrink in proportion to the overshoot, a little more to converge fast.
        keep = (keep as f64 * budget as f64 / compressed.len() as f64 * 0.9) as usize;
        compressed = body_codec::compress(cut_at_char_boundary(content, keep));
    }
    (compressed, true)
}

fn message_item(
    org: &OrgId,
    mailbox: &Email,
    message: &CapturedMessage,
    at: OffsetDateTime,
    mark: Option<&WriteMark>,
    people: Option<AttributeValue>,
) -> Result<(Item, bool)> {
    // The body is not part of the metadata's serialisation (it is stored below, compressed).
    let body = message.body.as_ref();
    let mut recipients_truncated = false;
    let mut item = to_item(message)?;
    // Only a message whose metadata alone is oversized (huge recipient lists) is copied, to cut.
    let mut meta = None;
    while item_size(&item) > MAX_METADATA_BYTES {
        let meta = meta.get_or_insert_with(|| CapturedMessage {
            body: None,
            ..message.clone()
        });
        let longest = [&mut meta.to, &mut meta.cc, &mut meta.bcc]
            .into_iter()
            .max_by_key(|l| l.len());
        match longest {
            Some(list) if !list.is_empty() => list.truncate(list.len() / 2),
            _ => break,
        }
        recipients_truncated = true;
        item = to_item(&*meta)?;
    }
    item.insert(PK.into(), s(message_pk(org, mailbox)));
    item.insert("sk".into(), s(&message.id));
    item.insert(RECEIVED_KEY.into(), s(received_key(message, at)));
    item.insert("state".into(), s("live"));
    item.insert("stored_at".into(), s(rfc3339(at)));
    if let Some(mark) = mark {
        item.insert(FIRST_MARK.into(), s(mark.encode()));
    }
    item.insert(
        "recipients_truncated".into(),
        AttributeValue::Bool(recipients_truncated),
    );
    // Before the body, which gets whatever room is left.
    if let Some(people) = people {
        item.insert(people::PEOPLE.into(), people);
    }
    let mut body_truncated = false;
    if let Some(body) = body {
        let budget = MAX_ITEM_BYTES.saturating_sub(item_size(&item) + SAFETY_MARGIN);
        let (compressed, truncated) = fit_body(&body.content, budget);
        body_truncated = truncated;
        item.insert(
            "body_type".into(),
            s(match body.content_type {
                BodyType::Html => "html",
                BodyType::Text => "text",
            }),
        );
        item.insert(body_codec::BODY.into(), body_codec::body_value(compressed));
    }
    item.insert(
        "body_truncated".into(),
        AttributeValue::Bool(body_truncated),
    );
    Ok((item, body_truncated))
}

/// `2026-05-01T10:11:12Z`: fixed width, so keys sort by time.
fn second(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// The listing index's sort key: when the message arrived (sent, for one never received; else
/// when we stored it), then its id, so equal times stay distinct.
fn received_key(message: &CapturedMessage, at: OffsetDateTime) -> String {
    let when = message.received_at.or(message.sent_at).unwrap_or(at);
    format!("{}#{}", second(when), message.id)
}

fn stored_message(mut item: Item) -> Result<StoredMessage> {
    let text = |item: &Item, k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    if text(&item, "state").as_deref() == Some("removed") {
        let folder = text(&item, "folder")
            .and_then(|f| MailFolder::parse(&f))
            .unwrap_or(MailFolder::Inbox);
        let reason = match text(&item, "removal_reason").as_deref() {
            Some("changed") => RemovalReason::Changed,
            _ => RemovalReason::Deleted,
        };
        let removed_at = text(&item, "removed_at")
            .and_then(|t| {
                OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        return Ok(StoredMessage::Removed {
            id: text(&item, "sk").unwrap_or_default(),
            folder,
            reason,
            removed_at,
        });
    }
    let body = body_codec::take_body(&mut item)?;
    let body_truncated = item
        .get("body_truncated")
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false);
    let body_type = text(&item, "body_type");
    let stored_at = text(&item, "stored_at").and_then(|t| {
        OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
    });
    let mut message: CapturedMessage = from_item(item)?;
    if let Some(content) = body {
        message.body = Some(MessageBody {
            content_type: if body_type.as_deref() == Some("text") {
                BodyType::Text
            } else {
                BodyType::Html
            },
            content,
        });
    }
    Ok(StoredMessage::Live {
        message,
        body_truncated,
        stored_at,
    })
}

/// The stamp of a live message item (or of its index entry).
fn archived_stamp(item: &Item) -> Option<ArchivedStamp> {
    let time = |k: &str| {
        item.get(k).and_then(|v| v.as_s().ok()).and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    Some(ArchivedStamp {
        id: item.get("sk")?.as_s().ok()?.clone(),
        folder: MailFolder::parse(item.get("folder")?.as_s().ok()?)?,
        received_at: time("received_at"),
        stored_at: time("stored_at"),
    })
}

fn messages_page(raw: Page<Item>) -> Result<Page<StoredMessage>> {
    Ok(Page {
        items: raw
            .items
            .into_iter()
            .map(stored_message)
            .collect::<Result<_>>()?,
        next: raw.next,
    })
}

/// How many of a page's messages are built and written together (four full batches).
const WRITE_SLICE: usize = 100;

impl DynamoStore {
    /// BatchWriteItem on the messages table (see [`Self::batch_write`]).
    async fn batch_put(&self, requests: Vec<WriteRequest>) -> Result<()> {
        self.batch_write(&self.tables.messages, requests).await
    }

    /// BatchWriteItem in chunks of 25, retrying what DynamoDB leaves unprocessed.
    pub(crate) async fn batch_write(
        &self,
        table: &str,
        mut requests: Vec<WriteRequest>,
    ) -> Result<()> {
        let mut attempt = 0;
        while !requests.is_empty() {
            let chunk: Vec<WriteRequest> = requests
                .drain(..requests.len().min(BATCH_WRITE_LIMIT))
                .collect();
            let out = self
                .client
                .batch_write_item()
                .request_items(table, chunk)
                .send()
                .await
                .map_err(unavailable)?;
            let left = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
            if !left.is_empty() {
                attempt += 1;
                backoff(attempt).await?;
                requests.extend(left);
            }
        }
        Ok(())
    }

    async fn apply_removal(
        &self,
        org: &OrgId,
        mailbox: &Email,
        removal: &MessageRemoval,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.messages)
            .set_key(Some(keys::key(message_pk(org, mailbox), &removal.id)))
            .update_expression(
                "SET #state = :removed, folder = :folder, removal_reason = :reason, removed_at = :at REMOVE body_gz, body_zst, body_type",
            )
            .condition_expression("attribute_not_exists(pk) OR folder = :folder")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":removed", s("removed"))
            .expression_attribute_values(":folder", s(removal.folder.well_known_name()))
            .expression_attribute_values(":reason", s(match removal.reason {
                RemovalReason::Deleted => "deleted",
                RemovalReason::Changed => "changed",
            }))
            .expression_attribute_values(":at", s(rfc3339(at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // The message already lives in another folder: the removal is a move's old half.
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// A slice of a page as write requests, appended to `out`: its index entries, then its
/// messages (a crash between batches leaves entries without their message, harmless and
/// rewritten by the page's replay, never an archived message erasure cannot find).
fn slice_requests(
    org: &OrgId,
    mailbox: &Email,
    slice: &[&CapturedMessage],
    stamp: &WriteStamp,
    summary: &mut PageWriteSummary,
    out: &mut Vec<WriteRequest>,
) -> Result<()> {
    let mut messages = Vec::with_capacity(slice.len());
    for m in slice {
        let (people, entries) = people::entries(org, mailbox, m, stamp)?;
        let (mut item, truncated) =
            message_item(org, mailbox, m, stamp.at, stamp.mark_for(&m.id), people)?;
        // The org's retention, as DynamoDB TTL: expired items are deleted by DynamoDB.
        if let Some(expires) = stamp.expires_at(m) {
            item.insert(
                TTL_ATTRIBUTE.into(),
                n(expires.unix_timestamp().max(0) as u64),
            );
        }
        summary.bodies_truncated += u64::from(truncated);
        out.extend(entries);
        messages.push(
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .map_err(unavailable)?,
                )
                .build(),
        );
    }
    summary.written += messages.len() as u64;
    out.extend(messages);
    Ok(())
}

#[async_trait]
impl MessageArchive for DynamoStore {
    async fn write_page(
        &self,
        org: &OrgId,
        mailbox: &Email,
        messages: &[CapturedMessage],
        removals: &[MessageRemoval],
        stamp: WriteStamp,
    ) -> Result<PageWriteSummary> {
        let at = stamp.at;
        let mut summary = PageWriteSummary::default();
        // A batch may not name one key twice; a page can (replays): the last copy wins.
        let mut seen = std::collections::HashSet::with_capacity(messages.len());
        let mut latest: Vec<&CapturedMessage> = Vec::with_capacity(messages.len());
        for m in messages.iter().rev() {
            if seen.insert(m.id.as_str()) {
                latest.push(m);
            }
        }
        latest.reverse();
        // Built a slice of the page at a time and written as full batches fill: at page size
        // 1000 the page's items all at once (compressed bodies, index entries) were megabytes
        // of the worker's peak. A slice's last, partial batch waits for the next slice's
        // requests, so the page costs as many batches as it did whole.
        let mut pending = Vec::new();
        for slice in latest.chunks(WRITE_SLICE) {
            slice_requests(org, mailbox, slice, &stamp, &mut summary, &mut pending)?;
            let full = pending.len() - pending.len() % BATCH_WRITE_LIMIT;
            if full > 0 {
                self.batch_put(pending.drain(..full).collect()).await?;
            }
        }
        self.batch_put(pending).await?;
        for removal in removals {
            summary.removed += u64::from(self.apply_removal(org, mailbox, removal, at).await?);
        }
        Ok(summary)
    }

    async fn message(
        &self,
        org: &OrgId,
        mailbox: &Email,
        id: &str,
    ) -> Result<Option<StoredMessage>> {
        let item = self
            .get(
                &self.tables.messages,
                keys::key(message_pk(org, mailbox), id),
            )
            .await?;
        // Past its retention (DynamoDB's TTL deletes it within days): gone already.
        let expired = item
            .as_ref()
            .and_then(|i| i.get(TTL_ATTRIBUTE))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|at| at <= OffsetDateTime::now_utc().unix_timestamp());
        if expired {
            return Ok(None);
        }
        item.map(stored_message).transpose()
    }

    async fn list_messages(
        &self,
        org: &OrgId,
        mailbox: &Email,
        query: &MessageQuery,
        page: PageRequest,
    ) -> Result<Page<StoredMessage>> {
        let partition = message_pk(org, mailbox);
        // '0' sorts before every time, '~' after every `#id` of the last second.
        let low = query
            .received_since
            .map(second)
            .unwrap_or_else(|| "0".into());
        let high = format!(
            "{}~",
            query
                .received_until
                .map(second)
                .unwrap_or_else(|| "9".into())
        );
        // Past its retention but not yet removed by DynamoDB's TTL (which lags): not shown.
        let mut filters = vec!["(attribute_not_exists(expires_at) OR expires_at > :now)"];
        let mut request = self
            .client
            .query()
            .table_name(&self.tables.messages)
            .index_name(BY_RECEIVED)
            .key_condition_expression("pk = :p AND received_key BETWEEN :low AND :high")
            .expression_attribute_values(":p", s(&partition))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high))
            .expression_attribute_values(
                ":now",
                n(OffsetDateTime::now_utc().unix_timestamp().max(0) as u64),
            )
            .scan_index_forward(false);
        if let Some(folder) = query.folder {
            filters.push("folder = :folder");
            request = request.expression_attribute_values(":folder", s(folder.well_known_name()));
        }
        if !query.include_removed {
            filters.push("#state = :live");
            request = request
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":live", s("live"));
        }
        request = request.filter_expression(filters.join(" AND "));
        messages_page(self.query_page(request, PK, &partition, &page).await?)
    }

    async fn purge_messages(&self, org: &OrgId, mailbox: &Email, limit: usize) -> Result<u64> {
        let partition = message_pk(org, mailbox);
        // Keys only: deleting a mailbox must not read (and pay for) its bodies.
        let out = self
            .client
            .query()
            .table_name(&self.tables.messages)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(&partition))
            .projection_expression("pk, sk, #people")
            .expression_attribute_names("#people", people::PEOPLE)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let keys = out.items.unwrap_or_default();
        let deleted = keys.len() as u64;
        let mut requests = Vec::with_capacity(keys.len());
        for mut key in keys {
            requests.extend(people::entry_deletes(org, mailbox, &key)?);
            key.remove(people::PEOPLE);
            requests.push(
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(key))
                            .build()
                            .map_err(unavailable)?,
                    )
                    .build(),
            );
        }
        self.batch_put(requests).await?;
        Ok(deleted)
    }

    async fn erase_person(
        &self,
        org: &OrgId,
        address: &Email,
        limit: usize,
    ) -> Result<Vec<(Email, String)>> {
        self.erase_indexed(org, address, limit).await
    }

    async fn live_stamps(
        &self,
        org: &OrgId,
        mailbox: &Email,
        page: PageRequest,
    ) -> Result<Page<ArchivedStamp>> {
        let partition = message_pk(org, mailbox);
        // The listing index holds no bodies: the read costs a fraction of the items'.
        let request = self
            .client
            .query()
            .table_name(&self.tables.messages)
            .index_name(BY_RECEIVED)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(&partition))
            .filter_expression("#state = :live")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":live", s("live"))
            .projection_expression("pk, sk, received_key, folder, received_at, stored_at");
        let raw = self.query_page(request, PK, &partition, &page).await?;
        Ok(Page {
            items: raw.items.iter().filter_map(archived_stamp).collect(),
            next: raw.next,
        })
    }

    async fn held(
        &self,
        org: &OrgId,
        mailbox: &Email,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Option<WriteMark>>> {
        let partition = message_pk(org, mailbox);
        let keys = ids.iter().map(|id| keys::key(&partition, id)).collect();
        Ok(self
            .batch_get(&self.tables.messages, keys, Some("sk, first_mark"))
            .await?
            .iter()
            .filter_map(|item| {
                let id = item.get("sk").and_then(|v| v.as_s().ok())?.clone();
                let mark = item
                    .get(FIRST_MARK)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|m| WriteMark::decode(m));
                Some((id, mark))
            })
            .collect())
    }

    async fn live_stamp(
        &self,
        org: &OrgId,
        mailbox: &Email,
        id: &str,
    ) -> Result<Option<ArchivedStamp>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.messages)
            .set_key(Some(keys::key(message_pk(org, mailbox), id)))
            .consistent_read(true)
            .projection_expression("sk, folder, received_at, stored_at, #state")
            .expression_attribute_names("#state", "state")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out
            .item
            .filter(|i| {
                i.get("state")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|v| v == "live")
            })
            .as_ref()
            .and_then(archived_stamp))
    }

    async fn archived_mailboxes(&self, org: &OrgId) -> Result<Vec<Email>> {
        self.mailboxes_in_archive(org).await
    }

    async fn all_messages(
        &self,
        org: &OrgId,
        mailbox: &Email,
        page: PageRequest,
    ) -> Result<Page<StoredMessage>> {
        let partition = message_pk(org, mailbox);
        let query = self
            .client
            .query()
            .table_name(&self.tables.messages)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(&partition));
        messages_page(self.query_page(query, PK, &partition, &page).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incompressible_body_is_cut_to_the_budget() {
        let mut state = 0x2545F4914F6CDD1Du64;
        let noise: String = (0..600_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'!' + (state % 90) as u8)
            })
            .collect();
        let (compressed, truncated) = fit_body(&noise, 300_000);
        assert!(truncated);
        assert!(compressed.len() <= 300_000);
        let text =
            String::from_utf8(zstd::bulk::decompress(&compressed, 1 << 24).unwrap()).unwrap();
        assert!(
            noise.starts_with(&text) && text.len() > 200_000,
            "kept {} bytes",
            text.len()
        );
    }

    #[test]
    fn a_compressible_body_is_kept_whole() {
        let html = "<p>Quarterly numbers attached.</p>".repeat(30_000);
        let (compressed, truncated) = fit_body(&html, 300_000);
        assert!(!truncated);
        let text =
            String::from_utf8(zstd::bulk::decompress(&compressed, 1 << 24).unwrap()).unwrap();
        assert_eq!(text, html);
    }

    #[test]
    fn cutting_respects_utf8() {
        assert_eq!(cut_at_char_boundary("héllo", 2), "h");
    }
}
