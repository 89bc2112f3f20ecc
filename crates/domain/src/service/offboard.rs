//! Offboarding an org: everything it left with us goes — captured mail, sync positions, users,
//! settings, audit and run history, and its hold on its Microsoft tenant. An operator's action
//! (`o365-ops offboard-org`), never an API call: nothing of the org is left to authorize it.

use time::OffsetDateTime;

use super::Store;
use super::mail::purge_archive;
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::connection::{Connection, ConnectionStatus};
use crate::error::Result;
use crate::ids::{Email, OrgId};
use crate::page::PageRequest;

/// What offboarding removes (the dry run) or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffboardReport {
    pub connection: ConnectionStatus,
    pub users: usize,
    /// Every mailbox with a position or an archive: users', and archives kept after a user left.
    pub mailboxes: Vec<Email>,
    /// Archived messages deleted (0 on a dry run).
    pub messages_deleted: u64,
    pub done: bool,
}

/// With `confirm` unset, reports what would go. Confirmed: stops the sync (the connection goes
/// first, so no new run starts), purges every mailbox under its lease, then erases the org's
/// state, the org itself last — so an interrupted offboarding is finished by running it again.
pub async fn offboard_org(
    store: &dyn Store,
    org: &OrgId,
    actor: Actor,
    confirm: bool,
    now: OffsetDateTime,
) -> Result<OffboardReport> {
    store.settings(org).await?;
    let connection = store.connection(org).await?;
    let users = org_users(store, org).await?;
    let mut mailboxes = store.archived_mailboxes(org).await?;
    for user in &users {
        if !mailboxes.contains(user) {
            mailboxes.push(user.clone());
        }
    }
    mailboxes.sort_by(|a, b| a.key().cmp(b.key()));
    let mut report = OffboardReport {
        connection: connection.status,
        users: users.len(),
        mailboxes,
        messages_deleted: 0,
        done: false,
    };
    if !confirm {
        return Ok(report);
    }
    if connection.status != ConnectionStatus::None {
        let cleared = Connection {
            version: connection.version + 1,
            ..Connection::none()
        };
        let event = AuditEvent::new(
            org,
            now,
            actor.clone(),
            AuditAction::ConnectionDeleted,
            "connection",
        )
        .change(Some(&connection), Some(&cleared));
        store.save_connection(org, &cleared, event).await?;
    }
    for mailbox in &report.mailboxes {
        loop {
            // Each call's own time: its lease must outlast its work, however long this takes.
            let purged = purge_archive(
                store,
                org,
                mailbox,
                actor.clone(),
                OffsetDateTime::now_utc(),
            )
            .await?;
            report.messages_deleted += purged.deleted;
            if purged.complete {
                break;
            }
        }
    }
    store.erase_org(org, &report.mailboxes).await?;
    report.done = true;
    Ok(report)
}

async fn org_users(store: &dyn Store, org: &OrgId) -> Result<Vec<Email>> {
    let mut users = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let chunk = store.list_users(org, None, page.clone()).await?;
        users.extend(chunk.items.into_iter().map(|u| u.email));
        match chunk.next {
            Some(next) => page.after = Some(next),
            None => return Ok(users),
        }
    }
}
