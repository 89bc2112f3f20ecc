//! A delta page as Graph sends it, mapped to the domain's captured messages and removals.

use o365_domain::mailbox::{MailFolder, SyncLink};
use o365_domain::message::{
    BodyType, CapturedMessage, MessageBody, MessageDetails, MessageRemoval, Recipient,
    RemovalReason,
};
use o365_domain::microsoft::DeltaPage;
use serde::Deserialize;

use crate::body_reader::BodyReader;
use crate::page_splitter::PageSplitter;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Fields we store; `body` is added only when the app may read bodies.
pub(crate) const SELECT: &str = "id,internetMessageId,conversationId,subject,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,receivedDateTime,sentDateTime,lastModifiedDateTime,changeKey,bodyPreview,hasAttachments,categories,webLink,parentFolderId,isRead,isDraft,importance,flag";

/// What is left of a page once its elements are taken out (`value` is then empty).
#[derive(Deserialize)]
struct RawPage {
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem {
    id: String,
    #[serde(rename = "@removed")]
    removed: Option<RawRemoved>,
    internet_message_id: Option<String>,
    conversation_id: Option<String>,
    subject: Option<String>,
    from: Option<RawRecipient>,
    #[serde(default)]
    to_recipients: Option<Vec<RawRecipient>>,
    #[serde(default)]
    cc_recipients: Option<Vec<RawRecipient>>,
    #[serde(default)]
    bcc_recipients: Option<Vec<RawRecipient>>,
    received_date_time: Option<String>,
    sent_date_time: Option<String>,
    last_modified_date_time: Option<String>,
    change_key: Option<String>,
    body_preview: Option<String>,
    has_attachments: Option<bool>,
    #[serde(default)]
    categories: Option<Vec<String>>,
    web_link: Option<String>,
    sender: Option<RawRecipient>,
    #[serde(default)]
    reply_to: Option<Vec<RawRecipient>>,
    is_read: Option<bool>,
    is_draft: Option<bool>,
    importance: Option<String>,
    flag: Option<RawFlag>,
    parent_folder_id: Option<String>,
    body: Option<RawBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFlag {
    flag_status: Option<String>,
}

#[derive(Deserialize)]
struct RawRemoved {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRecipient {
    email_address: Option<RawAddress>,
}

#[derive(Deserialize)]
struct RawAddress {
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBody {
    content_type: Option<String>,
    content: Option<String>,
}

fn recipient(r: RawRecipient) -> Option<Recipient> {
    r.email_address.map(|a| Recipient {
        name: a.name,
        address: a.address,
    })
}

fn recipients(v: Option<Vec<RawRecipient>>) -> Vec<Recipient> {
    v.unwrap_or_default()
        .into_iter()
        .filter_map(recipient)
        .collect()
}

fn instant(s: Option<String>) -> Option<OffsetDateTime> {
    s.and_then(|s| OffsetDateTime::parse(&s, &Rfc3339).ok())
}

/// Reads a delta page as it arrives: each element of `value` is parsed and mapped on its own
/// (see `page_splitter`), the links from what is left.
pub(crate) struct DeltaPageReader {
    folder: MailFolder,
    include_body: bool,
    splitter: PageSplitter,
    messages: Vec<CapturedMessage>,
    removals: Vec<MessageRemoval>,
}

impl DeltaPageReader {
    pub(crate) fn new(folder: MailFolder, include_body: bool) -> Self {
        Self {
            folder,
            include_body,
            splitter: PageSplitter::default(),
            messages: Vec::new(),
            removals: Vec::new(),
        }
    }
}

impl BodyReader<DeltaPage> for DeltaPageReader {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        let (folder, include_body) = (self.folder, self.include_body);
        let (messages, removals) = (&mut self.messages, &mut self.removals);
        self.splitter.feed(chunk, &mut |element| {
            let item: RawItem =
                serde_json::from_slice(element).map_err(|e| format!("invalid delta JSON: {e}"))?;
            map_item(item, folder, include_body, messages, removals);
            Ok(())
        })
    }

    fn finish(self) -> Result<DeltaPage, String> {
        let rest = self.splitter.finish()?;
        let links: RawPage =
            serde_json::from_slice(&rest).map_err(|e| format!("invalid delta JSON: {e}"))?;
        let next = match (links.next_link, links.delta_link) {
            (Some(n), _) => SyncLink::Next(n),
            (None, Some(d)) => SyncLink::Delta(d),
            (None, None) => return Err("a delta page without nextLink or deltaLink".into()),
        };
        Ok(DeltaPage {
            messages: self.messages,
            removals: self.removals,
            next,
        })
    }
}

fn map_item(
    item: RawItem,
    folder: MailFolder,
    include_body: bool,
    messages: &mut Vec<CapturedMessage>,
    removals: &mut Vec<MessageRemoval>,
) {
    if let Some(r) = item.removed {
        removals.push(MessageRemoval {
            id: item.id,
            folder,
            reason: if r.reason == "deleted" {
                RemovalReason::Deleted
            } else {
                RemovalReason::Changed
            },
        });
        return;
    }
    let body = if include_body {
        item.body.and_then(|b| {
            Some(MessageBody {
                content_type: match b.content_type.as_deref() {
                    Some(t) if t.eq_ignore_ascii_case("text") => BodyType::Text,
                    _ => BodyType::Html,
                },
                content: b.content?,
            })
        })
    } else {
        None
    };
    messages.push(CapturedMessage {
        id: item.id,
        folder,
        internet_message_id: item.internet_message_id,
        conversation_id: item.conversation_id,
        subject: item.subject,
        from: item.from.and_then(recipient),
        to: recipients(item.to_recipients),
        cc: recipients(item.cc_recipients),
        bcc: recipients(item.bcc_recipients),
        received_at: instant(item.received_date_time),
        sent_at: instant(item.sent_date_time),
        last_modified_at: instant(item.last_modified_date_time),
        change_key: item.change_key,
        preview: item.body_preview,
        has_attachments: item.has_attachments.unwrap_or(false),
        categories: item.categories.unwrap_or_default(),
        web_link: item.web_link,
        details: MessageDetails {
            sender: item.sender.and_then(recipient),
            reply_to: recipients(item.reply_to),
            is_read: item.is_read,
            is_draft: item.is_draft,
            importance: item.importance,
            flag_status: item.flag.and_then(|f| f.flag_status),
            parent_folder_id: item.parent_folder_id,
        },
        body,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page as the reader takes it from the wire, in small chunks.
    fn parse_page(
        body: &[u8],
        folder: MailFolder,
        include_body: bool,
    ) -> Result<DeltaPage, String> {
        let mut reader = DeltaPageReader::new(folder, include_body);
        for chunk in body.chunks(5) {
            reader.feed(chunk)?;
        }
        reader.finish()
    }

    #[test]
    fn items_and_removals_are_mapped() {
        let body = br#"{"value":[
            {"id":"AAA","subject":"Hi","from":{"emailAddress":{"name":"A","address":"a@x.com"}},
             "toRecipients":[{"emailAddress":{"address":"b@x.com"}}],"receivedDateTime":"2024-01-02T03:04:05Z",
             "hasAttachments":true,"categories":["Red"],"body":{"contentType":"text","content":"hello"},
             "isRead":false,"flag":{"flagStatus":"flagged"},"replyTo":[{"emailAddress":{"address":"r@x.com"}}]},
            {"id":"BBB","@removed":{"reason":"deleted"}},
            {"id":"CCC","@removed":{"reason":"changed"}}
        ],"@odata.deltaLink":"http://x/delta?$deltatoken=1"}"#;
        let page = parse_page(body, MailFolder::Inbox, true).unwrap();
        assert_eq!(
            page.next,
            SyncLink::Delta("http://x/delta?$deltatoken=1".into())
        );
        let m = &page.messages[0];
        assert_eq!(m.subject.as_deref(), Some("Hi"));
        assert_eq!(m.to[0].address.as_deref(), Some("b@x.com"));
        assert!(m.has_attachments && m.received_at.is_some());
        assert_eq!(m.details.is_read, Some(false));
        assert_eq!(m.details.flag_status.as_deref(), Some("flagged"));
        assert_eq!(m.details.reply_to[0].address.as_deref(), Some("r@x.com"));
        assert_eq!(m.body.as_ref().unwrap().content_type, BodyType::Text);
        assert_eq!(page.removals.len(), 2);
        assert_eq!(page.removals[0].reason, RemovalReason::Deleted);
        assert_eq!(page.removals[1].reason, RemovalReason::Changed);
        let no_body = parse_page(body, MailFolder::Inbox, false).unwrap();
        assert!(no_body.messages[0].body.is_none());
    }

    #[test]
    fn truncated_json_is_refused() {
        assert!(parse_page(br#"{"value":[{"id":"A""#, MailFolder::Inbox, false).is_err());
        assert!(parse_page(br#"{"value":[]}"#, MailFolder::Inbox, false).is_err());
    }
}
