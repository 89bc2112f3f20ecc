//! Captured mail, for the people who own it: a mailbox's owner and the org's admins list its
//! messages (no bodies) and read one with its body; every body read is audited first. Admins
//! purge a mailbox whose sync is off.

use time::OffsetDateTime;

use super::access::{Action, Principal, authorize};
use super::{Services, Store};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::error::{DomainError, Entity, Result};
use crate::ids::{Email, OrgId};
use crate::message::{MessageQuery, StoredMessage};
use crate::page::{Page, PageRequest};

/// How long one purge call works before answering (well inside API Gateway's 29 s); a larger
/// mailbox takes more calls.
const PURGE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a purge holds the mailbox against sync runs.
const PURGE_LEASE: time::Duration = time::Duration::minutes(2);
const PURGE_CHUNK: usize = 500;

/// What a purge call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub deleted: u64,
    /// Nothing is left; otherwise call again to go on.
    pub complete: bool,
}

impl Services {
    pub async fn list_mail(
        &self,
        p: &Principal,
        mailbox: &Email,
        query: &MessageQuery,
        page: PageRequest,
    ) -> Result<Page<StoredMessage>> {
        authorize(p, Action::ReadMail(mailbox))?;
        if let (Some(since), Some(until)) = (query.received_since, query.received_until)
            && since > until
        {
            return Err(DomainError::invalid(
                "received_until",
                "before_since",
                "received_until is earlier than received_since",
            ));
        }
        // Only mailboxes of the caller's org: a user of another org is simply not found.
        self.store.user(&p.org, mailbox).await?;
        // Listings carry previews (the start of each body): someone else's are audited too.
        if p.email != *mailbox {
            let event = AuditEvent::new(
                &p.org,
                OffsetDateTime::now_utc(),
                Actor::User(p.email.clone()),
                AuditAction::MailListed,
                format!("mailbox:{}", mailbox.key()),
            );
            self.store.append(event).await?;
        }
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

    /// Deletes a mailbox's archive and its sync position (admins): see [`purge_mailbox`].
    pub async fn purge_mailbox(
        &self,
        p: &Principal,
        mailbox: &Email,
        now: OffsetDateTime,
    ) -> Result<PurgeReport> {
        authorize(p, Action::ManageUsers)?;
        purge_mailbox(
            self.store.as_ref(),
            &p.org,
            mailbox,
            Actor::User(p.email.clone()),
            now,
        )
        .await
    }
}

/// Deletes a mailbox's archive and its sync position, so a user switched on again starts a
/// fresh backfill. The mailbox's sync must be off (or the user removed): otherwise the next run
/// would capture it again. Idempotent; resumable for mailboxes that take longer than one call.
/// Audited with `actor` (an admin, or an operator command).
pub async fn purge_mailbox(
    store: &dyn Store,
    org: &OrgId,
    mailbox: &Email,
    actor: Actor,
    now: OffsetDateTime,
) -> Result<PurgeReport> {
    match store.user(org, mailbox).await {
        Ok(u) if u.sync_enabled => {
            return Err(DomainError::Precondition(
                "switch sync off for this user first; otherwise the next run captures the mailbox again",
            ));
        }
        Ok(_) | Err(DomainError::NotFound(Entity::User)) => {}
        Err(e) => return Err(e),
    }
    purge_archive(store, org, mailbox, actor, now).await
}

/// The purge itself, for callers that have already stopped the mailbox's sync (the check above,
/// or an org being offboarded with its connection gone).
pub(crate) async fn purge_archive(
    store: &dyn Store,
    org: &OrgId,
    mailbox: &Email,
    actor: Actor,
    now: OffsetDateTime,
) -> Result<PurgeReport> {
    // The mailbox's lease keeps a run that started before sync was switched off from writing
    // pages (and a delta link) back after the purge.
    let holder = format!("purge-{}", uuid::Uuid::new_v4().simple());
    if !store
        .acquire_lease(org, mailbox, &holder, now + PURGE_LEASE, now)
        .await?
    {
        return Err(DomainError::Precondition(
            "a sync run of this mailbox is still under way; purge again in a few minutes",
        ));
    }
    // The intent is in the audit log before anything is deleted.
    let event = AuditEvent::new(
        org,
        now,
        actor,
        AuditAction::MailboxPurged,
        format!("mailbox:{}", mailbox.key()),
    );
    let purged = async {
        store.append(event).await?;
        let started = std::time::Instant::now();
        let mut deleted = 0;
        let complete = loop {
            let n = store.purge_messages(org, mailbox, PURGE_CHUNK).await?;
            deleted += n;
            if n == 0 {
                break true;
            }
            if started.elapsed() >= PURGE_BUDGET {
                break false;
            }
        };
        // Last, so nothing written meanwhile can leave a position behind.
        store.clear_cursors(org, mailbox).await?;
        Ok(PurgeReport { deleted, complete })
    }
    .await;
    let _ = store.release_lease(org, mailbox, &holder).await;
    purged
}
