//! Captured mail, for the people who own it: a mailbox's owner and the org's admins list its
//! messages (no bodies) and read one with its body; every body read is audited first.

use time::OffsetDateTime;

use super::Services;
use super::access::{Action, Principal, authorize};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::error::{DomainError, Entity, Result};
use crate::ids::Email;
use crate::message::{MessageQuery, StoredMessage};
use crate::page::{Page, PageRequest};

impl Services {
    pub async fn list_mail(
        &self,
        p: &Principal,
        mailbox: &Email,
        query: &MessageQuery,
        page: PageRequest,
    ) -> Result<Page<StoredMessage>> {
        authorize(p, Action::ReadMail(mailbox))?;
        // Only mailboxes of the caller's org: a user of another org is simply not found.
        self.store.user(&p.org, mailbox).await?;
        self.store.list_messages(&p.org, mailbox, query, page).await
    }

    /// One message with its body (a removed one without). The read is in the audit log before
    /// the body leaves the service: no audit, no body.
    pub async fn read_mail(
        &self,
        p: &Principal,
        mailbox: &Email,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<StoredMessage> {
        authorize(p, Action::ReadMail(mailbox))?;
        self.store.user(&p.org, mailbox).await?;
        let message = self
            .store
            .message(&p.org, mailbox, id)
            .await?
            .ok_or(DomainError::NotFound(Entity::Message))?;
        if let StoredMessage::Live { .. } = &message {
            let event = AuditEvent::new(
                &p.org,
                now,
                Actor::User(p.email.clone()),
                AuditAction::MessageRead,
                format!("message:{}/{id}", mailbox.key()),
            );
            self.store.append(event).await?;
        }
        Ok(message)
    }
}
