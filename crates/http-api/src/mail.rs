//! Captured mail over HTTP: a mailbox's messages (newest first, no bodies) and one message with
//! its body. Who may read, and the audit of every body read, are the domain's.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use o365_domain::DomainError;
use o365_domain::ids::Email;
use o365_domain::mailbox::MailFolder;
use o365_domain::message::{BodyType, CapturedMessage, MessageQuery, Recipient, StoredMessage};
use o365_domain::page::PageRequest;

use crate::ApiState;
use crate::extract::{ApiQuery, Caller};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub after: Option<String>,
    /// `inbox` or `sentitems`.
    pub folder: Option<String>,
    /// Received at or after this instant (RFC 3339).
    pub received_since: Option<String>,
    /// Received at or before this instant (RFC 3339).
    pub received_until: Option<String>,
    /// Also list messages deleted or moved out of the synced folders.
    pub include_removed: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddressDto {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageSummaryDto {
    /// Graph's immutable id.
    pub id: String,
    /// `inbox` or `sentitems`.
    pub folder: String,
    /// `live`, or `removed` (deleted or moved out of the synced folders).
    pub state: String,
    pub subject: Option<String>,
    pub from: Option<AddressDto>,
    /// Who sent it on behalf of `from`, when different.
    pub sender: Option<AddressDto>,
    pub reply_to: Vec<AddressDto>,
    pub to: Vec<AddressDto>,
    pub cc: Vec<AddressDto>,
    pub bcc: Vec<AddressDto>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub received_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    pub preview: Option<String>,
    pub has_attachments: bool,
    pub categories: Vec<String>,
    pub is_read: Option<bool>,
    pub is_draft: Option<bool>,
    /// `low`, `normal` or `high`.
    pub importance: Option<String>,
    /// `notFlagged`, `flagged` or `complete`.
    pub flag_status: Option<String>,
    pub conversation_id: Option<String>,
    pub internet_message_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeDto {
    /// Archived items deleted by this call.
    pub deleted: u64,
    /// Nothing is left; if false, call again to go on.
    pub complete: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePageDto {
    pub items: Vec<MessageSummaryDto>,
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BodyDto {
    /// `html` or `text`, as Microsoft stored it. Render HTML sandboxed: it is the sender's.
    pub content_type: String,
    pub content: String,
    /// Cut to fit the archive's item size limit.
    pub truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDto {
    #[serde(flatten)]
    pub summary: MessageSummaryDto,
    /// Absent for a removed message, or when the app's permission excludes bodies.
    pub body: Option<BodyDto>,
}

fn address(r: &Recipient) -> AddressDto {
    AddressDto {
        name: r.name.clone(),
        address: r.address.clone(),
    }
}

fn addresses(list: &[Recipient]) -> Vec<AddressDto> {
    list.iter().map(address).collect()
}

fn live_summary(m: &CapturedMessage) -> MessageSummaryDto {
    MessageSummaryDto {
        id: m.id.clone(),
        folder: m.folder.well_known_name().into(),
        state: "live".into(),
        subject: m.subject.clone(),
        from: m.from.as_ref().map(address),
        sender: m.details.sender.as_ref().map(address),
        reply_to: addresses(&m.details.reply_to),
        to: addresses(&m.to),
        cc: addresses(&m.cc),
        bcc: addresses(&m.bcc),
        received_at: m.received_at,
        sent_at: m.sent_at,
        preview: m.preview.clone(),
        has_attachments: m.has_attachments,
        categories: m.categories.clone(),
        is_read: m.details.is_read,
        is_draft: m.details.is_draft,
        importance: m.details.importance.clone(),
        flag_status: m.details.flag_status.clone(),
        conversation_id: m.conversation_id.clone(),
        internet_message_id: m.internet_message_id.clone(),
        removed_at: None,
    }
}

impl From<&StoredMessage> for MessageDto {
    fn from(stored: &StoredMessage) -> Self {
        match stored {
            StoredMessage::Live {
                message,
                body_truncated,
                ..
            } => MessageDto {
                summary: live_summary(message),
                body: message.body.as_ref().map(|b| BodyDto {
                    content_type: match b.content_type {
                        BodyType::Html => "html",
                        BodyType::Text => "text",
                    }
                    .into(),
                    content: b.content.clone(),
                    truncated: *body_truncated,
                }),
            },
            StoredMessage::Removed {
                id,
                folder,
                removed_at,
                ..
            } => MessageDto {
                summary: MessageSummaryDto {
                    id: id.clone(),
                    folder: folder.well_known_name().into(),
                    state: "removed".into(),
                    subject: None,
                    from: None,
                    sender: None,
                    reply_to: vec![],
                    to: vec![],
                    cc: vec![],
                    bcc: vec![],
                    received_at: None,
                    sent_at: None,
                    preview: None,
                    has_attachments: false,
                    categories: vec![],
                    is_read: None,
                    is_draft: None,
                    importance: None,
                    flag_status: None,
                    conversation_id: None,
                    internet_message_id: None,
                    removed_at: Some(*removed_at),
                },
                body: None,
            },
        }
    }
}

fn instant(field: &str, raw: Option<&str>) -> Result<Option<OffsetDateTime>, DomainError> {
    raw.map(|v| {
        OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).map_err(|_| {
            DomainError::invalid(
                field,
                "invalid_instant",
                format!("{field} is an RFC 3339 instant, e.g. 2026-11-01T00:00:00Z"),
            )
        })
    })
    .transpose()
}

fn message_query(q: &MessagesQuery) -> Result<MessageQuery, DomainError> {
    let folder = q
        .folder
        .as_deref()
        .map(|f| {
            MailFolder::parse(f).ok_or_else(|| {
                DomainError::invalid("folder", "unknown_folder", "folder is inbox or sentitems")
            })
        })
        .transpose()?;
    Ok(MessageQuery {
        folder,
        received_since: instant("received_since", q.received_since.as_deref())?,
        received_until: instant("received_until", q.received_until.as_deref())?,
        include_removed: q.include_removed.unwrap_or(false),
    })
}

#[utoipa::path(get, path = "/v1/users/{email}/messages", tag = "mail",
    params(("email" = String, Path), MessagesQuery),
    responses((status = 200, description = "The mailbox's captured messages, newest first, without bodies", body = MessagePageDto),
        (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the mailbox's owner and the org's admins (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user in the caller's org (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_messages(
    State(state): State<ApiState>,
    caller: Caller,
    Path(email): Path<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> ApiResult<Json<MessagePageDto>> {
    let email = Email::parse(&email).map_err(DomainError::from)?;
    let query = message_query(&q)?;
    let page = PageRequest::new(q.limit, q.after.clone()).map_err(DomainError::from)?;
    let messages = state
        .services
        .list_mail(&caller.0, &email, &query, page)
        .await?;
    Ok(Json(MessagePageDto {
        items: messages
            .items
            .iter()
            .map(|m| MessageDto::from(m).summary)
            .collect(),
        next: messages.next,
    }))
}

#[utoipa::path(get, path = "/v1/users/{email}/messages/{id}", tag = "mail",
    params(("email" = String, Path), ("id" = String, Path, description = "the message's immutable id")),
    responses((status = 200, description = "The message with its body; the read is audited", body = MessageDto),
        (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the mailbox's owner and the org's admins (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user or message (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn read_message(
    State(state): State<ApiState>,
    caller: Caller,
    Path((email, id)): Path<(String, String)>,
) -> ApiResult<Json<MessageDto>> {
    let email = Email::parse(&email).map_err(DomainError::from)?;
    if id.is_empty() || id.len() > 512 {
        return Err(DomainError::invalid("id", "invalid_message_id", "not a message id").into());
    }
    let message = state
        .services
        .read_mail(&caller.0, &email, &id, OffsetDateTime::now_utc())
        .await?;
    Ok(Json(MessageDto::from(&message)))
}

#[utoipa::path(post, path = "/v1/users/{email}/purge", tag = "mail",
    params(("email" = String, Path)),
    responses((status = 200, description = "Deleted the mailbox's archive and sync position (call again while `complete` is false); audited", body = PurgeDto),
        (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admins only (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user's sync is on: switch it off first (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn purge_mailbox(
    State(state): State<ApiState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<Json<PurgeDto>> {
    let email = Email::parse(&email).map_err(DomainError::from)?;
    let report = state
        .services
        .purge_mailbox(&caller.0, &email, OffsetDateTime::now_utc())
        .await?;
    Ok(Json(PurgeDto {
        deleted: report.deleted,
        complete: report.complete,
    }))
}
