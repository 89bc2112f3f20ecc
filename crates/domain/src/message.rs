//! A captured mail message, in the fields we keep of Graph's message resource.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::mailbox::MailFolder;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    Html,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBody {
    pub content_type: BodyType,
    pub content: String,
}

/// What Outlook users see and change on a message besides its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetails {
    /// Who sent it on behalf of `from` (a delegate, a shared mailbox), when different.
    #[serde(default)]
    pub sender: Option<Recipient>,
    #[serde(default)]
    pub reply_to: Vec<Recipient>,
    #[serde(default)]
    pub is_read: Option<bool>,
    #[serde(default)]
    pub is_draft: Option<bool>,
    /// `low`, `normal` or `high`.
    #[serde(default)]
    pub importance: Option<String>,
    /// `notFlagged`, `flagged` or `complete`.
    #[serde(default)]
    pub flag_status: Option<String>,
    /// The folder's Graph id (well-known folders are `folder` already).
    #[serde(default)]
    pub parent_folder_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedMessage {
    /// Graph's immutable id: the same across folder moves, so one message is one item.
    pub id: String,
    pub folder: MailFolder,
    pub internet_message_id: Option<String>,
    pub conversation_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<Recipient>,
    pub to: Vec<Recipient>,
    pub cc: Vec<Recipient>,
    pub bcc: Vec<Recipient>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub received_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_modified_at: Option<OffsetDateTime>,
    pub change_key: Option<String>,
    pub preview: Option<String>,
    pub has_attachments: bool,
    pub categories: Vec<String>,
    pub web_link: Option<String>,
    /// Stored beside the other fields (older items read as empty).
    #[serde(default, flatten)]
    pub details: MessageDetails,
    /// Present only when the app's permission includes bodies. Never serialised with the
    /// rest: the archive stores it apart, compressed (and serialising the metadata then copies
    /// no body).
    #[serde(skip)]
    pub body: Option<MessageBody>,
}

impl CapturedMessage {
    /// Everyone on the message (from, sender, to, cc, bcc, reply-to), lower-case, each once.
    pub fn participant_addresses(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for r in self
            .from
            .iter()
            .chain(&self.to)
            .chain(&self.cc)
            .chain(&self.bcc)
            .chain(&self.details.sender)
            .chain(&self.details.reply_to)
        {
            if let Some(a) = r.address.as_deref() {
                let a = a.to_ascii_lowercase();
                if !all.contains(&a) {
                    all.push(a);
                }
            }
        }
        all
    }

    /// A message with only its identity: every other field empty, to be set by the caller.
    pub fn new(id: impl Into<String>, folder: MailFolder) -> Self {
        Self {
            id: id.into(),
            folder,
            internet_message_id: None,
            conversation_id: None,
            subject: None,
            from: None,
            to: vec![],
            cc: vec![],
            bcc: vec![],
            received_at: None,
            sent_at: None,
            last_modified_at: None,
            change_key: None,
            preview: None,
            has_attachments: false,
            categories: vec![],
            web_link: None,
            details: MessageDetails::default(),
            body: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovalReason {
    /// Deleted from the folder.
    Deleted,
    /// Moved out of the folder (it may reappear in another one under the same immutable id).
    Changed,
}

/// Most people of one message the person index names (in the order from, to, cc, bcc, sender,
/// reply-to).
pub const MAX_INDEXED_PEOPLE: usize = 50;

/// When a page is written, how long its messages are kept (the org's retention), and whose
/// messages they are for the person index (erasure by address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteStamp {
    pub at: OffsetDateTime,
    /// Counted from when a message was received (else from `at`); `None` keeps it.
    pub keep_for: Option<time::Duration>,
    /// The org's own domains: their people are not indexed (their mail goes by purging their
    /// mailboxes), which keeps the index to the outside world.
    pub own_domains: Vec<String>,
    /// The mark of the write that archives a message for the first time...
    pub mark: Option<crate::mailbox::WriteMark>,
    /// ...and the marks messages already archived keep (a message keeps its first mark).
    pub kept_marks: std::collections::HashMap<String, crate::mailbox::WriteMark>,
}

impl From<OffsetDateTime> for WriteStamp {
    fn from(at: OffsetDateTime) -> Self {
        Self {
            at,
            keep_for: None,
            own_domains: Vec::new(),
            mark: None,
            kept_marks: Default::default(),
        }
    }
}

impl WriteStamp {
    /// The stamp of a page captured under `policy`.
    pub fn under(policy: &crate::capture_policy::CapturePolicy, at: OffsetDateTime) -> Self {
        Self {
            at,
            keep_for: policy.keep_for(),
            own_domains: policy.internal_domains.clone(),
            mark: None,
            kept_marks: Default::default(),
        }
    }

    /// The mark `id`'s item carries: the one it was first archived under, else this write's.
    pub fn mark_for(&self, id: &str) -> Option<&crate::mailbox::WriteMark> {
        self.kept_marks.get(id).or(self.mark.as_ref())
    }

    /// The addresses the person index names for `message`: its participants outside the org's
    /// own domains, each once, at most [`MAX_INDEXED_PEOPLE`] (a mass mailing's long recipient
    /// list would otherwise cost a write per recipient).
    pub fn people_to_index(&self, message: &CapturedMessage) -> Vec<String> {
        message
            .participant_addresses()
            .into_iter()
            .filter(|a| !crate::capture_policy::in_domains(a, &self.own_domains))
            .take(MAX_INDEXED_PEOPLE)
            .collect()
    }

    /// When `message` expires from the archive, if the org keeps mail for a limited time.
    pub fn expires_at(&self, message: &CapturedMessage) -> Option<OffsetDateTime> {
        self.keep_for
            .map(|keep| message.received_at.or(message.sent_at).unwrap_or(self.at) + keep)
    }
}

/// What a resync's reconciliation needs of a live archived message — no body, no metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedStamp {
    pub id: String,
    pub folder: MailFolder,
    pub received_at: Option<OffsetDateTime>,
    /// When the archive last wrote it.
    pub stored_at: Option<OffsetDateTime>,
}

/// Which archived messages of a mailbox a listing returns (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageQuery {
    pub folder: Option<MailFolder>,
    /// Received at or after.
    pub received_since: Option<OffsetDateTime>,
    /// Received at or before.
    pub received_until: Option<OffsetDateTime>,
    /// Also messages deleted or moved out of the synced folders (tombstones).
    pub include_removed: bool,
}

/// A `@removed` entry of a folder's delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRemoval {
    pub id: String,
    pub folder: MailFolder,
    pub reason: RemovalReason,
}

/// A message as the archive holds it.
// Nearly every item is live; boxing it would cost an allocation per message to shrink the rare
// tombstone.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoredMessage {
    Live {
        message: CapturedMessage,
        /// The body was cut to fit the store's item size limit.
        body_truncated: bool,
        /// When the archive last wrote this item (the `at` of the page write); `None` when the
        /// store does not know. The sync reconciles a resync round against it.
        #[serde(default, with = "time::serde::rfc3339::option")]
        stored_at: Option<OffsetDateTime>,
    },
    /// Kept as a tombstone so a replayed page cannot resurrect it silently and consumers see the deletion.
    Removed {
        id: String,
        folder: MailFolder,
        reason: RemovalReason,
        #[serde(with = "time::serde::rfc3339")]
        removed_at: OffsetDateTime,
    },
}

impl StoredMessage {
    pub fn id(&self) -> &str {
        match self {
            StoredMessage::Live { message, .. } => &message.id,
            StoredMessage::Removed { id, .. } => id,
        }
    }
}

/// What one page write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageWriteSummary {
    pub written: u64,
    pub removed: u64,
    pub bodies_truncated: u64,
}
